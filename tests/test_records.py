"""Run records: round trips, nested records, unknown keys kept, clear errors for bad files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from leapkit.errors import RunError
from leapkit.records import Record


@dataclass
class Part(Record):
    name: str
    size: int = 0


@dataclass
class Whole(Record):
    FILE: ClassVar[str] = "whole.json"

    title: str
    parts: list[Part] = field(default_factory=list)
    main: Part | None = None
    by_name: dict[str, Part] = field(default_factory=dict)


def test_round_trip_rebuilds_nested_records(tmp_path):
    whole = Whole("w", parts=[Part("a", 1), Part("b")], main=Part("m", 3), by_name={"x": Part("x", 9)})
    path = whole.save(folder=tmp_path)
    assert path == tmp_path / "whole.json"
    back = Whole.load(tmp_path)
    assert back == whole
    assert isinstance(back.parts[0], Part) and isinstance(back.main, Part) and isinstance(back.by_name["x"], Part)


def test_unknown_keys_survive_a_round_trip(tmp_path):
    (tmp_path / "whole.json").write_text(json.dumps({"title": "t", "added_later": {"k": 1}}))
    back = Whole.load(tmp_path / "whole.json")
    assert back.extra == {"added_later": {"k": 1}}
    back.save(folder=tmp_path)
    assert json.loads((tmp_path / "whole.json").read_text())["added_later"] == {"k": 1}


def test_missing_required_key_names_it(tmp_path):
    (tmp_path / "whole.json").write_text(json.dumps({"parts": []}))
    with pytest.raises(RunError, match="Whole lacks title"):
        Whole.load(tmp_path)


def test_missing_and_broken_files_are_run_errors(tmp_path):
    with pytest.raises(RunError, match="not found; run the stage that writes it first"):
        Whole.load(tmp_path)
    assert Whole.load_optional(tmp_path) is None
    (tmp_path / "whole.json").write_text("{not json")
    with pytest.raises(RunError, match="is not valid JSON"):
        Whole.load(tmp_path)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    Whole("w").save(folder=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whole.json"]
