"""`leapkit profiles list|show|validate`: the shipped recipes and target profiles."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from leapkit import config, profiles as P
from leapkit.errors import ConfigError

profiles_app = typer.Typer(help="List, show and validate recipes and target profiles.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="A target (or family such as 'jetson'), a recipe, or a .yaml file.")]
NamesArg = Annotated[Optional[list[str]], typer.Argument(help="Targets, recipes or .yaml files (default: every shipped one).", show_default=False)]


def _fmt(v: object) -> str:
    return "-" if v is None else str(v)


def _defaults_caption() -> str:
    return "families: " + ", ".join(f"{k} -> {v}" for k, v in P.FAMILY_DEFAULTS.items())


@profiles_app.command("list")
def list_() -> None:
    """The shipped target profiles and recipes."""
    console = Console(width=None if sys.stdout.isatty() else 120)  # logs and pipes are wider than 80
    table = Table(title="Target profiles (peaks: dense TFLOPS, int8 TOPS)", title_justify="left", caption=_defaults_caption(), caption_justify="left")
    for col in ("name", "family", "runtime", "prec", "budget", "fp32", "fp16", "int8", "mem BW GB/s"):
        table.add_column(col, no_wrap=col == "name")
    for name in P.list_targets():
        try:
            t = P.load_target(name)
        except ConfigError:
            table.add_row(name, "invalid: see `leapkit profiles validate`", *[""] * 7)
            continue
        peaks = [_fmt(t.peak_tops.get(k)) for k in P.PRECISIONS]
        budget = f"{t.budget_stat}<={t.latency_budget_ms:g}ms"
        table.add_row(name, t.family, t.runtime, t.precision, budget, *peaks, f"{t.memory_bandwidth_gbs:g}")
    console.print(table)
    recipes = Table(title="Recipes", title_justify="left")
    for col in ("name", "teacher", "student", "img size", "data"):
        recipes.add_column(col)
    for name in P.list_recipes():
        try:
            cfg = config.resolve_config(name)
            recipes.add_row(name, cfg.model.teacher, cfg.model.student, str(cfg.model.img_size), cfg.data.source)
        except ConfigError as e:
            recipes.add_row(name, f"invalid: {e}", "", "", "")
    console.print(recipes)


@profiles_app.command("show")
def show(name: NameArg) -> None:
    """Print one target profile (resolved) or recipe (resolved over the defaults)."""
    import yaml

    if P.kind_of(name) == "target":
        t = P.load_target(name)
        typer.echo(f"# target profile {t.name} ({t.path})")
        data = t.to_dict()
        data.pop("path")
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        cfg = config.resolve_config(name)
        typer.echo(f"# recipe {name} ({config.recipe_path(name)}), resolved over the defaults")
        data = cfg.to_dict()
        data["data"]["crop_scale"] = list(cfg.data.crop_scale)
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@profiles_app.command("validate")
def validate(names: NamesArg = None) -> None:
    """Check targets and recipes; list every problem and exit 2 when any is invalid."""
    items: list[tuple[str, str]] = []
    if names:
        items = [(P.kind_of(n), n) for n in names]
    else:
        items = [("target", n) for n in P.list_targets()] + [("recipe", n) for n in P.list_recipes()]
    failed: list[str] = []
    for kind, name in items:
        problems = P.validate_target(name) if kind == "target" else P.validate_recipe(name)
        if problems:
            typer.secho(f"{kind} {name}: {len(problems)} problem(s)", fg="red", err=True)
            for line in problems:
                typer.echo(f"  - {line}", err=True)
            failed.append(name)
        else:
            typer.echo(f"{kind} {name}: ok")
    if failed:
        raise ConfigError(f"{len(failed)} of {len(items)} profiles are invalid ({', '.join(failed)}); fix the problems listed above")
