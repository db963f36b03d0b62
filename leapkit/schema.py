"""Reading YAML (or ``--set``) values into dataclass fields, collecting every problem at once.

Recipes (:mod:`leapkit.config`) and target profiles (:mod:`leapkit.profiles`) are both read through
:func:`read_fields`: each key is checked against the dataclass annotation of the field it names
(unknown keys get a did-you-mean suggestion), converted where that is lossless, and every problem
becomes one line naming the key and what would be valid. Rules about the values themselves
(ranges, cross-field constraints) are checked afterwards by the caller.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args, get_origin, get_type_hints


class Invalid(ValueError):
    """A value does not fit its annotation; the message is one line naming the key ``where``."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where} {message}")
        self.where = where


def did_you_mean(key: str, known: Iterable[str], prefix: str = "") -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or an empty string when none is close."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def unknown(what: str, key: str, known: Iterable[str], prefix: str = "") -> str:
    """The line for an unknown key or section: a suggestion when one is close, else the known names."""
    known = list(known)
    hint = did_you_mean(key, known, prefix)
    if hint:
        return f"unknown {what} '{prefix}{key}'{hint}"
    return f"unknown {what} '{prefix}{key}'; known: {', '.join(known)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def describe(typ: Any) -> str:
    """What a value of annotation ``typ`` looks like, for messages (``an integer``, ``one of a|b``)."""
    args, origin = get_args(typ), get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        text = " or ".join(describe(a) for a in inner)
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return f"one of {'|'.join(map(str, args))}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0]).removeprefix('one of ')}"
        return f"a list of {len(args)} numbers"
    if origin is dict:
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string (quote numbers in YAML)"}
    return names.get(typ, getattr(typ, "__name__", str(typ)))


def coerce(value: Any, typ: Any, where: str, finite: bool = True) -> Any:
    """``value`` checked against the annotation ``typ`` and converted where that is lossless.

    The one decoder of leapkit's YAML (recipes, target profiles) and JSON (run records): integers
    become floats for ``float`` fields, lists become tuples for ``tuple`` fields, mappings become
    the record a field names (its ``from_dict``; other dataclass sections are the caller's); nothing else is
    converted (``"3"`` is not an integer, ``1`` is not ``true``, ``6.2`` is not a string).

    Args:
        value: the value as YAML, ``--set`` or JSON gave it.
        typ: the field's annotation: bool, int, float, str, a Literal, ``X | None``, a record,
            ``list[X]``, ``tuple[float, float]``, ``tuple[X, ...]``, ``dict[str, X]`` or Any.
        where: the key's dotted name, for the message.
        finite: reject nan and inf (config values); records keep them (a nan metric is data).

    Raises:
        Invalid: the value does not fit; the message names ``where`` and what would be valid.
    """
    if typ is Any:
        return value
    args, origin = get_args(typ), get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise Invalid(where, "cannot be null")
        for arg in args:
            if arg is not type(None):
                try:
                    return coerce(value, arg, where, finite)
                except Invalid as e:
                    if e.where != where:  # an item inside the value: its own message is more precise
                        raise
        raise Invalid(where, f"must be {describe(typ)}, got {value!r}")
    if value is None:
        raise Invalid(where, "cannot be null")
    if origin is Literal:
        if value not in args:
            raise Invalid(where, f"must be {describe(typ)}, got {value!r}")
        return value
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        if not isinstance(value, (list, tuple)):
            raise Invalid(where, f"must be {describe(typ)}, got {value!r}")
        items = [coerce(v, args[0] if args else Any, f"{where}[{i}]", finite) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise Invalid(where, f"must be {describe(typ)}, got {value!r}")
        return tuple(coerce(v, a, f"{where}[{i}]", finite) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise Invalid(where, f"must be {describe(typ)}, got {value!r}")
        item = args[1] if len(args) == 2 else Any
        return {k: coerce(v, item, f"{where}.{k}", finite) for k, v in value.items()}
    if isinstance(typ, type) and hasattr(typ, "from_dict"):  # a record inside a record
        if not isinstance(value, Mapping):
            raise Invalid(where, f"must be a mapping ({typ.__name__}), got {value!r}")
        return typ.from_dict(value, where=where)
    if typ is bool:
        if not isinstance(value, bool):
            raise Invalid(where, f"must be true or false, got {value!r}")
        return value
    if typ in (int, float):
        ok = _is_number(value) and (math.isfinite(value) or (not finite and typ is float)) and (
            typ is float or float(value).is_integer())
        if not ok:
            raise Invalid(where, f"must be {describe(typ)}, got {value!r}")
        return typ(value)
    if typ is str:
        if not isinstance(value, str):
            raise Invalid(where, f"must be {describe(typ)}, got {value!r}")
        return value
    return value


def field_types(cls: type) -> dict[str, Any]:
    """The annotations of a dataclass's init fields, by name."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def read_fields(
    data: Mapping[str, Any], cls: type, prefix: str = "", exclude: Iterable[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """The keys of ``data`` checked against the fields of the dataclass ``cls``.

    Args:
        data: a YAML mapping (one config section, or a whole target profile).
        cls: the dataclass whose fields the keys name.
        prefix: prepended to key names in messages (``train.``).
        exclude: fields that may not be set from ``data``.

    Returns:
        The converted values of the keys that fit, and one line per problem: unknown keys (with a
        did-you-mean suggestion) and values of the wrong type.
    """
    hints = {k: v for k, v in field_types(cls).items() if k not in set(exclude)}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in data.items():
        if key not in hints:
            problems.append(unknown("key", str(key), hints, prefix))
            continue
        try:
            values[key] = coerce(value, hints[key], f"{prefix}{key}")
        except Invalid as e:
            problems.append(str(e))
    return values, problems


def missing_fields(data: Mapping[str, Any], cls: type, prefix: str = "", exclude: Iterable[str] = ()) -> list[str]:
    """A line for each field of ``cls`` without a default that ``data`` does not set."""
    return [
        f"missing key '{prefix}{f.name}'"
        for f in dataclasses.fields(cls)
        if f.init and f.name not in set(exclude) and f.name not in data
        and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
