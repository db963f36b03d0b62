"""Check a TensorRT engine's outputs on the bundle's reference images against the PyTorch student's, every value.

Usage: python3 check_outputs.py manifest.json PRECISION OUTPUT_DIR [--report REPORT.json] [--engine ENGINE]

manifest.json's ``reference`` names the bundle's reference files: real held-out images, already
normalised, as one raw float32 file per trtexec run (``runs``: name, batch, file, images); the
PyTorch student's full outputs for all of them (one .npy per output); and, where the run has labels,
a linear probe on the CLS feature (an .npz holding ``weight`` (D, C) and ``bias`` (C,)).
check_engine.sh runs the engine on each run's file, dumping ``OUTPUT_DIR/engine_output_<run>.json``
(trtexec --exportOutput) and its log ``OUTPUT_DIR/check_<run>.log``. This script compares:

- per output: the worst per-image cosine, the worst per-token cosine (outputs with a token axis)
  and the largest absolute error as a multiple of the output's RMS on the reference images;
- the probe's top-1 on the engine's CLS features against its top-1 on PyTorch's (agreement);

each against PRECISION's tolerance in manifest.json. It prints a line per output, a line per problem
and PASS or FAIL, and exits 1 on any problem: a missing or damaged reference file, an output file
that is missing, short or holds nan/inf, an engine whose sidecar names another GPU or TensorRT
version. REPORT.json records every figure and ``passed``.
"""
# Copied into every TensorRT deploy bundle and run on the device (python3 >= 3.8): standalone, numpy only.
# leapkit imports it too, to run the same check on engines built on the workstation.
import argparse
import hashlib
import json
import math
import os
import re
import sys

try:
    import numpy as np
except ImportError:  # reported as a failed check, so that check.json is still written
    np = None

# trtexec prints floats with iostream: non-finite values come out as bare nan, -nan, inf, -inf (or
# MSVC's -nan(ind)), which JSON does not allow; Python's json reads NaN and Infinity.
_NON_FINITE = re.compile(r"([\[,:]\s*)(-?)(nan(?:\(ind\))?|inf(?:inity)?)(?=\s*[,\]}])", re.IGNORECASE)


class CheckError(Exception):
    """A problem that stops the comparison: its message is the one line the check reports."""


def _json_token(m):
    if m.group(3).lower().startswith("nan"):
        return m.group(1) + "NaN"
    return m.group(1) + m.group(2) + "Infinity"


