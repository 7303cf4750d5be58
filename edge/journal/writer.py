"""Async front of the journal: group commit on one worker thread.

Invariants:

* Every journal call runs on one dedicated thread, in submission order, so the
  ``Journal`` needs no locks and the event loop never waits on SQLite or fsync.
* ``submit`` never blocks. Items submitted within ``commit_interval_s`` of each other,
  from any producer, share one transaction. The future of an item resolves with its
  seq only after its transaction committed. An ``urgent`` item (its producer waits for
  the commit, e.g. MQTT QoS 1 acks held back until then) ends the grouping wait at
  once: a broker lets only a few unacknowledged messages out, so every millisecond
  the commit waits is a millisecond the whole source waits. Items that arrive while
  a commit runs go into the next one, which starts as soon as that one ended.
* ``wait_commit`` wakes a consumer (a delivery loop) on the next commit that holds
  records (or samples): records reach their sink without a polling delay.
  ``read_on_commit`` goes one step further for an idle consumer: its read runs on the
  journal thread right behind the append, so it has the new entries when it wakes. A
  read given there must not change the journal (its result may be dropped).
* A checkpoint submitted with an item (or alone) commits in the same transaction; of
  several for one key the last wins.
* When the disk refuses a commit (full, I/O error) the items stay pending in memory
  and the commit is retried with backoff (``edge.runtime.links.Backoff``). Pending
  samples beyond ``max_pending_points`` are dropped oldest first, counted and logged;
  pending records are never dropped, nor items a (retried) commit already holds.
  Meanwhile ``wait_capacity`` never blocks: producers (and with them the interlocks and
  the live values) keep running; memory is bounded by the shedding, not by stalling.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from edge.journal.store import Journal
from edge.model import Record, SampleBatch
from edge.runtime.links import Backoff
from edge.runtime.metrics import Metrics

log = structlog.get_logger("edge.journal")

COMMIT_BACKOFF = Backoff(initial_s=0.05, max_s=5.0)

T = TypeVar("T")
Item = SampleBatch | Sequence[Record]
Checkpoint = tuple[str, bytes]
_Pending = tuple[Item | None, Checkpoint | None, "asyncio.Future[int]"]
_Reader = tuple[str, Callable[[], Any], "asyncio.Future[Any]"]


class JournalWriter:
    def __init__(
        self,
        journal: Journal,
        *,
        commit_interval_s: float = 0.005,
        max_pending_points: int = 2_000_000,
        metrics: Metrics | None = None,
        expire_interval_s: float = 60.0,
    ) -> None:
        self.journal = journal
        self.expire_interval_s = expire_interval_s
        self.commit_interval_s = commit_interval_s
        self.max_pending_points = max_pending_points
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._pending: deque[_Pending] = deque()
        self._pending_points = 0
        self._wakeup = asyncio.Event()
        self._grouping: asyncio.Future[None] | None = None  # the wait before a commit
        self._urgent = False  # an urgent item is pending
        self._committed: dict[str, int] = {"samples": 0, "records": 0}  # commits holding each
        self._commit_waiters: list[tuple[str, int, asyncio.Future[None]]] = []
        self._readers: list[_Reader] = []  # read_on_commit: not yet behind a commit
        self._job: tuple[int, asyncio.Future[list[int]], list[Item]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._capacity = asyncio.Event()
        self._capacity.set()
        self._closed = False
        self.last_commit_ns = time.monotonic_ns()
        self.commit_errors = 0
        self._unwritable = False  # the last commit failed (disk full, I/O error)
        m = metrics or Metrics()
        self._m_pending = m.gauge("edge_journal_pending_points", "Points waiting for a commit")
        self._m_commit = m.histogram(
            "edge_journal_commit_seconds", "Duration of one group commit",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0),
        )
        self._m_dropped = m.counter(
            "edge_journal_evicted_total", "Points evicted from the journal by its limits",
            ["kind", "reason"],
        )

    # ----------------------------------------------------------------- producers

    def submit(
        self, item: Item | None, checkpoint: Checkpoint | None = None, *, urgent: bool = False
    ) -> asyncio.Future[int]:
        """Queue an item (and/or a checkpoint) for the next group commit; never blocks.
        ``urgent``: the producer waits for this commit, so do not wait for others."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self._closed:
            fut.set_exception(RuntimeError("journal writer is closed"))
            return fut
        self._pending.append((item, checkpoint, fut))
        self._pending_points += _points(item)
        self._m_pending.set(self._pending_points)
        self._idle.clear()
        self._wakeup.set()
        if urgent:
            self._urgent = True
            if self._grouping is not None and not self._grouping.done():
                self._grouping.set_result(None)
        if self._unwritable:
            # Backpressure would stall every source, and with them the interlocks and
            # the live values: while the disk refuses, memory is bounded by shedding.
            if self._pending_points > self.max_pending_points:
                self._shed_memory()
        elif self._pending_points >= self.max_pending_points // 2:
            self._capacity.clear()
        return fut

    async def append(self, item: Item) -> int:
        return await self.submit(item)

    async def wait_capacity(self) -> None:
        """Backpressure for producers that can wait (file, batched MQTT)."""
        await self._capacity.wait()

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run any journal operation on the journal thread, after what is queued there."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is committed."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def pending_points(self) -> int:
        return self._pending_points

    def commits(self, kind: str) -> int:
        """How many commits so far held items of ``kind`` ("samples" or "records")."""
        return self._committed[kind]

    async def wait_commit(self, kind: str, since: int, timeout: float) -> None:
        """Return once ``commits(kind) > since`` or after ``timeout`` seconds."""
        if self._committed[kind] > since:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (kind, since, fut)
        self._commit_waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            pass
        finally:
            if waiter in self._commit_waiters:
                self._commit_waiters.remove(waiter)

    async def read_on_commit(self, kind: str, since: int, fn: Callable[[], T],
                             timeout: float) -> T | None:
        """``fn()``, run on the journal thread right after the next commit that holds
        ``kind``; None once ``commits(kind) > since`` without it (read yourself) or
        after ``timeout`` seconds. ``fn`` must not change the journal."""
        if self._committed[kind] > since:
            return None
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        reader: _Reader = (kind, fn, fut)
        self._readers.append(reader)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            return None
        finally:
            if reader in self._readers:
                self._readers.remove(reader)

    # ----------------------------------------------------------------- committer

    def _start(self) -> None:
        """Hand everything pending to the journal thread as one commit, and behind it the
        reads of the idle readers of the kinds it holds."""
        assert self._loop is not None
        batch = list(self._pending)
        self._urgent = False
        items = [it for it, _, _ in batch if it is not None]
        checkpoints = dict(ck for _, ck, _ in batch if ck is not None)
        job = self._executor.submit(self.journal.append, items, checkpoints)
        self._job = (len(batch), asyncio.wrap_future(job, loop=self._loop), items)
        if self._readers:
            kinds = _kinds(items)
            for reader in [r for r in self._readers if r[0] in kinds]:
                self._readers.remove(reader)
                read = self._executor.submit(reader[1])
                read.add_done_callback(_to_loop(self._loop, reader[2]))

    async def run(self) -> None:
        """Commit until closed; meanwhile apply the journal's age limits every
        ``expire_interval_s``."""
        expiry = asyncio.create_task(self._expire_periodically(), name="journal-expiry")
        try:
            await self._commit_loop()
        finally:
            expiry.cancel()

    async def _expire_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.expire_interval_s)
            if self._closed:
                return
            try:
                await self.call(self.journal.expire)
            except (sqlite3.Error, OSError) as exc:  # the disk refuses: next round tries again
                log.error("journal age expiry failed", error=str(exc))

    async def _commit_loop(self) -> None:
        attempt = 0
        rng = random.Random()
        self._loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._idle.set()
                self._wakeup.clear()
                if self._closed:
                    return
                await self._wakeup.wait()
                await self._group()
            self._start()
            assert self._job is not None
            n, job, items = self._job
            t0 = time.perf_counter()
            try:
                seqs = iter(await job)
            except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
                self._job = None
                self.commit_errors += 1
                self._unwritable = True
                self._capacity.set()
                delay = COMMIT_BACKOFF.delay(attempt, rng)
                attempt += 1
                log.error(
                    "journal commit failed; keeping data in memory and retrying",
                    error=str(exc), pending_points=self._pending_points,
                    retry_in_s=round(delay, 3),
                )
                self._shed_memory()
                await asyncio.sleep(delay)
                continue
            self._job = None
            attempt = 0
            self._unwritable = False
            self._m_commit.observe(time.perf_counter() - t0)
            self.last_commit_ns = time.monotonic_ns()
            for _ in range(n):
                item, _, fut = self._pending.popleft()
                self._pending_points -= _points(item)
                seq = next(seqs) if item is not None else 0
                if not fut.done():
                    fut.set_result(seq)
            self._m_pending.set(self._pending_points)
            if self._pending_points < self.max_pending_points // 2:
                self._capacity.set()
            self._notify(items)

    async def _group(self) -> None:
        """Let other producers join this transaction: wait ``commit_interval_s``, or
        less if an urgent item comes (or came) meanwhile."""
        if self._urgent:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._grouping = fut
        handle = loop.call_later(self.commit_interval_s, _resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._grouping = None

    def _notify(self, items: Sequence[Item]) -> None:
        kinds = _kinds(items)
        for kind in kinds:
            self._committed[kind] += 1
        if self._commit_waiters:
            for kind, since, fut in self._commit_waiters:
                if self._committed[kind] > since and not fut.done():
                    fut.set_result(None)
        if self._readers:  # came after this commit started: they read themselves
            for kind, _, reader in self._readers:
                if kind in kinds and not reader.done():
                    reader.set_result(None)

    def _shed_memory(self) -> None:
        if self._pending_points <= self.max_pending_points:
            return
        kept: deque[_Pending] = deque()
        dropped = 0
        on_thread = self._job[0] if self._job is not None else 0  # being committed
        for i, (item, ckpt, fut) in enumerate(self._pending):
            over = self._pending_points - dropped > self.max_pending_points
            # A sample batch that carries a checkpoint is kept: dropping it would let the
            # source resume past data that was never stored.
            if over and i >= on_thread and isinstance(item, SampleBatch) and ckpt is None:
                dropped += len(item)
                fut.set_exception(RuntimeError("dropped: journal unwritable and memory full"))
                fut.exception()  # mark retrieved: nobody may be waiting on it
            else:
                kept.append((item, ckpt, fut))
        self._pending = kept
        self._pending_points -= dropped
        self._m_dropped.labels("samples", "memory").inc(dropped)
        log.error("journal unwritable: dropped oldest pending samples", points=dropped)

    async def checkpoint(self, key: str) -> bytes | None:
        return await self.call(self.journal.checkpoint, key)

    async def close(self, timeout: float = 10.0) -> None:
        """Commit what is pending (within ``timeout``), then close the journal."""
        self._closed = True
        self._wakeup.set()
        if not await self.flush(timeout):
            log.error("journal close: pending data not committed", points=self._pending_points)
        await self.call(self.journal.close)
        self._executor.shutdown(wait=True)


def _kinds(items: Sequence[Item]) -> set[str]:
    kinds = set()
    for it in items:
        kinds.add("samples" if isinstance(it, SampleBatch) else "records")
    return kinds


def _to_loop(loop: asyncio.AbstractEventLoop,
             fut: asyncio.Future[Any]) -> Callable[[concurrent.futures.Future[Any]], None]:
    """A done-callback (journal thread) that passes the outcome to ``fut`` on ``loop``."""
    def copy(job: concurrent.futures.Future[Any]) -> None:
        if fut.done():  # timed out meanwhile: the result is not wanted
            return
        exc = job.exception()
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(job.result())

    def done(job: concurrent.futures.Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(copy, job)
    return done


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _points(item: Item | None) -> int:
    return 0 if item is None else len(item)
