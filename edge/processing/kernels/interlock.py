"""The interlock scan: limits, debounce, hysteresis, rate, Bad quality, in one pass.

Rate of change: with a rate window (``params[7]`` > 0, in ns) the rate is the slope of
the least-squares line through the good samples of the last window (timestamps
``>= t - window``), judged only once those samples are at least 3 and span at least
``RATE_MIN_COVER`` of the window (after a gap or at start the rate waits until the
window is covered again: ``stale_s`` and Bad quality are the rules for gaps). The good
samples are kept in a ring of ``RATE_RING`` in the state, so batching never matters;
at polling faster than ``RATE_RING`` samples per window the newest ``RATE_RING`` are
the window (judged as covered). Bad or NaN samples and samples not newer than the last
good one are not part of it; an inf in the window makes the slope NaN, which trips
(fail-safe, as the two-point rate of an inf is inf). Window 0 is the two-point rate of
before: the change from the last good sample, divided by the time between them.
"""

from __future__ import annotations

import math

import numpy as np

from edge.processing.kernels._base import F8, I8, U1, f8, i8, kernel, types

# params:  0 high, 1 low, 2 debounce samples, 3 debounce ns, 4 clear hysteresis,
#          5 rate limit (units/s), 6 trip on bad quality (0/1), 7 rate window ns (0: 2-pt)
# fstate:  0 last value, 1 previous good value (rate), 2 trip value, 3 trip limit,
#          4.. ring of good values
# istate:  0 tripped, 1 violation streak, 2 streak start ts, 3 last ts, 4 previous good ts,
#          5 has previous good, 6 trip condition, 7 clear now, 8 last quality, 9 seen,
#          10 ring count, 11 ring head (next slot), 12.. ring of good timestamps
COND_NONE, COND_HIGH, COND_LOW, COND_RATE, COND_BAD, COND_STALE = 0, 1, 2, 3, 4, 5
RATE_RING = 256
RATE_MIN_COVER = 0.8
N_IL_PARAMS, N_IL_F, N_IL_I = 8, 4 + RATE_RING, 12 + RATE_RING


@kernel(types.void(F8, I8, i8, f8))
def _ring_push(fstate: np.ndarray, istate: np.ndarray, t: int, v: float) -> None:
    """Add a good sample to the ring (the oldest goes when it is full)."""
    head = istate[11]
    istate[12 + head] = t
    fstate[4 + head] = v
    istate[11] = (head + 1) % RATE_RING
    if istate[10] < RATE_RING:
        istate[10] += 1


@kernel(f8(F8, I8, i8, f8))
def _window_slope(fstate: np.ndarray, istate: np.ndarray, t: int, window: float) -> float:
    """|slope| (units/s) of the least-squares line through the ring's samples at or after
    ``t - window``; 0.0 until they are >= 3 and cover the window (module docstring).

    One pass of sums in coordinates relative to the newest sample (x in [-window, 0] s,
    y - newest value), so the centred sums lose at most a factor ~4 to cancellation.
    """
    count = istate[10]
    j = istate[11]
    start = t - window
    n = 0
    sx = sy = sxx = sxy = 0.0
    oldest = t
    v0 = fstate[4 + (j - 1 if j > 0 else RATE_RING - 1)]
    for _ in range(count):
        j = j - 1 if j > 0 else RATE_RING - 1
        tj = istate[12 + j]
        if tj < start:
            break
        oldest = tj
        n += 1
        x = (tj - t) * 1e-9
        y = fstate[4 + j] - v0
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
    if n < 3 or (n < RATE_RING and (t - oldest) < RATE_MIN_COVER * window):
        return 0.0
    return abs((sxy - sx * sy / n) / (sxx - sx * sx / n))


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
    window = params[7]
    judge_rate = rate_limit < math.inf
    trip_at = -1
    for i in range(value.shape[0]):
        v, t, q = value[i], ts_ns[i], quality[i]
        bad = (q & 0x80) != 0 or math.isnan(v)
        cond = COND_NONE
        limit = math.nan
        shown = v
        rate_bad = False
        rate = 0.0
        if bad:
            if trip_bad:
                cond = COND_BAD
        else:
            newer = istate[5] == 0 or t > istate[4]
            if window > 0.0:
                if newer:
                    _ring_push(fstate, istate, t, v)
                    if judge_rate:
                        rate = _window_slope(fstate, istate, t, window)
                        rate_bad = not rate <= rate_limit  # an inf in the window: NaN
            elif istate[5] != 0 and t > istate[4]:
                rate = abs(v - fstate[1]) / ((t - istate[4]) / 1e9)
                rate_bad = rate > rate_limit
            if v > high:
                cond, limit = COND_HIGH, high
            elif v < low:
                cond, limit = COND_LOW, low
            elif rate_bad:
                cond, limit = COND_RATE, rate_limit
                shown = rate
            if newer:
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
