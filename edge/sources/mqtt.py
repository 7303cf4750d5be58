"""MQTT source (aiomqtt): wildcard subscriptions mapped to tags; command publishing.

Invariants:

* Every message is turned into samples or into a ``Quarantine`` record naming the topic
  and the reason (not JSON, missing field, unknown device, duplicate, ...); the source
  never crashes on a payload: any exception from one message becomes its Quarantine.
* Only a message that carries identity can be a duplicate, never one that merely
  repeats a value (a stopped motor sends ``{"current_a": 0.0}`` again and again):
  with ``id_field``, a message whose id is one of the last ``DUPLICATE_WINDOW`` ids of
  its topic; with ``ts_field``, a payload equal to one of the last ``DUPLICATE_WINDOW``
  of its topic; without either, only a broker redelivery (the dup flag, QoS > 0) of a
  payload equal to one of those. Payloads are compared by a 128-bit digest: keeping
  the payloads themselves cost 400 MB with 1,000 topics of 25 KB batches.
* The link runtime (``edge.runtime.links``) keeps the link: a session connects,
  subscribes and consumes; on any ``MqttError`` it ends, the link goes down and the
  runtime backs off (capped, full jitter) before the next session. With
  ``clean_session = false`` and QoS 1 the broker keeps the session, so messages
  published while the link was down arrive after the reconnect.
* A QoS > 0 message is acknowledged only after emit returned (``wait_durable``: after
  the journal commit), in arrival order, so the broker redelivers whatever was not kept.
  What was kept but not yet acknowledged when the process died or the link dropped
  comes again flagged dup: the keys (topic + payload digest) of the last
  ``KEPT_BATCHES`` batches are stored in the journal with each batch, in the same
  transaction, and a redelivery of one of them is a duplicate. Emit marks the batch
  urgent: the journal commits it without its grouping wait, since the broker sends only
  ``max_inflight_messages`` (mosquitto: 20) unacknowledged messages and the source
  takes nothing more until this batch is acknowledged.
* Messages already queued are taken together (``Client.receive``: one wake-up for all
  of them, see ``edge.protocols.mqtt.connection``) and emitted together (no added
  latency, fewer batches). Taking them does not yield to the event loop, so the
  consumer yields itself once it has held the loop for ``YIELD_S``: a backlog of queued
  messages must not hold the loop (and with it the interlocks) until it is drained.
* Commands are published from the caller's task, never from the message loop.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import functools
import hashlib
import time
from dataclasses import dataclass

import aiomqtt
import msgspec
import numpy as np
import numpy.typing as npt
import structlog

from edge.components import BuildContext, Command, Emit
from edge.errors import PermanentError, RetryableError
from edge.model import CmmReading, Quarantine
from edge.protocols.mqtt import BrokerConfig, Client, Received, session
from edge.runtime.links import Backoff
from edge.sources.aliases import Spellings
from edge.sources.metrics import QuarantineLog, SourceMetrics, link_name
from edge.sources.mqtt_batch import Batch, hand_over
from edge.sources.mqtt_config import (
    MqttSourceConfig,
    SubscriptionConfig,
)
from edge.sources.mqtt_payload import (
    CmmSpec,
    FieldSpec,
    Limits,
    PayloadError,
    extract,
    extract_cmm,
)
from edge.sources.timestamps import zone

log = structlog.get_logger("edge.sources.mqtt")
DUPLICATE_WINDOW = 16
KEPT_BATCHES = 3  # batches that may be in the journal but not yet acknowledged
YIELD_S = 0.001
MATCH_CACHE = 10_000  # topics whose subscription is remembered (matching costs ~10 us)


@dataclass(slots=True)
class _Sub:
    cfg: SubscriptionConfig
    specs: list[FieldSpec]
    ts_path: tuple[str, ...] | None
    id_path: tuple[str, ...] | None
    tz: dt.tzinfo | None
    ids: dict[str, npt.NDArray[np.int32]]  # device -> tag id per field
    template: bool
    cmm: CmmSpec | None
    spellings: Spellings | None = None


class MqttSource:
    def __init__(self, cfg: MqttSourceConfig, ctx: BuildContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.metrics = SourceMetrics(ctx.metrics, cfg.name)
        self.qlog = QuarantineLog(log, cfg.name)
        self.password = ctx.secrets(cfg.password_secret) if cfg.password_secret else None
        self.subs: list[_Sub] = []
        for s in cfg.subscriptions:
            specs = [FieldSpec(tuple(f.path.split(".")), f.required, dict(f.enum))
                     for f in s.fields]
            ids = {
                dev: np.array([ctx.tags.id_of(f"{dev}/{f.tag}") for f in s.fields], np.int32)
                for dev in cfg.devices_of(s)
            }
            self.subs.append(_Sub(s, specs, tuple(s.ts_field.split(".")) if s.ts_field else None,
                                  tuple(s.id_field.split(".")) if s.id_field else None,
                                  zone(s.timezone), ids, "{" in s.device,
                                  s.cmm.spec() if s.cmm is not None else None,
                                  Spellings(s.devices, s.aliases,
                                            loose_match=s.spelling == "loose")
                                  if s.aliases or s.spelling == "loose" else None))
        self.limits = Limits(cfg.max_payload_bytes, cfg.max_depth)
        self.commands = {c.action: c for c in cfg.commands}
        # QoS > 0: acknowledge a message only once it is in the journal (see run)
        self.wait_durable = any(
            (cfg.qos if s.qos is None else s.qos) > 0 for s in cfg.subscriptions)
        self._client: Client | None = None
        self._recent: dict[str, collections.deque[bytes]] = {}
        self._matched: dict[str, _Sub] = {}  # topic -> its subscription (a cache)
        self.messages = 0
        # Keys of the QoS>0 messages of the last KEPT_BATCHES batches: kept in the journal
        # but perhaps not yet acknowledged. Stored with each batch (same transaction).
        self.checkpoint_key = f"mqtt:{cfg.name}"
        self._store = ctx.checkpoints
        self._kept_batches: collections.deque[list[bytes]] = collections.deque()
        self._kept: set[bytes] = set()
        self.where = f"{cfg.host}:{cfg.port}"
        self._broker = self.broker()
        self._subscriptions = [(s.cfg.topic, cfg.qos if s.cfg.qos is None else s.cfg.qos)
                               for s in self.subs]
        self.link = ctx.metrics.links.open(
            link_name(cfg.name, ""), Backoff(initial_s=min(0.2, cfg.backoff_max_s),
                                             max_s=cfg.backoff_max_s))

    # ------------------------------------------------------------------ receiving

    def broker(self) -> BrokerConfig:
        c = self.cfg
        return BrokerConfig(c.host, c.port, c.client_id, c.clean_session, c.keepalive,
                            c.username, self.password, c.tls)

    async def load_kept(self) -> None:
        """The keys kept before the last stop (from the journal), once per process."""
        if self._store is not None and self.wait_durable and not self._kept_batches:
            data = await self._store(self.checkpoint_key) or b""
            self._remember([data[i:i + 16] for i in range(0, len(data) - 15, 16)])

    async def run(self, emit: Emit) -> None:
        await self.load_kept()
        await self.link.run(functools.partial(self._session, emit))

    async def _session(self, emit: Emit) -> None:
        """One broker connection: connect, subscribe, consume until the link is lost."""
        try:
            async with session(self._broker, self._subscriptions,
                               manual_ack=self.wait_durable, inbox=True) as client:
                self._client = client
                self.link.up(proven=False, broker=self.where)
                await self._consume(client, emit)
        except aiomqtt.MqttError as exc:
            raise RetryableError(f"broker {self.where}: {exc}") from None
        finally:
            self._client = None

    async def _consume(self, client: Client, emit: Emit) -> None:
        """Take messages into batches; a keeper task emits each batch and then acks it.

        While the keeper waits for one batch's journal commit, the next batch grows here
        (one batch in hand, one waiting): commits are grouped, never one per message."""
        pending: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=1)
        keeper = asyncio.create_task(self._keep(client, emit, pending))
        acc = Batch()
        held_since = time.perf_counter()
        limit = self.cfg.max_batch
        try:
            try:
                while True:
                    waits = not client.queued
                    messages = await client.receive()
                    if waits:
                        held_since = time.perf_counter()
                    for message in messages:
                        self._take(message, acc)
                        if acc.count >= limit or len(acc.records) >= 1000:
                            await hand_over(pending, keeper, acc)
                            acc = Batch()
                        if time.perf_counter() - held_since > YIELD_S:
                            await asyncio.sleep(0)
                            held_since = time.perf_counter()
                    self.messages += len(messages)
                    if client.queued:  # more arrived meanwhile: same batch
                        continue
                    await hand_over(pending, keeper, acc)
                    acc = Batch()
            except aiomqtt.MqttError:
                # The link is gone: keep what arrived (unacked; a persistent session
                # redelivers it flagged dup, and the copies are recognised as such).
                await hand_over(pending, keeper, acc)
                await hand_over(pending, keeper, None)
                await keeper
                raise
        finally:
            if not keeper.done():
                keeper.cancel()

    def _take(self, message: Received, acc: Batch) -> None:
        payload, topic = message.payload, message.topic
        now = time.time_ns()
        if message.qos == 0:
            acc.add(self.handle(topic, payload, now))
            return
        acc.acks.append(message)
        redelivered = message.dup
        key = hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=16).digest()
        if redelivered and key in self._kept:  # kept before a crash or a lost link
            acc.add(self._quarantine(topic, payload, now, "duplicate",
                                     "duplicate message (redelivery of one already kept)"))
            return
        acc.keys.append(key)
        acc.add(self.handle(topic, payload, now, redelivered=redelivered))

    def _remember(self, keys: list[bytes]) -> bytes:
        """Note the keys of a batch about to be kept; the checkpoint of every noted key."""
        if len(self._kept_batches) >= KEPT_BATCHES:
            self._kept.difference_update(self._kept_batches.popleft())
        self._kept_batches.append(keys)
        self._kept.update(keys)
        return b"".join(k for batch in self._kept_batches for k in batch)

    async def _keep(self, client: Client, emit: Emit,
                    pending: asyncio.Queue[Batch | None]) -> None:
        """Emit batches in order; ack each batch's messages once emit returned (with
        ``wait_durable``, after the journal commit)."""
        while (batch := await pending.get()) is not None:
            if batch.keys or batch.acks:
                kept = self._remember(batch.keys)
                if self._store is not None:
                    await emit(batch.samples(), batch.records,
                               checkpoint=(self.checkpoint_key, kept))
                else:
                    await emit(batch.samples(), batch.records)
            else:
                await emit(batch.samples(), batch.records)
            for message in batch.acks:
                client.ack(message)
            self.link.up()  # it carried data: the next loss backs off from the start
            self.metrics.received(batch.count)
            for dev in batch.devices:
                self.metrics.sampled(dev)

    def handle(
        self, topic: str, payload: bytes, arrival_ns: int, *, redelivered: bool = False
    ) -> Quarantine | CmmReading | tuple[str, npt.NDArray[np.int32], npt.NDArray[np.int64],
                                         npt.NDArray[np.float64]]:
        """Samples of one message (device, tag ids, ts, values), its CMM reading
        (``kind = "cmm"``), or its quarantine record.

        ``redelivered``: the broker's dup flag on a QoS > 0 message."""
        try:
            sub = self._match(topic)
            device = sub.cfg.device.format(*topic.split("/")) if sub.template else (
                sub.cfg.device or self.name)
            ids = sub.ids.get(device)
            if ids is None and sub.spellings is not None:
                device = sub.spellings.resolve(device) or device
                ids = sub.ids.get(device)
            if ids is None:
                raise PayloadError("unknown_device", f"unknown device {device[:60]!r}")
            recent = self._recent.setdefault(
                topic, collections.deque(maxlen=2 * DUPLICATE_WINDOW))  # ids + digests
            digest = hashlib.blake2b(payload, digest_size=16).digest()
            if digest in recent and (redelivered or (sub.ts_path and not sub.id_path)):
                raise PayloadError("duplicate", "duplicate message")
            if sub.cmm is not None:
                return self._cmm(sub, device, topic, payload, arrival_ns, recent, digest)
            got = extract(payload, sub.specs, ts_path=sub.ts_path, tz=sub.tz,
                          ts_unit=sub.cfg.ts_unit, batched=sub.cfg.batched,
                          arrival_ns=arrival_ns, limits=self.limits, id_path=sub.id_path)
            if sub.id_path is not None:
                key = b"id:" + got.identity
                if key in recent:
                    raise PayloadError("duplicate", "duplicate message")
                recent.append(key)
            recent.append(digest)
            return device, ids[got.field_index], got.ts_ns, got.value
        except PayloadError as exc:
            return self._quarantine(topic, payload, arrival_ns, exc.kind, exc.reason)
        except Exception as exc:  # one payload must never stop the source: keep going
            reason = f"{type(exc).__name__}: {str(exc)[:120]}" if str(exc) else type(exc).__name__
            return self._quarantine(topic, payload, arrival_ns, "internal_error", reason)

    def _cmm(self, sub: _Sub, device: str, topic: str, payload: bytes, arrival_ns: int,
             recent: collections.deque[bytes], digest: bytes) -> CmmReading:
        assert sub.cmm is not None
        reading, ident = extract_cmm(
            payload, sub.cmm, ts_path=sub.ts_path, tz=sub.tz, ts_unit=sub.cfg.ts_unit,
            arrival_ns=arrival_ns, limits=self.limits, id_path=sub.id_path,
            device=device, where=topic)
        if sub.id_path is not None:
            key = b"id:" + ident
            if key in recent:
                raise PayloadError("duplicate", "duplicate message")
            recent.append(key)
        recent.append(digest)
        return reading

    def _quarantine(self, topic: str, payload: bytes, arrival_ns: int, kind: str,
                    reason: str) -> Quarantine:
        self.metrics.rejected(kind)
        self.qlog.note("mqtt message quarantined", kind, topic=topic, reason=reason)
        return Quarantine(arrival_ns, self.name, reason, where=topic, payload=repr(payload[:200]))

    def _match(self, topic: str) -> _Sub:
        sub = self._matched.get(topic)
        if sub is not None:
            return sub
        t = aiomqtt.Topic(topic)
        for sub in self.subs:
            if t.matches(sub.cfg.topic):
                if len(self._matched) >= MATCH_CACHE:  # topics with an id in them
                    self._matched.clear()
                self._matched[topic] = sub
                return sub
        raise PayloadError("no_subscription", "no subscription matches the topic")

    # ------------------------------------------------------------------ write-back

    async def write(self, command: Command) -> None:
        """Publish a configured command; RetryableError while the broker is unreachable."""
        spec = self.commands.get(command.action)
        if spec is None:
            raise PermanentError(
                f"source '{self.name}' has no command '{command.action}' "
                f"(configured: {', '.join(sorted(self.commands)) or 'none'})"
            )
        client = self._client
        if client is None:
            raise RetryableError(f"source '{self.name}': broker not connected")
        body = {k: _fill(v, command) for k, v in spec.payload.items()}
        try:
            await client.publish(spec.topic, msgspec.json.encode(body), qos=spec.qos,
                                 retain=spec.retain)
        except aiomqtt.MqttError as exc:
            raise RetryableError(
                f"source '{self.name}': command '{command.action}' not published: {exc}"
            ) from None
        log.info("mqtt command published", source=self.name, action=command.action,
                 topic=spec.topic, target=command.target, reason=command.reason)


def _fill(value: str | int | float | bool, command: Command) -> str | int | float | bool:
    if not isinstance(value, str):
        return value
    if value == "{value}" and not isinstance(command.value, str):
        return command.value
    return (value.replace("{target}", command.target).replace("{value}", str(command.value))
            .replace("{reason}", command.reason))
