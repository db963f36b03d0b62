"""Target profiles (profiles/targets/*.yaml) and recipe look-ups.

A target profile describes one deployment device: the runtime and precision to export for, the
peak dense throughput and memory bandwidth a roofline estimate needs, the expected JetPack and
TensorRT versions, and the latency budget ``leapkit bench`` gates on. Profiles ship inside the
package (``leapkit._profiles/targets``); a path to any ``.yaml`` file in the same format works too.

A family name (``jetson``, ``cpu``, ``gpu``) resolves to that family's default profile, listed in
:data:`FAMILY_DEFAULTS`.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from leapkit import config
from leapkit.errors import ConfigError

Family = Literal["jetson", "cpu", "gpu"]
Runtime = Literal["tensorrt", "onnxruntime"]
Precision = Literal["fp32", "fp16", "int8"]
Stat = Literal["min", "mean", "p50", "p90", "p95", "p99", "max"]

FAMILIES: tuple[str, ...] = get_args(Family)
RUNTIMES: tuple[str, ...] = get_args(Runtime)
PRECISIONS: tuple[str, ...] = get_args(Precision)
STATS: tuple[str, ...] = get_args(Stat)

# The one place where a family name maps to a profile. The smallest device of a family is its
# default: a model that meets the budget there meets it on the larger members.
FAMILY_DEFAULTS: dict[str, str] = {
    "jetson": "jetson-orin-nano",
    "cpu": "x86-cpu",
    "gpu": "rtx-4090",
}


@dataclass(frozen=True)
class TargetProfile:
    """One deployment target, as read from its YAML file.

    Throughput figures are dense peaks in 10^12 operations/s (TFLOPS for fp32/fp16, TOPS for
    int8); ``None`` marks a precision the hardware has no fast path for.
    """

    name: str
    family: Family
    description: str
    runtime: Runtime
    precision: Precision
    precisions: tuple[Precision, ...]
    batch: int
    input_size: int | None  # None: the run's training resolution
    peak_tops: dict[str, float | None]
    memory_bandwidth_gbs: float
    memory_gb: float
    jetpack: str | None
    tensorrt: str | None
    latency_budget_ms: float
    budget_stat: Stat = "p99"
    workspace_mb: int | None = None
    threads: int | None = None
    notes: str = ""
    path: Path | None = field(default=None, compare=False)

    def peak_ops(self, precision: Precision) -> float | None:
        """Peak dense operations per second at ``precision``, or None when unknown."""
        tops = self.peak_tops.get(precision)
        return None if tops is None else tops * 1e12

    def resolve_input_size(self, img_size: int) -> int:
        """The input size to export and bench at, given the run's training resolution."""
        return self.input_size if self.input_size is not None else img_size

    @property
    def tensorrt_major(self) -> int | None:
        """Major TensorRT version the device is expected to run (10 for JetPack 6), or None."""
        if self.tensorrt is None:
            return None
        return int(self.tensorrt.split(".")[0])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["precisions"] = list(self.precisions)
        d["path"] = str(self.path) if self.path else None
        return d


_REQUIRED = {f.name for f in fields(TargetProfile) if f.name != "path"} - {"budget_stat", "workspace_mb", "threads", "notes"}
_KNOWN = {f.name for f in fields(TargetProfile) if f.name != "path"}
_VERSION = re.compile(r"^\d+(\.(\d+|x))*$")


def targets_dir() -> Path:
    """The shipped target profiles (profiles/targets in the repo, leapkit/_profiles/targets in the wheel)."""
    return Path(str(resources.files("leapkit._profiles") / "targets"))


def list_targets() -> list[str]:
    """Names of the shipped target profiles, sorted."""
    return sorted(p.stem for p in targets_dir().glob("*.yaml"))


def _known_line() -> str:
    families = ", ".join(f"{k} -> {v}" for k, v in FAMILY_DEFAULTS.items())
    return f"known: {', '.join(list_targets())} (families: {families}), or a path to a .yaml file"


