"""Waits that a stop always ends.

On Python 3.11 ``asyncio.wait_for`` returns the result and drops the cancellation when
the awaited thing completes in the same loop turn as the cancel (gh-86296, fixed in
3.12): a component that waits for an event in a loop with it (``while True:
wait_for(event.wait(), t)``) can miss its stop and run forever. ``asyncio.timeout`` has
no such window; every bounded wait on an event in a loop goes through ``wait_event``.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set (True) or ``timeout_s`` passed (False); a cancel
    always propagates."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(0.0, timeout_s)):
            await event.wait()
    except TimeoutError:
        return False
    return True
