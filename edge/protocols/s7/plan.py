"""Which S7 reads cover a set of tags (pure).

``plan_reads`` merges tags of one area (and data block) into as few reads as possible,
like ``edge.protocols.modbus.plan`` does for registers. Invariants (checked in the
tests): every tag's bytes lie inside exactly one read of its area; no read is longer
than ``max_bytes`` (what one answer PDU carries: the negotiated PDU size minus 18
bytes of headers); two tags are read together only when the bytes between them are at
most ``max_gap``, so a sparse map does not drag kilobytes of unused bytes over the wire;
reads are sorted by area, DB and start. Greedy by start byte is optimal for this covering
problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge.protocols.s7.address import AREAS, Area

READ_OVERHEAD = 18  # response header 12 + parameters 2 + data item header 4


def max_read_bytes(pdu_size: int) -> int:
    """Bytes one read answer carries at the negotiated PDU size."""
    if pdu_size < READ_OVERHEAD + 8:
        raise ValueError(f"PDU size {pdu_size} cannot carry a read of 8 bytes")
    return pdu_size - READ_OVERHEAD


@dataclass(frozen=True, slots=True)
class TagRef:
    index: int  # position in the caller's tag list
    area: Area
    db: int
    start: int  # first byte
    size: int  # bytes


@dataclass(frozen=True, slots=True)
class ReadRequest:
    area: Area
    db: int
    start: int
    size: int
    members: tuple[int, ...]  # indices of the tags it carries, by start byte


def plan_reads(tags: Sequence[TagRef], max_bytes: int, max_gap: int = 32) -> list[ReadRequest]:
    """The fewest reads covering ``tags``; ValueError if a tag is longer than one read."""
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    out: list[ReadRequest] = []
    order = {a: i for i, a in enumerate(AREAS)}
    ordered = sorted(tags, key=lambda t: (order[t.area], t.db, t.start, t.size, t.index))
    key: tuple[Area, int] | None = None
    start = end = 0
    members: list[int] = []
    for t in ordered:
        if t.size > max_bytes:
            raise ValueError(f"tag #{t.index} spans {t.size} bytes, more than the {max_bytes} "
                             "one read carries at this PDU size")
        t_end = t.start + t.size
        if members and key == (t.area, t.db) and t.start - end <= max_gap \
                and max(end, t_end) - start <= max_bytes:
            end = max(end, t_end)
            members.append(t.index)
            continue
        if members and key is not None:
            out.append(ReadRequest(key[0], key[1], start, end - start, tuple(members)))
        key, start, end, members = (t.area, t.db), t.start, t_end, [t.index]
    if members and key is not None:
        out.append(ReadRequest(key[0], key[1], start, end - start, tuple(members)))
    return out
