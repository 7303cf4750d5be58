"""A gateway with a chamber-temperature source the test drives, one interlock on it and
the web page on a free loopback port. No device; the page is the real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from edge.app import Gateway
from edge.components import BuildContext, Command, Emit
from edge.config import Config, GatewaySection, JournalSection
from edge.model import SampleBatch, TagRegistry
from edge.processing.interlock_config import InterlockAction, InterlockRuleConfig
from edge.runtime.control import Handler
from edge.web.config import WebConfig
from edge.web.server import WebSink

LIMIT = 188.0
INTERLOCK = "etch1_overtemp"


class Chamber:
    """Source ``etch1``: emits each value put in ``values`` as ``etch1/chamber_temp``."""

    name = "etch1"

    def __init__(self) -> None:
        self.values: asyncio.Queue[float] = asyncio.Queue()
        self.commands: list[Command] = []
        self.seen = 0

    async def run(self, emit: Emit) -> None:
        while True:
            v = await self.values.get()
            await emit(SampleBatch([0], [time.time_ns()], [v]), [])
            self.seen += 1

    async def write(self, command: Command) -> None:
        self.commands.append(command)


@dataclass(frozen=True)
class ChamberCfg:
    source: Chamber = field(compare=False)
    name: str = "etch1"

    def declare_tags(self, tags: TagRegistry) -> None:
        tags.add("etch1", "chamber_temp", unit="degC")

    def build(self, ctx: BuildContext) -> Chamber:
        return self.source

    def actions(self) -> frozenset[str]:
        return frozenset({"stop"})

    def measurement_devices(self) -> frozenset[str] | None:
        return frozenset()


async def _no_socket(path: Path, handler: Handler, started: asyncio.Event | None) -> None:
    assert started is not None
    started.set()
    await asyncio.Event().wait()


@dataclass
class WebGateway:
    gw: Gateway
    chamber: Chamber
    web: WebSink

    @property
    def url(self) -> str:
        return self.web.url

    async def feed(self, value: float, timeout: float = 20.0) -> None:
        """One sample through the pipeline; returns once the source emitted it."""
        before = self.chamber.seen
        await self.chamber.values.put(value)
        deadline = time.monotonic() + timeout
        while self.chamber.seen == before:
            assert time.monotonic() < deadline, "sample not emitted in time"
            await asyncio.sleep(0.005)

    def state(self) -> str:
        doc = self.gw.status()
        return doc.interlocks[INTERLOCK].state


@asynccontextmanager
async def web_gateway(tmp_path: Path, web: WebConfig | None = None,
                      secrets: dict[str, str] | None = None,
                      sections: dict[str, list[object]] | None = None,
                      ) -> AsyncIterator[WebGateway]:
    """The gateway running (READY) with its web page listening; stopped on exit.
    ``sections``: more stage sections (``oee``, ...) beside the interlock."""
    chamber = Chamber()
    rule = InterlockRuleConfig(name=INTERLOCK, tag="etch1/chamber_temp", high=LIMIT,
                               clear_hysteresis=2.0, action=InterlockAction(source="etch1"))
    cfg = Config(
        GatewaySection(id="gw-web", state_dir=str(tmp_path / "state"), shutdown_timeout_s=5,
                       fast_lane=False),
        JournalSection(commit_interval_ms=1.0),
        sources=[ChamberCfg(chamber)],
        sinks=[web or WebConfig(listen="127.0.0.1:0")],
        sections={"interlocks": [rule], **(sections or {})},
    )
    known = secrets or {}
    gw = Gateway(cfg, secrets=lambda name: known[name], serve_control=_no_socket)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        waiter = asyncio.ensure_future(gw.ready.wait())
        done, _ = await asyncio.wait({waiter, task}, timeout=60,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            waiter.cancel()
            task.result()
        assert gw.ready.is_set(), "gateway not READY in 60 s"
        sink = next(s for s in gw.live if isinstance(s, WebSink))
        yield WebGateway(gw, chamber, sink)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
