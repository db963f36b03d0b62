"""Typed run records: each stage's result as a dataclass that saves to and loads from JSON.

A record's JSON is the file contract other tools read (summary.json, flops.json, eval.json,
export/<target>/manifest.json, bench/<target>.json), so field names are the JSON keys. Loading is
tolerant of keys a newer leapkit added (they are kept in ``extra`` and written back) and strict
about the keys the record declares: a missing required key is a RunError naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar, TypeVar, get_type_hints

from leapkit.errors import RunError
from leapkit.schema import Invalid, coerce

R = TypeVar("R", bound="Record")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over ``path``.

    Raises:
        OSError: the write failed (no space, no permission); its ``filename`` is ``path``, never the
            temporary file, which is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # name the file the user asked for, not the temporary one
        raise type(e)(e.errno, e.strerror, str(path)) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:  # a full disk fails the write itself, whose error names no file
        Path(tmp).unlink(missing_ok=True)
        raise type(e)(e.errno, e.strerror, str(path)) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); rerun the stage that writes it") from e


def _encode(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


@dataclasses.dataclass
class Record:
    """Base class of the run records. Subclasses are dataclasses whose fields are the JSON keys.

    ``FILE`` names the file inside its folder (``summary.json``); ``extra`` holds keys the class
    does not declare, so that a record written by another leapkit version survives a round trip.
    """

    FILE: ClassVar[str] = ""

    extra: dict[str, Any] = dataclasses.field(default_factory=dict, kw_only=True, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any], where: str = "") -> R:
        """The record from its JSON, every declared key checked against its annotation (:func:`coerce`).

        Args:
            data: the parsed JSON object.
            where: the dotted key of this record inside an enclosing one, for messages.

        Raises:
            RunError: not an object, a required key missing, or a value of the wrong type.
        """
        if not isinstance(data, dict):
            raise RunError(
                f"{cls.__name__}: expected a JSON object, got {type(data).__name__}; rerun the stage that writes it"
            )
        hints = get_type_hints(cls)
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra" and f.init}
        missing = [
            name for name, f in known.items()
            if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise RunError(
                f"{cls.__name__} lacks {', '.join(missing)}; it was written by another leapkit version: rerun the stage"
            )
        prefix = f"{where}." if where else ""
        try:
            kwargs = {name: coerce(data[name], hints[name], prefix + name, finite=False)
                      for name in known if name in data}
        except Invalid as e:
            raise RunError(f"{cls.__name__}: {e}; it was written by another tool or leapkit version: rerun the "
                           f"stage that writes it") from e
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def save(self, path: Path | None = None, folder: Path | None = None) -> Path:
        """Write atomically to ``path`` (or ``folder / FILE``); returns the path written."""
        target = path if path is not None else Path(folder or ".") / self.FILE
        write_json(target, self.to_dict())
        return target

    @classmethod
    def load(cls: type[R], path: Path) -> R:
        """Read a record; a folder means ``folder / FILE``.

        Raises:
            RunError: the file is missing, not JSON, or lacks a required key.
        """
        path = Path(path)
        if path.is_dir():
            path = path / cls.FILE
        if not path.is_file():
            raise RunError(f"{path} not found; run the stage that writes it first")
        record = cls.from_dict(read_json(path))
        return record

    @classmethod
    def load_optional(cls: type[R], path: Path) -> R | None:
        """Like :meth:`load`, but None when the file does not exist."""
        path = Path(path)
        target = path / cls.FILE if path.is_dir() else path
        return cls.load(target) if target.is_file() else None
