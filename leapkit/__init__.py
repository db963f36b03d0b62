"""leapkit: distil Vision Foundation Models into edge-sized ViTs with the LEAP curriculum."""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# The public API, imported on first use so that `import leapkit` (and the CLI) start fast.
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


def callable_stage(module_name: str) -> None:
    """Make a stage module callable as its function of the same name.

    ``leapkit.export`` and ``leapkit.bench`` name both a module and the API function. Importing
    the module binds ``leapkit.<stage>`` to it, hiding the lazily resolved function; a callable
    module keeps ``leapkit.export(...)`` working either way.
    """
    module = sys.modules[module_name]
    function = module_name.rsplit(".", 1)[1]

    class Stage(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(self, function)(*args, **kwargs)

    module.__class__ = Stage
