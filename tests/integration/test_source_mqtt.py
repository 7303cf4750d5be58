"""MQTT source against a real mosquitto with the hw_sim motor line publishing."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import aiomqtt
import pytest

from edge.components import BuildContext, Command
from edge.config import convert
from edge.model import Quarantine, Record, SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sources.mqtt import MqttSource, MqttSourceConfig
from hw_sim.baddata import BadData
from hw_sim.clock import SimClock
from hw_sim.motors import MOTOR_IDS, MotorLine
from hw_sim.motors_mqtt import MotorPublisher
from hw_sim.truth import TruthLog

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import Peer, start_mosquitto

FIELDS = [
    {"path": "current_a", "tag": "current_a", "unit": "A"},
    {"path": "state", "tag": "state",
     "enum": {"idle": 0, "inrush": 1, "running": 2, "stopped": 3}},
    {"path": "position_mm", "tag": "position_mm", "unit": "mm", "required": False},
]


def motors_config(port: int, *, batched: bool = False, **over: object) -> dict[str, object]:
    suffix = "batch" if batched else "telemetry"
    raw: dict[str, object] = {
        "name": "motors", "port": port, "client_id": "edge-motors", "clean_session": False,
        "qos": 1, "backoff_max_s": 0.5,
        "subscriptions": [{
            "topic": f"stf/+/+/{suffix}", "device": "{1}/{2}", "devices": list(MOTOR_IDS),
            "ts_field": "ts", "batched": batched, "fields": FIELDS,
        }],
        "commands": [{"action": "stop", "topic": "stf/command",
                      "payload": {"cmd": "stop", "target": "{target}"}}],
    }
    raw.update(over)
    return raw


class Collector:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.records: list[Record] = []

    async def __call__(self, batch: SampleBatch | None, records: Sequence[Record]) -> None:
        if batch is not None:
            self.batches.append(batch)
        self.records.extend(records)

    @property
    def samples(self) -> int:
        return sum(len(b) for b in self.batches)

    def quarantined(self) -> list[Quarantine]:
        return [r for r in self.records if isinstance(r, Quarantine)]


def build(raw: dict[str, object], tmp: Path) -> tuple[MqttSource, TagRegistry, Metrics]:
    cfg = convert(raw, MqttSourceConfig, "source 'motors'")
    tags, metrics = TagRegistry(), Metrics()
    cfg.declare_tags(tags)
    return cfg.build(BuildContext("gw", tags, metrics, tmp, lambda n: "")), tags, metrics


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Peer]:
    peer = start_mosquitto(tmp_path)
    yield peer
    peer.stop()


async def until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def task(coro: object) -> AsyncIterator[None]:
    t = asyncio.ensure_future(coro)  # type: ignore[call-overload]
    try:
        yield
    finally:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t


def motors(port: int, **kw: object) -> MotorPublisher:
    return MotorPublisher(MotorLine(seed=3), SimClock(speed=4.0), port=port, qos=1,
                          **kw)  # type: ignore[arg-type]


async def test_telemetry_of_all_motors_becomes_samples(broker: Peer, tmp_path: Path) -> None:
    """Every motor's current, state and position arrive as samples of its own tags."""
    src, tags, metrics = build(motors_config(broker.port), tmp_path)
    out = Collector()
    async with task(src.run(out)), task(motors(broker.port).run()):
        await until(lambda: len({int(t) for b in out.batches for t in b.tag_id}) >= 2 * 14)
    assert not out.quarantined()
    cur = tags.id_of("conveyor/belt/current_a")
    vals = [v for b in out.batches for v in b.value[b.tag_id == cur].tolist()]
    assert vals and all(0.0 <= v < 5.0 for v in vals)
    link = 'edge_link_up{link="source:motors"}'
    assert metrics.snapshot()[link] == 1.0


async def test_batched_arrays_become_samples(broker: Peer, tmp_path: Path) -> None:
    """Batched messages give one sample per array element with the payload's timestamps."""
    src, _tags, _ = build(motors_config(broker.port, batched=True), tmp_path)
    out = Collector()
    async with task(src.run(out)), task(motors(broker.port, mode="batch", batch_ticks=5).run()):
        await until(lambda: out.samples >= 14 * 5 * 2)
    ts = sorted({int(t) for b in out.batches for t in b.ts_ns})
    assert ts[1] - ts[0] == 100_000_000  # the motor tick, from the payload, not arrival


