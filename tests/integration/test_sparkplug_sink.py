"""Sparkplug B edge node sink against a real mosquitto, decoded by Eclipse Tahu's JS codec.

The test plays the primary host: it subscribes to ``spBv1.0/#``, decodes every message
with the independent codec (tests/node/sparkplug_codec.js), publishes its STATE and
sends a rebirth NCMD encoded by that codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from edge.components import BuildContext
from edge.config import convert
from edge.journal import Journal, JournalWriter
from edge.journal.entries import Entry
from edge.model import SampleBatch, TagRegistry
from edge.runtime.links import Backoff
from edge.runtime.metrics import Metrics
from edge.sinks.delivery import deliver
from edge.sinks.sparkplug import SparkplugSink, SparkplugSinkConfig

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import Peer, SparkplugCodec, free_port, start_mosquitto

WAIT_S = 30.0  # generous: the machine is shared


@dataclass
class Msg:
    topic: str
    kind: str
    payload: dict[str, Any]


def registry() -> TagRegistry:
    tags = TagRegistry()
    tags.add("etch1", "chamber_temp", unit="degC", low=0.0, high=400.0)
    tags.add("etch1", "rf_on", dtype="bool")
    tags.add("press2", "force", unit="kN", dtype="int32")
    return tags


def make_sink(port: int, state_dir: Path, **over: object) -> SparkplugSink:
    raw: dict[str, object] = {"name": "sp", "group_id": "plant1", "edge_node_id": "gw1",
                              "brokers": [f"mqtt://127.0.0.1:{port}"], **over}
    cfg = convert(raw, SparkplugSinkConfig, "sinks.sp")
    ctx = BuildContext("gw1", registry(), Metrics(), state_dir, lambda name: "")
    return cfg.build(ctx)


class Host:
    """The primary host: every message on spBv1.0/#, decoded by the independent codec."""

    def __init__(self, client: aiomqtt.Client, codec: SparkplugCodec) -> None:
        self.client = client
        self.codec = codec
        self.seen: list[Msg] = []
        self.queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def pump(self) -> None:
        async for m in self.client.messages:
            topic = m.topic.value
            parts = topic.split("/")
            if parts[1] == "STATE":
                continue
            raw = m.payload if isinstance(m.payload, bytes) else b""
            msg = Msg(topic, parts[2], self.codec.decode(raw))
            self.seen.append(msg)
            await self.queue.put(msg)

    async def next(self, kind: str) -> Msg:
        async def find() -> Msg:
            while True:
                m = await self.queue.get()
                if m.kind == kind:
                    return m
        return await asyncio.wait_for(find(), WAIT_S)

    async def state(self, online: bool, ts: int) -> None:
        await self.client.publish("spBv1.0/STATE/scada",
                                  json.dumps({"online": online, "timestamp": ts}),
                                  qos=1, retain=True)

    async def rebirth(self) -> None:
        body = self.codec.encode({"timestamp": int(time.time() * 1000), "metrics": [
            {"name": "Node Control/Rebirth", "type": "Boolean", "value": True}]})
        await self.client.publish("spBv1.0/plant1/NCMD/gw1", body, qos=0)


@contextlib.asynccontextmanager
async def host(port: int, codec: SparkplugCodec) -> AsyncIterator[Host]:
    async with aiomqtt.Client("127.0.0.1", port, identifier="scada") as client:
        await client.subscribe("spBv1.0/#", qos=1)
        h = Host(client, codec)
        task = asyncio.create_task(h.pump())
        try:
            yield h
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


def metric(payload: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in payload["metrics"] if m.get("name") == name)


