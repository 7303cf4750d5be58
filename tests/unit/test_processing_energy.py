"""Energy stage: kernel against its reference, gaps counted, shift reports, and kWh per
motor against hw_sim's true energy over a simulated day."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.model import EnergyReport, OeeReport, Quality, SampleBatch, TagRegistry
from edge.processing import kernels as K
from edge.processing.calendar import CalendarConfig, ShiftConfig
from edge.processing.energy import Energy, EnergyConfig, EnergyMotorConfig
from hw_sim.motors import MOTOR_IDS, MotorLine

T0 = 1_796_000_400_000_000_000  # a whole hour, UTC


def _load_naive() -> ModuleType:
    spec = importlib.util.spec_from_file_location("naive", Path(__file__).parents[1] / "naive.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


naive = _load_naive()


def _scan(ts: np.ndarray, cur: np.ndarray, state: tuple[np.ndarray, np.ndarray],
          params: np.ndarray) -> np.ndarray:
    out = np.empty((4, len(ts)))
    K.energy_scan(ts, cur, params, state[0], state[1], out[0], out[1], out[2], out[3])
    return out


def _state() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(K.N_ENERGY_STATE), np.zeros(1, np.int64)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5_000_000_000),
                          st.one_of(st.floats(0, 3), st.just(math.nan), st.just(math.inf))),
                max_size=40),
       st.integers(1, 39))
def test_energy_scan_matches_reference(rows: list[tuple[int, float]], cut: int) -> None:
    """The kernel equals the reference on random series (NaN, inf, repeats, out of order,
    empty), and feeding it in two batches gives the same as in one."""
    ts = np.cumsum(np.array([r[0] for r in rows], np.int64)) - 1_000_000_000
    cur = np.array([r[1] for r in rows], np.float64)
    params = np.array([24.0, 2e9, 30.0])
    state = _state()
    out = _scan(ts, cur, state, params)
    ref = naive.energy_scan(ts.tolist(), cur.tolist(), 24.0, 2e9, 30.0)
    np.testing.assert_allclose(out, np.array(ref, float).reshape(4, len(ts)), rtol=1e-12)
    state2 = _state()
    k = min(cut, len(ts))
    split = np.concatenate([_scan(ts[:k], cur[:k], state2, params),
                            _scan(ts[k:], cur[k:], state2, params)], axis=1)
    np.testing.assert_allclose(split, out, rtol=1e-12)


def _stage(names: list[str], **kw: object) -> tuple[Energy, TagRegistry]:
    tags = TagRegistry()
    for m in names:
        tags.add(m, "current_a", unit="A")
    cfg = EnergyConfig(name="stf", motors=[
        EnergyMotorConfig(name=m, current_tag=f"{m}/current_a") for m in names], **kw)  # type: ignore[arg-type]
    return Energy([cfg], tags), tags


def test_constant_current_gives_exact_kwh_and_counts_gaps_and_bad_samples() -> None:
    """1 A at 24 V for an hour is 0.024 kWh; a Bad sample is bridged and counted, a 60 s
    gap is estimated at the mean power and counted as gap time, a duplicate adds nothing."""
    stage, tags = _stage(["conv_belt"], max_gap_s=2.0)
    tag = tags.id_of("conv_belt/current_a")
    ts = T0 + np.arange(0, 36_001, dtype=np.int64) * 100_000_000  # 0.1 s for an hour
    keep = (ts < T0 + 1_000 * 10**9) | (ts >= T0 + 1_060 * 10**9)  # a 60 s outage
    ts = ts[keep]
    q = np.zeros(len(ts), np.uint8)
    q[500] = Quality.BAD_MISSING
    ts = np.insert(ts, 800, ts[800])  # a duplicate
    q = np.insert(q, 800, 0)
    vals = np.where(q & 0x80, np.nan, 1.0)
    for a in range(0, len(ts), 1000):
        b = min(a + 1000, len(ts))
        stage.process(SampleBatch(np.full(b - a, tag, np.int32), ts[a:b], vals[a:b], q[a:b]),
                      [], 0)
    got = stage.totals("stf")["conv_belt"]
    assert got["kwh"] == pytest.approx(24.0 * 3600 / 3.6e6, rel=1e-9)
    assert got["estimated_kwh"] == pytest.approx(24.0 * 60.1 / 3.6e6, rel=1e-9)
    assert got["gap_s"] == pytest.approx(60.1)
    assert got["bridged_s"] == pytest.approx(0.2)


def test_shift_report_per_motor_station_line_and_per_good_part() -> None:
    """At a shift's end (plus close_after_s) the stage reports each motor, station and the
    line, and kWh per good part from the OEE reports of the parts tools."""
    cal = CalendarConfig(shifts=[ShiftConfig(name="a", start="00:00", end="12:00"),
                                 ShiftConfig(name="b", start="12:00", end="00:00")])
    stage, tags = _stage(["hbw_belt", "conv_belt", "conv_infeed"], calendar=cal,
                         parts_tools=["etch1"], close_after_s=10.0)
    day0 = T0 - T0 % (86_400 * 10**9)
    ids = np.array([tags.id_of(f"{m}/current_a") for m in
                    ("hbw_belt", "conv_belt", "conv_infeed")], np.int32)
    shift_a_end = day0 + 12 * 3600 * 10**9
    t = shift_a_end - 600 * 10**9
    reports: list[EnergyReport] = []
    published: dict[str, list[float]] = {}
    oee = OeeReport(ts_ns=shift_a_end, start_ns=day0, scope="tool", name="etch1", line="fab",
                    shift="a", planned_s=1.0, run_s=1.0, no_data_s=0.0, down_interlock_s=0.0,
                    down_fault_s=0.0, down_microstop_s=0.0, speed_loss_s=0.0,
                    scrap_loss_s=0.0, rework_loss_s=0.0, availability=1.0, performance=1.0,
                    quality=1.0, oee=1.0, ideal_cycle_s=50.0, total_count=12, good_count=10,
                    scrap_count=2, rework_count=0)
    while t < shift_a_end + 60 * 10**9:
        ts = t + np.arange(10, dtype=np.int64) * 10**9
        batch = SampleBatch(np.repeat(ids, 10), np.tile(ts, 3),
                            np.repeat(np.array([1.0, 2.0, 0.5]), 10))
        recs = [oee] if t >= shift_a_end + 40 * 10**9 and not reports else []
        out = stage.process(batch, recs, 0)
        reports += [r for r in out.records if isinstance(r, EnergyReport)]
        for i, v in zip(out.batch.tag_id.tolist(), out.batch.value.tolist(), strict=True):
            spec = tags[i]
            if spec.name != "current_a":
                published.setdefault(f"{spec.device}/{spec.name}", []).append(v)
        t += 10 * 10**9
    assert {(r.scope, r.name) for r in reports} == {
        ("motor", "hbw_belt"), ("motor", "conv_belt"), ("motor", "conv_infeed"),
        ("station", "hbw"), ("station", "conv"), ("line", "stf")}
    by = {r.name: r for r in reports}
    # the shift's data starts at its 600th-last second: 599 s of 24 V x 3.5 A
    assert by["stf"].kwh == pytest.approx(24 * 3.5 * 599 / 3.6e6)
    assert by["conv"].kwh == pytest.approx(24 * 2.5 * 599 / 3.6e6)
    assert by["stf"].good_parts == 10
    assert by["stf"].kwh_per_good_part == pytest.approx(by["stf"].kwh / 10)
    assert all(r.shift == "a" and r.start_ns == day0 and r.ts_ns == shift_a_end
               for r in reports)
    # rolling values as tag samples (OPC-UA, InfluxDB): the last hour holds all 659 s
    assert published["stf/energy_kwh"][-1] == pytest.approx(24 * 3.5 * 659 / 3.6e6)
    assert published["conv/energy_kwh"][-1] == pytest.approx(24 * 2.5 * 659 / 3.6e6)
    assert published["stf/kwh_per_good_part"] == [pytest.approx(by["stf"].kwh / 10)]
    assert published["stf/energy_shift_kwh"][-1] == pytest.approx(24 * 3.5 * 60 / 3.6e6)


def _day(tick_s: float, ticks: int, bad_rate: float, outage_s: tuple[float, float] | None,
         seed: int = 11) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Run hw_sim's line for ``ticks`` and feed what the gateway would get, spoiled the way
    hw_sim's bad-data modes spoil MQTT messages (missing value: a Bad sample; duplicate:
    twice; garbage or naive timestamp: quarantined, so absent) and cut by an outage."""
    names = [m.replace("/", "_") for m in MOTOR_IDS]
    stage, tags = _stage(names, max_gap_s=max(2.0, 2.5 * tick_s))
    health = {m: 0.45 + 0.05 * (i % 12) for i, m in enumerate(MOTOR_IDS)}  # some stall
    line = MotorLine(seed, health, start_ns=T0, tick_s=tick_s, voltage_v=24.0)
    ids = np.array([tags.id_of(f"{n}/current_a") for n in names], np.int32)
    rng = np.random.default_rng([seed, 0xBAD])
    chunk = 600
    for _ in range(ticks // chunk):
        tr = line.run(chunk)
        tid = np.tile(ids, chunk)
        ts = np.repeat(tr.ts_ns, len(ids))
        val = np.round(tr.current_a.ravel(), 4)
        q = np.zeros(len(ts), np.uint8)
        u = rng.random(len(ts))
        kind = rng.integers(0, 4, len(ts))
        spoiled = u < bad_rate
        q[spoiled & (kind == 0)] = Quality.BAD_MISSING
        val = np.where(q & 0x80, np.nan, val)
        keep = ~(spoiled & (kind >= 2))
        if outage_s is not None:
            rel = (ts - T0) / 1e9
            keep &= ~((rel >= outage_s[0]) & (rel < outage_s[1]))
        dup = np.flatnonzero(spoiled & (kind == 1) & keep)
        order = np.sort(np.concatenate([np.flatnonzero(keep), dup]), kind="stable")
        stage.process(SampleBatch(tid[order], ts[order], val[order], q[order]), [], 0)
    truth = {n: line.true_energy_kwh()[m] for n, m in zip(names, MOTOR_IDS, strict=True)}
    got = stage.totals("stf")
    return truth, got


def _worst(truth: dict[str, float], got: dict[str, dict[str, float]]) -> float:
    return max(abs(got[m]["kwh"] / truth[m] - 1) for m in truth)


def test_energy_per_motor_within_one_percent_of_truth_over_a_simulated_day() -> None:
    """A simulated day (86,400 ticks of hw_sim's line, 1 s apart) with 5 % spoiled messages
    and a 10-minute outage: every motor's kWh within 1 % of hw_sim's true energy."""
    truth, got = _day(1.0, 86_400, 0.05, (40_000.0, 40_600.0))
    worst = _worst(truth, got)
    print(f"day, 1 s ticks, 5% bad, 600 s outage: worst motor error {worst:.4%}")
    assert worst < 0.01
    # the outage, plus the runs of two spoiled messages (3 s: longer than max_gap_s)
    assert all(601.0 <= g["gap_s"] < 1500.0 for g in got.values()), got
    assert all(g["bridged_s"] > 0 for g in got.values())


def test_energy_per_motor_at_10_hz_with_bad_data() -> None:
    """An hour at hw_sim's real 10 Hz tick with 10 % spoiled messages: every motor's kWh
    within 1 % of the true energy (no outage: short gaps are bridged, none estimated)."""
    truth, got = _day(0.1, 36_000, 0.10, None)
    worst = _worst(truth, got)
    print(f"hour, 10 Hz, 10% bad: worst motor error {worst:.4%}")
    assert worst < 0.01
    assert all(g["estimated_kwh"] == 0.0 for g in got.values())


def test_a_gap_after_a_short_history_is_estimated_at_its_time_weighted_mean() -> None:
    """Ten seconds idle, then 100 s running, then a 30 s gap: the gap is estimated at the
    time-weighted mean power of those 110 s (a fading mean normalised by its weights),
    not pulled towards the first idle interval."""
    ts = np.concatenate([np.arange(0, 110_000_000_000, 100_000_000, dtype=np.int64),
                         np.array([140_000_000_000], np.int64)])
    cur = np.where(ts < 10_000_000_000, 0.05, 1.2)
    out = _scan(ts, cur, _state(), np.array([24.0, 2e9, 600.0]))
    mean_w = float(out[0].sum()) / 109.9
    assert out[2, -1] == pytest.approx(30.1)  # from the last sample at 109.9 s
    assert out[1, -1] / out[2, -1] == pytest.approx(mean_w, rel=0.01)
