"""The one place that wires sources -> stages -> journal -> sinks.

Invariants:

* The data path (``edge.flow``) runs where a batch arrives: stages, then commands, then
  the journal writer and the live sinks; the sources an interlock watches on a fast lane.
* Every ``[[sinks]]`` entry builds one component; whether it is live, durable or both is
  resolved here, once, from the Protocols it implements (``edge.components``).
* Durable sinks read from the journal in their own loops; nothing on the fast path
  waits for a sink, the network or the disk.
* Shutdown order: sources stop first, the journal is flushed, delivery loops and sinks
  stop, the journal closes. Everything within ``gateway.shutdown_timeout_s``.
"""

from __future__ import annotations

import asyncio
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

import structlog

from edge.components import (
    Armable,
    BuildContext,
    Checkpointed,
    Command,
    DurableSink,
    Hooks,
    LiveSink,
    Preflight,
    Source,
    SourceConfig,
    Stage,
    StageConfig,
    UsesActions,
    UsesAsset,
)
from edge.config import Config, ConfigProblems, secret_reader
from edge.errors import ConfigError
from edge.flow import Flow
from edge.journal import Journal, JournalWriter
from edge.model import SampleBatch, TagRegistry
from edge.processing import STAGE_SECTIONS, build_stages
from edge.runtime import control, memory, operator
from edge.runtime.conditions import ConditionBoard, Outcome, declared_conditions
from edge.runtime.metrics import Metrics
from edge.runtime.private import private_dir
from edge.runtime.status import StatefulStage, StatusBoard
from edge.runtime.statusdoc import StatusDoc
from edge.runtime.supervisor import Supervisor
from edge.runtime.systemd import Notifier
from edge.sinks.delivery import SinkState, deliver

log = structlog.get_logger("edge.app")

SWITCH_INTERVAL_S = 0.0001
FULL_GC_EVERY = 100  # younger collections between two full ones (CPython default 10)
TICK_S = 0.1


