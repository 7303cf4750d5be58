"""The etch tool on Modbus TCP (`ModbusTcpServer`) or as a Modbus RTU slave on a serial
line (`ModbusSerialServer`, e.g. one end of a socat pty pair), over `EtchModel`.

On RTU the tool answers each id of `device_ids` (the same tool under several ids, to
stand in for several devices of one bus) and stays silent for any other id, as a real
RS-485 bus does (pymodbus' default would answer exception 4).

Values are rendered from the model at the moment a client reads them (the
SimDevice action fills the register block in place), so a read never sees a half
updated float. Writes to the stop/reset coils reach the model before the write is
acknowledged, so a stop takes effect at once, between two ticks.

Fault modes (register 21, `set_fault()`, or the `fault` argument): `busy` and
`fail` answer every request with Modbus exception 0x06 / 0x04, `hang` accepts
requests and never answers. Writes to the admin registers 20-21 are always served,
so a test can switch a hung device back to `ok` over Modbus. Every switch is in
the ground truth.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from .clock import SimClock, ticks
from .etch import (
    COIL_RESET,
    COIL_STOP,
    FAULT_MODES,
    REG_COUNT,
    REG_EXCURSION,
    REG_FAULT,
    EtchModel,
)
from .truth import TruthLog

_READ_REGS, _WRITE_REGS = (3, 4), (6, 16)
_READ_COILS, _WRITE_COILS = (1,), (5, 15)
_FAULT_CODES = {"busy": ExcCodes.DEVICE_BUSY, "fail": ExcCodes.DEVICE_FAILURE}


class EtchServer:
    """Serves an `EtchModel` on Modbus TCP and steps it on `clock` every `dt_s`."""

    def __init__(
        self,
        model: EtchModel,
        clock: SimClock,
        host: str = "127.0.0.1",
        port: int = 5020,
        *,
        device_id: int = 1,
        dt_s: float = 0.1,
        fault: str = "ok",
        truth: TruthLog | None = None,
        serial_port: str = "",
        baudrate: int = 19200,
        parity: str = "N",
        device_ids: tuple[int, ...] = (),
        rtu_over_tcp: bool = False,
    ) -> None:
        """`serial_port` set: serve RTU on it (8 data bits, `parity` N/E/O, 1 stop bit)
        for `device_ids` (default: `device_id`) instead of TCP on `host:port`.
        `rtu_over_tcp`: RTU frames on TCP, as a serial-to-Ethernet converter carries them."""
        self.model, self.clock = model, clock
        self.host, self.port = host, port
        self.device_id, self.dt_s = device_id, dt_s
        self.serial_port, self.baudrate, self.parity = serial_port, baudrate, parity
        self.device_ids = device_ids or (device_id,)
        self.rtu_over_tcp = rtu_over_tcp
        self.truth = truth
        self.fault = "ok"
        self._release = asyncio.Event()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.requests = 0
        self.set_fault(fault)

    def set_fault(self, mode: str) -> None:
        """Switch the fault mode: ok, busy, fail or hang."""
        if mode not in FAULT_MODES:
            raise ValueError(f"etch fault mode must be one of {FAULT_MODES}, got {mode!r}")
        if mode == self.fault:
            return
        self.fault = mode
        if mode == "hang":
            self._release = asyncio.Event()
        else:
            self._release.set()
        if self.truth is not None:
            self.truth.emit("fault", "etch", self._now_ns(), mode=mode)

    def _now_ns(self) -> int:
        return self.model.start_ns + round(self.model.t_s * 1e9)

    def _device(self, device_id: int) -> SimDevice:
        regs = [0] * REG_COUNT
        return SimDevice(
            id=device_id,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=[False] * 16, datatype=DataType.BITS, readonly=True)],
                [
                    SimData(
                        0, values=regs[:REG_EXCURSION], datatype=DataType.REGISTERS, readonly=True
                    ),
                    SimData(REG_EXCURSION, values=[0, 0], datatype=DataType.REGISTERS),
                ],
                [SimData(0, values=regs, datatype=DataType.REGISTERS, readonly=True)],
            ),
            action=self._action,
        )

    async def _action(
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        regs: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        if fc in _WRITE_REGS:
            # only 20-21 are writable (the rest is read-only), and always served;
            # pymodbus reads back after a write, with values None
            if values is not None and (rc := self._admin_write(address, list(map(int, values)))):
                return rc
        elif self.fault == "hang":
            await self._release.wait()
            return ExcCodes.DEVICE_BUSY
        elif self.fault in _FAULT_CODES:
            return _FAULT_CODES[self.fault]
        if fc in _WRITE_COILS and values is not None:
            for i, v in enumerate(values):
                self._coil_write(address + i, bool(v))
        if fc in _READ_REGS or fc in _WRITE_REGS:
            image = self.model.registers()
            image[REG_FAULT] = FAULT_MODES.index(self.fault)
            regs[0 - start : REG_COUNT - start] = image
        elif fc in _READ_COILS or fc in _WRITE_COILS:
            regs[0] = sum(int(b) << i for i, b in enumerate(self.model.coils()))
        return None

    def _admin_write(self, address: int, values: list[int]) -> ExcCodes | None:
        """Apply writes to the admin registers 20-21; an exception code if refused."""
        for i, v in enumerate(values):
            reg = address + i
            if reg == REG_EXCURSION and v == 1:
                self.model.trigger_excursion(cause="modbus")
            elif reg == REG_FAULT:
                if not 0 <= v < len(FAULT_MODES):
                    return ExcCodes.ILLEGAL_VALUE
                self.set_fault(FAULT_MODES[v])
        return None

    def _coil_write(self, coil: int, value: bool) -> None:
        if coil == COIL_STOP:
            if value:
                self.model.stop(cause="coil")
            else:
                self.model.reset(cause="coil")
        elif coil == COIL_RESET and value:
            self.model.reset(cause="reset_coil")

    def _silent_for_others(self, sending: bool, data: bytes) -> bytes:
        """On RTU, send nothing for a device id this tool does not serve: pymodbus would
        answer exception 4 (even with ``ignore_missing_devices``), a real bus is silent."""
        if sending and data and data[0] not in self.device_ids:
            return b""
        return data

    async def start(self) -> None:
        """Listen (port 0 picks a free port, see `self.port`), or open the serial port,
        and start stepping."""
        if self.serial_port:
            self._server = ModbusSerialServer(
                [self._device(i) for i in self.device_ids], framer=FramerType.RTU,
                port=self.serial_port, baudrate=self.baudrate, parity=self.parity,
                bytesize=8, stopbits=1, trace_packet=self._silent_for_others)
            await self._server.serve_forever(background=True)
        else:
            self._server = ModbusTcpServer(
                [self._device(i) for i in self.device_ids], address=(self.host, self.port),
                framer=FramerType.RTU if self.rtu_over_tcp else FramerType.SOCKET,
                trace_packet=self._silent_for_others if self.rtu_over_tcp else None)
            await self._server.serve_forever(background=True)
            if self.port == 0:
                self.port = self._bound_port(self._server)
        self._task = asyncio.create_task(self._run(), name="etch-model")

    @staticmethod
    def _bound_port(server: Any) -> int:
        return int(server.transport.sockets[0].getsockname()[1])

    async def _run(self) -> None:
        async for _k, _ts in ticks(self.clock, self.dt_s):
            self.model.step(self.dt_s)

    async def stop(self) -> None:
        self._release.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
