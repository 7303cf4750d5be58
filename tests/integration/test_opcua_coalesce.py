"""Tag writes coalesced to the subscribed clients' pace, seen by a real client (asyncua)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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

PRESSURE = 1  # etch1/pressure in demo_registry


class Seen:
    def __init__(self) -> None:
        self.values: list[ua.DataValue] = []

    def datachange_notification(self, node: object, val: object, data: Any) -> None:
        self.values.append(data.monitored_item.Value)


def micros(dt: datetime) -> int:
    aware = dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
    return (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def written(sink: Any) -> float:
    return float(sink.ctx.metrics.snapshot(["edge_opcua_updates_total"]).get(
        "edge_opcua_updates_total", 0.0))


async def test_a_tag_is_written_once_per_publishing_interval_with_its_latest_value(
        tmp_path: Path) -> None:
    """A tag changing every 10 ms, monitored with queue size 1 at a 1 s publishing
    interval, is written to the server at most about once a second (not every 50 ms
    round), and the client ends with the last value and its source timestamp; with
    ``coalesce_max_ms = 0`` the same load is written every round."""
    async def run(**cfg: Any) -> tuple[float, list[ua.DataValue], float, int]:
        async with running_sink(tmp_path / str(cfg), demo_registry(), FakeGateway(),
                                **cfg) as sink, Client(sink.endpoint, timeout=30) as c:
            idx = await c.get_namespace_index(NS_URI)
            seen = Seen()
            sub = await c.create_subscription(1000, seen)
            await sub.subscribe_data_change(
                [c.get_node(ua.NodeId("etch1/pressure", idx))], queuesize=1)
            await until(lambda: len(seen.values) >= 1, timeout=30)  # the initial value
            before = written(sink)
            t0 = time.monotonic()
            ts = time.time_ns()
            for i in range(300):
                ts = time.time_ns()
                sink.publish(SampleBatch([PRESSURE], [ts], [float(i)]), [])
                await asyncio.sleep(0.01)
            seconds = time.monotonic() - t0
            await until(lambda: any(dv.Value.Value == 299.0 for dv in seen.values),
                        timeout=30)
            writes = written(sink) - before
            with contextlib.suppress(Exception):
                await sub.delete()
            return writes, seen.values, seconds, ts

    writes, values, seconds, last_ts = await run()
    assert writes <= seconds / 1.0 + 3, (writes, seconds)
    last = values[-1]
    assert last.Value.Value == 299.0
    assert micros(last.SourceTimestamp) == last_ts // 1000
    values_seen = [dv.Value.Value for dv in values[1:]]
    assert values_seen == sorted(values_seen)  # never back in time

    uncoalesced, _, seconds, _ = await run(coalesce_max_ms=0)
    assert uncoalesced > 3 * (seconds / 1.0 + 3), (uncoalesced, seconds)
