"""The wafer's digital thread: a ``WaferStep`` record for every wafer that leaves a tool.

Invariants:

* A tool's current wafer is the last Good reading of its ``wafer_tag`` (with its
  ``lot_tag``); Bad readings (a dead link) never end or start a step. A step ends when a
  Good reading shows another wafer or lot: the record is made then, once, and goes to
  the journal like every record (so it reaches the MES exactly once).
* Times: ``start_ns`` is the sample time of the first reading that showed the wafer,
  or, with ``elapsed_tag`` (the tool's own seconds-since-the-wafer-entered), that time
  minus the elapsed seconds; ``end_ns`` is the next wafer's ``start_ns``. With the
  elapsed register a step that the gateway only saw part of (it started mid-step) still
  gets the tool's true times; ``first_seen_ns`` says where the gateway's view began.
* Samples belong to the step open at their timestamp: in a batch that holds a wafer
  change, samples and records older than the change go to the old step. The summary
  counts Good and Uncertain finite values (min/mean/max/last) and Bad samples apart.
* Records of the tool (an interlock trip or quarantine on one of its tags, or naming its
  wafer tag in its context; an SPC alarm on one of its tags) are attached to the step.
  At most ``max_events`` per step are kept, the rest counted in ``dropped``.
* Restarts (``stage_state``): each tool's open step (wafer, lot, recipe, start, the
  summary so far and its events) is a journal checkpoint, committed with every step
  record and every event or recipe it takes, and otherwise every ``CHECKPOINT_S``.
  After a crash a wafer still in the tool keeps its start time and its trips and gets
  exactly one step record when it leaves; the summary lacks the samples of the last
  ``CHECKPOINT_S`` before the crash and of the time the gateway was down (they are in
  the journal; the summary's counts say how many it holds). A wafer that left the tool
  while the gateway was down gets its record when a reading shows the next wafer: it
  ends at that wafer's start (the tool's own time with ``elapsed_tag``, else the reading).
* Pure and synchronous like every stage: no I/O, work per batch is one tag-table
  lookup (``TagSet``) and a few numpy reductions per tool tag.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.components import BuildContext, StageOutput
from edge.config import ConfigStruct
from edge.errors import ConfigError
from edge.model import (
    InterlockTrip,
    Quarantine,
    Record,
    SampleBatch,
    SpcViolation,
    TagRegistry,
    TagSummary,
    TextValue,
    WaferStep,
    decode_records,
    encode_records,
)
from edge.processing import stage_state
from edge.processing.tagset import TagSet

_BAD = 0x80


class WaferTraceConfig(ConfigStruct, frozen=True):
    """``[[wafer_steps]]``: one tool whose wafers get a step record when they leave it."""

    name: str  # the tool, as the step records and the MES history name it
    wafer_tag: str  # the tool's wafer (slot) number, e.g. "etch1/wafer"
    lot_tag: str = ""  # the lot in the tool; wafer ids are then "<lot>.<slot:02>"
    elapsed_tag: str = ""  # seconds since the wafer entered the tool, by the tool's clock
    recipe_tag: str = ""  # the recipe: a number, or a text tag (TextValue)
    tags: tuple[str, ...] = ()  # the telemetry summarised; () = every tag of wafer_tag's device
    max_events: int = 200  # trips + quarantines + SPC alarms kept per step

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")
        named = [(k, getattr(self, k)) for k in ("wafer_tag", "lot_tag", "elapsed_tag",
                                                  "recipe_tag")]
        for key, value in [*named, *(("tags", v) for v in self.tags)]:
            if value and value.count("/") < 1:
                raise ValueError(f"{key} must be 'device/name', got {value!r}")
        if not 0 <= self.max_events <= 100_000:
            raise ValueError("max_events must be between 0 and 100000")

    def declare_tags(self, tags: TagRegistry) -> None:
        """The thread adds no tags (it summarises tags that sources declare)."""


def _fmt(value: float) -> str:
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return repr(value)


@dataclass(slots=True)
class _Open:
    """The step of the wafer in the tool now."""

    lot: str
    slot: str
    recipe: str
    start_ns: int
    first_seen_ns: int
    start_from_tool: bool
    n: npt.NDArray[np.int64]
    total: npt.NDArray[np.float64]
    lo: npt.NDArray[np.float64]
    hi: npt.NDArray[np.float64]
    last: npt.NDArray[np.float64]
    bad: npt.NDArray[np.int64]
    events: list[Record] = field(default_factory=list)
    dropped: int = 0


class _Tool:
    def __init__(self, cfg: WaferTraceConfig, tags: TagRegistry) -> None:
        self.cfg = cfg
        self.wafer_id = _tag_id(tags, cfg.wafer_tag, cfg.name, "wafer_tag")
        self.lot_id = _tag_id(tags, cfg.lot_tag, cfg.name, "lot_tag") if cfg.lot_tag else -1
        self.elapsed_id = (_tag_id(tags, cfg.elapsed_tag, cfg.name, "elapsed_tag")
                           if cfg.elapsed_tag else -1)
        # A text recipe tag arrives as TextValue records and may be unknown to the registry.
        recipe = tags.get(cfg.recipe_tag) if cfg.recipe_tag else None
        self.recipe_id = recipe.id if recipe is not None else -1
        device = cfg.wafer_tag.rsplit("/", 1)[0]
        keys = list(cfg.tags) or [t.key for t in tags if t.device == device]
        self.keys = keys
        self.sum_ids = np.array([_tag_id(tags, k, cfg.name, "tags") for k in keys], np.int32)
        control = [i for i in (self.wafer_id, self.lot_id, self.elapsed_id, self.recipe_id)
                   if i >= 0]
        self.control = np.array(control, np.int32)
        self.all_ids = np.union1d(self.sum_ids, self.control).astype(np.int32)
        self._all_set = TagSet(self.all_ids)
        # tag id -> its place among the summarised tags (-1: not summarised); a tag
        # listed twice in ``tags`` has two slots, summarised alike
        self._place = np.full(int(self.all_ids.max(initial=-1)) + 2, -1, np.intp)
        self._slots: list[list[int]] = []
        for j, tag in enumerate(self.sum_ids.tolist()):
            if self._place[tag] < 0:
                self._place[tag] = len(self._slots)
                self._slots.append([])
            self._slots[int(self._place[tag])].append(j)
        self._control_set = TagSet(self.control)
        self.tag_keys = {*keys, *(k for k in (cfg.wafer_tag, cfg.lot_tag, cfg.elapsed_tag,
                                              cfg.recipe_tag) if k)}
        self.lot = ""
        self.recipe = ""
        self.open: _Open | None = None
        self.last: WaferStep | None = None

    # ------------------------------------------------------------------ per batch

    def feed(self, batch: SampleBatch, records: Sequence[Record], out: list[Record]) -> bool:
        """Take a batch; True when a record was made or taken (a checkpoint is due)."""
        made = len(out)
        events = [r for r in records if self._mine(r)]
        must = bool(events)
        for rec in records:
            if (isinstance(rec, TextValue) and rec.tag == self.cfg.recipe_tag
                    and not rec.quality & _BAD):
                self.recipe = rec.value
                must = True
        if len(batch):
            idx = np.flatnonzero(self._all_set.contains(batch.tag_id))
        else:
            idx = np.empty(0, np.intp)
        if idx.shape[0]:
            order = np.argsort(batch.ts_ns[idx], kind="stable")
            idx = idx[order]
            tid, ts = batch.tag_id[idx], batch.ts_ns[idx]
            val, q = batch.value[idx], batch.quality[idx]
            ctl = np.flatnonzero(self._control_set.contains(tid) & (q < _BAD) & np.isfinite(val))
            done = 0  # subset rows [0, done) are summarised
            k = 0
            while k < ctl.shape[0]:
                t = int(ts[ctl[k]])
                group = []
                while k < ctl.shape[0] and int(ts[ctl[k]]) == t:
                    group.append(int(ctl[k]))
                    k += 1
                done, events = self._control(group, tid, ts, val, q, done, events, out)
            self._summarise(tid, val, q, done, tid.shape[0])
        if self.open is not None:
            self._attach(self.open, events)
        return must or len(out) > made

    def _control(self, group: list[int], tid: npt.NDArray[np.int32],
                 ts: npt.NDArray[np.int64], val: npt.NDArray[np.float64],
                 q: npt.NDArray[np.uint8], done: int, events: list[Record],
                 out: list[Record]) -> tuple[int, list[Record]]:
        """Readings of the control tags at one timestamp: maybe a wafer change."""
        t = int(ts[group[0]])
        slot: str | None = None
        elapsed: float | None = None
        for i in group:
            tag, v = int(tid[i]), float(val[i])
            if tag == self.lot_id:
                self.lot = _fmt(v)
            elif tag == self.recipe_id:
                self.recipe = _fmt(v)
            elif tag == self.elapsed_id and v >= 0:
                elapsed = v
            if tag == self.wafer_id:
                slot = _fmt(v)
        now = self.open
        start = t if elapsed is None else t - round(elapsed * 1e9)
        if slot is not None and (now is None or (self.lot, slot) != (now.lot, now.slot)):
            cut = done + int(np.searchsorted(ts[done:], t, side="left"))
            if now is not None:
                self._summarise(tid, val, q, done, cut)
                earlier = [e for e in events if e.ts_ns < t]
                events = [e for e in events if e.ts_ns >= t]
                self._attach(now, earlier)
                self.last = self._close(now, max(start, now.start_ns))
                out.append(self.last)
            done = cut
            self.open = self._new(slot, start, t, elapsed is not None)
        elif now is not None and elapsed is not None and not now.start_from_tool:
            now.start_ns, now.start_from_tool = start, True
        return done, events

    def _new(self, slot: str, start: int, seen: int, from_tool: bool) -> _Open:
        n = self.sum_ids.shape[0]
        return _Open(
            lot=self.lot, slot=slot, recipe=self.recipe, start_ns=start, first_seen_ns=seen,
            start_from_tool=from_tool, n=np.zeros(n, np.int64), total=np.zeros(n),
            lo=np.full(n, math.inf), hi=np.full(n, -math.inf), last=np.full(n, math.nan),
            bad=np.zeros(n, np.int64))

    def _summarise(self, tid: npt.NDArray[np.int32], val: npt.NDArray[np.float64],
                   q: npt.NDArray[np.uint8], a: int, b: int) -> None:
        """Add rows ``[a, b)`` (in time order) to the open step's per-tag summary: the
        rows grouped by tag in one sort, then one update per tag present (a loop over
        every summarised tag with ten numpy calls each was most of the stage's time)."""
        step = self.open
        if step is None or b <= a:
            return
        place = self._place[np.minimum(tid[a:b], self._place.shape[0] - 1)]
        mine = place >= 0
        if not mine.any():
            return
        place, val, q = place[mine], val[a:b][mine], q[a:b][mine]
        bad = q >= _BAD
        if bad.any():
            for u, n in zip(*np.unique(place[bad], return_counts=True), strict=True):
                for j in self._slots[int(u)]:
                    step.bad[j] += int(n)
        good = ~bad & np.isfinite(val)
        if not good.any():
            return
        place, val = place[good], val[good]
        order = np.argsort(place, kind="stable")  # keeps each tag's rows in time order
        place, val = place[order], val[order]
        starts = np.flatnonzero(np.concatenate(([True], place[1:] != place[:-1])))
        ends = np.append(starts[1:], place.shape[0])
        lows = np.minimum.reduceat(val, starts).tolist()
        highs = np.maximum.reduceat(val, starts).tolist()
        lasts = val[ends - 1].tolist()
        vals = val.tolist()
        for k, (u, s, e) in enumerate(zip(place[starts].tolist(), starts.tolist(),
                                           ends.tolist(), strict=True)):
            # the same float as numpy's sum, bit for bit (it starts from +0.0 and adds in
            # order up to 8 values; pairwise beyond): a numpy call only for 3 or more
            if e - s <= 2:
                total = 0.0 + vals[s] + (vals[s + 1] if e - s == 2 else 0.0)
            else:
                total = float(val[s:e].sum())
            for j in self._slots[u]:
                step.n[j] += e - s
                step.total[j] += total
                step.lo[j] = min(step.lo[j], lows[k])
                step.hi[j] = max(step.hi[j], highs[k])
                step.last[j] = lasts[k]

    def _attach(self, step: _Open, events: Sequence[Record]) -> None:
        room = self.cfg.max_events - len(step.events)
        step.events.extend(events[:max(0, room)])
        step.dropped += max(0, len(events) - max(0, room))

    def _close(self, step: _Open, end_ns: int) -> WaferStep:
        telemetry = []
        for j, key in enumerate(self.keys):
            n = int(step.n[j])
            telemetry.append(TagSummary(
                tag=key, n=n, min=float(step.lo[j]) if n else math.nan,
                mean=float(step.total[j]) / n if n else math.nan,
                max=float(step.hi[j]) if n else math.nan, last=float(step.last[j]),
                bad=int(step.bad[j])))
        wafer = step.slot
        if self.cfg.lot_tag:
            wafer = f"{step.lot}.{int(step.slot):02d}" if step.slot.isdigit() else \
                f"{step.lot}.{step.slot}"
        return WaferStep(
            ts_ns=end_ns, tool=self.cfg.name, lot=step.lot, wafer=wafer,
            recipe=step.recipe, start_ns=step.start_ns, end_ns=end_ns,
            first_seen_ns=step.first_seen_ns, telemetry=telemetry,
            trips=[e for e in step.events if isinstance(e, InterlockTrip)],
            quarantines=[e for e in step.events if isinstance(e, Quarantine)],
            spc_alarms=[e for e in step.events if isinstance(e, SpcViolation)],
            dropped=step.dropped)

    def _mine(self, rec: Record) -> bool:
        if isinstance(rec, InterlockTrip):
            return rec.tag in self.tag_keys or self.cfg.wafer_tag in rec.context
        if isinstance(rec, Quarantine):
            return rec.where in self.tag_keys
        if isinstance(rec, SpcViolation):
            return rec.alarm and rec.tag in self.tag_keys
        return False

    def dump(self) -> dict[str, Any]:
        d: dict[str, Any] = {"lot": self.lot, "recipe": self.recipe, "keys": self.keys,
                             "last": encode_records([self.last]) if self.last else None}
        st = self.open
        if st is not None:
            d["open"] = {
                "lot": st.lot, "slot": st.slot, "recipe": st.recipe, "start_ns": st.start_ns,
                "first_seen_ns": st.first_seen_ns, "start_from_tool": st.start_from_tool,
                "n": st.n.tobytes(), "total": st.total.tobytes(), "lo": st.lo.tobytes(),
                "hi": st.hi.tobytes(), "last": st.last.tobytes(), "bad": st.bad.tobytes(),
                "events": encode_records(st.events), "dropped": st.dropped}
        return d

    def load(self, d: dict[str, Any]) -> None:
        self.lot, self.recipe = str(d["lot"]), str(d["recipe"])
        last = decode_records(d["last"]) if d["last"] is not None else []
        self.last = last[0] if last and isinstance(last[0], WaferStep) else None
        o = d.get("open")
        if o is None:
            return
        step = self._new(str(o["slot"]), int(o["start_ns"]), int(o["first_seen_ns"]),
                         bool(o["start_from_tool"]))
        step.lot, step.recipe = str(o["lot"]), str(o["recipe"])
        step.events, step.dropped = decode_records(o["events"]), int(o["dropped"])
        if list(d["keys"]) == self.keys:
            step.n[:] = np.frombuffer(o["n"], np.int64)
            step.total[:] = np.frombuffer(o["total"], np.float64)
            step.lo[:] = np.frombuffer(o["lo"], np.float64)
            step.hi[:] = np.frombuffer(o["hi"], np.float64)
            step.last[:] = np.frombuffer(o["last"], np.float64)
            step.bad[:] = np.frombuffer(o["bad"], np.int64)
        self.open = step

    def state(self) -> dict[str, object] | None:
        """The last step this tool made, in counts (the status's ``last_wafer``)."""
        s = self.last
        if s is None:
            return None
        return {"tool": s.tool, "lot": s.lot, "wafer": s.wafer, "recipe": s.recipe,
                "start_ns": s.start_ns, "end_ns": s.end_ns, "trips": len(s.trips),
                "quarantines": len(s.quarantines), "spc_alarms": len(s.spc_alarms)}


class Trace:
    """The digital-thread stage: follows each configured tool's wafers."""

    name = "trace"

    def __init__(self, configs: Sequence[WaferTraceConfig], tags: TagRegistry,
                 ctx: BuildContext | None = None) -> None:
        names = [c.name for c in configs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"wafer_steps: tool {twice[0]!r} configured twice")
        self.tools = [_Tool(cfg, tags) for cfg in configs]
        self.checkpoint_key = "stage:trace"
        self._save = stage_state.SaveClock()

    def process(self, batch: SampleBatch, records: Sequence[Record], now_ns: int) -> StageOutput:
        out = StageOutput(batch, list(records))
        for tool in self.tools:
            if tool.feed(batch, records, out.records):
                self._save.must = True
        if len(batch):
            self._save.changed = True
        return out

    def snapshot(self, mono_ns: int) -> bytes | None:
        """Each tool's open step (its summary so far and its events) and last step, when a
        checkpoint is due (``stage_state``)."""
        if not self._save.due(mono_ns):
            return None
        return stage_state.dumps({"tools": {t.cfg.name: t.dump() for t in self.tools}})

    def restore(self, data: bytes) -> None:
        """Take back a snapshot; tools are matched by name (a tool whose summarised tags
        changed in the config starts its open step's summary afresh)."""
        saved = stage_state.loads(data, "trace")["tools"]
        for tool in self.tools:
            if tool.cfg.name in saved:
                tool.load(saved[tool.cfg.name])

    def tick(self, now_ns: int) -> StageOutput:
        return StageOutput(SampleBatch.empty())

    def states(self) -> dict[str, dict[str, object]]:
        """Per tool that has made one: its last wafer step (the status document keeps the
        one that ended last)."""
        return {t.cfg.name: st for t in self.tools if (st := t.state()) is not None}


def _tag_id(tags: TagRegistry, key: str, tool: str, what: str) -> int:
    try:
        return tags.id_of(key)
    except KeyError:
        raise ConfigError(f"wafer_steps '{tool}': {what}: tag '{key}' is not declared by any "
                          f"source") from None
