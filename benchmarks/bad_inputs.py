"""Bad and unusual inputs across every command group, each checked for a clean refusal and for nothing lost.

    python benchmarks/bad_inputs.py [--only REGEX] [--keep]

Makes a finished one-epoch demo run R (exported for x86-cpu) and a scratch folder W, then runs each case below
through the real `leapkit` entry point, in W, in a process of its own. A case is clean when:
- the exit code is the one expected (2 bad input, 1 a check that failed, 0 where the input is fine but unusual);
- a refusal says so on stderr in one line: one non-empty line, no traceback, no "internal error";
- nothing is lost: every file that was in R and W before is still there, byte for byte (a case that may write
  lists where), no leapkit temporary folder is left behind, and runs/latest still points where it did;
- its own check, where it has one, holds (e.g. a device's results/ survive a re-export).
Cases that need a non-root user run with the file-permission capabilities dropped (setpriv), since root ignores
chmod; cases that read ../shared/trtexec-samples are skipped when it is absent. The table and the count go to
benchmarks/results/bad_inputs.md, with the command and the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "trtexec-samples"
RESULTS = ROOT / "benchmarks" / "results" / "bad_inputs.md"
NON_ROOT = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner",
            "--inh-caps", "-dac_override,-dac_read_search,-fowner"]
A5000_LOG = "trt10.3.0-rtxa5000-resnet50-fp16-full.log"


@dataclass
class Ctx:
    """Where a case runs: the finished run R (never written by a case), the scratch folder W."""

    run: Path
    scratch: Path

    def copy_run(self, name: str) -> Path:
        """A copy of R that a case may change."""
        dest = self.scratch / name
        if not dest.exists():
            shutil.copytree(self.run, dest, symlinks=True)
        return dest

    def file(self, name: str, text: str | bytes) -> Path:
        path = self.scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    def read_only(self, name: str) -> Path:
        """A folder nobody but root may write into."""
        path = self.scratch / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        return path


@dataclass
class Case:
    """One command and what a clean answer to it is.

    ``args`` may hold ``{R}`` (the run), ``{W}`` (the scratch folder) and ``{S}`` (the trtexec samples); ``setup``
    prepares W and returns extra substitutions; ``check`` looks at the outcome and returns a problem or None;
    ``writes`` lists paths (relative to W) the case may legitimately change; ``cwd`` (relative to W) is where the
    command runs, W by default.
    """

    group: str
    name: str
    args: list[str]
    code: int = 2
    setup: Callable[[Ctx], dict[str, str]] | None = None
    check: Callable[[Ctx, subprocess.CompletedProcess], str | None] | None = None
    non_root: bool = False
    samples: bool = False
    one_line: bool = True
    writes: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""


# --------------------------------------------------------------------------------------------- setups and checks


def yaml_target(name: str) -> Callable[[Ctx], dict[str, str]]:
    """A target profile file whose name is ``name`` (otherwise the shipped x86-cpu profile)."""

    def setup(ctx: Ctx) -> dict[str, str]:
        from leapkit.profiles import targets_dir

        text = (targets_dir() / "x86-cpu.yaml").read_text()
        lines = [f"name: {json.dumps(name)}" if line.startswith("name:") else line for line in text.splitlines()]
        victim = ctx.scratch / "victim"
        victim.mkdir(exist_ok=True)
        (victim / "precious.txt").write_text("not leapkit's")
        return {"P": str(ctx.file("evil-target.yaml", "\n".join(lines) + "\n"))}

    return setup


SUFFIXES = {"Y": ".yaml", "T": ".log", "J": ".json", "G": ".safetensors"}
"""The name each kind of file has, so that a case reaches the check of its contents: Y a YAML file, T a trtexec
log, J a JSON file, G a weights file; any other key is a file without a suffix."""


def files(**named: str | bytes) -> Callable[[Ctx], dict[str, str]]:
    """Files in W, each given to the case as {NAME} and named with the suffix of its kind (:data:`SUFFIXES`)."""

    def setup(ctx: Ctx) -> dict[str, str]:
        return {key: str(ctx.file(f"in/{key.lower()}{SUFFIXES.get(key, '')}", text)) for key, text in named.items()}

    return setup


def images(ctx: Ctx, folder: str, good: int, bad: int = 0, text_only: bool = False) -> Path:
    """An image folder in W: ``good`` readable PNGs and ``bad`` corrupt JPEGs (or text files only)."""
    import numpy as np
    from PIL import Image

    path = ctx.scratch / folder
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(good):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path / f"img{i}.png")
    for i in range(bad):
        (path / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    if text_only:
        for i in range(3):
            (path / f"notes{i}.txt").write_text("no image here")
    return path


def run_copy(name: str, change: Callable[[Path], None] | None = None) -> Callable[[Ctx], dict[str, str]]:
    """A copy of R, changed by ``change``, given to the case as {C}."""

    def setup(ctx: Ctx) -> dict[str, str]:
        copy = ctx.copy_run(name)
        if change is not None:
            change(copy)
        return {"C": str(copy)}

    return setup


def truncate(relative: str, keep: float = 0.5) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        path = run / relative
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return change


def metrics_with(tail: str = "", insert: str | None = None) -> Callable[[Path], None]:
    """metrics.jsonl with ``tail`` appended (a write cut short) or ``insert`` as its second line (damage)."""

    def change(run: Path) -> None:
        path = run / "metrics.jsonl"
        lines = path.read_text().splitlines()
        if insert is not None:
            lines.insert(1, insert)
        path.write_text("\n".join(lines) + "\n" + tail)

    return change


def dangling_latest(ctx: Ctx) -> dict[str, str]:
    """W/elsewhere/runs/latest, pointing to a run that was deleted."""
    link = ctx.scratch / "elsewhere" / "runs" / "latest"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to("demo-deleted")
    return {}


def garble(relative: str) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        (run / relative).write_bytes(os.urandom(4096))

    return change


def read_only_run(name: str) -> Callable[[Ctx], dict[str, str]]:
    """A copy of R whose folders nobody but root may write into."""

    def setup(ctx: Ctx) -> dict[str, str]:
        copy = ctx.copy_run(name)
        for folder in [copy, *(p for p in copy.rglob("*") if p.is_dir() and not p.is_symlink())]:
            folder.chmod(0o555)
        return {"C": str(copy)}

    return setup


def unchanged(relative: str) -> Callable[[Ctx, subprocess.CompletedProcess], str | None]:
    """The case's run copy {C} kept ``relative`` as R has it."""

    def check(ctx: Ctx, proc: subprocess.CompletedProcess) -> str | None:
        copies = [p for p in ctx.scratch.iterdir() if (p / relative).exists() and p.name.startswith("c-")]
        for copy in copies:
            if (copy / relative).read_bytes() != (ctx.run / relative).read_bytes():
                return f"{copy.name}/{relative} changed"
        return None

    return check


