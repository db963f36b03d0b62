"""leapkit.ci_report: the GitHub Actions job summary."""

from __future__ import annotations

import logging

from leapkit.ci_report import STEP_SUMMARY, append_step_summary


def test_outside_github_actions_nothing_is_written(monkeypatch, tmp_path):
    monkeypatch.delenv(STEP_SUMMARY, raising=False)
    assert append_step_summary("| a |\n|---|\n| 1 |") is None
    assert list(tmp_path.iterdir()) == []


def test_each_block_is_appended_after_a_blank_line(monkeypatch, tmp_path):
    summary = tmp_path / "step_summary.md"
    summary.write_text("## Tests\n\n")
    monkeypatch.setenv(STEP_SUMMARY, str(summary))
    assert append_step_summary("### leapkit bench x86-cpu: PASS\n\n| a |\n|---|\n| 1 |\n\n\n") == summary
    assert append_step_summary("### leapkit export x86-cpu") == summary
    assert summary.read_text() == ("## Tests\n\n### leapkit bench x86-cpu: PASS\n\n| a |\n|---|\n| 1 |\n\n"
                                   "### leapkit export x86-cpu\n\n")


def test_a_summary_that_cannot_be_written_is_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(STEP_SUMMARY, str(tmp_path / "missing" / "summary.md"))
    with caplog.at_level(logging.WARNING):
        assert append_step_summary("text") is None
    assert "could not append to the job summary" in caplog.text and str(tmp_path / "missing") in caplog.text
