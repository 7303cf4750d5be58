"""The history store: recent samples per tag and recent records, on disk, bounded.

What it keeps and how (docs/history.md says why this layout and not the journal's rows):

* Samples are stored **per tag in chunks**: one row per tag per flush, holding that tag's
  points of the flush (timestamps delta-encoded, values, qualities; zlib). A raw read of
  one tag touches only that tag's chunks (index on ``(tag, t_last)``), never the other
  tags' data. Tags are stored by key (``etch1/chamber_temp``), not by registry id: a
  config that reorders tags keeps its history.
* Records (trips, SPC violations, health alerts, operator actions...) are one row each,
  msgpack, indexed by time: the event history.
* **Coverage is recorded.** Each run of the store is a span ``[t_start, t_end]`` of wall
  time during which it was recording (``t_end`` moves at every flush); what the limits
  evicted moves the start of coverage (``samples_from`` / ``records_from``). A read over
  a time the store was not recording, or has evicted, is told so (``Gap``) beside the
  data that exists: nothing in the store is ever silently missing from a read.
* **Limits in bytes and age, records kept longest** (as the journal): over ``max_bytes``
  the oldest sample chunks go first; records go only once no sample chunk is left.
  Samples older than ``max_age_s`` and records older than ``record_max_age_s`` go too.
  Every evicted point is counted (``edge_history_evicted_total{kind,reason}``) and logged
  in one line. Nothing is dropped silently.
* The order of points is total and stable: ``(ts_ns, chunk id, index in chunk)``; a read
  resumes exactly after a ``Position`` (continuation points), whatever duplicates of a
  timestamp exist.

Reads (pages, gaps) are in ``edge.history.reads``, the chunk format in ``types``.

Threading: a ``HistoryStore`` is used from one thread at a time (``HistoryFeed`` runs it
on its own worker thread). The files are private (0600) like the journal's.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from edge.history.reads import HistoryReads
from edge.history.types import (
    POINT,
    Gap,
    HistoryLimits,
    Position,
    RawRead,
    RecordRead,
    decode_chunk,
    encode_chunk,
)
from edge.model import Record, SampleBatch, encode_records, record_type
from edge.runtime.metrics import Metrics
from edge.runtime.private import file_mode, narrow, private_dir, private_file
from edge.runtime.sqlite_tx import Transaction

log = structlog.get_logger("edge.history")

__all__ = ["Gap", "HistoryLimits", "HistoryStore", "Position", "RawRead", "RecordRead",
           "decode_chunk", "encode_chunk"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tags (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    tag INTEGER NOT NULL,
    t_first INTEGER NOT NULL,
    t_last INTEGER NOT NULL,
    n INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_tag_first ON chunks (tag, t_first, t_last);
CREATE INDEX IF NOT EXISTS chunks_tag_last ON chunks (tag, t_last, t_first);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    ts_ns INTEGER NOT NULL,
    type TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts_ns, id);
CREATE TABLE IF NOT EXISTS spans (id INTEGER PRIMARY KEY, t_start INTEGER NOT NULL,
                                  t_end INTEGER NOT NULL);
"""
DEFAULT_LIMITS = HistoryLimits()
_ROW_OVERHEAD = 40  # bytes SQLite adds per row (header, key, index entry), as the journal
_EVICT_BATCH = 256


