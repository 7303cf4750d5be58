"""bdSeq counts MQTT CONNECT packets (Sparkplug 3.0), seen where the TCK sees it: a tap in
front of mosquitto records every CONNECT and its Will, decoded by Eclipse Tahu's JS codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from mqtt_tap import ConnectTap
from test_sparkplug_sink import host, metric, registry

from edge.components import BuildContext
from edge.config import convert
from edge.runtime.links import Backoff
from edge.runtime.metrics import Metrics
from edge.sinks.sparkplug import SparkplugSink, SparkplugSinkConfig

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import Peer, SparkplugCodec

WAIT_S = 60.0


def fast_sink(port: int, state_dir: Path) -> tuple[SparkplugSink, Metrics]:
    """An edge node whose broker link retries every few tens of ms."""
    cfg = convert({"name": "sp", "group_id": "plant1", "edge_node_id": "gw1",
                   "brokers": [f"mqtt://127.0.0.1:{port}"]}, SparkplugSinkConfig, "sinks.sp")
    metrics = Metrics()
    metrics.links.open("sink:sp/broker", Backoff(initial_s=0.01, max_s=0.05))
    return cfg.build(BuildContext("gw1", registry(), metrics, state_dir, lambda n: "")), metrics


async def until(what: str, ok: object) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not ok():  # type: ignore[operator]
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def will_bdseqs(tap: ConnectTap, decoder: SparkplugCodec) -> list[int]:
    out = []
    for c in tap.connects:
        assert c.will_topic == "spBv1.0/plant1/NDEATH/gw1"
        (m,) = decoder.decode(c.will_payload)["metrics"]
        assert (m["name"], m["type"]) == ("bdSeq", "Int64")
        out.append(int(m["value"]))
    return out


async def stop(run: asyncio.Task[None]) -> None:
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run


async def test_bdseq_counts_connect_packets_not_refused_attempts(
        broker: Peer, codec: SparkplugCodec, tmp_path: Path) -> None:
    """tck-id-topics-nbirth-bdseq-increment, -will-message-payload-bdSeq, -nbirth-bdseq-
    matching: broker down for 10+ attempts (no CONNECT sent), then 2 CONNECTs refused by
    CONNACK, then accepted: the Wills carry 0, 1, 2, the NBIRTH 2; a restart goes on at 3."""
    tap = ConnectTap(broker.port)
    await tap.start()
    await tap.stop_listening()  # connects to tap.port are refused: the broker is down
    sink, metrics = fast_sink(tap.port, tmp_path)
    link = metrics.links.open("sink:sp/broker")
    try:
        async with host(broker.port, codec) as h:
            run = asyncio.create_task(sink.run())
            try:
                await until("10 refused attempts", lambda: link.state.attempt >= 10)
                tap.refuse_connack = 2
                await tap.listen()
                birth = await h.next("NBIRTH")
            finally:
                await stop(run)
            assert will_bdseqs(tap, codec) == [0, 1, 2]
            assert metric(birth.payload, "bdSeq")["value"] == "2"
            assert (tmp_path / "sparkplug" / "sp.bdseq").read_text().strip() == "2"

            again, _ = fast_sink(tap.port, tmp_path)  # a restart of the gateway
            run = asyncio.create_task(again.run())
            try:
                birth = await h.next("NBIRTH")
            finally:
                await stop(run)
            assert will_bdseqs(tap, codec) == [0, 1, 2, 3]
            assert metric(birth.payload, "bdSeq")["value"] == "3"
    finally:
        await tap.close()
