"""The PyTorch runner: the student's exported backbone, eager or torch.compile, on the CPU or a CUDA device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from leapkit.models import Backbone
from leapkit.runtimes.base import OUTPUT_NAMES, Outputs
from leapkit.types import Runtime


class TorchRunner:
    """PyTorch eager (or torch.compile) under inference_mode, on the CPU or a CUDA device."""

    runtime: Runtime = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu", compile: bool = False) -> None:
        self.device = device
        self.providers = [f"torch {torch.__version__} ({device})"]
        on_gpu = device.startswith("cuda")
        self.timing = "device-resident I/O: input on the GPU, outputs left there, a synchronize per run" if on_gpu \
            else None
        self.module = Backbone(model).eval().to(device)
        self.forward: Callable[[Any], Any] = torch.compile(self.module) if compile else self.module

    def __call__(self, x: np.ndarray) -> Outputs:
        with torch.inference_mode():
            outs = self.forward(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return {name: o.float().cpu().numpy() for name, o in zip(OUTPUT_NAMES, outs, strict=True)}

    def timed(self, x: np.ndarray) -> Callable[[], None]:
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

        def run() -> None:
            with torch.inference_mode():
                self.forward(xt)
            if self.device.startswith("cuda"):
                torch.cuda.synchronize(self.device)

        return run

    def close(self) -> None:
        pass
