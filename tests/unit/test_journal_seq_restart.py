"""Journal seqs never repeat across restarts, even when every entry was delivered."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge.journal import Journal
from edge.model import Quarantine


def _rec(i: int) -> list[Quarantine]:
    return [Quarantine(i, "src", f"reason {i}")]


def test_seq_continues_after_all_entries_were_acked_and_deleted(tmp_path: Path) -> None:
    """A reopened journal whose entries were all delivered hands out seqs past the cursor,
    so new entries are read by the sink and their ids are new (found by the kill -9 chaos
    test: restarting at MAX(seq) of an empty table lost everything appended next)."""
    path = tmp_path / "j.db"
    j = Journal(path, sinks=["mes"])
    assert j.append([_rec(1), _rec(2), _rec(3)]) == [1, 2, 3]
    j.ack("mes", j.head)
    assert j.count() == 0
    j.close()

    j = Journal(path, sinks=["mes"])
    try:
        assert j.append([_rec(4)]) == [4]
        got = j.read("mes").entries
        assert [e.seq for e in got] == [4]
        assert got[0].ids("gw") == ["gw-4-0"]
    finally:
        j.close()


def test_seq_continues_past_dead_letters_and_every_sinks_cursor(tmp_path: Path) -> None:
    """The head is the highest of entries, cursors and dead letters after a reopen."""
    path = tmp_path / "j.db"
    j = Journal(path, sinks=["a", "b"])
    j.append([_rec(i) for i in range(5)])
    for e in j.read("a").entries:
        j.dead_letter("a", e, "refused")
    j.ack("a", 5)
    j.ack("b", 5)
    j.close()
    j = Journal(path, sinks=["a", "b"])
    try:
        assert j.append([_rec(9)]) == [6]
    finally:
        j.close()


class _FullDisk:
    """A connection whose WAL checkpoint fails as on a full disk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql.startswith("PRAGMA wal_checkpoint"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def close(self) -> None:
        self.db.close()


def test_close_survives_a_checkpoint_refused_by_a_full_disk(tmp_path: Path) -> None:
    """close() on a full disk logs and keeps the WAL instead of failing the shutdown
    (found by the disk-full chaos test: the daemon exited 1 with a traceback)."""
    path = tmp_path / "j.db"
    j = Journal(path, sinks=["mes"])
    j.append([_rec(1)])
    j._db = _FullDisk(j._db)  # type: ignore[assignment]
    j.close()
    j = Journal(path, sinks=["mes"])
    try:
        assert [e.seq for e in j.read("mes").entries] == [1]
    finally:
        j.close()
