"""The shipped interlock rule against 30 simulated hours of hw_sim's etch tool.

The rule is read from ``config/edge.example.toml`` itself, so the example is what is
proven: every scheduled excursion trips, process noise never does, and a stop, cool-down
and restart of the tool (its fastest normal change) does not trip it again. The tool's
readings come from ``hw_sim.etch.chamber_series`` (whole-array, equal to the stepped
model) and reach the real ``Interlock`` stage at 0.1 s spacing with poll jitter, missed
polls and short gaps, in 1-minute batches; no real time passes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.config import loads
from edge.model import InterlockTrip, SampleBatch, TagRegistry
from edge.processing.interlock import Interlock
from edge.processing.interlock_config import InterlockRuleConfig
from hw_sim.etch import EtchConfig, EtchModel, chamber_series

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "edge.example.toml"
S = 1_000_000_000
T0 = 1_795_255_200 * S
DT = 0.1
HOURS = 30


def _rule() -> InterlockRuleConfig:
    rule: InterlockRuleConfig = loads(EXAMPLE.read_text()).section("interlocks")[0]
    return rule


def _stage(rule: InterlockRuleConfig) -> tuple[Interlock, int]:
    tags = TagRegistry()
    for key in (rule.tag, *rule.context_tags):
        device, name = key.split("/", 1)
        tags.add(device, name)
    return Interlock([rule], tags, start_ns=T0), tags.id_of(rule.tag)


def test_vectorised_chamber_equals_the_stepped_model() -> None:
    """chamber_series gives EtchModel.step's readings (overlapping schedules included)."""
    cfg = EtchConfig(excursion_at_s=(60.0, 65.0, 200.0), excursion_every_s=300.0)
    model = EtchModel(3, cfg)
    stepped = np.array([model.step(DT).chamber_temp_c for _ in range(12_000)])
    run = chamber_series(3, 12_000, DT, cfg)
    np.testing.assert_allclose(run.temp_c, stepped, rtol=0, atol=1e-9)
    assert [round(a) for a, _ in run.excursions] == [60, 200, 300, 600, 900, 1200]


def test_shipped_rule_trips_every_excursion_and_never_on_noise() -> None:
    """30 h at 0.1 s with 63 excursions: each trips within its ramp, no false trip."""
    rule = _rule()
    assert rule.rate_limit_per_s is not None
    cfg = EtchConfig(excursion_every_s=1800.0, excursion_at_s=(4321.7, 50_000.3, 99_999.9))
    n = HOURS * 36_000 + 600  # and a minute for the excursion due at 30 h to reach 188
    run = chamber_series(17, n, DT, cfg)
    rng = np.random.default_rng(17)
    keep = rng.random(n) > 0.005  # missed polls
    for start in rng.integers(0, n - 30, 40):  # 40 gaps of 2 s (under stale_s)
        keep[start:start + 20] = False
    jitter = rng.integers(-10_000_000, 10_000_000, n)
    ts = (T0 + np.round(run.t_s * 1e9).astype(np.int64) + jitter)[keep]
    value = run.temp_c.astype(np.float32).astype(np.float64)[keep]  # Modbus float32
    il, tid = _stage(rule)
    ex = np.array(run.excursions)
    trips: list[InterlockTrip] = []
    for chunk in np.array_split(np.arange(ts.shape[0]), n // 600):
        now = int(ts[chunk[-1]])
        out = il.process(SampleBatch(np.full(chunk.shape[0], tid), ts[chunk], value[chunk]),
                         [], now)
        trips += [r for r in out.records if isinstance(r, InterlockTrip)]
        if il.states()[rule.name]["state"] == "tripped":
            # The operator resets once the excursion has ended and the chamber settled.
            t = (trips[-1].ts_ns - T0) / S
            inside = (ex[:, 0] <= t) & (t <= ex[:, 1] + 60)
            if not inside.any():  # a false trip: counted below; go on
                il.reset(rule.name, now)
            elif (now - T0) / S > ex[inside][0, 1] + 60:
                assert il.reset(rule.name, now)
    at = np.array([(t.ts_ns - T0) / S for t in trips])
    owner = [np.flatnonzero((ex[:, 0] <= a) & (a <= ex[:, 1])) for a in at]
    false_trips = [(t.condition, round(a, 1), t.value) for t, a, o in zip(trips, at, owner,
                                                                           strict=True)
                   if o.shape[0] == 0]
    assert len(false_trips) == 0, (len(false_trips), false_trips[:5])
    assert len(ex) == 63
    assert sorted(int(o[0]) for o in owner) == list(range(len(ex)))  # each once
    delay = at - ex[[int(o[0]) for o in owner], 0]
    assert all(t.condition == "high" for t in trips)
    assert delay.max() < 5.0, delay.max()  # 188 C is 8 C up a 2 C/s ramp, plus noise


def test_noise_margin_of_the_shipped_rate_limit() -> None:
    """The window slope of 30 h of the tool's noise stays under a third of the limit;
    the same readings as two-point rates would pass the old 20 C/s limit hundreds of times."""
    rule = _rule()
    assert rule.rate_limit_per_s is not None and rule.rate_window_s > 0
    temp = chamber_series(17, HOURS * 36_000, DT).temp_c.astype(np.float32).astype(np.float64)
    k = round(rule.rate_window_s / DT) + 1
    x = (np.arange(k) - (k - 1) / 2) * DT
    slope = np.convolve(temp, (x / (x @ x))[::-1], mode="valid")
    assert np.abs(slope).max() * 3 < rule.rate_limit_per_s, np.abs(slope).max()
    assert (np.abs(np.diff(temp)) / DT > 20.0).sum() > 300


@pytest.mark.parametrize("cool_s", [60.0, 900.0])
def test_restart_after_a_stop_does_not_trip_again(cool_s: float) -> None:
    """Closed loop: an excursion trips, the tool is stopped and cools, the interlock and
    then the tool are reset; the reheat (up to 5.2 C/s) does not trip the rate rule."""
    rule = _rule()
    il, tid = _stage(rule)
    model = EtchModel(8)
    trips: list[InterlockTrip] = []

    def poll(seconds: float) -> None:
        for _ in range(round(seconds)):  # one batch per simulated second
            snaps = [model.step(DT) for _ in range(10)]
            ts = [T0 + round(s.t_s * 1e9) for s in snaps]
            out = il.process(SampleBatch([tid] * 10, ts, [s.chamber_temp_c for s in snaps]),
                             [], ts[-1])
            trips.extend(r for r in out.records if isinstance(r, InterlockTrip))
            if out.commands:
                model.stop(cause="interlock")

    poll(60)
    assert model.trigger_excursion()
    poll(30 + cool_s)
    assert len(trips) == 1 and model.stopped
    assert il.reset(rule.name, T0 + round(model.t_s * 1e9))
    model.reset()
    poll(400)
    assert len(trips) == 1, [(t.condition, t.value) for t in trips[1:]]
    assert 177.0 < model.snap.chamber_temp_c < 183.0
