"""Read a Jetson's tegrastats log: one typed sample per line, and the power of a timing run with its idle baseline.

    read_tegrastats(text)            -> TegrastatsLog  (samples; lines in an unknown format skipped and counted)
    summarize(log, marks)            -> PowerSummary   (the timing run's board power, rails, GPU; the idle baseline)
    read_power(folder)               -> PowerSummary | None   (tegrastats.txt and tegrastats_marks.txt in a folder)
    energy_mj(power_w, latency_ms, batch) -> float     (energy per inference)

The formats read are JetPack 4 to 6's (L4T 32 to 36): rails printed as ``NAME cur/avg`` with no unit (JetPack 4:
``POM_5V_IN 920/920``, ``GPU 463/463``) or in milliwatts (``VDD_IN 5123mW/5123mW``; JetPack 7's third value, the
peak, is read too); ``GR3D_FREQ 99%`` bare, ``@921`` or ``@[305,305]`` (one clock per GPC); ``EMC_FREQ 12%`` with
or without ``@2133``; the second GPC's ``GR3D2_FREQ`` of the Orin NX on JetPack 5. Board power is the input rail
where the board prints one (``VDD_IN``, ``POM_5V_IN``), else the sum of the printed rails (AGX Orin, AGX Xavier:
module rails, not the carrier board). Without root tegrastats prints no EMC clock and no GPU clock.

``bench_engine.sh`` starts tegrastats before the timing run, lets the board idle for a baseline, and writes
:data:`MARKS`: one ``EVENT LINES EPOCH_S`` line per boundary (``idle_end``, ``inference_start``, ``inference_end``,
``timing_end``), LINES being how many lines the log held then. Samples before ``idle_end`` are the idle baseline;
samples from ``inference_start`` to ``inference_end`` (else ``timing_end``) are the timing run. Without marks the
whole log is taken as the run and there is no baseline.

Energy per inference (mJ) = mean board power (W) x mean latency (ms) / batch; above idle, the mean minus the idle
baseline. A budget in mJ judges the first, what the battery pays.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from leapkit.records import Record

LOG = "tegrastats.txt"
MARKS = "tegrastats_marks.txt"
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")  # the board's input rail, where it prints one
SUM_OF_RAILS = "sum_of_printed_rails"
TIMING_RUN, WHOLE_LOG = "timing run", "whole log (no marks)"  # the samples a summary is of

# bench_engine.sh's power sampling on a Jetson (leapkit.deploy.bundle puts it after OUT is set, pipes the timing
# run's output through `marking` and calls `stop_power` after it): the writer of LOG and MARKS, beside their reader.
SAMPLE_POWER_SH = r"""
# Power: tegrastats samples the board into $OUT/tegrastats.txt, idle first (the baseline), then during the
# timing run; $OUT/tegrastats_marks.txt holds "EVENT LINES EPOCH_S" at each boundary. TEGRASTATS= (empty) turns
# it off; LEAPKIT_TEGRASTATS_INTERVAL_MS (100) and LEAPKIT_TEGRASTATS_IDLE_S (5) set the interval and baseline.
TEGRASTATS="${TEGRASTATS-$(command -v tegrastats || true)}"
POWER="$OUT/tegrastats.txt"
MARKS="$OUT/tegrastats_marks.txt"
rm -f "$POWER" "$MARKS"
SAMPLER=""
mark() {
    [ -n "$SAMPLER" ] || return 0
    echo "$1 $({ wc -l < "$POWER"; } 2>/dev/null || echo 0) $(date +%s.%N)" >> "$MARKS"
}
marking() {  # trtexec's output passes through; where its inference starts and ends is marked
    started=""
    ended=""
    while IFS= read -r line || [ -n "$line" ]; do
        printf '%s\n' "$line"
        case "$line" in
            *"Starting inference"*) [ -n "$started" ] || { started=1; mark inference_start; } ;;
            *"Warmup completed"*|*"Timing trace has"*|*"Performance summary"*)
                [ -z "$started" ] || [ -n "$ended" ] || { ended=1; mark inference_end; } ;;
        esac
    done
}
stop_power() {
    [ -n "$SAMPLER" ] || return 0
    mark timing_end
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    SAMPLER=""
}
if [ -n "$TEGRASTATS" ]; then
    # Its stdout, appended a line at a time as it comes (tegrastats writes a line per interval to a pipe, which is
    # how jtop read it), so that a mark counts exactly the lines written by then, whatever --logfile would buffer.
    : > "$POWER"
    "$TEGRASTATS" --interval "${LEAPKIT_TEGRASTATS_INTERVAL_MS:-100}" 2> /dev/null | while IFS= read -r sample; do
        printf '%s\n' "$sample" >> "$POWER"
    done &
    SAMPLER=$!  # the reading loop: tegrastats stops at its next line once the loop is gone
    trap stop_power EXIT
    sleep "${LEAPKIT_TEGRASTATS_IDLE_S:-5}"  # the idle baseline, before the engine is loaded
    mark idle_end
