"""SPC stage: baseline limits, Western Electric rules, EWMA run lengths."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.config import loads
from edge.errors import ConfigError
from edge.model import Quality, SampleBatch, SpcViolation, TagRegistry
from edge.processing import kernels as K
from edge.processing.spc import Spc, SpcConfig


def _first_alarms(shift: float, runs: int, mask: int, seed: int, cap: int = 5000) -> np.ndarray:
    """Run length to the first alarm of each run, chart started with the shift present."""
    rng = np.random.default_rng(seed)
    out = np.empty(runs)
    params = np.array([0.0, 1.0, 0.2, SpcConfig(name='d', tag='a/b').ewma_l, float(mask)])
    idx, rule, stat = np.empty(5 * cap, np.int64), np.empty(5 * cap, np.int64), np.empty(5 * cap)
    for r in range(runs):
        x = rng.standard_normal(cap) + shift
        state = np.zeros(K.N_SPC_STATE)
        k = K.spc_scan(x, params, state, idx, rule, stat)
        out[r] = idx[0] + 1 if k else cap
    return out


def test_ewma_arl_in_control_and_one_sigma_shift() -> None:
    """Default EWMA(0.2, 2.95): in-control ARL >= 370; a 1-sigma shift found in <= 10."""
    arl0 = _first_alarms(0.0, 2000, K.RULE_EWMA, seed=1).mean()
    arl1 = _first_alarms(1.0, 2000, K.RULE_EWMA, seed=2).mean()
    assert arl0 >= 370, arl0
    assert arl1 <= 10, arl1


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