def target_path(name_or_path: str | Path) -> Path:
    """The YAML file of a target given by shipped name, family name or file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if path.is_file():
            return path
        raise ConfigError(f"target profile file not found: {path}; pass an existing .yaml file or a shipped name ({_known_line()})")
    name = FAMILY_DEFAULTS.get(str(name_or_path), str(name_or_path))
    shipped = targets_dir() / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"unknown target '{name_or_path}'; {_known_line()}")


def _problems(data: dict[str, Any], stem: str | None) -> list[str]:
    """Every problem with one profile's values, each a line saying what would be valid."""
    p: list[str] = []
    for key in sorted(set(data) - _KNOWN):
        p.append(f"unknown key '{key}'; known: {', '.join(sorted(_KNOWN))}")
    for key in sorted(_REQUIRED - set(data)):
        p.append(f"missing key '{key}'")

    def check(key: str, ok: Any, want: str) -> None:
        if key in data and not ok(data[key]):
            p.append(f"{key} must be {want}, got {data[key]!r}")

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def pos_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    def choice(opts: tuple[str, ...]) -> tuple[Any, str]:
        return (lambda v: v in opts), f"one of {'|'.join(opts)}"

    check("name", lambda v: isinstance(v, str) and v != "", "a non-empty string")
    if stem is not None and isinstance(data.get("name"), str) and data["name"] != stem:
        p.append(f"name '{data['name']}' must match the file name '{stem}.yaml'")
    check("description", lambda v: isinstance(v, str), "a string")
    check("notes", lambda v: v is None or isinstance(v, str), "a string")
    check("family", *choice(FAMILIES))
    check("runtime", *choice(RUNTIMES))
    check("precision", *choice(PRECISIONS))
    check("budget_stat", *choice(STATS))
    check("precisions", lambda v: isinstance(v, list) and v and all(x in PRECISIONS for x in v) and len(set(v)) == len(v),
          f"a non-empty list of distinct values from {'|'.join(PRECISIONS)}")
    check("batch", pos_int, "an integer >= 1")
    check("input_size", lambda v: v is None or (pos_int(v) and v >= 8), "an integer >= 8, or null for the run's resolution")
    check("memory_bandwidth_gbs", lambda v: number(v) and v > 0, "a number > 0 (GB/s)")
    check("memory_gb", lambda v: number(v) and v > 0, "a number > 0 (GB)")
    check("latency_budget_ms", lambda v: number(v) and v > 0, "a number > 0 (ms)")
    check("workspace_mb", lambda v: v is None or pos_int(v), "an integer >= 1 (MB) or null")
    check("threads", lambda v: v is None or pos_int(v), "an integer >= 1 or null (all cores)")
    for key in ("jetpack", "tensorrt"):
        check(key, lambda v: v is None or (isinstance(v, str) and _VERSION.match(v)), 'a quoted version such as "10.3", or null')

    peak = data.get("peak_tops")
    if "peak_tops" in data:
        if not isinstance(peak, dict):
            p.append(f"peak_tops must be a mapping of {'|'.join(PRECISIONS)} to TFLOPS/TOPS, got {peak!r}")
            peak = None
        else:
            for key in sorted(set(peak) - set(PRECISIONS)):
                p.append(f"peak_tops.{key} is not a precision; use {'|'.join(PRECISIONS)}")
            for key in PRECISIONS:
                if key not in peak:
                    p.append(f"peak_tops.{key} is missing (use null when the hardware has no fast path)")
                elif peak[key] is not None and not (number(peak[key]) and peak[key] > 0):
                    p.append(f"peak_tops.{key} must be a number > 0 or null, got {peak[key]!r}")

    precisions = data.get("precisions") if isinstance(data.get("precisions"), list) else None
    if precisions is not None and data.get("precision") in PRECISIONS and data["precision"] not in precisions:
        p.append(f"precision '{data['precision']}' is not in precisions {precisions}")
    if precisions is not None and isinstance(peak, dict):
        for prec in precisions:
            if prec in PRECISIONS and peak.get(prec) is None:
                p.append(f"precision {prec} is listed in precisions but peak_tops.{prec} is null")
    if data.get("runtime") == "tensorrt":
        if data.get("tensorrt") is None:
            p.append("runtime tensorrt needs the expected TensorRT version in 'tensorrt' (e.g. \"10.3\")")
        if data.get("workspace_mb") is None:
            p.append("runtime tensorrt needs workspace_mb (the builder's memory pool limit)")
    if data.get("family") == "jetson" and data.get("jetpack") is None:
        p.append("a jetson profile needs the expected JetPack version in 'jetpack' (e.g. \"6.2\")")
    return p


def _read(path: Path) -> dict[str, Any]:
    return config.read_yaml(path, "target profile")


def _build(data: dict[str, Any], path: Path) -> TargetProfile:
    values = {k: data.get(k) for k in _KNOWN if k in data}
    values["precisions"] = tuple(values["precisions"])
    values["peak_tops"] = {k: (None if v is None else float(v)) for k, v in values["peak_tops"].items()}
    values["memory_bandwidth_gbs"] = float(values["memory_bandwidth_gbs"])
    values["memory_gb"] = float(values["memory_gb"])
    values["latency_budget_ms"] = float(values["latency_budget_ms"])
    values["notes"] = values.get("notes") or ""
    return TargetProfile(**values, path=path)


def load_target(name_or_path: str | Path | TargetProfile) -> TargetProfile:
    """Load a target profile by shipped name, family name (``jetson``) or YAML path.

    Raises:
        ConfigError: the target is unknown (the message lists the known ones) or its file has
            problems (all of them, in one message).
    """
    if isinstance(name_or_path, TargetProfile):
        return name_or_path
    path = target_path(name_or_path)
    data = _read(path)
    problems = _problems(data, path.stem if path.parent == targets_dir() else None)
    if problems:
        raise ConfigError(f"target profile {path} is invalid: {'; '.join(problems)}")
    return _build(data, path)


def validate_target(name_or_path: str | Path) -> list[str]:
    """Every problem with a target profile (an empty list when it is valid)."""
    try:
        path = target_path(name_or_path)
        data = _read(path)
    except ConfigError as e:
        return [str(e)]
    return _problems(data, path.stem if path.parent == targets_dir() else None)


def list_recipes() -> list[str]:
    """Names of the shipped distillation recipes, sorted."""
    return config.list_recipes()


def validate_recipe(name_or_path: str | Path) -> list[str]:
    """Every problem with a recipe (an empty list when it is valid)."""
    try:
        return config.resolve_config(str(name_or_path)).problems()
    except ConfigError as e:
        return [str(e)]


def kind_of(name_or_path: str | Path) -> Literal["target", "recipe"]:
    """Whether a name or file is a target profile or a recipe.

    Raises:
        ConfigError: the name is neither a shipped target/family nor a shipped recipe.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return "target" if "runtime" in _read(path) else "recipe"
    name = str(name_or_path)
    if name in FAMILY_DEFAULTS or name in list_targets():
        return "target"
    if name in list_recipes():
        return "recipe"
    raise ConfigError(
        f"'{name}' is neither a target nor a recipe; targets: {', '.join(list_targets())}; "
        f"families: {', '.join(FAMILY_DEFAULTS)}; recipes: {', '.join(list_recipes())}"
    )
