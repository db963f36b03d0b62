"""What a device has, asked over the link: one probe script, its ``leapkit:key=value`` lines, the fingerprint.

:data:`PROBE` is a POSIX sh fragment that finds trtexec (``$TRTEXEC``, else the PATH, else
:data:`FALLBACK_TRTEXEC`, where JetPack installs it) into ``$TRTEXEC`` and prints one
``leapkit:key=value`` line per finding: ``trtexec``, ``banner`` (trtexec's first line, with its
version), ``dpkg_tensorrt``, ``l4t``, ``model`` (the Jetson module), ``tegrastats``, ``hostname``
and ``arch``. The prefix keeps a login shell's chatter from passing for a finding. ``leapkit bench
--host`` runs it before the bundle is copied (:mod:`leapkit.device.round_trip`), ``leapkit calibrate``
at the head of its timing script (:mod:`leapkit.planning.device_timing`); :func:`facts` reads the
lines back for both.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from leapkit.device.ssh import HostError
from leapkit.trtexec.log import tensorrt_version

if TYPE_CHECKING:
    from leapkit.device.ssh import Host
    from leapkit.profiles import TargetProfile

MARK = "leapkit:"
FALLBACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack installs it, off the PATH

PROBE = r"""
found() { case "$1" in */*) [ -f "$1" ] && [ -x "$1" ] && echo "$1" ;; *) command -v "$1" ;; esac; }
TRTEXEC=$(found "${TRTEXEC:-trtexec}") || TRTEXEC=$(found FALLBACK_TRTEXEC) || TRTEXEC=""
if [ -n "$TRTEXEC" ]; then
    echo "leapkit:trtexec=$TRTEXEC"
    echo "leapkit:banner=$("$TRTEXEC" --help 2>&1 | grep -m 1 '&&&& RUNNING')"
fi
command -v dpkg-query >/dev/null 2>&1 &&
    echo "leapkit:dpkg_tensorrt=$(dpkg-query -W -f '${Version}' tensorrt 2>/dev/null)"
[ -r /etc/nv_tegra_release ] && echo "leapkit:l4t=$(head -n 1 /etc/nv_tegra_release)"
[ -r /proc/device-tree/model ] && echo "leapkit:model=$(tr -d '\000' < /proc/device-tree/model)"
g=$(found "${TEGRASTATS:-tegrastats}") && echo "leapkit:tegrastats=$g"
echo "leapkit:hostname=$(hostname)"
echo "leapkit:arch=$(uname -m)"
""".replace("FALLBACK_TRTEXEC", FALLBACK_TRTEXEC)


def facts(stdout: str) -> dict[str, str]:
    """The ``leapkit:key=value`` lines of a script's output, as a dict; other lines are ignored."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith(MARK) and "=" in line:
            key, value = line[len(MARK):].split("=", 1)
            out[key] = value.strip()
    return out


def installed_tensorrt(banner: str, package: str = "") -> str | None:
    """The device's TensorRT version: from trtexec's banner (``[TensorRT v100300]``), else the tensorrt package's.

    Args:
        banner: trtexec's first line (7.x prints no version there).
        package: the Debian package version, e.g. ``10.3.0.30-1+cuda12.5``.
    """
    if m := re.search(r"\[TensorRT v(\d+)\]", banner):
        return tensorrt_version(m.group(1))
    m = re.match(r"(?:\d+:)?(\d+\.\d+(?:\.\d+)?)", package)
    return m.group(1) if m else None


def device_fingerprint(found: dict[str, str]) -> dict[str, Any]:
    """The probe's findings as the bench report's device: TensorRT's version and the non-empty facts."""
    keys = ("hostname", "arch", "model", "l4t", "trtexec", "dpkg_tensorrt")
    tensorrt = installed_tensorrt(found.get("banner", ""), found.get("dpkg_tensorrt", ""))
    return {"tensorrt": tensorrt, **{k: found[k] for k in keys if found.get(k)}}


def device_environment(found: dict[str, str]) -> dict[str, Any]:
    """The probe's findings keyed as :func:`leapkit.latency.machine.environment`, for a calibration file."""
    return {"host": found.get("hostname"), "machine": found.get("arch"), "device_model": found.get("model"),
            "l4t": found.get("l4t"),
            "tensorrt": installed_tensorrt(found.get("banner", ""), found.get("dpkg_tensorrt", "")),
            "gpu_names": [found["model"]] if found.get("model") else []}


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

