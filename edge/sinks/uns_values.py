"""The UNS sink's latest values: the fast path stores, a flusher sends.

Invariants:

* ``publish`` (the fast path) only stores each tag's latest sample and marks it pending:
  it never waits, never allocates per message, never blocks on the broker.
* ``flush`` sends pending tags, each at most ``max_rate_hz`` times a second, with at most
  ``max_inflight`` publishes awaiting the broker; while the broker is slow or away the
  values coalesce to the latest one per tag. A text tag (``TextValue`` records) is a
  latest value too, sent on each change. A value the broker never took is not replayed:
  the next one replaces it (a UNS carries the present, the journal the past).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import aiomqtt
import numpy as np
import structlog

from edge.errors import RetryableError
from edge.model import Record, SampleBatch, TagSpec, TextValue
from edge.protocols.mqtt import Client
from edge.protocols.mqtt import uns as U
from edge.runtime.metrics import Metrics
from edge.sinks.uns_config import UnsSinkConfig

log = structlog.get_logger("edge.sinks.uns")


class LatestValues:
    """Each tag's latest value (numbers by tag id, text by topic) and what is pending."""

    def __init__(self, cfg: UnsSinkConfig, tags: Sequence[TagSpec],
                 path: Callable[[str], str], metrics: Metrics) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._path = path
        self._topic = [U.join(path(t.device), t.device, t.name) for t in tags]
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
        self._m_sent = metrics.counter("edge_uns_values_published_total",
                                       "Latest values the UNS sink handed to the broker",
                                       ["sink"]).labels(cfg.name)
        self._m_coalesced = metrics.counter(
            "edge_uns_values_coalesced_total",
            "Values replaced by a newer one before they were sent (rate limit or a slow "
            "broker)", ["sink"]).labels(cfg.name)

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

    def resend_all(self) -> None:
        """A new session: send every value again."""
        self._pending[self._ts > 0] = True
        self._text_pending.update(self._text)

    async def flush(self, client: Client) -> None:
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
