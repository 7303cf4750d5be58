"""Client limits of the OPC-UA server, exercised by real clients over loopback (asyncua)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asyncua import Client, ua
from opcua_fixtures import (
    NS_URI,
    FakeGateway,
    demo_registry,
    running_sink,
    server_mode,  # noqa: F401  (every test in both server modes)
    until,
)

from edge.model import SampleBatch
from edge.sinks.opcua import OpcUaSink
from edge.sinks.opcua_limits import OpcUaLimits

LIMITS = OpcUaLimits(max_connections=8, max_sessions=2, max_subscriptions_per_session=2,
                     max_monitored_items_per_session=3, max_queue_size=10)
TAGS = ["etch1/chamber_temp", "etch1/pressure", "etch1/lot", "etch1/stop_coil",
        "stf/motor1/current"]


@contextlib.asynccontextmanager
async def client(sink: OpcUaSink) -> AsyncIterator[Client]:
    c = Client(sink.endpoint, timeout=30)
    await c.connect()
    try:
        yield c
    finally:
        with contextlib.suppress(Exception):
            await c.disconnect()


class Changes:
    def __init__(self) -> None:
        self.values: list[object] = []

    def datachange_notification(self, node: object, val: object, data: object) -> None:
        self.values.append(val)


def refused(sink: OpcUaSink, limit: str) -> float:
    return sink.ctx.metrics.snapshot(["edge_opcua_refused_total"]).get(
        f'edge_opcua_refused_total{{limit="{limit}"}}', 0.0)


async def test_a_client_past_each_limit_is_refused_and_the_others_keep_their_data(
        tmp_path: Path) -> None:
    """Past max_sessions a session is BadTooManySessions, past the per-session subscription
    limit BadTooManySubscriptions, past the monitored-item limit the extra items (only them)
    are BadTooManyMonitoredItems; each refusal is counted, a client hammering the session
    limit gets the same answer every time, and a well-behaved client's subscription keeps
    receiving values throughout."""
    async with (running_sink(tmp_path, demo_registry(), FakeGateway(), limits=LIMITS) as sink,
                client(sink) as good):
        idx = await good.get_namespace_index(NS_URI)
        nodes = [good.get_node(ua.NodeId(t, idx)) for t in TAGS]
        changes = Changes()
        sub = await good.create_subscription(100, changes)
        results = await sub.subscribe_data_change(nodes)
        created = [r for r in results if not isinstance(r, ua.StatusCode)]
        assert len(created) == 3
        assert [r.name for r in results if isinstance(r, ua.StatusCode)] == [
            "BadTooManyMonitoredItems"] * 2
        assert refused(sink, "max_monitored_items_per_session") == 2
        await good.create_subscription(100, Changes())
        with pytest.raises(ua.uaerrors.BadTooManySubscriptions):
            await good.create_subscription(100, Changes())
        assert refused(sink, "max_subscriptions_per_session") == 1

        async with client(sink):
            for _ in range(5):  # a misbehaving client retrying in a loop
                with pytest.raises(ua.uaerrors.BadTooManySessions):
                    async with client(sink):
                        pass
            assert refused(sink, "max_sessions") == 5

        sink.publish(SampleBatch([1], [1_700_000_000_000_000_000], [42.5]), [])
        await until(lambda: 42.5 in changes.values, timeout=30)
        # the second session closed: its slot is free again
        async with client(sink) as late:
            assert await late.get_namespace_index(NS_URI) == idx


async def test_a_subscription_gets_at_least_the_minimum_publishing_interval(
        tmp_path: Path) -> None:
    """A client asking for a 1 ms publishing interval is revised to the configured
    minimum: the server publishes at that rate and says so in the revised interval."""
    async with (running_sink(tmp_path, demo_registry(), FakeGateway(),
                             limits=OpcUaLimits(min_publishing_interval_ms=250)) as sink,
                client(sink) as c):
        sub = await c.create_subscription(1, Changes())
        assert sink.server is not None
        internal = sink.server.iserver.subscription_service.subscriptions[
            sub.subscription_id]
        assert internal.data.RevisedPublishingInterval == 250
