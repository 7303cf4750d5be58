"""The rows of a file already accepted, kept as 64-bit hashes the garbage collector never
walks.

Why not a ``set[bytes]``: a daily file of 100,000 rows held ~10 MB of row bytes per file,
and every full garbage collection walked every entry of every such set with the GIL held
(50-180 ms with 80 bulk files in the pipeline bench), stalling the event loop and the
interlock fast lane alike.

Invariants:

* ``line in rows`` is True for every line added (no false negatives). A false positive
  needs two different lines of one file with the same 64-bit hash (about 3e-6 for ten
  million rows); such a line would be quarantined as a duplicate, never dropped silently.
* Python's ``hash`` of bytes is salted per process: the set lives in memory only and is
  rebuilt from the file after a restart.
* At most ``MERGE_AT`` hashes sit in the Python set the collector sees; the rest are in a
  sorted numpy array.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np
import numpy.typing as npt

MERGE_AT = 2048


class SeenRows(Protocol):
    """What the CSV parser needs of the rows already accepted (a ``set`` will do)."""

    def __contains__(self, line: object, /) -> bool: ...

    def add(self, line: bytes, /) -> None: ...


class RowSet:
    def __init__(self) -> None:
        self._recent: set[int] = set()
        self._sorted: npt.NDArray[np.int64] = np.empty(0, np.int64)

    def __contains__(self, line: object) -> bool:
        h = hash(line)
        if h in self._recent:
            return True
        arr = self._sorted
        i = int(np.searchsorted(arr, h))
        return i < arr.shape[0] and int(arr[i]) == h

    def add(self, line: bytes) -> None:
        self._recent.add(hash(line))
        if len(self._recent) >= MERGE_AT:
            self._merge()

    def update(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            self.add(line)

    def __len__(self) -> int:
        self._merge()
        return int(self._sorted.shape[0])

    def _merge(self) -> None:
        if self._recent:
            fresh = np.fromiter(self._recent, np.int64, len(self._recent))
            self._sorted = np.union1d(self._sorted, fresh)
            self._recent.clear()
