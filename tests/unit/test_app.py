"""The gateway wired with fake sources and sinks: READY, fan-out, durable delivery with
reconnect, shutdown order. No device, no socket, no subprocess."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import BothSink, Events, FakeDurableSink, FakeLiveSink, FakeSource, SinkCfg, SourceCfg

from edge.app import Gateway
from edge.config import Config, GatewaySection, JournalSection
from edge.runtime.control import Handler
from edge.runtime.statusdoc import encode
from edge.runtime.systemd import Notifier


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__(environ={})
        self.lines: list[str] = []

    def notify(self, *lines: str) -> bool:
        self.lines += lines
        return True


async def no_socket(path: Path, handler: Handler, started: asyncio.Event | None) -> None:
    """The control component without its Unix socket."""
    assert started is not None
    started.set()
    await asyncio.Event().wait()


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    """Gateway.run freezes start-up objects and tunes the collector: undo it."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.enable()


def gateway(tmp_path: Path, sources: list[FakeSource],
            sinks: list[FakeLiveSink | FakeDurableSink]) -> tuple[Gateway, RecordingNotifier]:
    cfg = Config(
        GatewaySection(id="gw-test", state_dir=str(tmp_path / "state"), shutdown_timeout_s=5),
        JournalSection(commit_interval_ms=1.0),
        sources=[SourceCfg(s.name, s) for s in sources],
        sinks=[SinkCfg(s.name, s) for s in sinks],
    )
    notifier = RecordingNotifier()
    return Gateway(cfg, secrets=lambda name: "", notifier=notifier,
                   serve_control=no_socket), notifier


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"not reached in time: {what}"
        await asyncio.sleep(0.005)


async def running(gw: Gateway, body: Callable[[], Awaitable[Any]]) -> int:
    """Run the gateway around ``body``; its exit status once stopped."""
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        await body()
    finally:
        stop.set()
        rc = await asyncio.wait_for(task, 30)
    return rc


async def test_ready_waits_for_a_listening_live_sink(tmp_path: Path) -> None:
    """READY=1 is sent only once every live sink that serves clients has started."""
    events = Events()
    server = FakeLiveSink("opcua", events, listens=True)
    quiet = FakeLiveSink("web", events)
    gw, notifier = gateway(tmp_path, [], [server, quiet])

    async def body() -> None:
        await asyncio.wait_for(server.entered.wait(), 10)
        for _ in range(20):
            await asyncio.sleep(0)
        assert not gw.ready.is_set() and "READY=1" not in notifier.lines
        server.may_start.set()
        await asyncio.wait_for(gw.ready.wait(), 10)
        assert "READY=1" in notifier.lines

    assert await running(gw, body) == 0


async def test_fan_out_to_live_sinks_and_a_sink_that_is_both(tmp_path: Path) -> None:
    """Every batch reaches each live sink; a sink that is live and durable gets the fast
    path and its own journal cursor, under two supervisor names."""
    events = Events()
    live = FakeLiveSink("opcua", events)
    both = BothSink("uns", events)
    src = FakeSource("dev", [2, 3], events)
    gw, _ = gateway(tmp_path, [src], [live, both])

    async def body() -> None:
        await until(lambda: live.points() == 5 and both.live.points() == 5, "published")
        await until(lambda: both.accepted == [1, 2], "delivered from the journal")

    assert await running(gw, body) == 0
    assert gw.live == [live, both] and gw.sinks == [both]
    names = set(gw.supervisor.states())
    assert {"sink:opcua", "sink:uns", "sink:uns:live", "source:dev"} <= names
    # The gateway's per-sink tags exist for sinks with a journal cursor only.
    assert "gateway/journal_depth_uns" in gw.tags and "gateway/link_up_uns" in gw.tags
    assert "gateway/journal_depth_opcua" not in gw.tags


async def test_durable_sink_reconnects_after_its_link_drops(tmp_path: Path) -> None:
    """A durable sink whose session drops is closed and connected again; every entry
    arrives once, and the status document shows the link up again."""
    events = Events()
    mes = FakeDurableSink("mes", events, drop_after=0)
    src = FakeSource("dev", [1, 1, 1], events)
    gw, _ = gateway(tmp_path, [src], [mes])

    async def body() -> None:
        await until(lambda: mes.accepted == [1, 2, 3], "all three entries delivered")
        await until(lambda: gw.status().links.get("sink:mes") is True, "link up")

    assert await running(gw, body) == 0
    log = events.log
    assert log.index("sink mes dropped") < log.index("sink mes closed") \
        < log.index("sink mes connect 2")
    doc = gw.status()
    assert doc.sinks["mes"].delivered_points == 3 and doc.sinks["mes"].attempt == 0
    assert b"NaN" not in encode(doc)


async def test_shutdown_stops_sources_before_sinks_and_flushes(tmp_path: Path) -> None:
    """On stop, sources stop first; the journal is flushed (exit status 0); sinks stop
    and close after."""
    events = Events()
    live = FakeLiveSink("opcua", events)
    mes = FakeDurableSink("mes", events)
    src = FakeSource("dev", [4, 4], events)
    gw, notifier = gateway(tmp_path, [src], [live, mes])

    async def body() -> None:
        await until(lambda: src.emitted.is_set() and live.points() == 8, "emitted")

    assert await running(gw, body) == 0
    log = events.log
    assert log.index("source dev stopped") < log.index("live opcua stopped")
    assert log.index("source dev stopped") < log.index("sink mes closed")
    assert "STOPPING=1" in notifier.lines
