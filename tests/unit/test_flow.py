"""The data path with fake sources and sinks: fan-out to live sinks, commands to the
source's write-back port, the journal behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import Events, FakeLiveSink, FakeSource, StopOnAnything

from edge.components import Stage
from edge.flow import Flow
from edge.journal import Journal, JournalWriter
from edge.model import InterlockTrip
from edge.runtime.metrics import Metrics


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[JournalWriter]:
    w = JournalWriter(Journal(tmp_path / "j.db", sinks=["s"]), commit_interval_s=0.001)
    task = asyncio.create_task(w.run())
    yield w
    await w.close()
    task.cancel()


async def run_source(flow: Flow, source: FakeSource) -> None:
    """Run the source as the supervisor would until it has emitted everything."""
    task: asyncio.Future[None] = asyncio.ensure_future(flow.runner(source)())
    emitted: asyncio.Future[None] = asyncio.ensure_future(_wait(source.emitted))
    try:
        await asyncio.wait({task, emitted}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the source crashed: say why
        assert emitted.done(), "the source did not emit in time"
    finally:
        task.cancel()
        emitted.cancel()
        await asyncio.gather(task, emitted, return_exceptions=True)


async def _wait(event: asyncio.Event) -> None:
    await event.wait()


async def test_every_batch_reaches_every_live_sink_and_the_journal(
        writer: JournalWriter) -> None:
    """Each batch goes to both live sinks, unchanged, and to the journal."""
    events = Events()
    a, b = FakeLiveSink("a", events), FakeLiveSink("b", events)
    src = FakeSource("dev", [3, 5], events)
    flow = Flow([src], [], writer, [a, b], Metrics())
    flow.start()
    await run_source(flow, src)
    assert [len(x) for x, _ in a.published] == [3, 5]
    assert [len(x) for x, _ in b.published] == [3, 5]
    assert a.published[0][0] is b.published[0][0]
    assert await writer.flush(5)
    assert writer.journal.count() == 2


async def test_no_live_sink_is_fine(writer: JournalWriter) -> None:
    """A gateway without live sinks keeps its data in the journal only."""
    events = Events()
    src = FakeSource("dev", [2], events)
    flow = Flow([src], [], writer, [], Metrics())
    flow.start()
    await run_source(flow, src)
    assert await writer.flush(5)
    assert writer.journal.count() == 1


async def test_a_stage_command_reaches_the_source_write_port(writer: JournalWriter) -> None:
    """A command a stage decides is written to the named source's write-back port before
    the batch is kept; its trip record says it was sent and how long it took."""
    events = Events()
    live = FakeLiveSink("opcua", events)
    src = FakeSource("dev", [4], events)
    stages: list[Stage] = [StopOnAnything("dev")]
    flow = Flow([src], stages, writer, [live], Metrics())
    flow.start()
    await run_source(flow, src)
    assert [(c.source, c.action, c.reason) for c in src.commands] == [("dev", "stop", "il")]
    (_, records), = live.published
    (trip,) = records
    assert isinstance(trip, InterlockTrip)
    assert trip.action_ok and trip.reaction_ns > 0


async def test_a_failed_command_is_recorded_not_raised(writer: JournalWriter) -> None:
    """A device that refuses the command does not stop the data: the trip says it failed
    and the failure is counted."""
    events = Events()
    metrics = Metrics()
    live = FakeLiveSink("opcua", events)
    src = FakeSource("dev", [4], events, fail_writes="connection refused")
    flow = Flow([src], [StopOnAnything("dev")], writer, [live], metrics)
    flow.start()
    await run_source(flow, src)
    (_, records), = live.published
    assert isinstance(records[0], InterlockTrip) and not records[0].action_ok
    snap = metrics.snapshot(["edge_command_failures_total"])
    assert snap['edge_command_failures_total{action="stop",source="dev"}'] == 1.0
    assert await writer.flush(5)
    assert writer.journal.count() == 2  # the samples and the trip, kept anyway
