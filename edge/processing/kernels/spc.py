"""SPC kernel: Western Electric rules and EWMA over a series, state carried."""

from __future__ import annotations

import math

import numpy as np

from edge.processing.kernels._base import F8, I8, f8, i8, kernel, types

RULE_WE1, RULE_WE2, RULE_WE3, RULE_WE4, RULE_EWMA = 1, 2, 4, 8, 16
# params: 0 center, 1 sigma, 2 lambda, 3 L, 4 rule mask
# state:  0 ewma, 1 points, 2 ewma alarm active, 3..10 last 8 z (oldest first),
#         11 points held in the z history, 12..14 cool-down of rules 2, 3, 4,
#         15 one minus (1 - lambda)^(2 points), the EWMA variance factor
N_SPC_PARAMS, N_SPC_STATE = 5, 16


_COUNTS = types.UniTuple(i8, 2)  # type: ignore[no-untyped-call]  # numba's types are untyped


@kernel(_COUNTS(F8, i8, i8, f8))
def _beyond(z: np.ndarray, first: int, stop: int, limit: float) -> tuple[int, int]:
    """How many of ``z[first:stop]`` lie above ``limit`` and below ``-limit``."""
    up = 0
    dn = 0
    for j in range(first, stop):
        if z[j] > limit:
            up += 1
        elif z[j] < -limit:
            dn += 1
    return up, dn


@kernel(i8(F8, F8, F8, I8, I8, F8))
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
            up, dn = _beyond(state, 8, 11, 2.0)
            if (up >= 2 and z > 2.0) or (dn >= 2 and z < -2.0):
                out_index[k], out_rule[k], out_stat[k] = i, RULE_WE2, z
                k += 1
                state[12] = 3.0
        if mask & RULE_WE3 and held >= 5 and state[13] <= 0.0:
            up, dn = _beyond(state, 6, 11, 1.0)
            if (up >= 4 and z > 1.0) or (dn >= 4 and z < -1.0):
                out_index[k], out_rule[k], out_stat[k] = i, RULE_WE3, z
                k += 1
                state[13] = 5.0
        if mask & RULE_WE4 and held >= 8 and state[14] <= 0.0:
            up, dn = _beyond(state, 3, 11, 0.0)
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
