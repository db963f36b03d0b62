"""Timing the microbenchmarks with trtexec on a TensorRT target, on this machine or over SSH.

The microbenchmark graphs are exported here and copied with one POSIX sh script, ``fit.sh``,
that probes the device (:data:`leapkit.device.probe.PROBE`), then builds and times each graph with the
trtexec flags of the deploy bundle (:func:`leapkit.trtexec.flags.precision_flags` and
:func:`~leapkit.trtexec.flags.steady_timing_flags` for the profile's TensorRT version) and leaves one log
per graph in ``logs/``. The logs are read back with :func:`leapkit.trtexec.log.read_log`; a graph's time is
trtexec's median GPU compute time. Over SSH the folder is ``${XDG_CACHE_HOME:-~/.cache}/leapkit/latency-fit/<target>``
on the device, and the link is :class:`leapkit.device.ssh.Connection` (the user's ssh config and keys, never a
prompt).
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from leapkit.device.probe import PROBE, facts
from leapkit.device.ssh import Connection, HostError, last_line
from leapkit.errors import LeapkitError
from leapkit.runtimes.base import INPUT_NAME
from leapkit.trtexec.flags import DEFAULT_TENSORRT, precision_flags, steady_timing_flags
from leapkit.trtexec.log import read_log
from leapkit.types import Precision

log = logging.getLogger(__name__)

SCRIPT = "fit.sh"
LOGS = "logs"
WARMUP_MS = 200
DURATION_S = 2

_HEAD = r"""#!/bin/sh
# leapkit calibrate: build and time each microbenchmark graph with trtexec; one log per graph in logs/.
cd "$(dirname "$0")" || exit 3
""" + PROBE + r"""
[ -n "$TRTEXEC" ] || { echo "no trtexec on this device (not on PATH, not in /usr/src/tensorrt/bin)" >&2; exit 4; }
mkdir -p logs
status=0
"""


@dataclass(frozen=True)
class Graph:
    """One graph to time: its file, precision and input size."""

    file: str
    precision: Precision
    img_size: int

    @property
    def log(self) -> str:
        return f"{LOGS}/{Path(self.file).stem}.log"


def trtexec_args(graph: Graph, version: str, workspace_mb: int | None) -> list[str]:
    """trtexec's arguments for building and timing one graph at batch 1."""
    args = [
        f"--onnx={graph.file}", f"--shapes={INPUT_NAME}:1x3x{graph.img_size}x{graph.img_size}",
        *precision_flags(version, graph.precision), *steady_timing_flags(version),
        f"--warmUp={WARMUP_MS}", f"--duration={DURATION_S}", "--percentile=90,95,99",
    ]
    if workspace_mb is not None:
        args.append(f"--memPoolSize=workspace:{int(workspace_mb)}")
    return args


def script(graphs: Sequence[Graph], version: str | None, workspace_mb: int | None) -> str:
    """``fit.sh``: every graph built and timed in turn; exits non-zero when one failed (the rest still run)."""
    lines = [_HEAD]
    for g in graphs:
        args = " ".join(shlex.quote(a) for a in trtexec_args(g, version or DEFAULT_TENSORRT, workspace_mb))
        lines.append(f'"$TRTEXEC" {args} > {shlex.quote(g.log)} 2>&1 || {{ echo "failed: {g.file}" >&2; status=1; }}')
    lines.append("exit $status\n")
    return "\n".join(lines)


def read_times(folder: Path, graphs: Sequence[Graph]) -> dict[str, float]:
    """Median GPU compute time in ms per graph file, from the logs in ``folder/logs``.

    Raises:
        LeapkitError: a log is missing or holds no timing summary.
    """
    times = {}
    for g in graphs:
        path = folder / g.log
        if not path.is_file():
            raise LeapkitError(f"no trtexec log for {g.file} ({path}); see the script's output above")
        runs, _, _ = read_log(path.read_text(errors="replace"), str(path))
        stats = runs[-1].gpu_compute_ms if runs else {}
        ms = stats.get("p50") or stats.get("mean")
        if not ms:
            raise LeapkitError(f"trtexec printed no GPU compute time for {g.file}; its log is {path}")
        times[g.file] = float(ms)
    return times


def run_here(folder: Path, graphs: Sequence[Graph]) -> tuple[dict[str, float], dict[str, str]]:
    """Run ``fit.sh`` in ``folder`` on this machine: the times per graph and the device facts."""
    proc = subprocess.run(["sh", str(folder / SCRIPT)], capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        raise LeapkitError(f"{SCRIPT} failed (exit {proc.returncode}: {last_line(proc.stderr)}); the logs are in "
                           f"{folder / LOGS}")
    return read_times(folder, graphs), facts(proc.stdout)


def reach(host: str, ssh_options: Sequence[str]) -> None:
    """Check that ``host`` answers over SSH, before the microbenchmarks are exported for it (minutes).

    Raises:
        ConfigError: bad ``--host`` or ssh options.
        HostError: the device is unreachable, refuses the key or has an unknown host key.
    """
    Connection.to(host, ssh_options).reach()


def run_on_host(folder: Path, graphs: Sequence[Graph], host: str, ssh_options: Sequence[str],
                target: str) -> tuple[dict[str, float], dict[str, str]]:
    """Copy ``folder`` to ``host``, run ``fit.sh`` there, copy the logs back: times per graph and device facts.

    Raises:
        ConfigError: bad ``--host`` or ssh options.
        HostError: the device is unreachable, refuses the key, lacks trtexec, or a graph fails there.
    """
    conn = Connection.to(host, ssh_options)
    where = f"${{XDG_CACHE_HOME:-$HOME/.cache}}/leapkit/latency-fit/{target}"
    made = conn.run(f'mkdir -p "{where}" && cd "{where}" && rm -rf {LOGS} && pwd')
    remote_dir = made.stdout.strip().splitlines()[-1] if made.returncode == 0 and made.stdout.strip() else ""
    if not remote_dir:
        raise HostError(f"could not make {where} on {conn.host}; check that the home directory there is writable")
    files = [str(p) for p in sorted(folder.iterdir()) if p.is_file()]
    log.info("copying %d microbenchmark files to %s:%s", len(files), conn.host, remote_dir)
    conn.copy(files, conn.host.remote(remote_dir + "/"), f"the microbenchmarks to {conn.host}")
    log.info("building and timing %d engines on %s (minutes: each engine is built first)", len(graphs), conn.host)
    proc = conn.run('exec sh "$1/fit.sh"', remote_dir)
    with tempfile.TemporaryDirectory(prefix="leapkit-fit-") as tmp:
        conn.copy([conn.host.remote(f"{remote_dir}/{LOGS}")], tmp, f"the logs back from {conn.host}")
        if proc.returncode != 0:
            raise HostError(f"{SCRIPT} failed on {conn.host} (exit {proc.returncode}: {last_line(proc.stderr)}); its "
                            f"logs are in {remote_dir}/{LOGS} on the device")
        return read_times(Path(tmp), graphs), facts(proc.stdout)
