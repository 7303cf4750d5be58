"""The planned-time calendar: shifts across midnight, planned breaks, and config errors."""

from __future__ import annotations

import msgspec
import pytest

from edge.processing.calendar import MINUTE_NS, BreakConfig, Calendar, CalendarConfig, ShiftConfig

DAY0_MIN = 1_796_083_200 // 60  # a midnight, UTC


def _cal(**kw: object) -> Calendar:
    return Calendar(msgspec.convert(kw, CalendarConfig))


def test_default_three_shifts_and_a_night_shift_across_midnight() -> None:
    """The default calendar has early, late and night; 03:00 belongs to the night shift
    that began at 22:00 the day before and ends at 06:00."""
    cal = Calendar(CalendarConfig())
    sh = cal.shift_of(DAY0_MIN + 3 * 60)
    assert sh is not None and sh.name == "night"
    assert sh.start_min == DAY0_MIN - 2 * 60 and sh.end_min == DAY0_MIN + 6 * 60
    assert cal.shift_of(DAY0_MIN + 6 * 60).name == "early"  # type: ignore[union-attr]
    assert cal.planned_minutes(DAY0_MIN, DAY0_MIN + 1440) == 1440


def test_breaks_are_not_planned_and_time_outside_shifts_belongs_to_none() -> None:
    """A break's minutes belong to their shift but are not planned; outside every shift
    no minute is planned and next_shift finds the coming one."""
    cal = _cal(shifts=[{"name": "day", "start": "08:00", "end": "16:00"}],
               breaks=[{"start": "12:00", "end": "12:30"}])
    assert cal.planned_minutes(DAY0_MIN, DAY0_MIN + 1440) == 8 * 60 - 30
    assert cal.shift_of(DAY0_MIN + 12 * 60 + 10) is not None
    assert not cal.planned(DAY0_MIN + 12 * 60 + 10)
    assert cal.shift_of(DAY0_MIN + 7 * 60) is None
    nxt = cal.next_shift((DAY0_MIN + 20 * 60) * MINUTE_NS)
    assert nxt is not None and nxt.start_min == DAY0_MIN + 1440 + 8 * 60


def test_utc_offset_moves_the_shifts() -> None:
    """With utc_offset_min = 60 a 06:00 local shift starts at 05:00 UTC."""
    cal = _cal(utc_offset_min=60, shifts=[{"name": "a", "start": "06:00", "end": "14:00"}])
    sh = cal.shift_of(DAY0_MIN + 5 * 60)
    assert sh is not None and sh.start_min == DAY0_MIN + 5 * 60


@pytest.mark.parametrize(("shifts", "message"), [
    ([], "shifts must list at least one shift"),
    ([{"name": "a", "start": "6:00", "end": "25:00"}], "end must be a time of day"),
    ([{"name": "a", "start": "06:00", "end": "6:0"}], "end must be 'HH:MM'"),
    ([{"name": "a", "start": "06:00", "end": "06:00"}], "start and end must differ"),
    ([{"name": "a", "start": "06:00", "end": "14:00"},
      {"name": "b", "start": "13:00", "end": "22:00"}], "shifts 'a' and 'b' overlap"),
])
def test_bad_calendars_are_refused_with_the_reason(shifts: list[dict[str, str]],
                                                   message: str) -> None:
    """A malformed time, an empty shift or overlapping shifts are config errors."""
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert({"shifts": shifts}, CalendarConfig)


def test_break_config_checks_its_times() -> None:
    """A break with a malformed time is refused."""
    with pytest.raises(ValueError, match="start must be 'HH:MM'"):
        BreakConfig(start="12", end="12:30")
    assert ShiftConfig(name="x", start="00:00", end="24:00").end == "24:00"


def test_a_whole_day_shift() -> None:
    """One shift 00:00-24:00 covers the whole day."""
    cal = _cal(shifts=[{"name": "day", "start": "00:00", "end": "24:00"}])
    sh = cal.shift_of(DAY0_MIN + 600)
    assert sh is not None and (sh.start_min, sh.end_min) == (DAY0_MIN, DAY0_MIN + 1440)
