"""Modbus TCP source: polls one device on a drift-free schedule; stop/reset write-back.

Invariants:

* A value is emitted only as read in this poll. A timeout, an exception reply or a
  down link gives samples of the affected registers with value NaN and quality
  ``BAD_TIMEOUT`` / ``BAD_DEVICE_EXCEPTION`` / ``BAD_NOT_CONNECTED``: never an old value.
* Poll k is due at ``start + k * interval``; a late poll skips the ticks it missed
  (counted in ``edge_source_missed_polls_total``) instead of drifting or bursting.
* After a timeout the connection is closed and opened again, so a late answer can
  never be taken for the answer to a later request.
* One source per device with its own clients and its own link (``edge.runtime.links``:
  backoff, up/down logged once, the link board): a dead device stalls nobody else.
  Commands use a second connection, so a stop never waits behind a poll that hangs.
* The poll path runs once per read at the device's rate: everything that depends only
  on the config (plan, decoders, client methods, tag ids) is built once, in ``__init__``.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from edge.components import BuildContext, Command, Emit
from edge.model import Quality, SampleBatch
from edge.protocols.modbus.codec import Decoder, Field
from edge.protocols.modbus.plan import Function, ReadRequest
from edge.runtime.links import Backoff
from edge.sources.metrics import SourceMetrics, link_name
from edge.sources.modbus.command import ModbusCommandPort
from edge.sources.modbus.config import ModbusSourceConfig, RegisterConfig
from edge.sources.schedule import missed_polls, wait_next

log = structlog.get_logger("edge.sources.modbus")


_METHOD: dict[Function, str] = {
    "holding": "read_holding_registers", "input": "read_input_registers",
    "coil": "read_coils", "discrete": "read_discrete_inputs",
}


class _Read:
    """One planned request with its decoder and the slice of the poll's samples it fills."""

    def __init__(self, req: ReadRequest, registers: Sequence[RegisterConfig], base: int,
                 start: int) -> None:
        self.req = req
        self.method = _METHOD[req.function]  # the pymodbus client method that sends it
        self.bits = req.function in ("coil", "discrete")
        self.start = start
        self.stop = start + len(req.members)
        fields = []
        for i in req.members:
            r = registers[i]
            fields.append(Field(r.address - base - req.address, r.rtype,
                                r.word_order, r.byte_order, r.scale, r.offset))
        self.decoder = Decoder(fields)
        self.failing = ""


