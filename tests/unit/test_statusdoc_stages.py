"""The status document carries OEE, energy and the last wafer step from the real stages,
as strict JSON, and the terminal view shows them within 80 columns."""

from __future__ import annotations

import json
import math

import msgspec
import numpy as np
import pytest

from edge.model import EnergyReport, InterlockTrip, OeeReport, SampleBatch, TagRegistry
from edge.processing.calendar import CalendarConfig, ShiftConfig
from edge.processing.energy import Energy, EnergyConfig, EnergyMotorConfig
from edge.processing.oee import Oee, OeeConfig, OeeToolConfig
from edge.processing.trace import Trace, WaferTraceConfig
from edge.runtime.statusdoc import JournalDepth, StatusDoc, build_status, encode
from edge.runtime.view import render

S = 1_000_000_000
DAY0 = 1_796_083_200 * S  # a midnight, UTC
CAL = CalendarConfig(shifts=[ShiftConfig(name="early", start="06:00", end="14:00"),
                             ShiftConfig(name="late", start="14:00", end="22:00")])


def _doc(stage_states: dict[str, dict[str, dict[str, object]]]) -> StatusDoc:
    return build_status(
        gateway="gw", pid=1, uptime_s=1.0, ready=True,
        journal={"mes": JournalDepth(depth_points=0, depth_entries=0, depth_bytes=0,
                                     oldest_unsent_age_s=0.0, acked=0)},
        journal_bytes=0, journal_pending_points=0, links={}, rates={}, components={},
        sinks={}, stage_states=stage_states)


def _published(out: SampleBatch, tags: TagRegistry, into: dict[str, float]) -> None:
    for i, v in zip(out.tag_id.tolist(), out.value.tolist(), strict=True):
        into[tags[i].key] = v


