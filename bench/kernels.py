"""Kernel benchmark: ns/sample of numba vs numpy vs pure Python, the bandwidth bound, and
the SPC alarm scheme's run lengths.

Run: ``NUMBA_CACHE_DIR=/tmp/numba .venv/bin/python bench/kernels.py [--runs 5]``.

Compensation is timed on the kernel the stage calls, ``compensate_with_uncertainty``:
per sample it reads meas, T_part, T_scale, u(T_part), u(T_scale) and writes L20 and u,
7 float64 = 56 bytes. ``compensate_l20`` (3 reads, 1 write = 32 bytes) is shown too.
The bound is those bytes at the copy bandwidth measured at the same n in the same run
(``np.copyto``, counted as 16 bytes per element: the bytes the program asks to move, as
for the kernels). Copy, numba and numpy take turns within each round (interleaved), and
each figure is the median over the rounds; with ``--runs`` the whole measurement repeats
and the summary is the median over runs. Pure Python is timed on at most 2e5 samples
(marked *).

SPC: the run lengths of the default alarm scheme (``SpcConfig`` defaults) by simulation,
seeded: in-control ARL, and the ARL of a 1-sigma shift present from the start or
appearing after 100 in-control points; for contrast the four Western Electric rules as
alarms.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np

from edge.processing import kernels as K
from edge.processing.spc import SpcConfig, run_lengths

A_P, A_S, U_AP, U_AS, U_PR = 23.6e-6, 8e-6, 1.2e-6, 1e-6, 5e-4
SIZES = (1_000, 100_000, 10_000_000)
Fn = Callable[[], object]


def interleaved(fns: dict[str, Fn], rounds: int) -> dict[str, float]:
    """Median wall time (ns) of each function, the functions taking turns per round."""
    times: dict[str, list[int]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm: page faults, caches
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter_ns()
            fn()
            times[name].append(time.perf_counter_ns() - t0)
    return {k: float(statistics.median(v)) for k, v in times.items()}


def python_l20_u(m: list[float], tp: list[float], ts: list[float], utp: list[float],
                 uts: list[float], l20: list[float], u: list[float]) -> None:
    for i in range(len(m)):
        dp, ds = tp[i] - 20, ts[i] - 20
        fp, fs = 1 + A_P * dp, 1 + A_S * ds
        l20[i] = x = m[i] * fs / fp
        u[i] = math.sqrt((x * A_P / fp * utp[i]) ** 2 + (m[i] * A_S / fp * uts[i]) ** 2
                         + (x * dp / fp * U_AP) ** 2 + (m[i] * ds / fp * U_AS) ** 2
                         + (fs / fp * U_PR) ** 2)


def copy_bandwidth_gbs(n: int = 10_000_000, rounds: int = 15) -> float:
    """Median numpy copy bandwidth (bytes read + written per second / 1e9) at n doubles;
    the memory bound other benches (bench/pipeline.py) quote beside their figures."""
    src, dst = np.random.default_rng(0).random(n), np.empty(n)
    ns = interleaved({"copy": lambda: np.copyto(dst, src)}, rounds)["copy"]
    return 16 * n / ns


def compensation(n: int, rng: np.random.Generator) -> dict[str, float]:
    """ns/sample of each variant and of the copy bound, at n samples."""
    m = 120 + rng.random(n)
    tp, ts = 18 + 8 * rng.random(n), 18 + 8 * rng.random(n)
    utp, uts = np.where(rng.random(n) < 0.5, 0.1, 0.5), np.full(n, 0.1)
    l20, u, out = np.empty(n), np.empty(n), np.empty(n)
    src, dst = rng.random(n), np.empty(n)

    def np_l20_u() -> None:
        dp, ds = tp - 20, ts - 20
        inv = 1 / (1 + A_P * dp)
        fs = 1 + A_S * ds
        np.multiply(m * fs, inv, out=l20)
        np.sqrt((l20 * A_P * inv * utp) ** 2 + (m * A_S * inv * uts) ** 2
                + (l20 * dp * inv * U_AP) ** 2 + (m * ds * inv * U_AS) ** 2
                + (fs * inv * U_PR) ** 2, out=u)

    rounds = 200 if n <= 1_000 else 40 if n <= 100_000 else 15
    t = interleaved({
        "copy": lambda: np.copyto(dst, src),
        "numba": lambda: K.compensate_with_uncertainty(m, tp, ts, A_P, A_S, utp, uts, U_AP,
                                                       U_AS, U_PR, l20, u),
        "numba_l20": lambda: K.compensate_l20(m, tp, ts, A_P, A_S, out),
        "numpy": np_l20_u,
    }, rounds)
    k = min(n, 200_000)
    lm, ltp, lts, lutp, luts = (a[:k].tolist() for a in (m, tp, ts, utp, uts))
    lo, uo = [0.0] * k, [0.0] * k
    t0 = time.perf_counter_ns()
    python_l20_u(lm, ltp, lts, lutp, luts, lo, uo)
    res = {name: v / n for name, v in t.items()}
    res["python"] = (time.perf_counter_ns() - t0) / k
    res["bw_gbs"] = 16 / res["copy"]
    res["bound"] = 56 / res["bw_gbs"]
    res["bound_l20"] = 32 / res["bw_gbs"]
    return res


def other_kernels(rng: np.random.Generator) -> dict[str, float]:
    n = 1_000_000
    v = 180 + rng.standard_normal(n)
    tsn = np.arange(n, dtype=np.int64) * 100_000_000
    q = np.zeros(n, np.uint8)
    params = np.array([188.0, -math.inf, 1, 0, 2.0, math.inf, 1])
    fs, ist = np.full(K.N_IL_F, math.nan), np.zeros(K.N_IL_I, np.int64)
    sp = SpcConfig(name="b", tag="a/b").params(180.0, 1.0)
    oi, orr, os_ = np.empty(5 * n, np.int64), np.empty(5 * n, np.int64), np.empty(5 * n)
    mp = np.array([0.6, 0.025, 0.3, 0.02, 0.01, 3, 100, 12])
    cur = np.where(np.arange(n) % 40 < 25, 1.2, 0.05) + 0.01 * rng.standard_normal(n)
    t = interleaved({
        "interlock_scan": lambda: K.interlock_scan(v, tsn, q, params, fs, ist),
        "spc_scan (all rules)": lambda: K.spc_scan(v, sp, np.zeros(K.N_SPC_STATE), oi, orr,
                                                   os_),
        "motor_scan": lambda: K.motor_scan(cur, mp, np.zeros(K.N_MOTOR_STATE)),
    }, 7)
    return {k: v / n for k, v in t.items()}


def spc_run_lengths() -> None:
    cfg = SpcConfig(name="default", tag="a/b")
    we = SpcConfig(name="we", tag="a/b", rules=("we1", "we2", "we3", "we4"),
                   alarm_rules=("we1", "we2", "we3", "we4"), we1_alarm_sigma=3.0)
    t0 = time.perf_counter()
    arl0 = run_lengths(cfg, 0.0, 10_000, seed=101, cap=5000)
    arl1 = run_lengths(cfg, 1.0, 20_000, seed=102, cap=500)
    arl1_later = run_lengths(cfg, 1.0, 20_000, seed=103, onset=100, cap=500)
    arl0_we = run_lengths(we, 0.0, 5_000, seed=104, cap=5000)
    arl1_we = run_lengths(we, 1.0, 5_000, seed=105, onset=100, cap=500)

    def f(x: np.ndarray) -> str:
        return f"{x.mean():7.2f} (+-{x.std() / math.sqrt(x.shape[0]):.2f})"

    print(f"\nSPC run lengths (mean +- standard error), lambda {cfg.ewma_lambda}, "
          f"L {cfg.ewma_l}, rule 1 alarm beyond {cfg.we1_alarm_sigma} sigma:")
    print(f"  default alarm scheme: ARL0 {f(arl0)}  ARL1(1 sigma) from start {f(arl1)}  "
          f"after 100 in-control {f(arl1_later)}")
    print(f"  WE rules 1-4 as alarms: ARL0 {f(arl0_we)}  ARL1(1 sigma) after 100 "
          f"{f(arl1_we)}   [{time.perf_counter() - t0:.1f} s]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--skip-spc", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    per_run: dict[int, list[dict[str, float]]] = {n: [] for n in SIZES}
    for run in range(args.runs):
        print(f"run {run + 1}: n, copy GB/s, ns/sample numba (numba/bound), numba l20 "
              "(l20/bound), numpy, python")
        for n in SIZES:
            r = compensation(n, rng)
            per_run[n].append(r)
            print(f"  {n:>10.0e} {r['bw_gbs']:6.1f}  {r['numba']:7.3f} "
                  f"({r['numba'] / r['bound']:.2f})  {r['numba_l20']:7.3f} "
                  f"({r['numba_l20'] / r['bound_l20']:.2f})  {r['numpy']:7.3f}  "
                  f"{r['python']:7.1f}*", flush=True)
    print(f"\nCompensation with uncertainty (56 B/sample), medians over {args.runs} run(s):")
    print(f"{'n':>10} {'copy GB/s':>9} {'bound':>7} {'numba':>7} {'numpy':>7} {'python':>8} "
          f"{'numba/bound':>11} {'l20 only':>8} {'l20/bound':>9}")
    for n in SIZES:
        rs = per_run[n]

        def med(key: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[key] for r in rs)

        ratio = statistics.median(r["numba"] / r["bound"] for r in rs)
        ratio_l20 = statistics.median(r["numba_l20"] / r["bound_l20"] for r in rs)
        mark = "*" if n > 200_000 else " "
        print(f"{n:>10.0e} {med('bw_gbs'):>9.1f} {med('bound'):>7.3f} {med('numba'):>7.3f} "
              f"{med('numpy'):>7.3f} {med('python'):>7.1f}{mark} {ratio:>11.2f} "
              f"{med('numba_l20'):>8.3f} {ratio_l20:>9.2f}")
    others = other_kernels(rng)
    print("other kernels, n=1e6, ns/sample: "
          + ", ".join(f"{k} {v:.2f}" for k, v in others.items()))
    if not args.skip_spc:
        spc_run_lengths()


if __name__ == "__main__":
    main()
