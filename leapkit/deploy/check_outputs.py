"""Compare trtexec --exportOutput JSON with the reference outputs in manifest.json.

Usage: python3 check_outputs.py OUTPUT.json manifest.json PRECISION [REPORT.json]

Prints one line per output and PASS or FAIL; exit 1 on a mismatch, a non-finite value, or an
output file that is missing or unreadable. REPORT.json gets {"passed": ..., "outputs": ..., "problems": ...}.
"""
# Copied into every TensorRT deploy bundle and run on the device (python3 >= 3.8): standalone, numpy only.
import json
import re
import sys

try:
    import numpy as np
except ImportError:  # reported as a failed check, so that check.json is still written
    np = None

# trtexec prints floats with iostream: non-finite values come out as bare nan, -nan, inf, -inf (or
# MSVC's -nan(ind)), which JSON does not allow; Python's json reads NaN and Infinity.
_NON_FINITE = re.compile(r"([\[,:]\s*)(-?)(nan(?:\(ind\))?|inf(?:inity)?)(?=\s*[,\]}])", re.IGNORECASE)


def _json_token(m):
    if m.group(3).lower().startswith("nan"):
        return m.group(1) + "NaN"
    return m.group(1) + m.group(2) + "Infinity"


def read_outputs(output_file):
    """{name: values} from a trtexec --exportOutput file; raises ValueError or OSError when unreadable."""
    with open(output_file) as f:
        text = f.read()
    dumped = json.loads(_NON_FINITE.sub(_json_token, text))
    if isinstance(dumped, dict):
        dumped = dumped.get("outputs", [dumped])
    return {d["name"]: np.asarray(d["values"], dtype=np.float64).ravel() for d in dumped}


def compare(got, reference, tol):
    """Per-output figures, each with ``ok``, and the problems found."""
    results, problems = {}, []
    for name, exp in reference.items():
        if name not in got:
            problems.append(f"{name}: missing from the engine's outputs")
            continue
        values = got[name]
        non_finite = int(np.count_nonzero(~np.isfinite(values)))
        if non_finite:
            results[name] = {"non_finite": non_finite, "ok": False}
            problems.append(f"{name}: {non_finite} non-finite values (nan/inf) in the engine's output")
            continue
        first = np.asarray(exp["first"], dtype=np.float64)
        if len(values) < len(first):
            results[name] = {"non_finite": 0, "ok": False}
            problems.append(f"{name}: {len(values)} values, fewer than the reference's {len(first)}")
            continue
        norm = float(np.linalg.norm(values))
        max_abs = float(np.abs(values[: len(first)] - first).max())
        rel_norm = abs(norm - exp["l2"]) / max(exp["l2"], 1e-12)
        ok = max_abs <= tol["first_max_abs"] and rel_norm <= tol["l2_rel"]
        results[name] = {"first_max_abs": max_abs, "l2": norm, "l2_expected": exp["l2"], "l2_rel": rel_norm,
                         "non_finite": 0, "ok": ok}
        if not ok:
            problems.append(f"{name}: first values max |diff| {max_abs:.3g} (tolerance {tol['first_max_abs']}), "
                            f"L2 rel diff {rel_norm:.3g} (tolerance {tol['l2_rel']})")
    return results, problems


def main(output_file, manifest_file, precision, report_file=None):
    with open(manifest_file) as f:
        ref = json.load(f)["reference"]
    tol = ref["tolerance"].get(precision)
    results, problems = {}, []
    if np is None:
        problems.append("numpy is missing: install it (sudo apt install python3-numpy) and rerun check_engine.sh")
    elif tol is None:
        problems.append(f"manifest.json has no tolerance for {precision}")
    else:
        try:
            got = read_outputs(output_file)
        except (OSError, ValueError, KeyError, TypeError) as e:
            problems.append(f"cannot read {output_file} ({type(e).__name__}: {e}); did trtexec run?")
        else:
            results, problems = compare(got, ref["outputs"], tol)
    for name, r in results.items():
        if "l2" not in r:
            continue
        print(f"{name}: first values max |diff| {r['first_max_abs']:.3g} (<= {tol['first_max_abs']}), "
              f"L2 {r['l2']:.5g} vs {r['l2_expected']:.5g} (rel {r['l2_rel']:.3g} <= {tol['l2_rel']}): "
              f"{'ok' if r['ok'] else 'MISMATCH'}")
    for p in problems:
        print(p)
    passed = not problems
    print("PASS" if passed else "FAIL")
    if report_file:
        report = {"passed": passed, "precision": precision, "output_file": output_file, "tolerance": tol,
                  "outputs": results, "problems": problems}
        with open(report_file, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return 0 if passed else 1


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
