"""Typed distillation config: defaults <- recipe YAML (a small delta) <- CLI overrides.

The resolved config is written to ``<run>/config.yaml``; later stages read it back with
:func:`load_config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from leapkit import schema
from leapkit.errors import ConfigError
from leapkit.types import Amp, Metric, Mode, Precision

LogBackend = Literal["auto", "tensorboard", "none"]
"""Where training is shown besides metrics.jsonl: auto is TensorBoard when its package is installed."""


@dataclass
class ModelConfig:
    teacher: str = "vit_giant_patch14_dinov2.lvd142m"
    teacher_weights: str | None = None  # local safetensors file, or builtin:<name>
    student: str = "vit_small_patch14_dinov2"
    img_size: int = 224
    drop_path: float = 0.0


@dataclass
class DataConfig:
    source: Literal["folder", "digits"] = "folder"
    path: str | None = None  # folder of images, or an ImageFolder root with train/ (and val/)
    augment: bool = True  # RandomResizedCrop (+ flip); False: resize and centre-crop only
    crop_scale: tuple[float, float] = (0.32, 1.0)
    hflip: float = 0.5
    decode: Literal["fast", "pil"] = "fast"  # fast: crop box first, reduced-size JPEG decoding (leapkit.data)
    workers: int | Literal["auto"] = 8  # auto: this process's share of the CPUs less one
    pin_memory: bool = True


@dataclass
class CurriculumConfig:
    """How the target block rises (:class:`leapkit.curriculum.CurriculumController` holds the rules).

    ``threshold`` gates ``leap``; ``plateau_window`` and ``plateau_tolerance`` gate ``plateau``;
    ``max_epochs_per_block`` is the safety net of both; ``progressive`` gives every block an equal
    share of ``train.epochs``.
    """

    mode: Mode = "leap"
    metric: Metric = "cka"
    threshold: float = 0.85
    ema_alpha: float = 1.0
    max_epochs_per_block: float = 5.0
    plateau_window: int = 10  # score updates (steps) per window: the last W against the W before them
    plateau_tolerance: float = 0.01  # level up when that window's relative gain is below this
    calibrate: bool = True
    snap_to_last_at: int | None = None  # once this block is reached, jump to the last one
    cls_weight: float = 0.05


@dataclass
class OptimConfig:
    name: Literal["adamw", "lars"] = "adamw"
    lr: float = 5e-4  # the peak rate after warm-up; with scale_lr, the rate for a global batch of 256
    scale_lr: bool = False  # linear scaling rule (Goyal et al., 2017): peak lr = lr x global batch / 256
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    lr_restart: bool = False  # restart the cosine segment at every level-up
    clip_grad: float | None = 3.0
    accum_steps: int = 1


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: Amp = "auto"
    teacher_half: bool = True  # run the frozen teacher in the autocast dtype on CUDA
    compile: bool = False  # torch.compile the student forward (helps on recent GPUs; slow to start)
    eval_at_end: bool = True
    log: LogBackend = "auto"  # TensorBoard scalars in RUN/tensorboard (see leapkit.dashboard)


@dataclass
class PlanConfig:
    """The student ``--student auto`` chose (:func:`leapkit.planning.plan.choose_student`), and its forecast.

    Empty unless the student was chosen for a target; ``leapkit report`` sets the forecast against the bench.
    """

    target: str | None = None
    budget_ms: float | None = None
    precision: Precision | None = None
    predicted_ms: float | None = None
    predicted_range_ms: tuple[float, float] | None = None
    calibrated: bool | None = None
    source: str | None = None  # where the latency model's efficiencies come from
    candidates: int | None = None  # how many candidates were weighed


@dataclass
class Config:
    recipe: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def problems(self) -> list[str]:
        """Every problem with the values, each as one line saying what would be valid."""
        p: list[str] = []
        c, t, o, m, d = self.curriculum, self.train, self.optim, self.model, self.data

        def need(ok: bool, msg: str) -> None:
            if not ok:
                p.append(msg)

        need(0.0 < c.threshold <= 1.0, f"curriculum.threshold must be in (0, 1], got {c.threshold} (--cka-threshold)")
        need(0.0 < c.ema_alpha <= 1.0, f"curriculum.ema_alpha must be in (0, 1], got {c.ema_alpha} (--ema-alpha)")
        need(c.max_epochs_per_block > 0,
             f"curriculum.max_epochs_per_block must be > 0, got {c.max_epochs_per_block} (--max-epochs-per-block)")
        need(c.plateau_window >= 1,
             f"curriculum.plateau_window must be >= 1 score update, got {c.plateau_window} (--plateau-window)")
        need(0 <= c.plateau_tolerance < float("inf"),
             f"curriculum.plateau_tolerance must be a finite number >= 0, got {c.plateau_tolerance} "
             "(--plateau-tolerance)")
        need(c.cls_weight >= 0, f"curriculum.cls_weight must be >= 0, got {c.cls_weight}")
        need(c.snap_to_last_at is None or c.snap_to_last_at >= 1,
             f"curriculum.snap_to_last_at must be >= 1, got {c.snap_to_last_at}")
        need(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs} (--epochs)")
        need(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size} (--batch-size)")
        need(0 <= t.seed < 2**32, f"train.seed must be in [0, 2**32), got {t.seed} (--seed)")  # scikit-learn's range
        need(m.img_size >= 8, f"model.img_size must be >= 8, got {m.img_size} (--img-size)")
        need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
        need(0 <= o.min_lr <= o.lr, f"optim.min_lr must be in [0, lr], got {o.min_lr}")
        need(o.warmup_epochs >= 0, f"optim.warmup_epochs must be >= 0, got {o.warmup_epochs}")
        need(o.accum_steps >= 1, f"optim.accum_steps must be >= 1, got {o.accum_steps}")
        need(o.clip_grad is None or o.clip_grad > 0, f"optim.clip_grad must be > 0 or null, got {o.clip_grad}")
        need(d.workers == "auto" or d.workers >= 0, f"data.workers must be >= 0 or auto, got {d.workers}")
        need(0.0 <= d.hflip <= 1.0, f"data.hflip must be in [0, 1], got {d.hflip}")
        need(0.0 < d.crop_scale[0] <= d.crop_scale[1] <= 1.0,
             f"data.crop_scale must satisfy 0 < min <= max <= 1, got {list(d.crop_scale)}")
        need(d.source != "folder" or d.path is not None, "data.path is not set: pass --data DIR (a folder of images)")
        return p

    def validate(self) -> None:
        """Raise ConfigError listing every problem at once."""
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))


# Recipe and target names become folder and file names (runs/<recipe>-..., RUN/export/<target>/): never paths.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (no '/', no '..')"


def name_problem(value: Any, what: str) -> str | None:
    """One line saying why ``value`` cannot be the ``what`` (a recipe or target name), or None when it can."""
    if isinstance(value, (str, int)) and not isinstance(value, bool) and NAME.match(str(value)):
        return None
    return f"{what} {value!r} is not a valid name: use {NAME_RULE}"


SECTIONS: dict[str, type] = {f.name: type(getattr(Config(), f.name)) for f in fields(Config) if f.name != "recipe"}


def merge(cfg: Config, delta: dict[str, Any]) -> tuple[Config, list[str]]:
    """``cfg`` updated with every entry of a nested ``{section: {key: value}}`` delta that fits.

    Returns:
        The updated copy (``cfg`` itself is not changed) and one line per entry that does not fit:
        unknown sections and keys (with a did-you-mean suggestion), wrong types, values outside a
        Literal's members. Value rules are :meth:`Config.problems`.
    """
    cfg = dataclasses.replace(cfg, **{s: dataclasses.replace(getattr(cfg, s)) for s in SECTIONS})
    problems: list[str] = []
    for section, values in delta.items():
        if section == "recipe":
            wrong = name_problem(values, "recipe name")
            problems += [wrong] if wrong else []
            cfg.recipe = str(values) if not wrong else cfg.recipe
        elif section not in SECTIONS:
            problems.append(schema.unknown("section", str(section), SECTIONS))
        elif not isinstance(values, dict):
            problems.append(f"section '{section}' must be a mapping of keys to values, got {values!r}")
        else:
            fitting, wrong = schema.read_fields(values, SECTIONS[section], prefix=f"{section}.")
            for key, value in fitting.items():
                setattr(getattr(cfg, section), key, value)
            problems += wrong
    return cfg, problems


def apply(cfg: Config, delta: dict[str, Any], origin: str) -> Config:
    """Return ``cfg`` updated with a nested ``{section: {key: value}}`` delta.

    Args:
        cfg: the config to update (not changed).
        delta: e.g. ``{"train": {"epochs": 3}}`` from a recipe, a run's config.yaml or the CLI.
        origin: where the delta comes from (a path, ``command line``), for the message.

    Raises:
        ConfigError: any key or value does not fit; the one-line message lists every such problem
            and then every problem with the resulting values.
    """
    cfg, problems = merge(cfg, delta)
    if problems:
        raise ConfigError("; ".join([f"{origin}: {p}" for p in problems] + cfg.problems()))
    return cfg


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``--set section.key=value`` items as a nested delta; values are parsed as YAML scalars.

    ``train.epochs=3`` -> ``{"train": {"epochs": 3}}``; ``model.teacher_weights=null`` sets None;
    ``data.crop_scale=[0.5, 1.0]`` gives a list. The delta is checked later by :func:`apply`.

    Raises:
        ConfigError: an item is not of the form section.key=value.
    """
    delta: dict[str, Any] = {}
    for item in items:
        path, sep, raw = item.partition("=")
        section, dot, key = path.strip().partition(".")
        if not sep or not dot or not section or not key or "." in key:
            raise ConfigError(f"--set {item!r} is not of the form section.key=value (e.g. --set optim.lr=1e-3)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and raw.strip():
            with contextlib.suppress(ValueError):  # YAML 1.1 reads 1e-3 as a string; users mean the number
                value = float(raw) if any(c in raw for c in ".eE") else value
        delta.setdefault(section, {})[key] = value
    return delta


RESUMABLE: frozenset[str] = frozenset({
    "train.epochs", "train.batch_size", "train.device", "train.amp", "train.teacher_half", "train.compile",
    "train.eval_at_end", "train.log", "data.path", "data.workers", "data.pin_memory",
})
"""The keys ``--resume`` may change: how long and where the run trains, never what it trains.

``train.epochs`` extends a run (never below the epochs it has trained; the cosine schedule is
stretched to the new length); ``train.batch_size`` is per process, so that a run can continue on
another number of GPUs at the same global batch; ``data.path`` lets the same data move to another
folder or machine. Every other key (the recipe, the model, the curriculum, the optimizer, the seed,
the data source and augmentation, the ``--student auto`` plan) describes the run itself: changing
it would relabel the checkpoint's training as another run's.
"""


def _flat(cfg: Config) -> dict[str, Any]:
    data = cfg.to_dict()
    flat: dict[str, Any] = {"recipe": data.pop("recipe")}
    for section, values in data.items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def resume_changes(run: Config, new: Config) -> list[str]:
    """The keys outside :data:`RESUMABLE` whose value ``new`` changes, each as ``key (old -> new)``.

    Args:
        run: the config.yaml of the run being resumed.
        new: the config the resume asks for (the run's, with the command line applied).
    """
    old, cur = _flat(run), _flat(new)
    return [f"{key} ({old[key]} -> {cur[key]})" for key in old if key not in RESUMABLE and old[key] != cur[key]]


def recipes_dir() -> Path:
    """The shipped recipes (profiles/recipes in the repo, leapkit/_profiles/recipes in the wheel)."""
    return Path(str(resources.files("leapkit._profiles") / "recipes"))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML ({str(e).splitlines()[0]}); fix the syntax") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a YAML mapping of sections")
    return data


