"""Target profiles (profiles/targets/*.yaml) and recipe look-ups.

A target profile describes one deployment device: the runtime and precision to export for, the
peak throughput, memory bandwidth and cache a latency lower bound needs, the expected JetPack,
TensorRT and power mode, how to recognise the device (``device_match``), and the latency budget
``leapkit bench`` gates on, with an optional energy budget per inference (``energy_budget_mj``).
Profiles ship inside the package (``leapkit._profiles/targets``); a
path to any ``.yaml`` file in the same format works too.

A family name (``jetson``, ``cpu``, ``gpu``) resolves to that family's default profile, listed in
:data:`FAMILY_DEFAULTS`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from leapkit import config, schema
from leapkit.errors import ConfigError
from leapkit.types import (
    CHOICES,
    FAMILIES,
    PRECISIONS,
    STATS,
    TARGET_RUNTIMES,
    Choice,
    Family,
    Precision,
    Stat,
    TargetRuntime,
)

__all__ = [
    "CHOICES", "FAMILIES", "FAMILY_DEFAULTS", "PRECISIONS", "STATS", "TARGET_RUNTIMES", "Choice", "Family", "Precision",
    "Stat",
    "TargetProfile", "TargetRuntime", "kind_of", "list_recipes", "list_targets", "load_target", "target_path",
    "targets_dir", "validate_recipe", "validate_target", "LatencyModelSection", "PublishedEfficiency",
    "PublishedMeasurement",
]

# The one place where a family name maps to a profile. The smallest device of a family is its
# default: a model that meets the budget there meets it on the larger members.
FAMILY_DEFAULTS: dict[str, str] = {
    "jetson": "jetson-orin-nano",
    "cpu": "x86-cpu",
    "gpu": "rtx-4090",
}

# Peaks a profile may leave out (read as unknown: no lower bound at that precision). Data sheets rarely give a
# bf16 figure, and only CPUs with AVX512-BF16 or AMX run it.
OPTIONAL_PEAKS: tuple[Precision, ...] = ("bf16",)


@dataclass(frozen=True)
class PublishedEfficiency:
    """How close one precision gets to the profile's peaks, set from published measurements (see ``measurements``).

    Fractions are of :meth:`TargetProfile.bound_ops` at the precision (``gemm``, ``attention``) and of
    ``memory_bandwidth_gbs`` (``memory``); passes count how often each element of that kind of activation
    crosses memory (0: the engine fuses that work into a neighbour). :mod:`leapkit.planning.latency_model`
    turns them into rates.

    Args:
        gemm: fraction of the peak the weight GEMMs reach.
        attention: fraction of the peak Q K^T and attn V reach.
        memory: fraction of the bandwidth that weights and activations move at.
        token_passes: memory passes per element of each token-wide elementwise op.
        hidden_passes: memory passes per MLP hidden element.
        score_passes: memory passes per attention score (0: fused attention).
        block_us: fixed time per block (kernel launches and tails), in microseconds.
        inference_us: fixed time per inference, in microseconds.
        range: the prediction's range is [ms / range, ms x range].
    """

    gemm: float
    attention: float
    memory: float
    token_passes: float = 2.0
    hidden_passes: float = 2.0
    score_passes: float = 0.0
    block_us: float = 0.0
    inference_us: float = 0.0
    range: float = 1.5


MeasurementUse = Literal["fit", "check", "bound"]
"""What a published measurement is to the latency model: set from, checked against (within the range), or an
upper bound of the prediction (what was measured holds the backbone and more)."""


@dataclass(frozen=True)
class PublishedMeasurement:
    """One published latency the efficiencies were set from or are checked against.

    Args:
        model: the timm model of the measured network's backbone.
        img_size: its input size.
        precision: the engine's precision.
        ms: the published latency.
        source: where it is published (a URL pinned to a commit where there is one).
        what: what was measured, in the source's words (a whole network whose backbone is ``model``, ...).
        use: ``fit``: the efficiencies were set from it; ``check``: a prediction must land within the range
            of it; ``bound``: it timed the backbone and more, so a prediction must not exceed it.
        batch: images per timed inference; ``ms`` is the time of the whole batch (a throughput figure's
            step time).
    """

    model: str
    img_size: int
    precision: Precision
    ms: float
    source: str
    what: str = ""
    use: MeasurementUse = "fit"
    batch: int = 1


@dataclass(frozen=True)
class LatencyModelSection:
    """A profile's ``latency_model``: efficiencies per precision from published measurements, cited.

    Used by :mod:`leapkit.planning` when the target has no calibration of its own (``leapkit calibrate``).
    """

    precisions: dict[Precision, PublishedEfficiency]
    measurements: tuple[PublishedMeasurement, ...] = ()
    notes: str = ""


def read_latency_model(data: Any) -> tuple[LatencyModelSection | None, list[str]]:
    """The ``latency_model`` section of a profile, and every problem with it (one line each)."""
    if data is None:
        return None, []
    if not isinstance(data, dict):
        return None, [f"latency_model must be a mapping of precisions and measurements, got {data!r}"]
    problems: list[str] = []
    precisions: dict[Precision, PublishedEfficiency] = {}
    measurements: list[PublishedMeasurement] = []
    for key, value in data.items():
        where = f"latency_model.{key}"
        if key in PRECISIONS:
            values, wrong = schema.read_fields(value if isinstance(value, dict) else {}, PublishedEfficiency,
                                               prefix=f"{where}.")
            wrong += schema.missing_fields(value if isinstance(value, dict) else {}, PublishedEfficiency,
                                           prefix=f"{where}.")
            for name in ("gemm", "attention", "memory"):
                if name in values and not 0 < values[name] <= 1:
                    wrong.append(f"{where}.{name} must be a fraction in (0, 1], got {values[name]}")
            if values.get("range", 1.5) < 1:
                wrong.append(f"{where}.range must be >= 1 (the factor either side of the prediction)")
            problems += wrong
            if not wrong:
                precisions[key] = PublishedEfficiency(**values)
        elif key == "measurements":
            for i, item in enumerate(value or ()):
                values, wrong = schema.read_fields(item if isinstance(item, dict) else {}, PublishedMeasurement,
                                                   prefix=f"{where}[{i}].")
                wrong += schema.missing_fields(item if isinstance(item, dict) else {}, PublishedMeasurement,
                                               prefix=f"{where}[{i}].")
                problems += wrong
                if not wrong:
                    measurements.append(PublishedMeasurement(**values))
        elif key == "notes":
            if not isinstance(value, str):
                problems.append(f"{where} must be a string")
        else:
            problems.append(schema.unknown("key", str(key), [*PRECISIONS, "measurements", "notes"], "latency_model."))
    if not precisions and not problems:
        problems.append(f"latency_model needs efficiencies for at least one precision ({'|'.join(PRECISIONS)})")
    if problems:
        return None, problems
    notes = data.get("notes") or ""
    return LatencyModelSection(precisions, tuple(measurements), notes), []


@dataclass(frozen=True)
class TargetProfile:
    """One deployment target, as read from its YAML file.

    Throughput figures are dense peaks in 10^12 operations/s (TFLOPS for fp32/fp16, TOPS for
    int8); ``None`` marks a precision the hardware has no fast path for. They are the fastest rate
    any kernel can reach at that precision, so that the latency lower bound built on them
    (:mod:`leapkit.latency.cost`) is never above a real measurement.

    ``device_match`` holds regular expressions (case-insensitive, searched) for the host that *is*
    the target: they are tried on the device-tree model (Jetson, Raspberry Pi), the GPU names, the
    CPU model and the machine architecture. ``power_modes`` lists the nvpmodel modes the figures
    assume (a Jetson in another mode is measured with a warning). ``tf32_tops`` is the dense TF32
    Tensor Core peak TensorRT uses for fp32 layers unless told ``--noTF32``. ``cache_mb`` is the
    on-chip cache that could hold weights between inferences; without it the lower bound counts
    compute only. ``latency_model`` holds the efficiencies :mod:`leapkit.planning` predicts with when
    the target has no calibration, each set from a published measurement it cites.

    ``runtimes`` lists every runtime the target may deploy with, in preference order (ties go to the
    earlier one); empty means ``runtime`` alone, which is always among them: it is the one the export
    needs (an optional one, such as OpenVINO, is left out with a log line where it is not installed).
    ``choose`` says which benched variant the verdict judges: ``profile``, the runtime and precision
    above; ``fastest``, the fastest variant whose export checks passed, among ``runtimes`` and
    ``precisions`` (the export then writes every precision by default).
    """

    name: str
    family: Family
    description: str
    runtime: TargetRuntime
    precision: Precision
    precisions: tuple[Precision, ...]
    batch: int
    input_size: int | None  # None: the run's training resolution
    peak_tops: dict[Precision, float | None]
    memory_bandwidth_gbs: float
    memory_gb: float
    jetpack: str | None
    tensorrt: str | None
    latency_budget_ms: float
    budget_stat: Stat = "p99"
    energy_budget_mj: float | None = None  # energy per inference, judged on the device's tegrastats samples
    runtimes: tuple[TargetRuntime, ...] = ()
    choose: Choice = "profile"
    workspace_mb: int | None = None
    threads: int | None = None
    device_match: tuple[str, ...] = ()
    power_modes: tuple[str, ...] = ()
    tf32_tops: float | None = None
    cache_mb: float | None = None
    notes: str = ""
    latency_model: LatencyModelSection | None = None
    path: Path | None = field(default=None, compare=False)

    @property
    def deploy_runtimes(self) -> tuple[TargetRuntime, ...]:
        """The runtimes the target deploys with, in preference order: ``runtimes``, else ``runtime`` alone."""
        return self.runtimes or (self.runtime,)

    def peak_ops(self, precision: Precision) -> float | None:
        """Peak dense operations per second at ``precision``, or None when unknown."""
        tops = self.peak_tops.get(precision)
        return None if tops is None else tops * 1e12

    def bound_ops(self, precision: Precision) -> float | None:
        """The fastest operations per second any kernel reaches at ``precision`` (fp32 may run as TF32)."""
        peak = self.peak_ops(precision)
        if precision == "fp32" and self.runtime == "tensorrt" and self.tf32_tops is not None:
            return max(peak or 0.0, self.tf32_tops * 1e12)
        return peak

    def matches(self, names: Sequence[str | None]) -> str | None:
        """The first of ``names`` that one of ``device_match`` finds, or None (also without patterns)."""
        for name in names:
            if name and any(re.search(p, name, re.IGNORECASE) for p in self.device_match):
                return name
        return None

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
        d["precisions"], d["runtimes"] = list(self.precisions), list(self.runtimes)
        d["device_match"], d["power_modes"] = list(self.device_match), list(self.power_modes)
        d["path"] = str(self.path) if self.path else None
        if d["latency_model"] is not None:
            d["latency_model"]["measurements"] = [dict(m) for m in d["latency_model"]["measurements"]]
        return d


_NOT_IN_FILE = ("path",)
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
        raise ConfigError(
            f"target profile file not found: {path}; pass an existing .yaml file or a shipped name ({_known_line()})"
        )
    name = FAMILY_DEFAULTS.get(str(name_or_path), str(name_or_path))
    shipped = targets_dir() / f"{name}.yaml"
    if shipped.is_file() and config.name_problem(name, "target") is None:  # ../x is a path, not a shipped name
        return shipped
    if path.is_file():
        raise ConfigError(f"target profile file {path} is not named .yaml or .yml; rename it (e.g. {path.stem}.yaml)")
    raise ConfigError(f"unknown target '{name_or_path}'; {_known_line()}")


def _value_problems(v: dict[str, Any], stem: str | None) -> list[str]:
    """Every problem with the values of one profile whose keys and types fit, one line each."""
    p: list[str] = []

    def need(key: str, ok: Any, want: str) -> None:
        if key in v and v[key] is not None and not ok(v[key]):
            p.append(f"{key} must be {want}, got {v[key]!r}")

    if "name" in v:  # it names RUN/export/<name>/ and bench/<name>.json: a name, never a path
        wrong = config.name_problem(v["name"], "name")
        p += [wrong] if wrong else []
    if stem is not None and v.get("name") and v["name"] != stem:
        p.append(f"name '{v['name']}' must match the file name '{stem}.yaml'")
    need("precisions", lambda x: x and len(set(x)) == len(x),
         f"a non-empty list of distinct values from {'|'.join(PRECISIONS)}")
    need("batch", lambda x: x >= 1, "an integer >= 1")
    need("input_size", lambda x: x >= 8, "an integer >= 8, or null for the run's resolution")
    need("memory_bandwidth_gbs", lambda x: x > 0, "a number > 0 (GB/s)")
    need("memory_gb", lambda x: x > 0, "a number > 0 (GB)")
    need("latency_budget_ms", lambda x: x > 0, "a number > 0 (ms)")
    need("energy_budget_mj", lambda x: x > 0, "a number > 0 (mJ per inference) or null")
    need("workspace_mb", lambda x: x >= 1, "an integer >= 1 (MB) or null")
    need("threads", lambda x: x >= 1, "an integer >= 1 or null (all cores)")
    for key in ("jetpack", "tensorrt"):
        need(key, _VERSION.match, 'a quoted version such as "10.3", or null')
    need("tf32_tops", lambda x: x > 0, "a number > 0 (dense TF32 Tensor Core TFLOPS) or null")
    need("cache_mb", lambda x: x >= 0, "a number >= 0 (MB of on-chip cache) or null")
    for i, pattern in enumerate(v.get("device_match") or ()):
        try:
            re.compile(pattern)
        except re.error as e:
            p.append(f"device_match[{i}] is not a regular expression ({e}): {pattern!r}")

    peak = v.get("peak_tops")
    if peak is not None:
        for key in sorted(set(peak) - set(PRECISIONS)):
            p.append(f"peak_tops.{key} is not a precision; use {'|'.join(PRECISIONS)}")
        for key in PRECISIONS:
            if key not in peak:
                if key not in OPTIONAL_PEAKS:
                    p.append(f"peak_tops.{key} is missing (use null when the hardware has no fast path)")
            elif peak[key] is not None and not peak[key] > 0:
                p.append(f"peak_tops.{key} must be a number > 0 or null, got {peak[key]!r}")

    precisions = v.get("precisions")
    if precisions is not None and "precision" in v and v["precision"] not in precisions:
        p.append(f"precision '{v['precision']}' is not in precisions {list(precisions)}")
    if precisions is not None and peak is not None:
        for prec in precisions:
            if peak.get(prec) is None and not (prec in OPTIONAL_PEAKS and prec not in peak):
                p.append(f"precision {prec} is listed in precisions but peak_tops.{prec} is null")
    runtimes = v.get("runtimes") or ((v["runtime"],) if "runtime" in v else ())
    need("runtimes", lambda x: len(set(x)) == len(x), f"a list of distinct values from {'|'.join(TARGET_RUNTIMES)}")
    if v.get("runtimes") and "runtime" in v and v["runtime"] not in v["runtimes"]:
        p.append(f"runtime {v['runtime']} is not in runtimes {list(v['runtimes'])}; list it there too")
    if "openvino" in runtimes and v.get("family") not in (None, "cpu"):
        p.append(f"runtime openvino runs on the CPU: it is for family cpu, not {v['family']}")
    if precisions is not None and "bf16" in precisions and runtimes and "openvino" not in runtimes:
        p.append("precision bf16 runs only on OpenVINO (the fp32 IR with the bf16 inference precision hint): add "
                 "openvino to runtimes, or drop bf16 from precisions")
    if v.get("runtime") == "tensorrt":
        if v.get("tensorrt") is None:
            p.append("runtime tensorrt needs the expected TensorRT version in 'tensorrt' (e.g. \"10.3\")")
        if v.get("workspace_mb") is None:
            p.append("runtime tensorrt needs workspace_mb (the builder's memory pool limit)")
    if v.get("family") == "jetson" and v.get("jetpack") is None:
        p.append("a jetson profile needs the expected JetPack version in 'jetpack' (e.g. \"6.2\")")
    return p


def _check(data: dict[str, Any], stem: str | None) -> tuple[dict[str, Any], list[str]]:
    """The profile's values that fit, and every problem: keys and types first, then values."""
    if data.get("notes", "") is None:  # an empty ``notes:`` in YAML
        data = {k: v for k, v in data.items() if k != "notes"}
    values, problems = schema.read_fields(data, TargetProfile, exclude=_NOT_IN_FILE)
    problems += schema.missing_fields(data, TargetProfile, exclude=_NOT_IN_FILE)
    if "latency_model" in values:
        values["latency_model"], wrong = read_latency_model(values["latency_model"])
        problems += wrong
    return values, problems + _value_problems(values, stem)


