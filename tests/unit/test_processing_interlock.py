"""Interlock stage: trips, latching, reset rules, stale data, evidence, speed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from edge.components import Command
from edge.config import loads
from edge.errors import ConfigError
from edge.model import InterlockTrip, Quality, Quarantine, SampleBatch, TagRegistry
from edge.processing.interlock import Interlock
from edge.processing.interlock_config import (
    InterlockAction,
    InterlockRuleConfig,
    check_actions,
)

S = 1_000_000_000
T0 = 1_795_255_200 * S

RULE_TOML = """
[[interlocks]]
name = "etch1_overtemp"
tag = "etch1/chamber_temp_c"
high = 188.0
debounce_samples = 1
clear_hysteresis = 2.0
stale_s = 5.0
trip_on_bad_quality = true
action = {source = "etch1", action = "stop"}
context_tags = ["etch1/lot", "etch1/wafer"]
evidence_samples = 20
"""


def _setup(**over: object) -> tuple[Interlock, TagRegistry]:
    tags = TagRegistry()
    for name in ("chamber_temp_c", "lot", "wafer", "pressure"):
        tags.add("etch1", name)
    rule = loads(RULE_TOML).section("interlocks")[0]
    if over:
        import msgspec

        rule = msgspec.structs.replace(rule, **over)
    return Interlock([rule], tags, start_ns=T0), tags


def _batch(tags: TagRegistry, rows: list[tuple[str, int, float, int]]) -> SampleBatch:
    return SampleBatch([tags.id_of(f"etch1/{r[0]}") for r in rows], [r[1] for r in rows],
                       [r[2] for r in rows], [r[3] for r in rows])


def test_fab_rule_trips_once_with_command_trip_and_quarantine() -> None:
    """188.0 C exceeded: one stop command, one InterlockTrip, one Quarantine naming the lot."""
    il, tags = _setup()
    rows = [("lot", T0, 4711, 0), ("wafer", T0, 7, 0)]
    rows += [("chamber_temp_c", T0 + i * S // 10, 180.0 + 0.1 * i, 0) for i in range(30)]
    rows += [("chamber_temp_c", T0 + 31 * S // 10, 188.5, 0),
             ("chamber_temp_c", T0 + 32 * S // 10, 189.0, 0)]
    out = il.process(_batch(tags, rows), [], T0 + 4 * S)
    assert out.commands == [Command("etch1", "stop", "etch1/chamber_temp_c",
                                    reason="etch1_overtemp")]
    trips = [r for r in out.records if isinstance(r, InterlockTrip)]
    quars = [r for r in out.records if isinstance(r, Quarantine)]
    assert len(trips) == 1 and len(quars) == 1
    assert trips[0].value == 188.5 and trips[0].limit == 188.0
    assert trips[0].condition == "high" and trips[0].ts_ns == T0 + 31 * S // 10
    assert trips[0].context == {"etch1/lot": "4711", "etch1/wafer": "7"}
    assert "lot=4711" in quars[0].subject
    ev = quars[0].evidence
    assert len(ev) == 20 and ev[-1].value == 188.5 and ev[0].tag == "etch1/chamber_temp_c"
    assert [e.ts_ns for e in ev] == sorted(e.ts_ns for e in ev)
    again = il.process(_batch(tags, [("chamber_temp_c", T0 + 5 * S, 190.0, 0)]), [], T0 + 5 * S)
    assert not again.commands  # latched: no second stop


def test_reset_only_takes_when_clear_below_hysteresis() -> None:
    """Reset fails above high - hysteresis and while tripped data is stale; succeeds when clear."""
    il, tags = _setup()
    il.process(_batch(tags, [("chamber_temp_c", T0, 189.0, 0)]), [], T0)
    assert il.states()["etch1_overtemp"]["state"] == "tripped"
    il.process(_batch(tags, [("chamber_temp_c", T0 + S, 187.0, 0)]), [], T0 + S)
    assert il.reset("etch1_overtemp", T0 + S) is False  # 187 > 188 - 2
    il.process(_batch(tags, [("chamber_temp_c", T0 + 2 * S, 185.0, 0)]), [], T0 + 2 * S)
    assert il.reset("etch1_overtemp", T0 + 60 * S) is False  # no fresh data: stale
    assert il.reset("etch1_overtemp", T0 + 3 * S) is True
    st = il.states()["etch1_overtemp"]
    assert st["state"] == "ok" and st["trips"] == 1 and st["last_value"] == 185.0
    with pytest.raises(KeyError, match="nope"):
        il.reset("nope", T0)


def test_debounce_by_samples_and_duration() -> None:
    """A single spike does not trip with debounce 3; three in a row spanning 0.2 s do."""
    il, tags = _setup(debounce_samples=3, debounce_s=0.2)
    rows = [("chamber_temp_c", T0, 190.0, 0), ("chamber_temp_c", T0 + S // 10, 180.0, 0),
            ("chamber_temp_c", T0 + 2 * S // 10, 190.0, 0),
            ("chamber_temp_c", T0 + 3 * S // 10, 190.0, 0)]
    assert not il.process(_batch(tags, rows), [], T0).commands
    out = il.process(_batch(tags, [("chamber_temp_c", T0 + 4 * S // 10, 190.0, 0)]), [], T0)
    assert out.commands  # 3 samples, 0.2 s


def test_low_rate_and_bad_quality_conditions() -> None:
    """Low limit, rate of change and Bad quality each trip with their own condition."""
    for rows, cond, over in (
        ([("chamber_temp_c", T0, 10.0, 0)], "low", {"low": 20.0}),
        ([("chamber_temp_c", T0, 180.0, 0), ("chamber_temp_c", T0 + S, 185.0, 0)], "rate",
         {"rate_limit_per_s": 2.0}),
        ([("chamber_temp_c", T0, math.nan, int(Quality.BAD_TIMEOUT))], "bad_quality", {}),
    ):
        il, tags = _setup(**over)
        out = il.process(_batch(tags, rows), [], T0)
        trips = [r for r in out.records if isinstance(r, InterlockTrip)]
        assert [t.condition for t in trips] == [cond]


def test_stale_data_trips_fail_safe_on_tick() -> None:
    """No sample within stale_s trips on tick (also when none ever came); fresh data resets."""
    il, tags = _setup()
    assert not il.tick(T0 + 4 * S).commands
    out = il.tick(T0 + 6 * S)
    trips = [r for r in out.records if isinstance(r, InterlockTrip)]
    assert out.commands and trips[0].condition == "stale"
    assert not il.tick(T0 + 7 * S).commands
    assert il.reset("etch1_overtemp", T0 + 7 * S) is False
    il.process(_batch(tags, [("chamber_temp_c", T0 + 8 * S, 180.0, 0)]), [], T0 + 8 * S)
    assert il.reset("etch1_overtemp", T0 + 8 * S) is True


def test_every_excursion_trips_and_normal_noise_never_does() -> None:
    """Long normal run at 180 +- 2.5 C: no trip; each of 50 injected excursions trips."""
    rng = np.random.default_rng(5)
    il, tags = _setup(stale_s=None)
    tid = tags.id_of("etch1/chamber_temp_c")
    n = 1_000_000
    ts = T0 + np.arange(n, dtype=np.int64) * (S // 10)
    val = 180.0 + np.clip(rng.normal(0, 1.0, n), -2.5, 2.5)
    trips = 0
    for chunk in np.array_split(np.arange(n), 100):
        trips += len(il.process(SampleBatch(np.full(len(chunk), tid), ts[chunk], val[chunk]),
                                [], 0).commands)
    assert trips == 0
    caught = 0
    for k in range(50):
        ramp = 186.0 + np.linspace(0, 4 + rng.uniform(0, 3), 40)
        t = ts[-1] + (k + 1) * 100 * S + np.arange(40) * (S // 10)
        out = il.process(SampleBatch(np.full(40, tid), t, ramp), [], 0)
        caught += len(out.commands)
        il.process(SampleBatch([tid], [t[-1] + S], [180.0]), [], 0)
        assert il.reset("etch1_overtemp", 0)
    assert caught == 50


def test_decision_takes_microseconds() -> None:
    """Judging a 20k-sample mixed batch and deciding a stop takes well under a millisecond."""
    il, tags = _setup(stale_s=None)
    tid, other = tags.id_of("etch1/chamber_temp_c"), tags.id_of("etch1/pressure")
    n = 20_000
    tag_ids = np.where(np.arange(n) % 10 == 0, tid, other)
    vals = np.full(n, 180.0)
    vals[-10] = 190.0
    batch = SampleBatch(tag_ids, T0 + np.arange(n), vals)
    best = math.inf
    for _ in range(20):
        il.reset("etch1_overtemp", 0)
        il.process(SampleBatch([tid], [T0], [180.0]), [], 0)
        il.reset("etch1_overtemp", 0)
        t0 = time.perf_counter_ns()
        out = il.process(batch, [], 0)
        best = min(best, time.perf_counter_ns() - t0)
        assert out.commands
    assert best < 1_000_000, best


def test_config_errors_name_the_key() -> None:
    """Bad rule settings are rejected with the key named; unknown tags at build."""
    with pytest.raises(ConfigError, match="interlock 'x': low must be below high"):
        loads('[[interlocks]]\nname="x"\ntag="a/b"\nhigh=1.0\nlow=2.0\n'
              'action={source="a"}\n')
    with pytest.raises(ConfigError, match="debounce_samples"):
        loads('[[interlocks]]\nname="x"\ntag="a/b"\nhigh=1.0\ndebounce_samples=0\n'
              'action={source="a"}\n')
    rule = InterlockRuleConfig(name="x", tag="a/b", high=1.0,
                               action=loads(RULE_TOML).section("interlocks")[0].action)
    with pytest.raises(ConfigError, match="tag 'a/b'"):
        Interlock([rule], TagRegistry())


def test_arm_restarts_the_stale_clock() -> None:
    """Start-up time is not silence: arming when the sources start resets the stale clock."""
    from edge.model import TagRegistry
    from edge.processing.interlock import Interlock
    from edge.processing.interlock_config import InterlockAction, InterlockRuleConfig

    tags = TagRegistry()
    tags.add("etch1", "chamber_temp")
    rule = InterlockRuleConfig(name="t", tag="etch1/chamber_temp", high=188.0, stale_s=5.0,
                               action=InterlockAction(source="etch1"))
    stage = Interlock([rule], tags, start_ns=0)
    stage.arm(10 * 10**9)
    assert not stage.tick(12 * 10**9).commands, "2 s after arming is not stale"
    assert stage.tick(16 * 10**9).commands, "6 s after arming with no sample is stale"


def _rule(name: str, source: str, action: str = "stop") -> InterlockRuleConfig:
    return InterlockRuleConfig(name=name, tag="etch1/chamber_temp_c", high=188.0,
                               action=InterlockAction(source=source, action=action))


def test_check_actions_names_the_interlock_the_source_and_the_valid_actions() -> None:
    """An action no source declares is a ConfigError naming interlock, key, source and the
    valid choices; every bad rule is listed, one line each."""
    actions = {"etch1": frozenset({"stop", "reset"}), "motors": frozenset({"stop"}),
               "cmm1": frozenset[str]()}
    check_actions([_rule("ok", "etch1"), _rule("ok2", "motors")], actions)
    with pytest.raises(ConfigError) as exc:
        check_actions([_rule("chamber_overtemp", "etch1", "halt"), _rule("ok", "etch1"),
                       _rule("far", "etch9"), _rule("cmm", "cmm1")], actions)
    assert str(exc.value).splitlines() == [
        "interlock 'chamber_overtemp': action: source 'etch1' has no action 'halt' "
        "(it has: reset, stop)",
        "interlock 'far': action: no source named 'etch9' (sources: cmm1, etch1, motors)",
        "interlock 'cmm': action: source 'cmm1' has no action 'stop' (it takes no commands)",
    ]
    with pytest.raises(ConfigError, match=r"no source named 'etch1' \(sources: none\)"):
        check_actions([_rule("x", "etch1")], {})


def test_windowed_rate_ignores_noise_and_trips_on_a_fast_change() -> None:
    """rate_window_s: a noisy flat signal never trips at 8 C/s while its two-point rate
    does; a 12 C/s heater runaway trips on rate within a second."""
    rng = np.random.default_rng(3)
    n = 36_000
    ts = T0 + np.arange(n, dtype=np.int64) * (S // 10)
    val = 180.0 + np.clip(rng.normal(0, 0.4, n), -2.5, 2.5)
    il2, tags = _setup(stale_s=None, rate_limit_per_s=8.0)
    tid = tags.id_of("etch1/chamber_temp_c")
    assert il2.process(SampleBatch(np.full(n, tid), ts, val), [], 0).commands  # two-point
    il, tags = _setup(stale_s=None, rate_limit_per_s=8.0, rate_window_s=1.0, high=None)
    assert not il.process(SampleBatch(np.full(n, tid), ts, val), [], 0).commands
    ramp_ts = ts[-1] + np.arange(1, 21, dtype=np.int64) * (S // 10)
    out = il.process(SampleBatch(np.full(20, tid), ramp_ts, 180.0 + 1.2 * np.arange(1, 21)),
                     [], 0)
    (trip,) = [r for r in out.records if isinstance(r, InterlockTrip)]
    assert trip.condition == "rate" and trip.limit == 8.0 and trip.value > 8.0
    assert trip.ts_ns - ts[-1] <= S
    with pytest.raises(ConfigError, match="rate_window_s"):
        loads('[[interlocks]]\nname="x"\ntag="a/b"\nrate_limit_per_s=1.0\n'
              'rate_window_s=-1.0\naction={source="a"}\n')