class Gateway:
    """The daemon. ``await Gateway(cfg).run(stop)`` serves until ``stop`` is set."""

    def __init__(
        self, cfg: Config, *, secrets: Callable[[str], str] | None = None,
        notifier: Notifier | None = None, serve_control: control.Server = control.serve,
    ) -> None:
        self.cfg = cfg
        self.gateway_id = cfg.gateway.id
        self.metrics = Metrics()
        self.links = self.metrics.links
        self.tags = TagRegistry()
        self.notifier = notifier or Notifier()
        self._secrets = secrets or secret_reader()
        self._serve_control = serve_control
        self.sources: list[Source] = []
        self.stages: list[Stage] = []
        self.sinks: list[DurableSink] = []  # fed from the journal, a cursor each
        self.sink_states: dict[str, SinkState] = {}
        self.live: list[LiveSink] = []  # fed on the fast path
        self.writer: JournalWriter | None = None
        self.supervisor = Supervisor(metrics=self.metrics,
                                     stall_timeout_s=cfg.gateway.stall_timeout_s)
        self.ready = asyncio.Event()
        self.board = StatusBoard(gateway_id=self.gateway_id, metrics=self.metrics,
                                 links=self.links, supervisor=self.supervisor, ready=self.ready)
        declared, chart_of_tag = declared_conditions(cfg)
        self.conditions = ConditionBoard(declared, chart_of_tag=chart_of_tag)
        self._last_tick = time.monotonic()
        self._tag_source: dict[int, str] = {}  # tag id -> the source that declared it
        self.flow: Flow | None = None
        m = self.metrics
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
        tags, and the stages that refer to them. Returns the number of tags.
        Every mistake is reported (``ConfigProblems``), not only the first."""
        problems: list[str] = []
        ctx = self._declare(problems)
        self.stages = build_stages(self.cfg, ctx, problems)
        problems.extend(self._asset_problems())
        actions = {src.name: src.actions() for src in self.cfg.sources}
        for sink in self.cfg.sinks:
            if isinstance(sink, Preflight):
                problems.extend(sink.preflight())
            if isinstance(sink, UsesActions):
                problems.extend(sink.action_problems(actions, ctx.tags))
        if problems:
            raise ConfigProblems(problems)
        return len(self.tags)

    def _declare(self, problems: list[str] | None = None) -> BuildContext:
        """Every tag, in a fixed order. With ``problems``, a component whose tags cannot
        be declared adds its error there and the others are still declared."""
        cfg = self.cfg
        declarers: list[tuple[str, str, SourceConfig | StageConfig]] = [
            (f"source '{src.name}'", src.name, src) for src in cfg.sources]
        declarers += [(f"{section} '{item.name}'", "", item)
                      for section in STAGE_SECTIONS for item in cfg.section(section)]
        for label, source, item in declarers:
            first = len(self.tags)
            try:
                item.declare_tags(self.tags)
            except (ConfigError, ValueError) as exc:
                if problems is None:
                    raise
                problems.append(f"{label}: {exc}")
            if source:
                self._tag_source.update(dict.fromkeys(range(first, len(self.tags)), source))
        self.board.declare_tags(
            self.tags, [s.name for s in cfg.sources],
            interlocks=[r.name for r in cfg.section("interlocks")],
            charts=[c.name for c in cfg.section("spc")])
        return BuildContext(
            gateway_id=self.gateway_id, tags=self.tags, metrics=self.metrics,
            state_dir=cfg.state_dir, secrets=self._secrets,
            hooks=Hooks(status=self.status, conditions=self.conditions,
                        send_commands=self._send_commands, journal=self._journal_records),
            checkpoints=self._load_checkpoint, asset=cfg.asset,
        )

    def _asset_problems(self) -> list[str]:
        """``[asset]`` against the declared devices and the sinks that take from it."""
        asset = self.cfg.asset
        problems = asset.unknown_devices(t.device for t in self.tags)
        for sink in self.cfg.sinks:
            if isinstance(sink, UsesAsset):
                problems.extend(sink.asset_problems(asset, self.tags))
        return problems

    async def _load_checkpoint(self, key: str) -> bytes | None:
        assert self.writer is not None, "checkpoints are read once the journal is open"
        return await self.writer.checkpoint(key)

    async def _restore_stages(self) -> None:
        """Each checkpointed stage takes back the state committed with the last data it
        made (a restart, clean or not, resumes a shift or a wafer's step)."""
        assert self.writer is not None
        for stage in self.stages:
            if not isinstance(stage, Checkpointed):
                continue
            data = await self.writer.checkpoint(stage.checkpoint_key)
            if data is None:
                continue
            try:
                stage.restore(data)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("stage state not restored; it starts empty", stage=stage.name,
                          error=str(exc))
            else:
                log.info("stage state restored", stage=stage.name, bytes=len(data))

    def _build_stages(self, ctx: BuildContext) -> None:
        self.stages = build_stages(self.cfg, ctx)

    def _build(self) -> None:
        cfg = self.cfg
        ctx = self._declare()
        if problems := self._asset_problems():
            raise ConfigProblems(problems)
        self.sources = [src.build(ctx) for src in cfg.sources]
        self._build_stages(ctx)
        self.sinks, self.live = split_sinks([sink.build(ctx) for sink in cfg.sinks])
        self.board.declare_sinks(self.tags, [s.name for s in self.sinks])
        self.sink_states = {s.name: SinkState(s.name) for s in self.sinks}
        for sink in self.sinks:  # on the board (down) before their first attempt
            self.links.open(f"sink:{sink.name}")
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
        self.flow = Flow(self.sources, self.stages, self.writer, self.live, self.metrics,
                         watch=(self.conditions.observe,))
        if cfg.gateway.fast_lane:
            self.flow.plan_fast_lane(self._tag_source, cfg.gateway.fast_lane_rt_priority)
            self.stages = self.flow.stages
        operator.bind_board(self.conditions, cfg, self.flow, self.stage)
        self.board.bind(writer=self.writer, sink_states=self.sink_states,
                        stages=[s for s in self.stages if isinstance(s, StatefulStage)],
                        publish=[s.publish for s in self.live])

    async def _journal_records(self, records: Any) -> None:
        """Operator actions: journaled (and shown live) before their answer returns."""
        assert self.flow is not None
        await self.flow.keep(SampleBatch.empty(), list(records), wait=True)

    async def _send_commands(self, commands: Sequence[Command]) -> list[tuple[bool, str]]:
        assert self.flow is not None
        return await self.flow.send_commands(commands)

    def stage(self, name: str) -> Any:
        return next((s for s in self.stages if s.name == name), None)

    async def _ticker(self) -> None:
        """Time-based decisions (stale data) and the loop-lag heartbeat."""
        while True:
            asleep = time.monotonic()
            await asyncio.sleep(TICK_S)
            self._last_tick = time.monotonic()
            self._m_lag.observe(max(0.0, self._last_tick - asleep - TICK_S))
            if self.stages and self.flow is not None:
                now_ns = time.time_ns()
                await self.flow.tick(now_ns, time.perf_counter_ns())
                self.conditions.poll(now_ns)

    # ------------------------------------------------------------------ operator hooks

    def status(self) -> StatusDoc:
        return self.board.document()

    async def reset_interlock(self, name: str, *, origin: str = "cli", user: str = "",
                              comment: str = "") -> Outcome:
        return await self.conditions.reset(name, origin=origin, user=user, comment=comment)

    async def _control(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd in operator.OPERATOR_COMMANDS:
            return await operator.control_request(self.conditions, cmd, req)
        if cmd == "conditions":
            return {"ok": True, "conditions": self.conditions.conditions()}
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
        private_dir(cfg.state_dir)
        self._build()
        assert self.writer is not None and self.flow is not None
        flow = self.flow
        flow.start()
        writer = self.writer
        await self._restore_stages()
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
            self._serve_control, self.control_path, self._control, control_up))
        sup.add("status", self.board.run)
        for live in self.live:
            sup.add(live_component(live, self.sinks), live.run)
        for sink in self.sinks:
            sup.add(f"sink:{sink.name}", functools.partial(
                deliver, writer, sink, state=self.sink_states[sink.name], metrics=self.metrics,
                links=self.links,
            ))
        sup.add_check("event loop", self._loop_check)
        sup.add_check("journal", self._journal_check)
        # READY only once operators can reach us and every live sink that serves clients
        # (the OPC-UA server) listens.
        await _wait_or_stop(control_up, stop)
        for live in self.live:
            started = live.started
            if started is not None:
                await _wait_or_stop(started, stop)
        # What start-up built (modules, the OPC-UA address space, the registry) lives as
        # long as the daemon: frozen, full collections no longer walk it, which cut them
        # from tens of ms (a pause of the event loop) to what the batches leave behind.
        # run_daemon starts with collection off (see there); no collection first: it would
        # walk the ~1.4 M start-up objects (0.5 s) to free a few thousand.
        gc.freeze()
        # A full collection walks every object that outlived two younger ones: ~36,000 at
        # 200k samples/s, 20-40 ms with the GIL held (cache misses in a 300 MB heap), which
        # stalls the fast lane too. By default one ran every ~6 s; at least 100 younger
        # collections between two full ones (~a minute) make them ten times rarer.
        # Cycles among long-lived objects are still collected, later.
        gen0, gen1, _ = gc.get_threshold()
        gc.set_threshold(gen0, gen1, FULL_GC_EVERY)
        gc.enable()
        # Sources start last, once start-up no longer holds the loop: a poll that waits
        # behind it would time out, and a Bad sample trips a fail-safe interlock.
        now_ns = time.time_ns()
        for stage in self.stages:
            if isinstance(stage, Armable):
                stage.arm(now_ns)
        self._last_tick = time.monotonic()
        sup.add("ticker", self._ticker)
        for source in self.sources:
            sup.add(f"source:{source.name}", flow.runner(source))
        self.ready.set()
        self.notifier.ready(self.board.status_line())
        # After READY, not on the start-up path: reading smaps twice costs milliseconds.
        released, why_not = memory.release_compiler_pages()
        log.info("compiler pages released", mib=round(released / 1024, 1), why_not=why_not)
        log.info(
            "gateway ready", gateway=self.gateway_id, seconds=round(time.monotonic() - t_start, 3),
            sources=[s.name for s in self.sources], sinks=[s.name for s in self.sinks],
            stages=[s.name for s in self.stages], tags=len(self.tags),
            live=[s.name for s in self.live], journal=str(cfg.journal_path),
            fast_lane=sorted(flow.lane_sources),
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
        if self.flow is not None:
            await self.flow.drain(deadline - time.monotonic() - 1.0)
        flushed = await self.writer.flush(max(0.1, deadline - time.monotonic() - 1.0))
        ok = await sup.stop(deadline - 0.5)
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sink.close(), max(0.05, deadline - time.monotonic()))
        await self.writer.close(max(0.1, deadline - time.monotonic()))
        if self.flow is not None:
            self.flow.stop()
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


