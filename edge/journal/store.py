"""The journal: a crash-safe store-and-forward buffer on SQLite (WAL).

Guarantees, in order of importance:

1. **Atomic appends.** ``append(items)`` writes every item in one transaction. After it
   returns, each item is stored whole and exactly once; a crash before the commit
   leaves none of them (SQLite rolls the torn WAL tail back on the next open).
2. **Durability by setting.** ``process-crash`` (synchronous=NORMAL): a committed
   append survives a crash of this process. ``power-loss`` (synchronous=FULL): it also
   survives losing power, at the cost of an fsync per commit.
3. **One entry per batch.** A ``SampleBatch`` is one row (packed columns), a list of
   records is one row (msgpack). Ids are ``<gateway>-<seq>-<index>`` and never change.
4. **One cursor per durable sink.** A sink reads entries after its cursor and moves it
   with ``ack``. Cursors never move backwards. An entry is deleted once every sink that
   takes its kind (samples, records) has acked it; a kind no sink takes is not stored.
   A sink that is slow or dead holds back only the deletion of what it takes (a dead
   MES keeps records, not the samples InfluxDB already has), never another sink.
5. **Limits in bytes and age, records kept longest.** Over ``max_bytes`` the oldest
   sample entries are evicted first; records go only when no samples are left, and only
   to make room for newer records: an append of more samples than the limit holds goes
   over it by those samples (the first to go at the next append), never into the
   records. Samples
   older than ``max_age_s`` and records older than ``record_max_age_s`` are evicted.
   Every evicted point is counted (``edge_journal_evicted_total``) and logged, with how
   many of them no sink had delivered yet. Nothing is dropped silently.
6. **Checkpoints commit with the data.** ``append(items, checkpoints)`` stores a source's
   resume position (e.g. the file source's byte offsets) in the same transaction as the
   data read up to it: after a crash a source resumes exactly where the journal ends,
   neither re-reading nor skipping.
7. **Dead letters.** A payload a peer rejects as invalid is copied to ``dead_letters``
   with the sink, its ids and the reason, then acked, so it never blocks the queue.
8. **Private files.** ``journal.db`` and its ``-wal``/``-shm`` are never readable by
   other users, whatever the umask (``edge.runtime.private``).

Threading: a ``Journal`` is used from one thread at a time (``JournalWriter`` runs it on
its own single worker thread). It holds no Python-level locks.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import structlog

from edge.journal.entries import (
    _KIND_CODE,
    _KIND_NAME,
    KIND_RECORDS,
    KIND_SAMPLES,
    DeadLetter,
    Durability,
    Entry,
    Eviction,
    Kind,
    ReadResult,
    SinkStats,
    _dead_letters,
)
from edge.model import Record, SampleBatch, encode_records
from edge.runtime.metrics import Metrics
from edge.runtime.private import file_mode, narrow, private_dir, private_file
from edge.runtime.sqlite_tx import Transaction

log = structlog.get_logger("edge.journal")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    n INTEGER NOT NULL,
    nbytes INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_kind_seq ON entries (kind, seq);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, acked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    sink TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    dead_ts_ns INTEGER NOT NULL,
    n INTEGER NOT NULL,
    reason TEXT NOT NULL,
    body TEXT NOT NULL,
    payload BLOB NOT NULL
);
"""

# Per-row overhead SQLite adds on top of the payload (header, key, index entry).
_ROW_OVERHEAD = 48