def test_oee_section_is_what_the_stage_last_published_with_the_open_shift() -> None:
    """After 20 min of a running tool the document's oee section holds, per tool and line,
    the same factors as the rolling tag samples (OPC-UA ``etch1/oee``) and the open shift;
    before any sample the section is empty."""
    tags = TagRegistry()
    tags.add("etch1", "status")
    tags.add("etch1", "wafer")
    stage = Oee([OeeConfig(name="fab", calendar=CAL, publish_interval_s=10.0, tools=[
        OeeToolConfig(name="etch1", ideal_cycle_s=45.0, state_tag="etch1/status",
                      count_tag="etch1/wafer", count_wrap=25)])], tags)
    assert stage.states() == {} and _doc({"oee": stage.states()}).oee == {}
    st, wf = tags.id_of("etch1/status"), tags.id_of("etch1/wafer")
    t0 = DAY0 + 6 * 3600 * S
    published: dict[str, float] = {}
    for k in range(0, 1200, 10):  # 10 s batches at 1 Hz
        t = t0 + np.arange(k, k + 10, dtype=np.int64) * S
        wafer = ((t - t0) // (50 * S)) % 25 + 1
        out = stage.process(SampleBatch(np.repeat([st, wf], 10), np.tile(t, 2),
                                        np.concatenate([np.ones(10), wafer])), [], 0)
        _published(out.batch, tags, published)
    doc = _doc({"oee": stage.states()})
    assert set(doc.oee) == {"etch1", "fab"}
    tool = doc.oee["etch1"]
    assert (tool.scope, tool.line, tool.shift, tool.window_s) == ("tool", "fab", "early", 3600.0)
    assert doc.oee["fab"].scope == "line"
    for f in ("availability", "performance", "quality", "oee"):
        assert getattr(tool, f) == pytest.approx(published[f"etch1/{f}"])
    assert tool.availability == pytest.approx(1.0)
    assert 0.8 < tool.performance < 1.0  # 50 s cycles against an ideal 45 s


def test_energy_section_per_line_with_shift_kwh_per_part_and_motor_window() -> None:
    """Across a shift's end the energy section holds the new shift's kWh so far, kWh per
    good part of the closed shift (as in its EnergyReport) and each motor's window kWh
    (as the ``<motor>/energy_kwh`` samples); kWh per part is null in JSON until known."""
    cal = CalendarConfig(shifts=[ShiftConfig(name="a", start="00:00", end="12:00"),
                                 ShiftConfig(name="b", start="12:00", end="00:00")])
    tags = TagRegistry()
    names = ["hbw_belt", "conv_belt"]
    for m in names:
        tags.add(m, "current_a", unit="A")
    stage = Energy([EnergyConfig(
        name="stf", calendar=cal, parts_tools=["etch1"], close_after_s=10.0,
        motors=[EnergyMotorConfig(name=m, current_tag=f"{m}/current_a") for m in names])],
        tags)
    ids = np.array([tags.id_of(f"{m}/current_a") for m in names], np.int32)
    end_a = DAY0 + 12 * 3600 * S
    oee = OeeReport(ts_ns=end_a, start_ns=DAY0, scope="tool", name="etch1", line="fab",
                    shift="a", planned_s=1.0, run_s=1.0, no_data_s=0.0, down_interlock_s=0.0,
                    down_fault_s=0.0, down_microstop_s=0.0, speed_loss_s=0.0,
                    scrap_loss_s=0.0, rework_loss_s=0.0, availability=1.0, performance=1.0,
                    quality=1.0, oee=1.0, ideal_cycle_s=50.0, total_count=10, good_count=8,
                    scrap_count=2, rework_count=0)
    reports: list[EnergyReport] = []
    published: dict[str, float] = {}
    t = end_a - 300 * S
    first = True
    while t < end_a + 60 * S:
        ts = t + np.arange(10, dtype=np.int64) * S
        out = stage.process(SampleBatch(np.repeat(ids, 10), np.tile(ts, 2),
                                        np.repeat(np.array([1.0, 2.0]), 10)),
                            [oee] if t >= end_a + 40 * S and not reports else [], 0)
        if first:
            early = _doc({"energy": stage.states()})
            assert math.isnan(early.energy["stf"].kwh_per_good_part)
            assert json.loads(encode(early))["energy"]["stf"]["kwh_per_good_part"] is None
            first = False
        reports += [r for r in out.records if isinstance(r, EnergyReport)]
        _published(out.batch, tags, published)
        t += 10 * S
    line_report = next(r for r in reports if r.scope == "line")
    st = _doc({"energy": stage.states()}).energy["stf"]
    assert st.shift == "b"
    assert st.shift_kwh == pytest.approx(published["stf/energy_shift_kwh"])
    assert st.shift_kwh == pytest.approx(24 * 3.0 * 60 / 3.6e6)
    assert st.kwh_per_good_part == pytest.approx(line_report.kwh / 8)
    assert st.motors_kwh == pytest.approx({m: published[f"{m}/energy_kwh"] for m in names})


def test_last_wafer_is_the_step_that_ended_last_with_its_trips_counted() -> None:
    """The trace stage's last WaferStep reaches the document (id, tool, start, end, trips);
    with several tools the one that ended last wins; none made: null."""
    tags = TagRegistry()
    for n in ("chamber_temp", "lot", "wafer"):
        tags.add("etch1", n)
    stage = Trace([msgspec.convert({"name": "etch1", "wafer_tag": "etch1/wafer",
                                    "lot_tag": "etch1/lot"}, WaferTraceConfig)], tags)
    assert _doc({"last_wafer": stage.states()}).last_wafer is None
    ids = [tags.id_of(f"etch1/{n}") for n in ("chamber_temp", "lot", "wafer")]
    t0 = DAY0 + 7 * 3600 * S
    trip = InterlockTrip(ts_ns=t0 + 5 * S, interlock="etch1_overtemp",
                         tag="etch1/chamber_temp", condition="high", value=190.0,
                         limit=188.0, action="stop", action_ok=True, reaction_ns=1000)
    for k, wafer in enumerate([1] * 10 + [2]):
        stage.process(SampleBatch(ids, [t0 + k * S] * 3, [180.0, 4711, wafer]),
                      [trip] if k == 5 else [], 0)
    last = _doc({"last_wafer": stage.states()}).last_wafer
    assert last is not None
    assert (last.wafer, last.tool, last.lot) == ("4711.01", "etch1", "4711")
    assert (last.start_ns, last.end_ns, last.trips) == (t0, t0 + 10 * S, 1)
    other = {**msgspec.to_builtins(last), "tool": "etch2", "end_ns": t0 + 20 * S}
    assert _doc({"last_wafer": {"etch1": msgspec.to_builtins(last),
                                "etch2": other}}).last_wafer.tool == "etch2"  # type: ignore[union-attr]


def test_view_shows_oee_energy_and_the_last_wafer_within_80_columns() -> None:
    """The terminal view (from the daemon's JSON, nulls included) has a few lines for each,
    names cut, none wider than 80 columns."""
    long = "a_motor_with_a_very_long_name_indeed"
    doc = _doc({
        "oee": {"etch1": {"scope": "tool", "line": "fab", "shift": "early", "window_s": 3600,
                          "availability": 0.97, "performance": 0.9, "quality": 1.0,
                          "oee": 0.873},
                "fab": {"scope": "line", "line": "fab", "shift": "early", "window_s": 3600,
                        "availability": math.nan, "performance": math.nan, "quality": 1.0,
                        "oee": math.nan}},
        "energy": {"stf": {"shift": "early", "shift_kwh": 1.25, "kwh_per_good_part": math.nan,
                           "window_s": 3600,
                           "motors_kwh": {long + str(i): 0.01 * i for i in range(6)}}},
        "last_wafer": {"etch1": {"tool": "etch1", "lot": "4711", "wafer": "4711.03",
                                 "recipe": "OX-120", "start_ns": DAY0, "end_ns": DAY0 + 50 * S,
                                 "trips": 1, "quarantines": 0, "spc_alarms": 2}}})
    text = render(json.loads(encode(doc)))
    assert max(len(x) for x in text.splitlines()) <= 80
    assert " 87.3%" in text and "etch1 (tool)" in text and "fab (line)" in text
    assert "1.250 kWh" in text and "no shift closed" in text
    assert "last 3600 s (top 4 of 6;" in text and (long[:20] + " ") in text
    assert "4711.03 on etch1" in text and "after 50 s" in text and "spc alarms 2" in text
    assert render(doc) == text
