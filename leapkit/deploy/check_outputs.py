"""Compare trtexec --exportOutput JSON with the reference outputs in manifest.json.

Usage: python3 check_outputs.py OUTPUT.json manifest.json PRECISION      (exit 1 on a mismatch)
"""
# Copied into every TensorRT deploy bundle and run on the device: standalone, numpy only.
import json
import sys

import numpy as np


def main(output_file, manifest_file, precision):
    with open(manifest_file) as f:
        manifest = json.load(f)
    ref = manifest["reference"]
    tol = ref["tolerance"][precision]
    with open(output_file) as f:
        dumped = json.load(f)
    if isinstance(dumped, dict):
        dumped = dumped.get("outputs", [dumped])
    got = {d["name"]: np.asarray(d["values"], dtype=np.float64).ravel() for d in dumped}
    ok = True
    for name, exp in ref["outputs"].items():
        if name not in got:
            print(f"{name}: missing from {output_file}")
            ok = False
            continue
        first = np.asarray(exp["first"], dtype=np.float64)
        head = got[name][: len(first)]
        norm = float(np.linalg.norm(got[name]))
        max_abs = float(np.abs(head - first).max())
        rel_norm = abs(norm - exp["l2"]) / max(exp["l2"], 1e-12)
        good = max_abs <= tol["first_max_abs"] and rel_norm <= tol["l2_rel"]
        ok &= good
        print(f"{name}: first values max |diff| {max_abs:.3g} (<= {tol['first_max_abs']}), "
              f"L2 {norm:.5g} vs {exp['l2']:.5g} (rel {rel_norm:.3g} <= {tol['l2_rel']}): "
              f"{'ok' if good else 'MISMATCH'}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
