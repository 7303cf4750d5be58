"""Modbus RTU source: the devices of one bus (a serial line, or RTU over TCP through a
serial-to-Ethernet converter), polled in turn; write-back commands on the same bus.

Invariants:

* One request on the bus at a time (``_bus`` lock, FIFO), with at least ``bus_gap_s``
  of silence before each: RTU has no transaction id, so the answer on the line is the
  answer to the one open request. A stop waits for at most the request in flight
  (bounded by its device's timeout), never for a whole poll.
* Each device has its own timeout and its own link (``source:<name>/<device>``). A
  device that does not answer gives Bad samples with the reason (``BAD_TIMEOUT`` for
  silence, ``BAD_DECODE`` for a garbled answer: bytes came, no frame with a good CRC),
  skips its remaining reads of that poll, and is asked again only after its backoff: a
  dead device costs the bus one timeout per retry, not one per tick, so the other
  devices keep their poll rate.
* The bus link (``source:<name>``) is lost only when the port or the TCP connection
  is (a ``ConnectionException``); then the link runtime reopens it with backoff and
  every device's samples are ``BAD_NOT_CONNECTED`` meanwhile.
* The same plan, decoders and word orders as Modbus TCP (``edge.sources.modbus.source``).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import structlog
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from edge.components import BuildContext, Command, Emit
from edge.errors import RetryableError
from edge.model import Quality, SampleBatch
from edge.runtime.links import Backoff, Link
from edge.sources.commands import command_of
from edge.sources.metrics import SourceMetrics, link_name
from edge.sources.modbus.config import PARITY_CHAR, ModbusCommandConfig, Unit
from edge.sources.modbus.source import _REJECT_REASON, _Read, _reraise_cancel
from edge.sources.schedule import missed_polls, wait_next

if TYPE_CHECKING:
    from edge.sources.modbus.config import ModbusSourceConfig

log = structlog.get_logger("edge.sources.modbus")

Client = AsyncModbusSerialClient | AsyncModbusTcpClient


class _Device:
    """One device of the bus: its reads, tag ids, link and retry time."""

    def __init__(self, unit: Unit, cfg: ModbusSourceConfig, ctx: BuildContext) -> None:
        self.unit = unit
        self.name = unit.name
        self.reads: list[_Read] = []
        order: list[int] = []
        for req in cfg.plan_for(unit):
            self.reads.append(_Read(req, unit.registers, cfg.address_base, len(order)))
            order.extend(req.members)
        self.tag_ids = np.array(
            [ctx.tags.id_of(f"{unit.name}/{unit.registers[i].name}") for i in order], np.int32)
        self.n = len(order)
        self.link: Link = ctx.metrics.links.open(
            link_name(cfg.name, unit.name),
            Backoff(initial_s=min(0.5, cfg.backoff_max_s), max_s=cfg.backoff_max_s))
        self.retry_at = -math.inf  # loop time before which a silent device is not asked
        self.failing = ""


class _NoAnswer(Exception):
    """A device did not answer in time; ``garbled`` when bytes came but no valid frame."""

    def __init__(self, garbled: bool) -> None:
        super().__init__("garbled answer (CRC error or broken frame)" if garbled
                         else "no answer")
        self.garbled = garbled


class ModbusBusSource:
    def __init__(self, cfg: ModbusSourceConfig, ctx: BuildContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.metrics = SourceMetrics(ctx.metrics, cfg.name)
        self.devices = [_Device(u, cfg, ctx) for u in cfg.units()]
        self.by_name = {d.name: d for d in self.devices}
        self.commands: dict[str, tuple[_Device, ModbusCommandConfig]] = {}
        for d in self.devices:
            for c in d.unit.commands:
                self.commands[f"{d.name}/{c.action}" if cfg.devices else c.action] = (d, c)
        self.missed = missed_polls(ctx.metrics, cfg.name)
        self.link = ctx.metrics.links.open(
            link_name(cfg.name, ""), Backoff(initial_s=min(0.2, cfg.backoff_max_s),
                                             max_s=cfg.backoff_max_s))
        self.gap_s = cfg.bus_gap_s()
        self.polls = 0
        self._bus = asyncio.Lock()
        self._client: Client | None = None
        self._quiet_at = 0.0  # loop time the line last went quiet
        self._rx = 0  # bytes received since the open request was sent
        self._timeout_of: _Device | None = None  # whose timeout the client has now

    def _make_client(self) -> Client:
        cfg = self.cfg
        common = {"timeout": cfg.timeout_s, "retries": 0, "reconnect_delay": 0,
                  "reconnect_delay_max": 0, "trace_packet": self._trace}
        if cfg.transport == "rtu":
            return AsyncModbusSerialClient(
                cfg.serial_port, framer=FramerType.RTU, baudrate=cfg.baud, bytesize=8,
                parity=PARITY_CHAR[cfg.parity or "even"], stopbits=cfg.stop_bits or 1,
                **common)  # type: ignore[arg-type]
        return AsyncModbusTcpClient(cfg.host, port=cfg.tcp_port, framer=FramerType.RTU,
                                    **common)  # type: ignore[arg-type]

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._rx += len(data)
        return data

    # ------------------------------------------------------------------ the bus

    async def _request(self, client: Client, device: _Device, method: str, *args: object,
                       **kw: object) -> ModbusPDU:
        """One request on the bus: gap, lock, the device's timeout. Raises _NoAnswer,
        ConnectionException, or ModbusException for anything else.

        It runs once per read, so it does only what the read needs: the lock is taken
        without ``async with`` (no coroutine of its own when the bus is free), the
        device's timeout is set when the device changes, the line's quiet time is kept
        only when there is a gap to keep."""
        bus = self._bus
        await bus.acquire()
        try:
            gap = self.gap_s
            if gap:
                wait = self._quiet_at + gap - asyncio.get_running_loop().time()
                if wait > 0:
                    await asyncio.sleep(wait)
            ctx = client.ctx
            if self._timeout_of is not device:
                ctx.comm_params.timeout_connect = device.unit.timeout_s
                self._timeout_of = device
            self._rx = 0
            try:
                rr: ModbusPDU = await getattr(client, method)(
                    *args, device_id=device.unit.device_id, **kw)
            except ConnectionException:
                raise
            except (TimeoutError, ModbusException) as exc:
                _reraise_cancel()
                # a silent device is not a broken bus: pymodbus would close a TCP link
                # after a few unanswered requests in a row
                ctx.count_until_disconnect = ctx.max_until_disconnect
                if isinstance(exc, ModbusException) and "No response" not in str(exc):
                    raise
                raise _NoAnswer(self._rx > 0) from None
            finally:
                if gap:
                    self._quiet_at = asyncio.get_running_loop().time()
        finally:
            bus.release()
        _reraise_cancel()
        return rr

    async def run(self, emit: Emit) -> None:
        await self.link.run(functools.partial(self._session, emit))

    async def _session(self, emit: Emit) -> None:
        """One opening of the port (or TCP connection): poll until it is lost."""
        client = self._make_client()
        try:
            if not await client.connect():
                for d in self.devices:
                    await self._emit_all_bad(d, emit, Quality.BAD_NOT_CONNECTED)
                raise ConnectionError(f"cannot open {self.cfg.where()}")
            self.link.up(proven=False, where=self.cfg.where())
            self._client, self._timeout_of = client, None
            lost = await self._poll(client, emit)
            raise ConnectionError(lost)
        finally:
            self._client = None
            client.close()
            for d in self.devices:
                self.metrics.link(d.name, False)
                d.retry_at = -math.inf

    async def _poll(self, client: Client, emit: Emit) -> str:
        loop = asyncio.get_running_loop()
        interval = self.cfg.poll_interval_s
        t0 = loop.time()
        k = 0
        while True:
            for device in self.devices:
                if loop.time() < device.retry_at:
                    continue
                lost = await self._poll_device(client, device, emit)
                if lost:
                    for d in self.devices:
                        await self._emit_all_bad(d, emit, Quality.BAD_NOT_CONNECTED)
                    return lost
            k = await wait_next(k, t0, interval, self.missed)

    async def _poll_device(self, client: Client, device: _Device, emit: Emit) -> str:
        """Read one device and emit its batch; the reason the bus was lost, or "".

        Every sample slot belongs to exactly one read, so ``values`` is filled by the
        decoded reads and NaN for the failed ones; the path of a device whose reads all
        answer touches nothing else (it runs once per device per tick)."""
        n = device.n
        ts = time.time_ns()
        values = np.empty(n, np.float64)
        quality = np.zeros(n, np.uint8)
        bad: list[tuple[Quality, int]] | None = None
        silent: _NoAnswer | None = None
        lost = ""
        ok = False
        for read in device.reads:
            if silent is not None or lost:
                q = (Quality.BAD_NOT_CONNECTED if lost else
                     Quality.BAD_DECODE if silent and silent.garbled else Quality.BAD_TIMEOUT)
                bad = _bad(values, quality, bad, read, q)
                continue
            req = read.req
            try:
                rr = await self._request(client, device, read.method, req.address,
                                         count=req.count)
            except _NoAnswer as exc:
                silent = exc
                bad = _bad(values, quality, bad, read,
                           Quality.BAD_DECODE if exc.garbled else Quality.BAD_TIMEOUT)
                continue
            except ConnectionException as exc:
                lost = str(exc) or "connection lost"
                bad = _bad(values, quality, bad, read, Quality.BAD_NOT_CONNECTED)
                continue
            except ModbusException as exc:
                bad = _bad(values, quality, bad, read, Quality.BAD_DECODE)
                self._note(device, f"bad answer: {exc}")
                continue
            if rr.isError():
                bad = _bad(values, quality, bad, read, Quality.BAD_DEVICE_EXCEPTION)
                self._note(device, f"exception {rr.exception_code}")
                ok = True  # the device answered: it is there
                continue
            try:
                values[read.start : read.stop] = read.decoder.decode(
                    rr.bits if read.bits else rr.registers)
            except ValueError as exc:
                bad = _bad(values, quality, bad, read, Quality.BAD_DECODE)
                self._note(device, f"short answer: {exc}")
                continue
            ok = True
        ts_ns = np.empty(n, np.int64)
        ts_ns.fill(ts)
        await emit(SampleBatch(device.tag_ids, ts_ns, values, quality), [])
        self.polls += 1
        self.metrics.received(n)
        if bad is not None:
            for q, count in bad:
                self.metrics.rejected(_REJECT_REASON[q], count)
        if silent is not None:
            device.link.down(str(silent), device_id=device.unit.device_id)
            self.metrics.link(device.name, False)
            device.retry_at = asyncio.get_running_loop().time() + device.link.delay()
            self._note(device, str(silent))
        elif ok:
            state = device.link.state
            if not state.up or state.attempt:
                self.link.up()
                device.link.up(device_id=device.unit.device_id)
                self.metrics.link(device.name, True)
            self.metrics.sampled(device.name)
            if bad is None and device.failing:
                self._note(device, "")
        return lost

    async def _emit_all_bad(self, device: _Device, emit: Emit, quality: Quality) -> None:
        n = len(device.tag_ids)
        await emit(SampleBatch(device.tag_ids, np.full(n, time.time_ns()),
                               np.full(n, math.nan), np.full(n, int(quality), np.uint8)), [])
        self.metrics.received(n)
        self.metrics.rejected(_REJECT_REASON[quality], n)

    def _note(self, device: _Device, failing: str) -> None:
        """Log a device's state transitions, not every failed poll."""
        if failing == device.failing:
            return
        if failing:
            log.warning("modbus device read failed", source=self.name, device=device.name,
                        device_id=device.unit.device_id, reason=failing)
        else:
            log.info("modbus device read recovered", source=self.name, device=device.name,
                     device_id=device.unit.device_id)
        device.failing = failing

    # ------------------------------------------------------------------ write-back

    async def write(self, command: Command) -> None:
        """Send a configured command (``stop``, or ``<device>/stop`` on a bus with
        ``[[devices]]``) between two requests of the poll; RetryableError on failure."""
        device, spec = command_of(self.commands, self.name, command.action)
        client = self._client
        if client is None:
            raise RetryableError(f"source '{self.name}': command '{command.action}' failed: "
                                 f"{self.cfg.where()} is not open")
        address = spec.address - self.cfg.address_base
        longest = max(d.unit.timeout_s for d in self.devices)
        try:
            async with asyncio.timeout(longest + device.unit.timeout_s + self.gap_s + 1):
                if spec.function == "coil":
                    rr = await self._request(client, device, "write_coil", address,
                                             bool(spec.value))
                else:
                    rr = await self._request(client, device, "write_register", address,
                                             spec.value)
        except (TimeoutError, _NoAnswer, ModbusException, OSError) as exc:
            log.error("modbus command failed", source=self.name, device=device.name,
                      action=command.action, function=spec.function, address=address,
                      error=str(exc) or type(exc).__name__)
            raise RetryableError(f"source '{self.name}': command '{command.action}' failed: "
                                 f"{exc}") from None
        if rr.isError():
            raise RetryableError(f"source '{self.name}': command '{command.action}' answered "
                                 f"with exception {rr.exception_code}")

    async def close(self) -> None:
        client = self._client
        if client is not None:
            client.close()


def _bad(values: npt.NDArray[np.float64], quality: npt.NDArray[np.uint8],
         bad: list[tuple[Quality, int]] | None, read: _Read, q: Quality
         ) -> list[tuple[Quality, int]]:
    """Mark a read's samples NaN with a Bad quality; the list of (quality, count) so far."""
    values[read.start : read.stop] = math.nan
    quality[read.start : read.stop] = q
    if bad is None:
        bad = []
    bad.append((q, read.stop - read.start))
    return bad
