"""The fast lane: a second event loop, on its own thread, for the sources interlocks watch.

Why: on the main loop a device's answer waits its turn behind everything else that is
ready (line-protocol encoding, MQTT JSON arrays, CSV parsing, OPC-UA publishing), in
slices of a millisecond or so, at every hop of the command path. Under 200k samples/s
that put the interlock reaction (sample in hand -> stop command written and answered) at
7-25 ms p99. On the lane the poll, the interlock decision and the stop command share an
almost idle loop; the main thread holds the GIL for at most the switch interval that
``run_daemon`` sets (0.1 ms) when the lane wakes up.

Invariants:

* A source on the lane runs there whole (its connections, its write-back port); the
  supervisor on the main loop still owns it: ``call`` propagates a crash to the
  supervisor and a cancel to the source, and returns only once the source has stopped,
  so the journal is flushed after the last batch a source handed over.
* Only thread-safe things cross: ``call_soon_threadsafe``/``run_coroutine_threadsafe``
  and :class:`LockedStage`, which serialises every call into a stage shared by both
  loops (the interlock stage: the main loop judges the other sources' batches and ticks
  for stale data; the lane judges its own sources' batches).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import structlog

from edge.components import StageOutput
from edge.model import Record, SampleBatch

log = structlog.get_logger("edge.fastlane")

T = TypeVar("T")


class FastLane:
    """An event loop running on a daemon thread until ``stop``; with ``rt_priority`` > 0
    the thread runs SCHED_FIFO at that priority when the OS allows it (``rt`` says)."""

    def __init__(self, name: str = "fast-lane", rt_priority: int = 0) -> None:
        self.name = name
        self.rt_priority = rt_priority
        self.rt = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _realtime(self) -> None:
        """On the lane's thread. On a saturated CPU a woken thread can wait a time slice
        (milliseconds) for a core: measured at 200k samples/s on two cores, that was most
        of the slow stops. SCHED_FIFO takes a core at once; the lane sleeps most of the
        time, and the kernel's real-time throttling bounds it even if it did not."""
        if self.rt_priority <= 0:
            return
        if not hasattr(os, "sched_setscheduler"):
            log.warning("fast lane at normal priority: no real-time scheduling on this OS")
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.rt_priority))
        except OSError as exc:
            log.warning("fast lane at normal priority: real-time scheduling refused",
                        priority=self.rt_priority, error=exc.strerror or str(exc),
                        fix="run with CAP_SYS_NICE or LimitRTPRIO= (the systemd unit sets "
                            "it), or set gateway.fast_lane_rt_priority = 0")
            return
        self.rt = True

    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            self._realtime()
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        log.info("fast lane started", thread=self.name, realtime_priority=(
            self.rt_priority if self.rt else 0))

    def stop(self, timeout: float = 2.0) -> None:
        if self.loop is None or self._thread is None:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        self.loop = None

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the lane; the future is settled from the lane's thread."""
        assert self.loop is not None, "the fast lane is not started"
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def call(self, factory: Callable[[], Awaitable[None]]) -> None:
        """Run ``factory()`` on the lane, from the main loop, as if it ran here: its
        exception is raised here, and cancelling this cancels it there and waits until it
        has finished (its ``finally`` blocks have run)."""
        assert self.loop is not None, "the fast lane is not started"
        main = asyncio.get_running_loop()
        finished: asyncio.Future[None] = main.create_future()

        def settle(exc: BaseException | None) -> None:
            if finished.done():
                return
            if exc is None:
                finished.set_result(None)
            elif isinstance(exc, asyncio.CancelledError):
                finished.cancel()
            else:
                finished.set_exception(exc)

        async def body() -> None:
            try:
                await factory()
            except BaseException as exc:
                main.call_soon_threadsafe(settle, exc)
                raise
            main.call_soon_threadsafe(settle, None)

        there = asyncio.run_coroutine_threadsafe(body(), self.loop)
        try:
            await asyncio.shield(finished)
        except asyncio.CancelledError:
            if not finished.done():
                there.cancel()
                await asyncio.wait({finished})
            if not finished.cancelled():
                finished.exception()  # retrieved: the cancel is what propagates
            raise


class LockedStage:
    """A stage used from two threads: every call holds one lock (microseconds: the
    stages are synchronous and their kernels short); other attributes pass through."""

    def __init__(self, stage: Any) -> None:
        self._stage = stage
        self._lock = threading.Lock()
        self.name: str = stage.name

    def process(self, batch: SampleBatch, records: Sequence[Record], now_ns: int) -> StageOutput:
        with self._lock:
            out: StageOutput = self._stage.process(batch, records, now_ns)
            return out

    def tick(self, now_ns: int) -> StageOutput:
        with self._lock:
            out: StageOutput = self._stage.tick(now_ns)
            return out

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._stage, attr)
        if not callable(value):
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)
        return locked
