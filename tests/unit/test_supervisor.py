"""Supervision: a crashing component restarts with backoff while the others keep running."""

from __future__ import annotations

import asyncio
import time

from edge.runtime.supervisor import Supervisor


async def wait_for(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_crashing_component_restarts_and_others_keep_running() -> None:
    """A component that raises is restarted; a neighbour's progress never stops."""
    sup = Supervisor(initial_backoff_s=0.01, max_backoff_s=0.05)
    runs = 0
    ticks = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.005)
        raise RuntimeError("boom")

    async def steady() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.002)

    sup.add("flaky", flaky)
    sup.add("steady", steady)
    await wait_for(lambda: runs >= 4)
    before = ticks
    await wait_for(lambda: ticks > before + 5)
    st = sup.states()
    assert st["flaky"]["restarts"] >= 3 and "boom" in str(st["flaky"]["last_error"])
    assert st["steady"]["running"] and st["steady"]["restarts"] == 0
    assert await sup.stop(time.monotonic() + 2)


async def test_stop_cancels_in_reverse_order() -> None:
    """stop() cancels the last added component first (sinks outlive sources)."""
    sup = Supervisor()
    order: list[str] = []

    def make(name: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                order.append(name)
        return run

    for name in ("journal", "sink", "source"):
        sup.add(name, make(name))
    await asyncio.sleep(0.01)
    assert await sup.stop(time.monotonic() + 2)
    assert order == ["source", "sink", "journal"]


async def test_checks_gate_health() -> None:
    """healthy() is false while any progress check reports a problem."""
    sup = Supervisor()
    problem: list[str | None] = [None]
    sup.add_check("journal", lambda: problem[0])
    assert sup.healthy() == (True, [])
    problem[0] = "stuck"
    assert sup.healthy() == (False, ["journal: stuck"])


async def test_a_component_stuck_in_a_blocking_call_shows_and_stops_the_watchdog() -> None:
    """A component stuck in one worker-thread call longer than stall_timeout_s is named
    in healthy()'s problems and in states() (status), and healthy again once it returns."""
    import threading

    from edge.runtime import progress

    sup = Supervisor(stall_timeout_s=0.2)
    release = threading.Event()
    entered = threading.Event()

    def hang() -> None:
        entered.set()
        release.wait(10)

    async def reader() -> None:
        await progress.blocking("read /drop/pipe.csv", hang)
        await asyncio.Event().wait()

    sup.add("source:cmm1", reader)
    try:
        await wait_for(entered.is_set)
        assert sup.healthy()[0]  # busy, not yet stuck
        await wait_for(lambda: not sup.healthy()[0])
        ok, problems = sup.healthy()
        assert not ok and len(problems) == 1
        assert problems[0].startswith("source:cmm1: stuck in read /drop/pipe.csv for ")
        assert sup.states()["source:cmm1"]["stuck"].startswith("read /drop/pipe.csv")
    finally:
        release.set()
    await wait_for(lambda: sup.healthy()[0])
    assert sup.states()["source:cmm1"]["stuck"] == ""
    await sup.stop(time.monotonic() + 1.0)