def read_outputs(output_file):
    """{name: flat float64 values} from a trtexec --exportOutput file; raises ValueError or OSError when unreadable."""
    with open(output_file) as f:
        text = f.read()
    dumped = json.loads(_NON_FINITE.sub(_json_token, text))
    if isinstance(dumped, dict):
        dumped = dumped.get("outputs", [dumped])
    return {d["name"]: np.asarray(d["values"], dtype=np.float64).ravel() for d in dumped}


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _reference_file(folder, name, files):
    """The path of a reference file, checked against manifest.json's sha256; raises CheckError."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise CheckError(f"{name} is missing from the bundle: copy the whole export folder to the device "
                         f"(or export the run again)")
    if name in files and _sha256(path) != files[name]:
        raise CheckError(f"{name} does not match its sha256 in manifest.json (truncated or changed in the copy): "
                         f"copy it again from the export folder")
    return path


def load_reference(folder, manifest):
    """The reference outputs ({name: array (images, ...)}) and the probe ((weight, bias) or None); raises CheckError."""
    ref = manifest.get("reference") or {}
    if "runs" not in ref:
        raise CheckError("manifest.json has no reference images (an export older than the full-output check): "
                         "export the run again")
    files = manifest.get("files", {})
    outputs = {}
    for name, spec in ref["outputs"].items():
        path = _reference_file(folder, spec["file"], files)
        try:
            outputs[name] = np.load(path, allow_pickle=False).astype(np.float64)
        except (OSError, ValueError, EOFError) as e:
            raise CheckError(f"{spec['file']} cannot be read ({e}): copy it again from the export folder") from None
        if list(outputs[name].shape) != list(spec["shape"]):
            raise CheckError(f"{spec['file']} holds shape {list(outputs[name].shape)}, manifest.json says "
                             f"{spec['shape']}: copy it again from the export folder")
    for run in ref["runs"]:
        _reference_file(folder, run["file"], files)
    probe = None
    if ref.get("probe"):
        path = _reference_file(folder, ref["probe"]["file"], files)
        try:
            with np.load(path, allow_pickle=False) as z:
                probe = (z["weight"].astype(np.float64), z["bias"].astype(np.float64))
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise CheckError(f"{ref['probe']['file']} cannot be read ({e}): copy it again from the export "
                             f"folder") from None
    return outputs, probe


def _cosines(a, b):
    """Cosine similarity of matching rows of two (rows, n) arrays."""
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(den, 1e-30)


def figures(ref, got, rms):
    """Every value of ``got`` against ``ref`` (both (images, ...)): worst per-image and per-token cosine, the
    largest absolute error as a multiple of ``rms``, and where each worst figure is (indices within the run)."""
    n = len(ref)
    per_image = _cosines(ref.reshape(n, -1), got.reshape(n, -1))
    out = {"cosine_image_min": float(per_image.min()), "worst_image": int(per_image.argmin())}
    if ref.ndim == 3:  # (images, tokens, dim)
        per_token = _cosines(ref.reshape(-1, ref.shape[-1]), got.reshape(-1, ref.shape[-1]))
        image, token = divmod(int(per_token.argmin()), ref.shape[1])
        out.update(cosine_token_min=float(per_token.min()), worst_token=[image, token])
    else:
        out.update(cosine_token_min=out["cosine_image_min"], worst_token=[out["worst_image"], 0])
    err = np.abs(got - ref)
    out["max_abs_rel"] = float(err.max() / max(rms, 1e-30))
    out["worst_abs_image"] = int(np.unravel_index(int(err.argmax()), err.shape)[0])
    return out


def judge(name, fig, tol):
    """The problems of one output's figures against a tolerance, each naming the output, the figure and where."""
    problems = []
    if fig["cosine_image_min"] < tol["min_cosine_image"]:
        problems.append(f"{name}: worst per-image cosine {fig['cosine_image_min']:.6f} (image "
                        f"{fig['worst_image']}) < {tol['min_cosine_image']} required")
    if fig["cosine_token_min"] < tol["min_cosine_token"]:
        image, token = fig["worst_token"]
        problems.append(f"{name}: worst per-token cosine {fig['cosine_token_min']:.6f} (image {image}, "
                        f"token {token}) < {tol['min_cosine_token']} required")
    if fig["max_abs_rel"] > tol["max_abs_rel"]:
        problems.append(f"{name}: max abs error {fig['max_abs_rel']:.4g} x the output's RMS (image "
                        f"{fig['worst_abs_image']}) > {tol['max_abs_rel']} allowed")
    return problems


# each figure, whether lower is worse, and the key that says where it is
_FIGURES = (("cosine_image_min", True, "worst_image"), ("cosine_token_min", True, "worst_token"),
            ("max_abs_rel", False, "worst_abs_image"))


def _worst(a, b):
    """Per figure, the worse of two figure records (lower cosines, larger error), with where it is."""
    if a is None:
        return dict(b)
    out = dict(a)
    for key, lower_is_worse, where in _FIGURES:
        if (b[key] < a[key]) if lower_is_worse else (b[key] > a[key]):
            out[key], out[where] = b[key], b[where]
    return out