fi
"""

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB\b")
_TIMESTAMP = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d) ")
# NAME cur/avg[/peak], all in mW or all without a unit; "RAM 1/2MB" and "IRAM 0/252kB" end in another unit
_RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*) (\d+)(mW)?/(\d+)(mW)?(?:/\d+(?:mW)?)?(?=\s|$)")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[([\d,]*)\]|@(\d+))?")
_GR3D2 = re.compile(r"\bGR3D2_FREQ (\d+)%(?:@\[([\d,]*)\]|@(\d+))?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_MILLIWATTS = re.compile(r"\d+mW")


@dataclass(frozen=True)
class Rail:
    """One power rail of a sample, as tegrastats prints it: ``NAME cur/avg`` in milliwatts."""

    name: str
    cur_mw: int
    avg_mw: int


@dataclass(frozen=True)
class TegrastatsSample:
    """One tegrastats line.

    Args:
        line_no: 1-based line number in the log.
        timestamp: the ``MM-DD-YYYY HH:MM:SS`` prefix (JetPack 5 on); None without one.
        ram_used_mb: RAM in use.
        ram_total_mb: RAM size.
        rails: every power rail, in printed order (a name may appear twice: ``NC``).
        gr3d_util_pct: GPU load.
        gr3d_freq_mhz: GPU clock per GPC; empty when not printed (tegrastats without root).
        gr3d2_util_pct: the second GPC's load where printed apart (Orin NX, JetPack 5).
        gr3d2_freq_mhz: its clock.
        emc_util_pct: memory controller load (absent without root on JetPack 6).
        emc_freq_mhz: memory clock.
    """

    line_no: int
    timestamp: str | None
    ram_used_mb: int
    ram_total_mb: int
    rails: tuple[Rail, ...] = ()
    gr3d_util_pct: int | None = None
    gr3d_freq_mhz: tuple[int, ...] = ()
    gr3d2_util_pct: int | None = None
    gr3d2_freq_mhz: tuple[int, ...] = ()
    emc_util_pct: int | None = None
    emc_freq_mhz: int | None = None

    @property
    def total_power_source(self) -> str | None:
        """The input rail's name, else :data:`SUM_OF_RAILS`; None without rails."""
        if not self.rails:
            return None
        return next((r.name for r in self.rails if r.name in TOTAL_RAILS), SUM_OF_RAILS)

    @property
    def total_power_mw(self) -> int | None:
        """Board power now: the input rail's current value, else the sum of every rail's; None without rails."""
        source = self.total_power_source
        if source is None:
            return None
        if source == SUM_OF_RAILS:
            return sum(r.cur_mw for r in self.rails)
        return next(r.cur_mw for r in self.rails if r.name == source)

    @property
    def gpu_freq_mhz(self) -> int | None:
        """The GPU clock: the fastest GPC's in ``GR3D_FREQ`` (a power-gated GPC reads 0); None when not printed.

        The Orin NX's separate ``GR3D2_FREQ`` token is left out: on JetPack 5 it reads ``@0`` under load.
        """
        return max(self.gr3d_freq_mhz) if self.gr3d_freq_mhz else None


def _clocks(bracketed: str | None, bare: str | None) -> tuple[int, ...]:
    if bracketed is not None:
        return tuple(int(c) for c in bracketed.split(",") if c)
    return (int(bare),) if bare is not None else ()


