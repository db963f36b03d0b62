"""Train the second teacher of the curricula benchmark (leapkit/assets/digits12_teacher.safetensors).

A supervised 12-block ViT (leapkit_digits12_teacher, dim 48, 32 px, an 8 x 8 patch grid) on the
1,437 training digits of scikit-learn's digits data, made exactly like the demo teacher
(scripts/train_demo_teacher.py: AdamW, one warm-up epoch then cosine, label smoothing 0.1,
RandomResizedCrop); the 360 held-out digits are never seen. Its held-out accuracy is recorded in
leapkit/assets/digits12_teacher.json. Deterministic on CPU:

    python scripts/train_digits12_teacher.py        # about half an hour on 2 CPU cores
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import platform
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import DataLoader

import leapkit.models  # noqa: F401  (registers the digits architectures with timm)
from leapkit.data import DigitsDataset

ARCH = "leapkit_digits12_teacher"
IMG_SIZE = 32
ASSETS = Path(__file__).resolve().parents[1] / "leapkit" / "assets"
log = logging.getLogger("train_digits12_teacher")


def accuracy(model: torch.nn.Module, ds: DigitsDataset) -> float:
    model.eval()
    with torch.no_grad():
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        return (model(x).argmax(1) == torch.tensor(ds.labels)).float().mean().item() * 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the build machine is shared).")
    ap.add_argument("--out", type=Path, default=ASSETS / "digits12_teacher.safetensors")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    cfg = timm.models.get_pretrained_cfg(ARCH)
    train = DigitsDataset("train", IMG_SIZE, cfg.mean, cfg.std, augment=True)
    val = DigitsDataset("val", IMG_SIZE, cfg.mean, cfg.std)
    model = timm.create_model(ARCH, num_classes=10, drop_path_rate=0.05)
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    total = args.epochs * len(loader)
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
        if (epoch + 1) % 5 == 0:
            log.info("epoch %d: loss %.3f val acc %.2f%% (%.0f s)", epoch + 1, loss.item(), accuracy(model, val),
                     time.time() - start)

    record = {
        "architecture": ARCH,
        "train_images": len(train),
        "val_images": len(val),
        "img_size": IMG_SIZE,
        "val_top1": round(accuracy(model, val), 2),
        "train_top1": round(accuracy(model, DigitsDataset("train", IMG_SIZE, cfg.mean, cfg.std)), 2),
        "epochs": args.epochs,
        "lr": args.lr,
        "seed": args.seed,
        "threads": args.threads,
        "train_seconds": round(time.time() - start, 1),
        "command": "python scripts/train_digits12_teacher.py",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    backbone = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("head.")}
    save_file(backbone, str(args.out))
    record["sha256"] = hashlib.sha256(args.out.read_bytes()).hexdigest()
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("%s", json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