def compare(reference, outputs, probe, got_by_run, tol):
    """Compare the engine's outputs of every run with the reference; returns (runs, worst per output, probe, problems).

    Args:
        reference: manifest.json's ``reference``.
        outputs: the reference outputs, {name: (images, ...)}.
        probe: (weight (D, C), bias (C,)) or None.
        got_by_run: {run name: {output name: values (any shape)}}, or a str (why the run has no outputs).
        tol: the precision's tolerance.
    """
    runs, worst, problems = [], {}, []
    cls_ref, cls_got = [], []
    for run in reference["runs"]:
        images = run["images"]
        got = got_by_run.get(run["name"])
        record = {"name": run["name"], "batch": run["batch"], "images": images, "outputs": {}}
        runs.append(record)
        if not isinstance(got, dict):
            problems.append(got or f"run {run['name']}: no outputs")
            continue
        for name, ref_all in outputs.items():
            ref = ref_all[images]
            if name not in got:
                problems.append(f"{name}: missing from the engine's outputs of run {run['name']}")
                continue
            values = np.asarray(got[name], dtype=np.float64).ravel()
            if values.size != ref.size:
                problems.append(f"{name}: {values.size} values in run {run['name']}, the reference has {ref.size} "
                                f"({len(images)} images of {list(ref.shape[1:])}); the engine's output is "
                                f"{'short' if values.size < ref.size else 'too long'}")
                record["outputs"][name] = {"values": int(values.size), "expected": int(ref.size)}
                continue
            bad = int(np.count_nonzero(~np.isfinite(values)))
            if bad:
                problems.append(f"{name}: {bad} non-finite values (nan/inf) in the engine's output of run "
                                f"{run['name']}")
                record["outputs"][name] = {"non_finite": bad}
                continue
            fig = figures(ref, values.reshape(ref.shape), reference["outputs"][name]["rms"])
            # where, as reference image indices
            fig["worst_image"], fig["worst_abs_image"] = images[fig["worst_image"]], images[fig["worst_abs_image"]]
            fig["worst_token"][0] = images[fig["worst_token"][0]]
            record["outputs"][name] = fig
            problems += [f"{p} in run {run['name']}" for p in judge(name, fig, tol)]
            worst[name] = _worst(worst.get(name), fig)
            if name == "cls":
                cls_ref.append(ref)
                cls_got.append(values.reshape(ref.shape))
    agreement = None
    if probe is not None and cls_ref:
        weight, bias = probe
        ref_pred = (np.concatenate(cls_ref) @ weight + bias).argmax(1)
        got_pred = (np.concatenate(cls_got) @ weight + bias).argmax(1)
        agree = int((ref_pred == got_pred).sum())
        agreement = {"agreement": agree / len(ref_pred), "agree": agree, "images": int(len(ref_pred)),
                     "min_agreement": tol["min_probe_agreement"]}
        if agreement["agreement"] < tol["min_probe_agreement"]:
            problems.append(f"cls: linear-probe top-1 agreement with PyTorch {100 * agreement['agreement']:.1f}% "
                            f"({agree} of {len(ref_pred)} images) < {100 * tol['min_probe_agreement']:.1f}% required")
    return runs, worst, agreement, problems


# --- engines built elsewhere ------------------------------------------------------------------------------------


def _version(text):
    """``10.3.0`` from ``10.3.0.26``, ``v100300`` or ``8603`` (trtexec's banner codes); None when unknown."""
    text = str(text or "").strip().lstrip("v")
    if text.isdigit():
        n = int(text)
        scale = 1000 if n < 10000 else 10000  # 8.x: 8603 = 8.6.3; 10.x on: 100300 = 10.3.0
        return f"{n // scale}.{n % scale // 100}.{n % 100}"
    parts = re.findall(r"\d+", text)
    return ".".join(parts[:3]) if parts else None


def _here(logs):
    """(TensorRT version, device) that trtexec printed in any of ``logs``."""
    version, device = None, None
    for path in logs:
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        m = re.search(r"TensorRT version:\s*(\S+)", text) or re.search(r"\[TensorRT v(\d+)\]", text)
        version = version or (_version(m.group(1)) if m else None)
        m = re.search(r"Selected Device:\s*(.+)", text)
        device = device or (m.group(1).strip() if m else None)
    return version, device


def foreign_engine(engine, logs, precision):
    """Why ``engine`` cannot be this device's, from its ``.json`` sidecar and trtexec's logs here; None when it can."""
    try:
        with open(engine + ".json") as f:
            side = json.load(f)
    except (OSError, ValueError):
        return None  # no sidecar: nothing says where it was built
    if not isinstance(side, dict):
        return None
    built_trt = _version(side.get("tensorrt_version") or side.get("tensorrt_code"))
    built_gpu = (side.get("gpu") or "").strip() or None
    here_trt, here_gpu = _here(logs)
    other_gpu = built_gpu and here_gpu and built_gpu != here_gpu
    other_trt = built_trt and here_trt and built_trt != here_trt
    if not (other_gpu or other_trt):
        return None
    return (f"{os.path.basename(engine)} was built on {built_gpu or 'another GPU'} with TensorRT "
            f"{built_trt or '(unknown)'}, this device is {here_gpu or '(unknown)'} with TensorRT "
            f"{here_trt or '(unknown)'}: engines do not move between GPUs or TensorRT versions; build it here "
            f"with ./build_engine.sh {precision}")


