"""The OPC-UA server on its own thread and event loop (``[[sinks]] threaded = true``).

Why (BENCHMARKS.md, "OPC-UA server with many clients"): asyncua builds and encodes each
publish response for a subscribed client in one go on its event loop, thousands of
notifications at a time; on the gateway's main loop that held everything else (journal
hand-off, live sinks, status, interlocks on derived tags) for tens of milliseconds per
client and second. On its own thread, the server's Python work is interleaved with the
main thread at the interpreter's switch interval (0.1 ms in the daemon, ``edge.app``).

Invariants:

* ``publish`` (main loop) only appends the batch reference to a queue and, if none is
  scheduled, schedules one drain on the server loop; the sink's own ``publish``
  (coalescing into its arrays, feeding the history) runs on the server thread. Batches
  are not changed after they are published (the flow hands them on and forgets them).
* The queue is bounded (``MAX_PENDING`` batches): past it, the oldest sample batches are
  dropped (the live values coalesce to the latest anyway), their records kept; counted in
  ``edge_opcua_handoff_dropped_total`` and logged once per drain.
* What the server calls back into the gateway runs on the main loop, never on the server
  thread: the status document (the server thread waits for it, at most
  ``CALL_TIMEOUT_S``; then no status this round, and logged) and the condition board
  (``opcua_crossing.BoardAcrossThreads``: Alarms & Conditions, Acknowledge, Confirm,
  Reset, ConditionRefresh, each wait bounded). The history feed is the server's own: fed
  and read on the server thread.
* ``started`` mirrors the sink's on the main loop. Cancelling ``run`` stops the server
  (its own ``finally``) and joins the thread; an exception of the server's ``run`` is
  raised by ``run`` (the supervisor restarts the sink as before).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from edge.components import BuildContext, Hooks
from edge.model import Record, SampleBatch
from edge.runtime.statusdoc import StatusDoc
from edge.sinks.opcua_crossing import BoardAcrossThreads

if TYPE_CHECKING:
    from edge.sinks.opcua import OpcUaSink

log = structlog.get_logger("edge.opcua")

MAX_PENDING = 4096
CALL_TIMEOUT_S = 2.0
T = TypeVar("T")


class ThreadedOpcUaSink:
    """An ``OpcUaSink`` run on its own thread; the same live-sink interface."""

    def __init__(self, make: Callable[[BuildContext, BoardAcrossThreads | None], OpcUaSink],
                 ctx: BuildContext) -> None:
        self._main: asyncio.AbstractEventLoop | None = None
        self._outer = ctx.hooks
        board = ctx.hooks.conditions
        self.board = BoardAcrossThreads(board) if board is not None else None
        self.inner = make(dataclasses.replace(ctx, hooks=Hooks(status=self._status)),
                          self.board)
        self.name = self.inner.name
        self.endpoint = self.inner.endpoint
        self.ctx = ctx
        self.started = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: deque[tuple[SampleBatch, Sequence[Record]]] = deque()
        self._scheduled = False
        self._dropped = 0
        self._m_dropped = ctx.metrics.counter(
            "edge_opcua_handoff_dropped_total",
            "Sample batches dropped between the main loop and the OPC-UA server thread")

    def __getattr__(self, name: str) -> Any:  # server, idx, ... of the sink it runs
        return getattr(self.inner, name)

    # ------------------------------------------------------------------ main loop

    def publish(self, batch: SampleBatch, records: Sequence[Record]) -> None:
        pending = self._pending
        pending.append((batch, records))
        if len(pending) > MAX_PENDING:
            old, recs = pending.popleft()
            self._dropped += len(old)
            if recs:
                pending.appendleft((SampleBatch.empty(), recs))
        loop = self._loop
        if loop is not None and not self._scheduled:
            self._scheduled = True
            try:
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the server loop closed: the next run takes them
                self._scheduled = False

    async def run(self) -> None:
        self._main = asyncio.get_running_loop()
        if self.board is not None:
            self.board.main = self._main
        loop = asyncio.new_event_loop()
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        task = loop.create_task(self._serve())
        self._loop = loop
        self._scheduled = False

        def target() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(task)
                done.set_result(None)
            except BaseException as exc:  # reported to run() on the main loop
                done.set_exception(exc)
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=target, name=f"opcua-{self.name}", daemon=True)
        thread.start()
        if self._pending:
            self.publish(SampleBatch.empty(), ())  # what came before the loop existed
        # Shielded: cancelling run() must not cancel ``done`` (the thread sets it) but stop
        # the server on its own loop, and wait for that.
        outcome = asyncio.wrap_future(done)
        try:
            await asyncio.shield(outcome)
        finally:
            self.started.clear()
            self._loop = None
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(task.cancel)
            await asyncio.wait([outcome], timeout=30)
            if outcome.done() and not outcome.cancelled():
                outcome.exception()  # retrieved: raised above, or the cancel we asked for
            with contextlib.suppress(Exception):
                await asyncio.to_thread(thread.join, 5)

    # ------------------------------------------------------------------ server thread

    async def _serve(self) -> None:
        mirror = asyncio.create_task(self._mirror_started())
        try:
            await self.inner.run()
        finally:
            mirror.cancel()

    async def _mirror_started(self) -> None:
        await self.inner.started.wait()
        main = self._main
        if main is not None:
            main.call_soon_threadsafe(self.started.set)

    def _drain(self) -> None:
        self._scheduled = False
        pending = self._pending
        publish = self.inner.publish
        while pending:
            batch, records = pending.popleft()
            publish(batch, records)
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            self._m_dropped.inc(dropped)
            log.warning("opcua server thread behind: sample batches dropped", samples=dropped)

    def _on_main(self, fn: Callable[[], T], default: T, what: str) -> T:
        main = self._main
        if main is None or main.is_closed():
            return default
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        try:
            main.call_soon_threadsafe(call)
            return fut.result(timeout=CALL_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            log.warning("opcua call into the gateway timed out", call=what,
                        timeout_s=CALL_TIMEOUT_S)
            return default
        except RuntimeError:  # the main loop is closing
            return default

    def _status(self) -> StatusDoc | None:
        return self._on_main(self._outer.status, None, "status")

