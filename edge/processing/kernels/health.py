"""Motor health kernels: the current scan, the level tracker and Theil-Sen."""

from __future__ import annotations

import math

import numpy as np

from edge.processing.kernels._base import F8, f8, kernel, types

# params: 0 running above (A), 1 stopped below (A), 2 spike delta (A), 3 level alpha,
#         4 rate alpha, 5 inrush samples, 6 baseline samples, 7 micro-stoppage max samples
# state:  0 level, 1 running samples, 2 baseline sum, 3 baseline n, 4 baseline,
#         5 spike rate, 6 micro-stoppage rate, 7 spikes, 8 micro-stoppages, 9 previous class,
#         10 inrush samples left, 11 inrush peak (current start), 12 inrush peak (mean),
#         13 stopped run length, 14 stopped straight from running, 15 mean square, 16 starts,
#         17 micro-stoppage samples (the stopped samples of the micro-stoppages counted in 8)
N_MOTOR_PARAMS, N_MOTOR_STATE = 8, 18


@kernel(types.void(F8, F8, F8))
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
                    state[17] += state[13]
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


@kernel(types.void(F8, f8, f8, F8))
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


@kernel(types.void(F8, F8, F8))
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