def _read(path: Path) -> dict[str, Any]:
    return config.read_yaml(path, "target profile")


def _stem(path: Path) -> str | None:
    """The name a shipped profile must carry (its file name); None for a user's file."""
    return path.stem if path.parent == targets_dir() else None


def load_target(name_or_path: str | Path | TargetProfile) -> TargetProfile:
    """Load a target profile by shipped name, family name (``jetson``) or YAML path.

    Raises:
        ConfigError: the target is unknown (the message lists the known ones) or its file has
            problems (all of them, in one message).
    """
    if isinstance(name_or_path, TargetProfile):
        return name_or_path
    path = target_path(name_or_path)
    values, problems = _check(_read(path), _stem(path))
    if problems:
        raise ConfigError(f"target profile {path} is invalid: {'; '.join(problems)}")
    return TargetProfile(**values, path=path)


def validate_target(name_or_path: str | Path) -> list[str]:
    """Every problem with a target profile (an empty list when it is valid)."""
    try:
        path = target_path(name_or_path)
        return _check(_read(path), _stem(path))[1]
    except ConfigError as e:
        return [str(e)]


def list_recipes() -> list[str]:
    """Names of the shipped distillation recipes, sorted."""
    return config.list_recipes()


def validate_recipe(name_or_path: str | Path) -> list[str]:
    """Every problem with a recipe, one line each (an empty list when it is valid)."""
    try:
        return config.recipe_problems(str(name_or_path))
    except ConfigError as e:
        return [str(e)]


def kind_of(name_or_path: str | Path) -> Literal["target", "recipe"]:
    """Whether a name or file is a target profile or a recipe.

    Raises:
        ConfigError: a .yaml file that does not exist, or a name that is neither a shipped target/family nor a
            shipped recipe.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"file not found: {path}; pass an existing .yaml file, or a shipped target or recipe "
                              f"name (`leapkit profiles list`)")
        return "target" if "runtime" in _read(path) else "recipe"
    name = str(name_or_path)
    if name in FAMILY_DEFAULTS or name in list_targets():
        return "target"
    if name in list_recipes():
        return "recipe"
    if path.is_file():
        raise ConfigError(f"{path} is not a .yaml file; a target or recipe file's name ends in .yaml or .yml")
    raise ConfigError(
        f"'{name}' is neither a target nor a recipe; targets: {', '.join(list_targets())}; "
        f"families: {', '.join(FAMILY_DEFAULTS)}; recipes: {', '.join(list_recipes())}"
    )