def results_survive(ctx: Ctx, proc: subprocess.CompletedProcess) -> str | None:
    copy = ctx.scratch / "c-device-results"
    found = [p for p in copy.rglob("trtexec.log") if p.read_text() == "the device's own log\n"]
    if not found:
        return "the device's results/ copied back into the export folder are gone"
    if "results" not in proc.stdout + proc.stderr:
        return "the export did not say where the device's results went"
    return None


def with_device_results(run: Path) -> None:
    folder = run / "export" / "x86-cpu" / "results" / "fp32"
    folder.mkdir(parents=True)
    (folder / "trtexec.log").write_text("the device's own log\n")


def without_export(run: Path) -> None:
    shutil.rmtree(run / "export")


def latest_untouched(ctx: Ctx, proc: subprocess.CompletedProcess) -> str | None:
    stubs = [p for p in (ctx.scratch / "runs").glob("*")] if (ctx.scratch / "runs").is_dir() else []
    stubs = [p for p in stubs if p.name != "latest"]
    return f"left a run folder behind: {[p.name for p in stubs]}" if stubs else None


def symlinked_run(ctx: Ctx) -> dict[str, str]:
    target = ctx.copy_run("c-link-target")
    link = ctx.scratch / "link-to-run"
    if not link.is_symlink():
        link.symlink_to(target)
    return {"L": str(link)}


def link_target_kept(ctx: Ctx, proc: subprocess.CompletedProcess) -> str | None:
    target = ctx.scratch / "c-link-target"
    if proc.returncode != 0 and not (target / "student.safetensors").is_file():
        return "the run the link points to lost its student"
    return None


def unconfirmed(ctx: Ctx, proc: subprocess.CompletedProcess) -> str | None:
    reports = list((ctx.scratch / "other-device").rglob("jetson-orin-nano.json"))
    if not reports:
        return "no report written"
    verdict = json.loads(reports[0].read_text())["verdict"]
    return None if verdict == "UNCONFIRMED" else f"a log from another GPU judged {verdict}, not UNCONFIRMED"


def cut_log() -> Callable[[Ctx], dict[str, str]]:
    """The A5000 log cut inside its summary's Latency line, after the median and before the percentiles, as {T}."""

    def setup(ctx: Ctx) -> dict[str, str]:
        text = (SAMPLES / A5000_LOG).read_text()
        start = text.index("=== Performance summary ===")
        latency = text.index("] Latency: ", start)
        return {"T": str(ctx.file("cut.log", text[: text.index("percentile", latency)]))}

    return setup


def empty_folder(name: str) -> Callable[[Ctx], dict[str, str]]:
    def setup(ctx: Ctx) -> dict[str, str]:
        path = ctx.scratch / name
        path.mkdir(exist_ok=True)
        return {"E": str(path)}

    return setup


def permission_folder(name: str) -> Callable[[Ctx], dict[str, str]]:
    def setup(ctx: Ctx) -> dict[str, str]:
        return {"RO": str(ctx.read_only(name))}

    return setup


def image_folder(good: int, bad: int = 0, text_only: bool = False) -> Callable[[Ctx], dict[str, str]]:
    def setup(ctx: Ctx) -> dict[str, str]:
        return {"D": str(images(ctx, f"data-{good}-{bad}-{int(text_only)}", good, bad, text_only))}

    return setup


