"""Where leapkit may write: checked before the work that would end in the write, so that a folder the user
cannot write to costs one line and exit 2, not an hour of work and a traceback."""

from __future__ import annotations

import os
from pathlib import Path

from leapkit.errors import LeapkitError


class NotWritable(LeapkitError):
    """A file or folder leapkit must write to is not writable (exit 2)."""


def nearest_existing(path: Path) -> Path:
    """``path`` itself when it exists, else its closest existing ancestor (where a new folder would be made)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def require_writable(path: str | Path, what: str, fix: str = "pass a folder you can write to") -> None:
    """Raise NotWritable unless ``path`` (a folder, made if missing) can be created or written into.

    Args:
        path: the folder leapkit will write into; it need not exist yet.
        what: what would be written there, for the message ("the run", "--junit").
        fix: how to get out of it, for the message.
    """
    folder = nearest_existing(Path(path))
    if not folder.is_dir():
        raise NotWritable(f"cannot write {what} into {path}: {folder} is a file, not a folder; {fix}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise NotWritable(f"cannot write {what} into {path}: {folder} is not writable (permission denied); {fix}")


def require_writable_file(path: str | Path, what: str, fix: str = "pass a path you can write to") -> None:
    """Raise NotWritable unless the file ``path`` can be (re)written: its folder writable, the file itself too."""
    path = Path(path)
    if path.is_dir():
        raise NotWritable(f"cannot write {what} to {path}: it is a folder; {fix}")
    require_writable(path.parent, what, fix)
