"""The closing evidence of a distillation run: training FLOPs, achieved rate, MFU and the closing evaluation.

:func:`leapkit.train.distill` adds it to summary.json once training has finished, so that the
library call and ``leapkit distill`` write the same summary.
"""

from __future__ import annotations

import logging

import torch

from leapkit.config import Config
from leapkit.errors import DataError
from leapkit.eval.features import labelled_splits
from leapkit.eval.record import EvalReport
from leapkit.eval.stage import evaluate_model
from leapkit.flops import run_flops
from leapkit.host import gpu_peak_tflops
from leapkit.run import RunSummary, load_student

log = logging.getLogger(__name__)


def add_evidence(summary: RunSummary, cfg: Config) -> RunSummary:
    """The run's training FLOPs (writes flops.json), achieved rate, MFU and closing evaluation.

    Args:
        summary: what training returned; updated in place and returned.
        cfg: the run's config (``train.eval_at_end`` turns the evaluation on).
    """
    f = run_flops(summary.run_dir, export_batch=1, write=True)
    summary.train_flops = f.train_flops_run
    summary.train_flops_baseline = f.train_flops_baseline
    summary.train_flops_saving_pct = f.train_flops_saving_pct
    summary.achieved_tflops_per_s = round(f.train_flops_run / max(summary.train_seconds, 1e-9) / 1e12, 4)
    device = torch.device(summary.device or "cpu")
    peak = gpu_peak_tflops(device)
    if peak:
        summary.mfu_pct = round(100 * summary.achieved_tflops_per_s / (peak * summary.world_size), 2)
    if cfg.train.eval_at_end:
        try:
            train_set, val_set = labelled_splits(cfg)
        except DataError as e:
            log.info("no labelled split for the closing evaluation (%s)", e)
        else:
            student = load_student(summary.run_dir, device=device)
            summary.eval = EvalReport.from_dict(evaluate_model(student, train_set, val_set, device=device))
    return summary
