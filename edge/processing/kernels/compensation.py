"""Thermal compensation kernels: L20, its uncertainty, and the part-temperature lag model."""

from __future__ import annotations

import math

import numpy as np

from edge.processing.kernels._base import F8, I8, f8, kernel, types


@kernel(types.void(F8, F8, F8, f8, f8, F8))
def compensate_l20(meas: np.ndarray, t_part: np.ndarray, t_scale: np.ndarray,
                   a_part: float, a_scale: float, out: np.ndarray) -> None:
    """L20 = L (1 + a_scale (T_scale - 20)) / (1 + a_part (T_part - 20)), into ``out``."""
    for i in range(meas.shape[0]):
        out[i] = meas[i] * (1.0 + a_scale * (t_scale[i] - 20.0)) / (
            1.0 + a_part * (t_part[i] - 20.0))


@kernel(types.void(F8, F8, F8, f8, f8, F8, F8, f8, f8, f8, F8, F8))
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


@kernel(types.void(I8, F8, f8, F8, I8, F8))
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