def check_seq_rules(seen: list[Msg]) -> None:
    """tck-id-topics-nbirth-seq-num, -dbirth-seq, -ndata/ddata-seq-num, -ndeath-seq."""
    prev: int | None = None
    for m in seen:
        if m.kind in ("NCMD", "DCMD"):  # the host's own commands
            continue
        if m.kind == "NDEATH":
            assert "seq" not in m.payload or m.payload["seq"] is None, m
            prev = None
            continue
        seq = int(m.payload["seq"])
        assert 0 <= seq <= 255
        if m.kind == "NBIRTH":
            assert seq == 0, m
        elif prev is not None:
            assert seq == (prev + 1) % 256, (m, prev)
        prev = seq


async def test_births_data_rebirth_replay_host_offline_and_shutdown(
        broker: Peer, codec: SparkplugCodec, tmp_path: Path) -> None:
    """The full session with a primary host: births only once the host is online, data by
    exception, rebirth with the same bdSeq, historical replay, NDEATH on host offline and
    on shutdown, bdSeq persisted and incremented per connect; seq rules hold throughout."""
    sink = make_sink(broker.port, tmp_path, primary_host_id="scada")
    async with host(broker.port, codec) as h:
        await h.state(False, 1)
        run = asyncio.create_task(sink.run())
        try:
            # data while not born is not published (it stays in the journal)
            sink.publish(SampleBatch([0], [time.time_ns()], [20.0]), [])
            await h.state(True, 2)
            nbirth = await h.next("NBIRTH")
            # tck-id-message-flow-edge-node-birth-publish-phid-wait: nothing before the birth
            assert h.seen[0].kind == "NBIRTH"
            assert nbirth.topic == "spBv1.0/plant1/NBIRTH/gw1"
            assert metric(nbirth.payload, "bdSeq") == {
                "name": "bdSeq", "type": "Int64", "value": "0", "alias": "0",
                "timestamp": nbirth.payload["timestamp"]}
            rebirth = metric(nbirth.payload, "Node Control/Rebirth")
            assert rebirth["value"] is False and "alias" not in rebirth  # no alias for it
            assert (tmp_path / "sparkplug" / "sp.bdseq").read_text().strip() == "0"
            d1, d2 = await h.next("DBIRTH"), await h.next("DBIRTH")
            assert {d1.topic, d2.topic} == {"spBv1.0/plant1/DBIRTH/gw1/etch1",
                                            "spBv1.0/plant1/DBIRTH/gw1/press2"}
            etch = d1 if d1.topic.endswith("etch1") else d2
            temp = metric(etch.payload, "chamber_temp")
            assert temp["type"] == "Double" and temp["value"] == 20.0
            assert temp["properties"]["engUnit"] == {"type": "String", "value": "degC"}
            assert temp["properties"]["engHigh"] == {"type": "Double", "value": 400.0}
            assert metric(etch.payload, "rf_on")["type"] == "Boolean"
            aliases = {m["name"]: m["alias"] for m in etch.payload["metrics"]}

            # live by exception: 20.0 again is not sent, 21.5 and -7 are
            now = time.time_ns()
            await sink.connect()
            sink.publish(SampleBatch([0, 0, 2], [now, now + 1_000_000, now],
                                     [20.0, 21.5, -7.0]), [])
            data = [await h.next("DDATA"), await h.next("DDATA")]
            by_topic = {m.topic.rsplit("/", 1)[1]: m.payload for m in data}
            (t,) = by_topic["etch1"]["metrics"]
            assert (t["alias"], t["value"], t.get("name")) == (aliases["chamber_temp"], 21.5,
                                                                None)
            assert t["timestamp"] == str((now + 1_000_000) // 1_000_000)
            assert by_topic["press2"]["metrics"][0]["value"] == -7

            # store-and-forward: a sample from before the birth is replayed as historical
            early = SampleBatch([2], [now - 60_000_000_000], [5.0])
            await sink.write([Entry(1, "samples", now, 1, early.to_bytes())])
            hist = await h.next("DDATA")
            (hm,) = hist.payload["metrics"]
            assert hm["isHistorical"] is True and hm["value"] == 5

            # rebirth: births again, same bdSeq, no reconnect (no NDEATH in between)
            await h.rebirth()
            again = await h.next("NBIRTH")
            assert metric(again.payload, "bdSeq")["value"] == "0"
            await h.next("DBIRTH")
            await h.next("DBIRTH")

            # host offline: NDEATH carrying this connection's bdSeq, then a new connect
            await h.state(False, 3)
            death = await h.next("NDEATH")
            assert [m["name"] for m in death.payload["metrics"]] == ["bdSeq"]
            assert death.payload["metrics"][0]["value"] == "0"
            await h.state(True, 4)
            reborn = await h.next("NBIRTH")
            assert metric(reborn.payload, "bdSeq")["value"] == "1"
            await h.next("DBIRTH")
            await h.next("DBIRTH")
            assert (tmp_path / "sparkplug" / "sp.bdseq").read_text().strip() == "1"
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
        # clean shutdown: NDEATH with the current bdSeq
        last = await h.next("NDEATH")
        assert last.payload["metrics"][0]["value"] == "1"
        check_seq_rules(h.seen)


CHILD = """
import asyncio, sys
sys.path[:0] = {paths!r}
from tests.integration.test_sparkplug_sink import make_sink
from pathlib import Path
asyncio.run(make_sink({port}, Path({state!r})).run())
"""


async def test_kill_9_delivers_the_will_with_the_births_bdseq(
        broker: Peer, codec: SparkplugCodec, tmp_path: Path) -> None:
    """tck-id-message-flow-edge-node-birth-publish-will-message-*: kill -9 of the node gives
    the host an NDEATH (the Will) with the bdSeq of its NBIRTH; a restart uses the next."""
    root = str(Path(__file__).resolve().parents[2])
    code = CHILD.format(paths=[root, *sys.path], port=broker.port, state=str(tmp_path))
    async with host(broker.port, codec) as h:
        for expected in ("0", "1"):
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code,
                                                        env=os.environ.copy())
            try:
                birth = await h.next("NBIRTH")
                assert metric(birth.payload, "bdSeq")["value"] == expected
                await h.next("DBIRTH")
                await h.next("DBIRTH")
            finally:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            will = await h.next("NDEATH")
            assert will.payload["metrics"][0]["value"] == expected
        check_seq_rules(h.seen)


