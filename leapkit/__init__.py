"""leapkit: distil Vision Foundation Models into edge-sized ViTs with the LEAP curriculum."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:  # one version, pyproject.toml's, as installed
    __version__ = version("leapkit")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

# The public API, imported on first use so that `import leapkit` (and the CLI) start fast. The stages live in
# modules of other names (leapkit.deploy.export, leapkit.latency.bench), so `leapkit.export` is always the function.
_API = {
    "distill": "leapkit.train",
    "load_student": "leapkit.run",
    "linear_cka": "leapkit.curriculum",
    "export": "leapkit.deploy.export",
    "bench": "leapkit.latency.bench",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'leapkit' has no attribute {name!r}")
