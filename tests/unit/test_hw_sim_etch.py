"""Etch tool physics: normal band, excursions, stop/decay, reset, schedule, registers."""

from __future__ import annotations

import itertools

from hw_sim.etch import (
    STATUS_ALARM,
    STATUS_EXCURSION,
    STATUS_RUNNING,
    STATUS_STOPPED,
    EtchConfig,
    EtchModel,
    float_regs,
    regs_float,
)
from hw_sim.truth import TruthLog

DT = 0.1


def _run(m: EtchModel, seconds: float) -> list[float]:
    return [m.step(DT).chamber_temp_c for _ in range(round(seconds / DT))]


def test_normal_operation_stays_below_186() -> None:
    """An hour of normal operation reads 180 +- 2.5 C, never above 186."""
    temps = _run(EtchModel(1), 3600)
    assert max(temps) < 186.0 and min(temps) > 177.0
    assert abs(sum(temps) / len(temps) - 180.0) < 0.1


def test_same_seed_same_values() -> None:
    """Same seed and tick sequence give identical snapshots."""
    a, b = EtchModel(5), EtchModel(5)
    assert [a.step(DT) for _ in range(500)] == [b.step(DT) for _ in range(500)]


def test_excursion_crosses_limit_and_is_recorded() -> None:
    """A commanded excursion goes above 188.0 C, sets the alarm, and ends by itself."""
    truth = TruthLog()
    m = EtchModel(2, truth=truth)
    _run(m, 10)
    assert m.trigger_excursion()
    assert m.status & STATUS_EXCURSION
    temps = _run(m, 30)
    assert max(temps) > 188.0
    assert m.status & STATUS_ALARM
    temps = _run(m, 120)
    assert temps[-1] < 186.0 and not m.status & STATUS_EXCURSION
    events = [r for r in truth.records if not r["kind"].startswith("wafer_")]
    kinds = [r["kind"] for r in events]
    assert kinds == ["excursion_start", "limit_exceeded", "excursion_end", "limit_cleared"]
    start, exceeded = events[0]["t_ns"], events[1]["t_ns"]
    assert 0 < exceeded - start < 10e9


def test_stop_decays_temperature_and_reset_recovers() -> None:
    """A stop ends the excursion, RF goes off, the chamber cools; a reset resumes."""
    truth = TruthLog()
    m = EtchModel(3, truth=truth)
    m.trigger_excursion()
    _run(m, 15)
    m.stop()
    assert m.status & STATUS_STOPPED and not m.status & STATUS_RUNNING
    snap = m.step(DT)
    assert snap.rf_power_w == 0.0 and snap.step == 0
    temps = _run(m, 600)
    assert temps[-1] < 30.0 and all(b <= a + 3 for a, b in itertools.pairwise(temps))
    m.reset()
    assert m.status == STATUS_RUNNING
    temps = _run(m, 300)
    assert 177.0 < temps[-1] < 183.0
    assert [r["kind"] for r in truth.of_kind("stop") + truth.of_kind("reset")] == ["stop", "reset"]


def test_schedule_triggers_excursions() -> None:
    """excursion_at_s and excursion_every_s start excursions at those simulated times."""
    truth = TruthLog()
    m = EtchModel(4, EtchConfig(excursion_at_s=(50.0,), excursion_every_s=200.0), truth=truth)
    _run(m, 450)
    starts = [(r["t_ns"] - m.start_ns) / 1e9 for r in truth.of_kind("excursion_start")]
    assert [round(s) for s in starts] == [50, 200, 400]


def test_register_image_matches_the_documented_map() -> None:
    """Registers 0-12 hold the floats (ABCD), lot, wafer, step, status and heartbeat."""
    m = EtchModel(6)
    snap = m.step(DT)
    regs = m.registers()
    assert len(regs) == 22
    assert abs(regs_float(regs[0:2]) - snap.chamber_temp_c) < 1e-4
    assert abs(regs_float(regs[4:6]) - snap.rf_power_w) < 1e-2
    assert regs[8] == 4711 and regs[9] == 1 and regs[10] == 1
    assert regs[11] == STATUS_RUNNING and regs[12] == 1
    assert float_regs(1.0) == [0x3F80, 0x0000]


def test_oee_truth_timeline_and_scrapped_wafer() -> None:
    """The model keeps its OEE truth: every stop and reset in its timeline, a wafer per
    5 x step_s, and the wafer in the chamber when the limit is passed marked scrap."""
    truth = TruthLog()
    m = EtchModel(4, truth=truth)
    _run(m, 12)  # inside the first wafer (50 s)
    m.trigger_excursion()
    _run(m, 60)
    m.stop("test")
    _run(m, 1)
    m.reset("test")
    _run(m, 40)  # the second wafer
    assert [s for _, s in m.timeline] == [False, True, False]
    assert len(m.parts) == 2 and m.parts[0][1] and not m.parts[1][1]
    done = truth.of_kind("wafer_done")
    assert [d["scrap"] for d in done] == [True, False]
    assert done[0]["ideal_cycle_s"] == m.cfg.ideal_cycle_s
def test_wafer_elapsed_and_recipe_registers_and_wafer_truth() -> None:
    """Registers 13-14 give the seconds since the wafer entered, 15 the recipe; each wafer
    change is in the truth as wafer_end (times, stops during it) then wafer_start."""
    truth = TruthLog()
    m = EtchModel(3, EtchConfig(step_s=1.0, recipe_id=7), truth=truth)
    _run(m, 3.0)  # 3 s into the first wafer (5 steps of 1 s)
    regs = m.registers()
    assert abs(regs_float(regs[13:15]) - 3.0) < 1e-3 and regs[15] == 7
    m.stop()
    _run(m, 2.0)  # stopped: the wafer stays, its clock runs on
    assert m.wafer == 1 and abs(regs_float(m.registers()[13:15]) - 5.0) < 1e-3
    m.reset()
    _run(m, 4.05)  # the 5 s of recipe are done at 7 s of wafer time
    ends = truth.of_kind("wafer_end")
    assert len(ends) == 1 and ends[0]["wafer"] == 1 and ends[0]["stops"] == 1
    assert ends[0]["start_ns"] == m.start_ns
    assert abs(ends[0]["end_ns"] - (m.start_ns + 7_000_000_000)) <= 100_000_000
    starts = truth.of_kind("wafer_start")
    assert [s["wafer"] for s in starts] == [1, 2] and starts[1]["t_ns"] == ends[0]["end_ns"]
    assert m.wafer == 2 and abs(regs_float(m.registers()[13:15]) - 2.0) <= 0.11
