"""The bench's round trip over SSH: a deploy bundle copied, built, checked and timed on the device, results back.

    leapkit bench RUN --target T --host [user@]host[:port]  # bench_on_host

:func:`bench_on_host` drives the system ``ssh`` and ``scp`` (the user's ssh config, keys and agent; never a
password prompt) through five steps:

1. probe: make the bundle's folder on the device, ``${XDG_CACHE_HOME:-~/.cache}/leapkit/bundles/<run>-<target>``,
   and report the device's trtexec, TensorRT version, L4T release, module and tegrastats;
2. check the TensorRT version against the profile (another major version is refused, another minor one is a
   warning);
3. copy the bundle there: the manifest's files, with only the ONNX variant of the chosen precision and no engine
   built on the workstation;
4. run ``./build_engine.sh P``, ``./check_engine.sh P`` and ``./bench_engine.sh P`` in that folder; on a Jetson
   the benchmark samples power with the tegrastats the probe found (an idle baseline, then the timing run, marked
   in ``tegrastats_marks.txt``); an engine that fails the parity check is not timed (CheckFailed, exit 1), since
   its latency would be no evidence;
5. copy ``results/P/`` back into the local output folder, also when a step failed.

The folder persists on the device, so its ``timing.cache`` serves every later build of any export of that run and
target. The engine is rebuilt on every call all the same: what it is built from (the ONNX file, the trtexec flags,
TensorRT itself) can change between calls in ways a file's timestamp does not show, and with the timing cache a
rebuild costs the graph optimisation, not the kernel timing.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leapkit.deploy.bundle import CHECK, DEVICE, PROFILE, RESULTS, TIMES, TRTEXEC_LOG
from leapkit.deploy.manifest import ExportManifest
from leapkit.device.probe import FALLBACK_TRTEXEC, PROBE, check_versions, device_fingerprint, facts, installed_tensorrt
from leapkit.device.ssh import Connection, HostError, last_line
from leapkit.device.tegrastats import LOG as POWER_LOG
from leapkit.device.tegrastats import MARKS as POWER_MARKS
from leapkit.device.tegrastats import PowerSummary, read_power
from leapkit.errors import CheckFailed, ConfigError
from leapkit.profiles import TargetProfile
from leapkit.records import Record, read_json
from leapkit.types import Precision

log = logging.getLogger(__name__)

SCRIPTS = ("build_engine.sh", "check_engine.sh", "bench_engine.sh")
ENGINE_FILES = (".engine", ".plan", ".trt")  # engines (and their .json sidecars) never go to the device
TEGRASTATS_INTERVAL_MS = 100

# POSIX sh, run on the device with the bundle's folder name as $1: the folder made, then the probe's findings.
_PROBE = r"""
dir="${XDG_CACHE_HOME:-$HOME/.cache}/leapkit/bundles/$1"
mkdir -p "$dir" && cd "$dir" || exit 3
echo "leapkit:dir=$(pwd)"
""" + PROBE + r"""
[ -f timing.cache ] && echo "leapkit:timing_cache=yes"
exit 0
"""
# $1 the bundle's folder, $2 trtexec, $3 the precision; for the benchmark $4 tegrastats (empty: none) and $5 its
# sampling interval in ms. The engine and its results are made afresh; bench_engine.sh samples power with tegrastats
# (an idle baseline, then the timing run, marked: leapkit.device.tegrastats).
_BUILD = 'cd "$1" && export TRTEXEC="$2" && rm -rf "results/$3" && exec ./build_engine.sh "$3"'
_CHECK = 'cd "$1" && export TRTEXEC="$2" && exec ./check_engine.sh "$3"'
_BENCH = ('cd "$1" && export TRTEXEC="$2" TEGRASTATS="$4" LEAPKIT_TEGRASTATS_INTERVAL_MS="$5" && '
          'exec ./bench_engine.sh "$3"')


_STEPS = (("build_engine", _BUILD), ("check_engine", _CHECK), ("bench_engine", _BENCH))
# What the device's results/PRECISION/ may hold.
RESULT_FILES = (TRTEXEC_LOG, TIMES, PROFILE, DEVICE, CHECK, POWER_LOG, POWER_MARKS)


@dataclass
class HostRun(Record):
    """What one run on the device brought back.

    ``files`` are trtexec's results (its log, ``--exportTimes`` and ``--exportProfile`` JSON) and device.json, for
    :func:`leapkit.trtexec.read.read_trtexec`; ``check`` is check_engine.sh's check.json; ``logs`` are the
    scripts' own output and the tegrastats samples, kept beside them. ``timing_cache_reused`` says whether the
    device had a timing cache before the build; ``device`` is what the probe found, merged with the bundle's
    device.json; ``power`` is the timing run's power from the tegrastats samples (None where tegrastats did not
    run).
    """

    host: str
    files: list[Path]
    timing_cache_reused: bool
    device: dict[str, Any]
    check: Path | None = None
    warnings: list[str] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    remote_dir: str = ""
    power: PowerSummary | None = None


@dataclass(frozen=True)
class Bundle:
    """An export folder as the device gets it: the files to send and the folder name they go to."""

    folder: Path
    manifest: ExportManifest
    precision: Precision
    files: tuple[Path, ...]
    name: str

    @classmethod
    def read(cls, folder: Path, profile: TargetProfile, precision: Precision) -> Bundle:
        """Check that ``folder`` is a TensorRT deploy bundle for ``profile`` holding ``precision``.

        Raises:
            ConfigError: not a TensorRT target, not a bundle, another target's bundle, or no such precision.
        """
        if profile.runtime != "tensorrt":
            raise ConfigError(f"--host builds TensorRT engines on the device, but target {profile.name} runs "
                              f"{profile.runtime}; pick a TensorRT target such as jetson-orin-nano")
        manifest = ExportManifest.load(folder)
        missing = [s for s in SCRIPTS if not (folder / s).is_file()]
        if missing:
            raise ConfigError(f"{folder} is not a deploy bundle (no {', '.join(missing)}); export it with "
                              f"leapkit export RUN --target {profile.name}")
        if manifest.target.name != profile.name:
            raise ConfigError(f"{folder} was exported for {manifest.target.name}, not {profile.name}; pass "
                              f"--target {manifest.target.name} or export for {profile.name}")
        onnx = {v.precision: v.file for v in manifest.variants if v.format == "onnx"}
        if precision not in onnx:
            raise ConfigError(f"{folder} holds no {precision} model (it has {', '.join(onnx) or 'none'}); pass "
                              f"--precision {' or '.join(onnx)} or export with -p {precision}")
        other = {f for p, f in onnx.items() if p != precision}
        # Engines built on the workstation stay there: the device builds its own (TensorRT engines do not move).
        other |= {n for n in manifest.files if n.endswith(ENGINE_FILES) or n.removesuffix(".json").endswith(
            ENGINE_FILES)}
        names = ["manifest.json", *(n for n in manifest.files if n not in other)]
        outside = [n for n in names if Path(n).name != n or n in (".", "..")]
        if outside:  # a manifest names files of its own folder only: never send what lies outside it
            raise ConfigError(f"{folder / 'manifest.json'} lists {', '.join(outside)}, not a file of the bundle; "
                              f"export it again with leapkit export RUN --target {profile.name}")
        absent = [n for n in names if not (folder / n).is_file()]
        if absent:
            raise ConfigError(f"{folder} lacks {', '.join(absent)} listed in its manifest; export it again")
        return cls(folder, manifest, precision, tuple(folder / n for n in names), _folder_name(manifest))


def _folder_name(manifest: ExportManifest) -> str:
    """The bundle's folder on the device: ``<run>-<target>``, else a hash of the export's files."""
    run = Path(manifest.source_run).name if manifest.source_run else ""
    if run:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{run}-{manifest.target.name}").lstrip(".-")
    else:
        name = "export-" + hashlib.sha256("".join(sorted(manifest.files.values())).encode()).hexdigest()[:12]
    return name or "export"




@dataclass(frozen=True)
class Probe:
    """What the device has for the bundle, from the probe's ``leapkit:key=value`` lines."""

    dir: str
    trtexec: str | None
    tensorrt: str | None
    tegrastats: str | None
    timing_cache: bool
    device: dict[str, Any]

    @classmethod
    def parse(cls, stdout: str) -> Probe:
        found = facts(stdout)
        return cls(dir=found.get("dir", ""), trtexec=found.get("trtexec") or None,
                   tensorrt=installed_tensorrt(found.get("banner", ""), found.get("dpkg_tensorrt", "")),
                   tegrastats=found.get("tegrastats") or None, timing_cache=found.get("timing_cache") == "yes",
                   device=device_fingerprint(found))


