"""The journal's value types: entries, read results, stats, dead letters, evictions.

Kinds are stored as small integers (``KIND_SAMPLES``, ``KIND_RECORDS``) and shown by
name. ``read_dead_letters`` opens a journal file read-only: it is what operator tools
use when the daemon is not running, and it can change nothing.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from edge.model import Record, SampleBatch, decode_records, item_id

Durability = Literal["process-crash", "power-loss"]
Kind = Literal["samples", "records"]
KIND_SAMPLES = 0
KIND_RECORDS = 1
_KIND_CODE: dict[str, int] = {"samples": KIND_SAMPLES, "records": KIND_RECORDS}
_KIND_NAME: dict[int, Kind] = {KIND_SAMPLES: "samples", KIND_RECORDS: "records"}


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored batch. ``payload`` decodes with ``samples()`` or ``records()``."""

    seq: int
    kind: Kind
    ts_ns: int
    count: int
    payload: bytes

    def samples(self) -> SampleBatch:
        if self.kind != "samples":
            raise TypeError(f"entry {self.seq} holds {self.kind}, not samples")
        return SampleBatch.from_bytes(self.payload)

    def records(self) -> list[Record]:
        if self.kind != "records":
            raise TypeError(f"entry {self.seq} holds {self.kind}, not records")
        return decode_records(self.payload)

    def ids(self, gateway_id: str) -> list[str]:
        return [item_id(gateway_id, self.seq, i) for i in range(self.count)]


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Entries for a sink, and the seq its cursor may move to once they are delivered.

    ``upto`` can lie past the last entry when the sink skips kinds it does not take.
    """

    entries: list[Entry]
    upto: int


@dataclass(frozen=True, slots=True)
class SinkStats:
    sink: str
    acked: int
    depth_entries: int
    depth_points: int
    depth_bytes: int
    oldest_unsent_age_s: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    sink: str
    seq: int
    kind: Kind
    ts_ns: int
    dead_ts_ns: int
    count: int
    reason: str
    body: str
    payload: bytes

    def to_doc(self, *, items: bool) -> dict[str, Any]:
        """JSON-ready view for operators; ``items`` adds the decoded payload."""
        doc: dict[str, Any] = {
            "id": self.id, "sink": self.sink, "seq": self.seq, "kind": self.kind,
            "count": self.count, "ts_ns": self.ts_ns, "dead_ts_ns": self.dead_ts_ns,
            "reason": self.reason, "body": self.body,
        }
        if items:
            entry = Entry(self.seq, self.kind, self.ts_ns, self.count, self.payload)
            if self.kind == "records":
                doc["items"] = [msgspec.to_builtins(r) for r in entry.records()]
            else:
                b = entry.samples()
                doc["items"] = {
                    "tag_id": b.tag_id.tolist(), "ts_ns": b.ts_ns.tolist(),
                    "value": [None if v != v else v for v in b.value.tolist()],
                    "quality": b.quality.tolist(),
                }
        return doc


@dataclass(slots=True)
class Eviction:
    entries: int = 0
    points: dict[str, int] = field(default_factory=lambda: {"samples": 0, "records": 0})
    undelivered: int = 0

    def __bool__(self) -> bool:
        return self.entries > 0


def _dead_letters(db: sqlite3.Connection, sink: str | None, limit: int) -> list[DeadLetter]:
    q = "SELECT id, sink, seq, kind, ts_ns, dead_ts_ns, n, reason, body, payload FROM dead_letters"
    args: tuple[object, ...] = ()
    if sink is not None:
        q += " WHERE sink = ?"
        args = (sink,)
    rows = db.execute(q + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
    return [
        DeadLetter(r[0], r[1], r[2], _KIND_NAME[r[3]], r[4], r[5], r[6], r[7], r[8], r[9])
        for r in rows
    ]


def read_dead_letters(path: Path, sink: str | None = None,
                      limit: int = 100_000) -> list[DeadLetter]:
    """Dead letters of a journal file, read-only: safe for operator tools, changes nothing."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        return _dead_letters(db, sink, limit)
    finally:
        db.close()
