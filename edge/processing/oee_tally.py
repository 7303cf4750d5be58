"""OEE bookkeeping of one tool: its state samples and part counts cut into per-minute
time and counts, by cause.

Invariants:

* The state of a tool holds from one good state sample to the next (sample and hold);
  an interval longer than ``max_gap_s`` is ``no_data`` whatever the states around it.
  Bad samples are skipped, so a single Bad poll never costs a second of availability.
  Samples not later than the last one used (duplicates, out of order) are ignored.
* Time is cut at minute boundaries exactly, so per-minute sums add up to any calendar
  period (``edge.processing.calendar``).
* A stop is classified when it ends, by what happened during it: an interlock trip (the
  tool's trip bits, or an ``InterlockTrip`` of one of its interlocks, from
  ``TRIP_LEAD_NS`` before the stop to its end) -> ``interlock``; else at most
  ``microstop_max_s`` long -> ``micro``; else ``fault``. Until then its time is kept
  as pending; a report closed during a stop classifies it by what is known so far.
* A part is counted in the minute its counter advanced; parts it advanced by across a
  gap longer than ``max_gap_s`` (a dead link, the gateway restarting) are ``UNSEEN``:
  in the count and the quality, but not in performance, whose run time the gap left out
  too; it is scrap when the tool's trip
  bits rose between the previous part and it (``scrap_on_trip``: the tool itself says
  its process limit was passed; a gateway interlock that stops the tool early, on a
  reading, classifies the stop but does not scrap the part). A CMM verdict per part (the
  worst of its features: conforming good, nonconforming scrap, indeterminate rework)
  replaces that judgement when a quality device is configured.
* Per-sample work is numpy over the batch; Python loops run per change of state, per
  part and per minute touched, never per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.processing import stage_state
from edge.processing.calendar import MINUTE_NS

# columns of a minute
RUN, NO_DATA, DOWN_TRIP, DOWN_FAULT, DOWN_MICRO = 0, 1, 2, 3, 4  # ns
COUNT, GOOD, SCRAP, REWORK, TRIPS, STOPS, MICROS = 5, 6, 7, 8, 9, 10, 11
UNSEEN = 12  # parts the counter made across a gap (no data): counted, not in performance
N_COLS = 13
TRIP_LEAD_NS = 5_000_000_000
_VERDICT_COL = {"conforming": GOOD, "nonconforming": SCRAP, "indeterminate": REWORK}
_VERDICT_RANK = {GOOD: 0, REWORK: 1, SCRAP: 2}


@dataclass(slots=True)
class ToolTally:
    """The running tally of one tool (see the module docstring)."""

    max_gap_ns: int
    microstop_max_ns: int
    count_wrap: int
    scrap_on_trip: bool
    judged_by_cmm: bool
    count_by_cmm: bool = False  # no counter: each part the CMM judges is one part made
    minutes: dict[int, npt.NDArray[np.float64]] = field(default_factory=dict)
    last_ts: int = -1
    last_up: bool = True
    last_trip: bool = False
    stop_start: int = -1
    stop_trip: bool = False
    pending: list[tuple[int, int]] = field(default_factory=list)  # (minute, ns) of a stop
    trip_rises: list[int] = field(default_factory=list)  # the trip bits rose (the tool's)
    il_trips: list[int] = field(default_factory=list)  # InterlockTrip records (the gateway's)
    last_count: float = float("nan")
    last_count_ts: int = -1
    last_high: bool = True
    no_data_ns: int = 0  # every gap counted, for the metric
    last_part_ts: int = -(2**62)
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)  # part -> (minute, col)

    def row(self, minute: int) -> npt.NDArray[np.float64]:
        r = self.minutes.get(minute)
        if r is None:
            r = self.minutes[minute] = np.zeros(N_COLS)
        return r

    def spread(self, t0: int, t1: int, col: int) -> list[tuple[int, int]]:
        """Add ``[t0, t1)`` to ``col`` of the minutes it covers; the pieces."""
        pieces = []
        while t0 < t1:
            m = t0 // MINUTE_NS
            end = min(t1, (m + 1) * MINUTE_NS)
            self.row(m)[col] += end - t0
            pieces.append((m, end - t0))
            t0 = end
        return pieces

    # ------------------------------------------------------------------ state

    def states(self, ts: npt.NDArray[np.int64], up: npt.NDArray[np.bool_],
               trip: npt.NDArray[np.bool_]) -> None:
        """Take the tool's good state samples (times, running, trip bits set)."""
        if ts.shape[0]:
            before = np.maximum.accumulate(np.concatenate(([self.last_ts], ts[:-1])))
            keep = ts > before
            ts, up, trip = ts[keep], up[keep], trip[keep]
        if not ts.shape[0]:
            return
        if self.last_ts < 0:  # the first sample: what it shows began before it
            self.last_ts, self.last_up, self.last_trip = int(ts[0]), bool(up[0]), bool(trip[0])
            if not self.last_up:
                self.stop_start, self.stop_trip = int(ts[0]), bool(trip[0])
                self.row(int(ts[0]) // MINUTE_NS)[STOPS] += 1
            ts, up, trip = ts[1:], up[1:], trip[1:]
            if not ts.shape[0]:
                return
        prev_trip = np.concatenate(([self.last_trip], trip[:-1]))
        self.trip_rises.extend(int(x) for x in ts[trip & ~prev_trip])
        prev_t = np.concatenate(([self.last_ts], ts[:-1]))
        prev_up = np.concatenate(([self.last_up], up[:-1]))
        gap = (ts - prev_t) > self.max_gap_ns
        code = gap.astype(np.int8) * 2 + prev_up.astype(np.int8)
        edges = np.flatnonzero(np.diff(code)) + 1
        starts = np.concatenate(([0], edges)).tolist()
        ends = np.concatenate((edges, [ts.shape[0]])).tolist()
        # within a run of one code only its last sample can change the state
        for a, b in zip(starts, ends, strict=True):
            t0, t1 = int(prev_t[a]), int(ts[b - 1])
            if gap[a]:
                self.spread(t0, t1, NO_DATA)
                self.no_data_ns += t1 - t0
            elif prev_up[a]:
                self.spread(t0, t1, RUN)
            else:
                self.pending += self.spread(t0, t1, DOWN_FAULT)  # moved when classified
                self.stop_trip |= bool(trip[a:b].any())
            j = b - 1
            if up[j] != prev_up[j]:
                if up[j]:
                    self.end_stop(int(ts[j]))
                else:
                    self.stop_start, self.stop_trip = int(ts[j]), bool(trip[j])
                    self.row(int(ts[j]) // MINUTE_NS)[STOPS] += 1
        self.last_ts, self.last_up, self.last_trip = int(ts[-1]), bool(up[-1]), bool(trip[-1])

    def end_stop(self, t_end: int) -> None:
        """Move the pending stop time to its cause (a stop still going: provisional)."""
        if self.stop_start < 0:
            return
        col = self.cause(t_end)
        for m, ns in self.pending:
            r = self.row(m)
            r[DOWN_FAULT] -= ns
            r[col] += ns
        if col == DOWN_TRIP:
            self.row(self.stop_start // MINUTE_NS)[TRIPS] += 1
        elif col == DOWN_MICRO:
            self.row(self.stop_start // MINUTE_NS)[MICROS] += 1
        self.pending = []
        self.stop_start, self.stop_trip = -1, False

    def cause(self, t_end: int) -> int:
        a = self.stop_start - TRIP_LEAD_NS
        if self.stop_trip or any(a <= r <= t_end for r in self.trip_rises + self.il_trips):
            return DOWN_TRIP
        if t_end - self.stop_start <= self.microstop_max_ns:
            return DOWN_MICRO
        return DOWN_FAULT

    def provisional(self) -> dict[int, tuple[int, int]]:
        """The pending stop as it would be classified now: minute -> (column, ns)."""
        if self.stop_start < 0 or not self.pending:
            return {}
        col = self.cause(self.last_ts)
        return {m: (col, ns) for m, ns in self.pending}

    def trip(self, ts_ns: int) -> None:
        """An InterlockTrip of one of the tool's interlocks: a stop about then is an
        interlock stop (its part is not scrapped for it: the tool's trip bits say that)."""
        self.il_trips.append(ts_ns)
        self.il_trips = [x for x in self.il_trips if x > ts_ns - 86_400_000_000_000]
        if self.stop_start >= 0 and ts_ns >= self.stop_start - TRIP_LEAD_NS:
            self.stop_trip = True

    # ------------------------------------------------------------------ parts

    def counts(self, ts: npt.NDArray[np.int64], value: npt.NDArray[np.float64]) -> None:
        """Take the good samples of the part counter."""
        keep = ts > self.last_count_ts
        ts, value = ts[keep], value[keep]
        if not ts.shape[0]:
            return
        prev = np.concatenate(([self.last_count], value[:-1]))
        prev_ts = np.concatenate(([self.last_count_ts], ts[:-1]))
        step = value - prev
        if self.count_wrap > 0:
            step = np.mod(step, self.count_wrap)
        step = np.where(np.isfinite(step) & (step > 0), step, 0.0)
        for i in np.flatnonzero(step).tolist():
            self.part(int(ts[i]), int(step[i]))
            if ts[i] - prev_ts[i] > self.max_gap_ns:
                self.row(int(ts[i]) // MINUTE_NS)[UNSEEN] += int(step[i])
        self.last_count, self.last_count_ts = float(value[-1]), int(ts[-1])

    def rising(self, ts: npt.NDArray[np.int64], high: npt.NDArray[np.bool_]) -> None:
        """Take the good samples of a part signal (a light barrier): each rise is a part.
        A signal already high when first seen is not a part."""
        keep = ts > self.last_count_ts
        ts, high = ts[keep], high[keep]
        if not ts.shape[0]:
            return
        prev = np.concatenate(([self.last_high], high[:-1]))
        for i in np.flatnonzero(high & ~prev).tolist():
            self.part(int(ts[i]), 1)
        self.last_high, self.last_count_ts = bool(high[-1]), int(ts[-1])

    def starts(self, ts: npt.NDArray[np.int64], current: npt.NDArray[np.float64],
               stopped_below: float, idle_below: float, start_above: float) -> None:
        """Take the good samples of a motor's current: each start from idle (a sample above
        ``start_above`` whose previous one was idle: at least ``stopped_below`` and below
        ``idle_below``) is a part."""
        keep = ts > self.last_count_ts
        ts, current = ts[keep], current[keep]
        if not ts.shape[0]:
            return
        prev = np.concatenate(([self.last_count], current[:-1]))
        start = (current >= start_above) & (prev >= stopped_below) & (prev < idle_below)
        for i in np.flatnonzero(start).tolist():
            self.part(int(ts[i]), 1)
        self.last_count, self.last_count_ts = float(current[-1]), int(ts[-1])

    def part(self, t: int, n: int) -> None:
        r = self.row(t // MINUTE_NS)
        r[COUNT] += n
        if not self.judged_by_cmm:
            scrap = self.scrap_on_trip and any(self.last_part_ts < x <= t
                                               for x in self.trip_rises)
            r[SCRAP] += 1 if scrap else 0
            r[GOOD] += n - (1 if scrap else 0)
        self.last_part_ts = t
        self.trip_rises = [x for x in self.trip_rises if x > t - TRIP_LEAD_NS - MINUTE_NS]

    def verdict(self, part_id: str, ts_ns: int, verdict: str) -> None:
        """A CMM verdict of one feature of a part (a part is its worst feature)."""
        col = _VERDICT_COL.get(verdict)
        if col is None:
            return
        seen = self.parts.get(part_id)
        if seen is None:
            m = ts_ns // MINUTE_NS
            self.row(m)[col] += 1
            if self.count_by_cmm:
                self.row(m)[COUNT] += 1
            self.parts[part_id] = (m, col)
        elif _VERDICT_RANK[col] > _VERDICT_RANK[seen[1]]:
            r = self.row(seen[0])
            r[seen[1]] -= 1
            r[col] += 1
            self.parts[part_id] = (seen[0], col)

    def prune(self, before_minute: int) -> None:
        for k in [k for k in self.minutes if k < before_minute]:
            del self.minutes[k]
        self.parts = {p: v for p, v in self.parts.items() if v[0] >= before_minute}

    # ------------------------------------------------------------------ restart

    def dump(self, minutes: dict[int, npt.NDArray[np.float64]]) -> dict[str, Any]:
        """Everything the tally knows, for a checkpoint (``load`` takes it back), with
        ``minutes`` standing for its per-minute sums (``stage_state.compact``)."""
        return {
            **stage_state.rows(minutes, N_COLS),
            "last": [self.last_ts, self.last_up, self.last_trip, self.stop_start,
                     self.stop_trip, self.last_count, self.last_count_ts, self.last_high,
                     self.no_data_ns, self.last_part_ts],
            "pending": self.pending, "trip_rises": self.trip_rises,
            "il_trips": self.il_trips,
            "parts": {p: list(v) for p, v in self.parts.items()}}

    def load(self, d: dict[str, Any]) -> None:
        self.minutes = stage_state.unrows(d, N_COLS)
        (self.last_ts, self.last_up, self.last_trip, self.stop_start, self.stop_trip,
         self.last_count, self.last_count_ts, self.last_high, self.no_data_ns,
         self.last_part_ts) = d["last"]
        self.pending = [(int(m), int(ns)) for m, ns in d["pending"]]
        self.trip_rises = [int(x) for x in d["trip_rises"]]
        self.il_trips = [int(x) for x in d["il_trips"]]
        self.parts = {str(p): (int(v[0]), int(v[1])) for p, v in d["parts"].items()}
