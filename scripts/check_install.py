"""Import every module of an installed leapkit, and check that it is the install, not a source tree, that answers.

    python scripts/check_install.py SOURCE_ROOT

Run with the interpreter of the environment to check (a fresh venv with the wheel installed, in CI). SOURCE_ROOT
is the checkout the wheel was built from: each of its modules must import, and none from SOURCE_ROOT itself.
Exit 0 with one summary line, or 1 with one line per problem.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def source_modules(root: Path) -> set[str]:
    """The dotted names of the modules in root's leapkit/ and profiles/ (shipped as leapkit._profiles)."""
    names = set()
    for folder, package in (("leapkit", "leapkit"), ("profiles", "leapkit._profiles")):
        for path in (root / folder).rglob("*.py"):
            parts = [package, *path.relative_to(root / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            names.add(".".join(parts))
    return names


def main(root: Path) -> int:
    import leapkit

    installed_at = Path(leapkit.__file__).resolve().parent
    if installed_at.is_relative_to(root):
        print(f"leapkit was imported from the source tree ({installed_at}), not from an install")
        return 1
    found = {"leapkit", *(m.name for m in pkgutil.walk_packages(leapkit.__path__, "leapkit."))}
    problems = [f"{name}: in {root} but not installed" for name in sorted(source_modules(root) - found)]
    for name in sorted(found):
        try:
            module = importlib.import_module(name)
        except Exception as e:  # every failure is reported, not just the first
            problems.append(f"{name}: {type(e).__name__}: {e}")
            continue
        if not Path(module.__file__).resolve().is_relative_to(installed_at):
            problems.append(f"{name}: imported from {module.__file__}, outside {installed_at}")
    for problem in problems:
        print(problem)
    if not problems:
        print(f"leapkit {leapkit.__version__}: {len(found)} modules import from {installed_at}")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]).resolve()))
