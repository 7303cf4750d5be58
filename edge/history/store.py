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

Threading: a ``HistoryStore`` is used from one thread at a time (``HistoryFeed`` runs it
on its own worker thread). The files are private (0600) like the journal's.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt
import structlog

from edge.model import Record, SampleBatch, decode_records, encode_records, record_type
from edge.runtime.metrics import Metrics
from edge.runtime.private import file_mode, narrow, private_dir, private_file

log = structlog.get_logger("edge.history")

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
_ROW_OVERHEAD = 40  # bytes SQLite adds per row (header, key, index entry), as the journal
_EVICT_BATCH = 256


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a read stopped: the last point returned, in the store's total order."""

    ts_ns: int
    row: int  # chunk or record id; 0 for a gap marker
    index: int  # index in the chunk (or the gap's number)

    def pack(self) -> bytes:
        return msgspec.msgpack.encode((1, self.ts_ns, self.row, self.index))

    @classmethod
    def unpack(cls, data: bytes) -> Position:
        """ValueError for anything this store did not hand out."""
        try:
            version, ts_ns, row, index = msgspec.msgpack.decode(
                data, type=tuple[int, int, int, int])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError(f"not a history continuation point: {exc}") from None
        if version != 1:
            raise ValueError(f"unknown continuation point version {version}")
        return cls(ts_ns, row, index)


@dataclass(frozen=True, slots=True)
class Gap:
    """A stretch of ``[start_ns, end_ns)`` the store holds nothing for: it was not
    recording then, or the limits evicted it."""

    start_ns: int
    end_ns: int


@dataclass(slots=True)
class RawRead:
    """Points of one tag in read order, the gaps among them, and where to resume."""

    ts_ns: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint8]
    gaps: list[tuple[int, Gap]]  # (index in the arrays before which the gap comes, gap)
    more: Position | None


@dataclass(slots=True)
class RecordRead:
    records: list[tuple[int, Record]]  # (row id, record) in read order
    gaps: list[tuple[int, Gap]]
    more: Position | None


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    max_bytes: int = 256 << 20
    max_age_s: float = 86400.0
    record_max_age_s: float = 30 * 86400.0


# One point in a chunk: the time since the previous point of the chunk (the first: since
# the epoch), the value, the quality. Packed (17 bytes), little-endian.
POINT = np.dtype([("dt", "<i8"), ("value", "<f8"), ("quality", "u1")])


def encode_chunk(ts: npt.NDArray[np.int64], value: npt.NDArray[np.float64],
                 quality: npt.NDArray[np.uint8]) -> bytes:
    points = np.empty(ts.shape[0], POINT)
    points["dt"] = np.diff(ts, prepend=np.int64(0))
    points["value"] = value
    points["quality"] = quality
    return points.tobytes()


def decode_chunk(payload: bytes, n: int) -> tuple[
        npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.uint8]]:
    points = np.frombuffer(payload, POINT, n)
    return np.cumsum(points["dt"]), points["value"].copy(), points["quality"].copy()