def bomb_folder(ctx: Ctx) -> dict[str, str]:
    """46 PNGs and a 6 kB JPEG whose header claims 30000 x 30000 pixels, over PIL's decompression-bomb limit."""
    import io

    import numpy as np
    from PIL import Image

    path = images(ctx, "data-bomb", 46)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = (30000).to_bytes(2, "big") * 2
    (path / "bomb.jpg").write_bytes(bytes(data))
    return {"D": str(path)}


def one_file_skipped(ctx: Ctx, proc: subprocess.CompletedProcess) -> str | None:
    counted = "1 files, 1 reads" in proc.stdout + proc.stderr
    return None if counted else "the over-limit image was not counted as skipped"


def skipped_counts_files(ctx: Ctx, proc: subprocess.CompletedProcess) -> str | None:
    text = proc.stdout + proc.stderr
    if "4 skipped" in text:
        return "2 corrupt files reported as 4 skipped"
    return None


def merge(*setups: Callable[[Ctx], dict[str, str]]) -> Callable[[Ctx], dict[str, str]]:
    def setup(ctx: Ctx) -> dict[str, str]:
        out: dict[str, str] = {}
        for s in setups:
            out.update(s(ctx))
        return out

    return setup


BAD_YAML = "model: [unclosed\n"
RANDOM = os.urandom(2048)


