"""Stage state across a restart: OEE, energy and the wafer thread restored from their
checkpoint go on as if the gateway had only missed the samples of the time it was down."""

from __future__ import annotations

import math
from collections.abc import Callable

import msgspec
import numpy as np
import pytest

from edge.model import (
    EnergyReport,
    InterlockTrip,
    OeeReport,
    Record,
    SampleBatch,
    TagRegistry,
    WaferStep,
)
from edge.processing import stage_state
from edge.processing.calendar import CalendarConfig, ShiftConfig
from edge.processing.energy import Energy, EnergyConfig, EnergyMotorConfig
from edge.processing.oee import Oee, OeeConfig, OeeToolConfig
from edge.processing.trace import Trace, WaferTraceConfig

S = 1_000_000_000
DAY0 = 1_796_083_200 * S  # a midnight, UTC
CAL = CalendarConfig(shifts=[ShiftConfig(name="early", start="06:00", end="14:00")])
DOWN = (4 * 3600 * S, 4 * 3600 * S + 20 * S)  # the gateway is down 20 s, mid-shift


def _oee() -> tuple[Oee, TagRegistry]:
    tags = TagRegistry()
    tags.add("etch1", "status", dtype="uint16")
    tags.add("etch1", "wafer", dtype="uint16")
    tool = OeeToolConfig(name="etch1", ideal_cycle_s=45.0, state_tag="etch1/status",
                         trip_mask=8, count_tag="etch1/wafer", count_wrap=25,
                         scrap_on_trip=True, interlocks=["il"])
    return Oee([OeeConfig(name="fab", calendar=CAL, tools=[tool])], tags), tags


