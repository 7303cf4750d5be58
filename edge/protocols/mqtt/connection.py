"""MQTT broker connection: endpoint settings, client, session, manual acknowledgement.

Invariants:

* With ``manual_ack`` a QoS 1/2 message is acknowledged to the broker only when the
  caller calls ``Client.ack`` for it, so a message the caller did not keep (a crash
  before the journal commit) is redelivered by the broker (persistent session). Acks
  must be sent in the order the messages arrived (MQTT 3.1.1, 4.6). An ack for a
  message of an earlier connection is never sent on a later one: a client object is
  one connection, and ``ack`` on a lost connection does nothing.
* At QoS 2 paho answers PUBREC itself and hands the message over on PUBREL; only the
  final PUBCOMP waits for ``ack``. A crash between the two loses the message (paho
  keeps no session state on disk): QoS 1 is the level that survives a crash.
* Every ``InMessage`` carries the broker's ``dup`` flag (a redelivery).
* ``session`` subscribes after every connect: a broker may have dropped the session.
* ``Client.connect_sent`` turns True when the socket (TCP, and TLS if any) is open:
  paho queues the CONNECT packet, with the Will, right after. False after a failed
  attempt means no CONNECT left (refused, unreachable, TLS failure); Sparkplug counts
  bdSeq per CONNECT packet by it.
* With ``inbox`` (the MQTT source's fast path) a message is kept as a small
  ``Received`` in the client's inbox, and ``receive`` returns every message queued, in
  arrival order, waiting only when there is none: no aiomqtt ``Message``/``Topic`` and
  no task per message. The socket's reader then reads up to ``READ_PACKETS`` packets
  per wake-up (``READ_S`` at most) instead of one per turn of the event loop; it stops
  at the first read that brings no message, so nothing is left unread while the
  socket is quiet. ``messages`` (aiomqtt's iterator) is not fed then.
* aiomqtt has no manual-ack option (2.5); this module is the one place that reaches
  into its paho client (``_client``) for it, and into its reader and message hooks
  (``_on_socket_open``, ``_on_message``) for the inbox and ``connect_sent``. paho is
  used through its public API only (``loop_read``, ``ack``).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from edge.config import ConfigStruct

READ_PACKETS = 256  # packets read per wake-up of the socket's reader (inbox only)
READ_S = 0.001  # ... or until it has held the loop this long


class TlsConfig(ConfigStruct, frozen=True):
    """TLS to the broker; an empty ``ca_file`` trusts the system's CA store."""

    ca_file: str = ""
    cert_file: str = ""  # client certificate, for brokers that require one
    key_file: str = ""
    verify_hostname: bool = True

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file must be given together")
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, key)
            if path and not Path(path).is_file():
                raise ValueError(f"{key} {path!r} is not a readable file")

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.check_hostname = self.verify_hostname
        return ctx


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where and how to connect; built from a source's or sink's config section."""

    host: str
    port: int = 1883
    client_id: str = ""
    clean_session: bool = True
    keepalive: int = 30
    username: str = ""
    password: str | None = None
    tls: TlsConfig | None = None
    timeout_s: float = 10.0

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class InMessage(aiomqtt.Message):
    """An aiomqtt message with the broker's redelivery flag."""

    dup: bool = False


