"""One trtexec log as timing runs: its performance summaries and the context each run printed.

A log may hold several runs (one per ``&&&& RUNNING`` banner). Each run's figures come from its
performance summary, in the format of TensorRT 8.x to 11.x (``Latency: min = ..., percentile(99%) =
...``) or of 7.x (``Host Latency`` / ``min: X ms (end to end Y ms)`` blocks). Only lines logged at
the info level (or with no level, as in a summary pasted on its own) count: verbose ``[V]`` lines
repeat the metric names in their explanations, and ``[TRT]`` lines are the library's own. A
percentile the log does not print stays None; a non-finite value (``nan``, ``inf``) is recorded as
None with a note.

The run's context comes from the log where printed: ``TensorRT version:`` (or the banner's
``[TensorRT vNNNN]``), ``Selected Device:``, the command line's precision flags or the engine's file
name, and the batch from ``--shapes``, ``--batch`` (implicit batch: trtexec then counts images, so
the throughput is images/s and the query count is divided by the batch) or the input binding's
first dimension.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from leapkit.errors import TrtexecError
from leapkit.records import Record
from leapkit.trtexec.exported import STAT_KEYS
from leapkit.trtexec.layers import NUM, LayerProfile, number, read_profile_table
from leapkit.types import Precision

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
_METRIC_KEYS = {"Latency": "latency", "Host Latency": "latency", "GPU Compute Time": "gpu", "GPU Compute": "gpu",
                "End-to-End Host Latency": "end_to_end", "Enqueue Time": "enqueue", "H2D Latency": "h2d",
                "D2H Latency": "d2h"}
_CV = re.compile(rf"coefficient of variance = ({NUM})%")
_PRECISION_TAG = re.compile(r"(?<![a-z0-9])(fp32|fp16|int8)(?![a-z0-9])", re.I)


@dataclass
class TrtexecRun(Record):
    """One trtexec timing run. Statistics are dicts over min, mean, p50, p90, p95, p99, max (None: not printed).

    Args:
        source: the file it was read from.
        tensorrt: TensorRT version ("8.6.3"), None when not printed (7.x prints none).
        device: trtexec's "Selected Device".
        precision: from --int8/--best/--fp16, else the engine's file name, else fp32 for a build
            without flags; None when unknown (a loaded engine with no precision in its name).
        batch: images per query.
        latency_ms: host latency (H2D + GPU compute + D2H).
        gpu_compute_ms: GPU compute time.
        throughput_qps: trtexec's throughput, in ``throughput_unit``.
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


def split_message(line: str) -> tuple[str | None, bool, str]:
    """A log line's level (I, V, W, E, F or None), whether it is TensorRT's own (``[TRT]``), and its message."""
    m = _PREFIX.match(line)
    return m["level"], m["trt"] is not None, line[m.end():]


def tensorrt_version(banner: str) -> str:
    """The dotted version of a banner's vNNNN: major*1000+minor*100+patch in 8.x, major*10000+... from 10."""
    n = int(banner)
    return f"{n // 10000}.{n // 100 % 100}.{n % 100}" if n >= 100000 else f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def _flags(command: str) -> dict[str, str]:
    try:
        words = shlex.split(command)
    except ValueError:  # an unbalanced quote in a pasted command line
        words = command.split()
    return {w.split("=", 1)[0]: w.split("=", 1)[1] if "=" in w else "" for w in words if w.startswith("--")}


def precision_of(command: str) -> Precision | None:
    """The precision a trtexec command line asks for (see :class:`TrtexecRun`)."""
    flags = _flags(command)
    if "--int8" in flags or "--best" in flags:
        return "int8"
    if "--fp16" in flags:
        return "fp16"
    for key in ("--loadEngine", "--saveEngine", "--onnx"):
        if m := _PRECISION_TAG.search(Path(flags.get(key, "")).name):
            return cast(Precision, m.group(1).lower())
    builds = any(k in flags for k in ("--onnx", "--deploy", "--uff", "--model"))
    return "fp32" if builds and "--stronglyTyped" not in flags and "--loadEngine" not in flags else None


