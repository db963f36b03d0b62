"""bench/<target>.md and the terminal's tables: a BenchReport rendered, and written with its JSON.

The latency and method tables are built once as :class:`leapkit.tables.Table`; the Markdown file,
``leapkit bench``'s terminal output, the CI job summary and ``leapkit report`` all render those same tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leapkit.device.tegrastats import TIMING_RUN
from leapkit.latency.cost import ROOFLINE_FORMULA
from leapkit.latency.records import BenchReport, BenchResult
from leapkit.latency.timing import PROBE_S, Method
from leapkit.records import atomic_write_bytes
from leapkit.tables import Table, fmt
from leapkit.types import STATS

LATENCY_COLUMNS = ("format", "precision", "runtime", "status", "size MB", "accuracy %", "p50 ms", "p99 ms", "FPS",
                   "lower bound ms", "budget", "verdict")
METHOD_COLUMNS = ("format", "threads", "iterations", "min ms", "mean ms", "p90 ms", "p95 ms", "max ms", "cv",
                  "process peak RSS MB", "achieved TFLOP/s at p50", "bound by")
BASELINE_COLUMN = "vs baseline"
PREDICTED_COLUMN = "predicted ms (range)"
RATIO_COLUMN = "measured / predicted"
TRTEXEC_NOTE = ("Latency is trtexec's host latency per query (H2D copy + GPU compute + D2H copy), or its GPU compute "
                "time where a result says so; FPS is images/s: trtexec's queries per second (the JSON's qps) times "
                "the batch (implicit-batch runs already count images).")


def result_verdict(r: BenchResult, report: BenchReport) -> str:
    """One result against the budget: PASS/FAIL on the target's own figures, else what its lower bound says."""
    if report.evidence == "estimated":
        over = r.roofline is not None and r.roofline.estimate_ms > report.budget_ms
        return "FAIL (lower bound)" if over else "unconfirmed"
    if r.status != "ok":
        return "-"
    if r.budget_ok is None:
        return "not judged"
    return "PASS" if r.budget_ok and not r.export_failed else "FAIL"


def latency_title(report: BenchReport) -> str:
    """Where the figures come from, as the latency table's title."""
    if report.evidence == "estimated":
        return f"Latency measured on {report.measured_on}, not on {report.target}; lower bound for {report.target}"
    if report.evidence == "imported":
        return f"Latency on {report.target}, imported from trtexec ({report.measured_on})"
    return f"Latency on {report.target}, measured on {report.measured_on}"


def prediction_columns(report: BenchReport) -> tuple[str, ...]:
    """The prediction column when a result has one, and measured over predicted on the target's own figures."""
    if not any(r.predicted_ms is not None for r in report.results):
        return ()
    return (PREDICTED_COLUMN, RATIO_COLUMN) if report.judged_here else (PREDICTED_COLUMN,)


def prediction_caption(report: BenchReport) -> str:
    """What the prediction column is, or an empty string without predictions."""
    source = next((r.prediction_source for r in report.results if r.prediction_source), None)
    if source is None:
        return ""
    return (f"{PREDICTED_COLUMN}: the latency model of {report.target} ({source}), a forecast with its range for the "
            f"target, not a measurement; it never changes the verdict.")


def predicted_cell(r: BenchResult) -> str:
    if r.predicted_ms is None or not r.predicted_range_ms:
        return "-"
    low, high = r.predicted_range_ms
    return f"{r.predicted_ms:.3g} ({low:.3g}-{high:.3g})"


def fps_cell(r: BenchResult) -> str:
    """Images/s; "not reported" for a run that ran but printed no throughput (or printed 0 qps)."""
    return "not reported" if r.throughput is None and r.status == "ok" and r.runtime == "tensorrt" \
        else fmt(r.throughput, ".1f")


