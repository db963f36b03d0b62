"""One trtexec log as timing runs: its performance summaries and the context each run printed.

A log may hold several runs: one per ``&&&& RUNNING`` banner, per trtexec command line pasted on its
own (a README), and per summary that repeats a section the current run already has. Each run's
figures come from its performance summary, in the format of TensorRT 8.x to 11.x (``Latency: min =
..., percentile(99%) = ...``) or of 7.x (``Host Latency`` / ``min: X ms (end to end Y ms)`` blocks).

What users paste is read too: a wrapper's tag before every line (``[INFO] [05/27/2023-...] [I] ...``),
indented lines (a log in a Markdown list), a bare summary without header, and ``grep -C`` excerpts,
whose ``--`` separators and cut headers leave statistics of an unknown section: a 7.x statistic is
only taken right after its section header, and a key is never read twice into one section.

Only lines logged at the info level (or with no level) count: verbose ``[V]`` lines repeat the metric
names in their explanations, and ``[TRT]`` lines are the library's own. A percentile the log does not
print stays None; a non-finite value (``nan``, ``inf``) and a throughput of 0 qps are recorded as None
with a note. The run's context (:mod:`leapkit.trtexec.context`): the version, from the banner (a
``TensorRT version:`` line never overwrites it), the device, the precision from the build flags, and
the batch from ``--shapes``, ``--batch`` or the printed options, with where it was read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from leapkit.errors import TrtexecError
from leapkit.records import Record
from leapkit.trtexec.context import COMMAND, batch_of, precision_of, precision_option, tensorrt_version, version_line
from leapkit.trtexec.exported import STAT_KEYS
from leapkit.trtexec.layers import NUM, LayerProfile, number, read_profile_table
from leapkit.types import Precision

__all__ = ["TrtexecRun", "no_summary_error", "precision_of", "read_log", "split_message", "tensorrt_version"]

_WRAPPER = re.compile(r"^\s*(?:>\s*)*(?:\[(?!TRT\])[A-Za-z]{2,}\]\s?)*")  # a quote, a harness's tag, indentation
_STAMP = re.compile(r"\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\] (?:\[[IVWEF]\]|\[\d\d/)")  # trtexec's own prefix
_PREFIX = re.compile(r"^(?:\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\] ?)*(?:\[(?P<level>[IVWEF])\] ?)?(?P<trt>\[TRT\] ?)?")
_BANNER = re.compile(r"^&&&& (?P<state>RUNNING|PASSED|FAILED) TensorRT\.trtexec(?: \[TensorRT v(?P<v>\d+)\])?"
                     r"(?: \[b\d+\])? # (?P<cmd>.*)$")
_STAT_LINE = re.compile(r"^(?P<metric>Latency|End-to-End Host Latency|Enqueue Time|H2D Latency|GPU Compute Time|"
                        r"D2H Latency): (?P<body>min = .*)$")
_STAT_ITEM = re.compile(rf"(?P<key>min|max|mean|median|percentile\((?P<p>[\d.]+)%\)) = (?P<v>{NUM}) ms", re.I)
_LEGACY_ITEM = re.compile(rf"^(?P<key>min|max|mean|median|percentile): (?P<v>{NUM}) ms(?: at (?P<p>[\d.]+)%)?"
                          rf"(?: \(end to end (?P<e2e>{NUM}) ms(?: at [\d.]+%)?\))?$", re.I)
_SCALARS = {  # message pattern (8.x-11.x | 7.x) -> run attribute
    re.compile(rf"^throughput: ({NUM}) qps$", re.I): "throughput_qps",
    re.compile(rf"^(?:Total Host Walltime|walltime): ({NUM}) s$", re.I): "walltime_s",
    re.compile(rf"^(?:Total GPU Compute Time|total compute time): ({NUM}) s$", re.I): "gpu_total_s",
}
_METRIC_KEYS = {"Latency": "latency", "GPU Compute Time": "gpu", "End-to-End Host Latency": "end_to_end",
                "Enqueue Time": "enqueue", "H2D Latency": "h2d", "D2H Latency": "d2h"}
_LEGACY_HEADERS = {"Host Latency": "latency", "Enqueue Time": "enqueue", "GPU Compute": "gpu"}  # 7.x sections
_OPTION = re.compile(r"^(?P<key>Precision|Load engine|Batch|Input inference shapes?): ?(?P<value>.*)$")
_CV = re.compile(rf"coefficient of variance = ({NUM})%")
GREP_SEPARATOR = "--"


@dataclass
class TrtexecRun(Record):
    """One trtexec timing run. Statistics are dicts over min, mean, p50, p90, p95, p99, max (None: not printed).

    Args:
        source: the file it was read from.
        tensorrt: TensorRT version ("8.6.3"), None when not printed (7.x prints none).
        device: trtexec's "Selected Device".
        precision: from the build flags (--int8/--best/--fp16, or a build without them: fp32), the printed
            build options, or the engine's sidecar or device.json; None when unknown (an engine loaded
            without either).
        batch: images per query; 1 when the files do not say (then ``batch_source`` is None).
        batch_source: where the batch was read (``--shapes``, ``--batch``, ``input binding``, a sibling
            file, leapkit's ``--batch``); None when nothing says it.
        label: what tells this run apart from the others of the same precision (``batch 4``, ``run 2 of 14``);
            None when nothing needs to.
        latency_ms: host latency (H2D + GPU compute + D2H).
        gpu_compute_ms: GPU compute time.
        throughput_qps: trtexec's throughput, in ``throughput_unit``; None when not printed or printed as 0.
        cv: GPU compute coefficient of variation as a fraction.
        iterations: timed queries.
        warnings: trtexec's own ``[W]`` lines (continuation lines joined).
        throughput_unit: ``images/s`` with implicit batch (``--batch``), else ``qps``.
        other_ms: further statistics: ``enqueue``, ``h2d``, ``d2h``, ``end_to_end``.
        walltime_s: trtexec's total host walltime.
        gpu_total_s: trtexec's total GPU compute time.
        warmup_queries: queries run during the warm-up.
        warmup_ms: the warm-up time.
        command: the trtexec command line.
        kind: ``summary`` (a log) or ``times`` (an --exportTimes file).
        truncated: the log ends inside this run's performance summary (before its closing total time line and
            any ``&&&& PASSED`` banner): the statistics after the cut are missing.
    """

    source: str
    tensorrt: str | None = None
    device: str | None = None
    precision: Precision | None = None
    batch: int = 1
    batch_source: str | None = None
    label: str | None = None
    latency_ms: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(STAT_KEYS))
    gpu_compute_ms: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(STAT_KEYS))
    throughput_qps: float | None = None
    cv: float | None = None
    iterations: int | None = None
    warnings: list[str] = field(default_factory=list)
    throughput_unit: Literal["qps", "images/s"] = "qps"
    other_ms: dict[str, dict[str, float | None]] = field(default_factory=dict)
    walltime_s: float | None = None
    gpu_total_s: float | None = None
    warmup_queries: int | None = None
    warmup_ms: float | None = None
    command: str | None = None
    kind: Literal["summary", "times"] = "summary"
    truncated: bool = False

    @property
    def has_latency(self) -> bool:
        """Whether the run printed a host latency (a GPU-compute-only excerpt does not)."""
        return any(v is not None for v in self.latency_ms.values())

    @property
    def has_gpu_compute(self) -> bool:
        return any(v is not None for v in self.gpu_compute_ms.values())


def split_message(line: str) -> tuple[str | None, bool, str]:
    """A log line's level (I, V, W, E, F or None), whether it is TensorRT's own (``[TRT]``), and its message.

    Whatever comes before trtexec's own prefix (a wrapper's tag, a logger's time stamp, a quote mark) and a
    wrapper's tag or indentation before a line without one (``[INFO] Throughput: ...``) are dropped.
    """
    stamp = _STAMP.search(line)
    line = line[stamp.start():] if stamp else line[_WRAPPER.match(line).end():]
    m = _PREFIX.match(line)
    return m["level"], m["trt"] is not None, line[m.end():]


@dataclass
class _Run:
    """A run being read: the public record plus what only the reader needs."""

    run: TrtexecRun
    options: dict[str, str] = field(default_factory=dict)  # the printed Precision, Load engine, Batch, shapes
    binding_batch: int | None = None
    pasted: bool = False  # its command line was pasted on its own, not printed by trtexec
    summary: bool = False
    failed: bool = False
    legacy_section: str | None = None
    seen: set[str] = field(default_factory=set)  # sections and scalars read: a second one starts a new run
    closed: bool = False  # its summary's last line (total GPU compute time) or a PASSED/FAILED banner was read

    def follow(self) -> _Run:
        """The next run printed in the same context (a second summary without a banner between)."""
        r = self.run
        return _Run(TrtexecRun(source=r.source, tensorrt=r.tensorrt, device=r.device, command=r.command),
                    options=dict(self.options), binding_batch=self.binding_batch)


class _LogReader:
    """Reads a log line by line into runs; see the module docstring for what counts."""

    def __init__(self, source: str):
        self.source = source
        self.runs: list[_Run] = [_Run(TrtexecRun(source=source))]
        self.notes: list[str] = []
        self.messages: list[str] = []

    @property
    def cur(self) -> _Run:
        return self.runs[-1]

    def new_run(self) -> None:
        if self.cur.summary or self.cur.run.command or self.cur.run.device:
            self.runs.append(_Run(TrtexecRun(source=self.source)))

    def feed(self, line: str) -> None:
        level, trt, message = split_message(line.rstrip("\r\n"))
        if m := _BANNER.match(message.rstrip()):
            self.banner(m)
            return
        self.messages.append(message)
        text = message.strip()
        if level == "W" and not trt:
            if message.startswith("  ") and self.cur.run.warnings:
                self.cur.run.warnings[-1] += " " + text
            else:
                self.cur.run.warnings.append(text.removeprefix("* "))
            if m := _CV.search(text):
                self.cur.run.cv = self.finite(m.group(1), "coefficient of variance", scale=0.01)
        if level not in ("I", None) or trt or not text:
            return
        if level is None and (m := COMMAND.match(text)):  # a command line pasted before its output
            self.new_run()
            self.cur.run.command, self.cur.pasted = m["cmd"], True
            return
        self.info(text)

    def banner(self, m: re.Match[str]) -> None:
        if m["state"] == "RUNNING":
            self.new_run()
        run = self.cur.run
        run.command = run.command or m["cmd"]
        if m["v"] and not run.tensorrt:
            run.tensorrt = tensorrt_version(m["v"])
        self.cur.failed = m["state"] == "FAILED"
        if m["state"] != "RUNNING":
            self.cur.closed = True
            self.new_run()

    def again(self, key: str) -> None:
        """Start the next run when the current one already has ``key``: a second summary in the same context."""
        if key in self.cur.seen and self.cur.summary:
            self.runs.append(self.cur.follow())
        self.cur.seen.add(key)
        self.cur.summary = True

    def info(self, text: str) -> None:
        if (item := _LEGACY_ITEM.match(text)) and self.cur.legacy_section:
            self.legacy_item(item)
            return
        self.cur.legacy_section = None  # any other line ends a 7.x section; a grep separator cuts it
        if text == GREP_SEPARATOR:
            return
        if text == "=== Performance summary ===":
            if self.cur.summary:
                self.runs.append(self.cur.follow())
            return
        run = self.cur.run
        if text in _LEGACY_HEADERS:
            self.again(_LEGACY_HEADERS[text])
            self.cur.legacy_section = text
        elif m := _STAT_LINE.match(text):
            section = _METRIC_KEYS[m["metric"]]
            self.again(section)
            stats: dict[str, float | None] = dict.fromkeys(STAT_KEYS)
            for item in _STAT_ITEM.finditer(m["body"]):
                self.put(stats, item["key"], item["p"], item["v"], m["metric"])
            self.stats(section).update(stats)
        elif m := re.match(rf"^Warmup completed (\d+) queries over ({NUM}) ms$", text):
            run.warmup_queries, run.warmup_ms = int(m.group(1)), number(m.group(2))
        elif m := re.match(r"^Timing trace has (\d+) queries over", text):
            run.iterations = int(m.group(1))
        elif m := re.match(r"^TensorRT version: (\S+)$", text):
            run.tensorrt = run.tensorrt or version_line(m.group(1))  # the banner's, when there is one
        elif m := re.match(r"^Selected Device: (.+)$", text):
            run.device = m.group(1).strip()
        elif m := _OPTION.match(text):
            self.cur.options[m["key"]] = m["value"].strip()
        elif m := re.match(r"^(?:Created input binding|Input binding) for \S+ with dimensions (\d+)x", text):
            self.cur.binding_batch = self.cur.binding_batch or int(m.group(1))
        else:
            self.scalar(text)

    def scalar(self, text: str) -> None:
        for pattern, attr in _SCALARS.items():
            if m := pattern.match(text):
                self.again(attr)
                self.cur.closed = self.cur.closed or attr == "gpu_total_s"  # the last line of every summary
                value = self.finite(m.group(1), text.split(":")[0])
                if attr == "throughput_qps" and value == 0:
                    self.notes.append(f"{self.source}: trtexec printed the throughput as 0 qps, which measures "
                                      "nothing; throughput not reported")
                    value = None
                setattr(self.cur.run, attr, value)
                return

    def legacy_item(self, m: re.Match[str]) -> None:
        header = self.cur.legacy_section
        assert header is not None
        self.put(self.stats(_LEGACY_HEADERS[header]), m["key"], m["p"], m["v"], header, once=True)
        if m["e2e"]:
            self.put(self.stats("end_to_end"), m["key"], m["p"], m["e2e"], "end to end", once=True)

    def stats(self, section: str) -> dict[str, float | None]:
        run = self.cur.run
        if section == "latency":
            return run.latency_ms
        if section == "gpu":
            return run.gpu_compute_ms
        return run.other_ms.setdefault(section, dict.fromkeys(STAT_KEYS))

    def put(self, stats: dict[str, float | None], key: str, p: str | None, value: str, metric: str,
            once: bool = False) -> None:
        key = key.lower()
        if key.startswith("percentile"):
            key = f"p{float(p):g}" if p else "p99"
        key = "p50" if key == "median" else key
        if key not in stats:
            return
        if once and stats[key] is not None:
            self.notes.append(f"{self.source}: a second {metric} {key} ({value} ms) in one section; the first "
                              f"({stats[key]:g} ms) is kept")
            return
        stats[key] = self.finite(value, f"{metric} {key}")

    def finite(self, token: str, what: str, scale: float = 1.0) -> float | None:
        value = number(token)
        if value is None:
            self.notes.append(f"{self.source}: trtexec printed {what} as {token}; recorded as null")
            return None
        return value * scale

    def finish(self) -> tuple[list[TrtexecRun], list[str]]:
        summaries = [i for i, r in enumerate(self.runs) if r.summary]
        runs = []
        for i, r in enumerate(self.runs):
            if not r.summary:
                if r.run.command and summaries and not r.pasted:
                    self.notes.append(f"{self.source}: run {i + 1} printed no performance summary; skipped")
                if summaries and r.run.warnings and not r.run.command:
                    # [W] goes to stderr: with 2>&1 it can land outside its run; keep it with the nearest summary
                    home = self.runs[max((j for j in summaries if j < i), default=summaries[0])].run
                    home.warnings += r.run.warnings
                    home.cv = home.cv if home.cv is not None else r.run.cv
                continue
            runs.append(self.context(r))
            if r.failed:
                self.notes.append(f"{self.source}: trtexec reported FAILED for run {i + 1}; its figures are kept")
        return runs, self.notes

    @staticmethod
    def context(r: _Run) -> TrtexecRun:
        """The run with its precision and batch, from its command line and printed options."""
        run = r.run
        run.truncated = not r.closed
        run.precision = precision_of(run.command) if run.command else None
        if run.precision is None and not run.command and not r.options.get("Load engine"):
            run.precision = precision_option(r.options.get("Precision", ""))  # the options of a build
        batch, source, implicit = batch_of(run.command, r.options)
        if batch is None and r.binding_batch:
            batch, source = r.binding_batch, "input binding"
        if batch is not None:
            run.batch, run.batch_source = batch, source
        if implicit:
            run.throughput_unit = "images/s"
            if run.iterations and run.batch > 1 and run.iterations % run.batch == 0:
                run.iterations //= run.batch  # trtexec counts images with implicit batch
        return run


def no_summary_error(source: str, text: str) -> TrtexecError:
    """The one-line error for a log with no performance summary, naming the likely cause."""
    if "=== Profile (" in text or "e2e network timing is not reported" in text:
        why = "a --dumpProfile run without --separateProfileRun?"
    elif "&&&& FAILED" in text:
        why = "trtexec FAILED before timing; see the log's [E] lines"
    else:
        why = "not a trtexec timing log?"
    return TrtexecError(f"{source} has no performance summary ({why}); rerun bench_engine.sh or pass the log of a "
                        "timing run")


def read_log(text: str, source: str) -> tuple[list[TrtexecRun], LayerProfile | None, list[str]]:
    """The runs of one trtexec log (empty when none printed a summary), its profile table, the reader's notes."""
    reader = _LogReader(source)
    for line in text.splitlines():
        reader.feed(line)
    runs, notes = reader.finish()
    return runs, read_profile_table(reader.messages, source), notes
