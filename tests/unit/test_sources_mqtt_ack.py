"""Unit tests of the MQTT source's ack-after-emit pipeline and redelivery dedup (no broker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import aiomqtt
import pytest

from edge.components import BuildContext
from edge.config import loads
from edge.model import Quarantine, Record, SampleBatch, TagRegistry
from edge.protocols.mqtt import Received
from edge.runtime.metrics import Metrics
from edge.sources.mqtt import MqttSource, MqttSourceConfig

CONFIG = """
[[sources]]
type = "mqtt"
name = "motors"
client_id = "gw"
clean_session = false
[[sources.subscriptions]]
topic = "m/+"
device = "m"
fields = [{ path = "current_a", tag = "current_a" }]
"""


class FakeClient:
    """``Client``'s inbox side: one message per ``receive``, then the link is lost."""

    def __init__(self, msgs: list[Received]) -> None:
        self.inbox = msgs
        self.acked: list[int] = []

    @property
    def queued(self) -> int:
        return len(self.inbox)

    async def receive(self) -> list[Received]:
        await asyncio.sleep(0)
        if not self.inbox:
            raise aiomqtt.MqttError("link lost")
        return [self.inbox.pop(0)]

    def ack(self, message: Received) -> None:
        self.acked.append(message.mid)


def message(mid: int, value: float, dup: bool = False) -> Received:
    return Received(f"m/{mid % 3}", f'{{"current_a": {value}}}'.encode(), 1, mid, dup, False)


def make(store: dict[str, bytes]) -> MqttSource:
    cfg = loads(CONFIG).sources[0]
    assert isinstance(cfg, MqttSourceConfig)
    tags = TagRegistry()
    cfg.declare_tags(tags)

    async def checkpoints(key: str) -> bytes | None:
        return store.get(key)

    return cfg.build(BuildContext("gw", tags, Metrics(), Path("/nonexistent"),
                                  lambda n: "", checkpoints=checkpoints))


async def consume(src: MqttSource, client: FakeClient, emit: object) -> None:
    with contextlib.suppress(aiomqtt.MqttError):
        await src._consume(client, emit)  # type: ignore[arg-type]


async def test_messages_are_acked_in_order_only_after_their_emit_returned() -> None:
    """No message is acked before the emit that carries it returned; all in arrival order."""
    store: dict[str, bytes] = {}
    src = make(store)
    client = FakeClient([message(i, float(i)) for i in range(1, 101)])
    seen: list[tuple[int, int]] = []  # (messages emitted so far, acks when emit was called)
    emitted = 0

    async def emit(batch: SampleBatch | None, records: Sequence[Record], /, *,
                   checkpoint: tuple[str, bytes] | None = None) -> None:
        nonlocal emitted
        seen.append((emitted, len(client.acked)))
        await asyncio.sleep(0.001)  # the journal commit
        emitted += len(batch) if batch is not None else 0
        assert checkpoint is not None
        store[checkpoint[0]] = checkpoint[1]

    await consume(src, client, emit)
    assert client.acked == list(range(1, 101))
    assert all(acks <= before for before, acks in seen)
    assert src.wait_durable


async def test_redelivery_after_a_restart_of_a_kept_message_is_a_duplicate() -> None:
    """After a crash, messages kept but not acked come again flagged dup: quarantined as
    duplicates (and acked), while a new message with equal content is kept."""
    store: dict[str, bytes] = {}
    first = make(store)
    kept: list[float] = []

    async def emit(batch: SampleBatch | None, records: Sequence[Record], /, *,
                   checkpoint: tuple[str, bytes] | None = None) -> None:
        if batch is not None:
            kept.extend(batch.value.tolist())
        if checkpoint is not None:
            store[checkpoint[0]] = checkpoint[1]

    await consume(first, FakeClient([message(i, float(i)) for i in range(1, 6)]), emit)
    assert kept == [1.0, 2.0, 3.0, 4.0, 5.0]
    second = make(store)  # the restarted process: state only from the journal
    quarantined: list[Quarantine] = []

    async def emit2(batch: SampleBatch | None, records: Sequence[Record], /, *,
                    checkpoint: tuple[str, bytes] | None = None) -> None:
        await emit(batch, records, checkpoint=checkpoint)
        quarantined.extend(r for r in records if isinstance(r, Quarantine))

    client = FakeClient([message(i, float(i), dup=True) for i in (4, 5)]
                        + [message(6, 5.0)])
    await second.load_kept()
    await consume(second, client, emit2)
    assert [q.reason for q in quarantined] == [
        "duplicate message (redelivery of one already kept)"] * 2
    assert kept[5:] == [5.0] and client.acked == [4, 5, 6]


def test_tls_needs_cert_and_key_together() -> None:
    """A client certificate without its key is a config error naming the key."""
    with pytest.raises(Exception, match="cert_file and key_file must be given together"):
        loads(CONFIG.replace('clean_session = false\n',
                             'clean_session = false\ntls = { cert_file = "/etc/hosts" }\n'))
