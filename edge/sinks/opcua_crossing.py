"""The condition board as the threaded OPC-UA server sees it (``opcua_thread``).

The board (``edge.runtime.conditions``) lives on the gateway's main event loop and is not
thread-safe; the threaded server runs on its own thread and loop. ``BoardAcrossThreads``
offers the board's interface to the server (``opcua_alarms.Board``) and runs every call
on the main loop.

Invariants:

* Nothing of the board is touched from the server thread: subscribing, unsubscribing,
  reading and every operator action run on the main loop (``call_soon_threadsafe``,
  ``run_coroutine_threadsafe``). What crosses back is the board's own immutable
  ``ConditionState`` snapshots and ``Outcome`` answers.
* A change reaches the server in the board's order: the board calls the forwarding
  listener on the main loop, which hands the snapshot to the server loop
  (``call_soon_threadsafe`` keeps the order). ``conditions()`` runs after the subscription
  (both are queued on the main loop in that order), so no change falls between the
  snapshot and the first forwarded change.
* Every wait is bounded. ``conditions()`` (at server start-up only) blocks the server
  thread at most ``READ_TIMEOUT_S`` and then raises ``TimeoutError`` (the server does not
  start; the supervisor retries it). An operator action waits at most
  ``ACTION_TIMEOUT_S`` without blocking the server loop, then raises ``TimeoutError``
  (the OPC-UA answer is BadTimeout); the action is not cancelled (an acknowledge or a
  reset half done is worse than a late one): it completes on the main loop, keeps its
  audit record, and its late outcome is logged.
* A main loop that is closed (the daemon stopping) raises ``BoardUnavailable``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

from edge.runtime.conditions import ConditionBoard, ConditionState, Outcome
from edge.sinks.opcua_board import BoardUnavailable

log = structlog.get_logger("edge.opcua")

READ_TIMEOUT_S = 10.0
ACTION_TIMEOUT_S = 15.0  # above the board's audit wait (2 s) plus a device's reset answer
T = TypeVar("T")


class BoardAcrossThreads:
    """``board`` (on ``main``'s loop) for a server on another thread and loop."""

    def __init__(self, board: ConditionBoard) -> None:
        self.board = board
        self.main: asyncio.AbstractEventLoop | None = None  # set by the threaded sink's run

    def _main(self) -> asyncio.AbstractEventLoop:
        main = self.main
        if main is None or main.is_closed():
            raise BoardUnavailable("the gateway's main loop is not running")
        return main

    # ------------------------------------------------------------------ reading

    def subscribe(self, listener: Callable[[ConditionState], None]) -> Callable[[], None]:
        """On the server loop: ``listener`` gets every change there, in the board's order."""
        server = asyncio.get_running_loop()
        main = self._main()
        handle: list[Callable[[], None]] = []

        def forward(state: ConditionState) -> None:  # main loop
            with contextlib.suppress(RuntimeError):  # the server loop closed: it is gone
                server.call_soon_threadsafe(listener, state)

        main.call_soon_threadsafe(lambda: handle.append(self.board.subscribe(forward)))

        def unsubscribe() -> None:
            def off() -> None:  # main loop
                while handle:
                    with contextlib.suppress(ValueError):
                        handle.pop()()
            with contextlib.suppress(RuntimeError):  # the main loop closed: nothing listens
                main.call_soon_threadsafe(off)

        return unsubscribe

    def conditions(self) -> list[ConditionState]:
        """Every condition now (blocks the calling thread at most ``READ_TIMEOUT_S``)."""
        fut: concurrent.futures.Future[list[ConditionState]] = concurrent.futures.Future()

        def read() -> None:  # main loop
            try:
                fut.set_result(self.board.conditions())
            except BaseException as exc:
                fut.set_exception(exc)

        try:
            self._main().call_soon_threadsafe(read)
        except RuntimeError as exc:
            raise BoardUnavailable(str(exc)) from None
        try:
            return fut.result(timeout=READ_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the condition board did not answer in {READ_TIMEOUT_S} s"
                               ) from None

    # ------------------------------------------------------------------ operator actions

    async def acknowledge(self, cid: str, *, origin: str, user: str,
                          comment: str = "") -> Outcome:
        return await self._act(f"acknowledge {cid}", lambda: self.board.acknowledge(
            cid, origin=origin, user=user, comment=comment))

    async def confirm(self, cid: str, *, origin: str, user: str, comment: str = "") -> Outcome:
        return await self._act(f"confirm {cid}", lambda: self.board.confirm(
            cid, origin=origin, user=user, comment=comment))

    async def reset(self, interlock: str, *, origin: str, user: str,
                    comment: str = "") -> Outcome:
        return await self._act(f"reset {interlock}", lambda: self.board.reset(
            interlock, origin=origin, user=user, comment=comment))

    async def _act(self, what: str,
                   make: Callable[[], Coroutine[Any, Any, Outcome]]) -> Outcome:
        main = self._main()

        async def on_main() -> Outcome:  # the board's coroutine is made on its own loop
            return await make()

        coro = on_main()
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, main)
        except RuntimeError as exc:
            coro.close()
            raise BoardUnavailable(str(exc)) from None
        waiter = asyncio.wrap_future(fut)
        done, _ = await asyncio.wait([waiter], timeout=ACTION_TIMEOUT_S)
        if done:
            return waiter.result()
        log.warning("opcua operator action: no answer from the gateway in time; it goes on "
                    "there, the client was answered BadTimeout", action=what,
                    timeout_s=ACTION_TIMEOUT_S)
        waiter.add_done_callback(lambda f: _late(what, f))
        raise TimeoutError(f"{what}: no answer in {ACTION_TIMEOUT_S} s")


def _late(what: str, fut: asyncio.Future[Outcome]) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        log.error("opcua operator action failed after its timeout", action=what,
                  error=repr(exc))
    else:
        out = fut.result()
        log.warning("opcua operator action finished after its timeout", action=what,
                    ok=out.ok, detail=out.detail)
