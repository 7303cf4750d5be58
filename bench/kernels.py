"""Kernel benchmark: ns/sample of numba vs numpy vs pure Python, and the bandwidth bound.

Run: ``NUMBA_CACHE_DIR=/tmp/numba .venv/bin/python bench/kernels.py``. Thermal
compensation L20 = L (1 + a_s (T_s - 20)) / (1 + a_p (T_p - 20)) into a preallocated
output reads 3 and writes 1 float64 per sample (32 bytes); its floor is 32 bytes
divided by the copy bandwidth measured in the same run (np.copyto, 16 bytes/element).
Pure Python at 1e7 is timed on the first 1e6 samples (marked *).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from edge.processing import kernels as K

A_P, A_S = 23.6e-6, 8e-6


def best_ns(fn: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, time.perf_counter_ns() - t0)
    return best


def copy_bandwidth_gbs(n: int = 20_000_000) -> float:
    src, dst = np.random.default_rng(0).random(n), np.empty(n)
    ns = best_ns(lambda: np.copyto(dst, src), 7)
    return 16 * n / ns


def python_l20(m: list[float], tp: list[float], ts: list[float], out: list[float]) -> None:
    for i in range(len(m)):
        out[i] = m[i] * (1 + A_S * (ts[i] - 20)) / (1 + A_P * (tp[i] - 20))


def compensation_row(n: int, rng: np.random.Generator, floor: float) -> None:
    m = 120 + rng.random(n)
    tp, ts = 18 + 8 * rng.random(n), 18 + 8 * rng.random(n)
    out = np.empty(n)
    repeat = 50 if n <= 100_000 else 7
    t_nb = best_ns(lambda: K.compensate_l20(m, tp, ts, A_P, A_S, out), repeat) / n

    def np_l20() -> None:
        np.multiply(ts - 20, A_S, out=out)
        np.add(out, 1, out=out)
        np.multiply(out, m, out=out)
        np.divide(out, 1 + A_P * (tp - 20), out=out)

    t_np = best_ns(np_l20, repeat) / n
    k = min(n, 1_000_000)
    lm, ltp, lts, lo = m[:k].tolist(), tp[:k].tolist(), ts[:k].tolist(), [0.0] * k
    t_py = best_ns(lambda: python_l20(lm, ltp, lts, lo), 3 if k < 1_000_000 else 1) / k
    mark = "*" if k < n else " "
    print(f"{n:>10.0e} {t_nb:>9.3f} {t_np:>9.3f} {t_py:>9.1f}{mark} {t_nb / floor:>12.2f}")


def main() -> None:
    bw = copy_bandwidth_gbs()
    floor = 32 / bw
    print(f"copy bandwidth {bw:.2f} GB/s -> compensation floor {floor:.3f} ns/sample")
    print(f"{'n':>10} {'numba':>9} {'numpy':>9} {'python':>10} {'numba/floor':>12}")
    rng = np.random.default_rng(1)
    for n in (1_000, 100_000, 10_000_000):
        compensation_row(n, rng, floor)
    n = 1_000_000
    v = 180 + rng.standard_normal(n)
    tsn = np.arange(n, dtype=np.int64) * 100_000_000
    q = np.zeros(n, np.uint8)
    params = np.array([188.0, -math.inf, 1, 0, 2.0, math.inf, 1])
    fs, ist = np.full(K.N_IL_F, math.nan), np.zeros(K.N_IL_I, np.int64)
    t_il = best_ns(lambda: K.interlock_scan(v, tsn, q, params, fs, ist), 7) / n
    sp = np.array([180.0, 1.0, 0.2, 2.95, 31.0])
    oi, orr, os_ = np.empty(5 * n, np.int64), np.empty(5 * n, np.int64), np.empty(5 * n)
    t_spc = best_ns(lambda: K.spc_scan(v, sp, np.zeros(K.N_SPC_STATE), oi, orr, os_), 7) / n
    mp = np.array([0.6, 0.025, 0.3, 0.02, 0.01, 3, 100, 12])
    cur = np.where(np.arange(n) % 40 < 25, 1.2, 0.05) + 0.01 * rng.standard_normal(n)
    ms = np.zeros(K.N_MOTOR_STATE)
    t_mot = best_ns(lambda: K.motor_scan(cur, mp, ms), 7) / n
    print(f"interlock_scan {t_il:.2f} ns/sample, spc_scan (all rules) {t_spc:.2f} ns/sample, "
          f"motor_scan {t_mot:.2f} ns/sample (n=1e6, numba)")


if __name__ == "__main__":
    main()
