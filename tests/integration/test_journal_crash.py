"""kill -9 at random moments: every returned append survives whole and exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge.journal import Journal

HELPER = Path(__file__).resolve().parents[1] / "helpers" / "journal_appender.py"
CYCLES = 50


@pytest.mark.parametrize("durability", ["process-crash"])
def test_sigkill_cycles_lose_nothing_returned(tmp_path: Path, durability: str) -> None:
    """50 SIGKILLs at random moments: every batch whose append returned is present exactly
    once and whole, no partial batch exists, and the acked cursor never goes back."""
    db = tmp_path / "j.db"
    rng = random.Random(1234)
    returned: dict[int, int] = {}  # batch i -> seq
    acked_max = 0
    next_i = 0
    env = {**os.environ, "PYTHONPATH": str(HELPER.parents[2])}
    for _ in range(CYCLES):
        proc = subprocess.Popen(
            [sys.executable, str(HELPER), str(db), str(next_i), durability],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        assert proc.stdout is not None
        # Wait for a random number of returned appends (bounded), then kill mid-flight.
        want = rng.randint(1, 40)
        seen = 0
        deadline = time.monotonic() + 30
        while seen < want and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            a, b = line.split()
            if a == "ack":
                acked_max = max(acked_max, int(b))
            else:
                returned[int(a)] = int(b)
                seen += 1
        time.sleep(rng.random() * 0.01)  # land the kill at a random point of the next append
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
        lines = rest.splitlines()
        if lines and not rest.endswith("\n"):
            lines.pop()  # a line cut by the kill says nothing reliable
        for line in lines:  # lines flushed before the kill also count
            if len(line.split()) != 2:
                continue
            a, b = line.split()
            if a == "ack":
                acked_max = max(acked_max, int(b))
            else:
                returned[int(a)] = int(b)
        assert seen > 0, "the appender did not start"
        next_i = max(returned) + 1 if returned else 0

    j = Journal(db, sinks=["s"])
    try:
        cursor = j.cursor("s")
        assert cursor >= acked_max, "an acked cursor went backwards"
        stored = {e.seq: e for e in j.entries(after=0, limit=10**6)}
        seen_batches: set[int] = set()
        for entry in stored.values():
            b = entry.samples()
            i = int(b.ts_ns[0])
            assert len(b) == 200 and np.all(b.ts_ns == i), "partial or mixed batch"
            assert np.array_equal(b.value, i * 1000.0 + np.arange(200)), "torn payload"
            assert i not in seen_batches, f"batch {i} stored twice"
            seen_batches.add(i)
        for i, seq in returned.items():
            if seq > cursor:
                assert seq in stored, f"batch {i} (seq {seq}) returned but lost"
                assert int(stored[seq].samples().ts_ns[0]) == i
    finally:
        j.close()
