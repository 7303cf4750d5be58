"""OEE per tool and per line: availability x performance x quality, with the losses
split by cause, per shift (``OeeReport``) and over a rolling window (tags).

Invariants:

* Computed only from what the gateway sees: a tool's state tag (a status word, running
  while ``running_mask`` bits are set, an interlock trip while ``trip_mask`` bits are;
  or a motor current, stopped below ``stopped_below``: idle is available, a motor's
  micro-stoppages and failures are downtime), its part counter (or a light barrier,
  a part per rise; or a motor's starts: a current above ``start_above`` right after an
  idle one, so a spike or a restart after a micro-stoppage is no part), its
  interlocks' ``InterlockTrip`` records and, for quality, a CMM's ``Measurement``
  verdicts. A tool without a state tag (an inspection cell that only
  reports verdicts) is taken as running through planned time; one without a counter
  counts the parts its CMM judged. Per-tool bookkeeping is in ``oee_tally`` (its docstring
  says how gaps, stops and parts are counted).
* Planned time is the calendar's (shifts less planned breaks), by the minute; time and
  parts outside it are not judged. Planned time with no usable state (before the first
  sample, or a gap longer than ``max_gap_s``) is ``no_data_s``, reported and left out of
  availability, which is judged over the time the tool's state was known.
* availability = run / (planned - no data); performance = ideal cycle x parts seen
  (not made across a gap) / run;
  quality = good / judged parts (1 when none was judged); oee = their product. A line
  pools its tools: sum of run over sum of known time, of ideal time over run, of good
  over judged.
* A shift's report is made once a tool's state samples are ``close_after_s`` past its
  end, so a stop still going is classified by what is known then.
* Restarts (``stage_state``): the tallies and the open shift are a journal checkpoint,
  committed with every report, trip and verdict the stage takes or makes and otherwise
  every ``CHECKPOINT_S``. After a crash (kill -9, power loss) the shift goes on from the
  last checkpoint: no report is lost or made twice, no part or verdict counted twice;
  what a crash can lose is the state samples since the checkpoint and the time the
  gateway was down, which are ``no_data`` (out of availability, like any gap), and the
  parts the counter made meanwhile are counted when it is read again (a light barrier's
  or a motor's parts in that time are lost: no counter holds them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

from edge.components import BuildContext, StageOutput
from edge.config import ConfigStruct
from edge.errors import ConfigError
from edge.model import (
    InterlockTrip,
    Measurement,
    OeeReport,
    Quality,
    Record,
    SampleBatch,
    TagRegistry,
)
from edge.processing import stage_state
from edge.processing.calendar import MINUTE_NS, Calendar, CalendarConfig, Shift
from edge.processing.oee_report import reports
from edge.processing.oee_tally import ToolTally

FACTORS = ("availability", "performance", "quality", "oee")


class OeeToolConfig(ConfigStruct, frozen=True):
    """One tool: where its state, its parts and their quality come from."""

    name: str
    ideal_cycle_s: float
    state_tag: str = ""
    state_kind: Literal["status_word", "current"] = "status_word"
    running_mask: int = 1
    trip_mask: int = 0
    stopped_below: float = 0.025
    count_tag: str = ""
    count_kind: Literal["counter", "rising", "starts"] = "counter"
    count_wrap: int = 0
    start_above: float = 2.0
    idle_below: float = 0.6
    scrap_on_trip: bool = False
    interlocks: list[str] = msgspec.field(default_factory=list)
    quality_device: str = ""
    # An indeterminate CMM verdict (within the measurement uncertainty of a limit): "rework"
    # (the guard-banded verdict as it is: not first-pass good), or "simple_acceptance"
    # (ISO 14253-5: judged by the compensated value against the tolerance alone, the best
    # estimate of whether the part truly conforms; rework is then never counted).
    indeterminate: Literal["rework", "simple_acceptance"] = "rework"
    microstop_max_s: float = 5.0
    max_gap_s: float = 5.0

    def __post_init__(self) -> None:
        for key in ("state_tag", "count_tag"):
            v = getattr(self, key)
            if v and v.count("/") < 1:
                raise ValueError(f"{key} must be 'device/name', got {v!r}")
        if not self.count_tag and not self.quality_device:
            raise ValueError("count_tag or quality_device must say how parts are counted")
        for key in ("ideal_cycle_s", "microstop_max_s", "max_gap_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0")
        if self.running_mask <= 0 or self.trip_mask < 0 or self.count_wrap < 0:
            raise ValueError("running_mask must be > 0, trip_mask and count_wrap >= 0")


class OeeConfig(ConfigStruct, frozen=True):
    """``[[oee]]``: one line's tools, judged against one calendar."""

    name: str
    tools: list[OeeToolConfig]
    window_s: float = 3600.0
    publish_interval_s: float = 10.0
    close_after_s: float = 30.0
    calendar: CalendarConfig = msgspec.field(default_factory=CalendarConfig)
    emit_samples: bool = True

    def __post_init__(self) -> None:
        if not self.tools:
            raise ValueError("tools must list at least one tool")
        if not any(t.state_tag for t in self.tools):
            raise ValueError("tools: at least one tool needs a state_tag (the line's clock)")
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names) or self.name in names:
            raise ValueError("tools: a name is used twice (or is the line's name)")
        if self.window_s < 60 or not self.publish_interval_s > 0 or self.close_after_s < 0:
            raise ValueError("window_s must be >= 60, publish_interval_s > 0, "
                             "close_after_s >= 0")

    def declare_tags(self, tags: TagRegistry) -> None:
        """``<tool|line>/oee``, ``/availability``, ``/performance``, ``/quality`` (0-1,
        over the rolling window)."""
        if not self.emit_samples:
            return
        for device in [t.name for t in self.tools] + [self.name]:
            for f in FACTORS:
                tags.add(device, f, low=0.0, high=1.0,
                         description=f"{f} over the last {self.window_s:g} s")