# --- the command --------------------------------------------------------------------------------------------------


def _finite(value):
    """Figures as strict JSON: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def device_outputs(reference, output_dir):
    """{run name: outputs, or why there are none} from the engine_output_<run>.json files of ``output_dir``."""
    got = {}
    for run in reference["runs"]:
        path = os.path.join(output_dir, f"engine_output_{run['name']}.json")
        try:
            got[run["name"]] = read_outputs(path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            got[run["name"]] = (f"cannot read {path} ({type(e).__name__}: {str(e)[:120]}); did trtexec run? "
                                f"see {os.path.join(output_dir, 'check_' + run['name'] + '.log')}")
    return got


def check(folder, manifest, precision, got_by_run=None, output_dir=None, engine=None):
    """The check's report: ``passed``, every figure and the problems, one line each.

    Args:
        folder: the bundle folder (where the reference files are).
        manifest: manifest.json, parsed.
        precision: picks the tolerance.
        got_by_run: the engine's outputs per run; None reads them from ``output_dir``.
        output_dir: where check_engine.sh left the engine's outputs and trtexec's logs.
        engine: the engine file, whose sidecar says where it was built.
    """
    report = {"passed": False, "precision": precision, "engine": engine, "tolerance": None, "runs": [],
              "outputs": {}, "probe": None, "problems": []}
    try:
        if np is None:
            raise CheckError("numpy is missing: install it (sudo apt install python3-numpy) and rerun "
                             "check_engine.sh")
        reference = manifest.get("reference") or {}
        tol = (reference.get("tolerance") or {}).get(precision)
        if tol is None:
            raise CheckError(f"manifest.json has no tolerance for {precision}: export the run again")
        report["tolerance"] = tol
        try:
            outputs, probe = load_reference(folder, manifest)
        except (KeyError, TypeError) as e:
            raise CheckError(f"manifest.json's reference lacks {e}: export the run again") from None
        if engine and output_dir:
            logs = [os.path.join(output_dir, f"check_{r['name']}.log") for r in reference["runs"]]
            foreign = foreign_engine(engine, logs, precision)
            if foreign:
                raise CheckError(foreign)
        if got_by_run is None:
            got_by_run = device_outputs(reference, output_dir)
        try:
            runs, worst, agreement, problems = compare(reference, outputs, probe, got_by_run, tol)
        except (KeyError, IndexError, ValueError, TypeError) as e:  # a manifest that does not fit its own files
            raise CheckError(f"manifest.json's reference does not fit its files ({type(e).__name__}: "
                             f"{str(e)[:120]}): export the run again") from None
    except CheckError as e:
        report["problems"] = [str(e)]
        return report
    report.update(runs=runs, outputs=worst, probe=agreement, problems=problems, passed=not problems)
    return report


def summary_lines(report):
    """One line per output's worst figures, one per problem, then PASS or FAIL."""
    tol = report["tolerance"] or {}
    lines = []
    for name, f in report["outputs"].items():
        lines.append(f"{name}: worst cosine per image {f['cosine_image_min']:.6f} (>= {tol['min_cosine_image']}), "
                     f"per token {f['cosine_token_min']:.6f} (>= {tol['min_cosine_token']}), max abs error "
                     f"{f['max_abs_rel']:.3g} x RMS (<= {tol['max_abs_rel']})")
    if report["probe"]:
        p = report["probe"]
        lines.append(f"probe: top-1 agreement {100 * p['agreement']:.1f}% of {p['images']} images "
                     f"(>= {100 * p['min_agreement']:.1f}%)")
    return [*lines, *report["problems"], "PASS" if report["passed"] else "FAIL"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("precision")
    ap.add_argument("output_dir")
    ap.add_argument("--report")
    ap.add_argument("--engine")
    args = ap.parse_args(argv)
    try:
        with open(args.manifest) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        manifest = {}
        report = {"passed": False, "precision": args.precision, "problems": [
            f"cannot read {args.manifest} ({type(e).__name__}): copy the whole export folder to the device"]}
    else:
        report = check(os.path.dirname(os.path.abspath(args.manifest)), manifest, args.precision,
                       output_dir=args.output_dir, engine=args.engine)
    for line in summary_lines({"tolerance": None, "outputs": {}, "probe": None, **report}):
        print(line)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(_finite(report), f, indent=2)
            f.write("\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
