"""The exception family. Every message says what is wrong and how to fix it, in one line."""

from __future__ import annotations

import errno

# Exit codes: 0 success, 1 a check failed, 2 bad usage or input, 3 an internal error (a bug),
# 130 interrupted after a checkpoint.
CHECK_FAILED_EXIT = 1
USAGE_EXIT = 2
INTERNAL_ERROR_EXIT = 3
ROOM_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
"""A full disk or quota: the user's to fix, even where the error names no file (a library writing its own)."""


class LeapkitError(Exception):
    """Base class: bad usage or bad input. The CLI prints the message and exits 2."""

    exit_code = USAGE_EXIT


class ConfigError(LeapkitError):
    """A recipe, profile or option value is invalid."""


class DataError(LeapkitError):
    """A data folder is missing, empty or unusable."""


class ModelError(LeapkitError):
    """A model name, weights file or model pair cannot be used."""


class RunError(LeapkitError):
    """A run directory is missing, incomplete or would be overwritten."""


class ExportError(LeapkitError):
    """An export cannot be produced for the requested target or precision."""


class TrtexecError(LeapkitError):
    """A trtexec log or JSON file cannot be read, or holds no timing figures."""


class MissingDependency(LeapkitError):
    """An optional package is needed; the message names the extra that brings it."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(f"{purpose} needs the '{package}' package: pip install 'leapkit[{extra}]'")
        self.package = package
        self.extra = extra


class CheckFailed(LeapkitError):
    """A check ran and failed (budget missed, parity failed). The CLI exits 1."""

    exit_code = CHECK_FAILED_EXIT


class TrainingDiverged(LeapkitError):
    """The loss became non-finite; the last good checkpoint is kept."""

    exit_code = CHECK_FAILED_EXIT


class Interrupted(LeapkitError):
    """Training stopped on SIGTERM/SIGINT after writing a checkpoint."""

    exit_code = 130
