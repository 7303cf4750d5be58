"""The data path: a batch from a source through the stages, the stages' commands to the
devices, then the journal and the live sinks.

Invariants:

* The decision runs where a batch arrives: every stage, then the stage's commands are
  sent (with a timeout) before anything else is done with the batch; only then does
  the batch go to the journal writer (never awaited, except by sources that ask for
  ``wait_durable``) and to every live sink. Nothing here waits for a sink or the network.
* Sources whose tags an interlock watches run on the fast lane (``edge.runtime.fastlane``):
  there the interlock stage judges and commands; the other stages, the journal and the
  live sink take the batch on the main loop, one hand-off per batch, in arrival order.
  There the interlocks judge before compensation: it only adds derived tags (declared by
  its section, never by a source), and an interlock on a derived tag keeps its source on
  the main loop, where the stages run in configured order.
* A command runs on the loop that owns its source's connections, whichever loop decided it.
* ``reaction_ns`` of an InterlockTrip is measured from the batch in hand to the command
  written and answered by the device (or failed).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import structlog

from edge.components import Command, Commandable, Emit, LiveSink, Source, Stage, WaitsDurable
from edge.journal import JournalWriter
from edge.model import InterlockTrip, Record, SampleBatch
from edge.runtime.fastlane import FastLane, LockedStage
from edge.runtime.metrics import Metrics

log = structlog.get_logger("edge.flow")

COMMAND_TIMEOUT_S = 1.0
MAX_LANE_HANDOFFS = 256  # batches a lane source may run ahead of the main loop


class Flow:
    def __init__(self, sources: Sequence[Source], stages: Sequence[Stage],
                 writer: JournalWriter, live: Sequence[LiveSink], metrics: Metrics,
                 watch: Sequence[Callable[[Sequence[Record]], None]] = ()) -> None:
        """``watch``: called on the main loop with the records of every kept batch
        (the condition board), before the live sinks get them."""
        self.sources = list(sources)
        self.stages = list(stages)
        self.writer = writer
        self.live = tuple(live)
        # Bound once: the fast path calls these for every batch.
        self._publish = tuple(sink.publish for sink in self.live)
        self._watch = tuple(watch)
        self.lane: FastLane | None = None
        self.lane_sources: set[str] = set()
        self._lane_stages: list[Stage] = []
        self._rest_stages: list[Stage] = []
        self._handoffs: collections.deque[concurrent.futures.Future[None]] = (
            collections.deque())
        self._main: asyncio.AbstractEventLoop | None = None
        self._m_in = metrics.counter("edge_ingest_total", "Items ingested", ["source", "kind"])
        self._m_reaction = metrics.histogram(
            "edge_interlock_reaction_seconds",
            "From batch in hand to the stop command written to the device and answered",
            ["interlock"],
        )
        self._m_cmd_fail = metrics.counter(
            "edge_command_failures_total", "Device commands that failed", ["source", "action"]
        )

    # ------------------------------------------------------------------ set-up

    def plan_fast_lane(self, tag_source: dict[int, str], rt_priority: int = 0) -> None:
        """Put the sources whose tags an interlock watches on a fast lane (``tag_source``:
        tag id -> the source that declared it; ``rt_priority``: see FastLane)."""
        interlock = next((s for s in self.stages if s.name == "interlock"), None)
        if interlock is None:
            return
        watched = {rule.tag_id for rule in interlock.rules.values()}  # type: ignore[attr-defined]
        self.lane_sources = {tag_source[t] for t in watched if t in tag_source}
        if not self.lane_sources:
            return
        self.lane = FastLane(rt_priority=rt_priority)
        locked = LockedStage(interlock)
        self.stages = [locked if s is interlock else s for s in self.stages]
        self._lane_stages = [locked]
        self._rest_stages = [s for s in self.stages if s is not locked]

    def start(self) -> None:
        """On the main loop, before any source runs."""
        self._main = asyncio.get_running_loop()
        if self.lane is not None:
            self.lane.start()

    def runner(self, source: Source) -> Callable[[], Awaitable[None]]:
        """What the supervisor runs for ``source``: a factory of its ``run`` coroutine."""
        if self.lane is not None and source.name in self.lane_sources:
            lane = self.lane
            return lambda: lane.call(lambda: source.run(self._emit(source, lane=True)))
        return lambda: source.run(self._emit(source))

    async def drain(self, timeout: float) -> None:
        """After the sources stopped: let the batches the lane handed over reach the
        journal writer."""
        if self._handoffs:
            await asyncio.wait([asyncio.wrap_future(f) for f in self._handoffs],
                               timeout=max(0.05, timeout))

    def stop(self) -> None:
        if self.lane is not None:
            self.lane.stop()

    # ------------------------------------------------------------------ per batch

    def _emit(self, source: Source, *, lane: bool = False) -> Emit:
        ingest = self.ingest_lane if lane else self.ingest
        wait = isinstance(source, WaitsDurable) and source.wait_durable  # once, not per batch

        async def emit(batch: SampleBatch | None, records: Sequence[Record], /, *,
                       checkpoint: tuple[str, bytes] | None = None) -> None:
            await ingest(source, batch, records, checkpoint=checkpoint, wait=wait)
        return emit

    def _arrive(self, source: Source, batch: SampleBatch | None,
                records: Sequence[Record]) -> tuple[int, int, SampleBatch]:
        """The batch in hand: the reaction clock starts, the batch is counted."""
        t0 = time.perf_counter_ns()
        now_ns = time.time_ns()
        batch = batch if batch is not None else SampleBatch.empty()
        if len(batch):
            self._m_in.labels(source.name, "samples").inc(len(batch))
        if records:
            self._m_in.labels(source.name, "records").inc(len(records))
        return t0, now_ns, batch

    async def ingest(self, source: Source, batch: SampleBatch | None,
                     records: Sequence[Record], *,
                     checkpoint: tuple[str, bytes] | None = None, wait: bool = False) -> None:
        """``wait``: return only once the batch is committed (``WaitsDurable``)."""
        t0, now_ns, batch = self._arrive(source, batch, records)
        batch, out = await self.judge(self.stages, batch, list(records), now_ns, t0)
        await self.keep(batch, out, wait=wait, checkpoint=checkpoint)

    async def judge(self, stages: Sequence[Stage], batch: SampleBatch, records: list[Record],
                    now_ns: int, t0: int) -> tuple[SampleBatch, list[Record]]:
        for stage in stages:
            out = stage.process(batch, records, now_ns)
            batch, records = out.batch, out.records
            if out.commands:
                records = await self.send(out.commands, records, t0)
        return batch, records

    async def ingest_lane(self, source: Source, batch: SampleBatch | None,
                          records: Sequence[Record], *,
                          checkpoint: tuple[str, bytes] | None = None,
                          wait: bool = False) -> None:
        """``ingest`` for a source on the fast lane, on the lane's loop."""
        t0, now_ns, batch = self._arrive(source, batch, records)
        batch, out = await self.judge(self._lane_stages, batch, list(records), now_ns, t0)
        assert self._main is not None
        handoff = asyncio.run_coroutine_threadsafe(
            self._ingest_rest(batch, out, now_ns, t0, checkpoint, wait), self._main)
        handoff.add_done_callback(_report_handoff)
        pending = self._handoffs
        pending.append(handoff)
        while pending and pending[0].done():
            pending.popleft()
        if wait:
            await asyncio.wrap_future(handoff)
        elif len(pending) > MAX_LANE_HANDOFFS:  # the main loop is far behind: wait for it
            await asyncio.wrap_future(pending[0])

    async def _ingest_rest(self, batch: SampleBatch, records: list[Record],
                           now_ns: int, t0: int,
                           checkpoint: tuple[str, bytes] | None, wait: bool) -> None:
        batch, records = await self.judge(self._rest_stages, batch, records, now_ns, t0)
        await self.keep(batch, records, wait=wait, checkpoint=checkpoint)

    async def tick(self, now_ns: int, t0: int) -> None:
        """Time-based decisions (stale data); later stages see what a tick produced."""
        for i, stage in enumerate(self.stages):
            out = stage.tick(now_ns)
            batch, records = out.batch, out.records
            if out.commands:
                records = await self.send(out.commands, records, t0)
            for later in self.stages[i + 1:]:
                nxt = later.process(batch, records, now_ns)
                batch, records = nxt.batch, nxt.records
            if len(batch) or records:
                await self.keep(batch, records, wait=False)

    async def keep(self, batch: SampleBatch, records: Sequence[Record], *, wait: bool,
                   checkpoint: tuple[str, bytes] | None = None) -> None:
        futures = []
        if len(batch):
            # Both items carry the checkpoint: the writer never sheds an item that does,
            # so a source cannot resume past samples that were dropped.
            futures.append(self.writer.submit(batch, checkpoint, urgent=wait))
        if records:
            futures.append(self.writer.submit(list(records), checkpoint, urgent=wait))
        if checkpoint is not None and not futures:
            futures.append(self.writer.submit(None, checkpoint, urgent=wait))
        if records:
            for watch in self._watch:
                try:
                    watch(records)
                except Exception as exc:  # the alarm list must never stop the data path
                    log.error("record watcher failed", error=repr(exc), exc_info=exc)
        if len(batch) or records:
            for publish in self._publish:
                publish(batch, records)
        if wait and futures:
            await asyncio.gather(*futures)
        elif futures:
            await self.writer.wait_capacity()

    # ------------------------------------------------------------------ commands

    async def send(self, commands: Sequence[Command], records: list[Record],
                   t0_ns: int) -> list[Record]:
        """Send every command now, concurrently; attach the outcome to its trip record.

        Every task or ``wait_for`` between the decision and the device costs a turn of the
        event loop, and under load a turn is milliseconds of other work: the usual single
        command is awaited inline, so the request is on the wire before this returns to
        the loop, and only the device's answer waits for a turn.
        """
        if len(commands) == 1:
            results = [await self._send_one(commands[0])]
        else:
            results = list(await asyncio.gather(*(self._send_one(c) for c in commands)))
        reaction_ns = time.perf_counter_ns() - t0_ns
        for cmd, (ok, error) in zip(commands, results, strict=True):  # after the clock
            if ok:
                log.warning("device command sent", source=cmd.source, action=cmd.action,
                            target=cmd.target, reason=cmd.reason,
                            reaction_ms=round(reaction_ns / 1e6, 3))
            else:
                log.error("device command failed", source=cmd.source, action=cmd.action,
                          target=cmd.target, reason=cmd.reason, error=error)
                self._m_cmd_fail.labels(cmd.source, cmd.action).inc()
        outcome = {c.reason: ok for c, (ok, _) in zip(commands, results, strict=True)}
        patched: list[Record] = []
        for rec in records:
            if isinstance(rec, InterlockTrip) and rec.interlock in outcome:
                self._m_reaction.labels(rec.interlock).observe(reaction_ns / 1e9)
                patched.append(msgspec.structs.replace(
                    rec, action_ok=outcome[rec.interlock], reaction_ns=reaction_ns
                ))
            else:
                patched.append(rec)
        return patched

    async def send_commands(self, commands: Sequence[Command]) -> list[tuple[bool, str]]:
        """Commands a person asked for (an interlock's reset command), each on the loop
        of its source, one by one; (answered, why not) each, and one log line each."""
        results = []
        for cmd in commands:
            ok, error = await self._send_one(cmd)
            if ok:
                log.warning("device command sent", source=cmd.source, action=cmd.action,
                            target=cmd.target, reason=cmd.reason)
            else:
                log.error("device command failed", source=cmd.source, action=cmd.action,
                          target=cmd.target, reason=cmd.reason, error=error)
                self._m_cmd_fail.labels(cmd.source, cmd.action).inc()
            results.append((ok, error))
        return results

    async def _send_one(self, cmd: Command) -> tuple[bool, str]:
        """(answered, why not); logging waits until the reaction clock has stopped."""
        src = next((s for s in self.sources if s.name == cmd.source), None)
        if src is None or not isinstance(src, Commandable):
            return False, "the source has no write-back port"
        target = (self.lane.loop if self.lane is not None and cmd.source in self.lane_sources
                  else self._main)
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):  # no task, unlike wait_for
                if target is None or target is asyncio.get_running_loop():
                    await src.write(cmd)
                else:  # the source's connections live on the other loop
                    await asyncio.wrap_future(
                        asyncio.run_coroutine_threadsafe(src.write(cmd), target))
        except Exception as exc:  # the device may fail in any way; the trip is still recorded
            return False, str(exc) or type(exc).__name__
        return True, ""


def _report_handoff(fut: concurrent.futures.Future[None]) -> None:
    """Nobody awaits most hand-offs from the fast lane: say when one failed."""
    if not fut.cancelled() and (exc := fut.exception()) is not None:
        log.error("batch from the fast lane not kept", error=str(exc) or type(exc).__name__,
                  exc_info=exc)
