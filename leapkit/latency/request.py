"""What `leapkit bench` is asked to do: every option of a benchmark in one typed request, with its defaults.

    BenchRequest(runtimes=["onnxruntime"], budget_ms=5.0, ...)   built by the CLI, or from keywords by
                                                                  :func:`leapkit.latency.bench.bench`
    request.problems(model, target) -> list[str]                   every bad value and bad combination at once

The request is the options as given (None: the target's or MODEL's own); what they resolve to against
the target is :class:`leapkit.latency.bench.BenchPlan`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from leapkit.errors import ConfigError
from leapkit.paths import NotWritable, require_writable, require_writable_file
from leapkit.types import ORT_PROVIDERS, PRECISIONS, RUNTIMES, STATS, OrtProvider, Stat

# the options that time MODEL on this machine: they have no meaning for --from-trtexec or --host
_LOCAL = {"runtimes": "--runtime", "batch": "--batch", "threads": "--threads", "iterations": "--iterations",
          "compile": "--compile", "device": "--device", "ort_provider": "--ort-provider"}


@dataclass(frozen=True)
class BenchRequest:
    """The options of one benchmark, as given.

    Args:
        runtimes: any of torch, onnxruntime, openvino, tensorrt, or ``["all"]``; None benches what MODEL has.
        budget_ms: overrides the profile's latency budget.
        budget_mj: overrides the profile's energy budget per inference (mJ), judged on the device's tegrastats
            samples.
        stat: the statistic judged against the budget (default: the profile's, p99).
        precisions: only bench formats at these precisions.
        batch: batch size (default: the profile's); with ``from_trtexec``, the images per query of runs whose
            files do not state it.
        threads: CPU threads for torch and ONNX Runtime (default: the profile's, else all cores);
            ``"auto"`` probes 1, 2, 4, ... up to the usable cores for PROBE_S seconds each, per
            format, and measures each format with its fastest count (recorded per result).
        warmup_s: warm-up time per format.
        iterations: timed iterations; when None, run for ``duration_s``.
        duration_s: timed duration per format when ``iterations`` is None.
        compile: run the PyTorch student through torch.compile.
        ort_provider: ONNX Runtime execution provider; auto picks CUDA for GPU targets when present.
        device: device for the PyTorch student (default: cuda when the target is a GPU and one is
            present, else cpu).
        out_dir: where bench/ goes (default: the run, else next to the model; with
            ``from_trtexec``, the run whose export holds the first file, else beside it).
        check: raise CheckFailed after writing the report when the verdict is FAIL.
        require_measured: with ``check``, an UNCONFIRMED verdict (no figures from the target)
            raises CheckFailed too.
        from_trtexec: trtexec logs, --exportTimes/--exportProfile JSON, device.json or folders of
            them, from the target; replaces MODEL.
        host: ``[user@]host[:port]`` of the device: build, check and time MODEL's bundle there.
        ssh_options: extra ssh/scp arguments for ``host`` (``-i KEY``, ``-o Name=value``).
        baseline: an earlier bench/<target>.json of the same target: each result's judged statistic is
            compared with the same result there (:mod:`leapkit.latency.regression`), recorded under
            ``baseline``, and a slowdown beyond ``max_regression_pct`` and the noise fails the check.
        max_regression_pct: the slowdown allowed against ``baseline``, in percent (default 10).
        junit: write the report as JUnit XML to this file too (:mod:`leapkit.latency.junit`).
        allow_other_device: with ``from_trtexec``, judge figures that name another device than the target's
            (otherwise the verdict is UNCONFIRMED).
    """

    runtimes: Sequence[str] | None = None
    budget_ms: float | None = None
    budget_mj: float | None = None
    stat: Stat | None = None
    precisions: Sequence[str] | None = None
    batch: int | None = None
    threads: int | str | None = None
    warmup_s: float = 0.5
    iterations: int | None = None
    duration_s: float = 3.0
    compile: bool = False
    ort_provider: OrtProvider = "auto"
    device: str | None = None
    out_dir: str | Path | None = None
    check: bool = True
    require_measured: bool = False
    from_trtexec: Sequence[str | Path] | None = None
    host: str | None = None
    ssh_options: Sequence[str] = ()
    baseline: str | Path | None = None
    max_regression_pct: float | None = None
    junit: str | Path | None = None
    allow_other_device: bool = False

    @property
    def out(self) -> Path | None:
        return Path(self.out_dir) if self.out_dir is not None else None

    def problems(self, model: str | Path | None, target: object) -> list[str]:
        """Every bad value and bad combination of options, each in one line, before anything is read or run.

        The thread count and the timing numbers are :func:`leapkit.latency.timing.parse_threads`' and
        :meth:`leapkit.latency.timing.Method.problems`'; the baseline file itself is read by the bench.
        """
        from leapkit.latency.timing import Method, parse_threads  # numpy: not for the CLI's import of the defaults

        wanted = list(self.runtimes or [])
        problems = [f"unknown runtime '{r}'; use {', '.join(RUNTIMES)} or all"
                    for r in dict.fromkeys(wanted) if r not in (*RUNTIMES, "all")]
        if "all" in wanted and len(set(wanted)) > 1:
            problems.append("--runtime all cannot be combined with other --runtime values")
        if self.ort_provider not in ORT_PROVIDERS:
            problems.append(f"unknown --ort-provider '{self.ort_provider}'; use {', '.join(ORT_PROVIDERS)}")
        if self.stat is not None and self.stat not in STATS:
            problems.append(f"unknown statistic '{self.stat}'; use one of {', '.join(STATS)}")
        threads = None
        try:
            threads = parse_threads(self.threads)
        except ConfigError as e:
            problems.append(str(e))
        # Explicit values are checked as given: a 0 is an error, not "the target's default".
        given = Method(batch=1 if self.batch is None else self.batch,
                       threads=threads if isinstance(threads, int) else 1, warmup_s=self.warmup_s,
                       iterations=self.iterations, duration_s=self.duration_s)
        budget = self.budget_ms
        energy = self.budget_mj
        if energy is not None and not (isinstance(energy, (int, float)) and math.isfinite(energy) and energy > 0):
            problems.append(f"the energy budget must be a positive number of mJ per inference, got {energy!r} "
                            f"(--budget-mj)")
        if budget is not None and not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
            problems.append(f"the budget must be a positive number of ms, got {budget!r} (--budget-ms)")
        problems += given.problems()
        problems += self._source_problems(model, target)
        return problems + self._ci_problems() + self._output_problems()

    def _source_problems(self, model: str | Path | None, target: object) -> list[str]:
        """What cannot go with --from-trtexec or --host: timing options, a MODEL, a missing --target."""
        problems = []
        if self.from_trtexec or self.host:
            flag = "--from-trtexec" if self.from_trtexec else "--host"
            unset = {"compile": False, "ort_provider": "auto"}  # the defaults of options that are never None
            used = [name for key, name in _LOCAL.items() if getattr(self, key) is not None
                    and not (key in unset and getattr(self, key) == unset[key])
                    and not (key == "batch" and self.from_trtexec)]  # the batch of files that do not state it
            if used:
                problems.append(f"{', '.join(used)} time MODEL on this machine and do not apply to {flag}")
        if self.from_trtexec:
            if model is not None:
                problems.append("pass either MODEL (timed here) or --from-trtexec FILE (the device's trtexec output), "
                                "not both")
            if self.host:
                problems.append("--from-trtexec reads results already made; --host makes them on the device: pass one")
            if self.precisions:
                problems.append("--precision does not apply to --from-trtexec (trtexec's command line gives the "
                                "precision)")
            if target is None:
                problems.append("--from-trtexec needs --target T: the device the trtexec output comes from")
        elif self.allow_other_device:
            problems.append("--allow-other-device applies to --from-trtexec (another device's trtexec output)")
        if self.host:
            problems += [f"unknown --precision '{p}'; use {', '.join(PRECISIONS)}"
                         for p in self.precisions or () if p not in PRECISIONS]
        return problems

    def _ci_problems(self) -> list[str]:
        """What is wrong with --baseline, --max-regression and --junit, before the baseline is read."""
        problems = []
        pct = self.max_regression_pct
        if pct is not None:
            if self.baseline is None:
                problems.append("--max-regression applies to a comparison: pass --baseline PREV.json too")
            elif not (math.isfinite(pct) and pct >= 0):
                problems.append(f"--max-regression must be a finite percentage >= 0, got {pct}")
        if self.junit is not None and Path(self.junit).is_dir():
            problems.append(f"--junit {self.junit} is a folder; pass a file name such as reports/latency.xml")
        return problems

    def _output_problems(self) -> list[str]:
        """--out and --junit where they cannot be written: known before the timing, not after it."""
        try:
            if self.out_dir is not None:
                require_writable(Path(self.out_dir) / "bench", "the bench report",
                                 "pass --out a folder you can write to")
            if self.junit is not None and not Path(self.junit).is_dir():  # a folder is _ci_problems' to report
                require_writable_file(self.junit, "--junit", "pass --junit a file in a folder you can write to")
        except NotWritable as e:
            return [str(e)]
        return []
