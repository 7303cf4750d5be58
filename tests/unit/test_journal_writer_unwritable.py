"""JournalWriter on a disk that refuses commits: no backpressure stall, bounded memory."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.journal import Journal, JournalWriter
from edge.model import Quarantine, Record, SampleBatch


class _FullDisk(Journal):
    """A journal whose appends fail while ``full`` is set, as SQLITE_FULL does."""

    full = True

    def append(self, items: Sequence[SampleBatch | Sequence[Record]],
               checkpoints: object = None) -> list[int]:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        return super().append(items, checkpoints)  # type: ignore[arg-type]


def _batch(n: int) -> SampleBatch:
    return SampleBatch(np.zeros(n, np.int32), np.arange(n), np.ones(n))


async def test_full_disk_never_blocks_producers_and_sheds_oldest_samples(
    tmp_path: Path,
) -> None:
    """While commits fail, wait_capacity returns at once (sources, interlocks and live
    values keep running), samples beyond max_pending_points are shed and counted, records
    are kept, and everything left commits once the disk takes writes again (found by the
    disk-full chaos test: the interlock stopped tripping once 50% of the limit was pending)."""
    journal = _FullDisk(tmp_path / "j.db", sinks=["mes"])
    writer = JournalWriter(journal, commit_interval_s=0.001, max_pending_points=1000)
    task = asyncio.create_task(writer.run())
    try:
        rec = writer.submit([Quarantine(1, "src", "kept")])
        await asyncio.sleep(0.05)  # the first commit fails
        for _ in range(30):
            writer.submit(_batch(100))
            await asyncio.wait_for(writer.wait_capacity(), 0.5)
        assert writer.pending_points <= 1000 + 100
        journal.full = False
        assert await writer.flush(10)
        assert await asyncio.wait_for(rec, 1) > 0
        kinds = [e.kind for e in journal.entries()]
        assert kinds[0] == "records" and 1 <= kinds.count("samples") <= 11
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        journal.close()


class _SlowRetry(_FullDisk):
    """Fails once, then holds the next (retried) append until ``release`` is set."""

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.holding = threading.Event()
        self.release = threading.Event()

    def append(self, items: Sequence[SampleBatch | Sequence[Record]],
               checkpoints: object = None) -> list[int]:
        if self.full:
            self.full = False
            raise sqlite3.OperationalError("database or disk is full")
        if not self.release.is_set():
            self.holding.set()
            self.release.wait(10)
        return super().append(items, checkpoints)


async def test_shedding_during_a_retried_commit_never_reports_an_uncommitted_item(
    tmp_path: Path,
) -> None:
    """Samples shed while the retried commit is on the journal thread are never among
    those it holds: every item whose future has a seq is in the journal, and the items
    behind the commit are not taken for committed ones."""
    journal = _SlowRetry(tmp_path / "j.db", sinks=["mes"])
    writer = JournalWriter(journal, commit_interval_s=0.001, max_pending_points=1000)
    task = asyncio.create_task(writer.run())
    try:
        first = [writer.submit(_batch(100)) for _ in range(5)]  # the commit that fails
        deadline = asyncio.get_running_loop().time() + 10
        while not journal.holding.is_set():  # the retry is on the journal thread
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        later = [writer.submit(_batch(100)) for _ in range(20)]  # over the limit: shed
        journal.release.set()
        assert await writer.flush(10)
        futs = first + later
        await asyncio.gather(*futs, return_exceptions=True)
        seqs = [f.result() for f in futs if f.exception() is None]
        stored = {e.seq for e in journal.entries()}
        assert set(seqs) == stored and len(seqs) == len(stored)
        assert all(f.exception() is None for f in first)  # they were in the commit
    finally:
        journal.release.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        journal.close()