def _oee_batches(tags: TagRegistry) -> list[tuple[SampleBatch, list[Record]]]:
    """A shift of status and wafer polls (10 Hz) with stops of each cause, in 60 s batches,
    the 20 s of ``DOWN`` missing; an interlock trip record before the restart."""
    t0 = DAY0 + 6 * 3600 * S
    rng = np.random.default_rng(3)
    k = np.arange(0, (8 * 3600 + 90) * 10, dtype=np.int64)
    t = t0 + k * S // 10
    word = np.ones(len(k))
    for a in rng.integers(0, 8 * 3600 - 600, 12):  # stops of 2 s to 9 min, some with the alarm
        word[(k >= a * 10) & (k < (a + rng.integers(2, 540)) * 10)] = rng.choice([2, 10])
    wafer = ((t - t0) // (50 * S)) % 25 + 1
    keep = ~((t - t0 >= DOWN[0]) & (t - t0 < DOWN[1]))
    t, word, wafer = t[keep], word[keep], wafer[keep]
    st, wf = tags.id_of("etch1/status"), tags.id_of("etch1/wafer")
    out = []
    for i in range(0, len(t), 600):
        tt = t[i:i + 600]
        recs: list[Record] = []
        if tt[0] <= t0 + DOWN[0] - 100 * S <= tt[-1]:
            recs.append(InterlockTrip(ts_ns=t0 + DOWN[0] - 100 * S, interlock="il",
                                      tag="etch1/x", condition="high", value=1.0, limit=0.0,
                                      action="stop", action_ok=True, reaction_ns=1))
        out.append((SampleBatch(np.concatenate([np.full(len(tt), st), np.full(len(tt), wf)]),
                                np.concatenate([tt, tt]),
                                np.concatenate([word[i:i + 600], wafer[i:i + 600]])), recs))
    return out


def _run(make: Callable[[], tuple[object, TagRegistry]],
         batches: Callable[[TagRegistry], list[tuple[SampleBatch, list[Record]]]],
         restart_at_ns: int | None) -> list[Record]:
    """Every record the stage makes over the batches; with ``restart_at_ns`` the stage is
    replaced by a new one restored from the last checkpoint due before that time, and
    the batches fed since that checkpoint are lost (as in a kill -9)."""
    stage, tags = make()
    out: list[Record] = []
    saved: tuple[bytes, int] | None = None
    todo = batches(tags)
    i = 0
    while i < len(todo):
        batch, recs = todo[i]
        made = stage.process(batch, recs, 0).records  # type: ignore[attr-defined]
        out += [r for r in made if r not in recs]
        snap = stage.snapshot(int(batch.ts_ns.max()))  # type: ignore[attr-defined]
        if snap is not None:
            saved = (snap, i)
        if restart_at_ns is not None and int(batch.ts_ns.max()) >= restart_at_ns:
            assert saved is not None
            stage, _ = make()
            stage.restore(saved[0])  # type: ignore[attr-defined]
            restart_at_ns = None
            # what came after the checkpoint is lost, records included (not committed)
            lost = range(saved[1] + 1, i + 1)
            out = [r for r in out if not any(r in todo[j][1] for j in lost)]
        i += 1
    return out


def test_oee_restored_mid_shift_reports_the_same_shift() -> None:
    """A kill -9 mid-shift: the restored OEE stage reports the whole shift, within a few
    seconds of no data of the stage that never stopped (the lost batches since the
    checkpoint), with the same parts, trips and factors to 0.1 percentage points."""
    t_restart = DAY0 + 6 * 3600 * S + DOWN[1] + 5 * S
    ref = [r for r in _run(_oee, _oee_batches, None) if isinstance(r, OeeReport)]
    got = [r for r in _run(_oee, _oee_batches, t_restart) if isinstance(r, OeeReport)]
    a, b = ref[0], got[0]
    assert len(got) == len(ref) == 2 and b.shift == "early" and b.planned_s == 8 * 3600
    assert 0 <= b.no_data_s - a.no_data_s <= stage_state.CHECKPOINT_S + 60
    assert (b.total_count, b.trips) == (a.total_count, a.trips) and a.trips > 0
    for f in ("availability", "performance", "quality", "oee"):
        assert getattr(b, f) == pytest.approx(getattr(a, f), abs=0.001), f


def _energy() -> tuple[Energy, TagRegistry]:
    tags = TagRegistry()
    for m in ("belt", "arm"):
        tags.add(m, "current_a", unit="A")
    cfg = EnergyConfig(name="stf", calendar=CAL, motors=[
        EnergyMotorConfig(name=m, current_tag=f"{m}/current_a") for m in ("belt", "arm")])
    return Energy([cfg], tags), tags


def _energy_batches(tags: TagRegistry) -> list[tuple[SampleBatch, list[Record]]]:
    t0 = DAY0 + 6 * 3600 * S
    k = np.arange(0, (8 * 3600 + 90) * 10, dtype=np.int64)
    t = t0 + k * S // 10
    t = t[~((t - t0 >= DOWN[0]) & (t - t0 < DOWN[1]))]
    out = []
    for i in range(0, len(t), 600):
        tt = t[i:i + 600]
        belt = np.where((tt // (30 * S)) % 3 == 0, 0.05, 1.2)
        arm = np.where((tt // (7 * S)) % 2 == 0, 2.5, 0.05)
        out.append((SampleBatch(np.concatenate([np.full(len(tt), tags.id_of("belt/current_a")),
                                                np.full(len(tt), tags.id_of("arm/current_a"))]),
                                np.concatenate([tt, tt]), np.concatenate([belt, arm])), []))
    return out


def test_energy_restored_mid_shift_reports_the_shift_within_a_tenth_of_a_percent() -> None:
    """A kill -9 mid-shift: the restored energy stage reports every motor's kWh for the
    whole shift within 0.1 % of the stage that never stopped; the lost time is a gap."""
    t_restart = DAY0 + 6 * 3600 * S + DOWN[1] + 5 * S
    ref = {r.name: r for r in _run(_energy, _energy_batches, None)
           if isinstance(r, EnergyReport) and r.scope == "motor"}
    got = {r.name: r for r in _run(_energy, _energy_batches, t_restart)
           if isinstance(r, EnergyReport) and r.scope == "motor"}
    assert set(got) == set(ref) == {"belt", "arm"}
    for m, want in ref.items():
        assert got[m].kwh == pytest.approx(want.kwh, rel=0.001), m
        assert got[m].gap_s >= want.gap_s >= 20.0


def _trace() -> tuple[Trace, TagRegistry]:
    tags = TagRegistry()
    for name in ("chamber_temp", "lot", "wafer"):
        tags.add("etch1", name)
    cfg = msgspec.convert({"name": "etch1", "wafer_tag": "etch1/wafer",
                           "lot_tag": "etch1/lot"}, WaferTraceConfig)
    return Trace([cfg], tags), tags


def _trace_batches(tags: TagRegistry) -> list[tuple[SampleBatch, list[Record]]]:
    """Wafer 1 from T0 for 60 s with a trip at 10 s, the gateway down 20 s from 30 s,
    then wafer 2."""
    ids = [tags.id_of(f"etch1/{n}") for n in ("chamber_temp", "lot", "wafer")]
    out = []
    for k in range(0, 700):
        ts = DAY0 + k * S // 10
        if 300 <= k < 500:
            continue
        recs: list[Record] = []
        if k == 100:
            recs.append(InterlockTrip(ts_ns=ts, interlock="il", tag="etch1/chamber_temp",
                                      condition="high", value=190.0, limit=188.0,
                                      action="stop", action_ok=True, reaction_ns=1))
        out.append((SampleBatch(ids, [ts] * 3, [180.0, 4711.0, 1.0 if k < 600 else 2.0]),
                    recs))
    return out


def test_a_wafer_in_the_tool_across_a_restart_gets_one_step_with_its_start() -> None:
    """A kill -9 while a wafer is in the tool (no elapsed register): the restored thread
    makes exactly one step for it when it leaves, starting at the first reading before
    the crash, with the trip it had before the crash."""
    got = [r for r in _run(_trace, _trace_batches, DAY0 + 52 * S) if isinstance(r, WaferStep)]
    [step] = got
    assert (step.wafer, step.start_ns, step.end_ns) == ("4711.01", DAY0, DAY0 + 60 * S)
    assert len(step.trips) == 1
    temp = next(s for s in step.telemetry if s.tag == "etch1/chamber_temp")
    assert 0 < temp.n < 400 and temp.mean == 180.0


def test_a_snapshot_is_due_with_records_and_otherwise_every_interval() -> None:
    """No change, no snapshot; samples make one due after CHECKPOINT_S; a record taken or
    made makes one due at once; a torn or foreign checkpoint is refused with its reason."""
    stage, tags = _trace()
    batches = _trace_batches(tags)
    assert stage.snapshot(0) is None
    stage.process(*batches[0], 0)
    assert stage.snapshot(10 * S) is not None
    stage.process(*batches[1], 0)
    assert stage.snapshot(11 * S) is None
    assert stage.snapshot(round((10 + stage_state.CHECKPOINT_S) * S)) is not None
    stage.process(*batches[100], 0)  # the trip
    assert stage.snapshot(16 * S) is not None
    with pytest.raises(ValueError, match="trace: checkpoint unreadable"):
        stage.restore(b"\x93\x01")
    with pytest.raises(ValueError, match="version 99"):
        stage.restore(msgspec.msgpack.encode({"v": 99}))
    assert math.isfinite(stage_state.CHECKPOINT_S)


def test_a_snapshot_late_in_a_shift_holds_the_window_not_the_shift() -> None:
    """Seven hours into a shift a tool's snapshot holds the last hour's minutes and one sum
    of the older ones (an SD card writes it every few seconds): under 10 kB, not the
    ~46 kB of every minute; restored, the shift's report is the same."""
    stage, tags = _oee()
    batches = _oee_batches(tags)
    for batch, recs in batches[:7 * 60]:
        stage.process(batch, recs, 0)
    snap = stage.snapshot(0)
    assert snap is not None and len(snap) < 10_000, len(snap)
    again, _ = _oee()
    again.restore(snap)
    t0 = DAY0 + 6 * 3600 * S
    assert again.report("fab", t0, t0 + 8 * 3600 * S) == stage.report("fab", t0,
                                                                      t0 + 8 * 3600 * S)