def latency_table(report: BenchReport) -> Table:
    """One row per benched format: latency, size, accuracy, lower bound and prediction on the target and verdict,
    and the change against the baseline when there is one."""
    at = LATENCY_COLUMNS.index("lower bound ms") + 1
    predictions = prediction_columns(report)
    columns = (*LATENCY_COLUMNS[:at], *predictions, *LATENCY_COLUMNS[at:],
               *((BASELINE_COLUMN,) if report.baseline else ()))
    table = Table.of(*columns, title=latency_title(report), caption=prediction_caption(report),
                     right=("size MB", "accuracy %", "p50 ms", "p99 ms", "FPS", "lower bound ms", *predictions))
    for c in table.columns:
        c.no_wrap = c.title in ("format", "budget", BASELINE_COLUMN)
    for r in report.results:
        status = r.status.split(":")[0]
        if r.export_status != "ok":
            status += f", export {r.export_status.split(':')[0]}"
        verdict = result_verdict(r, report)
        cells = [r.label, r.precision, r.runtime, status, fmt(r.size_mb), fmt(r.accuracy, ".1f"), fmt(r.p50_ms, ".3f"),
                 fmt(r.p99_ms, ".3f"), fps_cell(r),
                 fmt(r.roofline.estimate_ms if r.roofline else None, ".4g"),
                 *(predicted_cell(r), fmt(r.measured_over_predicted, ".2f"))[:len(predictions)],
                 f"{report.budget_stat} <= {report.budget_ms:g} ms", verdict]
        change = report.baseline.row(r) if report.baseline else None
        if report.baseline:
            cells.append(change.cell() if change else "new")
        regressed = change is not None and change.change == "regressed"
        table.add(*cells, style="red" if regressed else {"PASS": "green", "FAIL": "red",
                                                          "FAIL (lower bound)": "red"}.get(verdict))
    return table


def gpu_compute_table(report: BenchReport) -> Table | None:
    """trtexec's GPU compute time per result (None when no result has it)."""
    rows = [r for r in report.results if r.gpu_compute_ms]
    if not rows:
        return None
    table = Table.of("format", "batch", *(f"{s} ms" for s in STATS), title="GPU compute time (trtexec)",
                     right=tuple(f"{s} ms" for s in STATS))
    for r in rows:
        assert r.gpu_compute_ms is not None
        table.add(r.label, fmt(r.batch, "d"), *(fmt(r.gpu_compute_ms.get(s), ".3f") for s in STATS))
    return table


def power_table(report: BenchReport) -> Table | None:
    """The power tegrastats sampled during each result's timing run, and energy per inference (None without any)."""
    rows = [r for r in report.results if r.power is not None]
    if not rows:
        return None
    table = Table.of("format", "samples", "board W mean", "peak W", "idle W", "energy mJ", "above idle mJ", "GPU %",
                     "GPU MHz", "EMC MHz", "rails mean W", "skipped lines",
                     title="Power during the timing run (tegrastats)",
                     caption="energy per inference = mean board power x mean latency / batch; above idle: the mean "
                             "minus the idle baseline sampled before the run",
                     right=("samples", "board W mean", "peak W", "idle W", "energy mJ", "above idle mJ", "GPU %",
                            "GPU MHz", "EMC MHz", "skipped lines"))
    for r in rows:
        p = r.power
        assert p is not None
        rails = ", ".join(f"{name} {w:.2f}" for name, w in p.rails_mean_w.items()) or "-"
        samples = f"{p.samples}" if p.window == TIMING_RUN else f"{p.samples} ({p.window})"
        table.add(r.label, samples, fmt(p.mean_w), fmt(p.peak_w),
                  f"{fmt(p.idle_w)} ({p.idle_samples})" if p.idle_w is not None else "-", fmt(r.energy_mj, ".4g"),
                  fmt(r.energy_above_idle_mj, ".4g"), fmt(p.gpu_util_pct, ".0f"), fmt(p.gpu_freq_mhz, ".0f"),
                  fmt(p.emc_freq_mhz, ".0f"), rails, fmt(p.lines_skipped, "d"))
    return table


def energy_sentence(report: BenchReport) -> str | None:
    """The energy verdict in Markdown; None without an energy budget."""
    if report.energy_verdict is None:
        return None
    return (f"**Energy: {report.energy_verdict}** ({report.energy_verdict_reason}); budget "
            f"{report.energy_budget_mj:g} mJ per inference from {report.energy_budget_source}, judged on the board's "
            f"whole draw.")