def split_sinks(built: list[object]) -> tuple[list[DurableSink], list[LiveSink]]:
    """The built sinks as (durable, live); one that is both is in both lists."""
    durable: list[DurableSink] = []
    live: list[LiveSink] = []
    for sink in built:
        if isinstance(sink, DurableSink):
            durable.append(sink)
        if isinstance(sink, LiveSink):
            live.append(sink)
        elif not isinstance(sink, DurableSink):
            raise TypeError(f"{sink!r} is neither a durable nor a live sink")
    return durable, live


def live_component(sink: LiveSink, durable: list[DurableSink]) -> str:
    """The supervisor's name for a live sink's ``run``: ``sink:<name>``, or
    ``sink:<name>:live`` when the same sink also has a delivery loop."""
    both = any(d is sink for d in durable)  # type: ignore[comparison-overlap]
    return f"sink:{sink.name}:live" if both else f"sink:{sink.name}"


async def _wait_or_stop(event: asyncio.Event, stop: asyncio.Event) -> None:
    waits = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())}
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()


async def run_daemon(cfg: Config) -> int:
    """Run until SIGTERM/SIGINT; the exit status of the daemon."""
    # A thread in Python code (the journal writer encoding a batch) keeps the GIL for up to
    # the switch interval while the loop waits with a device's answer in hand: 5 ms by
    # default, the whole interlock budget. 0.1 ms costs no measurable CPU at 200k samples/s
    # (the lane is mostly asleep, so the main thread is rarely asked to hand over).
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
