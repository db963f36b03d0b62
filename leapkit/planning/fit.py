"""The latency-model fit (`leapkit calibrate`): time the microbenchmarks on the target and fit its efficiencies.

A CPU target is fitted on this machine, which must be the target (its ``device_match``), with
the profile's thread count, in ONNX Runtime or in another runtime the target deploys with (OpenVINO:
the IRs the export writes, bf16 the fp32 IR with the bf16 hint where the CPU has bf16 arithmetic).
A TensorRT target is fitted on the device: on this machine when it is the device, else over SSH
with ``host`` (:mod:`leapkit.planning.device_timing`). The result is a
:class:`~leapkit.planning.fit_file.LatencyFit` written to the user's configuration folder (or
``out``), one file per runtime, which every later prediction for the target and runtime reads.
"""

from __future__ import annotations

import logging
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from leapkit.device.probe import device_environment
from leapkit.errors import ConfigError
from leapkit.paths import require_writable_file
from leapkit.planning import device_timing
from leapkit.planning.candidates import check_precisions
from leapkit.planning.fit_file import LatencyFit, Sample, default_path, fit, now
from leapkit.planning.latency_model import check_runtime
from leapkit.planning.microbench import GRID, Micro, export_graphs, time_graph
from leapkit.profiles import TargetProfile
from leapkit.types import Precision, TargetRuntime

if TYPE_CHECKING:
    from leapkit.deploy.progress import Steps

log = logging.getLogger(__name__)


@dataclass
class FitRequest:
    """What ``leapkit calibrate`` does.

    Args:
        profile: the target.
        precisions: the precisions to fit (default: the profile's that the runtime's model covers).
        grid: the microbenchmarks.
        out: the fit's file (default: :func:`~leapkit.planning.fit_file.default_path`).
        host: ``[user@]host[:port]`` of the device for a TensorRT target; None: this machine.
        ssh_options: extra ssh/scp options for ``host``.
        threads: CPU runtime threads (default: the profile's).
        warmup_s: warm-up per microbenchmark and round (CPU).
        duration_s: timed duration per microbenchmark and round (CPU).
        rounds: interleaved rounds (CPU): each times every microbenchmark once, in a shuffled
            order, and a microbenchmark's latency is its fastest round's median. Another tenant of a
            shared host only ever adds time, so the fastest round is the machine's own speed; benchmarks/
            latency_model.py checks predictions made this way against models timed the same way.
        progress: show a progress bar.
        runtime: one of the target's runtimes (default: the profile's ``runtime``).
    """

    profile: TargetProfile
    precisions: tuple[Precision, ...] = ()
    grid: tuple[Micro, ...] = GRID
    out: Path | None = None
    host: str | None = None
    ssh_options: tuple[str, ...] = ()
    threads: int | None = None
    warmup_s: float = 0.2
    duration_s: float = 1.0
    rounds: int = 9
    progress: bool = True
    runtime: TargetRuntime | None = None

    @property
    def chosen_runtime(self) -> TargetRuntime:
        return check_runtime(self.profile, self.runtime)

    def chosen_precisions(self) -> tuple[Precision, ...]:
        """The precisions to fit; bf16 (OpenVINO only) only on a CPU with bf16 arithmetic, where it is a variant.

        Raises:
            ConfigError: a precision the target does not run or the runtime's model does not cover, or
                bf16 named on a CPU without bf16 arithmetic.
        """
        from leapkit.host import cpu_bf16

        chosen = check_precisions(self.profile, self.precisions, self.chosen_runtime)
        if "bf16" not in chosen or cpu_bf16():
            return chosen
        rest = tuple(p for p in chosen if p != "bf16")
        if "bf16" in self.precisions:
            raise ConfigError(f"this CPU has no bf16 arithmetic (AVX512-BF16 or AMX), so OpenVINO would run bf16 in "
                              f"fp32; calibrate bf16 on a CPU of {self.profile.name} that has it, or pass -p "
                              f"{','.join(rest) or 'fp32'}")
        log.info("bf16 left out: this CPU has no bf16 arithmetic (AVX512-BF16 or AMX), where OpenVINO runs it in fp32")
        return rest


def _check_here(profile: TargetProfile) -> dict:
    """This machine's fingerprint; raises ConfigError unless it is the target."""
    from leapkit.latency.machine import environment, target_match

    env = environment()
    match = target_match(profile, env)
    if not match.is_target:
        how = ("--host [user@]device to time them on the device over SSH" if profile.runtime == "tensorrt"
               else "a machine that is the target")
        raise ConfigError(f"this machine is not {profile.name} ({match.reason}); calibrate on {how}: a latency "
                          f"model is fitted to the target's own timings only")
    return env


