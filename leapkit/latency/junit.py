"""A bench report as JUnit XML, for the test views of CI systems (GitHub checks, GitLab, Jenkins).

    write_junit(report, path, require_measured) -> Path   ``leapkit bench --junit FILE``

One test suite per report, ``leapkit bench <target>``, and one test case per benched format, named by
its row label (``ONNX fp32``) in class ``leapkit.bench.<target>``. The checks are the ones that make
``leapkit bench`` exit 1, so that the file fails exactly when the command does:

- failure ``budget`` on the judged format when the verdict is FAIL (the verdict's reason gives the
  numbers), or UNCONFIRMED with ``--require-measured``; a case of its own, ``budget``, when no format ran;
- failure ``regression`` on each format slower than its baseline beyond ``--max-regression`` and the
  noise band (:mod:`leapkit.latency.regression`);
- skipped, with the reason, where nothing failed and the budget is UNCONFIRMED (timed away from the
  target), or the format did not run;
- with an energy budget (``--budget-mj`` or the target's), a case of its own, ``energy``: failure
  ``energy`` when the energy verdict is FAIL, or UNCONFIRMED with ``--require-measured``; skipped with
  the reason when it is UNCONFIRMED otherwise (no power sampled on the device); passed on PASS.

Each case's system-out holds its figures and its change against the baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from leapkit.errors import MissingDependency
from leapkit.latency.records import BenchReport, BenchResult, RowChange
from leapkit.records import atomic_write_bytes
from leapkit.tables import fmt

if TYPE_CHECKING:
    from junitparser import TestCase, TestSuite

BUDGET_CASE = "budget"
ENERGY_CASE = "energy"


def _budget_failure(report: BenchReport, require_measured: bool) -> str | None:
    """The budget check's failure message, or None when it did not fail."""
    if report.verdict == "FAIL":
        return f"budget FAIL on {report.target} (evidence {report.evidence}): {report.verdict_reason}"
    if report.verdict == "UNCONFIRMED" and require_measured:
        return (f"budget UNCONFIRMED on {report.target} and --require-measured is set: {report.evidence_reason}; "
                f"{report.verdict_reason}")
    return None


def _energy_case(report: BenchReport, classname: str, require_measured: bool) -> TestCase | None:
    """The energy budget's case (None without an energy budget): failed exactly when it fails the command."""
    from junitparser import Failure, Skipped, TestCase

    if report.energy_verdict is None:
        return None
    case = TestCase(ENERGY_CASE, classname)
    reason = report.energy_verdict_reason or ""
    if report.energy_verdict == "FAIL":
        case.result = [Failure(f"energy FAIL on {report.target} (evidence {report.evidence}): {reason}", "energy")]
    elif report.energy_verdict == "UNCONFIRMED" and require_measured:
        case.result = [Failure(f"energy UNCONFIRMED on {report.target} and --require-measured is set: {reason}",
                               "energy")]
    elif report.energy_verdict == "UNCONFIRMED":
        case.result = [Skipped(f"energy UNCONFIRMED on {report.target}: {reason}")]
    case.system_out = f"energy {report.energy_verdict}: {reason}"
    return case


def _figures(r: BenchResult, row: RowChange | None) -> str:
    """A format's figures in one line, and its change against the baseline."""
    text = (f"{r.label} ({r.runtime}, batch {r.batch}): p50 {fmt(r.p50_ms, '.3f')} ms, p90 {fmt(r.p90_ms, '.3f')} "
            f"ms, p99 {fmt(r.p99_ms, '.3f')} ms, mean {fmt(r.mean_ms, '.3f')} ms, {fmt(r.throughput, '.1f')} "
            f"images/s, cv {fmt(r.cv, '.3f')}, {fmt(r.iterations, 'd')} iterations, status {r.status}")
    if row is not None:
        text += f"; vs baseline: {row.cell()}"
    return text


def require_junitparser() -> None:
    """Check that junitparser is installed, before anything is benched.

    Raises:
        MissingDependency: it is not (the ``ci`` extra brings it).
    """
    try:
        import junitparser  # noqa: F401
    except ImportError as e:
        raise MissingDependency("junitparser", "ci", "--junit FILE") from e


def junit_suite(report: BenchReport, require_measured: bool = False) -> TestSuite:
    """The report as one JUnit test suite.

    Args:
        report: a written bench report (its ``baseline`` filled when compared).
        require_measured: an UNCONFIRMED verdict (latency or energy) fails its check, as it fails the command.
    """
    from junitparser import Failure, Skipped, TestCase, TestSuite

    suite = TestSuite(f"leapkit bench {report.target}")
    suite.timestamp = report.created
    suite.hostname = report.measured_on
    for name, value in (("target", report.target), ("evidence", report.evidence), ("verdict", report.verdict),
                        ("budget", f"{report.budget_stat} <= {report.budget_ms:g} ms"),
                        ("energy budget", f"{report.energy_budget_mj:g} mJ per inference"
                         if report.energy_budget_mj is not None else None),
                        ("baseline", report.baseline.path if report.baseline else None)):
        if value is not None:
            suite.add_property(name, value)
    classname = f"leapkit.bench.{report.target}"
    budget = _budget_failure(report, require_measured)
    for r in report.results:
        row = report.baseline.row(r) if report.baseline else None
        failures = []
        if budget and r.label == report.gated:
            failures.append(Failure(budget, "budget"))
        if row is not None and report.baseline and row.change == "regressed":
            allowed = report.baseline.max_regression_pct
            failures.append(Failure(f"regression: {row.describe(report.baseline.stat, allowed)}", "regression"))
        case = TestCase(r.label, classname)
        if failures:
            case.result = failures
        elif r.status != "ok":
            case.result = [Skipped(f"{r.label} did not run: {r.status}")]
        elif report.verdict == "UNCONFIRMED":
            case.result = [Skipped(f"budget UNCONFIRMED on {report.target}: {report.evidence_reason}; "
                                   f"{report.verdict_reason}")]
        case.system_out = _figures(r, row)
        suite.add_testcase(case)
    if budget and not any(r.label == report.gated for r in report.results):
        case = TestCase(BUDGET_CASE, classname)
        case.result = [Failure(budget, "budget")]
        suite.add_testcase(case)
    energy = _energy_case(report, classname, require_measured)
    if energy is not None:
        suite.add_testcase(energy)
    suite.update_statistics()
    return suite


def write_junit(report: BenchReport, path: str | Path, require_measured: bool = False) -> Path:
    """Write the report as JUnit XML to ``path`` (atomically; its folder is made).

    Args:
        report: the bench report.
        path: the XML file.
        require_measured: an UNCONFIRMED verdict (latency or energy) fails its check.

    Raises:
        MissingDependency: junitparser is not installed.
    """
    require_junitparser()
    from junitparser import JUnitXml

    xml = JUnitXml()
    xml.add_testsuite(junit_suite(report, require_measured))
    path = Path(path)
    atomic_write_bytes(path, xml.tostring())
    return path
