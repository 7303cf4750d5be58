"""Modbus RTU source against the hw_sim etch tool as an RTU slave on a socat pty pair,
and mbpoll as the independent RTU client of that slave."""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge.components import BuildContext, Command
from edge.config import convert
from edge.errors import RetryableError
from edge.model import Quality, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sources.modbus.bus import ModbusBusSource
from edge.sources.modbus.config import ModbusSourceConfig
from hw_sim.clock import SimClock
from hw_sim.etch import EtchModel
from hw_sim.etch_server import EtchServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serial_peers import NoisyLine, pty_pair
from test_source_modbus import Collector, running, until, values

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import free_port

ROOT = Path(__file__).resolve().parents[2]


def rtu_config(**over: object) -> dict[str, object]:
    """The RTU source of config/etch_rtu.toml with its etch tool alone on the bus."""
    doc = tomllib.loads((ROOT / "config" / "etch_rtu.toml").read_text())
    raw: dict[str, object] = dict(doc["sources"][0])
    raw.pop("type")
    raw["devices"] = [{"device_id": 1, "device": "etch1"}]
    raw.update(over)
    return raw


def build(raw: dict[str, object], tmp: Path) -> tuple[ModbusBusSource, TagRegistry, Metrics]:
    cfg = convert(raw, ModbusSourceConfig, "source 'bus1'")
    tags, metrics = TagRegistry(), Metrics()
    cfg.declare_tags(tags)
    src = cfg.build(BuildContext("gw", tags, metrics, tmp, lambda n: ""))
    assert isinstance(src, ModbusBusSource)
    return src, tags, metrics