def method_table(report: BenchReport) -> Table:
    """One row per benched format: threads, iterations, the full statistics, memory and achieved throughput."""
    table = Table.of(*METHOD_COLUMNS, right=METHOD_COLUMNS[2:-1])
    for r in report.results:
        probe = r.thread_probe_p50_ms
        threads = f"{r.threads}"
        if probe:
            threads += " (" + ", ".join(f"{n}: {ms:.3f} ms" for n, ms in probe.items()) + ")"
        table.add(
            r.label, threads, fmt(r.iterations, "d"), fmt(r.min_ms, ".3f"), fmt(r.mean_ms, ".3f"), fmt(r.p90_ms, ".3f"),
            fmt(r.p95_ms, ".3f"), fmt(r.max_ms, ".3f"), fmt(r.cv, ".3f"), fmt(r.peak_rss_mb, ".0f"),
            fmt(r.achieved_tflops, ".4f"), r.roofline.bound if r.roofline else "-",
        )
    return table


def method_sentence(m: Method | None) -> str:
    """How every format was timed, in one sentence (``None``: timed by trtexec on the device)."""
    if m is None:
        return f"Timed by trtexec on the device. {TRTEXEC_NOTE}"
    if m.iterations:
        runs = f"{m.iterations} iterations"
    else:
        runs = f"{m.duration_s:g} s (at least {m.min_iterations} iterations)"
    if m.thread_candidates:
        threads = (f"CPU threads chosen per format: each of {', '.join(map(str, m.thread_candidates))} timed for "
                   f"{PROBE_S:g} s (p50 in brackets), the fastest measured")
    else:
        threads = f"{m.threads} CPU threads"
    return f"Warm-up {m.warmup_s:g} s, then {runs}; {threads}; timer: {m.timer}."


def _evidence_sentence(report: BenchReport) -> str:
    if report.evidence == "estimated":
        return (f"Evidence: **estimated** ({report.evidence_reason}). These timings are not judged against the "
                f"budget of {report.target}; the lower bound column is for {report.target}: {ROOFLINE_FORMULA}.")
    if report.evidence == "imported":
        return f"Evidence: **imported** from the target's own trtexec output ({report.evidence_reason})."
    return (f"Evidence: **measured** on the target ({report.evidence_reason}), one synchronous inference per sample. "
            f"The lower bound column: {ROOFLINE_FORMULA}.")


def _environment_lines(env: dict[str, Any]) -> list[str]:
    """The machine the figures come from: this host's fingerprint, or the device's for trtexec figures."""
    if env.get("source") == "trtexec":
        lines = [f"- Device: {env.get('device') or 'not printed'}; TensorRT {env.get('tensorrt') or 'not printed'}"
                 + (f"; host {env['host']}" if env.get("host") else "")]
        fingerprint = env.get("fingerprint") or {}
        if fingerprint:
            lines.append("- Fingerprint: " + ", ".join(f"{k} {v}" for k, v in fingerprint.items() if v is not None))
        lines.append(f"- Files: {', '.join(env.get('sources') or [])}")
        return lines
    gpu = env.get("gpu") or {}
    flags = ", ".join(env.get("cpu_flags") or []) or "no SIMD flags read"
    lines = [
        f"- Host: {env.get('host')}" + (f", {env['device_model']}" if env.get("device_model") else ""),
        f"- CPU: {env['cpu']} ({env['cpu_cores']} cores, {env.get('cpu_affinity')} usable; {flags}); "
        f"load average {fmt(env.get('load_avg_1m'), '.1f')}",
        f"- GPU: {gpu.get('name', 'none')}" + (f", driver {gpu.get('driver')}, CUDA {gpu.get('cuda')}" if gpu else ""),
        f"- torch {env['torch']}, onnxruntime {env.get('onnxruntime')}, "
        f"openvino {env.get('openvino') or 'not installed'}, tensorrt {env.get('tensorrt') or 'not installed'}, "
        f"leapkit {env['leapkit']}; "
        f"{env['os']}, Python {env['python']}",
    ]
    if env.get("jetson"):
        j = env["jetson"]
        lines.append(f"- Jetson: {j.get('model')}, {j.get('l4t')}, power mode {j.get('power_mode')} "
                     f"(id {j.get('power_mode_id')}), GPU {j.get('gpu_freq_mhz')} MHz")
    return lines


