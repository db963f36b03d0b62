"""Progress of an export: a rich bar on stderr (when asked for) and a debug log line per step."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class Steps:
    """Counts the steps of a long job; ``with Steps(total, enabled) as steps: steps.step(text) ... steps.done()``."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Steps:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            console = Console(stderr=True)
            if not console.is_terminal:  # a log file or CI: a bar draws nothing there but a stray blank line
                return self
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=console, transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("export", total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def step(self, text: str) -> None:
        """Announce the step that starts now."""
        log.debug(text)
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def done(self) -> None:
        """Count the current step as finished."""
        if self._progress is not None:
            self._progress.advance(self._task)
