"""The interlock scan: limits, debounce, hysteresis, rate, Bad quality, in one pass."""

from __future__ import annotations

import math

import numpy as np

from edge.processing.kernels._base import F8, I8, U1, i8, kernel

# params:  0 high, 1 low, 2 debounce samples, 3 debounce ns, 4 clear hysteresis,
#          5 rate limit (units/s), 6 trip on bad quality (0/1)
# fstate:  0 last value, 1 previous good value (rate), 2 trip value, 3 trip limit
# istate:  0 tripped, 1 violation streak, 2 streak start ts, 3 last ts, 4 previous good ts,
#          5 has previous good, 6 trip condition, 7 clear now, 8 last quality, 9 seen
COND_NONE, COND_HIGH, COND_LOW, COND_RATE, COND_BAD, COND_STALE = 0, 1, 2, 3, 4, 5
N_IL_PARAMS, N_IL_F, N_IL_I = 7, 4, 10


@kernel(i8(F8, I8, U1, F8, F8, I8))
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