def fit_latency_model(plan: FitRequest) -> tuple[LatencyFit, Path]:
    """Time the grid on the target, fit each precision, write the fit; returns it and its path.

    Raises:
        ConfigError: a runtime the target does not deploy with, this machine is not the target (without
            ``host``), ``host`` with a CPU runtime, a precision the target does not run, or too few
            microbenchmarks.
        MissingDependency: OpenVINO without openvino.
        HostError: the device cannot be reached or a graph fails there.
    """
    from leapkit.deploy.progress import Steps
    from leapkit.latency.timing import check_threads

    profile = plan.profile
    if plan.threads is not None:
        check_threads(plan.threads)
    runtime = plan.chosen_runtime
    precisions = plan.chosen_precisions()
    if plan.host is not None and runtime != "tensorrt":
        raise ConfigError(f"--host times TensorRT engines on a device, but {profile.name} runs {runtime}; "
                          f"calibrate a CPU target on the machine itself, without --host")
    if runtime == "openvino":
        from leapkit.runtimes.openvino_runner import import_openvino

        import_openvino(f"fitting the OpenVINO latency model of {profile.name}")
    out = plan.out or default_path(profile.name, None if runtime == profile.runtime else runtime)
    require_writable_file(out, "the latency-model fit", "pass --out a file you can write to")
    if plan.host is not None:  # an unreachable device is known in seconds, not after exporting every graph
        device_timing.reach(plan.host, plan.ssh_options)
    env = None if plan.host is not None else _check_here(profile)
    threads = plan.threads or profile.threads
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="leapkit-microbench-") as tmp, \
            Steps(len(plan.grid) * (1 + plan.rounds * len(precisions)), plan.progress) as steps:
        folder = Path(tmp)
        graphs: list[tuple[Micro, Precision, Path]] = []
        for micro in plan.grid:
            steps.step(f"export {micro.name}")
            for precision, path in export_graphs(micro, precisions, folder, runtime).items():
                graphs.append((micro, precision, path))
            steps.done()
        if runtime != "tensorrt":
            fastest = _time_in_rounds(graphs, plan, runtime, threads, steps)
            samples = [Sample(micro.name, _fields(micro), precision, fastest[micro.name, precision])
                       for micro, precision, _ in graphs]
            method = (f"{_cpu_runtime(runtime, precisions)}, {threads} threads, batch 1; each graph's fastest of "
                      f"{plan.rounds} interleaved rounds of the median of {plan.duration_s:g} s after "
                      f"{plan.warmup_s:g} s warm-up")
        else:
            todo = [device_timing.Graph(p.name, precision, micro.img_size) for micro, precision, p in graphs]
            (folder / device_timing.SCRIPT).write_text(device_timing.script(todo, profile.tensorrt,
                                                                            profile.workspace_mb))
            steps.step(f"time {len(todo)} engines with trtexec")
            if plan.host is None:
                times, found = device_timing.run_here(folder, todo)
            else:
                times, found = device_timing.run_on_host(folder, todo, plan.host, plan.ssh_options, profile.name)
                env = device_environment(found)
                _check_version(env.get("tensorrt"), profile, plan.host)
            samples = [Sample(micro.name, _fields(micro), precision, times[p.name]) for micro, precision, p in graphs]
            method = (f"trtexec on the device: median GPU compute time of {device_timing.DURATION_S} s after "
                      f"{device_timing.WARMUP_MS} ms warm-up per engine, batch 1, CUDA graph, no copies")
            threads = None
    efficiencies, ranges = {}, {}
    for precision in precisions:
        mine = [s for s in samples if s.precision == precision]
        efficiencies[precision], ranges[precision] = fit(mine, precision)
    fitted = LatencyFit(
        target=profile.name, created=now(), environment=env or {}, runtime=runtime, threads=threads,
        efficiencies=efficiencies, ranges=ranges, samples=samples, method=method,
    )
    path = fitted.save(out)
    return fitted, path


def _cpu_runtime(runtime: TargetRuntime, precisions: tuple[Precision, ...]) -> str:
    """The CPU runtime as the fit's method names it (OpenVINO: its release and hint per precision)."""
    if runtime != "openvino":
        return "ONNX Runtime CPU"
    from leapkit.deploy.openvino_ir import OPENVINO_HINTS
    from leapkit.runtimes.openvino_runner import openvino_version

    hints = ", ".join(f"{p} {OPENVINO_HINTS[p]}" for p in precisions)
    return f"OpenVINO {openvino_version()} CPU (inference precision hint: {hints})"


def _time_in_rounds(
    graphs: list[tuple[Micro, Precision, Path]], plan: FitRequest, runtime: TargetRuntime, threads: int | None,
    steps: Steps,
) -> dict[tuple[str, Precision], float]:
    """Each graph's fastest median over ``plan.rounds`` rounds, every round in its own shuffled order.

    Keyed by microbenchmark and precision: OpenVINO's bf16 and fp32 time the same file.
    """
    best: dict[tuple[str, Precision], float] = {}
    order = list(graphs)
    for r in range(plan.rounds):
        random.Random(r).shuffle(order)
        for micro, precision, path in order:
            steps.step(f"time {micro.name} {precision} (round {r + 1} of {plan.rounds})")
            ms = time_graph(path, micro.img_size, threads, plan.warmup_s, plan.duration_s, runtime, precision)
            key = (micro.name, precision)
            best[key] = min(ms, best.get(key, ms))
            steps.done()
    return best


def _fields(micro: Micro) -> dict:
    from dataclasses import asdict

    return {k: v for k, v in asdict(micro.shape).items() if v is not None}


def _check_version(found: str | None, profile: TargetProfile, host: str) -> None:
    from leapkit.device.probe import check_versions
    from leapkit.device.ssh import Host

    for warning in check_versions(found, profile, Host.parse(host)):
        log.warning(warning)
