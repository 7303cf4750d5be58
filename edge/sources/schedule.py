"""The poll schedule of the polling sources (Modbus TCP, a Modbus RTU bus, S7).

Invariants: poll k is due at ``t0 + k * interval`` (no drift); a poll that ends late
skips the ticks that passed while it ran (no burst to catch up) and counts them in
``edge_source_missed_polls_total{source}``.
"""

from __future__ import annotations

import asyncio
import math

from prometheus_client import Counter

from edge.runtime.metrics import Metrics


def next_tick(k: int, t0: float, interval: float, now: float) -> tuple[int, int]:
    """The tick to poll after poll ``k`` ended at ``now``, and how many ticks it skipped.

    Tick k is due at ``t0 + k * interval``; a tick that passed while poll k ran is
    skipped (no burst to catch up, no drift): the next poll waits for the next tick.
    """
    nxt = k + 1
    if t0 + nxt * interval <= now:
        nxt = math.floor((now - t0) / interval) + 1
    return nxt, nxt - k - 1


def missed_polls(metrics: Metrics, source: str) -> Counter:
    """The source's count of skipped ticks."""
    return metrics.counter(
        "edge_source_missed_polls_total", "Poll ticks skipped because a poll ran late",
        ["source"],
    ).labels(source)


async def wait_next(k: int, t0: float, interval: float, missed: Counter) -> int:
    """After poll ``k``: count the ticks it overran, sleep until the next tick, return it.
    When late there is no sleep: the reads themselves yield to the loop."""
    loop = asyncio.get_running_loop()
    k, skipped = next_tick(k, t0, interval, loop.time())
    if skipped:
        missed.inc(skipped)
    delay = t0 + k * interval - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
    return k