@dataclass(slots=True)
class _Tool:
    cfg: OeeToolConfig
    state_tag: int
    count_tag: int
    tally: ToolTally


@dataclass(slots=True)
class _Line:
    cfg: OeeConfig
    calendar: Calendar
    tools: list[_Tool]
    now_ns: int = -1
    next_pub_ns: int = -1
    open_shift: Shift | None = None
    kept_from: int = -(2**62)
    trip_owner: dict[str, _Tool] = field(default_factory=dict)
    cmm_owner: dict[str, list[_Tool]] = field(default_factory=dict)
    rolling: list[OeeReport] = field(default_factory=list)  # the last published window


class Oee:
    """The OEE stage for every configured line."""

    name = "oee"

    def __init__(self, configs: Sequence[OeeConfig], tags: TagRegistry,
                 ctx: BuildContext | None = None) -> None:
        self.lines: list[_Line] = []
        self._tags = tags
        for cfg in configs:
            cfg.declare_tags(tags)
            tools = []
            for t in cfg.tools:
                tally = ToolTally(round(t.max_gap_s * 1e9), round(t.microstop_max_s * 1e9),
                                  t.count_wrap, t.scrap_on_trip, bool(t.quality_device),
                                  count_by_cmm=not t.count_tag)
                tools.append(_Tool(t, _id(tags, t.state_tag, cfg.name) if t.state_tag else -1,
                                   _id(tags, t.count_tag, cfg.name) if t.count_tag else -1,
                                   tally))
            line = _Line(cfg, Calendar(cfg.calendar), tools)
            for tool in tools:
                for il in tool.cfg.interlocks:
                    line.trip_owner[il] = tool
                if tool.cfg.quality_device:
                    line.cmm_owner.setdefault(tool.cfg.quality_device, []).append(tool)
            self.lines.append(line)
        self.checkpoint_key = "stage:oee"
        self._save = stage_state.SaveClock()
        self._m_gap = None
        if ctx is not None:
            self._m_gap = ctx.metrics.counter(
                "edge_oee_no_data_seconds_total",
                "Seconds of a tool's state left out of OEE: gaps longer than max_gap_s",
                ["tool"])

    def process(self, batch: SampleBatch, records: Sequence[Record], now_ns: int) -> StageOutput:
        out = StageOutput(batch, list(records))
        for line in self.lines:
            for rec in records:
                if isinstance(rec, InterlockTrip) and rec.interlock in line.trip_owner:
                    line.trip_owner[rec.interlock].tally.trip(rec.ts_ns)
                    self._save.must = True
                elif isinstance(rec, Measurement) and rec.device in line.cmm_owner:
                    for tool in line.cmm_owner[rec.device]:
                        tool.tally.verdict(rec.part_id, rec.ts_ns,
                                           _verdict(rec, tool.cfg.indeterminate))
                    self._save.must = True
        if not len(batch):
            return out
        self._save.changed = True
        ids: list[int] = []
        ts: list[int] = []
        vals: list[float] = []
        for line in self.lines:
            self._take(line, batch)
            closed = self._close(line)
            if closed:
                out.records.extend(closed)
                self._save.must = True
            self._publish(line, ids, ts, vals)
        if ids:
            extra = SampleBatch(ids, ts, vals, [int(Quality.GOOD)] * len(ids))
            out.batch = SampleBatch.concat([out.batch, extra])
        return out

    def tick(self, now_ns: int) -> StageOutput:
        return StageOutput(SampleBatch.empty())

    def states(self) -> dict[str, dict[str, object]]:
        """Per tool and line: the factors over the rolling window as last published (no
        recomputation: the status asks every second) and the shift now open."""
        out: dict[str, dict[str, object]] = {}
        for line in self.lines:
            sh = line.open_shift
            shift = sh.name if sh is not None and sh.start_ns <= line.now_ns else ""
            for rep in line.rolling:
                out[rep.name] = {"scope": rep.scope, "line": line.cfg.name, "shift": shift,
                                 "window_s": line.cfg.window_s,
                                 **{f: getattr(rep, f) for f in FACTORS}}
        return out

    def report(self, line_name: str, start_ns: int, end_ns: int, shift: str = "",
               ) -> list[OeeReport]:
        """The reports (each tool, then the line) over the planned minutes of a period,
        from the minutes still kept (the open shift and the rolling window)."""
        line = next(x for x in self.lines if x.cfg.name == line_name)
        return reports(line, start_ns // MINUTE_NS, end_ns // MINUTE_NS, shift)

    def snapshot(self, mono_ns: int) -> bytes | None:
        """The tallies and the open shift of every line when a checkpoint is due
        (``stage_state``): a restart resumes the shift where this left it."""
        if not self._save.due(mono_ns):
            return None
        return stage_state.dumps({"lines": {line.cfg.name: {
            "now_ns": line.now_ns, "kept_from": line.kept_from,
            "open_shift": stage_state.shift_dump(line.open_shift),
            "tools": {t.cfg.name: t.tally.dump(_compact(line, t)) for t in line.tools}}
            for line in self.lines}})

    def restore(self, data: bytes) -> None:
        """Take back a snapshot; lines and tools are matched by name, ones the config no
        longer has are ignored, new ones start empty. Time between the snapshot and the
        next state sample is a gap: ``no_data`` like any gap longer than ``max_gap_s``."""
        saved = stage_state.loads(data, "oee")["lines"]
        for line in self.lines:
            d = saved.get(line.cfg.name)
            if d is None:
                continue
            line.now_ns, line.kept_from = int(d["now_ns"]), int(d["kept_from"])
            line.open_shift = stage_state.shift_load(d["open_shift"])
            for tool in line.tools:
                if tool.cfg.name in d["tools"]:
                    tool.tally.load(d["tools"][tool.cfg.name])

    # ------------------------------------------------------------------ internals

    def _take(self, line: _Line, batch: SampleBatch) -> None:
        tag_ids = batch.tag_id
        for tool in line.tools:
            cfg = tool.cfg
            idx = np.flatnonzero(tag_ids == tool.state_tag) if tool.state_tag >= 0 else ()
            if len(idx):
                idx = idx[(batch.quality[idx] & 0x80) == 0]
                t = batch.ts_ns[idx]
                v = batch.value[idx]
                gap_before = tool.tally.no_data_ns
                if cfg.state_kind == "current":
                    up = v >= cfg.stopped_below
                    tool.tally.states(t, up, np.zeros(len(t), np.bool_))
                else:
                    word = np.nan_to_num(v).astype(np.int64)
                    tool.tally.states(t, (word & cfg.running_mask) != 0,
                                      (word & cfg.trip_mask) != 0)
                if t.shape[0]:
                    line.now_ns = max(line.now_ns, int(t.max()))
                if self._m_gap is not None and tool.tally.no_data_ns > gap_before:
                    self._m_gap.labels(cfg.name).inc((tool.tally.no_data_ns - gap_before) / 1e9)
            if tool.count_tag >= 0:
                j = np.flatnonzero(tag_ids == tool.count_tag)
                j = j[(batch.quality[j] & 0x80) == 0]
                if j.shape[0]:
                    if cfg.count_kind == "rising":
                        tool.tally.rising(batch.ts_ns[j], batch.value[j] > 0.5)
                    elif cfg.count_kind == "starts":
                        tool.tally.starts(batch.ts_ns[j], batch.value[j], cfg.stopped_below,
                                          cfg.idle_below, cfg.start_above)
                    else:
                        tool.tally.counts(batch.ts_ns[j], batch.value[j])

    def _close(self, line: _Line) -> list[OeeReport]:
        cal, now = line.calendar, line.now_ns
        if now < 0:
            return []
        if line.open_shift is None:
            line.open_shift = cal.next_shift(now)
        out: list[OeeReport] = []
        close_ns = round(line.cfg.close_after_s * 1e9)
        while line.open_shift is not None and now >= line.open_shift.end_ns + close_ns:
            sh = line.open_shift
            out += reports(line, sh.start_min, sh.end_min, sh.name)
            line.open_shift = cal.next_shift(sh.end_ns)
        keep = now // MINUTE_NS - math.ceil(line.cfg.window_s / 60) - 1
        if line.open_shift is not None:
            keep = min(keep, line.open_shift.start_min)
        if keep > line.kept_from:
            for tool in line.tools:
                tool.tally.prune(keep)
            line.kept_from = keep
        return out

    def _publish(self, line: _Line, ids: list[int], ts: list[int], vals: list[float]) -> None:
        cfg = line.cfg
        if line.now_ns < 0 or line.now_ns < line.next_pub_ns:
            return
        line.next_pub_ns = line.now_ns + round(cfg.publish_interval_s * 1e9)
        end = line.now_ns // MINUTE_NS + 1
        line.rolling = reports(line, end - round(cfg.window_s / 60), end, "", rolling=True)
        if not cfg.emit_samples:
            return
        for rep in line.rolling:
            for f in FACTORS:
                v = getattr(rep, f)
                if math.isfinite(v):
                    ids.append(self._tags.id_of(f"{rep.name}/{f}"))
                    ts.append(line.now_ns)
                    vals.append(v)


def _compact(line: _Line, tool: _Tool) -> dict[int, npt.NDArray[np.float64]]:
    """A tool's minutes for a checkpoint: the planned minutes of the open shift older than
    the rolling window summed into its first planned minute (``stage_state.compact``)."""
    cal, sh = line.calendar, line.open_shift
    before = line.now_ns // MINUTE_NS - math.ceil(line.cfg.window_s / 60) - 2
    bucket = None
    if sh is not None:
        bucket = next((m for m in range(sh.start_min, min(sh.end_min, before))
                       if cal.planned(m)), None)
    return stage_state.compact(
        tool.tally.minutes, before,
        lambda m: sh is not None and sh.start_min <= m < sh.end_min and cal.planned(m),
        bucket, exact=[m for m, _ in tool.tally.pending])


def check_references(oee: Sequence[OeeConfig], interlocks: Sequence[str],
                     energy: Sequence[tuple[str, Sequence[str]]]) -> None:
    """ConfigError naming each tool's interlock that no ``[[interlocks]]`` defines and each
    energy line's ``parts_tools`` entry that no ``[[oee]]`` tool is (either would silently
    judge nothing)."""
    known = set(interlocks)
    tools = {t.name for c in oee for t in c.tools}
    problems = [f"oee '{c.name}': tool '{t.name}': interlocks: no interlock named '{il}'"
                f" (interlocks: {', '.join(sorted(known)) or 'none'})"
                for c in oee for t in c.tools for il in t.interlocks if il not in known]
    problems += [f"energy '{line}': parts_tools: no oee tool named '{name}'"
                 f" (tools: {', '.join(sorted(tools)) or 'none'})"
                 for line, names in energy for name in names if name not in tools]
    if problems:
        raise ConfigError("\n".join(problems))


def _id(tags: TagRegistry, key: str, line: str) -> int:
    try:
        return tags.id_of(key)
    except KeyError:
        raise ConfigError(f"oee '{line}': tag '{key}' is not declared by any source") from None


def _verdict(m: Measurement, rule: str) -> str:
    """The verdict OEE counts: as judged, or an indeterminate one by simple acceptance."""
    if m.verdict != "indeterminate" or rule != "simple_acceptance" or not math.isfinite(
            m.l20_mm):
        return m.verdict
    return "conforming" if abs(m.l20_mm - m.nominal_mm) <= m.tol_mm else "nonconforming"
