"""Unit tests of the Modbus RTU transport: config errors for mixed keys, devices of a bus,
line timing, and one device poll against a fake bus client (no serial port)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

from edge.components import BuildContext
from edge.config import loads
from edge.errors import ConfigError
from edge.model import Quality, Record, SampleBatch, TagRegistry
from edge.protocols.modbus.codec import encode
from edge.runtime.metrics import Metrics
from edge.sources.modbus.bus import ModbusBusSource
from edge.sources.modbus.source import ModbusSource


def _cfg(keys: str, devices: str = "") -> str:
    return f"""
[[sources]]
type = "modbus"
name = "bus1"
{keys}
registers = [{{ name = "t", address = 0, type = "float32" }}]
commands = [{{ action = "stop", function = "coil", address = 0 }}]
{devices}
"""


_RTU = 'transport = "rtu"\nserial_port = "/dev/ttyUSB0"\nparity = "none"'
_TWO = """
[[sources.devices]]
device_id = 1
device = "etch1"
[[sources.devices]]
device_id = 12
device = "meter12"
timeout_s = 0.5
registers = [{ name = "kw", address = 0, function = "input", type = "float32" }]
commands = []
"""


@pytest.mark.parametrize(("keys", "devices", "message"), [
    ('transport = "rtu"', "", "serial_port is required for transport 'rtu'"),
    (_RTU + '\nhost = "10.0.0.1"', "", "host and port are for transport 'tcp' or"),
    ('host = "10.0.0.1"\nbaudrate = 9600\nparity = "even"', "",
     "baudrate, parity: serial line keys need transport 'rtu'"),
    ('transport = "rtu-over-tcp"\nhost = "10.0.0.1"\nserial_port = "/dev/ttyS0"', "",
     "serial_port: serial line keys need transport 'rtu' .* 'rtu-over-tcp'"),
    ('host = "10.0.0.1"', _TWO, "several devices on one bus need transport 'rtu'"),
    ('host = "10.0.0.1"\ninter_frame_s = 0.01', "", "inter_frame_s is for transport"),
    (_RTU + "\ndevice_id = 3", _TWO, "device and device_id go inside \\[\\[devices\\]\\]"),
    (_RTU, _TWO.replace("device_id = 12", "device_id = 1"), "device_id is used twice"),
    (_RTU, _TWO.replace("device_id = 12", "device_id = 0"), "1..247"),
    (_RTU + "\nbaudrate = 12", "", "baudrate must be 300..4000000"),
    ('transport = "rs485"\nhost = "h"', "", "transport"),
])
def test_mixed_or_wrong_transport_keys_are_named(keys: str, devices: str, message: str) -> None:
    """A key of another transport, or a bus mistake, fails naming the source and the key."""
    with pytest.raises(ConfigError, match=rf"source 'bus1'.*{message}"):
        loads(_cfg(keys, devices))


def test_tcp_keys_unchanged_and_defaults() -> None:
    """A TCP source written before transports existed still loads, with its old defaults."""
    cfg = loads(_cfg('host = "10.0.0.1"')).sources[0]
    assert (cfg.transport, cfg.tcp_port, cfg.unit_id, cfg.bus) == ("tcp", 502, 1, False)
    assert cfg.actions() == {"stop"}


def test_devices_of_a_bus_get_tags_actions_and_timeouts() -> None:
    """Each device of a bus has its own tags and ``<device>/<action>`` actions, and takes
    the source's map and timeout unless it sets its own."""
    cfg = loads(_cfg(_RTU + "\ntimeout_s = 0.2", _TWO)).sources[0]
    tags = TagRegistry()
    cfg.declare_tags(tags)
    assert {t.key for t in tags} == {"etch1/t", "meter12/kw"}
    assert cfg.actions() == {"etch1/stop"}
    units = {u.name: u for u in cfg.units()}
    assert units["etch1"].timeout_s == 0.2 and units["meter12"].timeout_s == 0.5
    assert [r.function for r in cfg.plan_for(units["meter12"])] == ["input"]


