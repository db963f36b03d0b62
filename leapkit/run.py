"""The run directory, the contract between stages, and the writer that fills it.

    runs/<name>/config.yaml, metrics.jsonl, curriculum.json, checkpoints/last.pt,
    student.safetensors, summary.json, ...      and runs/latest -> the newest run

Later stages find a run with :func:`resolve_run` and read it back with :func:`read_run_config`,
:func:`read_metrics`, :func:`load_student` and :class:`RunSummary`. Training writes it through a
:class:`RunWriter`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import torch
import yaml
from torch import nn

from leapkit import __version__
from leapkit.config import SECTIONS, Config, load_config, to_yaml
from leapkit.errors import RunError
from leapkit.eval.record import EvalReport
from leapkit.records import Record, atomic_write_bytes, read_json, write_json
from leapkit.types import Mode

__all__ = ["atomic_write_bytes", "read_json", "write_json"]  # re-exported for the stages

log = logging.getLogger(__name__)

RUNS_DIR = Path("runs")
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CURRICULUM = "curriculum.json"
CHECKPOINT = "checkpoints/last.pt"
STUDENT = "student.safetensors"
SUMMARY = "summary.json"
LATEST = "latest"
READ_ONLY_FIX = "fix the folder's permissions, or copy the run to a folder you can write to"
"""How to get out of a run folder that a stage cannot write its result into (see leapkit.paths)."""


def latest_link(runs_dir: Path = RUNS_DIR) -> Path:
    return runs_dir / LATEST


def point_latest(run_dir: Path) -> None:
    """Make ``<parent>/latest`` a relative symlink to ``run_dir`` (replaced atomically).

    Only a link that leapkit made (a symlink to a sibling folder) or nothing is replaced: a real
    file or folder named ``latest``, or a link pointing elsewhere, is left alone with a warning.
    """
    link = latest_link(run_dir.parent)
    ours = link.is_symlink() and os.sep not in os.readlink(link)
    if (link.exists() or link.is_symlink()) and not ours:
        log.warning("%s is not a link leapkit made; left as is (the new output is %s)", link, run_dir)
        return
    tmp = link.with_name(f".{LATEST}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name, target_is_directory=True)
    os.replace(tmp, link)


def is_run(path: Path) -> bool:
    """Whether ``path`` holds a leapkit run: a leapkit config.yaml beside metrics.jsonl or checkpoints/.

    A config.yaml alone also counts (a run that stopped before its first step).
    """
    config = path / CONFIG
    trained = (path / METRICS).is_file() or (path / CHECKPOINT).parent.is_dir()
    if not config.is_file() or not (trained or [p.name for p in path.iterdir()] == [CONFIG]):
        return False
    try:
        data = yaml.safe_load(config.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "recipe" in data and "curriculum" in data and set(data) <= {"recipe", *SECTIONS}


def check_writable(run_dir: Path, overwrite: bool) -> None:
    """Refuse to start a run in a folder that holds files, unless it is a run to overwrite.

    ``--overwrite`` never follows a symbolic link: a link (to a run or not) is refused with one
    line, and neither the link nor what it points to is deleted; pass the run folder itself.

    Raises:
        RunError: ``run_dir`` holds files and ``overwrite`` is off, it holds something other than a
            leapkit run (``--overwrite`` never deletes that), or it is a symbolic link to replace.
    """
    if run_dir.is_symlink() and not run_dir.exists():
        raise RunError(f"{run_dir} is a broken symbolic link (to {os.readlink(run_dir)}); pass a folder with --out DIR")
    if run_dir.is_symlink() and overwrite:
        raise RunError(
            f"{run_dir} is a symbolic link (to {os.readlink(run_dir)}), and --overwrite does not replace links or what "
            f"they point to; pass the run folder itself (--out {run_dir.resolve()}) or a new --out DIR"
        )
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return
    if not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file, not a folder; pass --out NEW_DIR")
    if not overwrite:
        raise RunError(
            f"{run_dir} already holds files; pass --resume to continue it, --overwrite to replace it, or --out NEW_DIR"
        )
    if not is_run(run_dir):
        raise RunError(
            f"{run_dir} is not a leapkit run (no leapkit {CONFIG} with {METRICS} or checkpoints/), so --overwrite "
            f"will not delete it; pass --out NEW_DIR or remove the folder yourself"
        )


def resolve_run(run: str | Path | None, need: tuple[str, ...] = (CONFIG,)) -> Path:
    """The run directory named by ``run`` (default ``runs/latest``), checked to hold ``need``."""
    path = Path(run) if run is not None else latest_link()
    if run is None and path.is_symlink() and not path.exists():
        raise RunError(f"{path} points to {os.readlink(path)}, which no longer exists; pass a run directory, or run "
                       "`leapkit distill` to make a new latest run")
    if run is None and not path.exists():
        raise RunError("no run found at runs/latest; run `leapkit distill` first or pass a run directory")
    if not path.is_dir():
        raise RunError(f"run directory not found: {path}; pass the folder that `leapkit distill` wrote")
    path = path.resolve()
    if not (path / CONFIG).is_file():
        raise RunError(f"{path} is not a leapkit run (no {CONFIG}); pass the folder that `leapkit distill` wrote")
    for name in need:
        if not (path / name).exists():
            if name == STUDENT:
                hint = "the run did not finish; resume it with `leapkit distill --resume --out RUN`"
            else:
                hint = "run the stage that writes it first"
            raise RunError(f"{path} has no {name}; {hint}")
    return path


def read_run_config(run_dir: Path) -> Config:
    return load_config(run_dir / CONFIG)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The payload of a run's checkpoints/last.pt (tensors and plain types only: ``weights_only``).

    Raises:
        RunError: the file is truncated, corrupt or not a leapkit checkpoint.
    """
    unreadable = RunError(
        f"{path} is not a readable checkpoint (truncated or corrupt): resume from an intact copy or start again "
        f"with --overwrite"
    )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # Whatever the damage, torch.load fails with some exception of its own: a cut zip as
        # RuntimeError or OSError(EINVAL) without the file name, random bytes as an unpickling error
        # that suggests weights_only=False, text as a KeyError. None says which file or what to do.
        raise unreadable from e
    if not isinstance(payload, dict) or not {"student", "head", "state", "curriculum"} <= set(payload):
        raise unreadable
    return payload


