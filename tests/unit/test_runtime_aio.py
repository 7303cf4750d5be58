"""A component's loop that waits on an event always ends when it is stopped."""

from __future__ import annotations

import asyncio

import pytest

from edge.runtime.aio import wait_event


async def _loop(event: asyncio.Event) -> None:
    while True:
        await wait_event(event, 10.0)
        event.clear()


@pytest.mark.asyncio
@pytest.mark.parametrize("turns", [0, 1, 2])
async def test_a_stop_that_meets_a_wake_up_still_stops_the_loop(turns: int) -> None:
    """The event is set in the same loop turn as the cancel (or a turn or two before):
    the loop ends. With ``asyncio.wait_for`` on Python 3.11 it went on waiting."""
    event = asyncio.Event()
    task = asyncio.create_task(_loop(event))
    for _ in range(3):
        await asyncio.sleep(0)
    event.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), 2.0)
    assert task.cancelled()


@pytest.mark.asyncio
async def test_wait_event_says_whether_the_event_came() -> None:
    """True when set (at once if already set), False after the timeout."""
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 0.0) is True