def parse_line(line: str, line_no: int = 1) -> TegrastatsSample | None:
    """One tegrastats line as a sample; None when it is not one in a known format.

    A line is read when it has tegrastats' ``RAM used/totalMB`` field and every milliwatt figure on it belongs to
    a rail this reader understands; anything else (a header, a cut line, a format to come) is None.

    Args:
        line: the line, with or without its newline.
        line_no: its 1-based number in the log.
    """
    line = line.rstrip("\r\n")
    ram = _RAM.search(line)
    if ram is None:
        return None
    rails = []
    for m in _RAIL.finditer(line):
        if m.group(3) != m.group(5):  # "6249mW/62": a line cut inside a rail
            return None
        rails.append(Rail(m.group(1), int(m.group(2)), int(m.group(4))))
    if _MILLIWATTS.search(_RAIL.sub("", line)):
        return None  # power figures in a layout not read here: better skipped than summed wrong
    timestamp = _TIMESTAMP.match(line)
    gr3d, gr3d2, emc = _GR3D.search(line), _GR3D2.search(line), _EMC.search(line)
    return TegrastatsSample(
        line_no=line_no, timestamp=timestamp.group(1) if timestamp else None,
        ram_used_mb=int(ram.group(1)), ram_total_mb=int(ram.group(2)), rails=tuple(rails),
        gr3d_util_pct=int(gr3d.group(1)) if gr3d else None,
        gr3d_freq_mhz=_clocks(gr3d.group(2), gr3d.group(3)) if gr3d else (),
        gr3d2_util_pct=int(gr3d2.group(1)) if gr3d2 else None,
        gr3d2_freq_mhz=_clocks(gr3d2.group(2), gr3d2.group(3)) if gr3d2 else (),
        emc_util_pct=int(emc.group(1)) if emc else None,
        emc_freq_mhz=int(emc.group(2)) if emc and emc.group(2) else None,
    )


@dataclass
class TegrastatsLog:
    """A tegrastats log read: its samples and the lines skipped because their format is unknown.

    Args:
        samples: one per line read, in order.
        skipped: how many non-blank lines were not tegrastats samples in a known format.
        skipped_line_nos: the first of them (at most ten), for the message.
        lines: every line of the log, blank ones included, as the marks count them.
    """

    samples: list[TegrastatsSample] = field(default_factory=list)
    skipped: int = 0
    skipped_line_nos: list[int] = field(default_factory=list)
    lines: int = 0


def read_tegrastats(text: str) -> TegrastatsLog:
    """Every line of a tegrastats log: samples where the format is known, the others counted; never raises.

    A line whose rails are a strict beginning of the log's usual rails (a line cut while it was written or
    copied) is skipped too: its board power would miss the rails after the cut.
    """
    out = TegrastatsLog()
    samples, skipped = [], []
    for i, line in enumerate(text.splitlines(), start=1):
        out.lines = i
        if not line.strip():
            continue
        sample = parse_line(line, i)
        if sample is None:
            skipped.append(i)
        else:
            samples.append(sample)
    layouts = Counter(tuple(r.name for r in s.rails) for s in samples)
    usual = layouts.most_common(1)[0][0] if layouts else ()
    for s in samples:
        names = tuple(r.name for r in s.rails)
        if len(names) < len(usual) and usual[:len(names)] == names:
            skipped.append(s.line_no)
        else:
            out.samples.append(s)
    out.skipped, out.skipped_line_nos = len(skipped), sorted(skipped)[:10]
    return out


def read_marks(text: str) -> dict[str, int]:
    """The marks file as ``{event: lines}``; a line that is not ``EVENT LINES [EPOCH_S]`` is ignored."""
    marks = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            marks.setdefault(parts[0], int(parts[1]))
    return marks


