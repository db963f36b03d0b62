"""`leapkit profiles list|show|validate`: the shipped recipes and target profiles."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from leapkit import config
from leapkit import profiles as P
from leapkit.errors import ConfigError
from leapkit.tables import Table, fmt
from leapkit.types import PRECISIONS

profiles_app = typer.Typer(help="List, show and validate recipes and target profiles.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="A target (or family such as 'jetson'), a recipe, or a .yaml file.")]
NamesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Targets, recipes or .yaml files (default: every shipped one).", show_default=False),
]


def targets_table() -> Table:
    """The shipped target profiles, one row each; an invalid one says so."""
    caption = "families: " + ", ".join(f"{k} -> {v}" for k, v in P.FAMILY_DEFAULTS.items())
    table = Table.of("name", "family", "runtime", "prec", "budget", *PRECISIONS, "mem BW GB/s",
                     title="Target profiles (peaks: dense TFLOPS, int8 TOPS)", caption=caption)
    table.columns[0].no_wrap = True
    for name in P.list_targets():
        try:
            t = P.load_target(name)
        except ConfigError:
            table.add(name, "invalid: see `leapkit profiles validate`", *[""] * 7)
            continue
        peaks = [fmt(t.peak_tops.get(k), "g") for k in PRECISIONS]
        budget = f"{t.budget_stat}<={t.latency_budget_ms:g}ms"
        table.add(name, t.family, t.runtime, t.precision, budget, *peaks, f"{t.memory_bandwidth_gbs:g}")
    return table


def recipes_table() -> Table:
    """The shipped recipes: teacher, student, resolution and data."""
    table = Table.of("name", "teacher", "student", "img size", "data", title="Recipes")
    for name in P.list_recipes():
        try:
            cfg = config.resolve_config(name)
            table.add(name, cfg.model.teacher, cfg.model.student, cfg.model.img_size, cfg.data.source)
        except ConfigError as e:
            table.add(name, f"invalid: {e}", "", "", "")
    return table


@profiles_app.command("list")
def list_() -> None:
    """The shipped target profiles and recipes."""
    console = Console(width=None if sys.stdout.isatty() else 120)  # logs and pipes are wider than 80
    console.print(targets_table().to_rich())
    console.print(recipes_table().to_rich())


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
        typer.echo(config.to_yaml(cfg).rstrip())


@profiles_app.command("validate")
def validate(names: NamesArg = None) -> None:
    """Check targets and recipes; list every problem and exit 2 when any is invalid.

    The report (one line per profile, then its problems) goes to stdout; stderr gets the one-line verdict.
    """
    items: list[tuple[str, str]] = []
    if names:
        items = [(P.kind_of(n), n) for n in names]
    else:
        items = [("target", n) for n in P.list_targets()] + [("recipe", n) for n in P.list_recipes()]
    failed: dict[str, list[str]] = {}
    for kind, name in items:
        problems = P.validate_target(name) if kind == "target" else P.validate_recipe(name)
        if problems:
            typer.secho(f"{kind} {name}: {len(problems)} problem(s)", fg="red")
            for line in problems:
                typer.echo(f"  - {line}")
            failed[name] = problems
        else:
            typer.echo(f"{kind} {name}: ok")
    if len(failed) == 1 and len(items) == 1:
        ((name, problems),) = failed.items()
        raise ConfigError(f"{items[0][0]} {name} is invalid: {'; '.join(problems)}")
    if failed:
        raise ConfigError(
            f"{len(failed)} of {len(items)} profiles are invalid ({', '.join(failed)}); fix the problems listed above"
        )
