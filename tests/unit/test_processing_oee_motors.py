"""OEE of a motor-driven station (hw_sim's conveyor belt) from its current alone: stops,
micro-stoppages and a failure, scored against the line's true state over a shift."""

from __future__ import annotations

import numpy as np
import pytest

from edge.model import OeeReport, Quality, SampleBatch, TagRegistry
from edge.processing.calendar import BreakConfig, CalendarConfig, ShiftConfig
from edge.processing.oee import Oee, OeeConfig, OeeToolConfig
from hw_sim.motors import FAILED, IDLE, INRUSH, MICROSTOP, MOTOR_IDS, STOPPED, MotorLine

S = 1_000_000_000
DAY0 = 1_796_083_200 * S  # a midnight, UTC
SHIFT = (DAY0 + 6 * 3600 * S, DAY0 + 14 * 3600 * S)
BREAK = (DAY0 + 10 * 3600 * S, DAY0 + 10 * 3600 * S + 1800 * S)
BELT = MOTOR_IDS.index("conveyor/belt")
IDEAL_S = 63.0  # the belt's shortest cycle: 20 s idle, 3 s inrush, 40 s run (1 s ticks)
GOAL = 0.005


def _planned(t: np.ndarray) -> np.ndarray:
    return (t >= SHIFT[0]) & (t < SHIFT[1]) & ~((t >= BREAK[0]) & (t < BREAK[1]))


def _simulate(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The line from 05:50 to 14:05 at 1 s ticks, the belt worn (micro-stoppages) until it
    fails; maintenance replaces it 30 min later. Times, belt currents and belt states."""
    line = MotorLine(seed, {"conveyor/belt": 0.42}, start_ns=SHIFT[0] - 600 * S, tick_s=1.0)
    ts, cur, st = [], [], []
    repair_at = -1
    for _ in range((8 * 3600 + 900) // 300):
        tr = line.run(300)
        ts.append(tr.ts_ns)
        cur.append(tr.current_a[:, BELT])
        st.append(tr.state[:, BELT])
        if line.state[BELT] == FAILED:
            if repair_at < 0:
                repair_at = line.tick + 1800
            elif line.tick >= repair_at:
                line.command("replace", "conveyor/belt")
                repair_at = -1
    return np.concatenate(ts), np.round(np.concatenate(cur), 4), np.concatenate(st)


def _truth(ts: np.ndarray, st: np.ndarray) -> dict[str, float]:
    """Tick k's state is the belt's state during (t_k - 1 s, t_k]; a part is a start."""
    plan = _planned(ts - S // 2)
    down = np.isin(st, (STOPPED, MICROSTOP, FAILED))
    run_s = float(np.count_nonzero(plan & ~down))
    starts = (st == INRUSH) & (np.concatenate(([IDLE], st[:-1])) == IDLE)
    count = int(np.count_nonzero(starts & _planned(ts)))
    av = run_s / np.count_nonzero(plan)
    perf = IDEAL_S * count / run_s
    return {"availability": av, "performance": perf, "quality": 1.0, "oee": av * perf,
            "count": count, "micro_stoppages": int(np.count_nonzero(
                (st == MICROSTOP) & (np.concatenate(([0], st[:-1])) != MICROSTOP) & plan))}


def _judge(ts: np.ndarray, cur: np.ndarray, bad: bool) -> OeeReport:
    tags = TagRegistry()
    tags.add("conveyor_belt", "current_a", unit="A")
    cfg = OeeConfig(name="stf", calendar=CalendarConfig(
        shifts=[ShiftConfig(name="early", start="06:00", end="14:00")],
        breaks=[BreakConfig(start="10:00", end="10:30")]), tools=[OeeToolConfig(
            name="conveyor", state_tag="conveyor_belt/current_a", state_kind="current",
            count_tag="conveyor_belt/current_a", count_kind="starts", ideal_cycle_s=IDEAL_S,
            microstop_max_s=12.0, max_gap_s=5.0)])
    stage = Oee([cfg], tags)
    q = np.zeros(len(ts), np.uint8)
    val = cur.copy()
    keep = np.ones(len(ts), bool)
    if bad:  # hw_sim's MQTT defects: missing value (Bad), garbage / naive time (dropped)
        rng = np.random.default_rng(0xBAD)
        spoiled = rng.random(len(ts)) < 0.05
        kind = rng.integers(0, 3, len(ts))
        q[spoiled & (kind == 0)] = Quality.BAD_MISSING
        val[q != 0] = np.nan
        keep = ~(spoiled & (kind > 0))
    tag = tags.id_of("conveyor_belt/current_a")
    reports: list[OeeReport] = []
    for i in range(0, len(ts), 600):
        sl = slice(i, i + 600)
        k = keep[sl]
        batch = SampleBatch(np.full(int(k.sum()), tag), ts[sl][k], val[sl][k], q[sl][k])
        reports += [r for r in stage.process(batch, [], 0).records
                    if isinstance(r, OeeReport) and r.scope == "tool"]
    assert len(reports) == 1
    return reports[0]


@pytest.fixture(scope="module")
def belt() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _simulate(3)


@pytest.mark.parametrize("bad", [False, True])
def test_motor_station_oee_within_half_a_point_of_truth(
        belt: tuple[np.ndarray, np.ndarray, np.ndarray], bad: bool) -> None:
    """A worn conveyor belt over a shift: its micro-stoppages and its failure (until
    replaced) are downtime, its starts from idle are parts; availability, performance and
    OEE are within 0.5 points of hw_sim's true belt states, with and without 5 % spoiled
    messages."""
    ts, cur, st = belt
    truth = _truth(ts, st)
    rep = _judge(ts, cur, bad)
    got = {f: getattr(rep, f) for f in ("availability", "performance", "quality", "oee")}
    print(f"\nbad={bad} truth " + " ".join(f"{k}={v:.4f}" for k, v in truth.items())
          + "\n          edge  " + " ".join(f"{k}={v:.4f}" for k, v in got.items())
          + f" count={rep.total_count} micro={rep.micro_stoppages} stops={rep.stops}"
          f" fault_s={rep.down_fault_s:.0f} micro_s={rep.down_microstop_s:.0f}"
          f" no_data={rep.no_data_s:.1f}")
    assert truth["micro_stoppages"] > 20 and rep.down_fault_s >= 1800
    for f, v in got.items():
        assert v == pytest.approx(truth[f], abs=GOAL), f
