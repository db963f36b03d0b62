"""`leapkit bench RUN --target T --host [user@]host[:port]`: build, check and time a bundle on the device over SSH.

:func:`bench_on_host` drives the system ``ssh`` and ``scp`` (the user's ssh config, keys and agent; never a
password prompt) through five steps:

1. probe: make the bundle's folder on the device, ``${XDG_CACHE_HOME:-~/.cache}/leapkit/bundles/<run>-<target>``,
   and report the device's trtexec, TensorRT version, L4T release, module and tegrastats;
2. check the TensorRT version against the profile (another major version is refused, another minor one is a
   warning);
3. copy the bundle there: the manifest's files, with only the ONNX variant of the chosen precision;
4. run ``./build_engine.sh P``, ``./check_engine.sh P`` and ``./bench_engine.sh P`` in that folder, with
   tegrastats sampling power during the benchmark where the device has it; an engine that fails the parity
   check is not timed (CheckFailed, exit 1), since its latency would be no evidence;
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
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leapkit.deploy.bundle import CHECK, DEVICE, PROFILE, RESULTS, TIMES, TRTEXEC_LOG
from leapkit.deploy.manifest import ExportManifest
from leapkit.errors import CheckFailed, ConfigError, LeapkitError
from leapkit.profiles import TargetProfile
from leapkit.records import Record, read_json
from leapkit.types import Precision

log = logging.getLogger(__name__)

SCRIPTS = ("build_engine.sh", "check_engine.sh", "bench_engine.sh")
FALLBACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack installs it, off the PATH
TEGRASTATS_INTERVAL_MS = 100
# Options that suit a tool: fail instead of asking (BatchMode), give up on a dead address or a device that hangs.
SSH_DEFAULTS = ("-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4")
# Options that take a value in the next argument and mean the same to ssh and scp.
_VALUE_OPTIONS = ("-o", "-i", "-F", "-J")
_MARK = "leapkit:"  # prefix of the probe's lines, so that a login shell's chatter cannot be mistaken for them

# POSIX sh, run on the device with the bundle's folder name as $1. One "leapkit:key=value" line per finding.
_PROBE = r"""
dir="${XDG_CACHE_HOME:-$HOME/.cache}/leapkit/bundles/$1"
mkdir -p "$dir" && cd "$dir" || exit 3
echo "leapkit:dir=$(pwd)"
found() { case "$1" in */*) [ -f "$1" ] && [ -x "$1" ] && echo "$1" ;; *) command -v "$1" ;; esac; }
t=$(found "${TRTEXEC:-trtexec}") || t=$(found /usr/src/tensorrt/bin/trtexec) || t=""
if [ -n "$t" ]; then
    echo "leapkit:trtexec=$t"
    echo "leapkit:banner=$("$t" --help 2>&1 | grep -m 1 '&&&& RUNNING')"
fi
command -v dpkg-query >/dev/null 2>&1 &&
    echo "leapkit:dpkg_tensorrt=$(dpkg-query -W -f '${Version}' tensorrt 2>/dev/null)"
[ -r /etc/nv_tegra_release ] && echo "leapkit:l4t=$(head -n 1 /etc/nv_tegra_release)"
[ -r /proc/device-tree/model ] && echo "leapkit:model=$(tr -d '\000' < /proc/device-tree/model)"
g=$(found "${TEGRASTATS:-tegrastats}") && echo "leapkit:tegrastats=$g"
[ -f timing.cache ] && echo "leapkit:timing_cache=yes"
echo "leapkit:hostname=$(hostname)"
echo "leapkit:arch=$(uname -m)"
exit 0
"""
# $1 the bundle's folder, $2 trtexec, $3 the precision; for the benchmark $4 tegrastats (empty: none) and $5 its
# sampling interval in ms. The engine and its results are made afresh; tegrastats samples power during the benchmark.
_BUILD = 'cd "$1" && export TRTEXEC="$2" && rm -rf "results/$3" && exec ./build_engine.sh "$3"'
_CHECK = 'cd "$1" && export TRTEXEC="$2" && exec ./check_engine.sh "$3"'
_BENCH = r"""
cd "$1" && export TRTEXEC="$2" || exit 3
log="tegrastats_$3.txt"
rm -f "$log"
if [ -n "$4" ]; then
    "$4" --interval "$5" --logfile "$log" >/dev/null 2>&1 &
    sampler=$!
fi
./bench_engine.sh "$3"
status=$?
if [ -n "$4" ]; then
    kill "$sampler" 2>/dev/null
    mkdir -p "results/$3" && mv -f "$log" "results/$3/tegrastats.txt" 2>/dev/null
fi
exit $status
"""


_STEPS = (("build_engine", _BUILD), ("check_engine", _CHECK), ("bench_engine", _BENCH))
# What the device's results/PRECISION/ may hold (the bundle's scripts write all but the power samples).
RESULT_FILES = (TRTEXEC_LOG, TIMES, PROFILE, DEVICE, CHECK, "tegrastats.txt")


class HostError(LeapkitError):
    """The device cannot be reached, refuses the key, or lacks what the bundle needs (exit 2)."""


@dataclass
class HostRun(Record):
    """What one run on the device brought back.

    ``files`` are trtexec's results (its log, ``--exportTimes`` and ``--exportProfile`` JSON) and device.json, for
    :func:`leapkit.latency.trtexec.read_trtexec`; ``check`` is check_engine.sh's check.json; ``logs`` are the
    scripts' own output and the tegrastats samples, kept beside them. ``timing_cache_reused`` says whether the
    device had a timing cache before the build; ``device`` is what the probe found, merged with the bundle's
    device.json.
    """

    host: str
    files: list[Path]
    timing_cache_reused: bool
    device: dict[str, Any]
    check: Path | None = None
    warnings: list[str] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    remote_dir: str = ""


# --- the host and the ssh client ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """``[user@]host[:port]``; an IPv6 address goes in brackets (``[::1]:2222``)."""

    name: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Host:
        """Read ``--host``; a name from ~/.ssh/config works too, with the user and port it sets there.

        Raises:
            ConfigError: the text is not ``[user@]host[:port]``.
        """
        m = re.fullmatch(r"(?:([A-Za-z0-9_][A-Za-z0-9._-]*)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9._-]*)"
                         r"(?::(\d{1,5}))?", text.strip())
        port = int(m.group(3)) if m and m.group(3) else None
        if m is None or (port is not None and not 1 <= port <= 65535):
            raise ConfigError(f"--host '{text}' is not [user@]host[:port]; e.g. --host nvidia@192.168.1.42 or "
                              f"--host jetson:2222 (an IPv6 address in brackets: [fe80::1]:22)")
        return cls(name=m.group(2).strip("[]"), user=m.group(1), port=port)

    @property
    def destination(self) -> str:
        """What ssh connects to: ``user@host``."""
        return f"{self.user}@{self.name}" if self.user else self.name

    def remote(self, path: str) -> str:
        """An scp operand for ``path`` on this host."""
        name = f"[{self.name}]" if ":" in self.name else self.name
        return f"{self.user}@{name}:{path}" if self.user else f"{name}:{path}"

    def __str__(self) -> str:
        name = f"[{self.name}]" if ":" in self.name else self.name
        user = f"{self.user}@" if self.user else ""
        return f"{user}{name}:{self.port}" if self.port else f"{user}{name}"


def ssh_arguments(options: Sequence[str]) -> tuple[str, ...]:
    """The user's extra ssh/scp arguments, checked: ``Key=Value`` (an ssh_config line) becomes ``-o Key=Value``.

    Raw arguments that mean the same to ssh and scp pass as they are: ``-o OPT``, ``-i KEY``, ``-F CONFIG``,
    ``-J JUMP`` and flags such as ``-4``.

    Raises:
        ConfigError: a port flag (it differs between ssh and scp), an option without its value, or a bare word.
    """
    out: list[str] = []
    items = iter(options)
    for item in items:
        if item in _VALUE_OPTIONS:
            value = next(items, None)
            if value is None:
                raise ConfigError(f"ssh option {item} needs a value, e.g. {item} VALUE")
            out += [item, value]
        elif item.startswith(("-p", "-P")):
            raise ConfigError(f"ssh option '{item}': give the port in --host, as user@host:PORT")
        elif item.startswith("-"):
            out.append(item)
        elif re.fullmatch(r"[A-Za-z][A-Za-z0-9]*[= ].+", item):
            out += ["-o", item]
        else:
            raise ConfigError(f"ssh option '{item}' is not an ssh_config setting; pass Key=Value, e.g. "
                              f"IdentityFile=~/.ssh/jetson or UserKnownHostsFile=/tmp/known_hosts")
    return tuple(out)


def _last_line(text: str) -> str:
    """The last line worth showing: ssh's own warnings (a host key added) are not the problem."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently")]
    return lines[-1] if lines else "no message"


@dataclass(frozen=True)
class Connection:
    """ssh and scp to one host, never prompting, with the user's config plus ``options``."""

    host: Host
    options: tuple[str, ...] = ()

    def _arguments(self) -> list[str]:
        port = ["-o", f"Port={self.host.port}"] if self.host.port else []
        return ["-o", "BatchMode=yes", *port, *self.options, *SSH_DEFAULTS]

    def _call(self, argv: list[str], shown: str) -> subprocess.CompletedProcess[str]:
        log.debug("%s %s", argv[0], shown)
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
        except FileNotFoundError as e:
            raise HostError(f"'{argv[0]}' not found: --host needs the OpenSSH client (apt-get install "
                            f"openssh-client)") from e

    def transport_error(self, stderr: str) -> HostError:
        """One line for what went wrong between here and the host."""
        line = _last_line(stderr)
        if "Permission denied" in stderr:
            return HostError(f"{self.host} refused the SSH key ({line}); install your public key there "
                             f"(ssh-copy-id {'-p ' + str(self.host.port) + ' ' if self.host.port else ''}"
                             f"{self.host.destination}) or name the key with --ssh-option "
                             f"IdentityFile=KEY")
        if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            return HostError(f"{self.host}'s host key is unknown or changed ({line}); run {self.ssh_command()} "
                             f"once to check and accept it")
        return HostError(f"cannot reach {self.host} ({line}); check the address and port, that the device is on "
                         f"and that sshd runs on it (try: {self.ssh_command()})")

    def ssh_command(self) -> str:
        """The ssh command line a user would try by hand: the port and the user's options (``-i KEY``) kept."""
        port = ["-p", str(self.host.port)] if self.host.port else []
        return shlex.join(["ssh", *port, *self.options, self.host.destination])

    def reach(self) -> None:
        """Log in and out (BatchMode, ConnectTimeout as in SSH_DEFAULTS): seconds, before any slow work for the host.

        Raises:
            HostError: the host cannot be reached, refuses the key, or its host key is unknown.
        """
        log.info("checking that %s can be reached", self.host)
        self.run("exit 0")

    def run(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a POSIX sh ``script`` with ``args`` as $1.. on the host; ssh's own failures (exit 255) raise."""
        command = shlex.join(["sh", "-c", script, "leapkit", *args])
        proc = self._call(["ssh", *self._arguments(), "--", self.host.destination, command],
                          f"{self.host}: sh -c <{script.strip().splitlines()[0]} ...> {shlex.join(args)}")
        if proc.returncode == 255:
            raise self.transport_error(proc.stderr)
        return proc

    def copy(self, sources: Sequence[str], target: str, what: str) -> None:
        """scp ``sources`` to ``target`` (either side may be remote, by :meth:`Host.remote`)."""
        proc = self._call(["scp", "-q", "-r", *self._arguments(), "--", *sources, target],
                          f"{shlex.join(sources)} {target}")
        if proc.returncode != 0:
            if re.search(r"Permission denied \(|Host key|Connection|resolve|timed out|unreachable|route",
                         proc.stderr):
                raise self.transport_error(proc.stderr)
            raise HostError(f"copying {what} failed ({_last_line(proc.stderr)})")


# --- the bundle and the device -------------------------------------------------------------------------------------


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
        names = ["manifest.json", *(n for n in manifest.files if n not in other)]
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
    """What the device has, from the probe script's ``leapkit:key=value`` lines."""

    dir: str
    trtexec: str | None
    tensorrt: str | None
    tegrastats: str | None
    timing_cache: bool
    facts: dict[str, str]

    @classmethod
    def parse(cls, stdout: str) -> Probe:
        facts = {}
        for line in stdout.splitlines():
            if line.startswith(_MARK) and "=" in line:
                key, value = line[len(_MARK):].split("=", 1)
                facts[key] = value.strip()
        return cls(dir=facts.get("dir", ""), trtexec=facts.get("trtexec") or None,
                   tensorrt=tensorrt_version(facts.get("banner", ""), facts.get("dpkg_tensorrt", "")),
                   tegrastats=facts.get("tegrastats") or None, timing_cache=facts.get("timing_cache") == "yes",
                   facts=facts)

    def device(self) -> dict[str, Any]:
        keys = ("hostname", "arch", "model", "l4t", "trtexec", "dpkg_tensorrt")
        return {"tensorrt": self.tensorrt, **{k: self.facts[k] for k in keys if self.facts.get(k)}}


def tensorrt_version(banner: str, package: str = "") -> str | None:
    """TensorRT's dotted version from trtexec's banner (``[TensorRT v100300]``), else the tensorrt package's.

    The banner's number is major*1000+minor*100+patch up to 8.x and major*10000+minor*100+patch from 10.0 on.
    """
    m = re.search(r"\[TensorRT v(\d+)\]", banner)
    if m:
        n = int(m.group(1))
        major, rest = (n // 10000, n % 10000) if n >= 10000 else (n // 1000, n % 1000)
        return f"{major}.{rest // 100}.{rest % 100}"
    m = re.match(r"(?:\d+:)?(\d+\.\d+(?:\.\d+)?)", package)  # 10.3.0.30-1+cuda12.5
    return m.group(1) if m else None


def check_versions(found: str | None, profile: TargetProfile, host: Host) -> list[str]:
    """Warnings about the device's TensorRT; another major version than the profile's is refused.

    Raises:
        HostError: the major versions differ (the bundle's trtexec flags depend on it).
    """
    expected = profile.tensorrt
    if found is None:
        return [f"could not tell the TensorRT version on {host} (no version in trtexec's banner, no tensorrt "
                f"package); {profile.name} expects {expected}"]
    if expected is None:
        return []
    want, have = expected.split("."), found.split(".")
    jetpack = f" (JetPack {profile.jetpack})" if profile.jetpack else ""
    if want[0] != have[0]:
        raise HostError(f"{host} runs TensorRT {found} but {profile.name} expects {expected}{jetpack}; install "
                        f"that version on the device or bench with a profile whose tensorrt is \"{found}\"")
    if len(want) > 1 and want[1] != "x" and (len(have) < 2 or want[1] != have[1]):
        return [f"{host} runs TensorRT {found}, {profile.name} expects {expected}{jetpack}: the same major version, "
                f"so the bundle works, but timings may differ from the profile's device"]
    return []


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
        ssh_options: extra ssh/scp arguments (see :func:`ssh_arguments`).

    Raises:
        ConfigError: the bundle, precision or options do not fit.
        HostError: the device is unreachable, refuses the key, has no trtexec or another TensorRT major version,
            or a script fails on it.
        CheckFailed: the engine built on the device fails the parity check (exit 1).
    """
    bundle = Bundle.read(Path(export_dir), profile, precision)
    conn = Connection(Host.parse(host), ssh_arguments(ssh_options))
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
                  device={**probe.device(), **_device_json(files)}, warnings=warnings, logs=logs + extra,
                  remote_dir=probe.dir)
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
    line = _last_line(proc.stdout + proc.stderr)
    where = out_dir / f"{step}.txt"
    device_logs = f"{run.remote_dir}/logs/{precision}/"
    if step == "check_engine" and proc.returncode == 1:
        raise CheckFailed(f"the {precision} engine built on {run.host} failed the parity check against "
                          f"manifest.json ({line}); details in {where} and, on the device, {device_logs}")
    raise HostError(f"./{step}.sh {precision} failed on {run.host} (exit {proc.returncode}: {line}); its "
                    f"output is in {where} and, on the device, {device_logs}")