def cases() -> list[Case]:
    demo = ["--epochs", "1", "--no-progress"]
    out = ["--out", "{W}/new-run"]
    return [
        # ---------------------------------------------------------------- distill
        Case("distill", "zero epochs", ["distill", "--epochs", "0", *out]),
        Case("distill", "negative epochs", ["distill", "--epochs", "-1", *out]),
        Case("distill", "zero batch", ["distill", "--batch-size", "0", *out]),
        Case("distill", "lr nan", ["distill", "--lr", "nan", *out]),
        Case("distill", "lr negative", ["distill", "--lr", "-1", *out]),
        Case("distill", "img size 0", ["distill", "--img-size", "0", *out]),
        Case("distill", "unknown recipe", ["distill", "--recipe", "no-such-recipe", *out]),
        Case("distill", "recipe not YAML", ["distill", "--recipe", "{Y}", *out], setup=files(Y=BAD_YAML)),
        Case("distill", "recipe unknown key", ["distill", "--recipe", "{Y}", *out], setup=files(Y="modle: {}\n")),
        Case("distill", "recipe is a list", ["distill", "--recipe", "{Y}", *out], setup=files(Y="- 1\n- 2\n")),
        Case("distill", "recipe file not named .yaml", ["distill", "--recipe", "{N}", *out],
             setup=files(N="model: {}\n")),
        Case("distill", "unknown student", ["distill", "--student", "vit_does_not_exist", *out]),
        Case("distill", "unknown teacher", ["distill", "--teacher", "vit_nope", *out]),
        Case("distill", "teacher weights missing", ["distill", "--teacher-weights", "{W}/gone.safetensors", *out]),
        Case("distill", "teacher weights garbage", ["distill", "--teacher-weights", "{G}", *out],
             setup=files(G=RANDOM)),
        Case("distill", "teacher weights not named .safetensors", ["distill", "--teacher-weights", "{N}", *out],
             setup=files(N=RANDOM)),
        Case("distill", "data missing", ["distill", "--data", "{W}/no-data", *out]),
        Case("distill", "data empty", ["distill", "--data", "{D}", *out], setup=image_folder(0)),
        Case("distill", "data without images", ["distill", "--data", "{D}", "--no-progress"],
             setup=image_folder(0, text_only=True), check=latest_untouched),
        Case("distill", "out exists", ["distill", "--out", "{C}", *demo], setup=run_copy("c-exists"),
             check=unchanged("summary.json")),
        Case("distill", "out is a file", ["distill", "--out", "{F}", *demo], setup=files(F="a file\n")),
        Case("distill", "overwrite a non-run folder", ["distill", "--out", "{W}/in", "--overwrite", *demo],
             setup=files(KEEP="mine\n")),
        Case("distill", "overwrite through a symlink", ["distill", "--out", "{L}", "--overwrite", "--epochs", "0"],
             setup=symlinked_run, check=link_target_kept),
        Case("distill", "resume a missing run", ["distill", "--resume", "--out", "{W}/gone"]),
        Case("distill", "resume with another curriculum", ["distill", "--resume", "--out", "{C}", "--curriculum",
                                                           "baseline", "--no-progress"],
             setup=run_copy("c-curriculum"), check=unchanged("config.yaml")),
        Case("distill", "resume with another student", ["distill", "--resume", "--out", "{C}", "--student",
                                                         "vit_tiny_patch16_224", "--no-progress"],
             setup=run_copy("c-student"), check=unchanged("config.yaml")),
        Case("distill", "resume with another recipe", ["distill", "--resume", "--out", "{C}", "--recipe",
                                                        "imagenet100-vits14-from-vitg14", "--no-progress"],
             setup=run_copy("c-recipe"), check=unchanged("config.yaml")),
        Case("distill", "resume a finished run", ["distill", "--resume", "--out", "{C}", "--no-progress"], code=0,
             setup=run_copy("c-finished"), check=unchanged("summary.json"), one_line=False),
        Case("distill", "resume a truncated checkpoint", ["distill", "--resume", "--out", "{C}", "--epochs", "2",
                                                          "--no-progress"],
             setup=run_copy("c-cut-ckpt", truncate("checkpoints/last.pt")), check=unchanged("config.yaml")),
        Case("distill", "resume a garbage checkpoint", ["distill", "--resume", "--out", "{C}", "--epochs", "2",
                                                        "--no-progress"],
             setup=run_copy("c-bad-ckpt", garble("checkpoints/last.pt")), check=unchanged("config.yaml")),
        Case("distill", "unknown --set key", ["distill", "--set", "optim.nosuch=1", *out]),
        Case("distill", "--set bad value", ["distill", "--set", "optim.lr=abc", *out]),
        Case("distill", "--set without =", ["distill", "--set", "optim.lr", *out]),
        Case("distill", "unknown curriculum", ["distill", "--curriculum", "nosuch", *out]),
        Case("distill", "plateau window 0", ["distill", "--curriculum", "plateau", "--plateau-window", "0", *out]),
        Case("distill", "plateau tolerance negative", ["distill", "--curriculum", "plateau", "--plateau-tolerance",
                                                       "-0.1", *out]),
        Case("distill", "unknown decode path", ["distill", "--set", "data.decode=nvjpeg", *out]),
        Case("distill", "workers abc", ["distill", "--workers", "abc", *out]),
        Case("distill", "seed too large", ["distill", "--seed", "99999999999999999999", *out]),
        Case("distill", "cka threshold 2", ["distill", "--cka-threshold", "2", *out]),
        Case("distill", "ema alpha 0", ["distill", "--ema-alpha", "0", *out]),
        Case("distill", "max epochs per block 0", ["distill", "--max-epochs-per-block", "0", *out]),
        Case("distill", "cuda without a GPU", ["distill", "--device", "cuda", *out]),
        Case("distill", "unknown amp", ["distill", "--amp", "fp8", *out]),
        Case("distill", "negative workers", ["distill", "--workers", "-1", *out]),
        Case("distill", "student auto without target", ["distill", "--student", "auto", *out]),
        Case("distill", "budget nan", ["distill", "--student", "auto", "--target", "x86-cpu", "--budget-ms", "nan",
                                       *out]),
        Case("distill", "budget inf", ["distill", "--student", "auto", "--target", "x86-cpu", "--budget-ms", "inf",
                                       *out]),
        Case("distill", "read-only parent", ["distill", "--out", "{RO}/run", *demo],
             setup=permission_folder("ro-distill"), non_root=True),
        Case("distill", "corrupt JPEGs counted once", ["distill", "--data", "{D}", "--epochs", "2", "--out",
                                                       "{W}/jpeg-run", "--no-progress"], code=0, one_line=False,
             setup=image_folder(46, bad=2), check=skipped_counts_files, writes=("jpeg-run", "runs")),
        Case("distill", "an image over the pixel limit", ["distill", "--data", "{D}", "--epochs", "1", "--out",
                                                          "{W}/bomb-run", "--no-progress"], code=0, one_line=False,
             setup=bomb_folder, check=one_file_skipped, writes=("bomb-run", "runs", "latest")),
        # ---------------------------------------------------------------- flops
        Case("flops", "missing run", ["flops", "{W}/gone"]),
        Case("flops", "empty folder", ["flops", "{E}"], setup=empty_folder("empty-run")),
        Case("flops", "a file", ["flops", "{F}"], setup=files(F="x\n")),
        Case("flops", "config not YAML", ["flops", "{C}"],
             setup=run_copy("c-flops-config", lambda r: (r / "config.yaml").write_text(BAD_YAML))),
        Case("flops", "export batch 0", ["flops", "{R}", "--export-batch", "0"]),
        Case("flops", "read-only run", ["flops", "{C}"], setup=read_only_run("c-flops-ro"), non_root=True),
        # flops counts from the run's config (the architectures), not from the weights: a run without a readable
        # student still has its FLOPs, and flops.json is the one file it writes.
        Case("flops", "metrics line damaged", ["flops", "{C}"],
             setup=run_copy("c-flops-metrics", metrics_with(insert="garbage"))),
        Case("flops", "metrics last line cut by a kill", ["flops", "{C}"], code=0, one_line=False,
             writes=("c-flops-cut-line",), setup=run_copy("c-flops-cut-line", metrics_with(tail='{"step": 9, "lo')),
             check=lambda ctx, p: None if "cut short" in p.stdout + p.stderr else "no warning about the cut line"),
        Case("flops", "latest points to a deleted run", ["flops"], setup=dangling_latest, cwd="elsewhere"),
        Case("flops", "student missing", ["flops", "{C}"], code=0, one_line=False, writes=("c-flops-nostudent",),
             setup=run_copy("c-flops-nostudent", lambda r: (r / "student.safetensors").unlink())),
        Case("flops", "student truncated", ["flops", "{C}"], code=0, one_line=False, writes=("c-flops-cut",),
             setup=run_copy("c-flops-cut", truncate("student.safetensors"))),
        # ---------------------------------------------------------------- eval
        Case("eval", "missing run", ["eval", "{W}/gone"]),
        Case("eval", "data missing", ["eval", "{R}", "--data", "{W}/no-data"]),
        Case("eval", "data empty", ["eval", "{R}", "--data", "{D}"], setup=image_folder(0)),
        Case("eval", "data without val/", ["eval", "{R}", "--data", "{D}"], setup=image_folder(4)),
        Case("eval", "batch 0", ["eval", "{R}", "--batch-size", "0"]),
        Case("eval", "cuda without a GPU", ["eval", "{R}", "--device", "cuda"]),
        Case("eval", "unknown pool", ["eval", "{R}", "--pool", "max"]),
        Case("eval", "revisitop missing", ["eval", "{R}", "--revisitop", "{W}/no-oxford"]),
        Case("eval", "read-only run", ["eval", "{C}", "--no-teacher"], setup=read_only_run("c-eval-ro"),
             non_root=True),
        Case("eval", "student truncated", ["eval", "{C}"],
             setup=run_copy("c-eval-cut", truncate("student.safetensors"))),
        # ---------------------------------------------------------------- export
        Case("export", "missing run", ["export", "{W}/gone", "--target", "x86-cpu"]),
        Case("export", "unknown target", ["export", "{R}", "--target", "nosuch"]),
        Case("export", "profile name is a path", ["export", "{C}", "--target", "{P}", "--overwrite"],
             setup=merge(run_copy("c-evil"), yaml_target("../../victim"))),
        Case("export", "profile name ..", ["export", "{C}", "--target", "{P}", "--overwrite"],
             setup=merge(run_copy("c-dotdot"), yaml_target(".."))),
        Case("export", "profile not YAML", ["export", "{R}", "--target", "{Y}"], setup=files(Y=BAD_YAML)),
        Case("export", "profile file not named .yaml", ["export", "{R}", "--target", "{N}"],
             setup=files(N="name: x\n")),
        Case("export", "precision fp64", ["export", "{R}", "--target", "x86-cpu", "--precision", "fp64"]),
        Case("export", "batch 0", ["export", "{R}", "--target", "x86-cpu", "--batch", "0"]),
        Case("export", "input size 7", ["export", "{R}", "--target", "x86-cpu", "--input-size", "7"]),
        Case("export", "calibration images 0", ["export", "{R}", "--target", "x86-cpu", "--calib-images", "0"]),
        Case("export", "unknown calibration", ["export", "{R}", "--target", "x86-cpu", "--calib-method", "mean"]),
        Case("export", "export exists", ["export", "{C}", "--target", "x86-cpu"], setup=run_copy("c-export-twice"),
             check=unchanged("export/x86-cpu/manifest.json")),
        Case("export", "overwrite keeps the device's results", ["export", "{C}", "--target", "x86-cpu", "--precision",
                                                                 "fp32", "--overwrite"],
             code=0, one_line=False, setup=run_copy("c-device-results", with_device_results), check=results_survive,
             writes=("c-device-results",)),
        Case("export", "read-only run", ["export", "{C}", "--target", "x86-cpu", "--overwrite"],
             setup=read_only_run("c-export-ro"), non_root=True),
        Case("export", "student truncated", ["export", "{C}", "--target", "x86-cpu", "--overwrite"],
             setup=run_copy("c-export-cut", truncate("student.safetensors"))),
        Case("export", "build engine without TensorRT", ["export", "{R}", "--target", "jetson", "--build-engine",
                                                         "--overwrite"]),
        # ---------------------------------------------------------------- bench
        Case("bench", "missing model", ["bench", "{W}/gone", "--target", "x86-cpu"]),
        Case("bench", "unknown target", ["bench", "{R}", "--target", "nosuch"]),
        Case("bench", "budget nan", ["bench", "{R}", "--budget-ms", "nan"]),
        Case("bench", "budget inf", ["bench", "{R}", "--budget-ms", "inf"]),
        Case("bench", "budget 0", ["bench", "{R}", "--budget-ms", "0"]),
        Case("bench", "budget negative", ["bench", "{R}", "--budget-ms", "-1"]),
        Case("bench", "unknown stat", ["bench", "{R}", "--stat", "p42"]),
        Case("bench", "unknown runtime", ["bench", "{R}", "--runtime", "tflite"]),
        Case("bench", "precision fp64", ["bench", "{R}", "--precision", "fp64"]),
        Case("bench", "iterations 0", ["bench", "{R}", "-n", "0"]),
        Case("bench", "negative duration", ["bench", "{R}", "--duration", "-1"]),
        Case("bench", "negative warmup", ["bench", "{R}", "--warmup", "-1"]),
        Case("bench", "threads 999", ["bench", "{R}", "--threads", "999"]),
        Case("bench", "threads abc", ["bench", "{R}", "--threads", "abc"]),
        Case("bench", "batch 0", ["bench", "{R}", "--batch", "0"]),
        Case("bench", "trtexec log missing", ["bench", "--from-trtexec", "{W}/gone.log", "--target", "x86-cpu"]),
        Case("bench", "trtexec log empty", ["bench", "--from-trtexec", "{T}", "--target", "x86-cpu"],
             setup=files(T="")),
        Case("bench", "trtexec log is prose", ["bench", "--from-trtexec", "{T}", "--target", "x86-cpu"],
             setup=files(T="hello\nworld\n")),
        Case("bench", "trtexec log binary", ["bench", "--from-trtexec", "{T}", "--target", "x86-cpu"],
             setup=files(T=RANDOM)),
        Case("bench", "trtexec log cut, p99 judged", ["bench", "--from-trtexec", "{T}", "--target", "rtx-4090",
                                                      "--out", "{W}/cut", "--stat", "p99"],
             setup=cut_log(), samples=True,
             check=lambda ctx, p: None if "truncat" in p.stderr else "the cut is not named"),
        Case("bench", "trtexec log cut, p50 judged", ["bench", "--from-trtexec", "{T}", "--target", "rtx-4090",
                                                      "--out", "{W}/cut50", "--stat", "p50"],
             code=0, one_line=False, setup=cut_log(), samples=True, writes=("cut50",),
             check=lambda ctx, p: None if "truncat" in p.stdout + p.stderr else "no truncation warning"),
        Case("bench", "a log from another GPU", ["bench", "--from-trtexec", f"{{S}}/{A5000_LOG}", "--target",
                                                 "jetson-orin-nano", "--out", "{W}/other-device"],
             code=0, one_line=False, samples=True, check=unconfirmed, writes=("other-device",)),
        Case("bench", "baseline missing", ["bench", "{R}", "--baseline", "{W}/gone.json", "-n", "5"]),
        Case("bench", "baseline not JSON", ["bench", "{R}", "--baseline", "{J}", "-n", "5"],
             setup=files(J="{not json")),
        Case("bench", "baseline a JSON list", ["bench", "{R}", "--baseline", "{J}", "-n", "5"],
             setup=files(J="[1, 2]\n")),
        Case("bench", "baseline with a wrong-typed key", ["bench", "{R}", "--baseline", "{J}", "-n", "5"],
             setup=files(J='{"target": 5, "results": "fast"}\n')),
        Case("bench", "energy budget nan", ["bench", "{R}", "--budget-mj", "nan"]),
        Case("bench", "energy budget negative", ["bench", "{R}", "--budget-mj", "-1"]),
        Case("bench", "trtexec batch 0", ["bench", "--from-trtexec", f"{{S}}/{A5000_LOG}", "--target", "rtx-4090",
                                          "--batch", "0", "--out", "{W}/batch0"], samples=True),
        Case("bench", "negative max regression", ["bench", "{R}", "--max-regression", "-5", "-n", "5"]),
        Case("bench", "junit into a read-only folder", ["bench", "{R}", "-n", "5", "--out", "{W}/junit-out",
                                                        "--junit", "{RO}/latency.xml"],
             setup=permission_folder("ro-junit"), non_root=True),
        Case("bench", "out into a read-only folder", ["bench", "{R}", "-n", "5", "--out", "{RO}"],
             setup=permission_folder("ro-bench"), non_root=True),
        Case("bench", "a run without an export", ["bench", "{C}", "--target", "x86-cpu", "-n", "5"],
             setup=run_copy("c-no-export", without_export)),
        Case("bench", "host with two ports", ["bench", "{R}", "--host", "a:1:2"]),
        Case("bench", "host and trtexec together", ["bench", "--host", "127.0.0.1:1", "--from-trtexec", "{T}",
                                                    "--target", "jetson-orin-nano"], setup=files(T="x\n")),
        # ---------------------------------------------------------------- report
        Case("report", "missing run", ["report", "{W}/gone"]),
        Case("report", "empty folder", ["report", "{E}"], setup=empty_folder("empty-report")),
        Case("report", "a file", ["report", "{F}"], setup=files(F="x\n")),
        Case("report", "read-only run", ["report", "{C}"], setup=read_only_run("c-report-ro"), non_root=True),
        Case("report", "cuda without a GPU", ["report", "{R}", "--eval", "--device", "cuda"]),
        Case("report", "summary not JSON", ["report", "{C}"],
             setup=run_copy("c-report-summary", lambda r: (r / "summary.json").write_text("{oops"))),
        # ---------------------------------------------------------------- plan
        Case("plan", "unknown target", ["plan", "--target", "nosuch"]),
        Case("plan", "budget nan", ["plan", "--target", "x86-cpu", "--budget-ms", "nan", "--format", "json"]),
        Case("plan", "budget inf", ["plan", "--target", "x86-cpu", "--budget-ms", "inf", "--format", "json"]),
        Case("plan", "budget negative", ["plan", "--target", "x86-cpu", "--budget-ms", "-5"]),
        Case("plan", "img size 0", ["plan", "--target", "x86-cpu", "--img-size", "0"]),
        Case("plan", "unknown student", ["plan", "--target", "x86-cpu", "--student", "vit_nope"]),
        Case("plan", "unknown teacher", ["plan", "--target", "x86-cpu", "--teacher", "vit_nope"]),
        Case("plan", "precision fp64", ["plan", "--target", "x86-cpu", "--precision", "fp64"]),
        Case("plan", "unknown format", ["plan", "--target", "x86-cpu", "--format", "xml"]),
        Case("plan", "unknown GPU", ["plan", "--target", "x86-cpu", "--teacher", "vit_large_patch14_dinov2",
                                     "--gpu", "V100"]),
        Case("plan", "utilisation 0", ["plan", "--target", "x86-cpu", "--teacher", "vit_large_patch14_dinov2",
                                       "--utilisation", "0"]),
        Case("plan", "utilisation 2", ["plan", "--target", "x86-cpu", "--teacher", "vit_large_patch14_dinov2",
                                       "--utilisation", "2"]),
        Case("plan", "train images 0", ["plan", "--target", "x86-cpu", "--teacher", "vit_large_patch14_dinov2",
                                        "--train-images", "0"]),
        Case("plan", "calibration missing", ["plan", "--target", "x86-cpu", "--calibration", "{W}/gone.json"]),
        Case("plan", "calibration not JSON", ["plan", "--target", "x86-cpu", "--calibration", "{J}"],
             setup=files(J="{oops")),
        Case("plan", "unknown recipe", ["plan", "--target", "x86-cpu", "--teacher", "vit_large_patch14_dinov2",
                                        "--recipe", "nosuch"]),
        Case("plan", "unknown runtime", ["plan", "--target", "x86-cpu", "--runtime", "tflite"]),
        Case("plan", "plot into a read-only folder", ["plan", "--target", "x86-cpu", "--plot", "{RO}/plan.png"],
             setup=permission_folder("ro-plan"), non_root=True),
        # ---------------------------------------------------------------- calibrate
        Case("calibrate", "unknown target", ["calibrate", "--target", "nosuch"]),
        Case("calibrate", "unreachable host", ["calibrate", "--target", "jetson-orin-nano", "--host", "127.0.0.1:1",
                                               "--no-progress"],
             check=lambda ctx, p: None if "-p 1" in p.stderr or "port 1" in p.stderr or "127.0.0.1:1" in p.stderr
             else "the hint drops the port"),
        Case("calibrate", "duration 0", ["calibrate", "--target", "x86-cpu", "--duration", "0"]),
        Case("calibrate", "rounds 0", ["calibrate", "--target", "x86-cpu", "--rounds", "0"]),
        Case("calibrate", "threads 0", ["calibrate", "--target", "x86-cpu", "--threads", "0"]),
        Case("calibrate", "unknown runtime", ["calibrate", "--target", "x86-cpu", "--runtime", "tflite"]),
        Case("calibrate", "precision fp64", ["calibrate", "--target", "x86-cpu", "--precision", "fp64"]),
        Case("calibrate", "out into a read-only folder", ["calibrate", "--target", "x86-cpu", "--quick", "--out",
                                                          "{RO}/cal.json", "--no-progress"],
             setup=permission_folder("ro-cal"), non_root=True),
        # ---------------------------------------------------------------- profiles
        Case("profiles", "show unknown", ["profiles", "show", "nosuch"]),
        Case("profiles", "validate a missing file", ["profiles", "validate", "{W}/missing.yaml"],
             check=lambda ctx, p: None if "not found" in p.stderr or "no such file" in p.stderr.lower()
             else "does not say the file is missing"),
        Case("profiles", "validate not YAML", ["profiles", "validate", "{Y}"], setup=files(Y=BAD_YAML)),
        Case("profiles", "validate a path as name", ["profiles", "validate", "{P}"],
             setup=yaml_target("../../victim")),
        Case("profiles", "validate an empty file", ["profiles", "validate", "{Y}"], setup=files(Y="")),
        Case("profiles", "validate a list", ["profiles", "validate", "{Y}"], setup=files(Y="- a\n- b\n")),
        Case("profiles", "unknown subcommand", ["profiles", "delete"]),
        # ---------------------------------------------------------------- the entry point
        Case("cli", "unknown command", ["train"]),
        Case("cli", "unknown option", ["--bogus"]),
        Case("cli", "debug keeps the exit code", ["plan", "--target", "nosuch"], one_line=False,
             env={"LEAPKIT_DEBUG": "1"}),
        Case("cli", "version", ["--version"], code=0, one_line=False),
    ]