class HistoryStore:
    """SQLite (WAL) history of samples and records. See the module docstring."""

    def __init__(self, path: str | Path, limits: HistoryLimits = HistoryLimits(), *,
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
            with _Tx(self._db):
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
        with _Tx(self._db):
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
        with _Tx(self._db):
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
        with _Tx(self._db):
            self._db.execute("DELETE FROM spans WHERE t_end < ? AND id != ?",
                             (now - int(max(self.limits.max_age_s,
                                            self.limits.record_max_age_s) * 1e9), self._span))
        self._m_bytes.set(self._bytes)
        self._report(evicted, "age")
        return evicted

    # ----------------------------------------------------------------- reading

    def read_raw(self, key: str, start_ns: int, end_ns: int, *, limit: int,
                 reverse: bool = False, after: Position | None = None,
                 now_ns: int | None = None) -> RawRead:
        """Points of tag ``key`` between ``start_ns`` and ``end_ns`` (inclusive, either
        order), oldest first (newest
        first with ``reverse``), at most ``limit`` of them (gap markers included), starting
        after ``after``. ``more`` is where the next read resumes, None at the end."""
        tag = self._tags.get(key)
        start_ns, end_ns = min(start_ns, end_ns), max(start_ns, end_ns)
        gaps = self._gaps("samples_from", start_ns, end_ns, now_ns)
        parts_ts: list[npt.NDArray[np.int64]] = []
        parts_v: list[npt.NDArray[np.float64]] = []
        parts_q: list[npt.NDArray[np.uint8]] = []
        parts_row: list[npt.NDArray[np.int64]] = []
        parts_idx: list[npt.NDArray[np.int64]] = []
        if tag is not None:
            # Only the chunks a page needs: walk them in read order from where the last
            # page stopped, and stop once no further chunk can hold one of the page's
            # limit + 1 points (``bound``: the (limit + 1)-th point's time so far).
            lo, hi = start_ns, end_ns
            if after is not None:
                lo, hi = (lo, min(hi, after.ts_ns)) if reverse else (max(lo, after.ts_ns), hi)
            cursor = self._db.execute(
                "SELECT id, n, t_first, t_last, payload FROM chunks INDEXED BY "
                "chunks_tag_last WHERE tag = ? AND t_last >= ? AND t_first <= ? "
                "ORDER BY t_last DESC", (tag, lo, hi)) if reverse else self._db.execute(
                "SELECT id, n, t_first, t_last, payload FROM chunks INDEXED BY "
                "chunks_tag_first WHERE tag = ? AND t_first <= ? AND t_last >= ? "
                "ORDER BY t_first", (tag, hi, lo))
            beyond = 0  # points strictly past ``after``: certainly in a page
            bound: int | None = None
            for row, n, t_first, t_last, payload in cursor:
                if bound is not None and (t_last < bound if reverse else t_first > bound):
                    break
                ts, v, q = decode_chunk(payload, n)
                sel = (ts >= lo) & (ts <= hi)
                if not sel.all():
                    idx = np.flatnonzero(sel)
                    ts, v, q = ts[idx], v[idx], q[idx]
                else:
                    idx = np.arange(n)
                parts_ts.append(ts)
                parts_v.append(v)
                parts_q.append(q)
                parts_row.append(np.full(ts.shape[0], row, np.int64))
                parts_idx.append(idx.astype(np.int64))
                edge = hi if reverse else lo
                beyond += int(np.count_nonzero(ts != edge)) if after is not None else ts.shape[0]
                if beyond > limit:
                    every = np.concatenate(parts_ts)
                    if after is not None:  # the strictly-past points: a conservative bound
                        every = every[every != edge]
                    bound = int(-np.partition(-every, limit)[limit] if reverse
                                else np.partition(every, limit)[limit])
        # Gap markers take part in the order as (start, row 0, gap number).
        g_ts = np.array([max(g.start_ns, start_ns) for g in gaps], np.int64)
        ts = np.concatenate([*parts_ts, g_ts]) if parts_ts else g_ts
        value = np.concatenate([*parts_v, np.full(len(gaps), np.nan)]) if parts_v else \
            np.full(len(gaps), np.nan)
        quality = np.concatenate([*parts_q, np.zeros(len(gaps), np.uint8)]) if parts_q else \
            np.zeros(len(gaps), np.uint8)
        rows = np.concatenate([*parts_row, np.zeros(len(gaps), np.int64)]) if parts_row else \
            np.zeros(len(gaps), np.int64)
        index = np.concatenate([*parts_idx, np.arange(len(gaps), dtype=np.int64)]) \
            if parts_idx else np.arange(len(gaps), dtype=np.int64)
        order = np.lexsort((index, rows, ts))
        if reverse:
            order = order[::-1]
        ts, value, quality, rows, index = (ts[order], value[order], quality[order],
                                           rows[order], index[order])
        if after is not None:
            keep = _after(ts, rows, index, after, reverse)
            ts, value, quality, rows, index = (ts[keep], value[keep], quality[keep],
                                               rows[keep], index[keep])
        more = None
        if ts.shape[0] > limit:
            last = limit - 1
            more = Position(int(ts[last]), int(rows[last]), int(index[last]))
            ts, value, quality, rows, index = (ts[:limit], value[:limit], quality[:limit],
                                               rows[:limit], index[:limit])
        marks = np.flatnonzero(rows == 0).tolist()
        out_gaps = [(k - j, gaps[int(index[k])]) for j, k in enumerate(marks)]
        data = rows != 0
        return RawRead(ts[data], value[data], quality[data], out_gaps, more)

    def read_records(self, start_ns: int, end_ns: int, *, limit: int, reverse: bool = False,
                     after: Position | None = None, now_ns: int | None = None) -> RecordRead:
        """Records with ``start_ns <= ts <= end_ns`` in order, at most ``limit`` entries
        (gaps included), after ``after``."""
        start_ns, end_ns = min(start_ns, end_ns), max(start_ns, end_ns)
        gaps = self._gaps("records_from", start_ns, end_ns, now_ns)
        items: list[tuple[tuple[int, int, int], Record | Gap]] = [
            ((max(g.start_ns, start_ns), 0, i), g) for i, g in enumerate(gaps)]
        cmp = "<" if reverse else ">"
        q = "SELECT id, ts_ns, payload FROM records WHERE ts_ns >= ? AND ts_ns <= ?"
        args: list[int] = [start_ns, end_ns]
        if after is not None:
            q += f" AND (ts_ns, id) {cmp}= (?, ?)"
            args += [after.ts_ns, after.row]
        q += f" ORDER BY ts_ns {'DESC' if reverse else ''}, id {'DESC' if reverse else ''} " \
             "LIMIT ?"
        args.append(limit + 1)
        for row, ts, payload in self._db.execute(q, args):
            items.append(((ts, row, 0), decode_records(payload)[0]))
        items.sort(key=lambda it: it[0], reverse=reverse)
        if after is not None:
            pos = (after.ts_ns, after.row, after.index)
            items = [it for it in items if (it[0] < pos if reverse else it[0] > pos)]
        more = None
        if len(items) > limit:
            k = items[limit - 1][0]
            more = Position(*k)
            items = items[:limit]
        records: list[tuple[int, Record]] = []
        out_gaps: list[tuple[int, Gap]] = []
        for key, item in items:
            if isinstance(item, Gap):
                out_gaps.append((len(records), item))
            else:
                records.append((key[1], item))
        return RecordRead(records, out_gaps, more)

    def _gaps(self, from_key: str, start_ns: int, end_ns: int, now_ns: int | None
              ) -> list[Gap]:
        """Where ``[start_ns, end_ns]`` is not covered by a recording span (or was
        evicted). The current span is open: it covers up to now."""
        lo, hi = min(start_ns, end_ns), max(start_ns, end_ns)
        now = time.time_ns() if now_ns is None else now_ns
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (from_key,)).fetchone()
        covered_from = int(row[0]) if row else 0
        spans = self._db.execute(
            "SELECT t_start, CASE WHEN id = ? THEN MAX(t_end, ?) ELSE t_end END FROM spans "
            "ORDER BY t_start", (self._span, now)).fetchall()
        top = min(hi, now)  # the future is not a gap: nothing happened there yet
        gaps: list[Gap] = []
        # A read with no lower bound (0) starts where the kept history starts.
        cursor = lo if lo > 0 else max(covered_from, spans[0][0] if spans else 0)
        for span_start, e in spans:
            s = max(span_start, covered_from)
            if e < s or e <= cursor:
                continue
            if s >= top:
                break
            if s > cursor:
                gaps.append(Gap(cursor, s))
            cursor = e
            if cursor >= top:
                break
        if cursor < top:
            gaps.append(Gap(cursor, top))
        return [g for g in gaps if g.end_ns > g.start_ns]

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


def _after(ts: npt.NDArray[np.int64], rows: npt.NDArray[np.int64],
           index: npt.NDArray[np.int64], pos: Position, reverse: bool) -> npt.NDArray[np.bool_]:
    """Which points come after ``pos`` in read order."""
    gt = (ts > pos.ts_ns) | ((ts == pos.ts_ns) & (
        (rows > pos.row) | ((rows == pos.row) & (index > pos.index))))
    eq = (ts == pos.ts_ns) & (rows == pos.row) & (index == pos.index)
    keep: npt.NDArray[np.bool_] = ~(gt | eq) if reverse else gt
    return keep


class _Tx:
    """BEGIN IMMEDIATE .. COMMIT, rolled back on any exception."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
