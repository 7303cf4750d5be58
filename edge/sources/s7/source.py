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
* Commands use their own connection (``command.py``): a stop never waits behind a
  poll that hangs.
* A STRING tag is text, not a sample: it is emitted as a ``TextValue`` record when its
  text or its quality changes (the first poll always emits it), with the reason when it
  is not Good (the read's error, or ``bad_decode`` for bytes that are no STRING).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
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
from edge.model import Quality, Record, SampleBatch, TextValue
from edge.protocols.s7.address import Area
from edge.protocols.s7.block import BlockDecoder, Field
from edge.protocols.s7.codec import S7Type, decode_string
from edge.protocols.s7.plan import ReadRequest
from edge.runtime.links import Backoff
from edge.runtime.progress import blocking
from edge.sources.metrics import SourceMetrics, link_name
from edge.sources.s7.command import S7CommandPort
from edge.sources.s7.config import S7SourceConfig, address_of
from edge.sources.schedule import missed_polls, wait_next

log = structlog.get_logger("edge.sources.s7")

SNAP7_AREA: dict[Area, Snap7Area] = {"DB": Snap7Area.DB, "I": Snap7Area.PE,
                                     "Q": Snap7Area.PA, "M": Snap7Area.MK}
# Errors after which the connection cannot be trusted: close it, reconnect.
LOST_ERRORS = (S7ConnectionError, S7TimeoutError, S7StalePacketError, S7PacketLostError,
               OSError)


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
    """One planned read, the decoder of the tags it carries and their sample slots."""

    req: ReadRequest
    index: npt.NDArray[np.intp]  # the sample slots of its numeric tags, in decoder order
    decoder: BlockDecoder
    texts: list[tuple[int, int, S7Type]]  # its STRING tags: (text slot, offset, type)
    failing: str = ""


@dataclass(slots=True)
class _Plan:
    """The reads for one PDU size, and one decoder for all of their bytes joined: a poll
    whose reads all answered is decoded in a few numpy calls, not a few per read."""

    reads: list[_Read]
    whole: BlockDecoder
    index: npt.NDArray[np.intp]


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


def _disconnect(client: Client) -> None:
    with contextlib.suppress(S7Error, OSError):
        client.disconnect()


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
        numeric = [i for i, t in enumerate(cfg.tags) if not t.text]
        self.tag_ids = np.array(
            [ctx.tags.id_of(f"{self.device}/{cfg.tags[i].name}") for i in numeric], np.int32)
        self._slot = {i: k for k, i in enumerate(numeric)}  # config index -> sample slot
        self.texts = [f"{self.device}/{t.name}" for t in cfg.tags if t.text]
        self._text_slot = {i: k for k, i in enumerate(
            i for i, t in enumerate(cfg.tags) if t.text)}
        self._last_text: list[tuple[str, int] | None] = [None] * len(self.texts)
        self._plans: dict[int, _Plan] = {}
        self.reads = self._plan(cfg.pdu_size).reads
        self.missed = missed_polls(ctx.metrics, cfg.name)
        self.polls = 0
        self.where = f"{cfg.host}:{cfg.port}"
        self.port = S7CommandPort(cfg, functools.partial(connect_client, cfg))
        self.link = ctx.metrics.links.open(
            link_name(cfg.name, self.device), Backoff(initial_s=min(0.2, cfg.backoff_max_s),
                                                      max_s=cfg.backoff_max_s))

    def _plan(self, pdu_size: int) -> _Plan:
        """The reads for a PDU size, built once per size (decoders included)."""
        size = min(pdu_size, self.cfg.pdu_size)
        plan = self._plans.get(size)
        if plan is None:
            reads, everything, base = [], [], 0
            for req in self.cfg.plan(size):
                fields, slots, texts = [], [], []
                for i in req.members:
                    tag = self.cfg.tags[i]
                    addr, t = address_of(tag.address, tag.type)
                    if tag.text:
                        texts.append((self._text_slot[i], addr.byte - req.start, t))
                        continue
                    fields.append(Field(addr.byte - req.start, t, addr.bit, tag.scale,
                                        tag.offset))
                    slots.append(self._slot[i])
                everything += [dataclasses.replace(f, offset=f.offset + base) for f in fields]
                base += req.size
                reads.append(_Read(req, np.array(slots, np.intp), BlockDecoder(fields), texts))
            index = np.concatenate([r.index for r in reads]) if reads else np.zeros(0, np.intp)
            plan = self._plans[size] = _Plan(reads, BlockDecoder(everything), index)
        return plan

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
            try:
                plan = self._plan(client.pdu_length)
            except ValueError as exc:  # a PDU too small for one read: not an S7 PLC
                raise ConnectionError(f"PLC at {self.where} granted PDU size "
                                      f"{client.pdu_length}: {exc}") from None
            self.link.up(proven=False, host=self.cfg.host, port=self.cfg.port,
                         pdu_size=client.pdu_length)
            self.metrics.link(self.device, True)
            lost = await self._poll(client, emit, plan)
            self.metrics.link(self.device, False)
            await self.port.close()  # the PLC or the path to it went away
            raise ConnectionError(lost)
        finally:
            await blocking(f"s7 disconnect {self.where}", _disconnect, client)

    async def _emit_all_bad(self, emit: Emit, quality: Quality) -> None:
        n = len(self.tag_ids)
        ts = time.time_ns()
        records: list[Record] = []
        for k in range(len(self.texts)):
            self._text(records, ts, k, "", quality, quality.reason)
        batch = SampleBatch(self.tag_ids, np.full(n, ts), np.full(n, math.nan),
                            np.full(n, int(quality), np.uint8)) if n else None
        await emit(batch, records)
        self.metrics.received(n + len(records))
        self.metrics.rejected(quality.reason.removeprefix("bad_"), n + len(self.texts))

    def _text(self, records: list[Record], ts: int, k: int, value: str, quality: Quality,
              reason: str = "") -> None:
        """Add STRING tag ``k``'s record when its text or quality changed."""
        now = (value, int(quality))
        if self._last_text[k] == now:
            return
        self._last_text[k] = now
        records.append(TextValue(ts, self.name, self.texts[k], value, int(quality), reason))

    async def _poll(self, client: Client, emit: Emit, plan: _Plan) -> str:
        """Poll until the link is lost; why it was lost. A read that succeeds proves the
        link, so the backoff starts over."""
        loop = asyncio.get_running_loop()
        interval = self.cfg.poll_interval_s
        reads = plan.reads
        what = f"s7 read {len(reads)} areas from {self.where}"
        t0 = loop.time()
        k = 0
        while True:
            results = await blocking(what, read_all, client, reads)
            ok, lost = await self._emit_poll(emit, plan, results)
            if ok:
                self.link.up()
            if lost:
                return lost
            await self.port.keep_open()
            k = await wait_next(k, t0, interval, self.missed)

    async def _emit_poll(self, emit: Emit, plan: _Plan,
                         results: list[bytearray | BaseException]) -> tuple[bool, str]:
        n = len(self.tag_ids)
        ts = time.time_ns()
        values = np.full(n, math.nan)
        quality = np.zeros(n, np.uint8)
        bad: dict[Quality, int] = {}
        ok = False
        lost = ""
        records: list[Record] = []
        if self.texts:
            self._texts(records, ts, plan, results, bad)
        reads = plan.reads
        if results and not any(isinstance(r, BaseException) for r in results):
            decoded, failed = plan.whole.decode(b"".join(results))  # type: ignore[arg-type]
            if not failed:
                values[plan.index] = decoded
                ok, reads = True, []  # the common case: every read answered, all decoded
                for read in plan.reads:
                    if read.failing:
                        self._note(read, "")
        for read, res in zip(reads, results[:len(reads)], strict=True):
            if isinstance(res, BaseException):
                q = _quality(res)
                quality[read.index] = q
                bad[q] = bad.get(q, 0) + len(read.index)
                reason = str(res) or type(res).__name__
                if q != Quality.BAD_DEVICE_EXCEPTION:
                    lost = lost or reason
                self._note(read, reason)
                continue
            ok = True
            decoded, failed = read.decoder.decode(res)
            values[read.index] = decoded
            if failed:
                quality[read.index[[k for k, _ in failed]]] = Quality.BAD_DECODE
                bad[Quality.BAD_DECODE] = bad.get(Quality.BAD_DECODE, 0) + len(failed)
                k, why = failed[0]
                self._note(read, f"{self.cfg.tags[read.index[k]].name}: {why}")
            elif read.failing:
                self._note(read, "")
        ts_ns = np.full(n, ts, np.int64)
        await emit(SampleBatch(self.tag_ids, ts_ns, values, quality) if n else None, records)
        self.polls += 1
        self.metrics.received(n + len(records))
        for q, count in bad.items():
            self.metrics.rejected(q.reason.removeprefix("bad_"), count)
        if ok:
            self.metrics.sampled(self.device)
        return ok, lost

    def _texts(self, records: list[Record], ts: int, plan: _Plan,
               results: list[bytearray | BaseException], bad: dict[Quality, int]) -> None:
        """The STRING tags of this poll: a record for each one that changed."""
        for read, res in zip(plan.reads, results, strict=False):
            for k, offset, t in read.texts:
                if isinstance(res, BaseException):
                    q = _quality(res)
                    bad[q] = bad.get(q, 0) + 1
                    self._text(records, ts, k, "", q, str(res) or type(res).__name__)
                    continue
                try:
                    self._text(records, ts, k, decode_string(res, offset, t), Quality.GOOD)
                except ValueError as exc:
                    bad[Quality.BAD_DECODE] = bad.get(Quality.BAD_DECODE, 0) + 1
                    self._text(records, ts, k, "", Quality.BAD_DECODE, str(exc))

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

