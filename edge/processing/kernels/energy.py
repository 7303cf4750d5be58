"""Energy kernel: a motor's current integrated into watt-seconds, gaps counted, state carried."""

from __future__ import annotations

import math

import numpy as np

from edge.processing.kernels._base import F8, I8, kernel, types

# params: 0 watts per amp (voltage x power factor), 1 longest interval integrated (ns),
#         2 time constant of the mean power a gap is estimated at (s)
# state:  0 1 once a good sample was seen, 1 its current (A), 2 measured Ws and 3 measured
#         seconds, both fading with the time constant params[2] (their ratio is the mean
#         power: a normalised mean, so a short history is not biased towards its first
#         interval), 4 a Bad sample since the last good one
# last_ts: 0 the last good sample's time (ns; integer, as float64 would round it)
N_ENERGY_PARAMS, N_ENERGY_STATE = 3, 5


@kernel(types.void(I8, F8, F8, F8, I8, F8, F8, F8, F8))
def energy_scan(ts: np.ndarray, current: np.ndarray, params: np.ndarray, state: np.ndarray,
                last_ts: np.ndarray, out_ws: np.ndarray, out_est_ws: np.ndarray,
                out_gap_s: np.ndarray, out_bridged_s: np.ndarray) -> None:
    """Energy of the interval that ends at each sample, written at that sample's index.

    A NaN current is a Bad sample: it adds nothing and the interval across it is bridged
    (trapezoid between the good samples around it) and counted in ``out_bridged_s``. An
    interval longer than ``params[1]`` is a gap: its energy is estimated at the mean
    power measured before it (weighted by time, older intervals fading with the time
    constant ``params[2]``; the mean of its two ends before any was measured) and
    counted in ``out_gap_s``. A sample not later than the last good one (a duplicate, or one out
    of order) adds nothing and is not used.
    """
    wpa, max_gap, tau = params[0], params[1], params[2]
    for i in range(ts.shape[0]):
        out_ws[i] = 0.0
        out_est_ws[i] = 0.0
        out_gap_s[i] = 0.0
        out_bridged_s[i] = 0.0
        cur = current[i]
        if not math.isfinite(cur):
            state[4] = 1.0
            continue
        t = ts[i]
        if state[0] == 0.0:
            state[0] = 1.0
            last_ts[0] = t
            state[1] = cur
            state[4] = 0.0
            continue
        dt = t - last_ts[0]
        if dt <= 0:
            continue
        dt_s = dt * 1e-9
        if dt <= max_gap:
            e = (state[1] + cur) * 0.5 * wpa * dt_s
            out_ws[i] = e
            fade = math.exp(-dt_s / tau)
            state[2] = state[2] * fade + e
            state[3] = state[3] * fade + dt_s
            if state[4] > 0.0:
                out_bridged_s[i] = dt_s
        else:
            if state[3] > 0.0:
                out_est_ws[i] = state[2] / state[3] * dt_s
            else:
                out_est_ws[i] = (state[1] + cur) * 0.5 * wpa * dt_s
            out_gap_s[i] = dt_s
        last_ts[0] = t
        state[1] = cur
        state[4] = 0.0
