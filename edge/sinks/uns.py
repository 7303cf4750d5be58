"""Unified-namespace MQTT publisher: latest values and records as JSON under the asset path.

``[[sinks]] type = "uns"``: for plants with a UNS broker but no Sparkplug host. Topics and
payloads are in ``edge.protocols.mqtt.uns``; the asset path comes from ``[asset]``; the
config is in ``uns_config``.

Invariants:

* One connection at a time; ``brokers`` are walked in turn, the next one after a failed
  or lost connection. The link runtime (``sink:<name>/broker``) owns backoff and logging.
* The status topic is published retained (online) right after CONNECT, and the Will
  (retained, offline) stands for the gateway when it dies; a clean stop publishes
  offline itself before it disconnects.
* LIVE: ``publish`` (the fast path) only stores each tag's latest sample and marks it
  pending; a flusher sends them, rate-limited, coalescing while the broker is slow or
  away (``uns_values``). Latest values are retained, so a late subscriber gets each
  tag's value at once; a value the broker never took is not replayed.
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
from typing import TYPE_CHECKING

import aiomqtt

from edge.asset import record_device
from edge.components import BuildContext, WriteResult
from edge.errors import RetryableError
from edge.model import Record, SampleBatch, record_type
from edge.protocols.mqtt import BrokerConfig, Client
from edge.protocols.mqtt import uns as U
from edge.runtime.aio import wait_event
from edge.sinks.uns_config import UnsSinkConfig, broker_address
from edge.sinks.uns_values import LatestValues

if TYPE_CHECKING:
    from edge.journal import Entry, Kind


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
        self._brokers = [broker_address(u) for u in cfg.brokers]
        self._next_broker = 0
        self._asset = ctx.asset
        self._prefix: dict[str, str] = {}  # device -> asset path topic
        self.values = LatestValues(cfg, list(ctx.tags), self._path, ctx.metrics)
        self.status_topic = U.join(self._path(""), self.gateway_id, "status")
        self._types = frozenset(cfg.record_types)
        self._tags = ctx.tags
        self._client: Client | None = None
        self._lost: asyncio.Future[None] | None = None
        self._ready = asyncio.Event()

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
        self.values.publish(batch, records)

    # ---------------------------------------------------------- DurableSink
    async def connect(self) -> None:
        if not await wait_event(self._ready, 1.0):
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
                self.values.resend_all()
                self._ready.set()
                tasks = (asyncio.create_task(_drain(client)),
                         asyncio.create_task(self.values.flush(client)))
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
