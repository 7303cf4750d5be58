"""OPC-UA history store: which store, measured (docs/history.md).

Three measurements, each with the load average beside it:

1. **append**: the history feed at ``--rate`` samples/s (5,000 tags, batches every
   10 ms as the sources emit them) for ``--seconds``: the worker thread's CPU per second
   of data, bytes per stored point, and the event loop's lag p99 (a 1 ms ticker) with
   the feed and without it.
2. **read, chunked store**: one tag over an hour. An hour at 200k/s is 720M points
   (GBs), so the hour is written for ``--hour-tags`` tags at the per-tag rate of the
   200k/s case (40 Hz); a one-tag read touches only that tag's chunks, so the other
   tags' volume does not enter its cost (index on (tag, t_last)).
3. **read, journal rows**: the alternative, the journal's own rows kept past delivery.
   Its rows are whole batches of every tag: a one-tag read decodes every row of the
   hour. Measured as the decode-and-filter rate over ``--seconds`` of 200k/s rows,
   extrapolated to the hour's 720M points.

    .venv/bin/python bench/history.py --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.app import SWITCH_INTERVAL_S
from edge.history.feed import HistoryFeed
from edge.history.store import HistoryLimits, HistoryStore, encode_chunk
from edge.journal import Journal
from edge.model import SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics

TAGS = 5000


def _load() -> float:
    return round(os.getloadavg()[0], 1)


def _registry(n: int) -> TagRegistry:
    reg = TagRegistry()
    for i in range(n):
        reg.add(f"dev{i // 100}", f"t{i}")
    return reg


async def _lag_p99(seconds: float, stop: asyncio.Event) -> list[float]:
    lags: list[float] = []
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append((time.perf_counter() - t0 - 0.001) * 1e3)
    return lags


async def append(rate: int, seconds: float, feed_on: bool, tmp: Path) -> dict[str, float]:
    reg = _registry(TAGS)
    metrics = Metrics()
    feed = HistoryFeed(tmp / f"h{int(feed_on)}.db", HistoryLimits(max_bytes=4 << 30), reg,
                       metrics, record_types=())
    task = asyncio.create_task(feed.run()) if feed_on else None
    if feed_on:
        await feed.ready.wait()
    stop = asyncio.Event()
    lag_task = asyncio.create_task(_lag_p99(seconds, stop))
    rng = np.random.default_rng(1)
    per = rate // 100
    load0 = _load()
    cpu0 = time.process_time()
    t_start = time.perf_counter()
    sent = 0
    tick = 0
    while time.perf_counter() - t_start < seconds:
        tick += 1
        now = time.time_ns()
        batch = SampleBatch(rng.integers(0, TAGS, per).astype(np.int32),
                            np.full(per, now, np.int64) + np.arange(per), rng.random(per) * 100,
                            np.zeros(per, np.uint8))
        if feed_on:
            feed.publish(batch, ())
        sent += per
        wait = t_start + tick * 0.01 - time.perf_counter()
        await asyncio.sleep(max(0.0, wait))
    if feed_on:
        await feed.flush()
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - t_start
    stop.set()
    lags = await lag_task
    out: dict[str, float] = {
        "feed": float(feed_on), "samples_per_s": round(sent / wall),
        "process_cpu_per_s": round(cpu / wall, 3),
        "loop_lag_p99_ms": round(float(np.percentile(lags, 99)), 2),
        "loop_lag_max_ms": round(max(lags), 2), "load": max(load0, _load()),
    }
    if task is not None:
        hist = metrics.snapshot(["edge_history_flush_seconds"])
        flush_s = hist.get("edge_history_flush_seconds_sum", 0.0)
        out["writer_s_per_s"] = round(flush_s / wall, 3)
        store = feed._store
        assert store is not None
        stored = await asyncio.get_running_loop().run_in_executor(
            feed._executor, store.counts)
        out["bytes_per_point"] = round(store.bytes / max(1, stored[0]), 2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return out


def read_chunked(tags: int, tmp: Path) -> dict[str, float]:
    """An hour of ``tags`` tags at 40 Hz, flushed every second; read one tag's hour."""
    store = HistoryStore(tmp / "hour.db", HistoryLimits(max_bytes=8 << 30), now_ns=0)
    ids = store.tag_ids([f"t{i}" for i in range(tags)])
    rng = np.random.default_rng(2)
    t0 = 1_700_000_000 * 10**9
    per_tag = 40
    load0 = _load()
    for sec in range(3600):
        n = per_tag * tags
        tid = np.repeat(np.arange(tags, dtype=np.int32), per_tag)
        ts = t0 + sec * 10**9 + np.tile(np.arange(per_tag, dtype=np.int64) * 25_000_000, tags)
        store.write(SampleBatch(tid, ts, rng.random(n), np.zeros(n, np.uint8)), ids, (),
                    now_ns=t0 + (sec + 1) * 10**9)
    times = []
    for k in range(5):
        c0 = time.perf_counter()
        r = store.read_raw(f"t{k}", t0, t0 + 3600 * 10**9, limit=10**9, now_ns=t0 + 3600 * 10**9)
        times.append(time.perf_counter() - c0)
    points = r.ts_ns.shape[0]
    c0 = time.perf_counter()
    page = store.read_raw("t0", t0, t0 + 3600 * 10**9, limit=1000, now_ns=t0 + 3600 * 10**9)
    first_page = time.perf_counter() - c0
    c0 = time.perf_counter()
    pages, after, walked = 0, None, 0
    while True:
        p = store.read_raw("t1", t0, t0 + 3600 * 10**9, limit=1000, after=after,
                           now_ns=t0 + 3600 * 10**9)
        pages += 1
        walked += p.ts_ns.shape[0]
        if p.more is None:
            break
        after = p.more
    walk_s = time.perf_counter() - c0
    out = {"tags": tags, "points_read": points, "read_s_median": round(float(np.median(times)), 3),
           "first_page_1000_s": round(first_page, 4),
           "walk_1000_per_page_s": round(walk_s, 3), "walk_pages": pages, "walk_points": walked,
           "gaps": len(r.gaps) + len(page.gaps),
           "db_mb": round(store.bytes / 2**20, 1), "load": max(load0, _load())}
    store.close()
    return out


