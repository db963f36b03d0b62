"""Helpers shared by the test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import sys

import pytest

from leapkit.cli.main import main


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the real `leapkit` entry point with ``args``; returns its exit code and its stderr."""
    monkeypatch.setattr(sys, "argv", ["leapkit", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err