def baseline_sentence(report: BenchReport) -> str | None:
    """What the "vs baseline" column compares and how it came out, in Markdown; None without a baseline."""
    c = report.baseline
    if c is None:
        return None
    return (f"**Against the baseline** `{c.path}` ({c.evidence}, {c.created}): {c.stat} of each format; a slowdown "
            f"beyond {c.max_regression_pct:g}% and beyond the noise band ({c.noise_k:g} standard errors of the "
            f"difference, from both runs' cv and iterations) fails. {c.counts().capitalize()}.")


def _head(report: BenchReport) -> list[str]:
    """The latency table, the verdict and the comparison with the baseline: what CI summaries show."""
    lines = [
        f"{latency_title(report)}:",
        "",
        latency_table(report).to_markdown(),
        "",
        f"**Verdict: {report.verdict}** ({report.verdict_reason}); budget {report.budget_stat} <= "
        f"{report.budget_ms:g} ms from {report.budget_source}.",
    ]
    if report.choice:
        lines += ["", f"**Judged:** {report.choice}."]
    energy = energy_sentence(report)
    if energy:
        lines += ["", energy]
    comparison = baseline_sentence(report)
    if comparison and report.baseline:
        lines += ["", comparison, *[f"- {n}" for n in report.baseline.notes]]
    return lines


def summary_markdown(report: BenchReport) -> str:
    """The latency table, verdict, evidence and baseline comparison under a heading: the CI job summary."""
    lines = [f"### leapkit bench {report.target}: {report.verdict}", "", *_head(report), "",
             _evidence_sentence(report)]
    if report.warnings:
        lines += ["", "Warnings:", *[f"- {w}" for w in report.warnings]]
    return "\n".join(lines) + "\n"


def render_markdown(report: BenchReport) -> str:
    """bench/<target>.md: the latency table, evidence and verdict, the method, the environment and the report's
    extra sections (trtexec's per-layer profile)."""
    shape = f", input {'x'.join(map(str, report.input_shape))}" if report.input_shape else ""
    lines = [
        f"# Latency on {report.target}",
        "",
        f"{report.target_description}. Model: `{report.model}`{shape}.",
        "",
        *_head(report),
        "",
        _evidence_sentence(report),
    ]
    if report.warnings:
        lines += ["", "Warnings:", *[f"- {w}" for w in report.warnings]]
    lines += ["", "## Method", "", method_sentence(report.method), "", method_table(report).to_markdown()]
    timed = [f"- {r.label}: {r.timing}" for r in report.results if r.timing]
    if timed:
        lines += ["", "What each GPU figure includes:", "", *timed]
    gpu_compute = gpu_compute_table(report)
    if gpu_compute is not None:
        lines += ["", f"{gpu_compute.title}:", "", gpu_compute.to_markdown()]
    power = power_table(report)
    if power is not None:
        lines += ["", "## Power", "", f"{power.title}:", "", power.to_markdown()]
    lines += ["", "## Environment", "", *_environment_lines(report.environment)]
    for section in report.sections:
        lines += ["", section]
    return "\n".join(lines) + "\n"


def write_bench_report(report: BenchReport, path: Path | None = None, sections: Sequence[str] | None = None) -> None:
    """Write bench/<target>.json and .md (at ``path``, else where the report was last written).

    Args:
        report: the report.
        path: the JSON file; the Markdown goes beside it.
        sections: Markdown sections appended to the .md (the per-layer profile of trtexec figures); they are
            kept in ``report.sections``, so that writing the report again keeps them.
    """
    report.json_path = Path(path) if path is not None else report.json_path
    assert report.json_path is not None, "a report is written to a path"
    if sections is not None:
        report.sections = list(sections)
    report.save(report.json_path)
    atomic_write_bytes(report.json_path.with_suffix(".md"), render_markdown(report).encode())
