"""Modbus source against the hw_sim etch tool (pymodbus server over loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import tomllib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from edge.components import BuildContext, Command
from edge.config import convert
from edge.errors import RetryableError
from edge.model import Quality, Record, SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sources.modbus.config import ModbusSourceConfig
from edge.sources.modbus.source import ModbusSource
from hw_sim.clock import SimClock
from hw_sim.etch import EtchModel
from hw_sim.etch_server import EtchServer

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import free_port

ROOT = Path(__file__).resolve().parents[2]


class Collector:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.records: list[Record] = []

    async def __call__(self, batch: SampleBatch | None, records: Sequence[Record], /, *,
                       checkpoint: tuple[str, bytes] | None = None) -> None:
        if batch is not None:
            self.batches.append(batch)
        self.records.extend(records)


def build(raw: dict[str, object], tmp: Path) -> tuple[ModbusSource, TagRegistry, Metrics]:
    cfg = convert(raw, ModbusSourceConfig, "source 'etch1'")
    tags, metrics = TagRegistry(), Metrics()
    cfg.declare_tags(tags)
    ctx = BuildContext("gw", tags, metrics, tmp, lambda n: "")
    return cfg.build(ctx), tags, metrics


def etch_config(port: int, **over: object) -> dict[str, object]:
    """The source config built from config/etch_modbus.toml, pasted as the docs say."""
    doc = tomllib.loads((ROOT / "config" / "etch_modbus.toml").read_text())
    raw: dict[str, object] = {**doc["device"], "port": port, "registers": doc["registers"]}
    raw["commands"] = [
        {"action": "stop", "function": "coil", "address": 0, "value": 1},
        {"action": "reset", "function": "coil", "address": 1, "value": 1},
    ]
    raw.update(over)
    return raw


@pytest.fixture
async def etch() -> AsyncIterator[EtchServer]:
    server = EtchServer(EtchModel(seed=7), SimClock(speed=1.0), port=0, dt_s=0.05)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(src: ModbusSource, out: Collector) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(src.run(out))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def values(out: Collector, tags: TagRegistry, key: str) -> list[tuple[float, int]]:
    tid = tags.id_of(key)
    res = []
    for b in out.batches:
        m = b.tag_id == tid
        res += list(zip(b.value[m].tolist(), b.quality[m].tolist(), strict=True))
    return res


async def test_reads_etch_tool_values(etch: EtchServer, tmp_path: Path) -> None:
    """The pasted etch register map reads plausible chamber values in one merged read."""
    src, tags, metrics = build(etch_config(etch.port, poll_interval_s=0.05), tmp_path)
    assert [(r.req.function, r.req.address, r.req.count) for r in src.reads] == [
        ("holding", 0, 16)  # 0-15: floats, lot, wafer, step, status, heartbeat, wafer
    ]                       # time and recipe
    out = Collector()
    async with running(src, out):
        await until(lambda: len(out.batches) >= 5)
    temps = values(out, tags, "etch1/chamber_temp")
    assert all(q == Quality.GOOD for _, q in temps)
    assert all(170 < v < 190 for v, _ in temps)
    lot = values(out, tags, "etch1/lot_id")[-1][0]
    assert lot == 4711
    assert values(out, tags, "etch1/recipe")[-1] == (1.0, Quality.GOOD)
    assert 0 <= values(out, tags, "etch1/wafer_elapsed")[-1][0] < 50
    snap = metrics.snapshot()
    assert snap['edge_link_up{link="source:etch1"}'] == 1.0
    assert snap['edge_source_received_total{source="etch1"}'] >= 45


async def test_stop_command_reaches_device(etch: EtchServer, tmp_path: Path) -> None:
    """The write-back port's 'stop' sets the stop coil; the tool reports stopped."""
    src, tags, _ = build(etch_config(etch.port, poll_interval_s=0.05), tmp_path)
    out = Collector()
    async with running(src, out):
        await until(lambda: len(out.batches) >= 2)
        await src.write(Command("etch1", "stop", reason="test"))
        assert etch.model.stopped
        await until(lambda: values(out, tags, "etch1/status")[-1][0] == 2)
        await src.write(Command("etch1", "reset"))
        assert not etch.model.stopped
    await src.close()


