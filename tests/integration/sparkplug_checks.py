"""Named checks of what a Sparkplug primary host received from one edge node, each named
after the Sparkplug 3.0 assertion it keeps (``tck-id-...``), or after the gateway's own
store-and-forward promise. Each takes the host's messages in arrival order (kind and
decoded payload, as ``test_sparkplug_sink.Msg``) and raises AssertionError naming the
check and the message that broke it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any, Protocol


class Msg(Protocol):
    kind: str
    payload: dict[str, Any]


def _bdseq(m: Msg) -> int:
    return int(next(x for x in m.payload["metrics"] if x.get("name") == "bdSeq")["value"])


def _sessions(seen: Sequence[Msg]) -> list[list[Msg]]:
    """Each NBIRTH and the node's messages after it up to the next NBIRTH (no NDEATH)."""
    out: list[list[Msg]] = []
    for m in seen:
        if m.kind == "NBIRTH":
            out.append([m])
        elif out and m.kind in ("DBIRTH", "DDATA", "NDATA"):
            out[-1].append(m)
    return out


def tck_id_payloads_nbirth_seq(seen: Sequence[Msg]) -> None:
    """Every NBIRTH has seq 0."""
    for m in seen:
        if m.kind == "NBIRTH":
            assert int(m.payload["seq"]) == 0, ("tck-id-payloads-nbirth-seq", m)


def tck_id_payloads_sequence_num_incrementing(seen: Sequence[Msg]) -> None:
    """After an NBIRTH every DBIRTH, NDATA and DDATA takes the next seq, 255 -> 0."""
    for session in _sessions(seen):
        for prev, m in pairwise(session):
            assert int(m.payload["seq"]) == (int(prev.payload["seq"]) + 1) % 256, (
                "tck-id-payloads-sequence-num-incrementing", prev.payload["seq"], m)


def tck_id_payloads_ndeath_seq(seen: Sequence[Msg]) -> None:
    """An NDEATH carries no seq."""
    for m in seen:
        if m.kind == "NDEATH":
            assert m.payload.get("seq") is None, ("tck-id-payloads-ndeath-seq", m)


def tck_id_payloads_nbirth_bdseq(seen: Sequence[Msg]) -> None:
    """Every NBIRTH carries a bdSeq metric (Int64, 0..255)."""
    for m in seen:
        if m.kind == "NBIRTH":
            b = next(x for x in m.payload["metrics"] if x.get("name") == "bdSeq")
            assert b["type"] == "Int64" and 0 <= int(b["value"]) <= 255, (
                "tck-id-payloads-nbirth-bdseq", m)


def tck_id_payloads_ndeath_bdseq(seen: Sequence[Msg]) -> None:
    """A session replaced by a new connection's birth (another bdSeq) was ended by an
    NDEATH carrying its own NBIRTH's bdSeq (the Will, or the clean NDEATH), so the host
    can tell it from the new one; a rebirth keeps its bdSeq and needs none."""
    births = [(i, _bdseq(m)) for i, m in enumerate(seen) if m.kind == "NBIRTH"]
    deaths = [(i, _bdseq(m)) for i, m in enumerate(seen) if m.kind == "NDEATH"]
    for (i, bd), (_, nxt) in pairwise(births):
        if nxt != bd:
            assert any(j > i and d == bd for j, d in deaths), (
                "tck-id-payloads-ndeath-bdseq: no NDEATH for the session with bdSeq", bd)


def tck_id_topics_nbirth_bdseq_increment(seen: Sequence[Msg],
                                         stale: Iterable[int] = ()) -> None:
    """Each new connection's NBIRTH has a higher bdSeq (mod 256) than the previous one;
    connects that failed before a birth may have taken the values in between. ``stale``:
    indexes (among the births) of a restart from a restored, older bdSeq file."""
    bds = [_bdseq(m) for m in seen if m.kind == "NBIRTH"]
    skip = set(stale)
    for k, (prev, bd) in enumerate(pairwise(bds), start=1):
        if k in skip or bd == prev:  # a rebirth keeps it
            continue
        assert 0 < (bd - prev) % 256 < 64, ("tck-id-topics-nbirth-bdseq-increment", prev, bd)