@pytest.fixture
def line(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with pty_pair(tmp_path, "a") as ends:
        yield ends


@contextlib.asynccontextmanager
async def etch_on(port: str, **kw: object) -> AsyncIterator[EtchServer]:
    server = EtchServer(EtchModel(seed=7), SimClock(speed=1.0), dt_s=0.05, serial_port=port,
                        parity="N", **kw)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_reads_the_etch_map_over_rtu(line: tuple[str, str], tmp_path: Path) -> None:
    """The annotated RTU sample reads plausible chamber values from the RTU slave, Good."""
    async with etch_on(line[1]):
        src, tags, metrics = build(rtu_config(serial_port=line[0], poll_interval_s=0.05),
                                   tmp_path)
        out = Collector()
        async with running(src, out):  # type: ignore[arg-type]
            await until(lambda: len(values(out, tags, "etch1/chamber_temp")) >= 5, 30)
            assert metrics.links.states()["source:bus1/etch1"].up
        temps = values(out, tags, "etch1/chamber_temp")
        assert all(q == Quality.GOOD for _, q in temps), temps
        assert all(170 < v < 190 for v, _ in temps)
        assert values(out, tags, "etch1/lot_id")[-1][0] == 4711


@pytest.mark.peer("mbpoll")
async def test_mbpoll_reads_the_documented_map_over_rtu(line: tuple[str, str]) -> None:
    """mbpoll, as an RTU master on the pty, reads the float at 0 (ABCD) and lot 4711 at 8."""
    mbpoll = shutil.which("mbpoll")
    if mbpoll is None:
        pytest.skip("mbpoll is not installed: apt-get install -y mbpoll")

    async def run(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            mbpoll, "-m", "rtu", "-b", "19200", "-P", "none", "-a", "1", "-1", "-o", "2",
            *args, line[0], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out.decode()
        return out.decode()

    async with etch_on(line[1]):
        out = await run("-t", "4:float", "-B", "-r", "1", "-c", "1")
        assert 170.0 < float(out.split("[1]:")[1].split()[0]) < 190.0, out
        out = await run("-t", "4", "-r", "9", "-c", "1")
        assert "[9]:" in out and int(out.split("[9]:")[1].split()[0]) == 4711, out


async def test_dead_device_goes_bad_and_the_others_keep_polling(
        line: tuple[str, str], tmp_path: Path) -> None:
    """A silent device id on the bus is BAD_TIMEOUT with a reason; the two live devices
    keep (most of) their poll rate instead of waiting out its timeout every tick."""
    devices = [{"device_id": 1, "device": "etch1"}, {"device_id": 2, "device": "etch2"},
               {"device_id": 7, "device": "dead7", "timeout_s": 0.3}]
    async with etch_on(line[1], device_ids=(1, 2)):
        src, tags, metrics = build(rtu_config(
            serial_port=line[0], poll_interval_s=0.1, devices=devices, backoff_max_s=3.0,
            commands=[{"action": "stop", "function": "coil", "address": 0}]), tmp_path)
        out = Collector()
        async with running(src, out):  # type: ignore[arg-type]
            await until(lambda: len(values(out, tags, "dead7/chamber_temp")) >= 3, 60)
            # the dead device is in its backoff now: 40 polls of etch1 from here
            loop = asyncio.get_running_loop()
            n0, t0 = len(values(out, tags, "etch1/chamber_temp")), loop.time()
            await until(lambda: len(values(out, tags, "etch1/chamber_temp")) >= n0 + 40, 60)
            rate = 40 / (loop.time() - t0)
            links = metrics.links.states()
            assert links["source:bus1/etch1"].up and links["source:bus1"].up
            assert not links["source:bus1/dead7"].up
            assert links["source:bus1/dead7"].last_error == "no answer"
        dead = values(out, tags, "dead7/chamber_temp")
        assert all(q == Quality.BAD_TIMEOUT and math.isnan(v) for v, q in dead)
        for name in ("etch1", "etch2"):
            assert all(q == Quality.GOOD for _, q in values(out, tags, f"{name}/heartbeat"))
        # 10 polls/s due; a dead device retried every poll would cap it near 1/0.3 s = 3/s
        assert rate >= 5.0, rate
        assert src.cfg.actions() == {"etch1/stop", "etch2/stop", "dead7/stop"}


async def test_noisy_line_gives_bad_with_reason_and_recovers(tmp_path: Path) -> None:
    """Garbled answers give BAD_DECODE (CRC error), garbled requests BAD_TIMEOUT (the
    slave stays silent), never a crash, and Good values again once the line is clean."""
    with pty_pair(tmp_path, "a") as (a0, a1), pty_pair(tmp_path, "b") as (b0, b1):
        noisy = NoisyLine(a1, b1)
        noisy.start()
        try:
            async with etch_on(b0):
                src, tags, _ = build(rtu_config(serial_port=a0, poll_interval_s=0.05,
                                                timeout_s=0.2, backoff_max_s=0.5), tmp_path)
                out = Collector()
                key = "etch1/chamber_temp"
                async with running(src, out) as task:  # type: ignore[arg-type]
                    await until(lambda: len(values(out, tags, key)) >= 3, 30)
                    marks = []
                    for noise in ("answers", "both", ""):
                        noisy.noise = noise
                        n = len(values(out, tags, key))
                        marks.append(n)
                        want = Quality.GOOD if noise == "" else None

                        def seen(n: int = n, want: Quality | None = want) -> bool:
                            got = [q for _, q in values(out, tags, key)[n:]]
                            return sum((q == want) if want is not None else (q != Quality.GOOD)
                                       for q in got) >= 5

                        await until(seen, 60)
                    assert not task.done()
                qs = [q for _, q in values(out, tags, key)]
                answers, both = set(qs[marks[0]:marks[1]]), set(qs[marks[1]:marks[2]])
                # garbled answers: bytes came, no frame with a good CRC
                assert Quality.BAD_DECODE in answers, answers
                # garbled requests: the slave stays silent
                assert Quality.BAD_TIMEOUT in both, both
                assert noisy.garbled > 0
                assert src.devices[0].failing == ""  # recovered, and logged so
        finally:
            noisy.stop()


async def test_interlock_stop_writes_the_stop_coil_over_rtu(
        line: tuple[str, str], tmp_path: Path) -> None:
    """The write-back 'stop' goes on the bus between polls and the tool stops; 'reset'
    resumes it; an unknown action is refused."""
    async with etch_on(line[1]) as etch:
        src, tags, _ = build(rtu_config(serial_port=line[0], poll_interval_s=0.05), tmp_path)
        out = Collector()
        async with running(src, out):  # type: ignore[arg-type]
            await until(lambda: len(out.batches) >= 2, 30)
            await src.write(Command("bus1", "etch1/stop", reason="test"))
            assert etch.model.stopped
            await until(lambda: values(out, tags, "etch1/status")[-1][0] == 2, 30)
            await src.write(Command("bus1", "etch1/reset"))
            assert not etch.model.stopped
        with pytest.raises(RetryableError, match="is not open"):
            await src.write(Command("bus1", "etch1/stop"))


async def test_rtu_over_tcp_reads_and_stops(tmp_path: Path) -> None:
    """RTU frames over TCP (a serial-to-Ethernet converter) read the map and take a stop."""
    server = EtchServer(EtchModel(seed=7), SimClock(speed=1.0), port=free_port(), dt_s=0.05,
                        rtu_over_tcp=True)
    await server.start()
    try:
        raw = rtu_config(transport="rtu-over-tcp", host="127.0.0.1", port=server.port,
                         poll_interval_s=0.05)
        for key in ("serial_port", "baudrate", "parity", "stop_bits"):
            raw.pop(key, None)
        src, tags, _ = build(raw, tmp_path)
        out = Collector()
        async with running(src, out):  # type: ignore[arg-type]
            await until(lambda: len(values(out, tags, "etch1/chamber_temp")) >= 3, 30)
            await src.write(Command("bus1", "etch1/stop"))
            assert server.model.stopped
        temps = values(out, tags, "etch1/chamber_temp")
        assert all(q == Quality.GOOD and 170 < v < 190 for v, q in temps)
    finally:
        await server.stop()


async def test_interlock_trip_stops_the_tool_over_rtu(
        line: tuple[str, str], tmp_path: Path) -> None:
    """The interlock stage, fed by the RTU source, trips on the chamber temperature and
    its command (``etch1/stop``, checked against the source's actions) sets the stop coil."""
    from edge.processing.interlock import Interlock
    from edge.processing.interlock_config import (
        InterlockAction,
        InterlockRuleConfig,
        check_actions,
    )

    async with etch_on(line[1]) as etch:
        src, tags, _ = build(rtu_config(serial_port=line[0], poll_interval_s=0.05), tmp_path)
        # high = 150 C: below the running chamber (~180 C), so the first Good sample trips
        rule = InterlockRuleConfig(name="overtemp", tag="etch1/chamber_temp", high=150.0,
                                   action=InterlockAction(source="bus1", action="etch1/stop"))
        check_actions([rule], {"bus1": src.cfg.actions()})
        stage = Interlock([rule], tags)
        sent: list[Command] = []

        class Judge(Collector):
            async def __call__(self, batch: object, records: object, /, **kw: object) -> None:
                await super().__call__(batch, records, **kw)  # type: ignore[arg-type]
                out = stage.process(batch, [], time.time_ns())  # type: ignore[arg-type]
                for cmd in out.commands:
                    await src.write(cmd)
                    sent.append(cmd)

        out = Judge()
        async with running(src, out):  # type: ignore[arg-type]
            await until(lambda: bool(sent), 30)
            assert etch.model.stopped
            await until(lambda: values(out, tags, "etch1/status")[-1][0] == 2, 30)
        assert sent[0].action == "etch1/stop"


async def test_hw_sim_cli_serves_rtu_over_tcp_for_several_ids(tmp_path: Path) -> None:
    """``hw-sim etch --rtu-over-tcp --device-ids 1,2`` answers both ids with RTU frames on
    TCP (what a serial-to-Ethernet converter carries); --serial with it is refused."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hw_sim.cli", "etch", "--port", str(port), "--rtu-over-tcp",
        "--device-ids", "1,2", cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.strip() == f"etch: modbus rtu-over-tcp 127.0.0.1:{port} devices 1,2", line
        raw = rtu_config(transport="rtu-over-tcp", host="127.0.0.1", port=port,
                         poll_interval_s=0.05,
                         devices=[{"device_id": 1, "device": "etch1"},
                                  {"device_id": 2, "device": "etch2"}])
        for key in ("serial_port", "baudrate", "parity", "stop_bits"):
            raw.pop(key, None)
        src, tags, _ = build(raw, tmp_path)
        out = Collector()
        async with running(src, out):  # type: ignore[arg-type]
            await until(lambda: all(len(values(out, tags, f"{d}/chamber_temp")) >= 3
                                    for d in ("etch1", "etch2")), 30)
        for d in ("etch1", "etch2"):
            assert all(q == Quality.GOOD for _, q in values(out, tags, f"{d}/chamber_temp"))
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    both = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hw_sim.cli", "etch", "--serial", "/dev/null", "--rtu-over-tcp",
        cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(both.communicate(), 30)
    assert both.returncode == 2 and b"exclude each other" in err, err
