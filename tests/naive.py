"""Obviously-correct reference versions of edge/processing/kernels.py (plain Python).

Each function follows the definition in the kernel's docstring line by line, with no
attention to speed, and returns new values instead of updating arrays in place.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def compensate_l20(meas: Sequence[float], tp: Sequence[float], ts: Sequence[float],
                   a_part: float, a_scale: float) -> list[float]:
    return [m * (1 + a_scale * (s - 20)) / (1 + a_part * (p - 20))
            for m, p, s in zip(meas, tp, ts, strict=True)]


def compensate_uncertainty(meas: Sequence[float], tp: Sequence[float], ts: Sequence[float],
                           a_part: float, a_scale: float, u_tp: Sequence[float],
                           u_ts: Sequence[float], u_ap: float, u_as: float,
                           u_probe: float) -> list[float]:
    """Combined standard uncertainty by central finite differences of the L20 model."""
    def l20(m: float, p: float, s: float, ap: float, as_: float) -> float:
        return m * (1 + as_ * (s - 20)) / (1 + ap * (p - 20))

    out = []
    for m, p, s, up, us in zip(meas, tp, ts, u_tp, u_ts, strict=True):
        h = 1e-4
        c_tp = (l20(m, p + h, s, a_part, a_scale) - l20(m, p - h, s, a_part, a_scale)) / (2 * h)
        c_ts = (l20(m, p, s + h, a_part, a_scale) - l20(m, p, s - h, a_part, a_scale)) / (2 * h)
        ha = 1e-9
        c_ap = (l20(m, p, s, a_part + ha, a_scale) - l20(m, p, s, a_part - ha, a_scale)) / (2 * ha)
        c_as = (l20(m, p, s, a_part, a_scale + ha) - l20(m, p, s, a_part, a_scale - ha)) / (2 * ha)
        c_l = l20(1.0, p, s, a_part, a_scale)
        out.append(math.sqrt((c_tp * up) ** 2 + (c_ts * us) ** 2 + (c_ap * u_ap) ** 2
                             + (c_as * u_as) ** 2 + (c_l * u_probe) ** 2))
    return out


def lag_estimate(ts_ns: Sequence[int], air: Sequence[float], tau_s: float) -> list[float]:
    """Integrate dx/dt = (a(t) - x)/tau with a(t) linear between readings, by fine midpoint
    steps (the kernel uses the closed form)."""
    out: list[float] = []
    x = math.nan
    last_t: int | None = None
    last_a = math.nan
    for t, a in zip(ts_ns, air, strict=True):
        if math.isfinite(a):
            if last_t is None:
                x, last_a, last_t = a, a, t
            elif t > last_t:
                dt = (t - last_t) / 1e9
                steps = 20000
                h = dt / steps
                for k in range(steps):  # midpoint rule
                    a_k = last_a + (a - last_a) * k / steps
                    a_mid = last_a + (a - last_a) * (k + 0.5) / steps
                    x_mid = x + 0.5 * h * (a_k - x) / tau_s
                    x += h * (a_mid - x_mid) / tau_s
                last_a, last_t = a, t
        out.append(x)
    return out


def window_slope(history: Sequence[tuple[int, float]], t: int, window_ns: float,
                 ring: int = 256, min_cover: float = 0.8) -> float:
    """|least-squares slope| (units/s) of the good samples at or after t - window among
    the last ``ring``; 0.0 unless >= 3 and they cover ``min_cover`` of the window (or the
    ring is all inside it)."""
    pts = [(ti, vi) for ti, vi in history[-ring:] if ti >= t - window_ns]
    if len(pts) < 3 or (len(pts) < ring and t - pts[0][0] < min_cover * window_ns):
        return 0.0
    xs = [(ti - t) / 1e9 for ti, _ in pts]
    ys = [vi for _, vi in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)  # inf -> a non-finite slope
    sxx = sum((x - mx) ** 2 for x in xs)
    return abs(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx)


def interlock_scan(values: Sequence[float], ts: Sequence[int], quality: Sequence[int],
                   high: float, low: float, debounce_n: int, debounce_ns: int,
                   hyst: float, rate_limit: float, trip_bad: bool,
                   window_ns: float = 0.0, ring: int = 256) -> tuple[int, int, bool]:
    """(first trip index or -1, its condition code, clear after the last sample), fresh
    state. Codes: 1 high, 2 low, 3 rate, 4 bad quality. Rate: two-point with window 0,
    else ``window_slope`` over the good samples kept so far."""
    streak_start: int | None = None
    streak = 0
    prev: tuple[int, float] | None = None
    history: list[tuple[int, float]] = []
    clear = False
    trip, trip_cond = -1, 0
    for i, (v, t, q) in enumerate(zip(values, ts, quality, strict=True)):
        bad = q >= 0x80 or math.isnan(v)
        newer = not bad and (prev is None or t > prev[0])
        rate_bad = False
        if window_ns > 0:
            if newer:
                history.append((t, v))
                if rate_limit < math.inf:
                    rate_bad = not window_slope(history, t, window_ns, ring) <= rate_limit
        elif not bad and prev is not None and t > prev[0]:
            rate_bad = abs(v - prev[1]) / ((t - prev[0]) / 1e9) > rate_limit
        cond = 0
        if bad:
            cond = 4 if trip_bad else 0
        elif v > high:
            cond = 1
        elif v < low:
            cond = 2
        elif rate_bad:
            cond = 3
        if newer:
            prev = (t, v)
        clear = not bad and low + hyst <= v <= high - hyst and not rate_bad
        if cond:
            if streak == 0:
                streak_start = t
            streak += 1
            assert streak_start is not None
            if trip < 0 and streak >= debounce_n and t - streak_start >= debounce_ns:
                trip, trip_cond = i, cond
        else:
            streak = 0
    return trip, trip_cond, clear


def theil_sen(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    pts = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    slopes = [(pts[j][1] - pts[i][1]) / (pts[j][0] - pts[i][0])
              for i in range(len(pts)) for j in range(i + 1, len(pts))
              if pts[j][0] != pts[i][0]]
    if not slopes:
        return math.nan, math.nan
    s = statistics.median(slopes)
    return s, statistics.median([b - s * a for a, b in pts])


def level_track(values: Sequence[float], alpha: float, baseline_n: int) -> tuple[float, float]:
    """(EWMA level, baseline mean of the first baseline_n finite values or NaN)."""
    fin = [v for v in values if math.isfinite(v)]
    level = math.nan
    for v in fin:
        level = v if math.isnan(level) else level + alpha * (v - level)
    base = statistics.fmean(fin[:baseline_n]) if len(fin) >= baseline_n else math.nan
    return level, base


def spc_scan(values: Sequence[float], center: float, sigma: float, lam: float, big_l: float,
             mask: int) -> list[tuple[int, int]]:
    """(index, rule bit) of every violation, following the rule text directly."""
    out: list[tuple[int, int]] = []
    zs: list[float] = []
    cool = {2: 0, 4: 0, 8: 0}
    ewma = center
    active = False
    t = 0
    for i, v in enumerate(values):
        if not math.isfinite(v):
            continue
        t += 1
        z = (v - center) / sigma
        zs.append(z)
        cool = {r: max(0, left - 1) for r, left in cool.items()}
        if mask & 1 and abs(z) > 3:
            out.append((i, 1))
        last3, last5, last8 = zs[-3:], zs[-5:], zs[-8:]
        if mask & 2 and len(zs) >= 3 and cool[2] == 0 and (
            (z > 2 and sum(1 for w in last3 if w > 2) >= 2)
            or (z < -2 and sum(1 for w in last3 if w < -2) >= 2)
        ):
            out.append((i, 2))
            cool[2] = 3
        if mask & 4 and len(zs) >= 5 and cool[4] == 0 and (
            (z > 1 and sum(1 for w in last5 if w > 1) >= 4)
            or (z < -1 and sum(1 for w in last5 if w < -1) >= 4)
        ):
            out.append((i, 4))
            cool[4] = 5
        if mask & 8 and len(zs) >= 8 and cool[8] == 0 and (
            all(w > 0 for w in last8) or all(w < 0 for w in last8)
        ):
            out.append((i, 8))
            cool[8] = 8
        ewma = lam * v + (1 - lam) * ewma
        if mask & 16:
            width = big_l * sigma * math.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * t)))
            outside = abs(ewma - center) > width
            if outside and not active:
                out.append((i, 16))
            active = outside
    return out


def energy_scan(ts: Sequence[int], current: Sequence[float], watts_per_amp: float,
                max_gap_ns: float, tau_s: float,
                ) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per sample: measured Ws, estimated Ws, gap s, bridged s of the interval it ends."""
    ws, est, gap, bridged = ([0.0] * len(ts) for _ in range(4))
    last: tuple[int, float] | None = None
    faded_ws = faded_s = 0.0
    bad_since = False
    for i, (t, c) in enumerate(zip(ts, current, strict=True)):
        if not math.isfinite(c):
            bad_since = True
            continue
        if last is None:
            last, bad_since = (t, c), False
            continue
        if t <= last[0]:
            continue
        dt_s = (t - last[0]) / 1e9
        if t - last[0] <= max_gap_ns:
            ws[i] = (last[1] + c) / 2 * watts_per_amp * dt_s
            fade = math.exp(-dt_s / tau_s)  # every measured Ws and s weighs e^(-age/tau)
            faded_ws, faded_s = faded_ws * fade + ws[i], faded_s * fade + dt_s
            bridged[i] = dt_s if bad_since else 0.0
        else:
            mean = faded_ws / faded_s if faded_s > 0 else (last[1] + c) / 2 * watts_per_amp
            est[i] = mean * dt_s
            gap[i] = dt_s
        last, bad_since = (t, c), False
    return ws, est, gap, bridged
