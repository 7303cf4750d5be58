"""The OPC-UA fast path's pace per tag (edge.sinks.opcua_writer), from asyncua's subscriptions."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
from asyncua import ua

from edge.model import SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sinks.opcua_writer import TagWriter

MS = 1_000_000


def item(node: ua.NodeId, queue: int, mode: ua.MonitoringMode = ua.MonitoringMode.Reporting,
         attr: ua.AttributeIds = ua.AttributeIds.Value) -> SimpleNamespace:
    return SimpleNamespace(read_value_id=ua.ReadValueId(NodeId=node, AttributeId=attr),
                           queue_size=queue, mode=mode)


def subscription(publishing_ms: float, *items: SimpleNamespace) -> SimpleNamespace:
    return SimpleNamespace(
        data=SimpleNamespace(RevisedPublishingInterval=publishing_ms),
        monitored_item_srv=SimpleNamespace(_monitored_items=dict(enumerate(items))))


class FakeServer:
    """What ``write_due`` uses of asyncua's Server: subscriptions and the value write."""

    def __init__(self, subs: list[SimpleNamespace]) -> None:
        self.iserver = SimpleNamespace(subscription_service=SimpleNamespace(
            subscriptions=dict(enumerate(subs))))
        self.writes: list[tuple[ua.NodeId, Any]] = []

    async def write_attribute_value(self, nodeid: ua.NodeId, dv: ua.DataValue) -> None:
        self.writes.append((nodeid, dv.Value.Value))


def writer(n: int = 5, coalesce_max_s: float = 1.0) -> tuple[TagWriter, list[ua.NodeId]]:
    reg = TagRegistry()
    for i in range(n):
        reg.add("dev", f"t{i}")
    w = TagWriter(reg, Metrics(), update_interval_s=0.05, slice_budget_s=0.001,
                  update_slice=500, coalesce_max_s=coalesce_max_s)
    nodes = [ua.NodeId(f"dev/t{i}", 2) for i in range(n)]
    w.bind(nodes)
    return w, nodes


def test_a_tag_is_paced_by_its_fastest_monitored_item() -> None:
    """Each tag's pace is the fastest of its items' publishing interval / queue size,
    within [update interval, coalesce max]; unmonitored tags, disabled items and other
    attributes keep the update interval; coalesce max 0 turns it off."""
    w, nodes = writer()
    subs = [
        subscription(1000, item(nodes[0], 1), item(nodes[1], 10), item(nodes[2], 1),
                     item(nodes[3], 1, mode=ua.MonitoringMode.Disabled),
                     item(nodes[4], 1, attr=ua.AttributeIds.DisplayName)),
        subscription(250, item(nodes[2], 1)),
        subscription(60_000, item(nodes[0], 1)),
    ]
    server: Any = FakeServer(subs)
    assert list(w._paces(server.iserver.subscription_service.subscriptions)) == [
        1000 * MS, 100 * MS, 250 * MS, 50 * MS, 50 * MS]
    assert w._paces({0: subscription(10_000, item(nodes[0], 1))})[0] == 1000 * MS
    assert w._paces({0: subscription(1000, item(nodes[0], 1000))})[0] == 50 * MS
    off, _ = writer(coalesce_max_s=0.0)
    asyncio.run(off.write_due(server))
    assert list(off._pace) == [50 * MS] * 5


def test_changes_between_two_writes_are_written_once_with_the_latest_value() -> None:
    """A monitored tag that changed three times since its last write is not written
    again before its pace; then once, with its latest value. A tag nobody monitors is
    written one update interval later."""
    w, nodes = writer(2)
    server: Any = FakeServer([subscription(1000, item(nodes[0], 1))])

    async def scenario() -> None:
        w.publish(SampleBatch([0, 1], [1, 1], [1.0, 1.0]))
        assert await w.write_due(server) == 2
        for k, v in enumerate((2.0, 3.0, 4.0)):
            w.publish(SampleBatch([0, 1], [2 + k, 2 + k], [v, v]))
        assert await w.write_due(server) == 0  # within the update interval: none
        w._written -= 50 * MS  # one update interval later
        assert await w.write_due(server) == 1  # the unmonitored tag only
        assert server.writes[-1] == (nodes[1], 4.0)
        due = w.next_due_s()
        assert due is not None and 0.5 < due <= 0.95
        w._written[0] -= 950 * MS  # its pace has passed
        assert await w.write_due(server) == 1
        assert server.writes[-1] == (nodes[0], 4.0)
        assert w.next_due_s() is None

    asyncio.run(scenario())
    assert np.count_nonzero(w._dirty) == 0
