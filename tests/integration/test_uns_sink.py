"""UNS JSON publisher sink against a real mosquitto (and the 3-node NATS cluster), read by
real subscribers (aiomqtt/paho, and mosquitto_sub for the Will)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edge.asset import AssetConfig, AssetLevels
from edge.components import BuildContext
from edge.config import convert
from edge.journal import Journal, JournalWriter
from edge.model import (
    Quality,
    Quarantine,
    SampleBatch,
    SpcViolation,
    TagRegistry,
    TextValue,
)
from edge.runtime.links import Backoff
from edge.runtime.metrics import Metrics
from edge.sinks.delivery import deliver
from edge.sinks.uns import UnsSink
from edge.sinks.uns_config import UnsSinkConfig

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import Peer, require, start_mosquitto

WAIT_S = 60.0  # generous: the machine is shared
PATH = "acme/dresden/etch/line1/cell3"
QA = "acme/dresden/metrology/qa/cmm"


def asset() -> AssetConfig:
    return AssetConfig(enterprise="acme", site="dresden", area="etch", line="line1",
                       cell="cell3", devices={"cmm1": AssetLevels(area="metrology",
                                                                  line="qa", cell="cmm")})


def registry() -> TagRegistry:
    tags = TagRegistry()
    tags.add("etch1", "chamber_temp", unit="degC")
    tags.add("etch1", "rf_on", dtype="bool")
    tags.add("cmm1", "count", dtype="int32")
    return tags


def make_sink(ports: list[int], state_dir: Path, **over: object) -> UnsSink:
    raw: dict[str, object] = {"name": "uns",
                              "brokers": [f"mqtt://127.0.0.1:{p}" for p in ports], **over}
    cfg = convert(raw, UnsSinkConfig, "sinks.uns")
    ctx = BuildContext("gw1", registry(), Metrics(), state_dir, lambda name: "",
                       asset=asset())
    return cfg.build(ctx)


class Subscriber:
    """Every message on ``#`` (JSON decoded), with the retained flag."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seen: list[tuple[str, dict[str, Any], bool]] = []

    async def pump(self) -> None:
        async for m in self.client.messages:
            raw = m.payload if isinstance(m.payload, bytes) else b""
            self.seen.append((m.topic.value, json.loads(raw), bool(m.retain)))

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [doc for t, doc, _ in self.seen if t == topic]

    async def until(self, what: str, cond: Any, timeout: float = WAIT_S) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not cond():
            assert loop.time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def subscriber(port: int, ident: str, *, clean: bool = True,
                     topic: str = "acme/#") -> AsyncIterator[Subscriber]:
    async with aiomqtt.Client("127.0.0.1", port, identifier=ident, clean_session=clean,
                              timeout=20) as client:
        await client.subscribe(topic, qos=1)
        s = Subscriber(client)
        task = asyncio.create_task(s.pump())
        try:
            yield s
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


@contextlib.asynccontextmanager
async def running(*coros: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield
    finally:
        for t in reversed(tasks):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Peer]:
    with start_mosquitto(tmp_path) as peer:
        yield peer


def batch(tag: int, value: float, quality: int = 0) -> SampleBatch:
    return SampleBatch([tag], [time.time_ns()], [value], [quality])


async def test_latest_values_arrive_and_a_late_subscriber_gets_them_retained(
        broker: Peer, tmp_path: Path) -> None:
    """Values arrive as JSON under <asset path>/<device>/<tag> (value, quality, ts, unit;
    a text tag's string too);
    a subscriber that comes later gets each tag's latest value, retained, and the
    gateway's online status."""
    sink = make_sink([broker.port], tmp_path)
    async with subscriber(broker.port, "early") as early, running(sink.run()):
        await early.until("online status",
                          lambda: early.on(f"{PATH}/gw1/status") and
                          early.on(f"{PATH}/gw1/status")[-1]["online"])
        sink.publish(batch(0, 21.5), [])
        sink.publish(batch(1, 1.0), [])
        sink.publish(batch(2, 7.0), [])
        sink.publish(SampleBatch([], [], []),
                     [TextValue(time.time_ns(), "etch1", "recipe", "ox-12", 0)])
        await early.until("four values", lambda: len(
            [t for t, _, _ in early.seen if not t.endswith("/status")]) >= 4)
        assert early.on(f"{PATH}/etch1/recipe")[-1]["value"] == "ox-12"
        temp = early.on(f"{PATH}/etch1/chamber_temp")[-1]
        assert temp["value"] == 21.5 and temp["quality"] == "good" and temp["unit"] == "degC"
        assert abs(temp["ts"] - time.time() * 1000) < 60_000
        assert early.on(f"{PATH}/etch1/rf_on")[-1]["value"] is True
        count = early.on(f"{QA}/cmm1/count")[-1]
        assert count["value"] == 7 and "unit" not in count
        sink.publish(batch(0, float("nan"), Quality.BAD_TIMEOUT), [])
        await early.until("the bad sample",
                          lambda: len(early.on(f"{PATH}/etch1/chamber_temp")) >= 2)
        async with subscriber(broker.port, "late") as late:
            await late.until("retained values", lambda: len(late.seen) >= 5)
            assert late.on(f"{PATH}/etch1/recipe")[0]["value"] == "ox-12"
            bad = late.on(f"{PATH}/etch1/chamber_temp")
            assert bad == [{"value": None, "quality": "bad_timeout", "ts": bad[0]["ts"],
                            "unit": "degC"}]
            assert all(retained for _, _, retained in late.seen)
            assert late.on(f"{PATH}/gw1/status")[0]["online"] is True


