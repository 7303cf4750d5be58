"""SPC stage: baseline limits, Western Electric rules, EWMA run lengths."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.config import loads
from edge.errors import ConfigError
from edge.model import Quality, SampleBatch, SpcViolation, TagRegistry
from edge.processing.spc import Spc, SpcConfig, run_lengths


def test_default_alarm_scheme_meets_both_run_lengths() -> None:
    """Default alarms (EWMA + rule 1 beyond 4 sigma): in-control ARL >= 370 and a 1-sigma
    shift found in <= 10 points on average, whether present from the start or appearing
    after 100 in-control points; all four WE rules as alarms would false-alarm ~4x as often."""
    cfg = SpcConfig(name="d", tag="a/b")
    arl0 = run_lengths(cfg, 0.0, 2000, seed=1, cap=3000).mean()
    arl1_start = run_lengths(cfg, 1.0, 8000, seed=2, cap=200).mean()
    arl1_later = run_lengths(cfg, 1.0, 8000, seed=3, onset=100, cap=200).mean()
    assert arl0 >= 370, arl0
    assert arl1_start <= 10, arl1_start
    assert arl1_later <= 10, arl1_later
    we = SpcConfig(name="we", tag="a/b", rules=("we1", "we2", "we3", "we4"),
                   alarm_rules=("we1", "we2", "we3", "we4"), we1_alarm_sigma=3.0)
    assert run_lengths(we, 0.0, 1000, seed=4, cap=2000).mean() < 120


def test_violations_say_alarm_or_signal() -> None:
    """With the default config every rule is recorded; only EWMA and points beyond 4 sigma
    are alarms, the rest are signals (flag, detail text and metric label agree)."""
    tags = TagRegistry()
    tags.add("etch1", "chamber_temp_c")
    stage = Spc([SpcConfig(name="t", tag="etch1/chamber_temp_c", center=180.0, sigma=1.0)],
                tags)

    def feed(z: list[float]) -> list[SpcViolation]:
        vals = 180.0 + np.array(z)
        out = stage.process(SampleBatch(np.zeros(len(vals)), np.arange(len(vals)), vals), [], 0)
        return [r for r in out.records if isinstance(r, SpcViolation)]

    v = feed([0.0, 3.5, 0.0])
    assert [(r.rule, r.alarm) for r in v] == [("we1", False)]
    assert v[0].detail.startswith("t: signal, beyond 3 sigma")
    v = feed([0.0] * 20 + [2.5, 0.0, 2.5] + [0.0] * 20)
    assert [(r.rule, r.alarm) for r in v] == [("we2", False)]
    v = feed([0.0] * 20 + [-4.5])
    assert ("we1", True) in [(r.rule, r.alarm) for r in v]
    v = feed([0.0] * 20 + [1.5] * 12)
    assert ("ewma", True) in [(r.rule, r.alarm) for r in v]
    assert {r.rule for r in v if not r.alarm} >= {"we3", "we4"}


def test_western_electric_rules_fire_on_their_patterns() -> None:
    """Each rule fires on its textbook pattern, with the learned center and sigma."""
    tags = TagRegistry()
    tags.add("etch1", "chamber_temp_c")
    cfg = SpcConfig(name="t", tag="etch1/chamber_temp_c", baseline_samples=200,
                    rules=("we1", "we2", "we3", "we4"))
    stage = Spc([cfg], tags)
    rng = np.random.default_rng(4)
    base = 180 + rng.standard_normal(200)
    stage.process(SampleBatch(np.zeros(200), np.arange(200), base), [], 0)
    st = stage.states()["t"]
    assert st["center"] == pytest.approx(180, abs=0.2)
    assert st["sigma"] == pytest.approx(1, rel=0.15)
    c, s = float(st["center"]), float(st["sigma"])
    for pattern, rule in (([4.0], "we1"), ([2.5, 0.0, 2.5], "we2"),
                          ([1.5, 1.5, 0.0, 1.5, 1.5], "we3"), ([0.5] * 8, "we4")):
        vals = c + s * np.array([0.0, -0.1, 0.1, *pattern])
        out = stage.process(SampleBatch(np.zeros(len(vals)), np.arange(len(vals)), vals), [], 0)
        rules = [r.rule for r in out.records if isinstance(r, SpcViolation)]
        assert rule in rules, (rule, rules)


def test_bad_samples_skipped_and_subgroups_averaged() -> None:
    """Bad-quality samples never reach the chart; X-bar limits use sigma / sqrt(n)."""
    tags = TagRegistry()
    tags.add("cmm1", "l20_mm")
    cfg = loads('[[spc]]\nname = "len"\ntag = "cmm1/l20_mm"\nsubgroup_size = 4\n'
                'baseline_samples = 50\n').section("spc")[0]
    stage = Spc([cfg], tags)
    rng = np.random.default_rng(9)
    x = 120 + 0.001 * rng.standard_normal(400)
    q = np.zeros(400, np.uint8)
    x[::7] = math.nan
    q[::7] = Quality.BAD_DECODE
    stage.process(SampleBatch(np.zeros(400), np.arange(400), x, q), [], 0)
    st = stage.states()["len"]
    assert st["sigma"] == pytest.approx(0.0005, rel=0.25)
    assert math.isfinite(float(st["ewma"]))


def test_config_errors() -> None:
    """center without sigma, and an unknown rule, are rejected naming the key."""
    with pytest.raises(ConfigError, match="spc 'a': center and sigma"):
        loads('[[spc]]\nname="a"\ntag="x/y"\ncenter=1.0\n')
    with pytest.raises(ConfigError, match=r"invalid enum value .we9."):
        loads('[[spc]]\nname="a"\ntag="x/y"\nrules=["we9"]\n')
    with pytest.raises(ConfigError, match="spc 'a': we1_alarm_sigma must be"):
        loads('[[spc]]\nname="a"\ntag="x/y"\nwe1_alarm_sigma=2.0\n')