def summary(seen: list[Msg]) -> str:
    """What the host saw, for a failure message: kind:seq per message."""
    return " ".join(f"{m.kind}:{m.payload.get('seq')}" for m in seen)


def values_of(seen: list[Msg], alias: str) -> list[tuple[float, bool]]:
    """(value, historical) of every DDATA metric with this alias, in arrival order."""
    return [(float(m["value"]), bool(m.get("isHistorical")))
            for msg in seen if msg.kind == "DDATA"
            for m in msg.payload["metrics"] if m.get("alias") == alias]


async def test_broker_outage_store_and_forward_loses_nothing(
        broker: Peer, codec: SparkplugCodec, tmp_path: Path) -> None:
    """Values made while the broker is down stay in the journal and reach the host after
    the next births, marked historical; every value arrives, live ones in order."""
    metrics = Metrics()
    journal = Journal(tmp_path / "journal.db", sinks=["sp"], metrics=metrics)
    writer = JournalWriter(journal, commit_interval_s=0.001, metrics=metrics)
    sink = make_sink(broker.port, tmp_path, primary_host_id="scada",
                     ack_timeout_s=2.0)
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(sink.run()),
             asyncio.create_task(deliver(writer, sink, metrics=metrics, idle_poll_s=0.01,
                                         backoff=Backoff(initial_s=0.05, max_s=0.5)))]
    seen: list[Msg] = []
    sent: list[float] = []

    async def feed(n: int) -> None:
        for _ in range(n):
            value = float(len(sent))
            sent.append(value)
            batch = SampleBatch([0], [time.time_ns()], [value])
            await writer.submit(batch)  # journal first, then the live sinks, as flow does
            sink.publish(batch, [])
            await asyncio.sleep(0.005)

    async def drained(h: Host) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while {v for v, _ in values_of(seen + h.seen, "2")} != set(sent):
            assert loop.time() < deadline, "not every value reached the host"
            await asyncio.sleep(0.05)

    try:
        async with host(broker.port, codec) as h:
            await h.state(True, 1)
            await h.next("NBIRTH")
            await feed(50)
            await drained(h)
            seen += h.seen
        port = broker.port
        broker.stop()
        await feed(100)  # the broker is away: into the journal only
        with start_mosquitto(tmp_path, port=port) as again:
            async with host(again.port, codec) as h2:
                await h2.state(True, 2)  # mosquitto lost the retained STATE with its restart
                await h2.next("NBIRTH")
                await feed(50)
                await drained(h2)
                seen += h2.seen
    finally:
        for t in tasks[1:]:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await writer.close()
        tasks[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[0]
    got = values_of(seen, "2")
    assert {v for v, _ in got} == set(sent)  # nothing lost
    live = [v for v, hist in got if not hist]
    assert live == sorted(live)  # live values in order
    outage = set(sent[50:150])
    assert all(hist for v, hist in got if v in outage)  # the backlog came back historical
    check_seq_rules(seen)


async def test_a_sample_journaled_before_its_live_publish_is_replayed_before_the_mark(
        broker: Peer, codec: SparkplugCodec, tmp_path: Path) -> None:
    """A journal entry the delivery loop reads before the live path has sent its sample
    is not acknowledged as sent live: the replay sends it (historical) before the QoS 1
    mark, so a connection lost right after the mark cannot lose it."""
    sink = make_sink(broker.port, tmp_path, primary_host_id="scada")
    async with host(broker.port, codec) as h:
        await h.state(True, 1)
        run = asyncio.create_task(sink.run())
        try:
            await h.next("NBIRTH")
            await sink.connect()
            now = time.time_ns()
            sink.publish(SampleBatch([0], [now], [1.0]), [])  # live: the tag is on the wire
            assert (await h.next("DDATA")).payload["metrics"][0]["value"] == 1.0
            later = SampleBatch([0], [now + 1_000_000], [2.0])  # committed, not yet live
            await sink.write([Entry(1, "samples", now, 1, later.to_bytes())])
            # write returned: the cursor may move past 2.0, so it must be on its way now
            (m,) = (await h.next("DDATA")).payload["metrics"]
            assert (m["value"], m["isHistorical"]) == (2.0, True)
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run


async def test_walks_to_the_next_broker_url(broker: Peer, codec: SparkplugCodec,
                                            tmp_path: Path) -> None:
    """With the first broker URL dead the node walks to the next one and is born there."""
    dead = f"mqtt://127.0.0.1:{free_port()}"
    sink = make_sink(broker.port, tmp_path,
                     brokers=[dead, f"mqtt://127.0.0.1:{broker.port}"])
    async with host(broker.port, codec) as h:
        run = asyncio.create_task(sink.run())
        try:
            birth = await h.next("NBIRTH")
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
    # the refused attempt on the dead URL sent no CONNECT: bdSeq 0 is still the first one's
    assert metric(birth.payload, "bdSeq")["value"] == "0"


async def mqtt_when_ready(stack: contextlib.AsyncExitStack, port: int) -> aiomqtt.Client:
    """The host's client once the cluster answers a QoS 1 round trip (JetStream elects its
    meta leader and makes the $MQTT_* streams first: seconds on a loaded machine)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while True:
        inner = contextlib.AsyncExitStack()
        try:
            client = await inner.enter_async_context(
                aiomqtt.Client("127.0.0.1", port, identifier="scada", timeout=10))
            await client.publish("probe/ready", b"1", qos=1)
        except aiomqtt.MqttError:
            with contextlib.suppress(Exception):
                await inner.aclose()
            assert loop.time() < deadline, "NATS cluster's MQTT never became ready"
            await asyncio.sleep(0.5)
            continue
        stack.push_async_exit(inner)
        return client
