"""Train the teachers leapkit ships (leapkit/assets/demo_teacher.safetensors, digits12_teacher.safetensors).

``--teacher demo`` (the default) trains the teacher `leapkit distill` ships with: a supervised 8-block
ViT (leapkit_demo_teacher, 16 px). ``--teacher digits12`` trains the second teacher of the curricula
benchmark: a 12-block ViT (leapkit_digits12_teacher, dim 48, 32 px, an 8 x 8 patch grid). Both are made
the same way (AdamW, one warm-up epoch then cosine, label smoothing 0.1, RandomResizedCrop) on the
1,437 training digits of scikit-learn's digits data; the 360 held-out digits are never seen. The
held-out accuracy and the sha256 of the weights are recorded next to --out (<out>.json).
Deterministic on CPU for a given thread count:

    python scripts/train_demo_teacher.py                                # about 16 min on 2 CPU cores
    python scripts/train_demo_teacher.py --teacher digits12 --threads 1  # about 23 min
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import DataLoader

import leapkit.models  # noqa: F401  (registers the digits architectures with timm)
from leapkit.data import DigitsDataset

ASSETS = Path(__file__).resolve().parents[1] / "leapkit" / "assets"
log = logging.getLogger("train_demo_teacher")


@dataclass(frozen=True)
class TeacherSpec:
    """What differs between the shipped teachers.

    Attributes:
        arch: timm architecture name (registered by leapkit.models).
        img_size: input side in pixels.
        out: default weights file.
        threads: default torch thread count; None keeps torch's default (what trained the demo weights).
        log_every: epochs between progress lines (evaluation only: it draws no random numbers).
    """

    arch: str
    img_size: int
    out: Path
    threads: int | None
    log_every: int


TEACHERS = {
    "demo": TeacherSpec("leapkit_demo_teacher", 16, ASSETS / "demo_teacher.safetensors", None, 10),
    "digits12": TeacherSpec("leapkit_digits12_teacher", 32, ASSETS / "digits12_teacher.safetensors", 1, 5),
}
DEFAULTS = {"epochs": 40, "lr": 2e-3, "seed": 0}


def accuracy(model: torch.nn.Module, ds: DigitsDataset) -> float:
    """Top-1 accuracy (%) of ``model`` on every image of ``ds``."""
    model.eval()
    with torch.no_grad():
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        return (model(x).argmax(1) == torch.tensor(ds.labels)).float().mean().item() * 100


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run's weights (--out left out: it does not change them)."""
    parts = ["python scripts/train_demo_teacher.py"]
    if args.teacher != "demo":
        parts.append(f"--teacher {args.teacher}")
    if args.threads is not None:
        parts.append(f"--threads {args.threads}")
    parts += [f"--{k} {getattr(args, k)}" for k, v in DEFAULTS.items() if getattr(args, k) != v]
    return " ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", choices=sorted(TEACHERS), default="demo", help="which shipped teacher to train.")
    ap.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    ap.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's own for demo, 1 for digits12, as their weights were made).")
    ap.add_argument("--out", type=Path, default=None,
                    help="weights file (default: the teacher's file in leapkit/assets).")
    args = ap.parse_args()
    spec = TEACHERS[args.teacher]
    if args.threads is None:
        args.threads = spec.threads
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be at least 1, got {args.threads}")
    out: Path = args.out or spec.out
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    torch.manual_seed(args.seed)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = timm.models.get_pretrained_cfg(spec.arch)
    train = DigitsDataset("train", spec.img_size, cfg.mean, cfg.std, augment=True)
    val = DigitsDataset("val", spec.img_size, cfg.mean, cfg.std)
    model = timm.create_model(spec.arch, num_classes=10, drop_path_rate=0.05)
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    total = args.epochs * len(loader)
    log.info("training %s (%d px) for %d epochs, %d torch threads", spec.arch, spec.img_size, args.epochs,
             torch.get_num_threads())
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        for i, (x, y) in enumerate(loader):
            step = epoch * len(loader) + i
            for g in opt.param_groups:  # linear warm-up over one epoch, then cosine
                g["lr"] = args.lr * min(1.0, (step + 1) / len(loader)) * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if (epoch + 1) % spec.log_every == 0:
            log.info("epoch %d: loss %.3f val acc %.2f%% (%.0f s)", epoch + 1, loss.item(), accuracy(model, val),
                     time.time() - start)

    record = {
        "architecture": spec.arch,
        "train_images": len(train),
        "val_images": len(val),
        "img_size": spec.img_size,
        "val_top1": round(accuracy(model, val), 2),
        "train_top1": round(accuracy(model, DigitsDataset("train", spec.img_size, cfg.mean, cfg.std)), 2),
        "epochs": args.epochs,
        "lr": args.lr,
        "seed": args.seed,
    }
    if args.threads is not None:  # the demo weights were made with torch's default count, not recorded
        record["threads"] = args.threads
    record |= {
        "train_seconds": round(time.time() - start, 1),
        "command": command_line(args),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    backbone = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("head.")}
    save_file(backbone, str(out))
    record["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("%s", json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
