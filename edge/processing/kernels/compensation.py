"""Thermal compensation kernels: L20, its uncertainty, and the part-temperature lag model.

The two per-sample kernels are compiled with NumPy's error model (division by zero gives
inf or NaN, as IEEE says) instead of Python's, whose zero-divisor check is a branch in
the loop body that keeps LLVM from vectorising it; the rest is as ``_base.kernel``
(explicit signature, ``cache=True``, ``nogil=True``, no ``fastmath``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numba import njit

from edge.processing.kernels._base import F8, I8, f8, kernel, types

_F = TypeVar("_F", bound=Callable[..., Any])


def _ieee_kernel(signature: Any) -> Callable[[_F], _F]:
    """``_base.kernel`` with ``error_model="numpy"``: no branch per division."""
    def wrap(fn: _F) -> _F:
        return cast(_F, njit(signature, cache=True, nogil=True, error_model="numpy")(fn))
    return wrap


@_ieee_kernel(types.void(F8, F8, F8, f8, f8, F8))
def compensate_l20(meas: np.ndarray, t_part: np.ndarray, t_scale: np.ndarray,
                   a_part: float, a_scale: float, out: np.ndarray) -> None:
    """L20 = L (1 + a_scale (T_scale - 20)) / (1 + a_part (T_part - 20)), into ``out``."""
    for i in range(meas.shape[0]):
        out[i] = meas[i] * (1.0 + a_scale * (t_scale[i] - 20.0)) / (
            1.0 + a_part * (t_part[i] - 20.0))


@_ieee_kernel(types.void(F8, F8, F8, f8, f8, F8, F8, f8, f8, f8, F8, F8))
def compensate_with_uncertainty(
    meas: np.ndarray, t_part: np.ndarray, t_scale: np.ndarray, a_part: float,
    a_scale: float, u_t_part: np.ndarray, u_t_scale: np.ndarray, u_a_part: float,
    u_a_scale: float, u_probe: float, out_l20: np.ndarray, out_u: np.ndarray,
) -> None:
    """L20 and its combined standard uncertainty (GUM, first order, uncorrelated inputs).

    Sensitivities of L20 = L fs / fp (fs = 1 + a_s dTs, fp = 1 + a_p dTp): to T_part
    -L20 a_p / fp, to T_scale L a_s / fp, to a_part -L20 dTp / fp, to a_scale L dTs / fp,
    to L fs / fp. One reciprocal serves them all; squares are products (vectorisable).
    """
    u_ap2 = u_a_part * u_a_part
    u_as2 = u_a_scale * u_a_scale
    u_pr2 = u_probe * u_probe
    for i in range(meas.shape[0]):
        dp = t_part[i] - 20.0
        ds = t_scale[i] - 20.0
        fp = 1.0 + a_part * dp
        fs = 1.0 + a_scale * ds
        length = meas[i]
        l20 = length * fs / fp
        out_l20[i] = l20
        inv = 1.0 / fp
        c_tp = l20 * a_part * inv * u_t_part[i]
        c_ts = length * a_scale * inv * u_t_scale[i]
        c_ap = l20 * dp * inv
        c_as = length * ds * inv
        c_l = fs * inv
        out_u[i] = math.sqrt(c_tp * c_tp + c_ts * c_ts + c_ap * c_ap * u_ap2
                             + c_as * c_as * u_as2 + c_l * c_l * u_pr2)


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
