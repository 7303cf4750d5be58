"""Commit timing of the journal writer: an urgent item does not wait for others."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from edge.journal import Journal, JournalWriter
from edge.model import Quarantine


async def test_urgent_item_commits_without_the_grouping_wait(tmp_path: Path) -> None:
    """A producer that waits for the commit (MQTT acks) is not held by the grouping wait."""
    w = JournalWriter(Journal(tmp_path / "j.db", sinks=["s"]), commit_interval_s=30.0)
    task = asyncio.create_task(w.run())
    try:
        t0 = time.monotonic()
        seq = await asyncio.wait_for(w.submit([Quarantine(1, "x", "r")], urgent=True), 10.0)
        assert seq == 1 and time.monotonic() - t0 < 10.0
        # An urgent item that comes while a plain one waits ends that wait too, and both
        # share the transaction.
        plain = w.submit([Quarantine(2, "x", "r")])
        await asyncio.sleep(0.05)
        assert not plain.done()  # still grouping
        urgent = w.submit([Quarantine(3, "x", "r")], urgent=True)
        assert await asyncio.wait_for(asyncio.gather(plain, urgent), 10.0) == [2, 3]
        assert w.commits("records") == 2
    finally:
        await w.close()
        task.cancel()


async def test_plain_items_still_share_one_commit(tmp_path: Path) -> None:
    """Items with no one waiting are grouped within the commit interval."""
    w = JournalWriter(Journal(tmp_path / "j.db", sinks=["s"]), commit_interval_s=0.2)
    task = asyncio.create_task(w.run())
    try:
        futs = [w.submit([Quarantine(i, "x", "r")]) for i in range(5)]
        assert await asyncio.wait_for(asyncio.gather(*futs), 10.0) == [1, 2, 3, 4, 5]
        assert w.commits("records") == 1
    finally:
        await w.close()
        task.cancel()
