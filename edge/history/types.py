"""The history store's value types and its chunk format.

A chunk is one tag's points of one flush: ``POINT`` records (time since the previous
point of the chunk, the first since the epoch; value; quality), 17 bytes each, packed.
A chunk need not be in time order: reads sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt

from edge.model import Record


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
