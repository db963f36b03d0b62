"""MkDocs hook: the module map on the architecture page, generated from the package's own docstrings.

A page line ``<!-- module-map: leapkit/deploy -->`` becomes a table of that folder's modules, each with the
first paragraph of its docstring, read with ``ast`` (nothing is imported), so the map cannot drift from the code.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

MARKER = re.compile(r"^<!-- module-map: (?P<folder>[\w/]+) -->$", re.MULTILINE)


def _summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = doc.strip().split("\n\n")[0]
    return " ".join(first.split()).replace("|", "\\|")


def _table(root: Path, folder: str) -> str:
    package = root / folder
    if not package.is_dir():
        raise ValueError(f"module-map: {folder} is not a folder of the repository")
    rows = ["| module | what it holds |", "| --- | --- |"]
    for path in sorted(package.glob("*.py")):
        if path.name == "__init__.py" and not _summary(path):
            continue
        rows.append(f"| `{path.relative_to(root).as_posix()}` | {_summary(path)} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:
    root = Path(config["config_file_path"]).parent
    return MARKER.sub(lambda m: _table(root, m["folder"]), markdown)