async def test_publish_rate_per_tag_is_bounded_and_coalesces_to_the_latest(
        broker: Peer, tmp_path: Path) -> None:
    """1,000 changes of one tag in a burst, at max_rate_hz = 5: a handful of messages,
    the last one the latest value; publish never blocks."""
    sink = make_sink([broker.port], tmp_path, max_rate_hz=5.0)
    async with subscriber(broker.port, "rate") as sub, running(sink.run()):
        await sub.until("online", lambda: sub.on(f"{PATH}/gw1/status"))
        t0 = time.monotonic()
        for i in range(1000):
            sink.publish(batch(0, float(i)), [])
            if i % 100 == 0:
                await asyncio.sleep(0.1)
        took = time.monotonic() - t0
        topic = f"{PATH}/etch1/chamber_temp"
        await sub.until("the last value", lambda: sub.on(topic) and
                        sub.on(topic)[-1]["value"] == 999.0)
        elapsed = time.monotonic() - t0
    got = sub.on(topic)
    assert len(got) <= 5 * elapsed + 2, (len(got), elapsed)
    assert [d["value"] for d in got] == sorted(d["value"] for d in got)
    assert took < 5.0  # 1,000 calls plus the 1 s of sleeps: publish did not wait


def _records_run(writer: JournalWriter, sink: UnsSink, metrics: Metrics) -> Any:
    return deliver(writer, sink, metrics=metrics, idle_poll_s=0.01,
                   backoff=Backoff(initial_s=0.05, max_s=0.5))


def spc(i: int) -> SpcViolation:
    return SpcViolation(time.time_ns(), "etch1/chamber_temp", "rule1", float(i), 0.0, 1.0)


async def test_records_arrive_exactly_once_across_a_broker_restart(tmp_path: Path) -> None:
    """Records made while the broker is down wait in the journal (the sink's cursor) and
    arrive after it is back; every record exactly once, none retained, under the device's
    path (the gateway's own for a record about no device)."""
    persist = f"persistence true\npersistence_location {tmp_path}/\nautosave_interval 1\n"
    broker = start_mosquitto(tmp_path, extra=persist)
    metrics = Metrics()
    journal = Journal(tmp_path / "journal.db", sinks=["uns"], metrics=metrics)
    writer = JournalWriter(journal, commit_interval_s=0.001, metrics=metrics)
    sink = make_sink([broker.port], tmp_path, ack_timeout_s=5.0)
    assert sink.kinds == ("records",)
    sent = 0

    async def feed(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            await writer.submit([spc(sent)])
            sent += 1
        await writer.submit([Quarantine(time.time_ns(), "etch1", f"bad {sent}")])

    topic = f"{PATH}/etch1/records/spc_violation"
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(running(
                writer.run(), sink.run(), _records_run(writer, sink, metrics)))
            async with subscriber(broker.port, "mes", clean=False) as sub:
                await feed(20)
                await sub.until("20 records", lambda: len(sub.on(topic)) >= 20)
            port = broker.port
            broker.stop()  # SIGTERM: mosquitto saves the subscriber's session
            await feed(30)  # the broker is away: journal only
            broker = start_mosquitto(tmp_path, port=port, extra=persist)
            async with subscriber(broker.port, "mes", clean=False) as sub2:
                await sub2.until("50 records", lambda: len(sub.on(topic)) +
                                 len(sub2.on(topic)) >= 50)
                await asyncio.sleep(1.0)  # a duplicate would come now
                seen = sub.seen + sub2.seen
    finally:
        broker.stop()
        await writer.close()
    values = [d["value"] for t, d, _ in seen if t == topic]
    assert sorted(values) == [float(i) for i in range(50)]  # exactly once each
    assert len({d["id"] for t, d, _ in seen if t == topic}) == 50
    assert not any(retained for t, _, retained in seen if "/records/" in t)
    quarantines = [d for t, d, _ in seen if t == f"{PATH}/gw1/records/quarantine"]
    assert {q["reason"] for q in quarantines} == {"bad 20", "bad 50"}


CHILD = """
import asyncio, sys
sys.path[:0] = {paths!r}
from tests.integration.test_uns_sink import make_sink
from pathlib import Path
asyncio.run(make_sink([{port}], Path({state!r})).run())
"""


async def test_kill_9_leaves_the_will_offline_status_retained(
        broker: Peer, tmp_path: Path) -> None:
    """kill -9 of the gateway: mosquitto_sub sees the retained status go from online to
    offline (the Will), and a subscriber that comes later still sees offline."""
    mosquitto_sub = require("mosquitto_sub", "apt-get install -y mosquitto-clients")
    root = str(Path(__file__).resolve().parents[2])
    topic = f"{PATH}/gw1/status"
    watch = await asyncio.create_subprocess_exec(
        mosquitto_sub, "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic,
        stdout=asyncio.subprocess.PIPE)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD.format(paths=[root, *sys.path], port=broker.port,
                                           state=str(tmp_path)), env=os.environ.copy())
    try:
        assert watch.stdout is not None
        first = json.loads(await asyncio.wait_for(watch.stdout.readline(), WAIT_S))
        assert first["online"] is True and first["gateway"] == "gw1"
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        will = json.loads(await asyncio.wait_for(watch.stdout.readline(), WAIT_S))
        assert will["online"] is False
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        watch.kill()
        await watch.wait()
    last = await asyncio.create_subprocess_exec(
        mosquitto_sub, "-h", "127.0.0.1", "-p", str(broker.port), "-t", topic, "-C", "1",
        "-W", "30", stdout=asyncio.subprocess.PIPE)
    out, _ = await last.communicate()
    assert json.loads(out)["online"] is False


