"""The export folder: built aside in ``.<target>.tmp-<pid>``, swapped in whole, losing nothing others put there.

    tmp = build_folder(final)     # after removing the tmp folders of exports that were killed
    ...write into tmp...
    kept = swap_in(tmp, final)    # the old export goes; what leapkit did not write in it moves to kept

An export folder also holds what leapkit did not write: the ``results/`` the device's check and bench
scripts wrote, copied back as the bundle's README says, or engines built there. ``--overwrite`` replaces
only what the old folder's manifest lists; the rest moves to ``<target>.kept-<time>/`` beside it.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
from pathlib import Path

from leapkit.deploy.manifest import MANIFEST

log = logging.getLogger(__name__)


def tmp_folder(final: Path, pid: int | None = None) -> Path:
    """Where the export for ``final`` is built before it is swapped in (one per process)."""
    return final.with_name(f".{final.name}.tmp-{os.getpid() if pid is None else pid}")


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal exists too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(final: Path) -> list[Path]:
    """Remove the tmp folders that killed exports for ``final`` left behind; returns them.

    Only folders named as :func:`tmp_folder` names them, whose process is gone: an export running
    now for the same target keeps its folder.
    """
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.tmp-(\d+)$")
    removed: list[Path] = []
    if not final.parent.is_dir():
        return removed
    for path in sorted(final.parent.iterdir()):
        match = pattern.match(path.name)
        if match and path.is_dir() and not path.is_symlink() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)  # best effort: a folder that will not go must not stop the export
            removed += [] if path.exists() else [path]
    if removed:
        log.info("removed %s, left by an export that was killed", ", ".join(p.name for p in removed))
    return removed


def build_folder(final: Path) -> Path:
    """A fresh, empty tmp folder to build the export for ``final`` in (stale ones removed first)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final)
    tmp = tmp_folder(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def written_by_leapkit(folder: Path) -> set[str]:
    """The names in an export folder that leapkit wrote: its manifest and the files the manifest lists."""
    try:
        files = json.loads((folder / MANIFEST).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return set()  # no readable manifest: nothing in the folder is known to be leapkit's
    return {MANIFEST, *files} if isinstance(files, dict) else set()


def swap_in(tmp: Path, final: Path) -> Path | None:
    """Replace ``final`` by the complete folder ``tmp``; returns the folder that keeps what leapkit did not write.

    The old export is removed only after the new one is in place, and only what its manifest lists:
    anything else in it (the device's ``results/``, engines built on the device) moves to
    ``<final>.kept-<time>/``, with one log line. A symlink at ``final`` is replaced, never what it points at.
    """
    if final.is_symlink():
        final.unlink()
        os.replace(tmp, final)
        return None
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if not old.exists():
        return None
    kept = _keep_foreign(old, final)
    shutil.rmtree(old)
    return kept


def _keep_foreign(old: Path, final: Path) -> Path | None:
    """Move what leapkit did not write out of the old export ``old`` into a ``kept`` folder beside ``final``."""
    ours = written_by_leapkit(old)
    foreign = sorted(p for p in old.iterdir() if p.name not in ours)
    if not foreign:
        return None
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    kept = final.with_name(f"{final.name}.kept-{stamp}")
    n = 1
    while kept.exists():
        n += 1
        kept = final.with_name(f"{final.name}.kept-{stamp}-{n}")
    kept.mkdir()
    for path in foreign:
        os.replace(path, kept / path.name)
    names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in (kept / f.name for f in foreign))
    log.warning("kept what leapkit did not write in the old export (%s): moved to %s (it belongs to the export "
                "this one replaced)", names, kept)
    return kept