def _reraise_cancel() -> None:
    """Re-raise a cancellation that pymodbus' ``wait_for`` swallowed (Python 3.11 loses a
    cancel that races with the answer), so that stopping the source always works."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


_REJECT_REASON = {q: q.reason.removeprefix("bad_") for q in Quality}


class ModbusSource:
    def __init__(self, cfg: ModbusSourceConfig, ctx: BuildContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.device = cfg.device_name
        self.metrics = SourceMetrics(ctx.metrics, cfg.name)
        self.reads: list[_Read] = []
        order: list[int] = []
        for req in cfg.plan():
            self.reads.append(_Read(req, cfg.registers, cfg.address_base, len(order)))
            order.extend(req.members)
        self.tag_ids = np.array(
            [ctx.tags.id_of(f"{self.device}/{cfg.registers[i].name}") for i in order], np.int32
        )
        self.port = ModbusCommandPort(cfg, self._client)
        self.missed = missed_polls(ctx.metrics, cfg.name)
        self.polls = 0
        self.link = ctx.metrics.links.open(
            link_name(cfg.name, self.device), Backoff(initial_s=min(0.2, cfg.backoff_max_s),
                                                      max_s=cfg.backoff_max_s))

    def _client(self) -> AsyncModbusTcpClient:
        return AsyncModbusTcpClient(
            self.cfg.host, port=self.cfg.tcp_port, timeout=self.cfg.timeout_s, retries=0,
            reconnect_delay=0, reconnect_delay_max=0,
        )

    # ------------------------------------------------------------------ polling

    async def run(self, emit: Emit) -> None:
        try:
            await self.link.run(functools.partial(self._session, emit))
        finally:
            self.port.close()

    async def _session(self, emit: Emit) -> None:
        """One connection: connect, poll until the link is lost (raises ConnectionError)."""
        client = self._client()
        try:
            if not await client.connect():
                self._lost()
                await self._emit_all_bad(emit, Quality.BAD_NOT_CONNECTED)
                raise ConnectionError(f"cannot connect to {self.cfg.host}:{self.cfg.tcp_port}")
            self.link.up(proven=False, host=self.cfg.host, port=self.cfg.tcp_port)
            self.metrics.link(self.device, True)
            lost = await self._poll(client, emit)
            self._lost()
            raise ConnectionError(lost)
        finally:
            client.close()

    def _lost(self) -> None:
        # The device (or the path to it) went away: the command connection is as dead as
        # the poll one, and a stop must not wait out a timeout to learn it.
        self.port.close()
        self.metrics.link(self.device, False)

    async def _emit_all_bad(self, emit: Emit, quality: Quality) -> None:
        n = len(self.tag_ids)
        q = np.full(n, int(quality), np.uint8)
        await emit(SampleBatch(self.tag_ids, np.full(n, time.time_ns()), np.full(n, math.nan), q),
                   [])
        self.metrics.received(n)
        self.metrics.rejected(quality.reason.removeprefix("bad_"), n)

    async def _poll(self, client: AsyncModbusTcpClient, emit: Emit) -> str:
        """Poll until the link is lost; why it was lost. A read that succeeds proves the
        link, so the backoff starts over (a device that accepts connections and answers
        nothing keeps backing off)."""
        loop = asyncio.get_running_loop()
        interval = self.cfg.poll_interval_s
        t0 = loop.time()
        k = 0
        link = self.link
        while True:
            ok, lost = await self._poll_once(client, emit)
            if ok:
                link.up()
            if lost:
                return lost
            await self.port.keep_open()
            k = await wait_next(k, t0, interval, self.missed)

    async def _poll_once(self, client: AsyncModbusTcpClient, emit: Emit) -> tuple[bool, str]:
        n = len(self.tag_ids)
        ts = time.time_ns()
        values = [math.nan] * n
        quality = np.zeros(n, np.uint8)
        bad: list[tuple[Quality, int]] = []
        lost = ""
        ok = False
        device_id = self.cfg.unit_id
        for read in self.reads:
            if lost:
                q = Quality.BAD_TIMEOUT if lost == "timeout" else Quality.BAD_NOT_CONNECTED
                self._bad(quality, bad, read, q)
                continue
            req = read.req
            try:  # pymodbus enforces timeout_s itself (retries=0)
                rr: ModbusPDU = await getattr(client, read.method)(
                    req.address, count=req.count, device_id=device_id)
            except (TimeoutError, ConnectionException, ModbusException) as exc:
                _reraise_cancel()
                timeout = not isinstance(exc, ConnectionException)
                lost = "timeout" if timeout else "connection lost"
                self._bad(quality, bad, read,
                          Quality.BAD_TIMEOUT if timeout else Quality.BAD_NOT_CONNECTED)
                self._note(read, lost, str(exc))
                continue
            _reraise_cancel()
            if rr.isError():
                self._bad(quality, bad, read, Quality.BAD_DEVICE_EXCEPTION)
                self._note(read, f"exception {rr.exception_code}", "")
                continue
            try:
                values[read.start : read.stop] = read.decoder.decode(
                    rr.bits if read.bits else rr.registers)
            except ValueError as exc:
                self._bad(quality, bad, read, Quality.BAD_DECODE)
                self._note(read, "short answer", str(exc))
                continue
            ok = True
            if read.failing:
                self._note(read, "", "")
        ts_ns = np.empty(n, np.int64)
        ts_ns.fill(ts)
        await emit(SampleBatch(self.tag_ids, ts_ns, np.array(values, np.float64), quality), [])
        self.polls += 1
        self.metrics.received(n)
        for q, count in bad:
            self.metrics.rejected(_REJECT_REASON[q], count)
        if ok:
            self.metrics.sampled(self.device)
        return ok, lost

    @staticmethod
    def _bad(quality: npt.NDArray[np.uint8], bad: list[tuple[Quality, int]], read: _Read,
             q: Quality) -> None:
        """Mark a read's samples with a Bad quality (their values stay NaN)."""
        quality[read.start : read.stop] = q
        bad.append((q, read.stop - read.start))

    def _note(self, read: _Read, failing: str, detail: str) -> None:
        """Log a read's state transitions (not every failed poll)."""
        if failing == read.failing:
            return
        req = read.req
        if failing:
            log.warning("modbus read failed", source=self.name, function=req.function,
                        address=req.address, count=req.count, reason=failing, detail=detail)
        else:
            log.info("modbus read recovered", source=self.name, function=req.function,
                     address=req.address, count=req.count)
        read.failing = failing

    # ------------------------------------------------------------------ write-back

    async def write(self, command: Command) -> None:
        """Send a configured command (e.g. ``stop``) on the command connection."""
        await self.port.write(command)

    async def close(self) -> None:
        self.port.close()
