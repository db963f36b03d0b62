"""One table, two renderings: a rich table for the terminal and a Markdown table for reports.

Commands print ``table.to_rich()``; report.md and bench/<target>.md embed ``table.to_markdown()``.
Building the rows once keeps the terminal and the files from drifting apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Justify = Literal["left", "right", "center"]


def si(x: float | None, unit: str = "", digits: int = 3) -> str:
    """``x`` with an SI prefix (k, M, G, T, P) and ``digits`` significant digits; ``-`` for None."""
    if x is None:
        return "-"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g} {prefix}{unit}"
    return f"{x:.{digits}g} {unit}".rstrip()


def fmt(v: Any, spec: str = ".2f") -> str:
    """``format(v, spec)``, or ``-`` for None."""
    return "-" if v is None else format(v, spec)


def human_size(n: float) -> str:
    """Bytes as B, KB, MB or GB (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


@dataclass
class Column:
    title: str
    justify: Justify = "left"
    no_wrap: bool = False


@dataclass
class Table:
    """Rows of plain strings under titled columns, with an optional title and caption.

    A row may carry a style (``bold``, ``green``, ``red``); Markdown renders ``bold`` only.
    """

    columns: list[Column]
    title: str = ""
    caption: str = ""
    rows: list[list[str]] = field(default_factory=list)
    styles: list[str | None] = field(default_factory=list)

    @classmethod
    def of(cls, *titles: str, title: str = "", caption: str = "", right: Sequence[str] = ()) -> Table:
        """A table whose columns are ``titles``; those listed in ``right`` are right-aligned."""
        return cls([Column(t, "right" if t in right else "left") for t in titles], title=title, caption=caption)

    def add(self, *cells: Any, style: str | None = None) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"row has {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(["-" if c is None else str(c) for c in cells])
        self.styles.append(style)

    def to_rich(self) -> Any:
        from rich.markup import escape
        from rich.table import Table as RichTable

        table = RichTable(title=escape(self.title) or None, caption=escape(self.caption) or None, title_justify="left")
        for c in self.columns:
            table.add_column(escape(c.title), justify=c.justify, no_wrap=c.no_wrap)
        for row, style in zip(self.rows, self.styles, strict=True):
            table.add_row(*(escape(cell) for cell in row), style=style)
        return table

    def to_markdown(self) -> str:
        def cell(text: str, style: str | None) -> str:
            text = text.replace("|", "\\|")
            return f"**{text}**" if style == "bold" and text else text

        align = {"left": "---", "right": "---:", "center": ":---:"}
        lines = ["| " + " | ".join(c.title for c in self.columns) + " |",
                 "|" + "|".join(align[c.justify] for c in self.columns) + "|"]
        for row, style in zip(self.rows, self.styles, strict=True):
            lines.append("| " + " | ".join(cell(c, style) for c in row) + " |")
        if self.caption:
            lines += ["", self.caption]
        return "\n".join(lines)
