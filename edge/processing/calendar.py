"""The planned-time calendar of OEE and energy: shifts and planned breaks, by the minute.

Invariants:

* Time is cut into whole minutes (UTC plus ``utc_offset_min``, the plant's local time
  without daylight saving). Shifts and breaks start and end on a minute ("HH:MM"), so
  every minute lies wholly in one shift or none, and wholly in a break or not: per-minute
  accumulators (``minute_of``) add up exactly to a shift's totals.
* A shift may cross midnight (22:00-06:00); shifts must not overlap. A minute outside
  every shift belongs to no shift and is never planned. A break is planned time off: its
  minutes belong to their shift but are not planned production time.
* A shift is named by its name and the UTC time it started; ``shift_of`` gives that pair
  and the shift's end for any minute, so a report can be closed when time passes its end.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from edge.config import ConfigStruct

MINUTE_NS = 60_000_000_000
DAY_MIN = 1440


def _span(start: str, end: str) -> tuple[int, int]:
    """First minute of day and length in minutes ("00:00"-"24:00" is the whole day)."""
    a, b = _minute_of_day(start, "start"), _minute_of_day(end, "end")
    return a % DAY_MIN, (b - a) % DAY_MIN or (DAY_MIN if a != b else 0)


def _minute_of_day(text: str, key: str) -> int:
    hh, sep, mm = text.partition(":")
    if not sep or not hh.isdigit() or not mm.isdigit() or len(mm) != 2:
        raise ValueError(f"{key} must be 'HH:MM', got {text!r}")
    h, m = int(hh), int(mm)
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ValueError(f"{key} must be a time of day 00:00-24:00, got {text!r}")
    return h * 60 + m


class ShiftConfig(ConfigStruct, frozen=True):
    """One shift of every day: name and start/end time of day ("HH:MM", local)."""

    name: str
    start: str
    end: str

    def __post_init__(self) -> None:
        a, b = _minute_of_day(self.start, "start"), _minute_of_day(self.end, "end")
        if a == b:
            raise ValueError(f"shift '{self.name}': start and end must differ")


class BreakConfig(ConfigStruct, frozen=True):
    """A planned break of every day ("HH:MM"-"HH:MM", local): not planned production time."""

    start: str
    end: str

    def __post_init__(self) -> None:
        _minute_of_day(self.start, "start")
        _minute_of_day(self.end, "end")


def _default_shifts() -> list[ShiftConfig]:
    return [ShiftConfig(name="early", start="06:00", end="14:00"),
            ShiftConfig(name="late", start="14:00", end="22:00"),
            ShiftConfig(name="night", start="22:00", end="06:00")]


class CalendarConfig(ConfigStruct, frozen=True):
    """Shifts and planned breaks (the same every day); ``utc_offset_min``: local time
    minus UTC in minutes (no daylight saving: change it with the clocks)."""

    shifts: list[ShiftConfig] = msgspec.field(default_factory=_default_shifts)
    breaks: list[BreakConfig] = msgspec.field(default_factory=list)
    utc_offset_min: int = 0

    def __post_init__(self) -> None:
        if not self.shifts:
            raise ValueError("shifts must list at least one shift (no shift: nothing is planned)")
        _table(self)


@dataclass(frozen=True, slots=True)
class Shift:
    """One shift on one day: its name, first minute (UTC, absolute) and end minute."""

    name: str
    start_min: int
    end_min: int

    @property
    def start_ns(self) -> int:
        return self.start_min * MINUTE_NS

    @property
    def end_ns(self) -> int:
        return self.end_min * MINUTE_NS


def _table(cfg: CalendarConfig) -> tuple[list[int], list[int], list[bool]]:
    """Per minute of the local day: shift index (-1 none), minutes since that shift
    started, planned. ValueError for overlapping shifts."""
    shift = [-1] * DAY_MIN
    since = [0] * DAY_MIN
    for i, s in enumerate(cfg.shifts):
        a, length = _span(s.start, s.end)
        for k in range(length):
            m = (a + k) % DAY_MIN
            if shift[m] >= 0:
                raise ValueError(f"shifts '{cfg.shifts[shift[m]].name}' and '{s.name}' overlap")
            shift[m], since[m] = i, k
    planned = [s >= 0 for s in shift]
    for br in cfg.breaks:
        a, length = _span(br.start, br.end)
        for k in range(length):
            planned[(a + k) % DAY_MIN] = False
    return shift, since, planned


class Calendar:
    """Lookups on a ``CalendarConfig``, by absolute minute (``ts_ns // MINUTE_NS``)."""

    def __init__(self, cfg: CalendarConfig) -> None:
        self.cfg = cfg
        self._shift, self._since, self._planned = _table(cfg)
        self._lengths = [_span(s.start, s.end)[1] for s in cfg.shifts]

    def _local(self, minute: int) -> int:
        return (minute + self.cfg.utc_offset_min) % DAY_MIN

    def planned(self, minute: int) -> bool:
        """Whether the minute is planned production time (in a shift, not in a break)."""
        return self._planned[self._local(minute)]

    def shift_of(self, minute: int) -> Shift | None:
        """The shift the minute belongs to, None outside every shift."""
        m = self._local(minute)
        i = self._shift[m]
        if i < 0:
            return None
        start = minute - self._since[m]
        return Shift(self.cfg.shifts[i].name, start, start + self._lengths[i])

    def next_shift(self, ts_ns: int) -> Shift | None:
        """The shift that holds ``ts_ns`` or, outside every shift, the next one to start
        (None: the calendar has no shift)."""
        m = ts_ns // MINUTE_NS
        for k in range(DAY_MIN + 1):
            sh = self.shift_of(m + k)
            if sh is not None:
                return sh
        return None

    def planned_minutes(self, start_min: int, end_min: int) -> int:
        """Planned minutes in ``[start_min, end_min)``."""
        return sum(self.planned(m) for m in range(start_min, end_min))


def minute_of(ts_ns: int) -> int:
    return ts_ns // MINUTE_NS