def read_journal(rate: int, seconds: float, tmp: Path) -> dict[str, float]:
    """Journal rows of ``seconds`` at ``rate`` (100 batches/s), scanned for one tag."""
    j = Journal(tmp / "j.db", sinks=["mes"])
    rng = np.random.default_rng(3)
    per = rate // 100
    now = time.time_ns()
    for i in range(int(seconds * 100)):
        group = [SampleBatch(rng.integers(0, TAGS, per).astype(np.int32),
                             np.full(per, now + i * 10_000_000, np.int64), rng.random(per))]
        j.append(group)
    load0 = _load()
    c0 = time.perf_counter()
    total = 0
    found = 0
    after = 0
    while True:
        entries = j.entries(after, 256)
        if not entries:
            break
        for e in entries:
            b = e.samples()
            total += len(b)
            found += int(np.count_nonzero(b.tag_id == 7))
        after = entries[-1].seq
    took = time.perf_counter() - c0
    j.close()
    hour_points = rate * 3600
    return {"points_scanned": total, "points_found": found, "scan_s": round(took, 3),
            "scan_points_per_s": round(total / took),
            "hour_read_s_extrapolated": round(hour_points / (total / took), 1),
            "hour_bytes_gb": round(hour_points * 17 / 1e9, 1), "load": max(load0, _load())}


def chunk_cost(rate: int) -> dict[str, float]:
    """CPU of encoding one flush (1 s at ``rate``) into per-tag chunks, single thread."""
    rng = np.random.default_rng(4)
    store_ids = np.arange(TAGS, dtype=np.int64)
    batch = SampleBatch(rng.integers(0, TAGS, rate).astype(np.int32),
                        time.time_ns() + np.arange(rate, dtype=np.int64), rng.random(rate))
    c0 = time.process_time()
    rows = [r for part in HistoryStore._chunk_rows(batch, store_ids) for r in part]
    took = time.process_time() - c0
    raw = encode_chunk(np.arange(40, dtype=np.int64), np.zeros(40), np.zeros(40, np.uint8))
    return {"rows": len(rows), "encode_cpu_s": round(took, 3), "sample_chunk_bytes": len(raw)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--hour-tags", type=int, default=20)
    ap.add_argument("--only", default="append,chunked,journal,encode")
    args = ap.parse_args()
    only = set(args.only.split(","))
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as the daemon runs (edge.app)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "append" in only:
            for feed_on in (False, True):
                print(json.dumps({"append": asyncio.run(
                    append(args.rate, args.seconds, feed_on, tmp))}), flush=True)
        if "encode" in only:
            print(json.dumps({"encode": chunk_cost(args.rate)}), flush=True)
        if "chunked" in only:
            print(json.dumps({"read_chunked": read_chunked(args.hour_tags, tmp)}), flush=True)
        if "journal" in only:
            print(json.dumps({"read_journal": read_journal(args.rate, min(args.seconds, 10), tmp)}),
                  flush=True)


if __name__ == "__main__":
    main()
