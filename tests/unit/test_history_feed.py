"""The history feed's front: a refusing disk never stops it (no sockets)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from edge.history.feed import HistoryFeed
from edge.history.store import HistoryLimits, HistoryStore
from edge.model import SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics


async def test_a_full_disk_loses_the_flush_counted_and_the_feed_keeps_running(
        tmp_path: Path) -> None:
    """A write the disk refuses (SQLITE_FULL) costs that flush only: counted with reason
    "disk", the feed keeps running, and the next flush is stored."""
    reg = TagRegistry()
    reg.add("d", "t")
    metrics = Metrics()
    feed = HistoryFeed(tmp_path / "h.db", HistoryLimits(), reg, metrics,
                       flush_interval_s=0.01, record_types=())
    task = asyncio.create_task(feed.run())
    await asyncio.wait_for(feed.ready.wait(), 30)
    real = HistoryStore.write
    calls = 0

    def full(self: HistoryStore, *args: object, **kw: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sqlite3.OperationalError("database or disk is full")
        real(self, *args, **kw)  # type: ignore[arg-type]

    HistoryStore.write = full  # type: ignore[method-assign]
    try:
        feed.publish(SampleBatch([0, 0], [1, 2], [1.0, 2.0]), ())
        await feed.flush()
        feed.publish(SampleBatch([0], [3], [3.0]), ())
        await feed.flush()
    finally:
        HistoryStore.write = real  # type: ignore[method-assign]
    assert not task.done()
    snap = metrics.snapshot(["edge_history_evicted_total", "edge_history_stored_total"])
    assert snap['edge_history_evicted_total{kind="samples",reason="disk"}'] == 2
    assert snap['edge_history_stored_total{kind="samples"}'] == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
