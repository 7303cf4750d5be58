"""Journal semantics: append, read, ack, evict, dead letters, limits, cursors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.journal import Journal
from edge.model import HealthAlert, Quarantine, SampleBatch
from edge.runtime.metrics import Metrics


def batch(n: int, start: int = 0) -> SampleBatch:
    idx = np.arange(start, start + n)
    return SampleBatch(idx % 7, idx * 1000, idx.astype(np.float64))


def rec(i: int) -> Quarantine:
    return Quarantine(ts_ns=i, source="test", reason=f"r{i}")


def open_journal(path: Path, **kw: object) -> Journal:
    return Journal(path / "j.db", **kw)  # type: ignore[arg-type]


def test_append_read_ack_deletes_below_lowest_cursor(tmp_path: Path) -> None:
    """Two sinks read independently; rows go only when both have acked them."""
    j = open_journal(tmp_path, sinks=["mes", "influx"])
    seqs = j.append([batch(10), [rec(1), rec(2)], batch(5, 10)])
    assert seqs == [1, 2, 3]
    got = j.read("influx")
    assert [e.seq for e in got.entries] == [1, 2, 3] and got.upto == 3
    assert got.entries[0].samples() == batch(10)
    assert got.entries[1].records() == [rec(1), rec(2)]
    j.ack("influx", 3)
    assert j.count() == 3, "mes has not acked: nothing may be deleted"
    assert [e.seq for e in j.read("mes").entries] == [1, 2, 3]
    j.ack("mes", 2)
    assert [e.seq for e in j.entries()] == [3]
    j.ack("mes", 1)  # never backwards
    assert j.cursor("mes") == 2
    j.close()


def test_kind_filter_moves_cursor_past_skipped_kinds(tmp_path: Path) -> None:
    """A records-only sink skips samples and its cursor still advances past them."""
    j = open_journal(tmp_path, sinks=["mes"])
    j.append([batch(3), batch(3), [rec(1)], batch(3)])
    got = j.read("mes", kinds=("records",))
    assert [e.seq for e in got.entries] == [3]
    assert got.upto == 4
    j.ack("mes", got.upto)
    assert j.count() == 0
    j.close()


def test_read_limits_entries_and_points(tmp_path: Path) -> None:
    """read() returns at most max_entries and max_points, but always at least one entry."""
    j = open_journal(tmp_path, sinks=["s"])
    j.append([batch(100) for _ in range(5)])
    assert len(j.read("s", max_entries=2).entries) == 2
    got = j.read("s", max_points=250)
    assert [e.seq for e in got.entries] == [1, 2] and got.upto == 2
    assert len(j.read("s", max_points=10).entries) == 1
    j.close()


def test_byte_limit_evicts_oldest_samples_first_and_keeps_records(tmp_path: Path) -> None:
    """Over the byte limit, oldest samples go first; records stay; eviction is counted."""
    m = Metrics()
    one = batch(1000).nbytes
    j = open_journal(tmp_path, sinks=["s"], max_bytes=int(one * 3.5), metrics=m)
    j.append([[rec(0)]])
    for i in range(6):
        j.append([batch(1000, i * 1000)])
    kinds = [(e.seq, e.kind) for e in j.entries()]
    assert kinds[0] == (1, "records"), "the record must be kept"
    sample_seqs = [s for s, k in kinds if k == "samples"]
    assert sample_seqs == sorted(sample_seqs) and sample_seqs[-1] == 7
    assert sample_seqs[0] > 2, "oldest samples must be the ones evicted"
    evicted = m.snapshot()['edge_journal_evicted_total{kind="samples",reason="bytes"}']
    assert evicted == 1000 * (6 - len(sample_seqs))
    assert m.snapshot()["edge_journal_evicted_undelivered_total"] == evicted
    assert j.bytes <= j.max_bytes
    j.close()


def test_records_evicted_only_when_no_samples_left(tmp_path: Path) -> None:
    """When only records remain and the limit is still exceeded, the oldest records go."""
    j = open_journal(tmp_path, sinks=["s"], max_bytes=2000)
    for i in range(40):
        j.append([[rec(i)]])
    left = [e.records()[0].ts_ns for e in j.entries(limit=100)]
    assert left == sorted(left) and left[-1] == 39 and left[0] > 0
    j.close()


def test_age_limits_per_kind(tmp_path: Path) -> None:
    """Samples expire after max_age_s, records after record_max_age_s."""
    j = open_journal(tmp_path, sinks=["s"], max_age_s=10, record_max_age_s=100)
    j.append([batch(5), [rec(1)]])
    now = j.entries()[0].ts_ns
    assert not j.expire(now + 5 * 10**9)
    ev = j.expire(now + 50 * 10**9)
    assert ev.points["samples"] == 5 and ev.points["records"] == 0
    ev = j.expire(now + 500 * 10**9)
    assert ev.points["records"] == 1 and j.count() == 0
    j.close()


def test_dead_letters_keep_payload_and_replay(tmp_path: Path) -> None:
    """A dead letter keeps the payload and reason; replay appends it as a new entry."""
    j = open_journal(tmp_path, sinks=["mes"])
    j.append([[rec(1), rec(2)]])
    entry = j.read("mes").entries[0]
    j.dead_letter("mes", entry, "HTTP 422", '{"error": "bad"}')
    j.ack("mes", entry.seq)
    [dl] = j.dead_letters()
    assert (dl.sink, dl.seq, dl.count, dl.reason) == ("mes", 1, 2, "HTTP 422")
    assert j.replay_dead_letters([dl.id]) == [2]
    assert j.dead_letters() == []
    assert j.read("mes").entries[0].records() == [rec(1), rec(2)]
    j.close()


def test_stats_per_sink(tmp_path: Path) -> None:
    """Stats give depth, bytes and oldest unsent age per sink, independently."""
    j = open_journal(tmp_path, sinks=["a", "b"])
    j.append([batch(10), batch(20)])
    now = j.entries()[0].ts_ns + 3 * 10**9
    j.ack("a", 1)
    st = j.stats(now)
    assert st["a"].depth_points == 20 and st["b"].depth_points == 30
    assert st["b"].oldest_unsent_age_s == pytest.approx(3.0, abs=0.1)
    assert st["a"].depth_bytes > 20 * 21
    j.ack("a", 2)
    assert j.stats(now)["a"].depth_points == 0 and j.stats(now)["a"].oldest_unsent_age_s == 0
    j.close()


def test_reopen_keeps_data_cursors_and_seq(tmp_path: Path) -> None:
    """Reopening continues the seqs and keeps cursors; a new sink gets the backlog."""
    j = open_journal(tmp_path, sinks=["a"])
    j.append([batch(1), batch(1), batch(1)])
    j.ack("a", 1)
    j.close()
    j = open_journal(tmp_path, sinks=["a", "b"])
    assert j.cursor("a") == 1 and j.cursor("b") == 1
    assert j.append([batch(1)]) == [4]
    assert [e.seq for e in j.read("b").entries] == [2, 3, 4]
    j.close()


def test_kinds_no_sink_takes_are_not_kept(tmp_path: Path) -> None:
    """With no durable sink nothing is stored; entries left from an earlier config that
    no sink takes any more are released when the journal opens."""
    j = open_journal(tmp_path, sinks=["s"])
    j.append([batch(3), [rec(1)]])
    j.close()
    j = open_journal(tmp_path, sinks={"mes": ["records"]})
    assert [e.kind for e in j.entries()] == ["records"], "old samples released on open"
    assert j.append([batch(3)]) == [0] and j.count() == 1
    j.close()
    j = open_journal(tmp_path)
    assert j.append([batch(3), [rec(2)]]) == [0, 0] and j.count() == 0
    j.close()


def test_a_dead_records_sink_does_not_hold_samples(tmp_path: Path) -> None:
    """While the MES (records) is down, samples InfluxDB acked are deleted; the MES keeps
    its records; depth per sink counts only what that sink takes."""
    j = open_journal(tmp_path, sinks={"mes": ["records"], "influx": ["samples", "records"]})
    for i in range(10):
        j.append([batch(100), [rec(i)]])
    got = j.read("influx", max_entries=1000)
    j.ack("influx", got.upto)
    assert {e.kind for e in j.entries(limit=100)} == {"records"}
    st = j.stats()
    assert st["mes"].depth_points == 10 and st["influx"].depth_points == 0
    got = j.read("mes", kinds=("records",))
    assert len(got.entries) == 10
    j.ack("mes", got.upto)
    assert j.count() == 0
    j.close()


def test_checkpoint_commits_with_the_data(tmp_path: Path) -> None:
    """A checkpoint is stored in the same transaction as the data; the last one wins."""
    j = open_journal(tmp_path, sinks=["s"])
    assert j.checkpoint("file:cmm") is None
    j.append([batch(2)], {"file:cmm": b"offset=10"})
    j.append([], {"file:cmm": b"offset=20"})
    assert j.checkpoint("file:cmm") == b"offset=20"
    j.close()
    j = open_journal(tmp_path, sinks=["s"])
    assert j.checkpoint("file:cmm") == b"offset=20" and j.count() == 1
    j.close()


async def test_writer_groups_checkpoint_only_submissions(tmp_path: Path) -> None:
    """The writer commits items and checkpoints together; a checkpoint alone commits too."""
    import asyncio

    from edge.journal import JournalWriter

    w = JournalWriter(open_journal(tmp_path, sinks=["s"]), commit_interval_s=0.001)
    task = asyncio.create_task(w.run())
    f1 = w.submit(batch(3), ("k", b"1"))
    f2 = w.submit(None, ("k", b"2"))
    assert await f1 == 1 and await f2 == 0
    assert await w.checkpoint("k") == b"2"
    await w.close()
    task.cancel()


def test_numpy_scalars_in_records_are_stored_as_numbers(tmp_path: Path) -> None:
    """A stage that leaves numpy scalars in a record (health, SPC limits) still gets it
    stored; it reads back as plain numbers."""
    j = open_journal(tmp_path, sinks=["mes"])
    alert = HealthAlert(ts_ns=1, motor="m1", health=np.float64(0.4), ttf_s=np.float64(90.0),
                        reason="health below 0.5")
    assert j.append([[alert]]) == [1]
    (got,) = j.read("mes").entries[0].records()
    assert isinstance(got, HealthAlert)
    assert (got.health, got.ttf_s) == (0.4, 90.0) and type(got.health) is float
    j.close()


def test_an_unencodable_record_never_wedges_the_journal(tmp_path: Path) -> None:
    """A record that cannot be encoded is logged and counted; the rest of its batch and
    the batches beside it are stored in the same append."""
    metrics = Metrics()
    j = open_journal(tmp_path, sinks=["mes"], metrics=metrics)
    broken = Quarantine(ts_ns=2, source="test", reason=object())  # type: ignore[arg-type]
    seqs = j.append([[rec(1), broken, rec(3)], batch(4), [broken]])
    assert seqs[0] > 0 and seqs[1] > 0 and seqs[2] == 0
    got = j.read("mes").entries
    assert got[0].records() == [rec(1), rec(3)]
    assert got[1].samples() == batch(4)
    snap = metrics.snapshot(["edge_journal_unstorable_records_total"])
    assert snap["edge_journal_unstorable_records_total"] == 2
    j.close()


def test_samples_too_big_for_the_limit_never_push_records_out(tmp_path: Path) -> None:
    """An append of more samples than the whole byte limit evicts the stored samples but
    no record (seen in the kill -9 soak: a 60k-sample CSV drop against a 1 MB journal
    evicted measurements); the oversized samples go first at the next append."""
    one = batch(1000).nbytes
    j = open_journal(tmp_path, sinks=["s"], max_bytes=int(one * 2.5))
    j.append([[rec(1), rec(2)]])
    j.append([batch(1000)])
    j.append([batch(3000, 1000)])  # alone bigger than the limit
    kinds = [e.kind for e in j.entries()]
    assert kinds == ["records", "samples"], kinds
    assert [len(e.samples()) for e in j.entries() if e.kind == "samples"] == [3000]
    j.append([batch(1000, 4000)])
    assert [(e.kind, e.count) for e in j.entries()] == [("records", 2), ("samples", 1000)]
    assert j.bytes <= j.max_bytes
    j.close()


async def test_writer_applies_age_limits_by_itself(tmp_path: Path) -> None:
    """The journal writer expires entries past their age limit on its own schedule (no
    status board involved); records live by their own, longer limit."""
    import asyncio

    from edge.journal import JournalWriter

    j = open_journal(tmp_path, sinks=["s"], max_age_s=0.05, record_max_age_s=1e9)
    w = JournalWriter(j, commit_interval_s=0.001, expire_interval_s=0.01)
    task = asyncio.create_task(w.run())
    await w.append(batch(5))
    await w.append([rec(1)])
    deadline = asyncio.get_running_loop().time() + 5
    while j.count() != 1:
        assert asyncio.get_running_loop().time() < deadline, "old samples never expired"
        await asyncio.sleep(0.01)
    assert [e.kind for e in j.entries()] == ["records"]
    await w.close()
    task.cancel()
