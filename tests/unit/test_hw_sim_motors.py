"""Motor line physics: determinism, currents, wear, spikes, micro-stoppages, failure."""

from __future__ import annotations

import numpy as np

from hw_sim.motors import (
    FAILED,
    IDLE,
    INRUSH,
    MICROSTOP,
    MOTOR_IDS,
    RUNNING,
    STATIONS,
    STOPPED,
    MotorLine,
    MotorTrace,
    barriers_at,
)
from hw_sim.truth import TruthLog


def test_line_has_the_documented_components() -> None:
    """hbw has 4 components, conveyor 5, vgr 5: 14 motors."""
    assert {s: len(c) for s, c in STATIONS.items()} == {"hbw": 4, "conveyor": 5, "vgr": 5}
    assert len(MOTOR_IDS) == 14


def test_same_seed_same_samples() -> None:
    """Same seed gives identical traces; step() and run() agree."""
    a, b = MotorLine(3).run(2000), MotorLine(3).run(2000)
    assert np.array_equal(a.current_a, b.current_a) and np.array_equal(a.state, b.state)
    c = MotorLine(3)
    stepped = [c.step() for _ in range(50)]
    assert [s.current_a for s in stepped[-1]] == [round(float(x), 4) for x in a.current_a[49]]
    assert stepped[0][0].ts_ns == c.start_ns + 100_000_000


def test_current_by_phase() -> None:
    """Healthy motors draw ~0.05 A idle, ~2.5 A inrush, ~1.2 A running."""
    t = MotorLine(1).run(3000)
    for state, amps in ((IDLE, 0.05), (INRUSH, 2.5), (RUNNING, 1.2)):
        cur = t.current_a[t.state == state]
        assert cur.size > 100 and abs(cur.mean() - amps) < 0.03, (state, cur.mean())


def test_wear_is_0_0001_per_active_tick() -> None:
    """Health drops by exactly 0.0001 per inrush/running tick and not otherwise."""
    line = MotorLine(2)
    t = line.run(5000)
    active = ((t.state == INRUSH) | (t.state == RUNNING)).sum(axis=0)
    assert np.allclose(1.0 - line.health, active * 0.0001)


def test_spikes_below_0_8_and_micro_stoppages_below_0_5() -> None:
    """Current spikes appear only below health 0.8, micro-stoppages only below 0.5."""
    healthy = MotorLine(4, initial_health=1.0).run(3000)
    worn = MotorLine(4, initial_health=0.75).run(3000)
    weak = MotorLine(4, initial_health=0.45).run(3000)

    def run_max(t: MotorTrace) -> float:
        return float(t.current_a[t.state == RUNNING].max())

    assert run_max(healthy) < 1.4 and run_max(worn) > 1.7
    assert not (healthy.state == MICROSTOP).any() and not (worn.state == MICROSTOP).any()
    assert (weak.state == MICROSTOP).any()


def test_time_to_failure_is_exact_without_commands() -> None:
    """Motors fail at health 0, at the tick time_to_failure() predicted."""
    truth = TruthLog()
    line = MotorLine(5, initial_health={"conveyor/belt": 0.01, "vgr/vacuum": 0.02}, truth=truth)
    ttf = line.time_to_failure(horizon_ticks=3000)
    assert ttf["conveyor/belt"] is not None and ttf["vgr/vacuum"] is not None
    assert ttf["hbw/horizontal"] is None
    t = line.run(int(ttf["vgr/vacuum"]))
    belt = MOTOR_IDS.index("conveyor/belt")
    first_failed = int(np.argmax(t.state[:, belt] == FAILED)) + 1
    assert first_failed == ttf["conveyor/belt"]
    assert line.state[MOTOR_IDS.index("vgr/vacuum")] == FAILED
    assert {r["motor"] for r in truth.of_kind("motor_failed")} == {"conveyor/belt", "vgr/vacuum"}
    line.emit_health(horizon_ticks=10)
    rec = next(r for r in truth.of_kind("motor_health") if r["motor"] == "conveyor/belt")
    assert rec["health"] == 0.0 and rec["ttf_ticks"] == 0 and rec["ttf_s"] == 0.0


def test_stop_and_reset_commands() -> None:
    """stop halts motors (0 A, no wear); reset returns them to the cycle."""
    line = MotorLine(6)
    line.run(100)
    assert len(line.command("stop", "conveyor")) == 5
    h = line.health.copy()
    t = line.run(100)
    conv = [i for i, m in enumerate(MOTOR_IDS) if m.startswith("conveyor/")]
    assert (t.state[:, conv] == STOPPED).all() and (t.current_a[:, conv] == 0).all()
    assert np.array_equal(line.health[conv], h[conv])
    line.command("reset", "all")
    t = line.run(300)
    assert (t.state[:, conv] == RUNNING).any()


def test_light_barriers() -> None:
    """L1-L4 at 100/400/700/950 mm are interrupted while the piece is within 15 mm."""
    assert barriers_at(100.0) == {"L1": True, "L2": False, "L3": False, "L4": False}
    assert barriers_at(960.0)["L4"] and not any(barriers_at(250.0).values())
    line = MotorLine(7)
    seen = {k: False for k in ("L1", "L2", "L3", "L4")}
    for _ in range(1500):
        s = next(x for x in line.step() if x.station == "conveyor" and x.component == "belt")
        assert s.barriers is not None and s.position_mm is not None
        assert 0.0 <= s.position_mm <= 1000.0
        for k, v in s.barriers.items():
            seen[k] |= v
    assert all(seen.values())