async def test_bad_payloads_quarantined_with_topic(broker: Peer, tmp_path: Path) -> None:
    """Spoiled messages are quarantined with topic and reason, one per defect; no crash."""
    truth = TruthLog()
    src, _, metrics = build(motors_config(broker.port), tmp_path)
    out = Collector()
    pub = motors(broker.port, bad=BadData(rate=0.05), truth=truth, seed=5)
    async with task(src.run(out)), task(pub.run()):
        await until(lambda: len(truth.of_kind("bad_data")) >= 12)
        await until(lambda: len(out.quarantined()) >= 12)
        published = pub.published
        await until(lambda: src.messages >= published)
    defects = {r["topic"] for r in truth.of_kind("bad_data")}
    q = out.quarantined()
    assert {x.where for x in q} <= defects
    reasons = {x.reason.split(":")[0] for x in q}
    assert reasons <= {"duplicate message", "missing field 'current_a'", "not JSON",
                       "timestamp without zone"}
    assert sum(v for k, v in metrics.snapshot().items()
               if k.startswith("edge_source_rejected_total")) == len(q)


async def test_broker_restart_mid_stream_resumes(broker: Peer, tmp_path: Path) -> None:
    """After the broker dies and comes back on its port, the source re-subscribes and resumes."""
    src, _, metrics = build(motors_config(broker.port), tmp_path)
    out = Collector()
    link = 'edge_link_up{link="source:motors"}'
    async with task(src.run(out)), task(motors(broker.port).run()):
        await until(lambda: out.samples > 100)
        broker.stop()
        await until(lambda: metrics.snapshot()[link] == 0.0)
        before = out.samples
        restarted = start_mosquitto(tmp_path, port=broker.port)
        try:
            await until(lambda: out.samples > before + 100, timeout=20)
            assert metrics.snapshot()[link] == 1.0
        finally:
            restarted.stop()


async def test_stop_command_published_to_device(broker: Peer, tmp_path: Path) -> None:
    """The write-back port publishes the configured stop payload; the motor line obeys."""
    src, _, _ = build(motors_config(broker.port), tmp_path)
    out = Collector()
    pub = motors(broker.port)
    async with task(src.run(out)), task(pub.run()):
        await until(lambda: out.samples > 0 and pub.connected.is_set())
        await src.write(Command("motors", "stop", target="conveyor/belt", reason="test"))
        await until(lambda: pub.commands >= 1)


async def test_unknown_device_quarantined(broker: Peer, tmp_path: Path) -> None:
    """A message from a device not in the list is quarantined with 'unknown device'."""
    src, _, _ = build(motors_config(broker.port), tmp_path)
    out = Collector()
    async with task(src.run(out)):
        await until(lambda: src.link.state.up)
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.publish("stf/lab/robot/telemetry", b'{"ts": 1795255200, "current_a": 1}',
                            qos=1)
        await until(lambda: bool(out.quarantined()))
    q = out.quarantined()[0]
    assert q.reason == "unknown device 'lab/robot'" and q.where == "stf/lab/robot/telemetry"


async def test_qos1_message_is_acknowledged_only_after_emit_returns(
        broker: Peer, tmp_path: Path) -> None:
    """Messages whose emit never returned (not yet in the journal) are not acked: after a
    crash, a new client with the same persistent session gets every one again."""
    raw = motors_config(broker.port)
    first, _, _ = build(raw, tmp_path)
    taken: list[int] = []

    async def never_durable(batch: SampleBatch | None, records: Sequence[Record]) -> None:
        taken.append(len(batch) if batch is not None else 0)
        await asyncio.Event().wait()  # the journal never commits

    async with task(first.run(never_durable)):
        await until(lambda: first.link.state.up)
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            for i in range(20):
                await c.publish("stf/conveyor/belt/telemetry",
                                f'{{"ts": {1795255200 + i}, "current_a": {i}, '
                                f'"state": "idle"}}'.encode(), qos=1)
        await until(lambda: first.messages >= 1 and bool(taken))
    second, tags, _ = build(raw, tmp_path)
    cur = tags.id_of("conveyor/belt/current_a")
    out = Collector()

    def currents() -> list[float]:
        return sorted(v for b in out.batches for v in b.value[b.tag_id == cur].tolist())

    async with task(second.run(out)):
        await until(lambda: len(currents()) >= 20)
    assert not out.quarantined()
    assert currents() == [float(i) for i in range(20)]
