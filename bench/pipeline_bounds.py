"""Physical bounds for bench/pipeline.py, measured on the same machine in the same run.

* SQLite: the journal's append + two acks, batches of 1000 samples (bench/journal.py).
* The time-series peer: gzip'd line protocol bodies of 50,000 points, encoded before the
  clock starts, POSTed back to back by one httpx client: what the peer itself accepts.
* Memory bandwidth: numpy copy of 160 MB (bench/kernels.py).
"""

from __future__ import annotations

import gzip
import importlib.util
import time
from pathlib import Path
from types import ModuleType

import httpx

BENCH = Path(__file__).resolve().parent


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sqlite_append_rate(seconds: float = 2.0) -> float:
    """Samples/s appended and acked (two sinks), process-crash durability."""
    return float(_load("journal").one(1000, 1, "process-crash", seconds)["samples_per_s"])


def memory_bandwidth_gbs() -> float:
    return float(_load("kernels").copy_bandwidth_gbs())


def tsdb_write_rate(write_url: str, params: dict[str, str], seconds: float = 3.0,
                    points: int = 50_000) -> float:
    """Points/s the peer accepts from pre-encoded, gzip'd line-protocol bodies."""
    bodies = []
    base = time.time_ns() - 3_600_000_000_000
    for b in range(8):
        lines = [
            f"bound{(b * points + i) % 1000:04d},gateway=bound current_a={1.0 + i * 1e-6!r} "
            f"{base + (b * points + i) * 1_000_000}\n"
            for i in range(points)
        ]
        bodies.append(gzip.compress("".join(lines).encode(), 1))
    headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
    n = 0
    with httpx.Client(timeout=60) as client:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            r = client.post(write_url, params=params, content=bodies[n % len(bodies)],
                            headers=headers)
            r.raise_for_status()
            n += 1
        took = time.perf_counter() - t0
    return n * points / took