# --- the run -------------------------------------------------------------------------------------------------------


def bench_on_host(
    export_dir: Path,
    host: str,
    precision: Precision,
    out_dir: Path,
    *,
    profile: TargetProfile,
    ssh_options: Sequence[str] = (),
) -> HostRun:
    """Build, check and time the bundle's ``precision`` engine on ``host``; its results land in ``out_dir``.

    Args:
        export_dir: the deploy bundle, ``export/<target>/``.
        host: ``[user@]host[:port]`` or a Host of ~/.ssh/config.
        precision: the engine to build, one of the bundle's ONNX variants.
        out_dir: where ``results/<precision>/`` of the device is copied, with the scripts' output.
        profile: the target; its TensorRT version is checked against the device's.
        ssh_options: extra ssh/scp arguments (see :func:`leapkit.device.ssh.ssh_arguments`).

    Raises:
        ConfigError: the bundle, precision or options do not fit.
        HostError: the device is unreachable, refuses the key, has no trtexec or another TensorRT major version,
            or a script fails on it.
        CheckFailed: the engine built on the device fails the parity check (exit 1).
    """
    bundle = Bundle.read(Path(export_dir), profile, precision)
    conn = Connection.to(host, ssh_options)
    log.info("probing %s", conn.host)
    probe = Probe.parse(conn.run(_PROBE, bundle.name).stdout)
    if not probe.dir:
        raise HostError(f"could not make the bundle folder on {conn.host}; check that the home directory there "
                        f"is writable")
    if probe.trtexec is None:
        raise HostError(f"no trtexec on {conn.host} (not on PATH, not in {FALLBACK_TRTEXEC}); install TensorRT "
                        f"there (JetPack's nvidia-tensorrt package brings trtexec)")
    warnings = check_versions(probe.tensorrt, profile, conn.host)
    for w in warnings:
        log.warning(w)

    log.info("copying %s to %s:%s", bundle.folder, conn.host, probe.dir)
    conn.copy([str(f) for f in bundle.files], conn.host.remote(probe.dir + "/"), f"the bundle to {conn.host}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (*RESULT_FILES, *(f"{step}.txt" for step, _ in _STEPS)):
        (out_dir / name).unlink(missing_ok=True)  # a file this run does not bring back must not pass for its own
    args = (probe.dir, probe.trtexec, precision)
    failed: tuple[str, subprocess.CompletedProcess[str]] | None = None
    logs = []
    for step, script in _STEPS:
        log.info("%s.sh %s on %s%s", step, precision, conn.host,
                 " (timing cache present)" if step == "build_engine" and probe.timing_cache else "")
        proc = conn.run(script, *args, probe.tegrastats or "", str(TEGRASTATS_INTERVAL_MS))
        logs.append(out_dir / f"{step}.txt")
        logs[-1].write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            failed = (step, proc)
            break
    files, extra = _fetch(conn, f"{probe.dir}/{RESULTS}/{precision}", out_dir, required=failed is None)
    check = next((f for f in files if f.name == CHECK), None)
    run = HostRun(host=str(conn.host), files=[f for f in files if f != check], check=check,
                  timing_cache_reused=probe.timing_cache,
                  device={**probe.device, **_device_json(files)}, warnings=warnings, logs=logs + extra,
                  remote_dir=probe.dir, power=read_power(out_dir))
    if failed is not None:
        _raise_step(*failed, run, out_dir, precision)
    return run


def _fetch(conn: Connection, remote: str, out_dir: Path, *, required: bool) -> tuple[list[Path], list[Path]]:
    """Copy the device's results folder into ``out_dir``: (trtexec's and the scripts' files, the other files)."""
    with tempfile.TemporaryDirectory(prefix="leapkit-host-") as tmp:
        try:
            conn.copy([conn.host.remote(remote)], tmp, f"the results back from {conn.host}")
        except HostError:
            if required:
                raise
            return [], []
        files, extra = [], []
        for src in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
            dest = out_dir / src.relative_to(Path(tmp) / Path(remote).name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            (files if dest.suffix in (".log", ".json") else extra).append(dest)
    return files, extra


def _device_json(files: Sequence[Path]) -> dict[str, Any]:
    path = next((f for f in files if f.name == DEVICE), None)
    if path is None:
        return {}
    data = read_json(path)
    return data if isinstance(data, dict) else {}


def _raise_step(step: str, proc: subprocess.CompletedProcess[str], run: HostRun, out_dir: Path,
                precision: Precision) -> None:
    """The error for a script that failed on the device, naming its saved output."""
    line = last_line(proc.stdout + proc.stderr)
    where = out_dir / f"{step}.txt"
    device_logs = f"{run.remote_dir}/logs/{precision}/"
    if step == "check_engine" and proc.returncode == 1:
        raise CheckFailed(f"the {precision} engine built on {run.host} failed the parity check against "
                          f"manifest.json ({line}); details in {where} and, on the device, {device_logs}")
    raise HostError(f"./{step}.sh {precision} failed on {run.host} (exit {proc.returncode}: {line}); its "
                    f"output is in {where} and, on the device, {device_logs}")