async def test_command_connection_is_open_before_the_first_command(
        etch: EtchServer, tmp_path: Path) -> None:
    """A stop must not pay for a TCP connect: the write-back connection opens once the
    poll link is up, and opens again after the link came back."""
    src, _, _ = build(etch_config(etch.port, poll_interval_s=0.05), tmp_path)
    out = Collector()

    def port_open() -> bool:
        client = src.port._client
        return client is not None and client.connected

    async with running(src, out):
        await until(port_open)
        src._lost()  # what a lost poll link does
        assert not port_open()
        await until(port_open, timeout=2.0)
        await src.write(Command("etch1", "stop", reason="test"))
        assert etch.model.stopped
    await src.close()


async def test_coils_and_input_registers_read_in_the_same_poll(
    etch: EtchServer, tmp_path: Path
) -> None:
    """Input registers (mirroring the holding ones) and the stop coil are read and decoded."""
    raw = etch_config(etch.port, poll_interval_s=0.05)
    raw["registers"] = [*raw["registers"],  # type: ignore[misc]
                        {"name": "lot_in", "address": 8, "function": "input"},
                        {"name": "stopped", "address": 0, "function": "coil"}]
    src, tags, _ = build(raw, tmp_path)
    assert [(r.req.function, r.req.address, r.req.count) for r in src.reads] == [
        ("holding", 0, 16), ("input", 8, 1), ("coil", 0, 1)
    ]
    out = Collector()
    async with running(src, out):
        await until(lambda: len(out.batches) >= 2)
        assert values(out, tags, "etch1/lot_in")[-1] == (4711.0, Quality.GOOD)
        assert values(out, tags, "etch1/stopped")[-1] == (0.0, Quality.GOOD)
        await src.write(Command("etch1", "stop", reason="test"))
        await until(lambda: values(out, tags, "etch1/stopped")[-1] == (1.0, Quality.GOOD))
        await src.write(Command("etch1", "reset"))
    await src.close()


async def test_exception_replies_give_bad_samples(etch: EtchServer, tmp_path: Path) -> None:
    """A device answering exceptions yields NaN samples marked BAD_DEVICE_EXCEPTION."""
    src, tags, metrics = build(etch_config(etch.port, poll_interval_s=0.05), tmp_path)
    out = Collector()
    async with running(src, out):
        await until(lambda: len(out.batches) >= 2)
        etch.set_fault("fail")
        await until(lambda: values(out, tags, "etch1/chamber_temp")[-1][1]
                    == Quality.BAD_DEVICE_EXCEPTION)
        etch.set_fault("ok")
        await until(lambda: values(out, tags, "etch1/chamber_temp")[-1][1] == Quality.GOOD)
    bad = [v for v, q in values(out, tags, "etch1/chamber_temp") if q]
    assert bad and all(math.isnan(v) for v in bad)
    assert metrics.snapshot()[
        'edge_source_rejected_total{reason="device_exception",source="etch1"}'] > 0


async def test_hanging_device_times_out_and_recovers(etch: EtchServer, tmp_path: Path) -> None:
    """A device that never answers gives BAD_TIMEOUT samples, then good ones once it is back."""
    src, tags, _ = build(
        etch_config(etch.port, poll_interval_s=0.05, timeout_s=0.2, backoff_max_s=0.5), tmp_path
    )
    out = Collector()
    async with running(src, out):
        await until(lambda: len(out.batches) >= 2)
        etch.set_fault("hang")
        await until(lambda: values(out, tags, "etch1/chamber_temp")[-1][1] == Quality.BAD_TIMEOUT)
        etch.set_fault("ok")
        await until(lambda: values(out, tags, "etch1/chamber_temp")[-1][1] == Quality.GOOD)


async def test_dead_device_does_not_stall_another(etch: EtchServer, tmp_path: Path) -> None:
    """With one device unreachable, the live device keeps its poll rate; the dead one is Bad."""
    live, _ltags, _ = build(etch_config(etch.port, poll_interval_s=0.05), tmp_path)
    dead, _dtags, dmetrics = build(
        etch_config(free_port(), name="etch2", poll_interval_s=0.05, backoff_max_s=0.3), tmp_path
    )
    a, b = Collector(), Collector()
    async with running(live, a), running(dead, b):
        await asyncio.sleep(1.0)
    assert len(a.batches) >= 15
    assert b.batches and all(q == Quality.BAD_NOT_CONNECTED for bt in b.batches
                             for q in bt.quality.tolist())
    assert dmetrics.snapshot()['edge_link_up{link="source:etch2"}'] == 0.0


async def test_command_to_dead_device_raises_retryable(tmp_path: Path) -> None:
    """A command to an unreachable device raises RetryableError, not a library exception."""
    src, _, _ = build(etch_config(free_port(), timeout_s=0.2), tmp_path)
    with pytest.raises(RetryableError):
        await src.write(Command("etch1", "stop"))
