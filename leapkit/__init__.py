"""leapkit: distil Vision Foundation Models into edge-sized ViTs with the LEAP curriculum."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public API, imported lazily so that `import leapkit` stays cheap for the CLI.
_API = {
    "distill": "leapkit.train",
    "load_student": "leapkit.run",
    "linear_cka": "leapkit.curriculum",
    "export": "leapkit.export",
    "bench": "leapkit.bench",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'leapkit' has no attribute {name!r}")
