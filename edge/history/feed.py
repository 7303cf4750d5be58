"""The async front of the history store: fed from the fast path, written on one thread.

Invariants:

* ``publish`` runs on the event loop for every batch: it appends a reference to the
  batch and the records to a queue and returns (no copy, no encoding, no I/O). Every
  store call (SQLite, zlib, the per-tag grouping) runs on the feed's one worker thread,
  in submission order; the event loop never waits on the disk.
* The queue is bounded: past ``max_pending_points`` samples (a disk that stalls), the
  oldest pending sample batches are dropped, counted in ``edge_history_evicted_total``
  with reason ``backlog`` and logged once per flush; pending records are never dropped.
* A read first writes what is pending, on the same thread, so it sees every point
  published before it was asked.
* A disk that refuses (full, I/O error) never stops the OPC-UA server: a failed flush is
  lost, counted (``edge_history_evicted_total{reason="disk"}``) and logged at most every
  10 s; a store that cannot open is retried with backoff while the server runs without
  HistoryRead (BadHistoryOperationUnsupported).
* The store's own limits (bytes, age) and coverage (gaps) are ``edge.history.store``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import structlog

from edge.history.store import HistoryLimits, HistoryStore, Position, RawRead, RecordRead
from edge.model import Record, SampleBatch, TagRegistry, record_type
from edge.runtime.links import Backoff
from edge.runtime.metrics import Metrics

log = structlog.get_logger("edge.history")

T = TypeVar("T")
OPEN_BACKOFF = Backoff(initial_s=1.0, max_s=60.0)


class HistoryFeed:
    def __init__(
        self, path: Path, limits: HistoryLimits, tags: TagRegistry, metrics: Metrics, *,
        flush_interval_s: float = 1.0, max_pending_points: int = 2_000_000,
        expire_interval_s: float = 60.0, record_types: Sequence[str] = (),
    ) -> None:
        self.path = path
        self.limits = limits
        self.tags = tags
        self.metrics = metrics
        self.flush_interval_s = flush_interval_s
        self.max_pending_points = max_pending_points
        self.expire_interval_s = expire_interval_s
        self.record_types = frozenset(record_types)
        self._batches: deque[SampleBatch] = deque()
        self._records: list[Record] = []
        self._pending_points = 0
        self._dropped = 0
        self._store: HistoryStore | None = None
        self._store_ids: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self._executor: ThreadPoolExecutor | None = None
        self.ready = asyncio.Event()
        self._rng = random.Random()
        self._last_error = -10.0
        self._m_evicted = metrics.counter(
            "edge_history_evicted_total", "Points evicted from the OPC-UA history by its limits",
            ["kind", "reason"])
        self._m_pending = metrics.gauge("edge_history_pending_points",
                                        "Samples waiting to be written to the OPC-UA history")
        self._m_flush = metrics.histogram(
            "edge_history_flush_seconds", "Duration of one history write (worker thread)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))

    # ------------------------------------------------------------------ fast path

    def publish(self, batch: SampleBatch, records: Sequence[Record]) -> None:
        n = len(batch)
        if n:
            self._batches.append(batch)
            self._pending_points += n
            if self._pending_points > self.max_pending_points:
                self._shed()
        if records and self.record_types:
            self._records.extend(r for r in records if record_type(r) in self.record_types)

    def _shed(self) -> None:
        while self._pending_points > self.max_pending_points and len(self._batches) > 1:
            old = self._batches.popleft()
            self._pending_points -= len(old)
            self._dropped += len(old)

    # ------------------------------------------------------------------ worker

    async def run(self) -> None:
        """Open the store, write every ``flush_interval_s``, expire every
        ``expire_interval_s``; on cancel write what is pending and close."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        try:
            attempt = 0
            while self._store is None:
                try:
                    self._store = await self._call(HistoryStore, self.path, self.limits,
                                                   metrics=self.metrics)
                except (sqlite3.Error, OSError) as exc:  # the OPC-UA server runs without it
                    delay = OPEN_BACKOFF.delay(attempt, self._rng)
                    attempt += 1
                    log.error("opcua history cannot open; HistoryRead unavailable, retrying",
                              path=str(self.path), error=str(exc), retry_in_s=round(delay, 1))
                    await asyncio.sleep(delay)
                    self._take()  # bounded: what waits is dropped, counted
            self.ready.set()
            log.info("opcua history open", path=str(self.path),
                     max_bytes=self.limits.max_bytes, max_age_s=self.limits.max_age_s)
            next_expiry = time.monotonic() + self.expire_interval_s
            while True:
                await asyncio.sleep(self.flush_interval_s)
                await self.flush()
                if time.monotonic() >= next_expiry:
                    next_expiry = time.monotonic() + self.expire_interval_s
                    with contextlib.suppress(sqlite3.Error, OSError):
                        await self._call(self._store.expire)
        finally:
            self.ready.clear()
            store, self._store = self._store, None
            if store is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._final(store))
            self._executor.shutdown(wait=False)

    async def _final(self, store: HistoryStore) -> None:
        batch, records = self._take()
        await self._call(self._write, store, batch, records)
        await self._call(store.close)

    async def flush(self) -> None:
        """Write what is pending now (on the worker thread)."""
        store = self._store
        if store is None:
            return
        batch, records = self._take()
        if len(batch) or records:
            try:
                await self._call(self._write, store, batch, records)
            except (sqlite3.Error, OSError) as exc:
                # A full or failing disk: the history loses this flush (counted, logged);
                # the OPC-UA server and the live values keep going.
                self._m_evicted.labels("samples", "disk").inc(len(batch))
                if records:
                    self._m_evicted.labels("records", "disk").inc(len(records))
                now = time.monotonic()
                if now - self._last_error >= 10.0:
                    self._last_error = now
                    log.error("opcua history write failed: this flush is lost",
                              samples=len(batch), records=len(records), error=str(exc))

    def _take(self) -> tuple[SampleBatch, list[Record]]:
        batches = list(self._batches)
        self._batches.clear()
        self._pending_points = 0
        records, self._records = self._records, []
        if self._dropped:
            self._m_evicted.labels("samples", "backlog").inc(self._dropped)
            log.warning("opcua history dropped samples: the writer fell behind",
                        samples=self._dropped, max_pending_points=self.max_pending_points)
            self._dropped = 0
        self._m_pending.set(0)
        return SampleBatch.concat(batches), records

    def _write(self, store: HistoryStore, batch: SampleBatch, records: list[Record]) -> None:
        """On the worker thread."""
        t0 = time.perf_counter()
        if self._store_ids.shape[0] < len(self.tags):
            self._store_ids = store.tag_ids([t.key for t in self.tags])
        store.write(batch, self._store_ids, records)
        self._m_flush.observe(time.perf_counter() - t0)

    async def _call(self, fn: Callable[..., T], *args: object, **kw: object) -> T:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kw))

    # ------------------------------------------------------------------ reads

    async def read_raw(self, key: str, start_ns: int, end_ns: int, *, limit: int,
                       reverse: bool = False, after: Position | None = None) -> RawRead:
        store = self._require()
        await self.flush()
        return await self._call(store.read_raw, key, start_ns, end_ns, limit=limit,
                                reverse=reverse, after=after)

    async def read_records(self, start_ns: int, end_ns: int, *, limit: int,
                           reverse: bool = False, after: Position | None = None) -> RecordRead:
        store = self._require()
        await self.flush()
        return await self._call(store.read_records, start_ns, end_ns, limit=limit,
                                reverse=reverse, after=after)

    def _require(self) -> HistoryStore:
        if self._store is None:
            raise RuntimeError("the history store is not open")
        return self._store