@dataclass(slots=True)
class Received:
    """A message in the inbox: what a source needs of it, and no more."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    dup: bool
    retain: bool


class Client(aiomqtt.Client):
    """aiomqtt client with optional manual acknowledgement and ``dup`` on each message;
    with ``inbox``, messages are taken in batches with ``receive``."""

    def __init__(self, broker: BrokerConfig, *, manual_ack: bool = False,
                 will: aiomqtt.Will | None = None, inbox: bool = False) -> None:
        super().__init__(
            broker.host, broker.port, identifier=broker.client_id or None,
            clean_session=broker.clean_session, keepalive=broker.keepalive,
            username=broker.username or None, password=broker.password,
            timeout=broker.timeout_s, will=will,
            tls_context=broker.tls.context() if broker.tls is not None else None,
        )
        self.manual_ack = manual_ack
        self.connect_sent = False
        self._paho: paho.Client = self._client
        self._paho.manual_ack_set(manual_ack)
        self._inbox: collections.deque[Received] | None = (
            collections.deque() if inbox else None)
        self._waiter: asyncio.Future[None] | None = None
        self._received = 0  # messages taken from the socket (the reader's progress)

    def _on_message(self, client: paho.Client, userdata: Any,
                    message: paho.MQTTMessage) -> None:
        self._received += 1
        if self._inbox is not None:
            try:
                topic = message.topic
            except UnicodeDecodeError:  # no subscription matches it: quarantined
                topic = "(topic not UTF-8)"
            self._inbox.append(Received(topic, bytes(message.payload), message.qos,
                                        message.mid, bool(message.dup), message.retain))
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)
            return
        m = InMessage._from_paho_message(message)
        m.dup = bool(message.dup)
        try:
            self._queue.put_nowait(m)
        except asyncio.QueueFull:  # only with max_queued_incoming_messages, which we never set
            self._logger.warning("Message queue is full. Discarding message.")

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho (in aiomqtt's executor thread) calls this between opening the socket and
        # queueing the CONNECT; the event loop reads the flag after the connect returned
        self.connect_sent = True
        super()._on_socket_open(client, userdata, sock)
        if self._inbox is not None:  # after aiomqtt's reader (same queue): replaces it
            self._loop.call_soon_threadsafe(self._loop.add_reader, sock.fileno(),
                                            self._read_ready, client)

    def _read_ready(self, client: paho.Client) -> None:
        """Read packets while they bring messages (bounded); a read that brings none (the
        socket is drained, a partial packet, an ack) ends the turn, and the level-
        triggered reader calls again while bytes are waiting."""
        try:
            until = time.perf_counter() + READ_S
            for _ in range(READ_PACKETS):
                before = self._received
                if client.loop_read() != paho.MQTT_ERR_SUCCESS:
                    return
                sock = client.socket()
                if sock is None:
                    return
                pending = getattr(sock, "pending", None)  # TLS: bytes decrypted, unread
                if self._received == before and not (pending is not None and pending()):
                    return
                if time.perf_counter() > until:
                    return
        except Exception as exc:  # as aiomqtt's reader: a broken socket ends the session
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)

    @property
    def queued(self) -> int:
        """Messages in the inbox."""
        return len(self._inbox) if self._inbox is not None else self._queue.qsize()

    async def receive(self) -> list[Received]:
        """Every message in the inbox (at least one), oldest first; aiomqtt.MqttError
        once the connection is lost and the inbox is empty."""
        inbox = self._inbox
        if inbox is None:
            raise RuntimeError("receive needs a Client made with inbox=True")
        while not inbox:
            if self._disconnected.done():
                raise aiomqtt.MqttError("Disconnected during message iteration") from (
                    None if self._disconnected.cancelled() else self._disconnected.exception())
            waiter = self._waiter = self._loop.create_future()
            wake = _waker(waiter)
            self._disconnected.add_done_callback(wake)
            try:
                await waiter
            finally:
                self._disconnected.remove_done_callback(wake)
                self._waiter = None
        batch = list(inbox)
        inbox.clear()
        return batch

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        """Queue a publish without waiting (a live sink's fast path). Messages queued on
        one connection leave in the order queued, before any later ``publish``. False
        when the connection is gone (the message is not sent)."""
        if not self._paho.is_connected():
            return False
        return self._paho.publish(topic, payload, qos).rc == paho.MQTT_ERR_SUCCESS

    def ack(self, message: aiomqtt.Message | Received) -> None:
        """Acknowledge a QoS 1/2 message to the broker (manual_ack only; in arrival order)."""
        if self.manual_ack and message.qos > 0 and self._paho.is_connected():
            self._paho.ack(message.mid, message.qos)


def _waker(waiter: asyncio.Future[None]) -> Any:
    def wake(_: object) -> None:
        if not waiter.done():
            waiter.set_result(None)
    return wake


@asynccontextmanager
async def session(broker: BrokerConfig, subscriptions: Sequence[tuple[str, int]], *,
                  manual_ack: bool = False, inbox: bool = False) -> AsyncIterator[Client]:
    """A connected client with every ``(topic, qos)`` subscribed; aiomqtt.MqttError when
    the broker cannot be reached or refuses."""
    client = Client(broker, manual_ack=manual_ack, inbox=inbox)
    async with client:
        for topic, qos in subscriptions:
            await client.subscribe(topic, qos=qos)
        yield client
