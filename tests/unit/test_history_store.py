"""The OPC-UA history store: paged reads, gaps, limits (no sockets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from edge.history.store import Gap, HistoryLimits, HistoryStore, Position
from edge.model import InterlockTrip, SampleBatch
from edge.runtime.metrics import Metrics

S = 1_000_000_000


def trip(ts: int) -> InterlockTrip:
    return InterlockTrip(ts_ns=ts, interlock="i", tag="a", condition=">", value=1.0,
                         limit=0.0, action="stop", action_ok=True, reaction_ns=1)


def walk(store: HistoryStore, limit: int, reverse: bool) -> list[tuple[int, float]]:
    got: list[tuple[int, float]] = []
    after = None
    for _ in range(10_000):
        r = store.read_raw("a", 1, 10**12, limit=limit, reverse=reverse, after=after,
                           now_ns=10**12)
        got += list(zip(r.ts_ns.tolist(), r.value.tolist(), strict=True))
        if r.more is None:
            return got
        after = Position.unpack(r.more.pack())
    raise AssertionError("the walk did not end")


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 30)),
                                 min_size=1, max_size=30), min_size=1, max_size=6),
       limit=st.integers(1, 9), reverse=st.booleans())
def test_paged_reads_return_every_point_once_in_order(
        tmp_path_factory: pytest.TempPathFactory, batches: list[list[tuple[int, int]]],
        limit: int, reverse: bool) -> None:
    """Pages walked by continuation points give exactly the one-shot read (every point once,
    time order, equal timestamps and chunks out of time order included), both directions."""
    store = HistoryStore(tmp_path_factory.mktemp("h") / "h.db", now_ns=1)
    ids = store.tag_ids(["a", "b"])
    value = 0.0
    for points in batches:
        tid = [p[0] for p in points]
        ts = [1000 + p[1] * 10 for p in points]
        vals = [value + k for k in range(len(points))]
        value += len(points)
        store.write(SampleBatch(tid, ts, vals), ids, (), now_ns=5000)
    full = store.read_raw("a", 1, 10**12, limit=10**9, now_ns=10**12)
    expected = list(zip(full.ts_ns.tolist(), full.value.tolist(), strict=True))
    assert [t for t, _ in expected] == sorted(t for t, _ in expected)
    got = walk(store, limit, reverse)
    assert got == (expected[::-1] if reverse else expected)
    store.close()


def test_a_restart_leaves_a_gap_marker_between_the_runs(tmp_path: Path) -> None:
    """Data from before and after a downtime is returned, with one gap where the store was
    not recording; the current run covers up to now, and the future is no gap."""
    path = tmp_path / "h.db"
    first = HistoryStore(path, now_ns=10 * S)
    ids = first.tag_ids(["a"])
    first.write(SampleBatch([0, 0], [11 * S, 12 * S], [1.0, 2.0]), ids, (), now_ns=13 * S)
    first.close()
    second = HistoryStore(path, now_ns=20 * S)
    second.write(SampleBatch([0], [21 * S], [3.0]), second.tag_ids(["a"]), (), now_ns=22 * S)
    r = second.read_raw("a", 5 * S, 100 * S, limit=100, now_ns=30 * S)
    assert r.value.tolist() == [1.0, 2.0, 3.0]
    assert r.gaps == [(0, Gap(5 * S, 10 * S)), (2, Gap(13 * S, 20 * S))]
    back = second.read_raw("a", 100 * S, 5 * S, limit=100, reverse=True, now_ns=30 * S)
    assert back.value.tolist() == [3.0, 2.0, 1.0]
    assert back.gaps == [(1, Gap(13 * S, 20 * S)), (3, Gap(5 * S, 10 * S))]
    recs = second.read_records(5 * S, 100 * S, limit=10, now_ns=30 * S)
    assert recs.records == [] and len(recs.gaps) == 2


def test_byte_limit_evicts_oldest_samples_first_counted_and_logged(tmp_path: Path) -> None:
    """Over max_bytes the oldest sample chunks go first and records are kept; each evicted
    point is counted in edge_history_evicted_total and logged, and a read over the evicted
    time says so with a gap."""
    metrics = Metrics()
    store = HistoryStore(tmp_path / "h.db", HistoryLimits(max_bytes=20_000), metrics=metrics,
                         now_ns=1 * S)
    ids = store.tag_ids(["a"])
    with capture_logs() as logs:
        for k in range(20):
            store.write(SampleBatch([0] * 100, (2 + k) * S + np.arange(100), np.ones(100)),
                        ids, [trip((2 + k) * S)], now_ns=(3 + k) * S)
    assert store.bytes <= 20_000
    points, records = store.counts()
    evicted = metrics.snapshot(["edge_history_evicted_total"])
    assert evicted['edge_history_evicted_total{kind="samples",reason="bytes"}'] == 2000 - points
    assert records == 20 and 'edge_history_evicted_total{kind="records",reason="bytes"}' \
        not in evicted
    assert any(e["event"] == "opcua history evicted data" for e in logs)
    r = store.read_raw("a", 2 * S, 30 * S, limit=10_000, now_ns=30 * S)
    assert r.ts_ns.shape[0] == points
    assert r.gaps and r.gaps[0][0] == 0 and r.gaps[0][1].start_ns == 2 * S
    assert r.gaps[0][1].end_ns <= int(r.ts_ns[0])


def test_age_limits_expire_samples_and_records_separately(tmp_path: Path) -> None:
    """Samples older than max_age_s and records older than record_max_age_s are evicted by
    expire(), counted by reason "age"."""
    metrics = Metrics()
    store = HistoryStore(tmp_path / "h.db", HistoryLimits(max_age_s=10, record_max_age_s=100),
                         metrics=metrics, now_ns=1 * S)
    ids = store.tag_ids(["a"])
    store.write(SampleBatch([0, 0], [2 * S, 50 * S], [1.0, 2.0]), ids, [trip(2 * S)],
                now_ns=51 * S)
    assert store.expire(now_ns=55 * S) == {"samples": 0, "records": 0}
    # chunks go whole: the chunk's newest point decides
    assert store.expire(now_ns=61 * S) == {"samples": 2, "records": 0}
    assert store.expire(now_ns=200 * S) == {"samples": 0, "records": 1}
    snap = metrics.snapshot(["edge_history_evicted_total"])
    assert snap['edge_history_evicted_total{kind="samples",reason="age"}'] == 2
    assert snap['edge_history_evicted_total{kind="records",reason="age"}'] == 1


def test_a_foreign_continuation_point_is_refused() -> None:
    """Bytes the store did not hand out are a ValueError, never a position."""
    with pytest.raises(ValueError):
        Position.unpack(b"not a continuation point")
    with pytest.raises(ValueError):
        Position.unpack(b"")
    assert Position.unpack(Position(5, 2, 1).pack()) == Position(5, 2, 1)
