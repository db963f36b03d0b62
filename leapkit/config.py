"""Typed distillation config: defaults <- recipe YAML (a small delta) <- CLI overrides.

The resolved config is written to ``<run>/config.yaml``; later stages read it back with
:func:`load_config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

import yaml

from leapkit.errors import ConfigError


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
    workers: int = 8
    pin_memory: bool = True


@dataclass
class CurriculumConfig:
    mode: Literal["leap", "baseline"] = "leap"
    metric: Literal["cka", "cosine"] = "cka"
    threshold: float = 0.85
    ema_alpha: float = 1.0
    max_epochs_per_block: float = 5.0
    calibrate: bool = True
    snap_to_last_at: int | None = None  # once this block is reached, jump to the last one
    cls_weight: float = 0.05


@dataclass
class OptimConfig:
    name: Literal["adamw", "lars"] = "adamw"
    lr: float = 5e-4  # for batch 256; scaled linearly with the effective batch size
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
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    teacher_half: bool = True  # run the frozen teacher in the autocast dtype on CUDA
    compile: bool = False  # torch.compile the student forward (helps on recent GPUs; slow to start)
    eval_at_end: bool = True


@dataclass
class Config:
    recipe: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

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
        need(c.max_epochs_per_block > 0, f"curriculum.max_epochs_per_block must be > 0, got {c.max_epochs_per_block} (--max-epochs-per-block)")
        need(c.cls_weight >= 0, f"curriculum.cls_weight must be >= 0, got {c.cls_weight}")
        need(c.snap_to_last_at is None or c.snap_to_last_at >= 1, f"curriculum.snap_to_last_at must be >= 1, got {c.snap_to_last_at}")
        need(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs} (--epochs)")
        need(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size} (--batch-size)")
        need(m.img_size >= 8, f"model.img_size must be >= 8, got {m.img_size} (--img-size)")
        need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
        need(0 <= o.min_lr <= o.lr, f"optim.min_lr must be in [0, lr], got {o.min_lr}")
        need(o.warmup_epochs >= 0, f"optim.warmup_epochs must be >= 0, got {o.warmup_epochs}")
        need(o.accum_steps >= 1, f"optim.accum_steps must be >= 1, got {o.accum_steps}")
        need(o.clip_grad is None or o.clip_grad > 0, f"optim.clip_grad must be > 0 or null, got {o.clip_grad}")
        need(d.workers >= 0, f"data.workers must be >= 0, got {d.workers}")
        need(0.0 <= d.hflip <= 1.0, f"data.hflip must be in [0, 1], got {d.hflip}")
        need(0.0 < d.crop_scale[0] <= d.crop_scale[1] <= 1.0, f"data.crop_scale must satisfy 0 < min <= max <= 1, got {list(d.crop_scale)}")
        need(d.source != "folder" or d.path is not None, "data.path is not set: pass --data DIR (a folder of images)")
        return p

    def validate(self) -> None:
        """Raise ConfigError listing every problem at once."""
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))


SECTIONS = {f.name: f.type for f in fields(Config) if f.name != "recipe"}


def _section_types(cls) -> dict[str, Any]:
    return get_type_hints(cls)


def _coerce(section: str, key: str, value: Any, typ: Any) -> Any:
    """Check a YAML/CLI value against the field's annotation, converting where that is lossless."""
    where = f"{section}.{key}"
    args = get_args(typ)
    origin = getattr(typ, "__origin__", None)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{where} cannot be null")
    if args and type(None) in args:  # Optional[X]
        typ = next(a for a in args if a is not type(None))
        args, origin = get_args(typ), getattr(typ, "__origin__", None)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if typ in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (typ is int and not float(value).is_integer()):
            raise ConfigError(f"{where} must be {'an integer' if typ is int else 'a number'}, got {value!r}")
        return typ(value)
    if typ is str:
        return str(value)
    return value


def apply(cfg: Config, delta: dict[str, Any], origin: str) -> Config:
    """Return ``cfg`` updated with a nested ``{section: {key: value}}`` delta."""
    cfg = dataclasses.replace(cfg, **{s: dataclasses.replace(getattr(cfg, s)) for s in SECTIONS})
    for section, values in delta.items():
        if section == "recipe":
            cfg.recipe = str(values)
            continue
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section '{section}'; known: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: section '{section}' must be a mapping of keys to values")
        obj = getattr(cfg, section)
        types = _section_types(type(obj))
        for key, value in values.items():
            if key not in types:
                raise ConfigError(f"{origin}: unknown key '{section}.{key}'; known: {', '.join(types)}")
            setattr(obj, key, _coerce(section, key, value, types[key]))
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
            try:  # YAML 1.1 reads 1e-3 as a string; accept it as the number users mean
                value = float(raw) if any(c in raw for c in ".eE") else value
            except ValueError:
                pass
        delta.setdefault(section, {})[key] = value
    return delta


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
    if shipped.is_file():
        return shipped
    raise ConfigError(f"unknown recipe '{recipe}'; known: {', '.join(list_recipes())} (or pass a path to a .yaml file)")


def resolve_config(recipe: str = "demo", overrides: dict[str, Any] | None = None) -> Config:
    """Defaults <- recipe <- overrides (a nested delta, e.g. from CLI flags). Not yet validated."""
    path = recipe_path(recipe)
    cfg = apply(Config(recipe=path.stem), read_yaml(path, "recipe"), origin=str(path))
    if overrides:
        cfg = apply(cfg, overrides, origin="command line")
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    data = cfg.to_dict()
    data["data"]["crop_scale"] = list(cfg.data.crop_scale)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def load_config(path: Path) -> Config:
    """Read a run's resolved config.yaml back."""
    return apply(Config(), read_yaml(path, "run config"), origin=str(path))
