"""Numba kernels of the judgement stages: arrays in, arrays (or state) out.

Invariants:

* Every kernel is ``@njit`` with an explicit signature (compiled when this module is
  imported, never on the first batch), ``cache=True`` (the folder comes from
  ``NUMBA_CACHE_DIR``, set by the app or systemd, never here) and ``nogil=True``.
  No ``fastmath``: NaN and inf must keep their IEEE meaning.
* State is explicit: each stateful kernel takes its state arrays and updates them in
  place, so feeding a series in one batch or in many gives the same result.
* Array arguments are 1-d C-contiguous; the stage modules make them so.
* Each kernel has an obviously-correct twin in ``tests/naive.py``; the unit tests
  compare them on random data with NaN, inf and empty input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numba import njit
from numba.core import types

f8, i8, u1 = types.float64, types.int64, types.uint8
F8, I8, U1 = types.float64[::1], types.int64[::1], types.uint8[::1]

_F = TypeVar("_F", bound=Callable[..., Any])


def _kernel(signature: Any) -> Callable[[_F], _F]:
    """``@njit(signature, cache=True, nogil=True)``, typed for mypy."""
    def wrap(fn: _F) -> _F:
        return cast(_F, njit(signature, cache=True, nogil=True)(fn))
    return wrap

# --------------------------------------------------------------- compensation


@_kernel(types.void(F8, F8, F8, f8, f8, F8))
def compensate_l20(meas: np.ndarray, t_part: np.ndarray, t_scale: np.ndarray,
                   a_part: float, a_scale: float, out: np.ndarray) -> None:
    """L20 = L (1 + a_scale (T_scale - 20)) / (1 + a_part (T_part - 20)), into ``out``."""
    for i in range(meas.shape[0]):
        out[i] = meas[i] * (1.0 + a_scale * (t_scale[i] - 20.0)) / (
            1.0 + a_part * (t_part[i] - 20.0))


@_kernel(types.void(F8, F8, F8, f8, f8, F8, F8, f8, f8, f8, F8, F8))
def compensate_with_uncertainty(
    meas: np.ndarray, t_part: np.ndarray, t_scale: np.ndarray, a_part: float,
    a_scale: float, u_t_part: np.ndarray, u_t_scale: np.ndarray, u_a_part: float,
    u_a_scale: float, u_probe: float, out_l20: np.ndarray, out_u: np.ndarray,
) -> None:
    """L20 and its combined standard uncertainty (GUM, first order, uncorrelated inputs)."""
    for i in range(meas.shape[0]):
        dp = t_part[i] - 20.0
        ds = t_scale[i] - 20.0
        fp = 1.0 + a_part * dp
        fs = 1.0 + a_scale * ds
        length = meas[i]
        out_l20[i] = length * fs / fp
        c_tp = length * fs * a_part / (fp * fp)
        c_ts = length * a_scale / fp
        c_ap = length * fs * dp / (fp * fp)
        c_as = length * ds / fp
        c_l = fs / fp
        out_u[i] = math.sqrt(
            (c_tp * u_t_part[i]) ** 2 + (c_ts * u_t_scale[i]) ** 2 + (c_ap * u_a_part) ** 2
            + (c_as * u_a_scale) ** 2 + (c_l * u_probe) ** 2
        )


@_kernel(types.void(I8, F8, f8, F8, I8, F8))
def lag_estimate(ts_ns: np.ndarray, air: np.ndarray, tau_s: float, state: np.ndarray,
                 last_ts: np.ndarray, out: np.ndarray) -> None:
    """First-order lag of the air temperature: the part temperature estimate at each row.

    The air is taken as linear between readings (the exact ramp-invariant update), so
    sparse readings lose little. ``state`` = [estimate, last air, initialised];
    ``last_ts`` = [ts of the last air reading]. NaN air or a non-increasing time keeps
    the estimate. The first reading starts the part in equilibrium with the air.
    """
    for i in range(ts_ns.shape[0]):
        a = air[i]
        if math.isfinite(a):
            if state[2] == 0.0:
                state[0] = a
                state[1] = a
                state[2] = 1.0
                last_ts[0] = ts_ns[i]
            elif ts_ns[i] > last_ts[0]:
                dt = (ts_ns[i] - last_ts[0]) / 1e9
                r = -dt / tau_s
                a0 = state[1]
                state[0] = a + (a - a0) * (tau_s / dt) * math.expm1(r) + (
                    state[0] - a0) * math.exp(r)
                state[1] = a
                last_ts[0] = ts_ns[i]
        out[i] = state[0] if state[2] != 0.0 else math.nan


# --------------------------------------------------------------- interlock

# params:  0 high, 1 low, 2 debounce samples, 3 debounce ns, 4 clear hysteresis,
#          5 rate limit (units/s), 6 trip on bad quality (0/1)
# fstate:  0 last value, 1 previous good value (rate), 2 trip value, 3 trip limit
# istate:  0 tripped, 1 violation streak, 2 streak start ts, 3 last ts, 4 previous good ts,
#          5 has previous good, 6 trip condition, 7 clear now, 8 last quality, 9 seen
COND_NONE, COND_HIGH, COND_LOW, COND_RATE, COND_BAD, COND_STALE = 0, 1, 2, 3, 4, 5
N_IL_PARAMS, N_IL_F, N_IL_I = 7, 4, 10


@_kernel(i8(F8, I8, U1, F8, F8, I8))
def interlock_scan(value: np.ndarray, ts_ns: np.ndarray, quality: np.ndarray,
                   params: np.ndarray, fstate: np.ndarray, istate: np.ndarray) -> int:
    """Scan one rule's samples in order; returns the index that tripped it, or -1.

    A trip latches (``istate[0]``); later samples still update the last value and the
    clear flag so a reset can be judged.
    """
    high, low = params[0], params[1]
    n_need, ns_need = params[2], params[3]
    hyst, rate_limit, trip_bad = params[4], params[5], params[6] != 0.0
    trip_at = -1
    for i in range(value.shape[0]):
        v, t, q = value[i], ts_ns[i], quality[i]
        bad = (q & 0x80) != 0 or math.isnan(v)
        cond = COND_NONE
        limit = math.nan
        shown = v
        rate_bad = False
        if bad:
            if trip_bad:
                cond = COND_BAD
        else:
            if istate[5] != 0 and t > istate[4]:
                rate = abs(v - fstate[1]) / ((t - istate[4]) / 1e9)
                rate_bad = rate > rate_limit
            if v > high:
                cond, limit = COND_HIGH, high
            elif v < low:
                cond, limit = COND_LOW, low
            elif rate_bad:
                cond, limit = COND_RATE, rate_limit
                shown = abs(v - fstate[1]) / ((t - istate[4]) / 1e9)
            if istate[5] == 0 or t > istate[4]:
                fstate[1] = v
                istate[4] = t
                istate[5] = 1
        istate[7] = 1 if (not bad and v <= high - hyst and v >= low + hyst
                          and not rate_bad) else 0
        if cond != COND_NONE:
            if istate[1] == 0:
                istate[2] = t
            istate[1] += 1
            if istate[0] == 0 and istate[1] >= n_need and (t - istate[2]) >= ns_need:
                istate[0] = 1
                istate[6] = cond
                fstate[2] = shown
                fstate[3] = limit
                trip_at = i
        else:
            istate[1] = 0
        fstate[0] = v
        istate[3] = t
        istate[8] = q
        istate[9] = 1
    return trip_at


# --------------------------------------------------------------- motor health

# params: 0 running above (A), 1 stopped below (A), 2 spike delta (A), 3 level alpha,
#         4 rate alpha, 5 inrush samples, 6 baseline samples, 7 micro-stoppage max samples
# state:  0 level, 1 running samples, 2 baseline sum, 3 baseline n, 4 baseline,
#         5 spike rate, 6 micro-stoppage rate, 7 spikes, 8 micro-stoppages, 9 previous class,
#         10 inrush samples left, 11 inrush peak (current start), 12 inrush peak (mean),
#         13 stopped run length, 14 stopped straight from running, 15 mean square, 16 starts
N_MOTOR_PARAMS, N_MOTOR_STATE = 8, 17


@_kernel(types.void(F8, F8, F8))
def motor_scan(current: np.ndarray, params: np.ndarray, state: np.ndarray) -> None:
    """Update one motor's current features over its samples (non-finite samples skipped).

    Classes: stopped (< params[1]), idle, active (> params[0]). An active phase that
    starts from idle begins with ``params[5]`` inrush samples; one that resumes after at
    most ``params[7]`` stopped samples straight from running is a micro-stoppage. A
    running sample above level + delta is a spike and is kept out of the level.
    """
    run_a, stop_a, spike_d = params[0], params[1], params[2]
    a_lvl, a_rate = params[3], params[4]
    for i in range(current.shape[0]):
        c = current[i]
        if not math.isfinite(c):
            continue
        if state[15] != state[15]:
            state[15] = c * c
        else:
            state[15] += a_rate * (c * c - state[15])
        if c < stop_a:
            cls = 0.0
        elif c < run_a:
            cls = 1.0
        else:
            cls = 2.0
        if cls == 0.0:
            if state[9] == 2.0:
                state[13] = 0.0
                state[14] = 1.0 if state[10] <= 0.0 else 0.0
            state[13] += 1.0
            if state[13] > params[7]:
                state[14] = 0.0
        elif cls == 1.0:
            state[14] = 0.0
            state[10] = 0.0
        else:
            resumed = state[9] == 0.0 and state[14] != 0.0
            if state[9] != 2.0 and not resumed:
                state[10] = params[5]
                state[11] = 0.0
                state[16] += 1.0
            if state[10] > 0.0:
                state[11] = max(state[11], c)
                state[10] -= 1.0
                if state[10] <= 0.0:
                    if state[12] != state[12]:
                        state[12] = state[11]
                    else:
                        state[12] += a_rate * (state[11] - state[12])
            else:
                state[1] += 1.0
                event = 0.0
                if resumed:
                    state[8] += 1.0
                    event = 1.0
                state[6] += a_rate * (event - state[6])
                spike = state[0] == state[0] and c > state[0] + spike_d
                if spike:
                    state[7] += 1.0
                    state[5] += a_rate * (1.0 - state[5])
                else:
                    state[5] += a_rate * (0.0 - state[5])
                    if state[0] != state[0]:
                        state[0] = c
                    else:
                        state[0] += a_lvl * (c - state[0])
                    if state[3] < params[6]:
                        state[2] += c
                        state[3] += 1.0
                        if state[3] >= params[6]:
                            state[4] = state[2] / state[3]
            state[14] = 0.0
        state[9] = cls


@_kernel(types.void(F8, f8, f8, F8))
def level_track(values: np.ndarray, alpha: float, baseline_n: float,
                state: np.ndarray) -> None:
    """EWMA level of a signal with a baseline (mean of its first ``baseline_n`` finite
    samples). state = [level, baseline sum, baseline n, baseline]."""
    for i in range(values.shape[0]):
        v = values[i]
        if not math.isfinite(v):
            continue
        if state[0] != state[0]:
            state[0] = v
        else:
            state[0] += alpha * (v - state[0])
        if state[2] < baseline_n:
            state[1] += v
            state[2] += 1.0
            if state[2] >= baseline_n:
                state[3] = state[1] / state[2]


@_kernel(types.void(F8, F8, F8))
def theil_sen(x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    """Theil-Sen line through the finite points: out = [slope, intercept] (NaN if fewer
    than two distinct x)."""
    n = x.shape[0]
    slopes = np.empty(n * (n - 1) // 2 if n > 1 else 0)
    k = 0
    for i in range(n):
        if not (math.isfinite(x[i]) and math.isfinite(y[i])):
            continue
        for j in range(i + 1, n):
            if math.isfinite(x[j]) and math.isfinite(y[j]) and x[j] != x[i]:
                slopes[k] = (y[j] - y[i]) / (x[j] - x[i])
                k += 1
    if k == 0:
        out[0] = math.nan
        out[1] = math.nan
        return
    slope = np.median(slopes[:k])
    resid = np.empty(n)
    m = 0
    for i in range(n):
        if math.isfinite(x[i]) and math.isfinite(y[i]):
            resid[m] = y[i] - slope * x[i]
            m += 1
    out[0] = slope
    out[1] = np.median(resid[:m])


# --------------------------------------------------------------- SPC

RULE_WE1, RULE_WE2, RULE_WE3, RULE_WE4, RULE_EWMA = 1, 2, 4, 8, 16
# params: 0 center, 1 sigma, 2 lambda, 3 L, 4 rule mask
# state:  0 ewma, 1 points, 2 ewma alarm active, 3..10 last 8 z (oldest first),
#         11 points held in the z history, 12..14 cool-down of rules 2, 3, 4,
#         15 one minus (1 - lambda)^(2 points), the EWMA variance factor
N_SPC_PARAMS, N_SPC_STATE = 5, 16


@_kernel(i8(F8, F8, F8, I8, I8, F8))
def spc_scan(values: np.ndarray, params: np.ndarray, state: np.ndarray,
             out_index: np.ndarray, out_rule: np.ndarray, out_stat: np.ndarray) -> int:
    """Western Electric rules 1-4 and an EWMA chart over the finite values.

    Writes (index, rule bit, statistic) per violation into the outputs (room for
    5 x len(values)); returns how many. Rule 1 fires on every point beyond 3 sigma;
    rules 2-4 need a fresh window after firing; the EWMA fires on crossing its
    (time-varying) limit and re-arms back inside.
    """
    center, sigma, lam, big_l = params[0], params[1], params[2], params[3]
    mask = int(params[4])
    k = 0
    for i in range(values.shape[0]):
        v = values[i]
        if not math.isfinite(v):
            continue
        z = (v - center) / sigma
        state[1] += 1.0
        for j in range(3, 10):
            state[j] = state[j + 1]
        state[10] = z
        if state[11] < 8.0:
            state[11] += 1.0
        for j in range(12, 15):
            if state[j] > 0.0:
                state[j] -= 1.0
        held = int(state[11])
        if mask & RULE_WE1 and abs(z) > 3.0:
            out_index[k], out_rule[k], out_stat[k] = i, RULE_WE1, z
            k += 1
        if mask & RULE_WE2 and held >= 3 and state[12] <= 0.0:
            up = 0
            dn = 0
            for j in range(8, 11):
                if state[j] > 2.0:
                    up += 1
                elif state[j] < -2.0:
                    dn += 1
            if (up >= 2 and z > 2.0) or (dn >= 2 and z < -2.0):
                out_index[k], out_rule[k], out_stat[k] = i, RULE_WE2, z
                k += 1
                state[12] = 3.0
        if mask & RULE_WE3 and held >= 5 and state[13] <= 0.0:
            up = 0
            dn = 0
            for j in range(6, 11):
                if state[j] > 1.0:
                    up += 1
                elif state[j] < -1.0:
                    dn += 1
            if (up >= 4 and z > 1.0) or (dn >= 4 and z < -1.0):
                out_index[k], out_rule[k], out_stat[k] = i, RULE_WE3, z
                k += 1
                state[13] = 5.0
        if mask & RULE_WE4 and held >= 8 and state[14] <= 0.0:
            up = 0
            dn = 0
            for j in range(3, 11):
                if state[j] > 0.0:
                    up += 1
                elif state[j] < 0.0:
                    dn += 1
            if up == 8 or dn == 8:
                out_index[k], out_rule[k], out_stat[k] = i, RULE_WE4, z
                k += 1
                state[14] = 8.0
        if state[1] == 1.0:
            state[0] = center
        state[0] = lam * v + (1.0 - lam) * state[0]
        if mask & RULE_EWMA:
            # state[15] = 1 - (1 - lam)^(2t), carried to avoid a pow per point
            state[15] = 1.0 - (1.0 - state[15]) * (1.0 - lam) * (1.0 - lam)
            width = big_l * sigma * math.sqrt(lam / (2.0 - lam) * state[15])
            outside = abs(state[0] - center) > width
            if outside and state[2] == 0.0:
                out_index[k], out_rule[k], out_stat[k] = i, RULE_EWMA, state[0]
                k += 1
            state[2] = 1.0 if outside else 0.0
    return k
