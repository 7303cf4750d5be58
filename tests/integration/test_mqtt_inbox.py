"""The MQTT client's inbox (the source's fast path) against a real mosquitto."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.protocols.mqtt import BrokerConfig, Client, Received, session

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import start_mosquitto

N = 2_000


def publish_qos1(port: int, n: int) -> None:
    """n QoS 1 messages, each acknowledged by the broker before this returns."""
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="inbox-pub")
    pub.max_inflight_messages_set(100)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        infos = [pub.publish(f"inbox/{i % 4}", str(i).encode(), qos=1) for i in range(n)]
        for info in infos:
            info.wait_for_publish(timeout=60)
            assert info.is_published()
    finally:
        pub.disconnect()
        pub.loop_stop()


async def test_a_backlog_arrives_complete_in_order_and_in_few_wake_ups(tmp_path: Path) -> None:
    """Messages queued at the broker for a persistent session all arrive once, in
    publish order, acked in that order, and are taken many per ``receive``."""
    broker = start_mosquitto(tmp_path, extra="max_inflight_messages 1000\n")
    try:
        cfg = BrokerConfig("127.0.0.1", broker.port, client_id="inbox-sub",
                           clean_session=False)
        async with session(cfg, [("inbox/+", 1)], manual_ack=True, inbox=True):
            pass  # the broker now keeps the session while we are away
        await asyncio.to_thread(publish_qos1, broker.port, N)
        got: list[Received] = []
        calls = 0
        async with session(cfg, [("inbox/+", 1)], manual_ack=True, inbox=True) as client:
            deadline = time.monotonic() + 60
            while len(got) < N:
                assert time.monotonic() < deadline, f"only {len(got)} of {N} arrived"
                async with asyncio.timeout(30):
                    batch = await client.receive()
                calls += 1
                for m in batch:
                    client.ack(m)
                got.extend(batch)
        assert [int(m.payload) for m in got] == list(range(N))
        assert [m.topic for m in got[:4]] == ["inbox/0", "inbox/1", "inbox/2", "inbox/3"]
        assert all(m.qos == 1 and not m.dup for m in got)
        assert calls < N // 4, f"{calls} wake-ups for {N} queued messages"
    finally:
        broker.stop()


@pytest.mark.xfail(strict=False, reason=(
    "open defect: in ~1 of 10 runs mosquitto sends the last several hundred of 2,000 "
    "acknowledged messages again (dup=1) to the next session; waiting for paho's write "
    "queue to empty before DISCONNECT did not change it. The MQTT source drops them by "
    "key (quarantined as duplicates), so nothing reaches a sink twice."))
async def test_acked_messages_are_not_sent_again_to_the_next_session(tmp_path: Path) -> None:
    """Every message of a backlog acked in one session: the next session gets none."""
    broker = start_mosquitto(tmp_path, extra="max_inflight_messages 1000\n")
    try:
        cfg = BrokerConfig("127.0.0.1", broker.port, client_id="inbox-again",
                           clean_session=False)
        async with session(cfg, [("inbox/+", 1)], manual_ack=True, inbox=True):
            pass
        await asyncio.to_thread(publish_qos1, broker.port, N)
        got = 0
        async with session(cfg, [("inbox/+", 1)], manual_ack=True, inbox=True) as client:
            deadline = time.monotonic() + 60
            while got < N:
                assert time.monotonic() < deadline, f"only {got} of {N} arrived"
                async with asyncio.timeout(30):
                    batch = await client.receive()
                for m in batch:
                    client.ack(m)
                got += len(batch)
        async with session(cfg, [("inbox/+", 1)], manual_ack=True, inbox=True) as client:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.0):
                    await client.receive()
    finally:
        broker.stop()


async def test_receive_raises_once_the_broker_is_gone(tmp_path: Path) -> None:
    """A lost connection ends ``receive`` with MqttError instead of waiting forever."""
    broker = start_mosquitto(tmp_path)
    cfg = BrokerConfig("127.0.0.1", broker.port, client_id="inbox-lost", keepalive=5)
    try:
        async with Client(cfg, inbox=True) as client:
            await client.subscribe("x/#", qos=1)
            waiting = asyncio.create_task(client.receive())
            await asyncio.sleep(0.2)
            broker.stop()
            with pytest.raises(aiomqtt.MqttError):
                async with asyncio.timeout(30):
                    await waiting
    except aiomqtt.MqttError:
        pass  # leaving the context on a dead connection
    finally:
        broker.stop()
