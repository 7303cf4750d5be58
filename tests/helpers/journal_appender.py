"""Subprocess for the crash test: append batches forever, printing each returned seq.

Each batch i holds rows whose values encode (i, row), so a reader can tell a whole batch
from a partial one. A line "<i> <seq>" is printed (and flushed) only after append returned.
Acks move the cursor of sink "s" behind the head, so cursors are exercised too.
"""

from __future__ import annotations

import sys

import numpy as np

from edge.journal import Journal
from edge.model import SampleBatch

ROWS = 200


def make(i: int) -> SampleBatch:
    rows = np.arange(ROWS)
    return SampleBatch(rows % 5, np.full(ROWS, i), i * 1000.0 + rows)


def main() -> None:
    path, start, durability = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    j = Journal(path, sinks=["s"], durability=durability)  # type: ignore[arg-type]
    i = start
    while True:
        [seq] = j.append([make(i)])
        print(i, seq, flush=True)
        if i % 7 == 0:
            j.ack("s", max(0, seq - 20))
            print("ack", max(0, seq - 20), flush=True)
        i += 1


if __name__ == "__main__":
    main()