class HistoryStore(HistoryReads):
    """SQLite (WAL) history of samples and records. See the module docstring."""

    def __init__(self, path: str | Path, limits: HistoryLimits = DEFAULT_LIMITS, *,
                 metrics: Metrics | None = None, now_ns: int | None = None) -> None:
        self.path = Path(path)
        self.limits = limits
        private_dir(self.path.parent, ours=False)
        private_file(self.path)
        for sidecar in ("-wal", "-shm"):
            narrow(self.path.with_name(self.path.name + sidecar), file_mode(self.path.parent))
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # history: a crash loses one flush
        self._db.executescript(_SCHEMA)
        self._tags: dict[str, int] = dict(self._db.execute("SELECT key, id FROM tags"))
        self._bytes = int(self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(payload)), 0) + COUNT(*) * ? FROM chunks",
            (_ROW_OVERHEAD,)).fetchone()[0]) + int(self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(payload)), 0) + COUNT(*) * ? FROM records",
            (_ROW_OVERHEAD,)).fetchone()[0])
        now = time.time_ns() if now_ns is None else now_ns
        self._span = int(self._db.execute(
            "INSERT INTO spans(t_start, t_end) VALUES (?, ?)", (now, now)).lastrowid or 0)
        m = metrics or Metrics()
        self._m_evicted = m.counter("edge_history_evicted_total",
                                    "Points evicted from the OPC-UA history by its limits",
                                    ["kind", "reason"])
        self._m_bytes = m.gauge("edge_history_bytes", "Bytes held by the OPC-UA history")
        self._m_points = m.counter("edge_history_stored_total",
                                   "Points stored in the OPC-UA history", ["kind"])
        self._m_bytes.set(self._bytes)
        self._closed = False

    # ----------------------------------------------------------------- writing

    def tag_ids(self, keys: Sequence[str]) -> npt.NDArray[np.int64]:
        """The store's id of each tag key (new keys get one)."""
        new = [k for k in keys if k not in self._tags]
        if new:
            with Transaction(self._db):
                self._db.executemany("INSERT OR IGNORE INTO tags(key) VALUES (?)",
                                     [(k,) for k in new])
            self._tags = dict(self._db.execute("SELECT key, id FROM tags"))
        return np.array([self._tags[k] for k in keys], np.int64)

    def write(self, batch: SampleBatch, store_ids: npt.NDArray[np.int64],
              records: Sequence[Record], now_ns: int | None = None) -> None:
        """Store ``batch`` (registry ids mapped to store ids by ``store_ids``; ids outside
        it are skipped) and ``records`` in one transaction, then apply the byte limit."""
        now = time.time_ns() if now_ns is None else now_ns
        recs: list[tuple[int, str, bytes]] = []
        for rec in records:
            try:
                recs.append((rec.ts_ns, record_type(rec), encode_records([rec])))
            except (TypeError, ValueError, OverflowError) as exc:
                log.error("record not kept in the OPC-UA history: cannot be encoded",
                          record=repr(rec), error=str(exc))
        added = sum(len(r[2]) + _ROW_OVERHEAD for r in recs)
        n_samples = 0
        with Transaction(self._db):
            for rows in self._chunk_rows(batch, store_ids):
                self._db.executemany(
                    "INSERT INTO chunks(tag, t_first, t_last, n, payload) VALUES (?, ?, ?, ?, ?)",
                    rows)
                added += sum(len(r[4]) + _ROW_OVERHEAD for r in rows)
                n_samples += sum(r[3] for r in rows)
                # Let the event loop's thread take the GIL between slices: this thread
                # would otherwise hold it up to the switch interval (5 ms) at a time.
                time.sleep(0)
            if recs:
                self._db.executemany("INSERT INTO records(ts_ns, type, payload) VALUES (?, ?, ?)",
                                     recs)
            # Data stamped ahead of the clock (a device's) is covered too.
            self._db.execute("UPDATE spans SET t_end = MAX(t_end, ?, ?) WHERE id = ?",
                             (now, int(batch.ts_ns.max()) if len(batch) else now, self._span))
        self._bytes += added
        if n_samples:
            self._m_points.labels("samples").inc(n_samples)
        if recs:
            self._m_points.labels("records").inc(len(recs))
        if self._bytes > self.limits.max_bytes:
            self._evict_bytes()
        self._m_bytes.set(self._bytes)

    @staticmethod
    def _chunk_rows(batch: SampleBatch, store_ids: npt.NDArray[np.int64], slice_rows: int = 256
                    ) -> Iterator[list[tuple[int, int, int, int, memoryview]]]:
        """The chunk rows of ``batch``, ``slice_rows`` at a time."""
        n = len(batch)
        if not n:
            return
        tid = batch.tag_id.astype(np.int64)
        ok = (tid >= 0) & (tid < store_ids.shape[0])
        if not ok.all():
            batch = batch.take(np.flatnonzero(ok))
            tid = tid[ok]
            if not len(batch):
                return
        sid = store_ids[tid]
        # Grouped by tag in arrival order (a chunk need not be time-ordered: reads sort).
        # A stable sort of 16-bit keys is a radix sort: O(n), a few ms for 200k points.
        key = sid.astype(np.uint16) if sid.shape[0] and int(sid.max()) < 65536 else sid
        order = np.argsort(key, kind="stable")
        sid, ts = sid[order], batch.ts_ns[order]
        cuts = np.flatnonzero(np.diff(sid)) + 1
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts, [sid.shape[0]]))
        t_first = np.minimum.reduceat(ts, starts)
        t_last = np.maximum.reduceat(ts, starts)
        # Every chunk in one buffer, each tag's points contiguous: one slice per row.
        points = np.empty(sid.shape[0], POINT)
        dt = np.diff(ts, prepend=np.int64(0))
        dt[starts] = ts[starts]
        points["dt"] = dt
        points["value"] = batch.value[order]
        points["quality"] = batch.quality[order]
        buf = memoryview(points.tobytes())
        size = POINT.itemsize
        for k in range(0, starts.shape[0], slice_rows):
            st, en = starts[k:k + slice_rows], ends[k:k + slice_rows]
            yield [(t, f, la, b - a, buf[a * size:b * size])
                   for t, f, la, a, b in zip(sid[st].tolist(), t_first[k:k + slice_rows].tolist(),
                                             t_last[k:k + slice_rows].tolist(), st.tolist(),
                                             en.tolist(), strict=True)]

    def _evict_bytes(self) -> None:
        """Oldest sample chunks first; records only once no chunk is left."""
        target = self.limits.max_bytes
        evicted = {"samples": 0, "records": 0}
        for table, kind in (("chunks", "samples"), ("records", "records")):
            while self._bytes > target:
                cols = "id, n, LENGTH(payload), t_last" if table == "chunks" else \
                    "id, 1, LENGTH(payload), ts_ns"
                rows = self._db.execute(
                    f"SELECT {cols} FROM {table} ORDER BY id LIMIT ?", (_EVICT_BATCH,)
                ).fetchall()
                if not rows:
                    break
                chosen = []
                freed = 0
                for row in rows:
                    chosen.append(row)
                    freed += row[2] + _ROW_OVERHEAD
                    if self._bytes - freed <= target:
                        break
                self._delete(table, kind, chosen, evicted)
        self._report(evicted, "bytes")

    def _delete(self, table: str, kind: str, rows: Sequence[tuple[int, int, int, int]],
                evicted: dict[str, int]) -> None:
        newest = max(r[3] for r in rows)
        key = "samples_from" if kind == "samples" else "records_from"
        with Transaction(self._db):
            self._db.executemany(f"DELETE FROM {table} WHERE id = ?", [(r[0],) for r in rows])
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) "
                "DO UPDATE SET value = MAX(value, excluded.value)", (key, newest + 1))
        self._bytes -= sum(r[2] + _ROW_OVERHEAD for r in rows)
        evicted[kind] += sum(r[1] for r in rows)

    def _report(self, evicted: dict[str, int], reason: str) -> None:
        if not any(evicted.values()):
            return
        for kind, n in evicted.items():
            if n:
                self._m_evicted.labels(kind, reason).inc(n)
        log.warning("opcua history evicted data", reason=reason, samples=evicted["samples"],
                    records=evicted["records"], max_bytes=self.limits.max_bytes,
                    bytes=self._bytes)

    def expire(self, now_ns: int | None = None) -> dict[str, int]:
        """Apply the age limits; returns the points evicted per kind."""
        now = time.time_ns() if now_ns is None else now_ns
        evicted = {"samples": 0, "records": 0}
        for table, kind, col, age in (
                ("chunks", "samples", "t_last", self.limits.max_age_s),
                ("records", "records", "ts_ns", self.limits.record_max_age_s)):
            cutoff = now - int(age * 1e9)
            n_col = "n" if table == "chunks" else "1"
            while True:
                rows = self._db.execute(
                    f"SELECT id, {n_col}, LENGTH(payload), {col} FROM {table} "
                    f"WHERE {col} < ? ORDER BY id LIMIT 4096", (cutoff,)).fetchall()
                if not rows:
                    break
                self._delete(table, kind, rows, evicted)
        with Transaction(self._db):
            self._db.execute("DELETE FROM spans WHERE t_end < ? AND id != ?",
                             (now - int(max(self.limits.max_age_s,
                                            self.limits.record_max_age_s) * 1e9), self._span))
        self._m_bytes.set(self._bytes)
        self._report(evicted, "age")
        return evicted

    # ----------------------------------------------------------------- plumbing

    @property
    def bytes(self) -> int:
        return self._bytes

    def counts(self) -> tuple[int, int]:
        """(sample points, records) held."""
        n = self._db.execute("SELECT COALESCE(SUM(n), 0) FROM chunks").fetchone()[0]
        r = self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        return int(n), int(r)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.OperationalError as exc:
                log.warning("opcua history checkpoint at close failed", error=str(exc))
            finally:
                self._db.close()
