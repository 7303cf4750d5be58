"""Siemens S7 source (python-snap7, ISO-on-TCP): polls data blocks, inputs, outputs and
markers of one PLC on a drift-free schedule; write-back commands (an interlock's stop bit).

Invariants:

* A value is emitted only as read in this poll. An error answer, a timeout or a down
  link gives samples of the affected tags with value NaN and a Bad quality
  (``BAD_DEVICE_EXCEPTION`` with the PLC's error text in the log, ``BAD_TIMEOUT``,
  ``BAD_NOT_CONNECTED``; ``BAD_DECODE`` for one tag whose bytes are not its type): never
  an old value, never a crash.
* snap7 is blocking: every connect, read and write runs in a worker thread through
  ``edge.runtime.progress.blocking``, so a hung PLC shows in ``status`` as a stuck call
  instead of freezing the event loop. One poll is one thread hop for all its reads.
* Reads are planned once per negotiated PDU size (``edge.protocols.s7.plan``): the
  plan checked at config time uses ``pdu_size``; a PLC that negotiates less gets a
  plan for its size when the session starts.
* After a connection error or a timeout the connection is closed and opened again
  (through the link runtime: backoff, up/down logged once, the link board), so a late
  answer is never taken for a later request's.
* Commands use their own connection (``s7_command.py``): a stop never waits behind a
  poll that hangs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import structlog
from snap7.client import Client
from snap7.error import (
    S7ConnectionError,
    S7Error,
    S7PacketLostError,
    S7StalePacketError,
    S7TimeoutError,
)
from snap7.type import Area as Snap7Area

from edge.components import BuildContext, Command, Emit
from edge.config import ConfigStruct
from edge.model import DataType, Quality, SampleBatch, TagRegistry
from edge.protocols.s7.address import Address, Area, parse
from edge.protocols.s7.codec import DecodeFn, S7Type, check, decoder, encode, parse_type
from edge.protocols.s7.plan import ReadRequest, TagRef, max_read_bytes, plan_reads
from edge.runtime.links import Backoff
from edge.runtime.progress import blocking
from edge.sources.metrics import SourceMetrics, link_name
from edge.sources.s7_command import S7CommandPort

log = structlog.get_logger("edge.sources.s7")

SNAP7_AREA: dict[Area, Snap7Area] = {"DB": Snap7Area.DB, "I": Snap7Area.PE,
                                     "Q": Snap7Area.PA, "M": Snap7Area.MK}
# Errors after which the connection cannot be trusted: close it, reconnect.
LOST_ERRORS = (S7ConnectionError, S7TimeoutError, S7StalePacketError, S7PacketLostError,
               OSError)


def _address(text: str, type_text: str) -> tuple[Address, S7Type]:
    addr, t = parse(text), parse_type(type_text)
    check(addr, t)
    return addr, t


class S7TagConfig(ConfigStruct, frozen=True):
    name: str
    address: str  # DB10.DBD4, DB1.DBX0.3, I0.1, Q1.0, M10.2, MW20...
    type: str  # BOOL, BYTE, WORD, INT, DWORD, DINT, REAL, LREAL, DATE_AND_TIME
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    low: float | None = None
    high: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError("name must be non-empty and without '/'")
        if self.scale == 0 or not math.isfinite(self.scale) or not math.isfinite(self.offset):
            raise ValueError(f"tag '{self.name}': scale must be finite and not 0, offset finite")
        try:
            _, t = _address(self.address, self.type)
        except ValueError as exc:
            raise ValueError(f"tag '{self.name}': {exc}") from None
        if not t.numeric:
            raise ValueError(f"tag '{self.name}': type {t} is text and samples are numbers; "
                             "read a numeric tag instead")

    @property
    def dtype(self) -> DataType:
        t = parse_type(self.type)
        if (self.scale, self.offset) != (1.0, 0.0) and t.dtype != "float64":
            return "float64"
        return t.dtype


class S7CommandConfig(ConfigStruct, frozen=True):
    action: str
    address: str  # e.g. DB1.DBX0.0 for a stop bit
    type: str = "BOOL"
    value: bool | int | float = True

    def __post_init__(self) -> None:
        try:
            _, t = _address(self.address, self.type)
            encode(t, self.value)
        except ValueError as exc:
            raise ValueError(f"command '{self.action}': {exc}") from None


class S7SourceConfig(ConfigStruct, frozen=True):
    name: str
    host: str
    port: int = 102
    rack: int = 0
    slot: int = 1
    local_tsap: int | None = None
    remote_tsap: int | None = None
    device: str = ""
    poll_interval_s: float = 1.0
    timeout_s: float = 2.0
    pdu_size: int = 480
    max_gap_bytes: int = 32
    tags: list[S7TagConfig] = msgspec.field(default_factory=list)
    commands: list[S7CommandConfig] = msgspec.field(default_factory=list)
    backoff_max_s: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError("port must be 1..65535")
        if not 0 <= self.rack <= 7 or not 0 <= self.slot <= 31:
            raise ValueError("rack must be 0..7 and slot 0..31")
        if (self.local_tsap is None) != (self.remote_tsap is None):
            raise ValueError("local_tsap and remote_tsap go together (or use rack/slot)")
        for tsap in (self.local_tsap, self.remote_tsap):
            if tsap is not None and not 0 <= tsap <= 0xFFFF:
                raise ValueError("local_tsap and remote_tsap must be 0..0xFFFF")
        if self.poll_interval_s <= 0 or self.timeout_s <= 0 or self.backoff_max_s <= 0:
            raise ValueError("poll_interval_s, timeout_s and backoff_max_s must be > 0")
        if not 240 <= self.pdu_size <= 960:
            raise ValueError("pdu_size must be 240..960 (bytes; S7-300: 240, S7-1500: 960)")
        if not 0 <= self.max_gap_bytes <= 65535:
            raise ValueError("max_gap_bytes must be 0..65535")
        if not self.tags:
            raise ValueError("tags must list at least one tag")
        names = [t.name for t in self.tags]
        if len(set(names)) != len(names):
            raise ValueError("tags: a name is used twice")
        actions = [c.action for c in self.commands]
        if len(set(actions)) != len(actions):
            raise ValueError("commands: an action is defined twice")
        try:
            self.plan(self.pdu_size)
        except ValueError as exc:
            raise ValueError(f"tags: {exc}") from None

    @property
    def device_name(self) -> str:
        return self.device or self.name

    def plan(self, pdu_size: int) -> list[ReadRequest]:
        refs = []
        for i, tag in enumerate(self.tags):
            addr, t = _address(tag.address, tag.type)
            refs.append(TagRef(i, addr.area, addr.db, addr.byte, t.size))
        return plan_reads(refs, max_read_bytes(pdu_size), self.max_gap_bytes)

    def declare_tags(self, tags: TagRegistry) -> None:
        for t in self.tags:
            tags.add(self.device_name, t.name, unit=t.unit, dtype=t.dtype, low=t.low,
                     high=t.high, description=t.description)

    def build(self, ctx: BuildContext) -> S7Source:
        return S7Source(self, ctx)

    def actions(self) -> frozenset[str]:
        """The commands this PLC takes (its ``commands`` table), for interlock checks."""
        return frozenset(c.action for c in self.commands)

    def measurement_devices(self) -> frozenset[str]:
        """S7 gives samples, never ``CmmReading``s."""
        return frozenset()


def connect_client(cfg: S7SourceConfig) -> Client:
    """A connected snap7 client (blocking: call it through ``blocking``), its socket
    bounded by ``timeout_s``."""
    client = Client()
    client.pdu_length = cfg.pdu_size  # what we ask for; the PLC may grant less
    if cfg.local_tsap is not None and cfg.remote_tsap is not None:
        client.set_connection_params(cfg.host, cfg.local_tsap, cfg.remote_tsap)
        client._connect(cfg.host, 0, 0, cfg.port)  # the TSAP path snap7's LOGO client uses
    else:
        client.connect(cfg.host, cfg.rack, cfg.slot, tcp_port=cfg.port)
    conn = client.connection
    if conn is not None and conn.socket is not None:
        conn.timeout = cfg.timeout_s
        conn.socket.settimeout(cfg.timeout_s)
    return client


@dataclass(slots=True)
class _Read:
    """One planned read with the decoders of the tags it carries."""

    req: ReadRequest
    members: list[tuple[int, int, DecodeFn, float, float]]  # index, offset, fn, scale, off
    failing: str = ""


def next_tick(k: int, t0: float, interval: float, now: float) -> tuple[int, int]:
    """The tick to poll after poll ``k`` ended at ``now``, and how many ticks it skipped
    (tick k is due at ``t0 + k * interval``: no drift, no burst to catch up)."""
    nxt = k + 1
    if t0 + nxt * interval <= now:
        nxt = math.floor((now - t0) / interval) + 1
    return nxt, nxt - k - 1


def read_all(client: Client, reads: Sequence[_Read]) -> list[bytearray | BaseException]:
    """Every planned read (blocking); after an error that loses the connection the rest
    get that error without being sent."""
    out: list[bytearray | BaseException] = []
    for read in reads:
        req = read.req
        try:
            out.append(client.read_area(SNAP7_AREA[req.area], req.db, req.start, req.size))
        except LOST_ERRORS as exc:
            out.extend([exc] * (len(reads) - len(out)))
            break
        except S7Error as exc:
            out.append(exc)
    return out


def _quality(exc: BaseException) -> Quality:
    if isinstance(exc, S7TimeoutError | TimeoutError):
        return Quality.BAD_TIMEOUT
    if isinstance(exc, LOST_ERRORS):
        return Quality.BAD_NOT_CONNECTED
    return Quality.BAD_DEVICE_EXCEPTION


class S7Source:
    def __init__(self, cfg: S7SourceConfig, ctx: BuildContext) -> None:
        logging.getLogger("snap7").setLevel(logging.WARNING)  # it logs every connect at INFO
        self.name = cfg.name
        self.cfg = cfg
        self.device = cfg.device_name
        self.metrics = SourceMetrics(ctx.metrics, cfg.name)
        self.tag_ids = np.array(
            [ctx.tags.id_of(f"{self.device}/{t.name}") for t in cfg.tags], np.int32)
        self._plans: dict[int, list[_Read]] = {}
        self.reads = self._plan(cfg.pdu_size)
        self.missed = ctx.metrics.counter(
            "edge_source_missed_polls_total", "Poll ticks skipped because a poll ran late",
            ["source"],
        ).labels(cfg.name)
        self.polls = 0
        self.where = f"{cfg.host}:{cfg.port}"
        self.port = S7CommandPort(cfg, functools.partial(connect_client, cfg))
        self.link = ctx.metrics.links.open(
            link_name(cfg.name, self.device), Backoff(initial_s=min(0.2, cfg.backoff_max_s),
                                                      max_s=cfg.backoff_max_s))

    def _plan(self, pdu_size: int) -> list[_Read]:
        """The reads for a PDU size, built once per size (decoders included)."""
        size = min(pdu_size, self.cfg.pdu_size)
        reads = self._plans.get(size)
        if reads is None:
            reads = []
            for req in self.cfg.plan(size):
                members = []
                for i in req.members:
                    tag = self.cfg.tags[i]
                    addr, t = _address(tag.address, tag.type)
                    members.append((i, addr.byte - req.start, decoder(t, addr.bit),
                                    tag.scale, tag.offset))
                reads.append(_Read(req, members))
            self._plans[size] = reads
        return reads

    # ------------------------------------------------------------------ polling

    async def run(self, emit: Emit) -> None:
        try:
            await self.link.run(functools.partial(self._session, emit))
        finally:
            await self.port.close()

    async def _session(self, emit: Emit) -> None:
        """One connection: connect, poll until the link is lost (raises ConnectionError)."""
        try:
            client = await blocking(f"s7 connect {self.where}", connect_client, self.cfg)
        except (S7Error, OSError) as exc:
            self.metrics.link(self.device, False)
            await self._emit_all_bad(emit, Quality.BAD_NOT_CONNECTED)
            raise ConnectionError(f"cannot connect to {self.where}: {exc}") from None
        try:
            self.link.up(proven=False, host=self.cfg.host, port=self.cfg.port,
                         pdu_size=client.pdu_length)
            self.metrics.link(self.device, True)
            lost = await self._poll(client, emit, self._plan(client.pdu_length))
            self.metrics.link(self.device, False)
            await self.port.close()  # the PLC or the path to it went away
            raise ConnectionError(lost)
        finally:
            await blocking(f"s7 disconnect {self.where}", client.disconnect)

    async def _emit_all_bad(self, emit: Emit, quality: Quality) -> None:
        n = len(self.tag_ids)
        await emit(SampleBatch(self.tag_ids, np.full(n, time.time_ns()), np.full(n, math.nan),
                               np.full(n, int(quality), np.uint8)), [])
        self.metrics.received(n)
        self.metrics.rejected(quality.reason.removeprefix("bad_"), n)

    async def _poll(self, client: Client, emit: Emit, reads: list[_Read]) -> str:
        """Poll until the link is lost; why it was lost. A read that succeeds proves the
        link, so the backoff starts over."""
        loop = asyncio.get_running_loop()
        interval = self.cfg.poll_interval_s
        what = f"s7 read {len(reads)} areas from {self.where}"
        t0 = loop.time()
        k = 0
        while True:
            results = await blocking(what, read_all, client, reads)
            ok, lost = await self._emit_poll(emit, reads, results)
            if ok:
                self.link.up()
            if lost:
                return lost
            await self.port.keep_open()
            k, missed = next_tick(k, t0, interval, loop.time())
            if missed:
                self.missed.inc(missed)
            delay = t0 + k * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _emit_poll(self, emit: Emit, reads: list[_Read],
                         results: list[bytearray | BaseException]) -> tuple[bool, str]:
        n = len(self.tag_ids)
        ts = time.time_ns()
        values = np.full(n, math.nan)
        quality = np.zeros(n, np.uint8)
        bad: dict[Quality, int] = {}
        ok = False
        lost = ""
        for read, res in zip(reads, results, strict=True):
            if isinstance(res, BaseException):
                q = _quality(res)
                for i, *_ in read.members:
                    quality[i] = q
                bad[q] = bad.get(q, 0) + len(read.members)
                reason = str(res) or type(res).__name__
                if q != Quality.BAD_DEVICE_EXCEPTION:
                    lost = lost or reason
                self._note(read, reason)
                continue
            ok = True
            for i, off, fn, scale, offset in read.members:
                try:
                    v = float(fn(res, off))  # type: ignore[arg-type]
                except ValueError as exc:
                    quality[i] = Quality.BAD_DECODE
                    bad[Quality.BAD_DECODE] = bad.get(Quality.BAD_DECODE, 0) + 1
                    self._note(read, f"{self.cfg.tags[i].name}: {exc}")
                    continue
                values[i] = v * scale + offset
            if read.failing and Quality.BAD_DECODE not in bad:
                self._note(read, "")
        ts_ns = np.full(n, ts, np.int64)
        await emit(SampleBatch(self.tag_ids, ts_ns, values, quality), [])
        self.polls += 1
        self.metrics.received(n)
        for q, count in bad.items():
            self.metrics.rejected(q.reason.removeprefix("bad_"), count)
        if ok:
            self.metrics.sampled(self.device)
        return ok, lost

    def _note(self, read: _Read, failing: str) -> None:
        """Log a read's state transitions (not every failed poll)."""
        if failing == read.failing:
            return
        req = read.req
        where = f"DB{req.db}" if req.area == "DB" else req.area
        if failing:
            log.warning("s7 read failed", source=self.name, area=where, start=req.start,
                        size=req.size, reason=failing)
        else:
            log.info("s7 read recovered", source=self.name, area=where, start=req.start,
                     size=req.size)
        read.failing = failing

    # ------------------------------------------------------------------ write-back

    async def write(self, command: Command) -> None:
        """Send a configured command (e.g. ``stop``) on the command connection."""
        await self.port.write(command)

    async def close(self) -> None:
        await self.port.close()

