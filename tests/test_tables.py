"""One table, two renderings: the same rows reach the terminal and the Markdown files."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from leapkit.tables import Table, human_size, si


def test_markdown_and_rich_hold_the_same_cells():
    table = Table.of("model", "p50 ms", title="latency", caption="measured here", right=["p50 ms"])
    table.add("student|v2", "1.234")
    table.add("total", "2.000", style="bold")
    md = table.to_markdown().splitlines()
    assert md[0] == "| model | p50 ms |"
    assert md[1] == "|---|---:|"
    assert md[2] == "| student\\|v2 | 1.234 |"  # a pipe in a cell must not split the Markdown row
    assert md[3] == "| **total** | **2.000** |"
    assert md[-1] == "measured here"
    out = io.StringIO()
    Console(file=out, width=120).print(table.to_rich())
    text = out.getvalue()
    for cell in ("latency", "student|v2", "1.234", "total", "measured here"):
        assert cell in text


def test_rich_rendering_does_not_interpret_markup_in_cells():
    table = Table.of("file")
    table.add("[red]not a style[/red]")
    out = io.StringIO()
    Console(file=out, width=80).print(table.to_rich())
    assert "[red]not a style[/red]" in out.getvalue()


def test_row_width_must_match_the_columns():
    with pytest.raises(ValueError, match="row has 1 cells for 2 columns"):
        Table.of("a", "b").add("x")


@pytest.mark.parametrize("value,unit,expected", [(None, "", "-"), (1.5e12, "FLOPs", "1.5 TFLOPs"), (999, "B", "999 B"),
                                                 (2.5e6, "", "2.5 M")])
def test_si(value, unit, expected):
    assert si(value, unit) == expected


def test_human_size():
    assert human_size(512) == "512 B"
    assert human_size(1536) == "1.5 KB"
    assert human_size(3 * 1024**3) == "3.0 GB"
