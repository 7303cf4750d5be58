"""Numba kernels against the plain-Python references in tests/naive.py."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.processing import kernels as K


def _load_naive() -> ModuleType:
    # tests/ is not a package: load the reference module by path.
    spec = importlib.util.spec_from_file_location("naive", Path(__file__).parents[1] / "naive.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


naive = _load_naive()

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
TEMPS = st.one_of(st.floats(-50, 100), st.just(math.nan), st.just(math.inf))
SETTINGS = settings(max_examples=60, deadline=None)


def _close(a: list[float] | np.ndarray, b: list[float] | np.ndarray, rtol: float) -> None:
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=rtol,
                               atol=0, equal_nan=True)


@SETTINGS
@given(st.lists(st.tuples(st.one_of(st.floats(0, 1000), FLOATS), TEMPS, TEMPS), max_size=40))
def test_compensate_matches_reference(rows: list[tuple[float, float, float]]) -> None:
    """L20 and its uncertainty equal the reference on random rows incl. NaN, inf, empty."""
    m, tp, ts = (np.array([r[i] for r in rows], dtype=np.float64) for i in range(3))
    out = np.empty_like(m)
    with np.errstate(all="ignore"):
        K.compensate_l20(m, tp, ts, 23.6e-6, 8e-6, out)
        ref = naive.compensate_l20(m.tolist(), tp.tolist(), ts.tolist(), 23.6e-6, 8e-6)
    _close(out, ref, 1e-12)
    fin = np.isfinite(m) & np.isfinite(tp) & np.isfinite(ts) & (np.abs(m) < 1e6)
    u_tp, u_ts = np.full(len(m), 0.1), np.full(len(m), 0.05)
    l20, u = np.empty_like(m), np.empty_like(m)
    with np.errstate(all="ignore"):
        K.compensate_with_uncertainty(m, tp, ts, 23.6e-6, 8e-6, u_tp, u_ts, 1e-6, 1e-6, 5e-4,
                                      l20, u)
    _close(l20, out, 1e-15)
    ref_u = naive.compensate_uncertainty(m[fin].tolist(), tp[fin].tolist(), ts[fin].tolist(),
                                         23.6e-6, 8e-6, u_tp[fin].tolist(),
                                         u_ts[fin].tolist(), 1e-6, 1e-6, 5e-4)
    _close(u[fin], ref_u, 1e-4)
    assert np.all(np.isnan(u[~fin & np.isnan(m)]))


def test_compensation_zero_divisor_is_ieee_not_an_exception() -> None:
    """A part factor 1 + a_p (T_p - 20) of exactly 0 gives inf / NaN, as IEEE says, instead
    of raising out of the stage (the kernels use NumPy's error model, which also lets the
    loop vectorise)."""
    m, tp, ts = np.array([100.0, 100.0]), np.array([18.0, 20.0]), np.array([20.0, 20.0])
    out, l20, u = np.empty(2), np.empty(2), np.empty(2)
    K.compensate_l20(m, tp, ts, 0.5, 8e-6, out)
    K.compensate_with_uncertainty(m, tp, ts, 0.5, 8e-6, np.full(2, 0.1), np.full(2, 0.1),
                                  1e-6, 1e-6, 5e-4, l20, u)
    assert math.isinf(out[0]) and math.isinf(l20[0]) and not math.isfinite(u[0])
    assert out[1] == l20[1] == 100.0 and math.isfinite(u[1])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.one_of(st.floats(10, 30), st.just(math.nan))),
                max_size=15), st.integers(1, 4))
def test_lag_estimate_matches_reference(steps: list[tuple[int, float]], parts: int) -> None:
    """The closed-form lag equals fine Euler integration, fed in one batch or in pieces."""
    ts = np.cumsum([s for s, _ in steps], dtype=np.int64) * 1_000_000_000
    air = np.array([a for _, a in steps], dtype=np.float64)
    ref = naive.lag_estimate(ts.tolist(), air.tolist(), 120.0)
    state, last, out = np.zeros(3), np.zeros(1, np.int64), np.empty(len(ts))
    for chunk in np.array_split(np.arange(len(ts)), parts):
        part = np.empty(len(chunk))
        K.lag_estimate(ts[chunk], air[chunk], 120.0, state, last, part)
        out[chunk] = part
    np.testing.assert_allclose(out, ref, atol=1e-4, equal_nan=True)


SAMPLE = st.tuples(
    st.one_of(st.floats(170, 200), st.just(math.nan), st.just(math.inf), st.just(-math.inf)),
    st.integers(0, 2_000_000_000), st.sampled_from([0, 0, 0, 0x40, 0x80, 0x84]),
)


@settings(max_examples=250, deadline=None)
@given(st.lists(SAMPLE, max_size=40), st.integers(1, 4), st.integers(0, 3_000_000_000),
       st.floats(0, 5), st.one_of(st.just(math.inf), st.floats(1, 100)), st.booleans(),
       st.integers(1, 3), st.sampled_from([0.0, 0.0, 5e8, 2e9, 7e9]))
def test_interlock_scan_matches_reference(
    rows: list[tuple[float, int, int]], deb_n: int, deb_ns: int, hyst: float,
    rate: float, trip_bad: bool, parts: int, window: float,
) -> None:
    """The interlock scan trips at the same sample, for the same reason, in any batching,
    with the two-point rate and with a windowed slope (irregular spacing, NaN, Bad, gaps)."""
    v = np.array([r[0] for r in rows], dtype=np.float64)
    t = np.cumsum([r[1] for r in rows], dtype=np.int64)
    q = np.array([r[2] for r in rows], dtype=np.uint8)
    params = np.array([188.0, 175.0, deb_n, deb_ns, hyst, rate, float(trip_bad), window])
    trip, ist = _scan_in_parts(v, t, q, params, parts)
    ref_trip, ref_cond, ref_clear = naive.interlock_scan(
        v.tolist(), t.tolist(), q.tolist(), 188.0, 175.0, deb_n, deb_ns, hyst, rate, trip_bad,
        window)
    assert trip == ref_trip
    assert ist[0] == (trip >= 0)
    if trip >= 0:
        assert ist[6] == ref_cond
    if len(v):
        assert bool(ist[7]) == ref_clear


def _scan_in_parts(v: np.ndarray, t: np.ndarray, q: np.ndarray, params: np.ndarray,
                   parts: int) -> tuple[int, np.ndarray]:
    fs, ist = np.full(K.N_IL_F, math.nan), np.zeros(K.N_IL_I, np.int64)
    trip = -1
    offset = 0
    for chunk in np.array_split(np.arange(len(v)), parts):
        k = K.interlock_scan(v[chunk], t[chunk], q[chunk], params, fs, ist)
        if k >= 0 and trip < 0:
            trip = offset + k
        offset += len(chunk)
    return trip, ist


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.floats(0.2, 3.0))
def test_windowed_rate_matches_reference_past_the_ring(seed: int, parts: int,
                                                       slope: float) -> None:
    """Polled faster than the ring holds per window, the newest RATE_RING samples are the
    window; a ramp through noise trips on rate at the same sample as the reference."""
    rng = np.random.default_rng(seed)
    n = 3 * K.RATE_RING
    t = np.cumsum(rng.integers(1_000_000, 9_000_000, n)).astype(np.int64)  # ~5 ms polls
    v = 180.0 + rng.normal(0, 0.05, n) + np.where(t > t[n // 2], slope * (t - t[n // 2]) / 1e9,
                                                  0.0)
    q = np.where(rng.random(n) < 0.05, 0x80, 0).astype(np.uint8)
    params = np.array([1e9, -1e9, 1, 0, 0.0, 1.0, 0.0, 3e9])
    trip, _ = _scan_in_parts(v, t, q, params, parts)
    ref_trip, ref_cond, _ = naive.interlock_scan(
        v.tolist(), t.tolist(), q.tolist(), 1e9, -1e9, 1, 0, 0.0, 1.0, False, 3e9)
    assert trip == ref_trip and (trip < 0 or ref_cond == K.COND_RATE)


@SETTINGS
@given(st.lists(st.tuples(st.floats(-100, 100), st.floats(-10, 10)), max_size=12),
       st.sampled_from([0, 1, 2]))
def test_theil_sen_matches_reference(pts: list[tuple[float, float]], spoil: int) -> None:
    """Theil-Sen slope and intercept equal the reference, NaN points ignored."""
    x = np.array([p[0] for p in pts], dtype=np.float64)
    y = np.array([p[1] for p in pts], dtype=np.float64)
    if spoil and len(x):
        (x if spoil == 1 else y)[0] = math.nan
    out = np.empty(2)
    K.theil_sen(x, y, out)
    ref = naive.theil_sen(x.tolist(), y.tolist())
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9, equal_nan=True)


@SETTINGS
@given(st.lists(st.one_of(st.floats(-10, 10), st.just(math.nan), st.just(math.inf)),
                max_size=50), st.integers(1, 10), st.integers(1, 3))
def test_level_track_matches_reference(vals: list[float], base_n: int, parts: int) -> None:
    """EWMA level and baseline equal the reference in any batching."""
    v = np.array(vals, dtype=np.float64)
    state = np.array([math.nan, 0.0, 0.0, math.nan])
    for chunk in np.array_split(v, parts):
        K.level_track(np.ascontiguousarray(chunk), 0.1, float(base_n), state)
    level, base = naive.level_track(vals, 0.1, base_n)
    np.testing.assert_allclose([state[0], state[3]], [level, base], rtol=1e-12,
                               equal_nan=True)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.floats(-4, 4), st.just(math.nan), st.just(math.inf)),
                max_size=60), st.integers(1, 31), st.integers(1, 3), st.floats(-1.5, 1.5))
def test_spc_scan_matches_reference(vals: list[float], mask: int, parts: int,
                                    shift: float) -> None:
    """Western Electric rules and EWMA fire at the same points as the reference."""
    v = np.array(vals, dtype=np.float64) + shift
    params = np.array([0.0, 1.0, 0.2, 2.86, float(mask)])
    state = np.zeros(K.N_SPC_STATE)
    got: list[tuple[int, int]] = []
    offset = 0
    for chunk in np.array_split(np.arange(len(v)), parts):
        n = len(chunk)
        idx, rule, stat = (np.empty(5 * n, np.int64), np.empty(5 * n, np.int64),
                           np.empty(5 * n))
        k = K.spc_scan(v[chunk], params, state, idx, rule, stat)
        got += [(int(offset + i), int(r)) for i, r in zip(idx[:k], rule[:k], strict=True)]
        offset += n
    assert got == naive.spc_scan(v.tolist(), 0.0, 1.0, 0.2, 2.86, mask)


def test_motor_scan_counts_starts_spikes_and_micro_stoppages() -> None:
    """A scripted current trace gives the expected starts, spikes, micro-stoppages, level."""
    idle, run = [0.05] * 5, [1.2] * 20
    trace = idle + [2.5] * 3 + run + [0.0] * 4 + run + [3.0] + run + idle + [2.5] * 3 + run
    params = np.array([0.6, 0.025, 0.3, 0.1, 0.1, 3, 10, 12])
    state = np.full(K.N_MOTOR_STATE, 0.0)
    state[[0, 4, 12, 15]] = math.nan
    state[9] = 1.0
    K.motor_scan(np.array(trace), params, state)
    assert state[16] == 2  # two starts from idle
    assert state[8] == 1  # one micro-stoppage
    assert state[7] == 1  # one spike
    assert state[0] == pytest.approx(1.2)
    assert state[4] == pytest.approx(1.2)
    assert state[12] == pytest.approx(2.5)
    empty = state.copy()
    K.motor_scan(np.empty(0), params, state)
    np.testing.assert_array_equal(state, empty)
