"""Columnar sample batches.

Invariants: a ``SampleBatch`` holds four equal-length, C-contiguous columns with fixed
dtypes (tag_id int32, ts_ns int64, value float64, quality uint8). Constructors coerce or
raise; nothing downstream re-checks. Per-point work is done on the columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_DTYPES = (np.int32, np.int64, np.float64, np.uint8)
_I32, _I64, _F64, _U8 = np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.float64), \
    np.dtype(np.uint8)
ROW_BYTES = 4 + 8 + 8 + 1


class SampleBatch:
    """Columnar samples: ``tag_id`` int32, ``ts_ns`` int64, ``value`` float64, ``quality`` uint8."""

    __slots__ = ("quality", "tag_id", "ts_ns", "value")

    def __init__(
        self,
        tag_id: npt.ArrayLike,
        ts_ns: npt.ArrayLike,
        value: npt.ArrayLike,
        quality: npt.ArrayLike | None = None,
    ) -> None:
        # Built once per poll by every source: dtypes resolved once, columns checked
        # without a loop (a fast-polling source spent more on this than on its decoding).
        self.tag_id: npt.NDArray[np.int32] = np.ascontiguousarray(tag_id, dtype=_I32)
        self.ts_ns: npt.NDArray[np.int64] = np.ascontiguousarray(ts_ns, dtype=_I64)
        self.value: npt.NDArray[np.float64] = np.ascontiguousarray(value, dtype=_F64)
        n = self.tag_id.shape[0]
        if quality is None:
            self.quality: npt.NDArray[np.uint8] = np.zeros(n, dtype=_U8)
        else:
            self.quality = np.ascontiguousarray(quality, dtype=_U8)
        shape = (n,)
        if self.ts_ns.shape != shape or self.value.shape != shape or self.quality.shape != shape:
            for name in ("ts_ns", "value", "quality"):
                col = getattr(self, name)
                if col.shape != shape:
                    raise ValueError(
                        f"SampleBatch column '{name}' has {col.shape}, expected ({n},)")
        if self.tag_id.ndim != 1:
            raise ValueError("SampleBatch columns must be one-dimensional")

    @classmethod
    def empty(cls) -> SampleBatch:
        return cls(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.float64))

    @classmethod
    def concat(cls, batches: Sequence[SampleBatch]) -> SampleBatch:
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        return cls(
            np.concatenate([b.tag_id for b in batches]),
            np.concatenate([b.ts_ns for b in batches]),
            np.concatenate([b.value for b in batches]),
            np.concatenate([b.quality for b in batches]),
        )

    def __len__(self) -> int:
        return int(self.tag_id.shape[0])

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_] | slice) -> SampleBatch:
        return SampleBatch(
            self.tag_id[index], self.ts_ns[index], self.value[index], self.quality[index]
        )

    @property
    def nbytes(self) -> int:
        return len(self) * ROW_BYTES

    def to_bytes(self) -> bytes:
        """Column-major packing: all tag ids, then timestamps, values, qualities."""
        return b"".join(
            (self.tag_id.tobytes(), self.ts_ns.tobytes(), self.value.tobytes(),
             self.quality.tobytes())
        )

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> SampleBatch:
        if len(data) % ROW_BYTES:
            raise ValueError(f"sample payload of {len(data)} bytes is not a whole number of rows")
        n = len(data) // ROW_BYTES
        buf = memoryview(data)
        o1, o2, o3 = 4 * n, 12 * n, 20 * n
        return cls(
            np.frombuffer(buf[:o1], dtype=np.int32),
            np.frombuffer(buf[o1:o2], dtype=np.int64),
            np.frombuffer(buf[o2:o3], dtype=np.float64),
            np.frombuffer(buf[o3:], dtype=np.uint8),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SampleBatch):
            return NotImplemented
        return (
            np.array_equal(self.tag_id, other.tag_id)
            and np.array_equal(self.ts_ns, other.ts_ns)
            and np.array_equal(self.value, other.value, equal_nan=True)
            and np.array_equal(self.quality, other.quality)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SampleBatch(n={len(self)})"
