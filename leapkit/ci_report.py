"""Results where CI shows them: the GitHub Actions job summary.

GitHub Actions names a Markdown file in ``GITHUB_STEP_SUMMARY`` for each step; what a step appends to it
is shown on the run's summary page. ``leapkit bench`` appends its latency table there (and ``leapkit
export`` its variants table), the same :class:`leapkit.tables.Table` Markdown the report files hold.
Outside GitHub Actions the variable is unset and nothing is written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

STEP_SUMMARY = "GITHUB_STEP_SUMMARY"


def append_step_summary(markdown: str) -> Path | None:
    """Append ``markdown`` to the job summary GITHUB_STEP_SUMMARY names.

    A summary that cannot be written is a warning, not an error: the step's own result stands.

    Args:
        markdown: one or more Markdown blocks; a blank line separates it from what follows.

    Returns:
        The summary file, or None when GITHUB_STEP_SUMMARY is unset or the file could not be written.
    """
    target = os.environ.get(STEP_SUMMARY)
    if not target:
        return None
    path = Path(target)
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(markdown.rstrip("\n") + "\n\n")
    except OSError as e:
        log.warning("could not append to the job summary %s (%s)", path, e)
        return None
    return path
