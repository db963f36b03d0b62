"""Does the teacher's early exit save time in proportion to the teacher FLOPs it saves?

One distillation step (teacher blocks 1..k forward without gradients, ViT-S/14 student forward and
backward, projection head, AdamW step) with a ViT-L/14-shaped teacher (random weights), for target
blocks k across the depth. On CPU the sizes are small (56 px, batch 8); pass --device cuda
--img-size 224 --batch-size 64 on a GPU.

    python benchmarks/early_exit_step_time.py [--device cpu] [--img-size 56] [--batch-size 8]

Writes benchmarks/results/early_exit_step_time_<device>.{json,md}; with another --teacher than the
default the teacher's name is appended (early_exit_step_time_cuda_vit_giant_patch14_dinov2.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from leapkit.latency.machine import environment
from leapkit.macs import model_flops, teacher_block_flops
from leapkit.models import TruncatedTeacher, create_student, create_teacher, grid_size
from leapkit.trainer import Distiller, distill_loss

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_TEACHER = "vit_large_patch14_dinov2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--img-size", type=int, default=56)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--teacher", default=DEFAULT_TEACHER)
    ap.add_argument("--student", default="vit_small_patch14_dinov2")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else None

    torch.manual_seed(0)
    teacher = create_teacher(args.teacher, args.img_size, pretrained=False)
    student = create_student(args.student, args.img_size)
    blocks = teacher_block_flops(teacher, args.img_size)
    per_block = blocks["block_macs"]
    truncated = TruncatedTeacher(teacher).to(device, dtype=dtype)
    model = Distiller(student, teacher.embed_dim, grid_size(student), grid_size(teacher)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    depth = truncated.num_blocks
    ks = sorted({max(1, depth // 4), depth // 2, 3 * depth // 4, depth})
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)

    def step(k: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad(), autocast:
            target = truncated(x.to(dtype) if dtype else x, k)
        with autocast:
            patch, cls = model(x)
            loss = distill_loss(patch, cls, target.patch, target.cls, 0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    rows = []
    for k in ks:
        step(k)  # warm-up
        times = [step(k) for _ in range(args.steps)]
        rows.append({"target_block": k, "step_ms": round(1000 * statistics.median(times), 1),
                     "images_per_s": round(args.batch_size / statistics.median(times), 1)})
    last = rows[-1]["step_ms"]
    student_train = 3 * model_flops(student, args.img_size, batch=1)["macs"]  # forward + backward (2x forward)
    teacher_all = blocks["embed_macs"] + sum(per_block) + blocks["norm_macs"]
    for r in rows:
        teacher_k = blocks["embed_macs"] + sum(per_block[: r["target_block"]]) + blocks["norm_macs"]
        r["time_saved_pct"] = round(100 * (1 - r["step_ms"] / last), 1)
        r["teacher_flops_saved_pct"] = round(100 * (1 - teacher_k / teacher_all), 1)
        r["step_flops_saved_pct"] = round(100 * (1 - (teacher_k + student_train) / (teacher_all + student_train)), 1)
        print(json.dumps(r))

    machine = {"device": args.device, "cpu": environment()["cpu"], "cores": os.cpu_count(), "torch": torch.__version__,
               "threads": torch.get_num_threads(),
               "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None}
    command = (f"python benchmarks/early_exit_step_time.py --device {args.device} --img-size {args.img_size} "
               f"--batch-size {args.batch_size} --steps {args.steps}")
    if args.teacher != DEFAULT_TEACHER:
        command += f" --teacher {args.teacher}"
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"early_exit_step_time_{device.type}{'' if args.teacher == DEFAULT_TEACHER else '_' + args.teacher}"
    record = {"command": command, "machine": machine, "args": vars(args), "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# Early exit: step time against target block ({args.teacher} teacher, {args.student} student)", "",
             f"Command: `{command}`  ",
             f"Machine: {machine['gpu'] or machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
             f"{machine['threads']} threads", "",
             "| target block | step ms | images/s | step time saved | step FLOPs saved | teacher FLOPs saved |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['target_block']}/{depth} | {r['step_ms']} | {r['images_per_s']} | {r['time_saved_pct']}% | "
                     f"{r['step_flops_saved_pct']}% | {r['teacher_flops_saved_pct']}% |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