def test_inter_frame_gap_follows_the_baud_rate() -> None:
    """The default gap is 3.5 characters of 11 bits, 1.75 ms above 19,200 baud, none over
    TCP; an explicit inter_frame_s wins."""
    def gap(keys: str) -> float:
        return float(loads(_cfg(keys)).sources[0].bus_gap_s())

    assert gap(_RTU + "\nbaudrate = 9600") == pytest.approx(3.5 * 11 / 9600)
    assert gap(_RTU + "\nbaudrate = 115200") == pytest.approx(0.00175)
    assert gap('transport = "rtu-over-tcp"\nhost = "h"') == 0.0
    assert gap(_RTU + "\ninter_frame_s = 0.01") == 0.01


def test_build_picks_the_bus_source_for_rtu(tmp_path: Path) -> None:
    """transport rtu and rtu-over-tcp build the bus source; tcp the TCP source."""
    def built(keys: str) -> object:
        cfg = loads(_cfg(keys)).sources[0]
        tags = TagRegistry()
        cfg.declare_tags(tags)
        return cfg.build(BuildContext("gw", tags, Metrics(), tmp_path, lambda n: ""))

    assert isinstance(built(_RTU), ModbusBusSource)
    assert isinstance(built('transport = "rtu-over-tcp"\nhost = "h"'), ModbusBusSource)
    assert isinstance(built('host = "h"'), ModbusSource)


class _FakeBus:
    """Stands in for the pymodbus client of a bus: device 1 answers, others are silent
    (or, with ``noise``, send bytes that never make a valid frame)."""

    def __init__(self, src: ModbusBusSource) -> None:
        self.ctx = SimpleNamespace(comm_params=SimpleNamespace(timeout_connect=0.0),
                                   count_until_disconnect=0, max_until_disconnect=3)
        self.src = src
        self.noise = False
        self.asked: list[int] = []

    async def read_holding_registers(self, address: int, count: int, device_id: int) -> Any:
        self.asked.append(device_id)
        if device_id == 1 and not self.noise:
            return ReadHoldingRegistersResponse(registers=encode(21.5, "float32"),
                                                dev_id=device_id)
        if self.noise:
            self.src._trace(False, b"\x01\x03\x04\xff")
        raise ModbusIOException("No response received after 0 retries")


async def _bus(tmp_path: Path) -> tuple[ModbusBusSource, _FakeBus, list[SampleBatch]]:
    devices = _TWO.replace('registers = [{ name = "kw", address = 0, function = "input", '
                           'type = "float32" }]', "")
    cfg = loads(_cfg(_RTU + "\ninter_frame_s = 0", devices)).sources[0]
    tags = TagRegistry()
    cfg.declare_tags(tags)
    src = cfg.build(BuildContext("gw", tags, Metrics(), tmp_path, lambda n: ""))
    assert isinstance(src, ModbusBusSource)
    got: list[SampleBatch] = []

    async def emit(batch: SampleBatch | None, records: Sequence[Record]) -> None:
        assert batch is not None
        got.append(batch)

    src._emit = emit  # type: ignore[attr-defined]
    return src, _FakeBus(src), got


async def test_a_silent_device_is_bad_timeout_and_waits_for_its_backoff(tmp_path: Path) -> None:
    """A device that does not answer gives NaN/BAD_TIMEOUT, its link goes down with the
    reason, and it is not asked again before its retry time; the bus stays up."""
    src, bus, got = await _bus(tmp_path)
    emit = src._emit  # type: ignore[attr-defined]
    etch, meter = src.devices
    assert await src._poll_device(bus, etch, emit) == ""  # type: ignore[arg-type]
    assert await src._poll_device(bus, meter, emit) == ""  # type: ignore[arg-type]
    assert got[0].quality.tolist() == [Quality.GOOD] and got[0].value.tolist() == [21.5]
    assert got[1].quality.tolist() == [Quality.BAD_TIMEOUT] and math.isnan(got[1].value[0])
    assert bus.ctx.comm_params.timeout_connect == 0.5  # the meter's own timeout
    assert not meter.link.state.up and meter.link.state.last_error == "no answer"
    assert meter.retry_at > -math.inf and etch.retry_at == -math.inf


async def test_a_garbled_answer_is_bad_decode(tmp_path: Path) -> None:
    """Bytes that never form a frame with a good CRC give BAD_DECODE, not a timeout."""
    src, bus, got = await _bus(tmp_path)
    bus.noise = True
    await src._poll_device(bus, src.devices[0], src._emit)  # type: ignore[arg-type, attr-defined]
    assert got[0].quality.tolist() == [Quality.BAD_DECODE]
    assert src.devices[0].link.state.last_error.startswith("garbled answer")
