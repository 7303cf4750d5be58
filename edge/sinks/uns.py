"""Unified-namespace MQTT publisher: latest values and records as JSON under the asset path.

``[[sinks]] type = "uns"``: for plants with a UNS broker but no Sparkplug host. Topics and
payloads are in ``edge.protocols.mqtt.uns``; the asset path comes from ``[asset]``.

Invariants:

* One connection at a time; ``brokers`` are walked in turn, the next one after a failed
  or lost connection. The link runtime (``sink:<name>/broker``) owns backoff and logging.
* The status topic is published retained (online) right after CONNECT, and the Will
  (retained, offline) stands for the gateway when it dies; a clean stop publishes
  offline itself before it disconnects.
* LIVE: ``publish`` (the fast path) only stores each tag's latest sample and marks it
  pending: it never waits, never allocates per message, never blocks on the broker.
  A flusher sends pending tags, each at most ``max_rate_hz`` times a second, with at
  most ``max_inflight`` publishes awaiting the broker; while the broker is slow or away
  the values coalesce to the latest one per tag. Latest values are retained, so a late
  subscriber gets each tag's value at once. A text tag (``TextValue`` records) is a
  latest value too, under ``<path>/<source>/<tag>``, sent on each change. A value the
  broker never took is not
  replayed: the next one replaces it (a UNS carries the present, the journal the past).
* DURABLE (records): the delivery loop gives journal entries through our own cursor.
  ``write`` returns (and the cursor moves) only when every record of the call has been
  acknowledged by the broker on one connection (QoS >= 1); a lost connection raises
  ``RetryableError`` and the same records come again. So nothing is lost while the
  broker is away; a record whose acknowledgement was lost with the connection is sent
  again (at least once; each carries its stable ``id``). Records are never retained.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlparse

import aiomqtt
import msgspec
import numpy as np
import structlog

from edge.asset import AssetConfig, record_device
from edge.components import BuildContext, WriteResult
from edge.config import ConfigStruct
from edge.errors import RetryableError
from edge.model import (
    RECORD_TYPE_NAMES,
    Record,
    SampleBatch,
    TagRegistry,
    TextValue,
    record_type,
)
from edge.protocols.mqtt import BrokerConfig, Client, TlsConfig
from edge.protocols.mqtt import uns as U

if TYPE_CHECKING:
    from edge.journal import Entry, Kind

log = structlog.get_logger("edge.sinks.uns")


class UnsSinkConfig(ConfigStruct, frozen=True):
    """``[[sinks]]`` with ``type = "uns"``: JSON latest values and records over MQTT."""

    name: str = "uns"
    brokers: list[str] = msgspec.field(default_factory=lambda: ["mqtt://127.0.0.1:1883"])
    client_id: str = ""  # default "<gateway id>-<name>"
    username: str = ""
    password_secret: str = ""
    tls: TlsConfig | None = None
    keepalive_s: int = 30
    qos: Literal[0, 1, 2] = 1  # values and status; records use max(qos, 1)
    retain_values: bool = True  # a late subscriber gets every tag's latest value
    max_rate_hz: float = 10.0  # per tag; faster changes coalesce to the latest value
    max_inflight: int = 200  # publishes awaiting the broker before values coalesce
    records: bool = True  # publish records (from the journal, own cursor)
    record_types: list[str] = msgspec.field(default_factory=lambda: list(RECORD_TYPE_NAMES))
    ack_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.brokers:
            raise ValueError("brokers must list at least one mqtt://HOST:PORT")
        for url in self.brokers:
            _parse(url)
            if url.startswith("mqtts:") and self.tls is None:
                raise ValueError(f"brokers: {url!r} is mqtts:// but [tls] is not given")
        if not 0 < self.max_rate_hz <= 1000:
            raise ValueError("max_rate_hz must be > 0 and <= 1000 (per tag)")
        if not 1 <= self.max_inflight <= 65535:
            raise ValueError("max_inflight must be 1 to 65535")
        if self.ack_timeout_s <= 0:
            raise ValueError("ack_timeout_s must be > 0")
        unknown = sorted(set(self.record_types) - set(RECORD_TYPE_NAMES))
        if unknown:
            raise ValueError(f"record_types: unknown {', '.join(unknown)} "
                             f"(known: {', '.join(RECORD_TYPE_NAMES)})")

    def asset_problems(self, asset: AssetConfig, tags: TagRegistry) -> list[str]:
        """Every device and tag name fits in a topic, and no two tags share one."""
        problems: list[str] = []
        devices: set[str] = set()
        topics: dict[str, str] = {}
        for t in tags:
            checks = [("tag", t.name)] if t.device in devices else [("device", t.device),
                                                                    ("tag", t.name)]
            devices.add(t.device)
            found = [p for kind, name in checks if (p := U.name_problem(kind, name))]
            problems += [f"sink '{self.name}': {p} (tag {t.key!r})" for p in found]
            topic = U.join(asset.path(t.device).topic, t.device, t.name)
            if not found and topic in topics:
                problems.append(f"sink '{self.name}': tags {topics[topic]!r} and {t.key!r} "
                                f"would share the topic {topic!r}")
            topics.setdefault(topic, t.key)
        return problems

    def build(self, ctx: BuildContext) -> UnsSink | UnsValuesOnly:
        sink = UnsSink(self, ctx)
        return sink if self.records else UnsValuesOnly(sink)


def _parse(url: str) -> tuple[str, int]:
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError(f"brokers: {url!r} must look like mqtt://HOST:PORT")
    return u.hostname, u.port or (8883 if u.scheme == "mqtts" else 1883)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class UnsSink:
    """Live (``run``/``publish``: latest values) and durable (``write``: records)."""

    def __init__(self, cfg: UnsSinkConfig, ctx: BuildContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.gateway_id = ctx.gateway_id
        self.kinds: tuple[Kind, ...] = ("records",)
        self._links = ctx.metrics.links
        self._password = ctx.secrets(cfg.password_secret) if cfg.password_secret else None
        self._brokers = [_parse(u) for u in cfg.brokers]
        self._next_broker = 0
        self._asset = ctx.asset
        self._prefix: dict[str, str] = {}  # device -> asset path topic
        tags = list(ctx.tags)
        self._topic = [U.join(self._path(t.device), t.device, t.name) for t in tags]
        self._dtype = [t.dtype for t in tags]
        self._unit = [t.unit for t in tags]
        n = len(tags)
        self._value = np.zeros(n, np.float64)
        self._ts = np.zeros(n, np.int64)
        self._quality = np.zeros(n, np.uint8)
        self._pending = np.zeros(n, np.bool_)
        self._next_ok = np.zeros(n, np.float64)  # monotonic s before which a tag waits
        self._wake = asyncio.Event()
        self._text: dict[str, bytes] = {}  # topic -> latest text value (TextValue records)
        self._text_pending: set[str] = set()
        self._text_refused: set[str] = set()
        self.status_topic = U.join(self._path(""), self.gateway_id, "status")
        self._types = frozenset(cfg.record_types)
        self._tags = ctx.tags
        self._client: Client | None = None
        self._lost: asyncio.Future[None] | None = None
        self._ready = asyncio.Event()
        m = ctx.metrics
        self._m_sent = m.counter("edge_uns_values_published_total",
                                 "Latest values the UNS sink handed to the broker", ["sink"]
                                 ).labels(cfg.name)
        self._m_coalesced = m.counter(
            "edge_uns_values_coalesced_total",
            "Values replaced by a newer one before they were sent (rate limit or a slow "
            "broker)", ["sink"]).labels(cfg.name)

    def _path(self, device: str) -> str:
        prefix = self._prefix.get(device)
        if prefix is None:
            where = self._asset.path(device) if device else self._asset.default
            prefix = self._prefix[device] = where.topic
        return prefix

    # ------------------------------------------------------------- LiveSink
    @property
    def started(self) -> asyncio.Event | None:
        return None

    async def run(self) -> None:
        link = self._links.open(f"sink:{self.name}/broker")
        await link.run(self._session)

    def publish(self, batch: SampleBatch, records: Sequence[Record]) -> None:
        for r in records:
            if isinstance(r, TextValue):
                self._text_value(r)
        if not len(batch):
            return
        tid = batch.tag_id
        ok = (tid >= 0) & (tid < len(self._topic))
        if ok.all():
            idx: slice | np.ndarray = slice(None)
        else:  # a tag id this config does not name: nothing to call it
            idx = np.flatnonzero(ok)
            tid = tid[idx]
        self._m_coalesced.inc(int(self._pending[tid].sum()))
        # a tag twice in one batch: the later sample wins (assignment runs in order)
        self._value[tid] = batch.value[idx]
        self._ts[tid] = batch.ts_ns[idx]
        self._quality[tid] = batch.quality[idx]
        self._pending[tid] = True
        self._wake.set()

    def _text_value(self, r: TextValue) -> None:
        """A text tag's latest value, under the source's device like a number's."""
        name = r.tag.removeprefix(f"{r.source}/")
        topic = U.join(self._path(r.source), r.source, name)
        if (U.name_problem("device", r.source) or U.name_problem("tag", name)) is not None:
            if topic not in self._text_refused:
                self._text_refused.add(topic)
                log.warning("uns text value not published: its name cannot be a topic",
                            sink=self.name, source=r.source, tag=r.tag)
            return
        if topic in self._text_pending:
            self._m_coalesced.inc()
        self._text[topic] = U.text_payload(r.value, r.quality, r.ts_ns)
        self._text_pending.add(topic)
        self._wake.set()

    # ---------------------------------------------------------- DurableSink
    async def connect(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 1.0)
        if not self._ready.is_set():
            raise RetryableError("not connected to the broker")

    async def write(self, entries: Sequence[Entry]) -> WriteResult:
        client, lost = self._client, self._lost
        if client is None or lost is None or lost.done():
            raise RetryableError("not connected to the broker")
        qos = max(self.cfg.qos, 1)
        sends = []
        for entry in entries:
            for record, rid in zip(entry.records(), entry.ids(self.gateway_id), strict=True):
                if record_type(record) not in self._types:
                    continue
                device = record_device(record, self._tags)
                topic = U.record_topic(self._path(device), device or self.gateway_id,
                                       record)
                sends.append(client.publish(topic, U.record_payload(record, rid), qos=qos,
                                            timeout=self.cfg.ack_timeout_s))
        if not sends:
            return WriteResult()
        acked = asyncio.ensure_future(asyncio.gather(*sends))
        done, _ = await asyncio.wait((acked, lost), return_when=asyncio.FIRST_COMPLETED)
        if acked not in done:
            acked.cancel()
            with contextlib.suppress(BaseException):
                await acked
            raise RetryableError("connection lost before the records were acknowledged")
        try:
            acked.result()
        except aiomqtt.MqttError as exc:
            raise RetryableError(f"records not acknowledged: {exc}") from exc
        return WriteResult()

    async def close(self) -> None:
        return None

    # -------------------------------------------------------------- session
    async def _session(self) -> None:
        host, port = self._brokers[self._next_broker % len(self._brokers)]
        where = f"{host}:{port}"
        will = aiomqtt.Will(self.status_topic,
                            U.status_payload(False, now_ms(), self.gateway_id),
                            qos=max(self.cfg.qos, 1), retain=True)
        broker = BrokerConfig(host, port, self.cfg.client_id or f"{self.gateway_id}-{self.name}",
                              True, self.cfg.keepalive_s, self.cfg.username, self._password,
                              self.cfg.tls)
        link = self._links.open(f"sink:{self.name}/broker")
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            async with Client(broker, will=will) as client:
                await client.publish(self.status_topic,
                                     U.status_payload(True, now_ms(), self.gateway_id),
                                     qos=max(self.cfg.qos, 1), retain=True)
                self._client, self._lost = client, lost
                link.up(broker=where)
                self._pending[self._ts > 0] = True  # a new session: send every value again
                self._text_pending.update(self._text)
                self._ready.set()
                tasks = (asyncio.create_task(_drain(client)),
                         asyncio.create_task(self._flush(client)))
                try:
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # MqttError (lost) or RetryableError (not acked)
                except asyncio.CancelledError:
                    for task in tasks:
                        task.cancel()
                    await self._stop(client)
                    raise
                finally:
                    for task in tasks:
                        task.cancel()
                        with contextlib.suppress(BaseException):
                            await task
        except aiomqtt.MqttError as exc:
            self._next_broker += 1
            raise RetryableError(f"{where}: {exc}") from exc
        finally:
            self._ready.clear()
            self._client = None
            if not lost.done():
                lost.set_result(None)

    async def _stop(self, client: Client) -> None:
        """Clean shutdown: offline status (retained, acknowledged or 2 s) before DISCONNECT."""
        with contextlib.suppress(Exception):
            await client.publish(self.status_topic,
                                 U.status_payload(False, now_ms(), self.gateway_id),
                                 qos=max(self.cfg.qos, 1), retain=True, timeout=2.0)

    async def _flush(self, client: Client) -> None:
        """Send pending values: per tag at most ``max_rate_hz``, at most ``max_inflight``
        awaiting the broker. A failed publish ends the session (the link retries)."""
        cfg = self.cfg
        period = 1.0 / cfg.max_rate_hz
        window = asyncio.Semaphore(cfg.max_inflight)
        failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        inflight: set[asyncio.Task[None]] = set()
        timer: asyncio.TimerHandle | None = None

        async def send(topic: str, body: bytes) -> None:
            try:
                await client.publish(topic, body, qos=cfg.qos, retain=cfg.retain_values,
                                     timeout=cfg.ack_timeout_s)
                self._m_sent.inc()
            except aiomqtt.MqttError as exc:
                if not failed.done():
                    failed.set_result(exc)
            finally:
                window.release()

        try:
            while not failed.done():
                await self._wake.wait()
                self._wake.clear()
                now = time.monotonic()
                due = np.flatnonzero(self._pending & (self._next_ok <= now))
                for i in due.tolist():
                    await window.acquire()  # a slow broker: values keep coalescing
                    if failed.done():
                        window.release()
                        break
                    self._pending[i] = False
                    self._next_ok[i] = time.monotonic() + period
                    body = U.value_payload(float(self._value[i]), int(self._quality[i]),
                                           int(self._ts[i]), self._dtype[i], self._unit[i])
                    task = asyncio.create_task(send(self._topic[i], body))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                while self._text_pending and not failed.done():  # text: sent on change
                    await window.acquire()
                    if not self._text_pending or failed.done():
                        window.release()
                        break
                    topic = self._text_pending.pop()
                    task = asyncio.create_task(send(topic, self._text[topic]))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                if self._pending.any():  # some wait for their rate slot
                    if timer is not None:
                        timer.cancel()
                    delay = float(self._next_ok[self._pending].min()) - time.monotonic()
                    timer = asyncio.get_running_loop().call_later(max(0.0, delay),
                                                                  self._wake.set)
            exc = failed.result()
            raise RetryableError(f"value not acknowledged: {exc}")
        finally:
            if timer is not None:
                timer.cancel()
            for task in inflight:
                task.cancel()


class UnsValuesOnly:
    """``records = false``: the live half alone (no journal cursor is kept for it)."""

    def __init__(self, sink: UnsSink) -> None:
        self.name = sink.name
        self.sink = sink
        self.publish = sink.publish

    @property
    def started(self) -> asyncio.Event | None:
        return None

    async def run(self) -> None:
        await self.sink.run()


async def _drain(client: Client) -> None:
    """Until the connection is lost (aiomqtt raises MqttError then); we subscribe to
    nothing, so no message comes."""
    async for _ in client.messages:
        pass
