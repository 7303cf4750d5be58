"""Journal seqs never repeat across restarts, even when every entry was delivered."""

from __future__ import annotations

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
