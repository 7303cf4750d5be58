"""The condition board seen from the threaded OPC-UA server (edge.sinks.opcua_crossing)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from asyncua import ua

from edge.model import HealthAlert
from edge.runtime.conditions import ConditionBoard, ConditionState, Declared, Outcome
from edge.sinks import opcua_crossing
from edge.sinks.opcua_board import BoardUnavailable, answer
from edge.sinks.opcua_crossing import BoardAcrossThreads

T = TypeVar("T")
MOTOR = "health:m1"


def board(journal: Callable[[Any], Awaitable[None]]) -> ConditionBoard:
    return ConditionBoard([Declared("health", "m1", "off_normal", "m1/health", 600)],
                          journal=journal)


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@contextmanager
def server_thread() -> Iterator[Callable[[Awaitable[T]], T]]:
    """A loop on its own thread (the server's); yields "run this there and wait"."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Awaitable[T]) -> T:
        async def wrap() -> T:
            return await coro
        return asyncio.run_coroutine_threadsafe(wrap(), loop).result(timeout=30)

    try:
        yield run
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def alert(ts: int) -> HealthAlert:
    return HealthAlert(ts_ns=ts, motor="m1", health=0.4, ttf_s=60.0, reason="health low")


async def test_changes_and_actions_cross_to_the_board_on_the_main_loop() -> None:
    """From the server thread: the snapshot and every later change arrive in the board's
    order, an acknowledge runs on the main loop (its outcome and audit there), and after
    unsubscribing nothing more arrives."""
    main_thread = threading.get_ident()
    seen: list[ConditionState] = []
    audit_threads: list[int] = []

    async def journal(records: Any) -> None:
        audit_threads.append(threading.get_ident())

    b = board(journal)
    proxy = BoardAcrossThreads(b)
    proxy.main = asyncio.get_running_loop()
    with server_thread() as on_server:
        async def subscribe() -> tuple[Callable[[], None], list[ConditionState]]:
            off = proxy.subscribe(seen.append)
            return off, await asyncio.to_thread(proxy.conditions)

        off, snapshot = await asyncio.to_thread(on_server, subscribe())
        assert [c.id for c in snapshot] == [MOTOR] and not snapshot[0].active
        b.observe([alert(1)])
        out = await asyncio.to_thread(on_server, proxy.acknowledge(
            MOTOR, origin="opcua", user="op", comment="seen"))
        assert out.ok and audit_threads == [main_thread]
        await until(lambda: len(seen) >= 2)
        assert [(c.active, c.acked) for c in seen] == [(True, False), (True, True)]
        await asyncio.to_thread(on_server, _call(off))
        await until(lambda: not b._listeners)


async def _call(fn: Callable[[], None]) -> None:
    fn()


async def test_an_action_without_answer_is_bad_timeout_and_still_completes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator action the main loop does not answer in time is BadTimeout for the
    client, is not cancelled (it completes, with its outcome), and a closed main loop is
    BadShutdown."""
    monkeypatch.setattr(opcua_crossing, "ACTION_TIMEOUT_S", 0.2)
    done = asyncio.Event()

    async def slow_journal(records: Any) -> None:
        await asyncio.sleep(0.6)  # a journal slower than the client may wait
        done.set()

    b = board(slow_journal)
    proxy = BoardAcrossThreads(b)
    proxy.main = asyncio.get_running_loop()
    b.observe([alert(1)])
    with server_thread() as on_server:
        code = await asyncio.to_thread(on_server, answer(proxy.acknowledge(
            MOTOR, origin="opcua", user="op")))
        assert code == ua.StatusCode(ua.StatusCodes.BadTimeout)
        await asyncio.wait_for(done.wait(), 10)
        state = b.get(MOTOR)
        assert state is not None and state.acked

        closed = asyncio.new_event_loop()
        closed.close()
        proxy.main = closed
        code = await asyncio.to_thread(on_server, answer(proxy.confirm(
            MOTOR, origin="opcua", user="op")))
        assert code == ua.StatusCode(ua.StatusCodes.BadShutdown)
        with pytest.raises(BoardUnavailable):
            proxy.conditions()


def test_the_outcome_of_a_refusal_keeps_its_status() -> None:
    """A refusal crossing threads keeps the standard status code of its reason."""
    async def refused() -> Outcome:
        return Outcome(False, "already", "already_acked")
    assert asyncio.run(answer(refused())) == ua.StatusCode(
        ua.StatusCodes.BadConditionBranchAlreadyAcked)
