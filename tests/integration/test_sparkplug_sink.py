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
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edge.components import BuildContext
from edge.config import convert
from edge.journal.entries import Entry
from edge.model import SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sinks.sparkplug import SparkplugSink, SparkplugSinkConfig

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import Peer, SparkplugCodec, sparkplug_node_path, start_mosquitto

WAIT_S = 30.0  # generous: the machine is shared


@dataclass
class Msg:
    topic: str
    kind: str
    payload: dict[str, Any]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Peer]:
    sparkplug_node_path()  # skip early when the codec is not installed
    with start_mosquitto(tmp_path) as peer:
        yield peer


@pytest.fixture
def codec() -> Iterator[SparkplugCodec]:
    c = SparkplugCodec()
    yield c
    c.close()


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
            with contextlib.suppress(asyncio.CancelledError):
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
            assert metric(nbirth.payload, "Node Control/Rebirth")["value"] is False
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