class Journal:
    """SQLite-backed journal. See the module docstring for what it guarantees."""

    def __init__(
        self,
        path: str | Path,
        *,
        sinks: Sequence[str] | Mapping[str, Sequence[Kind]] = (),
        durability: Durability = "process-crash",
        max_bytes: int = 1 << 30,
        max_age_s: float = 7 * 86400.0,
        record_max_age_s: float = 30 * 86400.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.path = Path(path)
        self.durability = durability
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.record_max_age_s = record_max_age_s
        self.sinks = list(sinks)
        all_kinds = (KIND_SAMPLES, KIND_RECORDS)
        self._takes: dict[str, frozenset[int]] = {
            s: frozenset(_KIND_CODE[k] for k in sinks[s]) if isinstance(sinks, Mapping)
            else frozenset(all_kinds)
            for s in self.sinks
        }
        self._claimed = frozenset().union(*self._takes.values())
        private_dir(self.path.parent, ours=False)
        private_file(self.path)  # SQLite gives -wal and -shm the database file's mode
        for sidecar in ("-wal", "-shm"):
            narrow(self.path.with_name(self.path.name + sidecar), file_mode(self.path.parent))
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        sync = "FULL" if durability == "power-loss" else "NORMAL"
        self._db.execute(f"PRAGMA synchronous={sync}")
        self._db.execute("PRAGMA wal_autocheckpoint=4000")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
        )
        self._bytes = self._db.execute(
            "SELECT COALESCE(SUM(nbytes), 0) + COUNT(*) * ? FROM entries", (_ROW_OVERHEAD,)
        ).fetchone()[0]
        # Seqs never repeat: with every entry delivered and deleted, the cursors (and the
        # dead letters) still know the last seq handed out. Restarting at MAX(entries)
        # would hand out seqs at or below a cursor: never read, deleted, ids reused.
        self._head = self._db.execute(
            "SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM entries), "
            "(SELECT COALESCE(MAX(acked), 0) FROM cursors), "
            "(SELECT COALESCE(MAX(seq), 0) FROM dead_letters))"
        ).fetchone()[0]
        # A sink added later starts at the oldest stored entry: it gets the backlog.
        for sink in self.sinks:
            self._db.execute(
                "INSERT OR IGNORE INTO cursors(sink, acked) VALUES (?, "
                "(SELECT COALESCE(MIN(seq), 1) - 1 FROM entries))",
                (sink,),
            )
        self._db.execute(
            f"DELETE FROM cursors WHERE sink NOT IN ({','.join('?' * len(self.sinks))})",
            self.sinks,
        )
        self._cursors: dict[str, int] = dict(
            self._db.execute("SELECT sink, acked FROM cursors").fetchall()
        )
        self._deleted: dict[int, int] = {}
        m = metrics or Metrics()
        self._m_appended = m.counter(
            "edge_journal_appended_total", "Points appended to the journal", ["kind"]
        )
        self._m_unstorable = m.counter(
            "edge_journal_unstorable_records_total",
            "Records a stage built that could not be encoded (logged in full instead)",
        )
        self._m_evicted = m.counter(
            "edge_journal_evicted_total", "Points evicted from the journal by its limits",
            ["kind", "reason"],
        )
        self._m_evicted_undelivered = m.counter(
            "edge_journal_evicted_undelivered_total",
            "Evicted points that at least one sink had not delivered",
        )
        self._m_dead = m.counter(
            "edge_journal_dead_letters_total", "Entries moved to dead letters", ["sink"]
        )
        self._m_bytes = m.gauge("edge_journal_bytes", "Bytes held by journal entries")
        self._m_bytes.set(self._bytes)
        self._closed = False
        self.release_unclaimed()

    # ----------------------------------------------------------------- writing

    def append(
        self,
        items: Sequence[SampleBatch | Sequence[Record]],
        checkpoints: Mapping[str, bytes] | None = None,
    ) -> list[int]:
        """Store every item, and the checkpoints, in one transaction; return the items'
        seqs. Empty items are skipped (their seq is 0)."""
        now = time.time_ns()
        rows: list[tuple[int, int, int, int, bytes]] = []
        seqs: list[int] = []
        added = 0
        counts = {"samples": 0, "records": 0}
        seq = self._head
        for item in items:
            if isinstance(item, SampleBatch):
                if not len(item) or KIND_SAMPLES not in self._claimed:
                    seqs.append(0)
                    continue
                kind, n, payload = KIND_SAMPLES, len(item), item.to_bytes()
            else:
                if not item or KIND_RECORDS not in self._claimed:
                    seqs.append(0)
                    continue
                n, payload = self._encode_records(item)
                kind = KIND_RECORDS
                if not n:
                    seqs.append(0)
                    continue
            seq += 1
            rows.append((seq, kind, now, n, payload))
            seqs.append(seq)
            added += len(payload) + _ROW_OVERHEAD
            counts[_KIND_NAME[kind]] += n
        if not rows and not checkpoints:
            return seqs
        evicted = None
        if self._bytes + added > self.max_bytes:
            in_records = sum(len(p) + _ROW_OVERHEAD for _, k, _, _, p in rows
                             if k == KIND_RECORDS)
            evicted = self._make_room(added, in_records)
        with self._tx():
            self._db.executemany(
                "INSERT INTO entries(seq, kind, ts_ns, n, nbytes, payload) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(s, k, t, n, len(p), p) for s, k, t, n, p in rows],
            )
            if checkpoints:
                self._db.executemany(
                    "INSERT OR REPLACE INTO checkpoints(key, value) VALUES (?, ?)",
                    list(checkpoints.items()),
                )
        self._head = seq
        self._bytes += added
        self._m_bytes.set(self._bytes)
        for kind_name, n in counts.items():
            if n:
                self._m_appended.labels(kind_name).inc(n)
        if evicted:
            self._report_eviction(evicted, "bytes")
        return seqs

    def _encode_records(self, records: Sequence[Record]) -> tuple[int, bytes]:
        """How many records are stored, and their payload. A record that cannot be
        encoded (a bug in the stage that built it) is logged whole and counted instead of
        wedging the journal; the others in its batch are kept."""
        try:
            return len(records), encode_records(records)
        except (TypeError, ValueError, OverflowError):
            good: list[Record] = []
            for rec in records:
                try:
                    encode_records([rec])
                except (TypeError, ValueError, OverflowError) as exc:
                    self._m_unstorable.inc()
                    log.error("record cannot be stored: logged here instead",
                              record=repr(rec), error=str(exc))
                else:
                    good.append(rec)
            return len(good), encode_records(good)

    def _make_room(self, incoming: int, incoming_records: int) -> Eviction:
        """Evict oldest samples until ``incoming`` bytes fit; then oldest records, but only
        as far as the incoming records need: samples never push records out. An append
        whose samples do not fit even beside the records alone goes over the limit by
        those samples, which are the first to go at the next append."""
        ev = Eviction()
        for kind, target in ((KIND_SAMPLES, self.max_bytes - incoming),
                             (KIND_RECORDS, self.max_bytes - incoming_records)):
            while self._bytes > target:
                rows = self._db.execute(
                    "SELECT seq, n, nbytes FROM entries WHERE kind = ? ORDER BY seq LIMIT 64",
                    (kind,),
                ).fetchall()
                if not rows:
                    break
                chosen: list[tuple[int, int, int]] = []
                freed = 0
                for row in rows:
                    chosen.append(row)
                    freed += row[2] + _ROW_OVERHEAD
                    if self._bytes - freed <= target:
                        break
                self._delete_entries(chosen, _KIND_NAME[kind], ev)
        return ev

    def _delete_entries(self, rows: Sequence[tuple[int, int, int]], kind: Kind,
                        ev: Eviction) -> None:
        lowest = min(self._cursors.values(), default=self._head)
        with self._tx():
            self._db.executemany("DELETE FROM entries WHERE seq = ?", [(r[0],) for r in rows])
        for seq, n, nbytes in rows:
            self._bytes -= nbytes + _ROW_OVERHEAD
            ev.entries += 1
            ev.points[kind] += n
            if seq > lowest:
                ev.undelivered += n
        self._m_bytes.set(self._bytes)

    def _report_eviction(self, ev: Eviction, reason: str) -> None:
        for kind, n in ev.points.items():
            if n:
                self._m_evicted.labels(kind, reason).inc(n)
        if ev.undelivered:
            self._m_evicted_undelivered.inc(ev.undelivered)
        log.warning(
            "journal evicted data",
            reason=reason,
            entries=ev.entries,
            samples=ev.points["samples"],
            records=ev.points["records"],
            undelivered_points=ev.undelivered,
            max_bytes=self.max_bytes,
        )

    def expire(self, now_ns: int | None = None) -> Eviction:
        """Apply the age limits. Called periodically by the runtime."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        ev = Eviction()
        limits = ((KIND_SAMPLES, self.max_age_s), (KIND_RECORDS, self.record_max_age_s))
        for kind, max_age in limits:
            cutoff = now_ns - int(max_age * 1e9)
            rows = self._db.execute(
                "SELECT seq, n, nbytes FROM entries WHERE kind = ? AND ts_ns < ? ORDER BY seq",
                (kind, cutoff),
            ).fetchall()
            if rows:
                self._delete_entries(rows, _KIND_NAME[kind], ev)
        if ev:
            self._report_eviction(ev, "age")
        return ev

    # ----------------------------------------------------------------- reading

    def read(
        self,
        sink: str,
        *,
        max_entries: int = 64,
        max_points: int = 50_000,
        kinds: Iterable[Kind] = ("samples", "records"),
    ) -> ReadResult:
        """Entries after the sink's cursor, oldest first, at least one if any exist."""
        acked = self._cursor(sink)
        codes = sorted(_KIND_CODE[k] for k in kinds)
        rows = self._db.execute(
            f"SELECT seq, kind, ts_ns, n, payload FROM entries WHERE seq > ? "
            f"AND kind IN ({','.join('?' * len(codes))}) ORDER BY seq LIMIT ?",
            (acked, *codes, max_entries),
        ).fetchall()
        entries: list[Entry] = []
        points = 0
        for seq, kind, ts_ns, n, payload in rows:
            if entries and points + n > max_points:
                return ReadResult(entries, entries[-1].seq)
            entries.append(Entry(seq, _KIND_NAME[kind], ts_ns, n, payload))
            points += n
        if len(rows) < max_entries:
            return ReadResult(entries, max(self._head, acked))
        return ReadResult(entries, entries[-1].seq)

    def ack(self, sink: str, upto: int) -> None:
        """Move the sink's cursor to ``upto`` (never backwards) and delete what every
        sink has delivered."""
        acked = self._cursor(sink)
        if upto <= acked:
            return
        upto = min(upto, self._head)
        self._cursors[sink] = upto
        with self._tx():
            self._db.execute("UPDATE cursors SET acked = ? WHERE sink = ?", (upto, sink))
            for kind in self._takes[sink]:
                lowest = min(c for s, c in self._cursors.items() if kind in self._takes[s])
                if lowest <= self._deleted.get(kind, -1):
                    continue
                freed = self._db.execute(
                    "SELECT COALESCE(SUM(nbytes), 0), COUNT(*) FROM entries "
                    "WHERE kind = ? AND seq <= ?",
                    (kind, lowest),
                ).fetchone()
                if freed[1]:
                    self._db.execute("DELETE FROM entries WHERE kind = ? AND seq <= ?",
                                     (kind, lowest))
                    self._bytes -= freed[0] + freed[1] * _ROW_OVERHEAD
                self._deleted[kind] = lowest
        self._m_bytes.set(self._bytes)

    def checkpoint(self, key: str) -> bytes | None:
        """The last committed checkpoint stored under ``key``."""
        row = self._db.execute("SELECT value FROM checkpoints WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def release_unclaimed(self) -> int:
        """Drop stored entries of kinds no configured sink takes (left from an earlier
        configuration): nothing would ever read them. Returns the entries removed."""
        unclaimed = [k for k in (KIND_SAMPLES, KIND_RECORDS) if k not in self._claimed]
        if not unclaimed:
            return 0
        marks = ",".join("?" * len(unclaimed))
        n, nbytes = self._db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM entries WHERE kind IN ({marks})",
            unclaimed,
        ).fetchone()
        if n:
            with self._tx():
                self._db.execute(f"DELETE FROM entries WHERE kind IN ({marks})", unclaimed)
            self._bytes -= nbytes + n * _ROW_OVERHEAD
            self._m_bytes.set(self._bytes)
        return int(n)

    def cursor(self, sink: str) -> int:
        """The last seq the sink acked."""
        return self._cursor(sink)

    def _cursor(self, sink: str) -> int:
        try:
            return self._cursors[sink]
        except KeyError:
            raise KeyError(f"journal has no cursor for sink '{sink}'") from None

    # ----------------------------------------------------------------- dead letters

    def dead_letter(self, sink: str, entry: Entry, reason: str, body: str = "") -> int:
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO dead_letters(sink, seq, kind, ts_ns, dead_ts_ns, n, reason, body, "
                "payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sink, entry.seq, _KIND_CODE[entry.kind], entry.ts_ns, time.time_ns(),
                 entry.count, reason, body[:65536], entry.payload),
            )
        self._m_dead.labels(sink).inc()
        log.error(
            "payload moved to dead letters", sink=sink, seq=entry.seq, kind=entry.kind,
            count=entry.count, reason=reason,
        )
        return int(cur.lastrowid or 0)

    def dead_letters(self, sink: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        return _dead_letters(self._db, sink, limit)

    def replay_dead_letters(self, ids: Sequence[int]) -> list[int]:
        """Append the dead letters' payloads again as new entries (new seqs, so new ids:
        a fixed peer sees them as new data) and remove them from the table."""
        seqs: list[int] = []
        for dl in [d for d in self.dead_letters(limit=1 << 30) if d.id in set(ids)]:
            entry = Entry(dl.seq, dl.kind, dl.ts_ns, dl.count, dl.payload)
            item: SampleBatch | list[Record] = (
                entry.samples() if dl.kind == "samples" else entry.records()
            )
            seqs.extend(self.append([item]))
            with self._tx():
                self._db.execute("DELETE FROM dead_letters WHERE id = ?", (dl.id,))
        return seqs

    # ----------------------------------------------------------------- stats

    def stats(self, now_ns: int | None = None) -> dict[str, SinkStats]:
        now_ns = time.time_ns() if now_ns is None else now_ns
        out: dict[str, SinkStats] = {}
        for sink, acked in self._cursors.items():
            kinds = sorted(self._takes.get(sink, ()))
            cnt, pts, nbytes, oldest = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(n), 0), COALESCE(SUM(nbytes), 0), MIN(ts_ns) "
                f"FROM entries WHERE seq > ? AND kind IN ({','.join('?' * len(kinds))})",
                (acked, *kinds),
            ).fetchone()
            age = 0.0 if oldest is None else max(0.0, (now_ns - oldest) / 1e9)
            out[sink] = SinkStats(sink, acked, cnt, pts, nbytes + cnt * _ROW_OVERHEAD, age)
        return out

    @property
    def head(self) -> int:
        return int(self._head)

    @property
    def bytes(self) -> int:
        return int(self._bytes)

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def entries(self, after: int = 0, limit: int = 1000) -> list[Entry]:
        rows = self._db.execute(
            "SELECT seq, kind, ts_ns, n, payload FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        return [Entry(r[0], _KIND_NAME[r[1]], r[2], r[3], r[4]) for r in rows]

    # ----------------------------------------------------------------- plumbing

    def _tx(self) -> Transaction:
        return Transaction(self._db)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.OperationalError as exc:
                # A full disk refuses the checkpoint; the WAL keeps every commit and is
                # replayed on the next open, so closing must not fail the shutdown.
                log.warning("journal checkpoint at close failed; the WAL is kept",
                            path=str(self.path), error=str(exc))
            finally:
                self._db.close()
