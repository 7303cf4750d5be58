"""Motor line physics: determinism, currents, wear, spikes, micro-stoppages, failure."""

from __future__ import annotations

import hashlib
import json

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


def _naive_ttf(line: MotorLine, horizon: int) -> dict[str, int | None]:
    """Obviously correct time to failure: step a fresh copy tick by tick to the horizon."""
    twin = line.twin()
    out: dict[str, int | None] = {
        m: 0 if line.state[i] == FAILED else None for i, m in enumerate(MOTOR_IDS)}
    for k in range(1, horizon + 1):
        twin.step()
        for i, m in enumerate(MOTOR_IDS):
            if out[m] is None and twin.state[i] == FAILED:
                out[m] = k
    return out


def _trace_digest(seed: int) -> str:
    truth = TruthLog()
    line = MotorLine(seed, {m: 0.02 + 0.06 * i for i, m in enumerate(MOTOR_IDS)}, truth=truth)
    h = hashlib.sha256()
    for n, cmd, target in ((700, "stop", "vgr"), (300, "reset", "vgr"),
                           (500, "replace", "conveyor/belt"), (2500, "", "")):
        t = line.run(n)
        for a in (t.ts_ns, t.current_a, t.state, t.position_mm, line.health):
            h.update(np.ascontiguousarray(a).tobytes())
        if cmd:
            line.command(cmd, target)
    h.update(json.dumps(truth.records, sort_keys=True).encode())
    return h.hexdigest()


def test_trace_is_bit_identical_to_the_reference_run() -> None:
    """A worn line with spikes, micro-stoppages, failures and commands gives the exact
    values (bits) of the reference run (made before the physics was sped up; a numpy
    release that changes its normal or uniform draws would change it too)."""
    assert _trace_digest(11) == (
        "b9c14120cf0dd2a00ce7bc50fc2a3c7923b1e6bc64f178fbb456bf7ced602284")


def test_time_to_failure_matches_stepping_a_copy_at_any_tick_and_after_commands() -> None:
    """The kept forecast gives what stepping a fresh copy gives, as the line runs on,
    with a horizon that grows and shrinks, and after stop, reset and replace."""
    line = MotorLine(5, {m: 0.004 * (i + 1) for i, m in enumerate(MOTOR_IDS)})
    for n, horizon, cmd, target in ((0, 400, "", ""), (50, 100, "", ""), (1, 900, "", ""),
                                    (120, 0, "stop", "conveyor"), (30, 700, "", ""),
                                    (10, 700, "reset", "all"), (40, 600, "replace", "vgr"),
                                    (25, 800, "", "")):
        if n:
            line.run(n)
        if cmd:
            line.command(cmd, target)
        assert line.time_to_failure(horizon) == _naive_ttf(line, horizon), (line.tick, cmd)


def test_time_to_failure_asked_every_10_s_costs_about_one_tick_per_tick() -> None:
    """Asking every 100 ticks with a 3,000-tick horizon runs the forecast copy only over
    the new ticks (the demo asks every 10 s with 36,000), not the whole horizon again."""
    line = MotorLine(42, 0.7)
    line.time_to_failure(3000)
    steps = 0
    advance = MotorLine._advance

    def counting(self: MotorLine, *args: bool, **kwargs: bool) -> bool:
        nonlocal steps
        steps += self is not line
        return advance(self, *args, **kwargs)

    MotorLine._advance = counting  # type: ignore[method-assign]
    try:
        for _ in range(10):
            line.run(100)
            line.time_to_failure(3000)
    finally:
        MotorLine._advance = advance  # type: ignore[method-assign]
    assert steps <= 1000, steps
