"""Etch tool over Modbus TCP: documented addresses, stop coil, faults, mbpoll."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import pytest
from hw_sim_peers import wait_for
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from hw_sim.clock import SimClock
from hw_sim.etch import EtchModel, regs_float
from hw_sim.etch_server import EtchServer
from hw_sim.truth import TruthLog


@pytest.fixture
async def etch() -> AsyncIterator[EtchServer]:
    clock = SimClock(speed=20.0)
    truth = TruthLog()
    server = EtchServer(
        EtchModel(1, start_ns=clock.start_ns, truth=truth), clock, port=0, truth=truth
    )
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(etch: EtchServer) -> AsyncIterator[AsyncModbusTcpClient]:
    c = AsyncModbusTcpClient("127.0.0.1", port=etch.port, timeout=1, retries=0)
    assert await c.connect()
    yield c
    c.close()


async def _temp(c: AsyncModbusTcpClient) -> float:
    rr = await c.read_holding_registers(0, count=2, device_id=1)
    return float(regs_float(list(rr.registers)))


async def test_reads_documented_map(client: AsyncModbusTcpClient) -> None:
    """Registers 0-12 read as temperature, pressure, RF, gas, lot 4711, wafer, step, status."""
    rr = await client.read_holding_registers(0, count=13, device_id=1)
    assert not rr.isError()
    r = rr.registers
    temp = client.convert_from_registers(r[0:2], client.DATATYPE.FLOAT32, word_order="big")
    assert isinstance(temp, float) and 177.0 < temp < 186.0
    assert r[8] == 4711 and 1 <= r[10] <= 5 and r[11] & 1
    ir = await client.read_input_registers(0, count=13, device_id=1)
    assert ir.registers[8] == 4711
    bad = await client.read_holding_registers(20, count=5, device_id=1)
    assert bad.isError() and bad.exception_code == 2
    ro = await client.write_register(0, 1, device_id=1)
    assert ro.isError()


async def test_excursion_stop_coil_and_reset(
    etch: EtchServer, client: AsyncModbusTcpClient
) -> None:
    """Register 20 starts an excursion above 188 C; coil 0 stops; coil 1 resets."""
    await client.write_register(20, 1, device_id=1)

    async def hot() -> bool:  # the tool's alarm bit: its true temperature passed 188 C
        rr = await client.read_holding_registers(11, count=1, device_id=1)
        return bool(rr.registers[0] & 0b1000)

    await wait_for(hot, 10, "the over-temperature alarm")
    assert (await client.write_coil(0, True, device_id=1)).bits[0] is True
    rr = await client.read_holding_registers(11, count=1, device_id=1)
    assert rr.registers[0] & 0b1110 == 0b1010  # stopped by coil, alarm, excursion over
    temp_at_stop = await _temp(client)

    async def cooling() -> bool:  # below the limit too: a reset above it keeps the alarm
        return await _temp(client) < min(temp_at_stop - 5, 186.0)

    await wait_for(cooling, 30, "temperature decay below the limit")
    await client.write_coil(1, True, device_id=1)
    rr = await client.read_holding_registers(11, count=1, device_id=1)
    assert rr.registers[0] == 1  # running only
    assert (await client.read_coils(0, count=2, device_id=1)).bits[:2] == [False, False]
    kinds = [r["kind"] for r in etch.truth.records
             if not r["kind"].startswith("wafer_")] if etch.truth else []
    assert kinds[:4] == ["excursion_start", "limit_exceeded", "stop", "excursion_end"]
    assert "reset" in kinds


async def test_exception_and_hang_faults(etch: EtchServer, client: AsyncModbusTcpClient) -> None:
    """Fault 1 answers exception 0x06; fault 3 never answers; register 21 switches back."""
    await client.write_register(21, 1, device_id=1)
    rr = await client.read_holding_registers(0, count=2, device_id=1)
    assert rr.isError() and rr.exception_code == 6
    await client.write_register(21, 3, device_id=1)
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(0, count=2, device_id=1)
    etch.set_fault("ok")
    c2 = AsyncModbusTcpClient("127.0.0.1", port=etch.port, timeout=1, retries=0)
    await c2.connect()
    try:
        assert not (await c2.read_holding_registers(0, count=2, device_id=1)).isError()
    finally:
        c2.close()


@pytest.mark.peer("mbpoll")
async def test_mbpoll_reads_documented_addresses(etch: EtchServer) -> None:
    """mbpoll, an independent client, reads the float at 0 (ABCD) and lot 4711 at 8."""
    mbpoll = shutil.which("mbpoll")
    if mbpoll is None:
        pytest.skip("mbpoll is not installed: apt-get install -y mbpoll")
    base = [mbpoll, "-m", "tcp", "-p", str(etch.port), "-a", "1", "-0", "-1", "-o", "2"]

    async def run(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *base,
            *args,
            "127.0.0.1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, out.decode()
        return out.decode()

    out = await run("-t", "4:float", "-B", "-r", "0", "-c", "1")
    value = float(out.split("[0]:")[1].split()[0])
    assert 177.0 < value < 186.0
    out = await run("-t", "4", "-r", "8", "-c", "4")
    assert "[8]: \t4711" in out or "[8]: 4711" in out or "[8]:\t4711" in out, out
