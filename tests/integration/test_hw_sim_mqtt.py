"""Motors over MQTT through a real mosquitto: topics, payloads, batch mode, commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hw_sim_peers import Mosquitto, start_mosquitto, wait_for

from hw_sim.clock import SimClock
from hw_sim.motors import MOTOR_IDS, MotorLine
from hw_sim.motors_mqtt import MotorPublisher
from hw_sim.truth import TruthLog

pytestmark = pytest.mark.peer("mosquitto")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = start_mosquitto(tmp_path)
    yield b
    b.stop()


@contextlib.asynccontextmanager
async def _publisher(broker: Mosquitto, **kw: Any) -> AsyncIterator[MotorPublisher]:
    clock = SimClock(speed=5.0)
    truth = TruthLog()
    pub = MotorPublisher(
        MotorLine(1, start_ns=clock.start_ns, truth=truth),
        clock,
        "127.0.0.1",
        broker.port,
        truth=truth,
        horizon_ticks=100,
        **kw,
    )
    task = asyncio.create_task(pub.run())
    try:
        await wait_for(pub.connected.is_set, 10, "publisher connected")
        yield pub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _collect(
    broker: Mosquitto,
    topic: str,
    n: int,
    ready: asyncio.Event,
    out: list[tuple[str, dict[str, Any]]],
) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port) as c:
        await c.subscribe(topic)
        ready.set()
        async for m in c.messages:
            assert isinstance(m.payload, bytes)
            out.append((str(m.topic), json.loads(m.payload)))
            if len(out) >= n:
                return


async def test_telemetry_reaches_broker_on_documented_topics(broker: Mosquitto) -> None:
    """Every component publishes JSON on stf/<station>/<component>/telemetry."""
    got: list[tuple[str, dict[str, Any]]] = []
    ready = asyncio.Event()
    sub = asyncio.create_task(_collect(broker, "stf/+/+/telemetry", 14 * 5, ready, got))
    await asyncio.wait_for(ready.wait(), 10)
    async with _publisher(broker):
        await asyncio.wait_for(sub, 20)
    assert {t.removeprefix("stf/").removesuffix("/telemetry") for t, _ in got} == set(MOTOR_IDS)
    for topic, p in got:
        assert isinstance(p["ts"], float) and isinstance(p["current_a"], float)
        assert p["state"] in ("idle", "inrush", "running", "stopped")
        assert ("barriers" in p) == topic.startswith("stf/conveyor/")
    belt = next(p for t, p in got if t == "stf/conveyor/belt/telemetry")
    assert set(belt["barriers"]) == {"L1", "L2", "L3", "L4"}


async def test_batch_mode_sends_arrays(broker: Mosquitto) -> None:
    """Batch mode sends many samples per message on stf/<station>/<component>/batch."""
    got: list[tuple[str, dict[str, Any]]] = []
    ready = asyncio.Event()
    sub = asyncio.create_task(_collect(broker, "stf/+/+/batch", 14, ready, got))
    await asyncio.wait_for(ready.wait(), 10)
    async with _publisher(broker, mode="batch", batch_ticks=5):
        await asyncio.wait_for(sub, 20)
    for _topic, p in got:
        assert len(p["ts"]) == len(p["current_a"]) == 5
        assert p["ts"] == sorted(p["ts"])


async def test_stop_command_topic(broker: Mosquitto) -> None:
    """A stop on stf/command stops the targeted motors; a reset restarts them."""
    async with _publisher(broker) as pub, aiomqtt.Client("127.0.0.1", broker.port) as c:
        await c.publish("stf/command", json.dumps({"cmd": "stop", "target": "vgr"}), qos=1)
        await wait_for(lambda: pub.commands == 1, 10, "stop command applied")
        vgr = [i for i, m in enumerate(MOTOR_IDS) if m.startswith("vgr/")]
        assert all(pub.line.state[i] == 3 for i in vgr)
        await c.publish("stf/command", json.dumps({"cmd": "reset", "target": "all"}), qos=1)
        await wait_for(lambda: pub.commands == 2, 10, "reset command applied")
        assert not any(pub.line.state[i] == 3 for i in vgr)
        assert pub.truth is not None
        assert [r["cmd"] for r in pub.truth.of_kind("command")] == ["stop", "reset"]


async def test_a_ticks_messages_arrive_together_in_motor_order_without_warnings(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Each tick's 14 messages, published together, arrive in motor order, tick after
    tick, and the client logs no warning about pending publishes."""
    got: list[tuple[str, dict[str, Any]]] = []
    ready = asyncio.Event()
    sub = asyncio.create_task(_collect(broker, "stf/+/+/telemetry", 14 * 20, ready, got))
    await asyncio.wait_for(ready.wait(), 10)
    with caplog.at_level("WARNING"):
        async with _publisher(broker):
            await asyncio.wait_for(sub, 20)
    first = next(i for i, (t, _) in enumerate(got) if t == f"stf/{MOTOR_IDS[0]}/telemetry")
    ticks = [got[i:i + 14] for i in range(first, len(got) - 13, 14)]
    assert len(ticks) >= 15
    for tick in ticks:
        assert [t for t, _ in tick] == [f"stf/{m}/telemetry" for m in MOTOR_IDS]
        assert len({p["ts"] for _, p in tick}) == 1
    stamps = [tick[0][1]["ts"] for tick in ticks]
    assert stamps == sorted(set(stamps))
    assert not [r for r in caplog.records if "pending publish" in r.getMessage()]
