"""The delivery loop: journal cursor -> durable sink -> ack, one loop per sink.

Invariants:

* A cursor moves only after the sink's ``write`` returned: what is acked was accepted
  by the peer or moved to the dead letters. A crash in between re-sends the same
  entries with the same ids (at-least-once; peers deduplicate by id). The ack (and the
  dead letters) of one write go to the journal thread together with the next read.
* ``RetryableError`` (or any unexpected exception) means the link is lost: the sink is
  closed, and after the link's backoff (``edge.runtime.links``: exponential, full jitter,
  the peer's ``retry_after_s`` honoured) connected again and given the same entries.
  ``PermanentError`` dead-letters the entries it was raised for; ``WriteResult.rejected``
  dead-letters just those. Dead letters never block the queue.
* A dead letter's reason and body and a sink's last error are stored redacted
  (``edge.runtime.redact``): a peer that echoes our request does not put a token there.
* Each sink has its own loop and cursor: a slow or dead sink blocks nobody else, and
  ingestion never waits on delivery.
* An idle sink of records only is woken by the next journal commit that holds records,
  with the new entries already read on the journal thread right behind that commit
  (``JournalWriter.read_on_commit``: no further hop); a sink of samples polls every
  ``idle_poll_s``, which batches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from dataclasses import dataclass, field

import structlog

from edge.components import DurableSink, Rejection
from edge.errors import PermanentError, RetryableError
from edge.journal import Entry, JournalWriter, ReadResult
from edge.runtime.links import Backoff, Link, LinkBoard, LinkState
from edge.runtime.metrics import Metrics
from edge.runtime.redact import redact

log = structlog.get_logger("edge.delivery")

__all__ = ["Backoff", "SinkState", "deliver"]


@dataclass(slots=True)
class SinkState:
    """What the status view shows about one sink; the link part is the link board's."""

    name: str
    delivered_points: int = 0
    last_success_ns: int = 0
    link: LinkState = field(default_factory=lambda: LinkState(""))

    @property
    def link_up(self) -> bool:
        return self.link.up

    @property
    def last_error(self) -> str:
        return self.link.last_error

    @property
    def attempt(self) -> int:
        return self.link.attempt


class _SinkMetrics:
    def __init__(self, m: Metrics, sink: str) -> None:
        self.delivered = m.counter(
            "edge_sink_delivered_total", "Points delivered and acked", ["sink", "kind"]
        )
        self.errors = m.counter(
            "edge_sink_errors_total", "Failed write attempts", ["sink", "error"]
        )
        self.write = m.histogram(
            "edge_sink_write_seconds", "Duration of one sink write", ["sink"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0),
        ).labels(sink)


async def deliver(
    writer: JournalWriter,
    sink: DurableSink,
    *,
    state: SinkState | None = None,
    metrics: Metrics | None = None,
    links: LinkBoard | None = None,
    max_entries: int = 64,
    max_points: int = 50_000,
    backoff: Backoff | None = None,
    idle_poll_s: float = 0.05,
    stop: asyncio.Event | None = None,
    rng: random.Random | None = None,
) -> None:
    """Deliver the journal to ``sink`` until cancelled, or until ``stop`` is set and
    nothing is left to deliver. The sink's link is ``sink:<name>`` on ``links``."""
    state = state or SinkState(sink.name)
    metrics = metrics or Metrics()
    link = (links or metrics.links).open(f"sink:{sink.name}", backoff, rng)
    state.link = link.state
    m = _SinkMetrics(metrics, sink.name)
    journal = writer.journal
    read = functools.partial(
        journal.read, sink.name, max_entries=max_entries, max_points=max_points,
        kinds=sink.kinds,
    )

    def settle_and_read(dead: list[tuple[Entry, Rejection]], upto: int) -> ReadResult:
        """Dead-letter, ack and read the next entries in one trip to the journal thread:
        each trip is a thread hop and a loop wake-up, milliseconds on a loaded machine."""
        for entry, r in dead:
            journal.dead_letter(sink.name, entry, redact(r.reason), redact(r.body))
        if upto:
            journal.ack(sink.name, upto)
        return read()
    connected = False
    records_only = tuple(sink.kinds) == ("records",)
    dead: list[tuple[Entry, Rejection]] = []  # settled with the next read
    upto = 0
    ready: ReadResult | None = None  # read behind the commit that woke an idle loop
    while True:
        if not connected:
            try:
                await sink.connect()
                connected = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a sink's connect may raise anything on a bad link
                await _lost(link, sink, exc, m, "connect")
                continue
        if ready is not None and ready.entries:  # nothing to settle: the loop was idle
            result, ready = ready, None
        else:
            seen = writer.commits("records")
            result = await writer.call(settle_and_read, dead, upto)
            dead, upto = [], 0
        if not result.entries:
            if result.upto > journal.cursor(sink.name):
                await writer.call(journal.ack, sink.name, result.upto)
            if stop is not None and stop.is_set() and writer.pending_points == 0:
                return
            if records_only:  # events someone waits for: read right behind the commit
                ready = await writer.read_on_commit("records", seen, read, idle_poll_s)
            else:  # samples: the poll interval batches them
                await asyncio.sleep(idle_poll_s)
            continue
        t0 = time.perf_counter()
        rejected: dict[int, Rejection] = {}
        try:
            outcome = await sink.write(result.entries)
        except PermanentError as exc:
            rejected = {e.seq: Rejection(e.seq, str(exc), exc.body) for e in result.entries}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # RetryableError, or a bug in a sink: reconnect, never ack
            connected = False
            await _lost(link, sink, exc, m, "write")
            continue
        else:
            rejected = {r.seq: r for r in outcome.rejected}
        m.write.observe(time.perf_counter() - t0)
        for entry in result.entries:
            r = rejected.get(entry.seq)
            if r is not None:
                dead.append((entry, r))
            else:
                m.delivered.labels(sink.name, entry.kind).inc(entry.count)
                state.delivered_points += entry.count
        upto = result.upto  # acked with the next read, before anything else is sent
        link.up(sink=sink.name)
        state.last_success_ns = time.time_ns()


async def _lost(link: Link, sink: DurableSink, exc: BaseException, m: _SinkMetrics,
                what: str) -> None:
    """The link is lost: count, log (a bug with its traceback), close the sink, back off."""
    hint = exc.retry_after_s if isinstance(exc, RetryableError) else None
    m.errors.labels(sink.name, type(exc).__name__).inc()
    if not isinstance(exc, RetryableError):
        log.error(f"sink {what} failed with an unexpected error", sink=sink.name,
                  error=redact(str(exc)) or type(exc).__name__, exc_info=exc)
    link.down(exc, sink=sink.name, failed=what, retry_after_s=hint)
    with contextlib.suppress(Exception):
        await sink.close()
    await link.pause(hint)