def tck_id_message_flow_edge_node_birth_publish_will_message_payload_bdseq(
        wills: Sequence[int], stale: Iterable[int] = ()) -> None:
    """The bdSeq in the Will of each CONNECT packet the broker received (``wills``, in
    order, as a tap in front of the broker saw them) is the previous one plus one, 255 ->
    0: an attempt refused before its CONNECT takes no value (the TCK's broker-side check,
    also tck-id-topics-nbirth-bdseq-increment). ``stale``: indexes of CONNECTs after a
    restart from a restored, older bdSeq file."""
    skip = set(stale)
    for k, (prev, bd) in enumerate(pairwise(wills), start=1):
        if k not in skip:
            assert bd == (prev + 1) % 256, (
                "tck-id-message-flow-edge-node-birth-publish-will-message-payload-bdSeq",
                k, prev, bd)


def tck_id_topics_nbirth_bdseq_matching(seen: Sequence[Msg], wills: Sequence[int]) -> None:
    """Each NBIRTH carries the bdSeq of a CONNECT's Will, births in the order of their
    CONNECTs (a rebirth repeats the current one)."""
    at = 0
    for bd in (_bdseq(m) for m in seen if m.kind == "NBIRTH"):
        assert bd in wills[at:], ("tck-id-topics-nbirth-bdseq-matching", bd, wills[at:])
        at += list(wills[at:]).index(bd)


def values(seen: Sequence[Msg], alias: str) -> list[tuple[float, bool]]:
    """(value, historical) of every DDATA metric with this alias, in arrival order."""
    return [(float(m["value"]), bool(m.get("isHistorical")))
            for msg in seen if msg.kind == "DDATA"
            for m in msg.payload["metrics"] if m.get("alias") == alias]


def every_value_at_least_once(seen: Sequence[Msg], alias: str,
                              committed: Iterable[float]) -> None:
    """Store-and-forward: every value the gateway committed reached the host."""
    missing = set(committed) - {v for v, _ in values(seen, alias)}
    assert not missing, ("every-value-at-least-once: missing", sorted(missing)[:20])


def exactly_once_outside_historical(seen: Sequence[Msg], alias: str) -> None:
    """A value arrives live (not historical) at most once; repeats are marked historical."""
    live = [v for v, hist in values(seen, alias) if not hist]
    assert len(live) == len(set(live)), ("exactly-once-outside-historical",
                                         sorted(v for v in set(live) if live.count(v) > 1))


def in_order_per_metric(seen: Sequence[Msg], alias: str) -> None:
    """Live values arrive in the order they were made; so does each session's replay."""
    live = [v for v, hist in values(seen, alias) if not hist]
    assert live == sorted(live), ("in-order-per-metric: live", live)
    for session in _sessions(seen):
        hist = [v for v, h in values(session, alias) if h]
        assert hist == sorted(hist), ("in-order-per-metric: replay", hist)


def all_checks(seen: Sequence[Msg], alias: str, committed: Iterable[float],
               stale: Iterable[int] = (), wills: Sequence[int] | None = None,
               stale_connects: Iterable[int] = ()) -> None:
    """Every check; the CONNECT ones when the Wills' bdSeqs were tapped (``wills``)."""
    if wills is not None:
        tck_id_message_flow_edge_node_birth_publish_will_message_payload_bdseq(
            wills, stale_connects)
        tck_id_topics_nbirth_bdseq_matching(seen, wills)
    tck_id_payloads_nbirth_seq(seen)
    tck_id_payloads_sequence_num_incrementing(seen)
    tck_id_payloads_ndeath_seq(seen)
    tck_id_payloads_nbirth_bdseq(seen)
    tck_id_payloads_ndeath_bdseq(seen)
    tck_id_topics_nbirth_bdseq_increment(seen, stale)
    every_value_at_least_once(seen, alias, committed)
    exactly_once_outside_historical(seen, alias)
    in_order_per_metric(seen, alias)
