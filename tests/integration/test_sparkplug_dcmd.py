"""Sparkplug DCMD against a real device: the host (Eclipse Tahu's JS codec over mosquitto)
stops hw_sim's Modbus etch tool through the allow-listed command, and a write to a
measured value is refused; both are journaled as OperatorAction records."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from test_sparkplug_sink import Host, host, metric

from edge.components import BuildContext, Command, Hooks
from edge.config import convert
from edge.flow import Flow
from edge.journal import Journal, JournalWriter
from edge.model import OperatorAction, Record, SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sinks.sparkplug import SparkplugSink, SparkplugSinkConfig
from edge.sources.modbus.config import ModbusSourceConfig
from hw_sim.clock import SimClock
from hw_sim.etch import EtchModel
from hw_sim.etch_server import EtchServer

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import Peer, SparkplugCodec

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0


@pytest.fixture
async def etch() -> AsyncIterator[EtchServer]:
    server = EtchServer(EtchModel(seed=7), SimClock(speed=1.0), port=0, dt_s=0.05)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def etch_source(port: int) -> ModbusSourceConfig:
    """config/etch_modbus.toml's device and registers, with its stop/reset write-back."""
    doc = tomllib.loads((ROOT / "config" / "etch_modbus.toml").read_text())
    raw: dict[str, object] = {**doc["device"], "port": port, "registers": doc["registers"],
                              "commands": [
                                  {"action": "stop", "function": "coil", "address": 0},
                                  {"action": "reset", "function": "coil", "address": 1}]}
    return convert(raw, ModbusSourceConfig, "source 'etch1'")


async def audited(writer: JournalWriter, n: int) -> list[OperatorAction]:
    """The first ``n`` OperatorAction records in the journal (waits for their commit)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        result = await writer.call(writer.journal.read, "audit")
        found = [r for e in result.entries if e.kind == "records" for r in e.records()
                 if isinstance(r, OperatorAction)]
        if len(found) >= n:
            return found
        assert loop.time() < deadline, f"only {len(found)} of {n} DCMDs journaled"
        await asyncio.sleep(0.05)


async def send_dcmd(h: Host, metrics: list[dict[str, object]]) -> None:
    body = h.codec.encode({"timestamp": int(time.time() * 1000), "metrics": metrics})
    await h.client.publish("spBv1.0/plant1/DCMD/gw1/etch1", body, qos=0)


async def test_dcmd_runs_only_the_allowed_command_and_journals_each(
        broker: Peer, codec: SparkplugCodec, etch: EtchServer, tmp_path: Path) -> None:
    """The DBIRTH offers Commands/stop; a DCMD Commands/stop = true (by its alias) sets the
    etch tool's stop coil; a DCMD writing chamber_temp is refused and the tool is not
    touched; each is one OperatorAction (origin sparkplug, user the host id) in the
    journal."""
    source_cfg = etch_source(etch.port)
    tags, metrics = TagRegistry(), Metrics()
    source_cfg.declare_tags(tags)
    source = source_cfg.build(BuildContext("gw1", tags, metrics, tmp_path, lambda n: ""))
    journal = Journal(tmp_path / "journal.db", sinks={"audit": ("records",)},
                      metrics=metrics)
    writer = JournalWriter(journal, commit_interval_s=0.001, metrics=metrics)
    flows: list[Flow] = []

    async def keep(records: Sequence[Record]) -> None:
        await flows[0].keep(SampleBatch.empty(), list(records), wait=True)

    async def send(commands: Sequence[Command]) -> list[tuple[bool, str]]:
        return await flows[0].send_commands(commands)

    hooks = Hooks(status=lambda: None, send_commands=send, journal=keep)
    sink_cfg = convert({"name": "sp", "group_id": "plant1", "edge_node_id": "gw1",
                        "brokers": [f"mqtt://127.0.0.1:{broker.port}"],
                        "primary_host_id": "scada",
                        "commands": [{"device": "etch1", "source": "etch1",
                                      "action": "stop"}]},
                       SparkplugSinkConfig, "sinks.sp")
    sink: SparkplugSink = sink_cfg.build(BuildContext("gw1", tags, metrics, tmp_path,
                                                      lambda n: "", hooks=hooks))
    flows.append(Flow([source], [], writer, [sink], metrics))
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(sink.run())]
    try:
        async with host(broker.port, codec) as h:
            await h.state(True, 1)
            await h.next("NBIRTH")
            dbirth = await h.next("DBIRTH")
            stop = metric(dbirth.payload, "Commands/stop")
            assert (stop["type"], stop["value"]) == ("Boolean", False)
            assert not etch.model.stopped

            await send_dcmd(h, [{"alias": int(stop["alias"]), "type": "Boolean",
                                 "value": True}])
            await send_dcmd(h, [{"name": "chamber_temp", "type": "Double", "value": 20.0}])
            ok, refused = await audited(writer, 2)
            assert etch.model.stopped  # the stop coil was written
            assert (ok.origin, ok.user, ok.action, ok.target, ok.ok, ok.detail) == (
                "sparkplug", "scada", "command", "etch1/Commands/stop", True,
                "sent etch1:stop")
            assert (refused.target, refused.ok) == ("etch1/chamber_temp", False)
            assert "measured value" in refused.detail
    finally:
        tasks[1].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[1]
        await writer.close()
        tasks[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[0]
        with contextlib.suppress(Exception):
            await source.close()  # type: ignore[attr-defined]