def recipe_path(recipe: str) -> Path:
    """Resolve a recipe given by shipped name or by file path."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    shipped = recipes_dir() / f"{recipe}.yaml"
    if shipped.is_file() and name_problem(recipe, "recipe") is None:  # ../x is a path, not a shipped name
        return shipped
    if path.is_file():
        raise ConfigError(f"recipe file {path} is not named .yaml or .yml; rename it (e.g. {path.stem}.yaml)")
    raise ConfigError(f"unknown recipe '{recipe}'; known: {', '.join(list_recipes())} (or pass a path to a .yaml file)")


def resolve_config(recipe: str = "demo", overrides: dict[str, Any] | None = None) -> Config:
    """Defaults <- recipe <- overrides (a nested delta, e.g. from CLI flags).

    Key and type problems of the recipe and the overrides are reported together (with the value
    problems of the result); value problems alone are left to :meth:`Config.validate`.

    Raises:
        ConfigError: the recipe is unknown or not YAML, or a key or value does not fit.
    """
    path = recipe_path(recipe)
    cfg, problems = merge(Config(), {"recipe": path.stem} | read_yaml(path, "recipe"))  # the file's name, unless set
    problems = [f"{path}: {p}" for p in problems]
    if overrides:
        cfg, wrong = merge(cfg, overrides)
        problems += [f"command line: {p}" for p in wrong]
    if problems:
        raise ConfigError("; ".join(problems + cfg.problems()))
    return cfg


def recipe_problems(recipe: str) -> list[str]:
    """Every problem with a recipe, keys and types first, then values; an empty list when it is valid."""
    path = recipe_path(recipe)
    cfg, problems = merge(Config(), {"recipe": path.stem} | read_yaml(path, "recipe"))  # the file's name, unless set
    return problems + cfg.problems()


def to_yaml(cfg: Config) -> str:
    """The config as the YAML that config.yaml holds (every key, in declaration order)."""
    data = cfg.to_dict()
    data["data"]["crop_scale"] = list(cfg.data.crop_scale)
    if cfg.plan.predicted_range_ms is not None:
        data["plan"]["predicted_range_ms"] = list(cfg.plan.predicted_range_ms)
    return yaml.safe_dump(data, sort_keys=False)


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(to_yaml(cfg))


def load_config(path: Path) -> Config:
    """Read a run's resolved config.yaml back."""
    return apply(Config(), read_yaml(path, "run config"), origin=str(path))
