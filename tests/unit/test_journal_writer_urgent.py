"""Commit timing of the journal writer: an urgent item does not wait for others."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from edge.journal import Journal, JournalWriter
from edge.model import Quarantine, SampleBatch
from edge.runtime.metrics import Metrics


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


async def test_samples_and_records_of_one_batch_share_one_commit(tmp_path: Path) -> None:
    """The samples and records of one batch (the last item urgent) share one
    transaction, and the commit does not wait for the grouping interval."""
    m = Metrics()
    w = JournalWriter(Journal(tmp_path / "j.db", sinks=["s"]), commit_interval_s=30.0,
                      metrics=m)
    task = asyncio.create_task(w.run())
    try:
        await asyncio.sleep(0.05)
        batch = SampleBatch(np.zeros(3), np.arange(3), np.ones(3))
        futs = [w.submit(batch), w.submit([Quarantine(1, "x", "r")], urgent=True)]
        assert await asyncio.wait_for(asyncio.gather(*futs), 10.0) == [1, 2]
        assert w.commits("samples") == 1 and w.commits("records") == 1
        assert m.snapshot(["edge_journal_commit_seconds"])["edge_journal_commit_seconds_count"] == 1
    finally:
        await w.close()
        task.cancel()


async def test_read_on_commit_runs_right_behind_the_commit(tmp_path: Path) -> None:
    """An idle reader gets what it read on the journal thread after the next commit of
    its kind; a commit of another kind does not wake it, its timeout gives None."""
    w = JournalWriter(Journal(tmp_path / "j.db", sinks=["s"]), commit_interval_s=0.001)
    task = asyncio.create_task(w.run())
    try:
        await asyncio.sleep(0.05)
        since = w.commits("records")
        waiting = asyncio.create_task(w.read_on_commit(
            "records", since, lambda: [e.seq for e in w.journal.read("s").entries], 10.0))
        await asyncio.sleep(0.05)  # registered
        await w.submit(SampleBatch(np.zeros(1), np.arange(1), np.ones(1)), urgent=True)
        assert not waiting.done()
        await w.submit([Quarantine(1, "x", "r")], urgent=True)
        assert await asyncio.wait_for(waiting, 10.0) == [1, 2]
        assert await w.read_on_commit("records", since, lambda: 0, 10.0) is None  # stale
        assert await w.read_on_commit("records", w.commits("records"), lambda: 0,
                                      0.05) is None  # no commit came
    finally:
        await w.close()
        task.cancel()
