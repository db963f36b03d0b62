"""The package's shape, read from its own source: no import circles, short modules, short signatures.

These are the seams docs/architecture.md promises a newcomer: every concept has one home, and a
module's imports point one way. The checks read the code with ``ast`` (nothing is imported), so a
new circle, a module past 500 lines or an 11-parameter library function fails here with its name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "leapkit"
MAX_MODULE_LINES = 500
MAX_PARAMETERS = 10  # outside leapkit/cli/, whose commands spell every flag once as a parameter


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The leapkit modules ``name`` imports when it loads (not those under TYPE_CHECKING or inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join([*parts[: len(parts) - node.level + 1], *filter(None, [base])])
                # `from package import module` loads the module (its package is loaded first, as for every
                # import, and is not counted); `from module import name` depends on the module
                submodules = {f"{base}.{a.name}" for a in node.names} & known
                found.update(submodules or {base})

    visit(tree.body)
    return {m for m in found if m in known and m != name}


def import_circles(package: Path = PACKAGE) -> list[list[str]]:
    """Strongly connected components of more than one module in the load-time import graph (Tarjan)."""
    mods = modules(package)
    graph = {name: imports_of(name, path, set(mods)) for name, path in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return circles


def test_the_package_has_no_import_circles():
    assert import_circles() == []


def test_the_circle_finder_finds_a_circle_and_skips_type_only_imports(tmp_path):
    fake = tmp_path / "leapkit"
    (fake / "sub").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "sub" / "__init__.py").write_text("")
    (fake / "sub" / "a.py").write_text("from leapkit.sub import b\n")
    (fake / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from leapkit import c\nfrom .a import x\n")
    (fake / "c.py").write_text("import leapkit.sub.b\n")
    assert import_circles(fake) == [["leapkit.sub.a", "leapkit.sub.b"]]


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_longer_than_500_lines(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines: split it by concept"


def test_no_library_function_takes_more_than_10_parameters():
    long = []
    for name, path in modules().items():
        if name.startswith("leapkit.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - (a.args[:1] != [] and
                                                                                 a.args[0].arg in ("self", "cls"))
                if count > MAX_PARAMETERS:
                    long.append(f"{name}.{node.name} ({count})")
    assert long == [], "take a typed request object instead: " + ", ".join(long)