# --------------------------------------------------------------------------------------------- running


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file and link under ``folders``: its content hash, or where the link points."""
    out = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                out[str(path)] = "-> " + os.readlink(path)
            elif path.is_file():
                try:
                    out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
                except PermissionError:
                    out[str(path)] = "unreadable"
    return out


def lost(before: dict[str, str], after: dict[str, str], writes: list[Path]) -> list[str]:
    """Files that were there before and are gone or changed, outside the places the case may write."""
    problems = []
    for path, digest in before.items():
        if any(Path(path).is_relative_to(w) for w in writes):
            continue
        if path not in after:
            problems.append(f"lost {path}")
        elif after[path] != digest:
            problems.append(f"changed {path}")
    return problems


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*.tmp-*")]


def run_case(case: Case, ctx: Ctx, can_drop_caps: bool) -> dict[str, object]:
    row: dict[str, object] = {"group": case.group, "case": case.name, "expected": case.code}
    if case.samples and not SAMPLES.is_dir():
        return {**row, "outcome": "skipped", "why": f"{SAMPLES} is absent"}
    if case.non_root and not can_drop_caps:
        return {**row, "outcome": "skipped", "why": "cannot drop root's file capabilities here (setpriv)"}
    subs = {"R": str(ctx.run), "W": str(ctx.scratch), "S": str(SAMPLES)}
    if case.setup is not None:
        subs.update(case.setup(ctx))
    args = [a.format(**subs) for a in case.args]
    before = snapshot(ctx.run, ctx.scratch)
    prefix = NON_ROOT if case.non_root else []
    started = time.monotonic()
    proc = subprocess.run([*prefix, sys.executable, "-m", "leapkit", *args], capture_output=True, text=True,
                          cwd=ctx.scratch / case.cwd, env={**os.environ, **case.env, "COLUMNS": "200"}, timeout=900)
    seconds = time.monotonic() - started
    after = snapshot(ctx.run, ctx.scratch)
    problems = []
    if proc.returncode != case.code:
        problems.append(f"exit {proc.returncode}, expected {case.code}")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if "Traceback" in proc.stderr and not case.env.get("LEAPKIT_DEBUG"):
        problems.append("a traceback")
    if "internal error" in proc.stderr:
        problems.append("an internal error")
    if case.one_line and case.code != 0 and len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr")
    problems += lost(before, after, [ctx.scratch / w for w in case.writes])
    problems += [f"left {p}" for p in leftovers(ctx.scratch)]
    if case.check is not None and (problem := case.check(ctx, proc)):
        problems.append(problem)
    message = lines[-1] if lines else proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return {**row, "outcome": "clean" if not problems else "MISBEHAVED", "exit": proc.returncode,
            "problems": problems, "message": message[:300], "seconds": round(seconds, 1)}


def make_run(scratch: Path) -> Path:
    run = scratch.parent / "R"
    leapkit = [sys.executable, "-m", "leapkit"]
    subprocess.run([*leapkit, "distill", "--epochs", "1", "--out", str(run), "--no-progress"], check=True,
                   capture_output=True)
    subprocess.run([*leapkit, "export", str(run), "--target", "x86-cpu", "--precision", "fp32"], check=True,
                   capture_output=True)
    return run


def drops_caps() -> bool:
    if shutil.which("setpriv") is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ro"
        folder.mkdir(mode=0o555)
        probe = subprocess.run([*NON_ROOT, "touch", str(folder / "x")], capture_output=True)
        folder.chmod(stat.S_IRWXU)
        return probe.returncode != 0


def write_results(rows: list[dict[str, object]], command: str, wall_s: float) -> None:
    ran = [r for r in rows if r["outcome"] != "skipped"]
    clean = [r for r in ran if r["outcome"] == "clean"]
    lines = [
        "# Bad inputs: clean refusals and nothing lost",
        "",
        f"Command: `{command}` (from the repository root). Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {wall_s:.0f} s in all.",
        "",
        f"**{len(clean)} of {len(ran)} clean** ({len(rows) - len(ran)} skipped). A case is clean when its exit code "
        "is the expected one, a refusal is one line on stderr with no traceback, every file in the run and the "
        "scratch folder is still there byte for byte (outside what the case may write), no temporary folder is "
        "left behind, and its own check holds. See the script's docstring.",
        "",
        "| group | case | expected | exit | outcome | what leapkit said / what was wrong |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        said = "; ".join(r.get("problems") or []) or str(r.get("message", r.get("why", "")))
        said = said.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['group']} | {r['case']} | {r['expected']} | {r.get('exit', '')} | {r['outcome']} | "
                     f"{said} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the cases whose 'group name' this regular expression matches")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and print where it is")
    args = parser.parse_args()
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="leapkit-bad-inputs-"))
    scratch = base / "W"
    scratch.mkdir()
    run = make_run(scratch)
    can_drop_caps = drops_caps()
    rows = []
    for case in cases():
        if args.only and not re.search(args.only, f"{case.group} {case.name}"):
            continue
        row = run_case(case, Ctx(run, scratch), can_drop_caps)
        rows.append(row)
        problems = "; ".join(row.get("problems") or []) or row.get("why", "")
        print(f"{row['outcome']:<10} {case.group:<9} {case.name:<40} {problems or row.get('message', '')}"[:220],
              flush=True)
    ran = [r for r in rows if r["outcome"] != "skipped"]
    print(f"{sum(r['outcome'] == 'clean' for r in ran)} of {len(ran)} clean, {len(rows) - len(ran)} skipped")
    if not args.only:
        write_results(rows, "python benchmarks/bad_inputs.py", time.monotonic() - started)
    for folder in base.rglob("*"):  # the read-only folders, so that they can be removed
        if folder.is_dir() and not folder.is_symlink():
            folder.chmod(stat.S_IRWXU)
    if args.keep:
        print(f"scratch kept in {base}")
    else:
        shutil.rmtree(base)
    return 0 if len(ran) == sum(r["outcome"] == "clean" for r in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
