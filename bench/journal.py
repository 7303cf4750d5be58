"""Journal throughput: samples/s for append + ack, both durability modes.

Each configuration runs in its own subprocess (clean peak RSS). One "round" appends
``group`` batches of ``batch`` samples in one transaction (group commit) and then acks
them, like the runtime does. ``group=1`` is the worst case: one commit per batch.

    .venv/bin/python bench/journal.py            # full table (about 1 minute)
    .venv/bin/python bench/journal.py --quick
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.journal import Journal
from edge.model import SampleBatch


def one(batch: int, group: int, durability: str, seconds: float) -> dict[str, float]:
    rng = np.random.default_rng(0)
    batches = [
        SampleBatch(rng.integers(0, 5000, batch), np.arange(batch) + i, rng.random(batch))
        for i in range(group)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        j = Journal(Path(tmp) / "j.db", sinks=["mes", "influx"], durability=durability)  # type: ignore[arg-type]
        rates = []
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            n = 0
            while time.perf_counter() - t0 < 0.25:
                seqs = j.append(batches)
                j.ack("mes", seqs[-1])
                j.ack("influx", seqs[-1])
                n += batch * group
            rates.append(n / (time.perf_counter() - t0))
        j.close()
    return {
        "samples_per_s": statistics.median(rates),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def fsync_bound(durability: str) -> float:
    """Commits/s of an empty-ish transaction: the floor for group=1."""
    with tempfile.TemporaryDirectory() as tmp:
        j = Journal(Path(tmp) / "j.db", sinks=["s"], durability=durability)  # type: ignore[arg-type]
        b = SampleBatch([0], [0], [0.0])
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < 1.0:
            j.append([b])
            n += 1
        j.close()
        return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", nargs=4, metavar=("BATCH", "GROUP", "DURABILITY", "SECONDS"))
    args = ap.parse_args()
    if args.child:
        b, g, d, s = args.child
        print(json.dumps(one(int(b), int(g), d, float(s))))
        return
    seconds = 1.0 if args.quick else 3.0
    print(f"python {sys.version.split()[0]}, sqlite WAL, {seconds:.0f} s per row, "
          "median of 0.25 s windows")
    print(f"{'durability':<14}{'batch':>7}{'group':>7}{'samples/s':>14}{'peak RSS MB':>13}")
    for durability in ("process-crash", "power-loss"):
        for batch, group in ((1, 1), (1, 100), (100, 1), (100, 10), (1000, 1), (1000, 10)):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(batch), str(group), durability,
                 str(seconds)], capture_output=True, text=True, check=True,
            )
            r = json.loads(out.stdout)
            print(f"{durability:<14}{batch:>7}{group:>7}{r['samples_per_s']:>14,.0f}"
                  f"{r['peak_rss_mb']:>13.1f}")
        bound = fsync_bound(durability)
        print(f"{durability:<14} bound: {bound:,.0f} commits/s (1-row transactions)")


if __name__ == "__main__":
    main()
