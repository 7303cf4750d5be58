"""Sparkplug B 3.0 edge node sink: live data by exception, store-and-forward from the journal.

One ``[[sinks]] type = "sparkplug"`` is one edge node ``{group_id}/{edge_node_id}``; each
of our devices is a Sparkplug device (a DBIRTH each). The session rules live in
``edge.protocols.sparkplug.session``; this module carries out its actions.

Invariants:

* One connection at a time: ``brokers`` are walked in turn, the next one after a failed
  or lost connection, never two at once. The link runtime (``sink:<name>/broker``) owns
  the backoff and logs the link going down and up.
* bdSeq is written to ``<state_dir>/sparkplug/<name>.bdseq`` before the first CONNECT
  that carries it; it advances per CONNECT packet sent, not per attempt (the session's
  docstring has the rules and the assertion ids).
* LIVE: ``publish`` (the fast path) sends a tag's value only when it changed since the
  last one sent (report by exception), at QoS 0, and only while born. Every value still
  updates the latest-value table the births report.
* Judgements (interlock trips, quarantines, health alerts, SPC alarms) are node String
  metrics ``Judgements/*`` (``edge.protocols.sparkplug.records``), one JSON record per
  value, live as NDATA and replayed like samples (keys -1.. in the live bookkeeping).
* DURABLE: the delivery loop gives us journal entries through our own cursor. A sample
  the live path already sent on the current connection is not sent again; every other
  one is sent as DDATA with ``is_historical = true`` (``sparkplug_live.LiveLedger``
  tells which, and why a sample that never went out live is never taken for one that
  did). ``write`` returns (and the cursor
  moves) only when a QoS 1 publish on ``ack_topic`` sent after them on the same
  connection is acknowledged while the node is still born; otherwise it raises
  ``RetryableError`` and the same entries come again (repeats are marked historical;
  nothing is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import aiomqtt
import structlog

from edge.components import BuildContext, Hooks, WriteResult
from edge.errors import RetryableError
from edge.model import DataType, Record, SampleBatch, TagSpec
from edge.protocols.mqtt import BrokerConfig, Client
from edge.protocols.sparkplug import bdseq
from edge.protocols.sparkplug import payload as P
from edge.protocols.sparkplug import records as R
from edge.protocols.sparkplug import session as S
from edge.runtime.aio import wait_event
from edge.sinks.sparkplug_config import SparkplugSinkConfig, parse_broker
from edge.sinks.sparkplug_dcmd import handle_dcmd
from edge.sinks.sparkplug_live import LiveLedger

__all__ = ["SparkplugSink", "SparkplugSinkConfig"]

if TYPE_CHECKING:
    from edge.journal import Entry, Kind

log = structlog.get_logger("edge.sinks.sparkplug")
MAX_METRICS = 500  # per DDATA message in a replay
HOST_WAIT_S = 5.0  # no STATE from the primary host this long: subscribe to it again


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SparkplugSink:
    """The edge node: a live sink (``run``/``publish``) and a durable one (``write``)."""

    kinds: tuple[Kind, ...] = ("samples", "records")

    def __init__(self, cfg: SparkplugSinkConfig, ctx: BuildContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._links = ctx.metrics.links
        self.password = ctx.secrets(cfg.password_secret) if cfg.password_secret else None
        self.brokers = [parse_broker(u) for u in cfg.brokers]
        self._next_broker = 0
        tags = sorted(ctx.tags, key=lambda t: t.id)
        self.alias = P.aliases(tags)
        self.tag: dict[int, TagSpec] = {t.id: t for t in tags}
        self.dtype: dict[int, DataType] = {t.id: t.dtype for t in tags}
        by_device: dict[str, list[P.BirthMetric]] = defaultdict(list)
        for t in tags:
            by_device[t.device].append(P.BirthMetric(self.alias[t.id], t))
        self.device_metrics = dict(by_device)
        for device in self.device_metrics:
            P.check_id(f"device {device!r}", device)
        # DCMD allow-list: (device, metric name) -> command; aliases after the tags'
        self.allowed = {(c.device, c.metric): c for c in cfg.commands}
        first = P.FIRST_TAG_ALIAS + len(tags)
        self.command_metrics: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for i, c in enumerate(cfg.commands):
            self.command_metrics[c.device].append((first + i, c.metric))
        self.metric_names: dict[str, dict[int, str]] = {
            device: {bm.alias: bm.tag.name for bm in metrics}
            | dict(self.command_metrics.get(device, ()))
            for device, metrics in self.device_metrics.items()}
        self.hooks: Hooks = ctx.hooks
        # judgements (records) as node String metrics, after the commands; their live
        # and replay bookkeeping uses the keys -1, -2, ... beside the tag ids
        first = P.FIRST_TAG_ALIAS + len(tags) + len(cfg.commands)
        self.record_metrics = [(first + i, name) for i, name in enumerate(R.METRICS)]
        self.record_key = {name: -1 - i for i, name in enumerate(R.METRICS)}
        self.record_alias = {name: alias for alias, name in self.record_metrics}
        self.ack_topic = cfg.ack_topic or f"edge-gateway/{cfg.group_id}/{cfg.edge_node_id}/ack"
        self.bdseq_path = bdseq.path_for(ctx.state_dir, cfg.name)
        self.state = S.Session(cfg.group_id, cfg.edge_node_id, tuple(self.device_metrics),
                               cfg.primary_host_id, bd_seq=bdseq.load(self.bdseq_path))
        self.latest: dict[int, float] = {}
        self.ledger = LiveLedger()
        self._client: Client | None = None
        self._generation = 0
        self._born = asyncio.Event()

    # ------------------------------------------------------------- LiveSink
    @property
    def started(self) -> asyncio.Event | None:
        return None

    async def run(self) -> None:
        link = self._links.open(f"sink:{self.name}/broker")
        await link.run(self._session)

    def publish(self, batch: SampleBatch, records: Sequence[Record]) -> None:
        born = self._born.is_set()
        points: dict[str, list[tuple[int, DataType, int, float]]] = defaultdict(list)
        # the fast path: LiveLedger.handled inlined, dicts bound once
        ledger = self.ledger
        specs, latest, sent, alias = self.tag, self.latest, ledger.sent, self.alias
        seen, live = ledger.seen, ledger.live
        for tag, ts, value in zip(batch.tag_id.tolist(), batch.ts_ns.tolist(),
                                  batch.value.tolist(), strict=True):
            spec = specs.get(tag)
            if spec is None:
                continue
            latest[tag] = value
            if not born:
                if ts > seen.get(tag, -1):
                    seen[tag] = ts
                continue
            span = live.get(tag)
            if span is None:
                floor = ledger.floor.get(tag, -1)
                live[tag] = [ts if ts > floor else floor + 1, ts]
            elif ts > span[1]:
                span[1] = ts
            last = sent.get(tag)
            if last is not None and (last == value or (math.isnan(last) and math.isnan(value))):
                continue
            sent[tag] = value
            points[spec.device].append((alias[tag], spec.dtype, ts // 1_000_000, value))
        for device, pts in points.items():
            self._send(device, pts, historical=False)
        texts = [(self.record_alias[name], r.ts_ns // 1_000_000, R.text(r))
                 for r in records if (name := R.metric_of(r)) is not None
                 and ledger.handled(self.record_key[name], r.ts_ns, born)]
        if texts:
            self._send("", [], historical=False, texts=texts)

    # ---------------------------------------------------------- DurableSink
    async def connect(self) -> None:
        if not await wait_event(self._born, 1.0):
            raise RetryableError("not born: broker or primary host away")

    async def write(self, entries: Sequence[Entry]) -> WriteResult:
        client, generation = self._client, self._generation
        if client is None or not self._born.is_set():
            raise RetryableError("not born: broker or primary host away")
        points: dict[str, list[tuple[int, DataType, int, float]]] = defaultdict(list)
        texts: list[tuple[int, int, str]] = []
        for entry in entries:
            if entry.kind == "records":
                texts += [(self.record_alias[name], r.ts_ns // 1_000_000, R.text(r))
                          for r in entry.records() if (name := R.metric_of(r)) is not None
                          and not self.ledger.went_live(self.record_key[name], r.ts_ns)]
                continue
            b = entry.samples()
            for tag, ts, value in zip(b.tag_id.tolist(), b.ts_ns.tolist(), b.value.tolist(),
                                      strict=True):
                spec = self.tag.get(tag)
                if spec is None or self.ledger.went_live(tag, ts):
                    continue
                points[spec.device].append((self.alias[tag], spec.dtype, ts // 1_000_000,
                                            value))
        for device, pts in points.items():
            for i in range(0, len(pts), MAX_METRICS):
                if not self._send(device, pts[i:i + MAX_METRICS], historical=True):
                    raise RetryableError("connection lost during the replay")
        for i in range(0, len(texts), MAX_METRICS):
            if not self._send("", [], historical=True, texts=texts[i:i + MAX_METRICS]):
                raise RetryableError("connection lost during the replay")
        try:
            await client.publish(self.ack_topic, str(entries[-1].seq).encode(), qos=1,
                                 timeout=self.cfg.ack_timeout_s)
        except aiomqtt.MqttError as exc:
            raise RetryableError(f"store-and-forward mark not acknowledged: {exc}") from exc
        if generation != self._generation or not self._born.is_set():
            raise RetryableError("connection or primary host lost before the acknowledgement")
        return WriteResult()

    async def close(self) -> None:
        return None

    # -------------------------------------------------------------- session
    def _send(self, device: str, pts: list[tuple[int, DataType, int, float]], *,
              historical: bool, texts: Sequence[tuple[int, int, str]] = ()) -> bool:
        self.state, actions = S.step(self.state, S.Send(device))
        client = self._client
        for a in actions:
            if isinstance(a, S.PublishData) and client is not None:
                kind = "DDATA" if device else "NDATA"
                body = P.data(a.seq, now_ms(), pts, historical=historical,
                              texts=texts).SerializeToString()
                return client.publish_nowait(self._topic(kind, device), body)
        return False

    def _topic(self, kind: str, device: str = "") -> str:
        return P.topic(self.cfg.group_id, kind, self.cfg.edge_node_id, device)

    async def _session(self) -> None:
        host, port = self.brokers[self._next_broker % len(self.brokers)]
        where = f"{host}:{port}"
        before = self.state
        self.state, actions = S.step(self.state, S.Dial())
        will: aiomqtt.Will | None = None
        for a in actions:
            if isinstance(a, S.PersistBdSeq):
                try:
                    bdseq.save(self.bdseq_path, a.bd_seq)
                except OSError as exc:  # never CONNECT with a bdSeq a restart could reuse
                    self.state = before
                    raise RetryableError(f"bdSeq not persisted to {self.bdseq_path}: "
                                         f"{exc}") from exc
            elif isinstance(a, S.Connect):
                will = aiomqtt.Will(self._topic("NDEATH"),
                                    P.death(a.bd_seq, now_ms()).SerializeToString(),
                                    qos=1, retain=False)
        broker = BrokerConfig(host, port, self.cfg.client_id or
                              f"{self.cfg.group_id}-{self.cfg.edge_node_id}", True,
                              self.cfg.keepalive_s, self.cfg.username, self.password,
                              self.cfg.tls)
        link = self._links.open(f"sink:{self.name}/broker")
        client: Client | None = None
        try:
            client = Client(broker, will=will)
            async with client:
                self._client = client
                self._generation += 1
                link.up(broker=where, bd_seq=self.state.bd_seq)
                waiter = asyncio.create_task(self._wait_host(client))
                try:
                    await self._carry(client, S.Connected())
                    async for message in client.messages:
                        await self._on_message(client, message)
                except asyncio.CancelledError:
                    await self._stop(client)
                    raise
                finally:
                    waiter.cancel()
        except aiomqtt.MqttError as exc:
            self._next_broker += 1
            raise RetryableError(f"{where}: {exc}") from exc
        finally:
            self._client = None
            self._born.clear()
            if client is not None and client.connect_sent:  # its bdSeq is used up
                self.state, _ = S.step(self.state, S.ConnectSent())
            self.state, _ = S.step(self.state, S.Lost())

    async def _wait_host(self, client: Client) -> None:
        """While no STATE has come on this connection, subscribe to it again now and then
        (a broker may acknowledge the subscription without sending the retained STATE)."""
        if not self.cfg.primary_host_id:
            return
        waited = 0.0
        while True:
            await asyncio.sleep(HOST_WAIT_S)
            waited += HOST_WAIT_S
            if self.state.phase is not S.Phase.WAITING_HOST or self.state.host_heard:
                continue
            log.info("sparkplug no STATE from the primary host yet: subscribing to it again",
                     sink=self.name, host=self.cfg.primary_host_id, waited_s=waited)
            try:
                await self._carry(client, S.HostWait())
            except aiomqtt.MqttError as exc:  # the message loop sees a dead connection
                log.warning("sparkplug STATE subscription failed", sink=self.name,
                            error=str(exc))

    async def _stop(self, client: Client) -> None:
        """Clean shutdown: NDEATH (QoS 1, acknowledged or 2 s) before the DISCONNECT."""
        self.state, actions = S.step(self.state, S.Stop())
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._do(client, actions), 2.0)

    async def _on_message(self, client: Client, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        raw = message.payload if isinstance(message.payload, bytes) else b""
        if topic.startswith("spBv1.0/STATE/"):
            try:
                doc = json.loads(raw)
                event = S.HostState(bool(doc["online"]), int(doc["timestamp"]))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("sparkplug STATE ignored: not {online, timestamp} JSON",
                            sink=self.name, topic=topic, error=str(exc))
                return
            await self._carry(client, event)
        elif "/NCMD/" in topic:
            try:
                cmd = P.Payload.FromString(raw)
            except Exception as exc:  # protobuf's DecodeError; never restart for a payload
                log.warning("sparkplug NCMD ignored: not a Sparkplug B payload",
                            sink=self.name, topic=topic, error=str(exc))
                return
            if P.rebirth_requested(cmd):
                log.info("sparkplug rebirth requested", sink=self.name)
                await self._carry(client, S.Rebirth())
        elif "/DCMD/" in topic:
            await handle_dcmd(self.name, self.hooks, self.allowed, self.metric_names,
                              self.cfg.primary_host_id or "anonymous",
                              topic.rsplit("/", 1)[1], raw)

    async def _carry(self, client: Client, event: S.Event) -> None:
        self.state, actions = S.step(self.state, event)
        await self._do(client, actions)

    async def _do(self, client: Client, actions: list[S.Action]) -> None:
        for a in actions:
            match a:
                case S.Subscribe(topics=topics):
                    for t in topics:
                        await client.subscribe(t, qos=1)
                case S.PublishNodeBirth(bd_seq=bd, seq=seq):
                    self._born.clear()
                    self.ledger.births()
                    body = P.node_birth(bd, now_ms(), [], {}, self.record_metrics)
                    body.seq = seq
                    client.publish_nowait(self._topic("NBIRTH"), body.SerializeToString())
                case S.PublishDeviceBirth(device=device, seq=seq):
                    metrics = self.device_metrics[device]
                    body = P.device_birth(seq, now_ms(), metrics, self.latest,
                                          self.command_metrics.get(device, ()))
                    for m in metrics:
                        if m.tag.id in self.latest:
                            self.ledger.sent[m.tag.id] = self.latest[m.tag.id]
                    client.publish_nowait(self._topic("DBIRTH", device),
                                          body.SerializeToString())
                case S.StartReplay():
                    self._born.set()
                    log.info("sparkplug births published", sink=self.name,
                             bd_seq=self.state.bd_seq, devices=len(self.device_metrics))
                case S.PublishDeath(bd_seq=bd):
                    self._born.clear()
                    await client.publish(self._topic("NDEATH"),
                                         P.death(bd, now_ms()).SerializeToString(), qos=1)
                case S.Disconnect(reason=reason):
                    raise RetryableError(f"disconnected: {reason}")
                case _:
                    pass
        if self.state.phase is S.Phase.BORN and not self._born.is_set():
            self._born.set()  # a rebirth: data flows again after the new births

