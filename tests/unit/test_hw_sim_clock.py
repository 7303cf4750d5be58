"""SimClock and ticks: faster than real time, exact tick timestamps; truth file format."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hw_sim.clock import SimClock, ticks
from hw_sim.truth import TruthLog, iso_ns, read_truth


async def test_clock_runs_faster_than_real_time() -> None:
    """At speed 100, one simulated second passes in about 10 ms of wall time."""
    clock = SimClock(speed=100.0, start_ns=0)
    t0 = time.monotonic()
    await clock.sleep(1.0)
    assert time.monotonic() - t0 < 0.5
    assert clock.now_ns() >= 1_000_000_000


async def test_ticks_have_exact_timestamps() -> None:
    """Tick k is stamped start + k * dt exactly, whatever the scheduling."""
    clock = SimClock(speed=1000.0, start_ns=5)
    seen = []
    async for k, ts in ticks(clock, 0.1):
        seen.append((k, ts))
        if k == 20:
            break
    assert seen == [(k, 5 + k * 100_000_000) for k in range(21)]


def test_clock_rejects_bad_speed() -> None:
    """A speed of 0 or less is refused."""
    with pytest.raises(ValueError, match="speed"):
        SimClock(speed=0)


def test_truth_is_json_lines_with_kind_source_time(tmp_path: Path) -> None:
    """Each event is one JSON line with kind, source, t_ns and an ISO time with zone."""
    log = TruthLog(tmp_path / "t.jsonl")
    log.emit("stop", "etch", 1_795_255_200_123_000_000, cause="coil")
    log.close()
    (rec,) = read_truth(tmp_path / "t.jsonl")
    assert rec == {
        "kind": "stop",
        "source": "etch",
        "t_ns": 1_795_255_200_123_000_000,
        "t": "2026-11-21T10:00:00.123+00:00",
        "cause": "coil",
    }
    assert iso_ns(0) == "1970-01-01T00:00:00.000+00:00"
