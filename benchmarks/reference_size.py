"""What the device check's reference adds to a TensorRT deploy bundle, per student, image size and batch.

Writes the reference files with the export's own writer (:func:`leapkit.deploy.bundle.write_reference`)
for the output shapes of each student (from its timm shape: tokens, cls, patch_tokens in float32) and
sums their sizes: the raw input files (one per trtexec run), the .npy outputs and the probe's .npz. It
times nothing: it runs in a second on any machine.

    python benchmarks/reference_size.py   # writes benchmarks/results/reference_size.{md,json}
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from leapkit.deploy.bundle import reference_image_count, write_reference
from leapkit.tables import Table

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "reference_size"
COMMAND = "python benchmarks/reference_size.py"
# (student, image size, patch, width, prefix tokens, batch, probe classes)
CASES = [
    ("ViT-S/14", 224, 14, 384, 1, 1, 100),
    ("ViT-S/14", 224, 14, 384, 1, 1, 1000),
    ("ViT-S/14", 224, 14, 384, 1, 8, 1000),
    ("ViT-T/14", 224, 14, 192, 1, 1, 100),
    ("demo student", 32, 4, 32, 1, 1, 10),
]


def size(img: int, patch: int, dim: int, prefix: int, batch: int, classes: int) -> dict[str, int]:
    """Bytes of each kind of reference file for one bundle."""
    n = reference_image_count(batch)
    patches = (img // patch) ** 2
    outputs = {"tokens": np.zeros((n, prefix + patches, dim), np.float32), "cls": np.zeros((n, dim), np.float32),
               "patch_tokens": np.zeros((n, patches, dim), np.float32)}
    probe = (np.zeros((dim, classes), np.float32), np.zeros(classes, np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        write_reference(Path(tmp), np.zeros((n, 3, img, img), np.float32), outputs, batch, probe)
        files = {p.name: p.stat().st_size for p in Path(tmp).iterdir()}
    return {"images": n, "inputs": sum(v for k, v in files.items() if k.endswith(".bin")),
            "outputs": sum(v for k, v in files.items() if k.endswith(".npy")),
            "probe": sum(v for k, v in files.items() if k.endswith(".npz")), "total": sum(files.values())}


def main() -> None:
    rows = []
    for name, img, patch, dim, prefix, batch, classes in CASES:
        rows.append({"student": name, "img_size": img, "batch": batch, "probe_classes": classes,
                     **size(img, patch, dim, prefix, batch, classes)})
    table = Table.of("student", "image", "batch", "images", "inputs MB", "outputs MB", "probe MB", "total MB",
                     right=("images", "inputs MB", "outputs MB", "probe MB", "total MB"))
    for r in rows:
        table.add(r["student"], r["img_size"], r["batch"], r["images"], f"{r['inputs'] / 1e6:.2f}",
                  f"{r['outputs'] / 1e6:.2f}", f"{r['probe'] / 1e6:.2f} ({r['probe_classes']} classes)",
                  f"{r['total'] / 1e6:.2f}")
    RESULTS.mkdir(exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps({"command": COMMAND, "rows": rows}, indent=2) + "\n")
    OUT.with_suffix(".md").write_text(
        f"What the device check's reference adds to a deploy bundle (`{COMMAND}`; sizes, no timing: the same on "
        f"every machine). Batch 1 runs each image alone (one input file each); a larger batch adds a batch-1 "
        f"file of the first image.\n\n{table.to_markdown()}\n")
    print(table.to_markdown())


if __name__ == "__main__":
    main()
