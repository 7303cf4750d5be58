"""Simulated time.

`SimClock` maps wall time to simulated time at a fixed `speed` (2.0 = twice real
time). `ticks()` yields a fixed-step tick sequence on that clock: tick k is due at
`start_ns + k * dt`, and its timestamp is exactly that, never the wall time at
which it ran. A late loop catches up by yielding the overdue ticks back to back,
so the data of a run does not depend on scheduling jitter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator


class SimClock:
    """Simulated clock running `speed` times faster than the wall clock."""

    def __init__(self, speed: float = 1.0, start_ns: int | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be > 0, got {speed}")
        self.speed = float(speed)
        self.start_ns = time.time_ns() if start_ns is None else int(start_ns)
        self._mono0 = time.monotonic_ns()

    def now_ns(self) -> int:
        """Simulated time now, in ns since the epoch."""
        return self.start_ns + int((time.monotonic_ns() - self._mono0) * self.speed)

    def elapsed_s(self) -> float:
        """Simulated seconds since the clock started."""
        return (self.now_ns() - self.start_ns) / 1e9

    async def sleep(self, sim_seconds: float) -> None:
        """Sleep for `sim_seconds` of simulated time."""
        await asyncio.sleep(max(0.0, sim_seconds) / self.speed)

    async def sleep_until(self, sim_ns: int) -> None:
        """Sleep until simulated time `sim_ns` (returns at once if it has passed)."""
        delta = sim_ns - self.now_ns()
        if delta > 0:
            await self.sleep(delta / 1e9)


async def ticks(clock: SimClock, dt_s: float) -> AsyncIterator[tuple[int, int]]:
    """Yield `(k, ts_ns)` for k = 0, 1, 2, ... when tick k is due on `clock`."""
    if not dt_s > 0:
        raise ValueError(f"tick length must be > 0, got {dt_s}")
    dt_ns = round(dt_s * 1e9)
    k = 0
    while True:
        due = clock.start_ns + k * dt_ns
        if due > clock.now_ns():
            await clock.sleep_until(due)
        else:
            await asyncio.sleep(0)  # catching up: still let other tasks run
        yield k, due
        k += 1
