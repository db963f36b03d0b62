"""Option aliases shared by several commands."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

RunArg = Annotated[Optional[str], typer.Argument(help="Run directory (default: runs/latest).", show_default=False)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing output.")]
