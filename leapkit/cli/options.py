"""Option aliases shared by several commands."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

RunArg = Annotated[Optional[str], typer.Argument(help="Run directory (default: runs/latest).", show_default=False)]
Target = Annotated[str, typer.Option("--target", "-t", help="Target profile name, or a family such as 'jetson'.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing output.")]
