"""Time-to-failure error of the motor-health stage against hw_sim ground truth, by seed.

Runs the 14-motor line from new for ``--seconds`` (10 Hz currents, 10 s batches) per
seed and, for every motor that fails, takes the relative error |TTF_est - TTF_true| /
TTF_true at each 10 s batch end in its last quarter of life (TTF_true from the exact
failure tick), aggregated by the median per motor: issue 5's goal is <= 0.20.

    .venv/bin/python bench/health_ttf.py --seeds 1 2 3 4 5 6 7
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from edge.model import SampleBatch, TagRegistry
from edge.processing.health import Health, HealthConfig, MotorConfig
from hw_sim.motors import FAILED, MOTOR_IDS, MotorLine

GOAL = 0.2


def medians(seed: int, seconds: int) -> dict[str, float]:
    """Per failed motor: median relative TTF error over its last quarter of life."""
    tags = TagRegistry()
    for m in MOTOR_IDS:
        tags.add(m, "current_a", unit="A")
    cfg = HealthConfig(name="line", motors=[
        MotorConfig(name=m, current_tag=f"{m}/current_a") for m in MOTOR_IDS])
    stage = Health([cfg], tags)
    line = MotorLine(seed=seed)
    start = line.ts_ns()
    ids = np.array([tags.id_of(f"{m}/current_a") for m in MOTOR_IDS], np.int32)
    est: dict[str, list[tuple[int, float]]] = {m: [] for m in MOTOR_IDS}
    failed: dict[str, int] = {}
    for _ in range(seconds // 10):
        tr = line.run(100)
        stage.process(SampleBatch(np.tile(ids, 100), np.repeat(tr.ts_ns, len(ids)),
                                  tr.current_a.ravel()), [], 0)
        for i, m in enumerate(MOTOR_IDS):
            est[m].append((int(tr.ts_ns[-1]), stage.motors[m].ttf_s))
            hit = np.flatnonzero(tr.state[:, i] == FAILED)
            if m not in failed and hit.shape[0]:
                failed[m] = int(tr.ts_ns[hit[0]])
    out: dict[str, float] = {}
    for m, t_fail in failed.items():
        quarter = (t_fail - start) / 4e9
        rel = [abs(e - (t_fail - ts) / 1e9) / ((t_fail - ts) / 1e9) for ts, e in est[m]
               if 0 < (t_fail - ts) / 1e9 <= quarter]
        out[m] = float(np.median(rel)) if rel else math.nan
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[7])
    ap.add_argument("--seconds", type=int, default=10_000)
    args = ap.parse_args()
    every: list[float] = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        med = medians(seed, args.seconds)
        every += med.values()
        over = {m: round(v, 3) for m, v in med.items() if not v <= GOAL}
        print(f"seed {seed}: {len(med)} motors failed, median of medians "
              f"{np.median(list(med.values())):.3f}, worst {max(med.values()):.3f}, "
              f"over {GOAL}: {over or 'none'} ({time.perf_counter() - t0:.0f} s)")
    arr = np.array(every)
    print(f"all: {arr.shape[0]} motor lives, median {np.median(arr):.3f}, "
          f"p90 {np.percentile(arr, 90):.3f}, worst {arr.max():.3f}, "
          f"over {GOAL}: {int((arr > GOAL).sum())}")


if __name__ == "__main__":
    main()