async def test_nats_cluster_values_and_records_reach_another_node(tmp_path: Path) -> None:
    """On the 3-node NATS cluster: the sink on node 1, a subscriber on node 3 gets the
    latest values and every record, and a late subscriber on node 2 the retained value."""
    from peers import start_nats_cluster
    from test_sparkplug_sink import mqtt_when_ready

    nodes = start_nats_cluster(tmp_path)
    try:
        async with contextlib.AsyncExitStack() as stack:
            await mqtt_when_ready(stack, nodes[2].port)  # the cluster answers QoS 1
            metrics = Metrics()
            journal = Journal(tmp_path / "journal.db", sinks=["uns"], metrics=metrics)
            writer = JournalWriter(journal, commit_interval_s=0.001, metrics=metrics)
            sink = make_sink([nodes[0].port], tmp_path, ack_timeout_s=15.0)
            sub = await stack.enter_async_context(subscriber(nodes[2].port, "far"))
            await stack.enter_async_context(running(
                writer.run(), sink.run(), _records_run(writer, sink, metrics)))
            try:
                topic = f"{PATH}/etch1/records/spc_violation"
                for i in range(20):
                    await writer.submit([spc(i)])
                sink.publish(batch(0, 42.0), [])
                await sub.until("records and value", lambda: len(sub.on(topic)) >= 20 and
                                sub.on(f"{PATH}/etch1/chamber_temp"))
                assert sorted(d["value"] for d in sub.on(topic)) == [float(i)
                                                                     for i in range(20)]
                async with subscriber(nodes[1].port, "late",
                                      topic=f"{PATH}/etch1/chamber_temp") as late:
                    await late.until("retained value", lambda: late.seen)
                    assert late.seen[0][1]["value"] == 42.0 and late.seen[0][2]
            finally:
                await writer.close()
    finally:
        for n in nodes:
            n.stop()


async def test_a_stalled_broker_coalesces_values_and_never_blocks_publish(
        broker: Peer, tmp_path: Path) -> None:
    """With the link to the broker stalled (a blackhole: nothing acknowledged), 5,000
    changes of one tag cost the fast path nothing and queue nothing: at most
    max_inflight publishes wait, the rest coalesce; once the link is back the subscriber
    gets the latest value."""
    from hw_sim.link import LinkProxy

    proxy = LinkProxy(0, "127.0.0.1", broker.port)
    await proxy.start()
    sink = make_sink([proxy.listen_port], tmp_path, max_inflight=5, ack_timeout_s=2.0,
                     max_rate_hz=1000.0)
    topic = f"{PATH}/etch1/chamber_temp"
    try:
        async with subscriber(broker.port, "watch") as sub, running(sink.run()):
            await sub.until("online", lambda: sub.on(f"{PATH}/gw1/status"))
            await proxy.set_mode("blackhole")
            t0 = time.monotonic()
            for i in range(5000):
                sink.publish(batch(0, float(i)), [])
                if i % 500 == 0:
                    await asyncio.sleep(0.05)  # let the flusher run: it fills its window
            took = time.monotonic() - t0
            assert int(sink.values._pending.sum()) <= 3  # one pending value per tag, no queue
            await asyncio.sleep(1.0)
            await proxy.set_mode("cut")  # drop the stalled connection; new ones pass
            await sub.until("the latest value", lambda: sub.on(topic) and
                            sub.on(topic)[-1]["value"] == 4999.0)
    finally:
        await proxy.close()
    assert took < 5.0  # 5,000 calls plus 0.5 s of sleeps
    assert len(sub.on(topic)) <= 5 + 2  # what was in flight, then the latest