@dataclass
class _Run:
    """A run being read: the public record plus what only the reader needs."""

    run: TrtexecRun
    implicit_batch: bool = False
    binding_batch: int | None = None
    summary: bool = False
    failed: bool = False
    legacy_section: str | None = None
    closed: bool = False  # its summary's last line (total GPU compute time) or a PASSED/FAILED banner was read


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
        line = line.rstrip("\r\n")
        if m := _BANNER.match(line.strip()):
            self.banner(m)
            return
        level, trt, message = split_message(line)
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

    def info(self, text: str) -> None:
        run = self.cur.run
        if text in ("=== Performance summary ===", "Host Latency") and self.cur.summary:
            # a second summary without a banner between: a new run in the same context
            self.runs.append(_Run(TrtexecRun(source=self.source, tensorrt=run.tensorrt, device=run.device,
                                             command=run.command, batch=run.batch)))
            run = self.cur.run
        if text in ("Host Latency", "Enqueue Time", "GPU Compute"):
            self.cur.legacy_section = text
            self.cur.summary = True
        elif m := _STAT_LINE.match(text):
            self.cur.summary = True
            stats: dict[str, float | None] = dict.fromkeys(STAT_KEYS)
            for item in _STAT_ITEM.finditer(m["body"]):
                self.put(stats, item["key"], item["p"], item["v"], m["metric"])
            self.stats(_METRIC_KEYS[m["metric"]]).update(stats)
        elif (m := _LEGACY_ITEM.match(text)) and self.cur.legacy_section:
            header = self.cur.legacy_section
            self.put(self.stats(_METRIC_KEYS[header]), m["key"], m["p"], m["v"], header)
            if m["e2e"]:
                self.put(self.stats("end_to_end"), m["key"], m["p"], m["e2e"], "end to end")
        elif m := re.match(rf"^Warmup completed (\d+) queries over ({NUM}) ms$", text):
            run.warmup_queries, run.warmup_ms = int(m.group(1)), number(m.group(2))
        elif m := re.match(r"^Timing trace has (\d+) queries over", text):
            run.iterations = int(m.group(1))
        elif m := re.match(r"^TensorRT version: (\S+)$", text):
            run.tensorrt = m.group(1)
        elif m := re.match(r"^Selected Device: (.+)$", text):
            run.device = m.group(1).strip()
        elif m := re.match(r"^Batch: (\d+)$", text):
            self.cur.implicit_batch, run.batch = True, int(m.group(1))
        elif m := re.match(r"^(?:Created input binding|Input binding) for \S+ with dimensions (\d+)x", text):
            self.cur.binding_batch = self.cur.binding_batch or int(m.group(1))
        else:
            for pattern, attr in _SCALARS.items():
                if m := pattern.match(text):
                    self.cur.summary = True
                    self.cur.closed = self.cur.closed or attr == "gpu_total_s"  # the last line of every summary
                    setattr(run, attr, self.finite(m.group(1), text.split(":")[0]))
                    break

    def stats(self, section: str) -> dict[str, float | None]:
        run = self.cur.run
        if section == "latency":
            return run.latency_ms
        if section == "gpu":
            return run.gpu_compute_ms
        return run.other_ms.setdefault(section, dict.fromkeys(STAT_KEYS))

    def put(self, stats: dict[str, float | None], key: str, p: str | None, value: str, metric: str) -> None:
        key = key.lower()
        if key.startswith("percentile"):
            key = f"p{float(p):g}" if p else "p99"
        key = "p50" if key == "median" else key
        if key in stats:
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
                if r.run.command and summaries:
                    self.notes.append(f"{self.source}: run {i + 1} printed no performance summary; skipped")
                if summaries and r.run.warnings and not r.run.command:
                    # [W] goes to stderr: with 2>&1 it can land outside its run; keep it with the nearest summary
                    home = self.runs[max((j for j in summaries if j < i), default=summaries[0])].run
                    home.warnings += r.run.warnings
                    home.cv = home.cv if home.cv is not None else r.run.cv
                continue
            run = r.run
            run.truncated = not r.closed
            flags = _flags(run.command or "")
            run.precision = precision_of(run.command) if run.command else None
            if shapes := flags.get("--shapes"):
                run.batch = _shape_batch(shapes) or run.batch
            elif flags.get("--batch", "").isdigit():
                r.implicit_batch, run.batch = True, int(flags["--batch"])
            elif not r.implicit_batch and r.binding_batch:
                run.batch = r.binding_batch
            if r.implicit_batch:
                run.throughput_unit = "images/s"
                if run.iterations and run.batch > 1 and run.iterations % run.batch == 0:
                    run.iterations //= run.batch  # trtexec counts images with implicit batch
            if r.failed:
                self.notes.append(f"{self.source}: trtexec reported FAILED for run {i + 1}; its figures are kept")
            runs.append(run)
        return runs, self.notes


def _shape_batch(shapes: str) -> int | None:
    first = shapes.split(",")[0]
    m = re.search(r":(\d+)(?:x|$)", first)
    return int(m.group(1)) if m else None


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
