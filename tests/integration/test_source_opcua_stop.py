"""Stopping the OPC-UA client source (the daemon's SIGTERM, a test's teardown) while data
flows: it ends at once, and leaves none of asyncua's background loops behind, across
reconnects too (tests/node/opcua_server.js as the PLC)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio

from edge.model import Record, SampleBatch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from opcua_client_peers import (
    Collector,
    asyncua_loops,
    build,
    plc_config,
    running,
    stopped,
    until,
)
from peers import NodeOpcUaServer, start_node_opcua_server

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NodeOpcUaServer]:
    server = await start_node_opcua_server(tmp_path_factory.mktemp("plc"))
    try:
        yield server
    finally:
        await server.kill()


class SlowEmit(Collector):
    """An emit that takes 0.3 s once (the journal pushing back) and asks for the source to
    be stopped as it returns, while further publish answers wait in the source's queue."""

    def __init__(self) -> None:
        super().__init__()
        self.task: asyncio.Task[None] | None = None
        self.armed = False

    async def __call__(self, batch: SampleBatch | None, records: Sequence[Record], /, *,
                       checkpoint: tuple[str, bytes] | None = None) -> None:
        await super().__call__(batch, records, checkpoint=checkpoint)
        if self.armed and self.task is not None:
            self.armed = False
            await asyncio.sleep(0.3)  # publishes every 100 ms queue up meanwhile
            asyncio.get_running_loop().call_soon(self.task.cancel)


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
async def test_stopping_the_source_while_values_wait_in_its_queue_ends_it(
        plc: NodeOpcUaServer, tmp_path: Path, mode: str) -> None:
    """A stop that arrives while values are queued for the source ends the source within
    seconds (Python 3.11's asyncio.wait_for swallowed a cancel that met a queued value,
    and the source then ran on forever: the test teardown and SIGTERM hung)."""
    raw = plc_config(plc.endpoint, mode=mode)
    raw["groups"][0]["poll_interval_ms"] = 50  # type: ignore[index]
    source, _ = build(raw, tmp_path)
    for _attempt in range(3):
        emit = SlowEmit()
        task = asyncio.create_task(source.run(emit))
        emit.task = task
        await until(lambda: len(emit.batches) >= 3, 60, "values first")  # noqa: B023
        emit.armed = True
        done, _ = await asyncio.wait({task}, timeout=15)
        assert done, "the source ignored its cancellation and kept running"
        assert task.cancelled()
    await until(lambda: asyncua_loops() == 0, 10, "no asyncua loop left")


async def test_reconnects_leave_no_asyncua_loop_behind(
        plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """Each lost session's asyncua loops (publish, keepalive supervisor, stale-subscription
    watchdog, channel renewal) end with it: a PLC that flaps for a week does not pile up
    one set of tasks per reconnect."""
    source, _ = build(plc_config(plc.endpoint, keepalive_s=1.0, timeout_s=2.0), tmp_path)
    emit = Collector()
    async with running(source, emit) as task:
        await until(lambda: source.client is not None, 60, "a first session")
        per_session = asyncua_loops()
        for n in range(2, 5):
            client = source.client
            assert client is not None
            client.disconnect_socket()  # the connection drops under the session
            await until(lambda: source.sessions == n and source.client is not None,  # noqa: B023
                        60, f"session {n}")
        await until(lambda: asyncua_loops() <= per_session, 10,
                    "the lost sessions' asyncua loops ended")
        took = await stopped(task)
    assert took < 10
    await until(lambda: asyncua_loops() == 0, 10, "no asyncua loop left after the stop")