@dataclass
class PowerSummary(Record):
    """The power of one timing run, from tegrastats: the ``power`` object of a bench result.

    Watts are means over the samples in the window, of each sample's current value (not tegrastats' running
    average). ``None`` where the lines do not print the figure.

    Args:
        source: the tegrastats log read.
        window: which samples were summarised: the marked ``timing run``, or the ``whole log (no marks)``.
        samples: samples inside the window.
        idle_samples: samples of the idle baseline before the run (0: none recorded).
        lines_read: tegrastats lines read in the whole log.
        lines_skipped: lines skipped because their format is unknown.
        board_power_source: ``VDD_IN``, ``POM_5V_IN`` or ``sum_of_printed_rails``; None without rails.
        mean_w: mean board power during the run.
        peak_w: highest board power sampled during the run.
        idle_w: mean board power of the idle baseline.
        rails_mean_w: each rail's mean during the run (a repeated name gets ``#2``).
        gpu_util_pct: mean GPU load.
        gpu_freq_mhz: mean GPU clock (the fastest GPC of each sample).
        emc_util_pct: mean memory controller load.
        emc_freq_mhz: mean memory clock.
    """

    source: str
    window: str
    samples: int
    idle_samples: int
    lines_read: int
    lines_skipped: int
    board_power_source: str | None = None
    mean_w: float | None = None
    peak_w: float | None = None
    idle_w: float | None = None
    rails_mean_w: dict[str, float] = field(default_factory=dict)
    gpu_util_pct: float | None = None
    gpu_freq_mhz: float | None = None
    emc_util_pct: float | None = None
    emc_freq_mhz: float | None = None

    def energy(self, latency_ms: float | None, batch: int) -> tuple[float | None, float | None]:
        """Energy per inference in mJ at ``latency_ms`` per batch: (board, above the idle baseline)."""
        if latency_ms is None or self.mean_w is None:
            return None, None
        total = energy_mj(self.mean_w, latency_ms, batch)
        above = energy_mj(self.mean_w - self.idle_w, latency_ms, batch) if self.idle_w is not None else None
        return total, above

    def describe(self) -> str:
        """One line: the power figures, the baseline and what was skipped."""
        if self.mean_w is None:
            return (f"no board power in {self.source} ({self.samples} samples in the {self.window}, "
                    f"{self.lines_skipped} lines in an unknown format skipped)")
        idle = f"; idle {self.idle_w:.2f} W ({self.idle_samples} samples)" if self.idle_w is not None else \
            "; no idle baseline recorded"
        skipped = f"; {self.lines_skipped} lines in an unknown format skipped" if self.lines_skipped else ""
        return (f"mean {self.mean_w:.2f} W, peak {self.peak_w:.2f} W ({self.board_power_source}, {self.samples} "
                f"samples in the {self.window}){idle}{skipped}")


def energy_mj(power_w: float, latency_ms: float, batch: int = 1) -> float:
    """Energy per inference in mJ: watts x milliseconds per batch / images per batch."""
    return power_w * latency_ms / max(batch, 1)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _rail_means(samples: Sequence[TegrastatsSample]) -> dict[str, float]:
    sums: dict[str, list[int]] = {}
    for s in samples:
        seen: dict[str, int] = {}
        for r in s.rails:
            seen[r.name] = seen.get(r.name, 0) + 1
            key = r.name if seen[r.name] == 1 else f"{r.name}#{seen[r.name]}"
            sums.setdefault(key, []).append(r.cur_mw)
    return {k: statistics.fmean(v) / 1000 for k, v in sums.items()}


def summarize(log: TegrastatsLog, marks: dict[str, int] | None = None, source: str = LOG) -> PowerSummary:
    """The power of the timing run in ``log``, aligned by ``marks`` (lines written at each boundary).

    Args:
        log: the tegrastats log read.
        marks: ``bench_engine.sh``'s marks (see the module's docstring); None or empty: the whole log, no baseline.
        source: the log's name, for the record.
    """
    marks = marks or {}
    start = marks.get("inference_start", marks.get("idle_end"))
    end = marks.get("inference_end", marks.get("timing_end"))
    if start is None:
        window, run, idle = WHOLE_LOG, list(log.samples), []
    else:
        stop = end if end is not None else log.lines
        run = [s for s in log.samples if start < s.line_no <= stop]
        idle = [s for s in log.samples if s.line_no <= marks.get("idle_end", 0)]
        window = TIMING_RUN
    board = [s.total_power_mw for s in run if s.total_power_mw is not None]
    idle_board = [s.total_power_mw for s in idle if s.total_power_mw is not None]
    source_rail = next((s.total_power_source for s in run if s.total_power_source), None)
    return PowerSummary(
        source=source, window=window, samples=len(run), idle_samples=len(idle),
        lines_read=len(log.samples), lines_skipped=log.skipped, board_power_source=source_rail,
        mean_w=statistics.fmean(board) / 1000 if board else None, peak_w=max(board) / 1000 if board else None,
        idle_w=statistics.fmean(idle_board) / 1000 if idle_board else None, rails_mean_w=_rail_means(run),
        gpu_util_pct=_mean([s.gr3d_util_pct for s in run]), gpu_freq_mhz=_mean([s.gpu_freq_mhz for s in run]),
        emc_util_pct=_mean([s.emc_util_pct for s in run]), emc_freq_mhz=_mean([s.emc_freq_mhz for s in run]),
    )


def read_power(folder: Path) -> PowerSummary | None:
    """The power summary of the tegrastats log in ``folder`` (with its marks where written); None without a log."""
    path = Path(folder) / LOG
    if not path.is_file():
        return None
    text = path.read_text(errors="replace")
    marks_file = Path(folder) / MARKS
    marks = read_marks(marks_file.read_text(errors="replace")) if marks_file.is_file() else None
    return summarize(read_tegrastats(text), marks, str(path))
