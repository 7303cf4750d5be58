"""The one place that wires sources -> stages -> journal -> sinks.

Invariants:

* The fast path runs where a batch arrives: every stage, then the stage's commands are
  sent (with a timeout) before anything else is done with the batch; only then does
  the batch go to the journal writer (never awaited, except by sources that ask for
  ``wait_durable``) and to the live sink.
* Durable sinks read from the journal in their own loops; nothing on the fast path
  waits for a sink, the network or the disk.
* Shutdown order: sources stop first, the journal is flushed, delivery loops and sinks
  stop, the journal closes. Everything within ``gateway.shutdown_timeout_s``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import gc
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import structlog

from edge.components import (
    BuildContext,
    Command,
    Commandable,
    DurableSink,
    Hooks,
    LiveSink,
    Source,
    Stage,
    StageOutput,
)
from edge.config import Config, secret_reader
from edge.journal import Journal, JournalWriter
from edge.model import InterlockTrip, Record, SampleBatch, TagRegistry
from edge.runtime import control
from edge.runtime.fastlane import FastLane, LockedStage
from edge.runtime.metrics import Metrics
from edge.runtime.status import StatusBoard
from edge.runtime.supervisor import Supervisor
from edge.runtime.systemd import Notifier
from edge.sinks.delivery import Backoff, SinkState, deliver

log = structlog.get_logger("edge.app")

COMMAND_TIMEOUT_S = 1.0
SWITCH_INTERVAL_S = 0.0005
MAX_LANE_HANDOFFS = 256
TICK_S = 0.1


class Gateway:
    """The daemon. ``await Gateway(cfg).run(stop)`` serves until ``stop`` is set."""

    def __init__(
        self, cfg: Config, *, secrets: Callable[[str], str] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.cfg = cfg
        self.gateway_id = cfg.gateway.id
        self.metrics = Metrics()
        self.tags = TagRegistry()
        self.notifier = notifier or Notifier()
        self._secrets = secrets or secret_reader()
        self.sources: list[Source] = []
        self.stages: list[Stage] = []
        self.sinks: list[DurableSink] = []
        self.sink_states: dict[str, SinkState] = {}
        self.live: LiveSink | None = None
        self.writer: JournalWriter | None = None
        self.supervisor = Supervisor(metrics=self.metrics)
        self.board = StatusBoard(self)
        self.ready = asyncio.Event()
        self._last_tick = time.monotonic()
        self._tag_source: dict[int, str] = {}  # tag id -> the source that declared it
        self.lane: FastLane | None = None
        self.lane_sources: set[str] = set()
        self._lane_stages: list[Stage] = []
        self._rest_stages: list[Stage] = []
        self._lane_handoffs: collections.deque[concurrent.futures.Future[None]] = (
            collections.deque())
        self._main_loop: asyncio.AbstractEventLoop | None = None
        m = self.metrics
        self._m_in = m.counter("edge_ingest_total", "Items ingested", ["source", "kind"])
        self._m_reaction = m.histogram(
            "edge_interlock_reaction_seconds",
            "From batch in hand to the stop command written to the device", ["interlock"],
        )
        self._m_cmd_fail = m.counter(
            "edge_command_failures_total", "Device commands that failed", ["source", "action"]
        )
        self._m_lag = m.histogram(
            "edge_event_loop_lag_seconds",
            "How late the 100 ms ticker woke up: time the loop was held by something else",
        )
        gc_pause = m.histogram("edge_gc_pause_seconds", "Garbage collector pauses",
                               ["generation"])
        gc_start = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_start[0] = time.perf_counter()
            else:
                gc_pause.labels(str(info["generation"])).observe(
                    time.perf_counter() - gc_start[0])

        self._gc_callback = on_gc

    # ------------------------------------------------------------------ build

    def check(self) -> int:
        """Everything ``run`` checks before it touches a device, the network or the disk:
        tags, and the stages that refer to them. Returns the number of tags."""
        ctx = self._declare()
        self._build_stages(ctx)
        return len(self.tags)

    def _declare(self) -> BuildContext:
        cfg = self.cfg
        for src in cfg.sources:
            first = len(self.tags)
            src.declare_tags(self.tags)
            self._tag_source.update(dict.fromkeys(range(first, len(self.tags)), src.name))
        for section in ("compensation", "health", "spc"):
            for item in cfg.section(section):
                if hasattr(item, "declare_tags"):
                    item.declare_tags(self.tags)
        self.board.declare_tags(self.tags, [s.name for s in cfg.sinks],
                                [s.name for s in cfg.sources])
        return BuildContext(
            gateway_id=self.gateway_id, tags=self.tags, metrics=self.metrics,
            state_dir=cfg.state_dir, secrets=self._secrets,
            hooks=Hooks(status=self.status, reset_interlock=self.reset_interlock),
            checkpoints=self._load_checkpoint,
        )

    async def _load_checkpoint(self, key: str) -> bytes | None:
        assert self.writer is not None, "checkpoints are read once the journal is open"
        return await self.writer.checkpoint(key)

    def _build_stages(self, ctx: BuildContext) -> None:
        if any(self.cfg.section(s) for s in ("compensation", "interlocks", "health", "spc")):
            from edge.processing import build_stages

            self.stages = list(build_stages(self.cfg, ctx))

    def _build(self) -> None:
        cfg = self.cfg
        ctx = self._declare()
        self.sources = [src.build(ctx) for src in cfg.sources]
        self._build_stages(ctx)
        self._plan_fast_lane()
        self.sinks = [sink.build(ctx) for sink in cfg.sinks]
        self.sink_states = {s.name: SinkState(s.name) for s in self.sinks}
        opcua = cfg.section("opcua")
        if opcua is not None:
            self.live = opcua.build(ctx)
        j = cfg.journal
        journal = Journal(
            cfg.journal_path, sinks={s.name: s.kinds for s in self.sinks},
            durability=j.durability,
            max_bytes=int(j.max_mb * 1024 * 1024), max_age_s=j.max_age_h * 3600,
            record_max_age_s=j.record_max_age_h * 3600, metrics=self.metrics,
        )
        self.writer = JournalWriter(
            journal, commit_interval_s=j.commit_interval_ms / 1000,
            max_pending_points=j.max_pending_points, metrics=self.metrics,
        )

    def _plan_fast_lane(self) -> None:
        """Put the sources whose tags an interlock watches on the fast lane."""
        interlock = self.stage("interlock")
        if interlock is None or not self.cfg.gateway.fast_lane:
            return
        watched = {rule.tag_id for rule in interlock.rules.values()}
        self.lane_sources = {self._tag_source[t] for t in watched if t in self._tag_source}
        if not self.lane_sources:
            return
        self.lane = FastLane()
        locked = LockedStage(interlock)
        self.stages = [locked if s is interlock else s for s in self.stages]
        self._lane_stages = [locked]
        self._rest_stages = [s for s in self.stages if s is not locked]

    def stage(self, name: str) -> Any:
        return next((s for s in self.stages if s.name == name), None)

    # ------------------------------------------------------------------ fast path

    async def _ingest(self, source: Source, batch: SampleBatch | None,
                      records: Sequence[Record], *,
                      checkpoint: tuple[str, bytes] | None = None) -> None:
        t0 = time.perf_counter_ns()
        now_ns = time.time_ns()
        batch = batch if batch is not None else SampleBatch.empty()
        if len(batch):
            self._m_in.labels(source.name, "samples").inc(len(batch))
        if records:
            self._m_in.labels(source.name, "records").inc(len(records))
        batch, out_records = await self._judge(self.stages, batch, list(records), now_ns, t0)
        await self._keep(batch, out_records, wait=getattr(source, "wait_durable", False),
                         checkpoint=checkpoint)

    async def _judge(self, stages: Sequence[Stage], batch: SampleBatch, records: list[Record],
                     now_ns: int, t0: int) -> tuple[SampleBatch, list[Record]]:
        for stage in stages:
            out = stage.process(batch, records, now_ns)
            batch, records = out.batch, out.records
            if out.commands:
                records = await self._send(out.commands, records, t0)
        return batch, records

    async def _ingest_lane(self, source: Source, batch: SampleBatch | None,
                           records: Sequence[Record], *,
                           checkpoint: tuple[str, bytes] | None = None) -> None:
        """``_ingest`` for a source on the fast lane, on the lane's loop: the interlocks
        judge and command here; the other stages, the journal and OPC-UA take the batch
        on the main loop (in order: one hand-off per batch, started in FIFO order)."""
        t0 = time.perf_counter_ns()
        now_ns = time.time_ns()
        batch = batch if batch is not None else SampleBatch.empty()
        if len(batch):
            self._m_in.labels(source.name, "samples").inc(len(batch))
        if records:
            self._m_in.labels(source.name, "records").inc(len(records))
        batch, out_records = await self._judge(self._lane_stages, batch, list(records),
                                               now_ns, t0)
        assert self._main_loop is not None
        handoff = asyncio.run_coroutine_threadsafe(
            self._ingest_rest(source, batch, out_records, now_ns, t0, checkpoint),
            self._main_loop,
        )
        handoff.add_done_callback(_report_handoff)
        pending = self._lane_handoffs
        pending.append(handoff)
        while pending and pending[0].done():
            pending.popleft()
        if getattr(source, "wait_durable", False):
            await asyncio.wrap_future(handoff)
        elif len(pending) > MAX_LANE_HANDOFFS:  # the main loop is far behind: wait for it
            await asyncio.wrap_future(pending[0])

    async def _ingest_rest(self, source: Source, batch: SampleBatch, records: list[Record],
                           now_ns: int, t0: int,
                           checkpoint: tuple[str, bytes] | None) -> None:
        batch, records = await self._judge(self._rest_stages, batch, records, now_ns, t0)
        await self._keep(batch, records, wait=getattr(source, "wait_durable", False),
                         checkpoint=checkpoint)

    async def _keep(self, batch: SampleBatch, records: Sequence[Record], *, wait: bool,
                    checkpoint: tuple[str, bytes] | None = None) -> None:
        assert self.writer is not None
        futures = []
        if len(batch):
            # Both items carry the checkpoint: the writer never sheds an item that does,
            # so a source cannot resume past samples that were dropped.
            futures.append(self.writer.submit(batch, checkpoint))
        if records:
            futures.append(self.writer.submit(list(records), checkpoint))
        if checkpoint is not None and not futures:
            futures.append(self.writer.submit(None, checkpoint))
        if self.live is not None and (len(batch) or records):
            self.live.publish(batch, records)
        if wait and futures:
            await asyncio.gather(*futures)
        elif futures:
            await self.writer.wait_capacity()

    async def _send(self, commands: Sequence[Command], records: list[Record],
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
        outcome = {c.reason: ok for c, ok in zip(commands, results, strict=True)}
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

    async def _send_one(self, cmd: Command) -> bool:
        src = next((s for s in self.sources if s.name == cmd.source), None)
        if src is None or not isinstance(src, Commandable):
            log.error("command for a source without a write-back port", source=cmd.source,
                      action=cmd.action, reason=cmd.reason)
            self._m_cmd_fail.labels(cmd.source, cmd.action).inc()
            return False
        target = (self.lane.loop if self.lane is not None and src.name in self.lane_sources
                  else self._main_loop)
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):  # no task, unlike wait_for
                if target is None or target is asyncio.get_running_loop():
                    await src.write(cmd)
                else:  # the source's connections live on the other loop
                    await asyncio.wrap_future(
                        asyncio.run_coroutine_threadsafe(src.write(cmd), target))
        except Exception as exc:  # the device may fail in any way; the trip is still recorded
            log.error("device command failed", source=cmd.source, action=cmd.action,
                      target=cmd.target, reason=cmd.reason, error=str(exc) or type(exc).__name__)
            self._m_cmd_fail.labels(cmd.source, cmd.action).inc()
            return False
        log.warning("device command sent", source=cmd.source, action=cmd.action,
                    target=cmd.target, reason=cmd.reason)
        return True

    async def _ticker(self) -> None:
        """Time-based decisions (stale data) and the loop-lag heartbeat."""
        while True:
            asleep = time.monotonic()
            await asyncio.sleep(TICK_S)
            self._last_tick = time.monotonic()
            self._m_lag.observe(max(0.0, self._last_tick - asleep - TICK_S))
            if not self.stages:
                continue
            t0 = time.perf_counter_ns()
            now_ns = time.time_ns()
            for i, stage in enumerate(self.stages):
                out: StageOutput = stage.tick(now_ns)
                batch, records = out.batch, out.records
                if out.commands:
                    records = await self._send(out.commands, records, t0)
                # Later stages see what a tick produced, like any other batch.
                for later in self.stages[i + 1:]:
                    nxt = later.process(batch, records, now_ns)
                    batch, records = nxt.batch, nxt.records
                if len(batch) or records:
                    await self._keep(batch, records, wait=False)

    # ------------------------------------------------------------------ operator hooks

    def status(self) -> dict[str, Any]:
        return self.board.document()

    def reset_interlock(self, name: str) -> bool:
        stage = self.stage("interlock")
        if stage is None:
            raise KeyError(f"no interlock named '{name}' (no interlocks configured)")
        ok: bool = stage.reset(name, time.time_ns())
        log.warning("interlock reset requested", interlock=name, took=ok)
        return ok

    async def _control(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "interlock_reset":
            name = str(req.get("name", ""))
            try:
                took = self.reset_interlock(name)
            except KeyError as exc:
                return {"ok": False, "error": str(exc.args[0])}
            return {"ok": took, "error": "" if took else
                    f"interlock '{name}' not reset: its condition is still active"}
        if cmd == "journal_dead_letters":
            assert self.writer is not None
            sink = req.get("sink")
            letters = await self.writer.call(
                self.writer.journal.dead_letters, None if sink is None else str(sink)
            )
            with_items = bool(req.get("items"))
            return {"ok": True, "letters": [d.to_doc(items=with_items) for d in letters]}
        if cmd == "journal_replay":
            assert self.writer is not None
            ids = [int(i) for i in req.get("ids", [])]
            seqs = await self.writer.call(self.writer.journal.replay_dead_letters, ids)
            return {"ok": True, "replayed": len(seqs)}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> int:
        cfg = self.cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self._build()
        self._main_loop = asyncio.get_running_loop()
        if self.lane is not None:
            self.lane.start()
        assert self.writer is not None
        writer = self.writer
        sup = self.supervisor
        t_start = time.monotonic()
        if self.stages:
            from edge.processing import warm_up

            took = await asyncio.to_thread(warm_up, [s.name for s in self.stages])
            log.info("kernels compiled", seconds=round(took, 3))
        if self._gc_callback not in gc.callbacks:
            gc.callbacks.append(self._gc_callback)
        sup.add("journal", writer.run)
        control_up = asyncio.Event()
        sup.add("control", functools.partial(
            control.serve, self.control_path, self._control, control_up))
        sup.add("status", self.board.run)
        if self.live is not None:
            sup.add("opcua", self.live.run)
        for sink in self.sinks:
            sup.add(f"sink:{sink.name}", functools.partial(
                deliver, writer, sink, state=self.sink_states[sink.name], metrics=self.metrics,
                backoff=Backoff(),
            ))
        sup.add_check("event loop", self._loop_check)
        sup.add_check("journal", self._journal_check)
        # READY only once operators can reach us and (if configured) OPC-UA listens.
        await _wait_or_stop(control_up, stop)
        if self.live is not None:
            started: asyncio.Event | None = getattr(self.live, "started", None)
            if started is not None:
                await _wait_or_stop(started, stop)
        # What start-up built (modules, the OPC-UA address space, the registry) lives as
        # long as the daemon: frozen, full collections no longer walk it, which cut them
        # from tens of ms (a pause of the event loop) to what the batches leave behind.
        # run_daemon starts with collection off (see there); no collection first: it would
        # walk the ~1.4 M start-up objects (0.5 s) to free a few thousand.
        gc.freeze()
        gc.enable()
        # Sources start last, once start-up no longer holds the loop: a poll that waits
        # behind it would time out, and a Bad sample trips a fail-safe interlock.
        now_ns = time.time_ns()
        for stage in self.stages:
            arm = getattr(stage, "arm", None)
            if arm is not None:
                arm(now_ns)
        self._last_tick = time.monotonic()
        sup.add("ticker", self._ticker)
        for source in self.sources:
            if self.lane is not None and source.name in self.lane_sources:
                run = functools.partial(self.lane.call, functools.partial(
                    source.run, functools.partial(self._ingest_lane, source)))
            else:
                run = functools.partial(source.run, functools.partial(self._ingest, source))
            sup.add(f"source:{source.name}", run)
        self.ready.set()
        self.notifier.ready(self.board.status_line())
        log.info(
            "gateway ready", gateway=self.gateway_id, seconds=round(time.monotonic() - t_start, 3),
            sources=[s.name for s in self.sources], sinks=[s.name for s in self.sinks],
            stages=[s.name for s in self.stages], tags=len(self.tags),
            opcua=getattr(self.live, "endpoint", None), journal=str(cfg.journal_path),
            fast_lane=sorted(self.lane_sources),
        )
        watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
        metrics_server = self._start_metrics_endpoint()
        await stop.wait()
        watchdog.cancel()
        if metrics_server is not None:
            metrics_server.shutdown()
        return await self._shutdown()

    def _start_metrics_endpoint(self) -> Any:
        """Prometheus /metrics on 127.0.0.1 only, when ``gateway.metrics_port`` is set."""
        port = self.cfg.gateway.metrics_port
        if not port:
            return None
        from prometheus_client import start_http_server

        try:
            server, _thread = start_http_server(port, addr="127.0.0.1",
                                                registry=self.metrics.registry)
        except OSError as exc:
            log.error("metrics endpoint not started", port=port, error=str(exc))
            return None
        log.info("metrics endpoint listening", url=f"http://127.0.0.1:{port}/metrics")
        return server

    @property
    def control_path(self) -> Path:
        return self.cfg.state_dir / "control.sock"

    async def _shutdown(self) -> int:
        assert self.writer is not None
        deadline = time.monotonic() + self.cfg.gateway.shutdown_timeout_s
        self.notifier.stopping()
        log.info("stopping: sources first, then flushing the journal")
        sup = self.supervisor
        for source in self.sources:
            left = max(0.05, deadline - time.monotonic())
            await sup.stop_component(f"source:{source.name}", left)
        await sup.stop_component("ticker", 1.0)
        if self._lane_handoffs:  # batches the lane handed over before its sources stopped
            await asyncio.wait([asyncio.wrap_future(f) for f in self._lane_handoffs],
                               timeout=max(0.05, deadline - time.monotonic() - 1.0))
        flushed = await self.writer.flush(max(0.1, deadline - time.monotonic() - 1.0))
        ok = await sup.stop(deadline - 0.5)
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sink.close(), max(0.05, deadline - time.monotonic()))
        await self.writer.close(max(0.1, deadline - time.monotonic()))
        if self.lane is not None:
            self.lane.stop()
        self.notifier.close()
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._gc_callback)
        log.info("stopped", journal_flushed=flushed, clean=ok)
        return 0 if flushed else 1

    def _loop_check(self) -> str | None:
        lag = time.monotonic() - self._last_tick
        if lag > self.cfg.gateway.stall_timeout_s:
            return f"no tick for {lag:.1f} s"
        return None

    def _journal_check(self) -> str | None:
        assert self.writer is not None
        w = self.writer
        idle_s = (time.monotonic_ns() - w.last_commit_ns) / 1e9
        if w.pending_points and idle_s > self.cfg.gateway.stall_timeout_s:
            return f"{w.pending_points} points not committed for {idle_s:.0f} s"
        return None

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval_s or 5.0
        interval = min(interval, 5.0)
        while True:
            ok, problems = self.supervisor.healthy()
            if ok:
                self.notifier.watchdog()
            else:
                log.error("not feeding the watchdog", problems=problems)
            self.notifier.status(self.board.status_line())
            await asyncio.sleep(interval)


def _report_handoff(fut: concurrent.futures.Future[None]) -> None:
    """Nobody awaits most hand-offs from the fast lane: say when one failed."""
    if not fut.cancelled() and (exc := fut.exception()) is not None:
        log.error("batch from the fast lane not kept", error=str(exc) or type(exc).__name__,
                  exc_info=exc)


async def _wait_or_stop(event: asyncio.Event, stop: asyncio.Event) -> None:
    waits = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())}
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()


async def run_daemon(cfg: Config) -> int:
    """Run until SIGTERM/SIGINT; the exit status of the daemon."""
    # A thread in Python code (the journal writer encoding a batch) keeps the GIL for up to
    # the switch interval while the loop waits with a device's answer in hand: 5 ms by
    # default, the whole interlock budget.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gw = Gateway(cfg)
    log.info("starting", gateway=cfg.gateway.id, config=str(cfg.path), pid=os.getpid())
    # Start-up allocates ~1.4 M objects that live as long as the daemon (asyncua's standard
    # address space, the tag nodes, numba): collections while they pile up walk them again
    # and again, about 1 s of CPU. Gateway.run freezes them and turns collection back on at READY.
    gc.disable()
    return await gw.run(stop)