def student_readable(path: Path) -> bool:
    """Whether ``path`` is a complete safetensors file (its header parses and covers the whole file)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            return True
    except (SafetensorError, OSError, ValueError):
        return False


def load_student(
    run_dir: str | Path | None = None, device: str | torch.device = "cpu", img_size: int | None = None
) -> nn.Module:
    """The distilled student backbone of a run, in eval mode.

    Its ``forward_features`` output (B, prefix + N, D, final-normalised) is what the ONNX export
    reproduces.

    Args:
        run_dir: the run directory (default ``runs/latest``).
        device: where the model is put.
        img_size: the input size to create the student at (default: the training resolution); at
            another size the position embeddings are resampled.

    Raises:
        RunError: the run has no student, or its student.safetensors is truncated or corrupt.
    """
    from leapkit.models import create_student, load_weights

    run_dir = resolve_run(run_dir, need=(CONFIG, STUDENT))
    if not student_readable(run_dir / STUDENT):
        raise RunError(
            f"{run_dir / STUDENT} is not a readable student (truncated or corrupt): write it again from the "
            f"checkpoint with `leapkit distill --resume --out {run_dir}`, or train again with --overwrite"
        )
    cfg = read_run_config(run_dir)
    trained = cfg.model.img_size
    if img_size is not None and img_size != trained:
        log.info("creating the student at %d px (trained at %d): position embeddings are resampled in PyTorch",
                 img_size, trained)
    model = create_student(cfg.model.student, img_size or trained)
    load_weights(model, run_dir / STUDENT, role="student")
    return model.eval().to(device)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """One dict per optimizer step, in order.

    A last line cut short (no newline: a write the process did not finish, as a kill or power loss leaves) is
    dropped with a warning; a line that is not a JSON object anywhere else means the file was damaged.

    Raises:
        RunError: a line before the last is not a JSON object; the message names the file and the line.
    """
    path = run_dir / METRICS
    if not path.is_file():
        return []
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines) and not text.endswith("\n"):
                log.warning("%s: the last line was cut short (a write the process did not finish); ignored", path)
                break
            raise RunError(f"{path} line {number} is not a JSON record ({e.msg}): the file is damaged; restore it "
                           f"from a copy, or delete that line to read the rest") from e
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise RunError(f"{path} line {number} is not a training step (no integer 'step'): the file is damaged; "
                           f"restore it from a copy, or delete that line to read the rest")
        rows.append(row)
    return rows


@dataclass
class RunSummary(Record):
    """summary.json: what a distillation run did, and the evidence the distill stage adds.

    Training fills the counters; :func:`leapkit.evidence.add_evidence` adds the training FLOPs (from
    flops.json), the achieved rate, MFU on a known GPU and the closing evaluation. Keys whose value is unknown (no
    GPU for MFU, no labelled split for ``eval``) are left out of the file.
    """

    FILE: ClassVar[str] = SUMMARY

    run_dir: str
    mode: Mode
    world_size: int
    epochs: int
    steps: int
    train_seconds: float
    images_seen: int
    images_per_s: float
    images_skipped: int
    """Image reads skipped as unreadable, over all epochs (a corrupt file is skipped once per epoch)."""
    teacher_blocks: int
    blocks_visited: list[int]
    final_block: int
    teacher_block_images: int
    teacher_block_images_baseline: int
    teacher_blocks_saved_pct: float
    device: str | None = None
    global_batch: int | None = None
    """Images per optimizer step over all processes: batch_size x accum_steps x world size."""
    peak_lr: float | None = None
    """The learning rate after warm-up: optim.lr, scaled by global_batch / 256 when optim.scale_lr."""
    train_flops: int | None = None
    train_flops_baseline: int | None = None
    train_flops_saving_pct: float | None = None
    achieved_tflops_per_s: float | None = None
    mfu_pct: float | None = None
    eval: EvalReport | None = None
    wall_seconds: float | None = None
    data_wait_frac: float | None = None
    """The share of rank 0's training step time spent waiting for the data loader."""
    unreadable_files: int = 0
    """Distinct image files that could not be read, over all epochs and ranks (left out of the file when 0)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if v is not None and (k != "unreadable_files" or v)}


@dataclass
class RunWriter:
    """Writes a run directory. Under torchrun only rank 0 writes: other ranks hold an inactive writer.

    Args:
        path: the run directory.
        active: whether this process writes.
    """

    path: Path
    active: bool = True
    _metrics: IO[str] | None = field(default=None, init=False, repr=False)

    def start(self, cfg: Config, overwrite: bool) -> None:
        """Replace the old run (``overwrite``), write the resolved config.yaml, point latest here.

        Called only once everything has been validated (config, models, data, the checkpoint of a
        resumed run), so that a run that cannot start leaves no stub and changes no file. A resumed
        run rewrites config.yaml only when a resumable key (:data:`leapkit.config.RESUMABLE`, e.g. more
        epochs) changed, so that the config always describes the training its checkpoint continues;
        an unchanged config.yaml is left byte for byte.
        """
        if not self.active:
            return
        if overwrite and self.path.exists():
            check_writable(self.path, overwrite=True)
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        config, text = self.path / CONFIG, to_yaml(cfg).encode()
        if not config.is_file() or config.read_bytes() != text:
            atomic_write_bytes(config, text)
        point_latest(self.path)

    def resume(self, step: int) -> None:
        """Drop metric lines written after the checkpoint being resumed from (step ``step``)."""
        path = self.path / METRICS
        if self.active and path.is_file():
            keep = [row for row in read_metrics(self.path) if row["step"] <= step]
            atomic_write_bytes(path, "".join(json.dumps(row) + "\n" for row in keep).encode())

    def log_step(self, row: dict[str, Any]) -> None:
        """Append one optimizer step to metrics.jsonl (flushed, so that a crash keeps it)."""
        if not self.active:
            return
        if self._metrics is None:
            self._metrics = (self.path / METRICS).open("a")
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    def save_checkpoint(self, payload: dict[str, Any]) -> None:
        """Everything --resume needs, written atomically (temporary file, fsync, rename)."""
        if not self.active:
            return
        buf = io.BytesIO()
        torch.save(payload, buf)
        path = self.path / CHECKPOINT
        had_one = path.is_file()
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as e:
            then = (f"the previous checkpoint is intact: free space or fix permissions, then `leapkit distill --resume "
                    f"--out {self.path}`" if had_one else
                    "no checkpoint was written yet: free space or fix permissions, then run again with --overwrite")
            raise RunError(f"cannot write the checkpoint {path} ({e.strerror or e}); {then}") from e

    def save_curriculum(self, curriculum: dict[str, Any]) -> None:
        if self.active:
            write_json(self.path / CURRICULUM, curriculum)

    def save_student(self, student: nn.Module) -> None:
        """The student backbone as safetensors, loadable into the timm model of the same name."""
        from safetensors.torch import save

        if self.active:
            tensors = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
            atomic_write_bytes(self.path / STUDENT, save(tensors, metadata={"leapkit_version": __version__}))

    def save_summary(self, summary: RunSummary) -> None:
        if self.active:
            summary.save(folder=self.path)
