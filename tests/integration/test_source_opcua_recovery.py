"""OPC-UA client source recovery on a live connection: the simulated PLC closes our
session or deletes our subscription under us (tests/node/opcua_server.js methods
DropSessions, DropSubscriptions), the TCP connection staying up."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua
from structlog.testing import capture_logs

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from opcua_client_peers import BAD_NC, GOOD, Collector, build, plc_config, running, until
from peers import NodeOpcUaServer, start_node_opcua_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEEPALIVE_S = 1.0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NodeOpcUaServer]:
    server = await start_node_opcua_server(tmp_path_factory.mktemp("plc"))
    try:
        yield server
    finally:
        await server.kill()


async def drop(plc: NodeOpcUaServer, what: str) -> int:
    """Call the PLC's DropSessions/DropSubscriptions from a session of our own."""
    async with Client(plc.endpoint, timeout=30) as admin:
        obj = await admin.nodes.objects.get_child(["1:PLC"])
        count: int = await obj.call_method(ua.NodeId.from_string(f"ns=1;s=PLC.{what}"))
        return count


@pytest.mark.parametrize(("what", "statuses"), [
    # a Publish pending when the session closes gets BadSessionClosed, a later one
    # BadSessionIdInvalid: which one comes first depends on timing
    ("DropSessions", ("BadSessionIdInvalid", "BadSessionClosed")),
    ("DropSubscriptions", ("BadNoSubscription",))])
async def test_server_dropping_our_session_or_subscription_is_recovered(
        plc: NodeOpcUaServer, tmp_path: Path, what: str, statuses: tuple[str, ...]) -> None:
    """When the server closes our session (BadSessionIdInvalid/Closed) or deletes our subscription
    (its Publish answers BadNoSubscription) on a live connection, every tag is Bad within
    two keepalive periods and Good again from a new session without restarting the source;
    the log names the server's status."""
    source, tags = build(plc_config(plc.endpoint, keepalive_s=KEEPALIVE_S, timeout_s=2.0),
                         tmp_path)
    emit = Collector()
    counter = tags.id_of("plc/counter")
    with capture_logs() as logs:
        async with running(source, emit):
            await until(lambda: len(emit.of(counter)) >= 3, 60, "values first")
            mark = len(emit.batches)
            assert await drop(plc, what) >= 1
            took = await until(lambda: any(q == BAD_NC for _, _, q in emit.of(counter, mark)),
                               2 * KEEPALIVE_S + 5, "Bad after the drop")
            bad_at = len(emit.batches)
            back = await until(lambda: any(q == GOOD for _, _, q in emit.of(counter, bad_at)),
                               60, "Good values from a new session")
    assert took <= 2 * KEEPALIVE_S + 1.0, took
    assert took + back <= 2 * KEEPALIVE_S + 10.0, (took, back)
    last = emit.batches[bad_at - 1]
    assert set(last.tag_id.tolist()) == set(source.tag_ids.tolist())
    assert (last.quality == BAD_NC).all()
    missing = [e for e in logs if e["event"] == "opcua data missing"]
    assert len(missing) == 1, missing
    assert any(s in missing[0]["reason"] for s in statuses), missing[0]["reason"]
    assert source.sessions == 2
