"""The delivery loop: journal cursor -> durable sink -> ack, one loop per sink.

Invariants:

* A cursor moves only after the sink's ``write`` returned: what is acked was accepted
  by the peer or moved to the dead letters. A crash in between re-sends the same
  entries with the same ids (at-least-once; peers deduplicate by id).
* ``RetryableError`` (or any unexpected exception) retries the same entries with
  exponential backoff and full jitter, honouring the peer's ``retry_after_s``.
  ``PermanentError`` dead-letters the entries it was raised for; ``WriteResult.rejected``
  dead-letters just those. Dead letters never block the queue.
* A dead letter's reason and body and a sink's last error are stored redacted
  (``edge.runtime.redact``): a peer that echoes our request does not put a token there.
* Each sink has its own loop and cursor: a slow or dead sink blocks nobody else, and
  ingestion never waits on delivery.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from dataclasses import dataclass

import structlog

from edge.components import DurableSink, Rejection
from edge.errors import PermanentError, RetryableError
from edge.journal import JournalWriter
from edge.runtime.metrics import Metrics
from edge.runtime.redact import redact

log = structlog.get_logger("edge.delivery")


RETRY_AFTER_MAX_S = 600.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry delays for one sink. The cap is short on purpose: retrying one peer every
    few seconds costs nothing, while a long cap adds its length to every recovery."""

    initial_s: float = 0.2
    max_s: float = 5.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max, initial * factor**attempt)]."""
        cap = min(self.max_s, self.initial_s * self.factor**attempt)
        return rng.uniform(cap / 2, cap)


@dataclass(slots=True)
class SinkState:
    """What the status view shows about one sink."""

    name: str
    link_up: bool = False
    delivered_points: int = 0
    last_error: str = ""
    last_success_ns: int = 0
    attempt: int = 0


class _SinkMetrics:
    def __init__(self, m: Metrics, sink: str) -> None:
        self.delivered = m.counter(
            "edge_sink_delivered_total", "Points delivered and acked", ["sink", "kind"]
        )
        self.errors = m.counter(
            "edge_sink_errors_total", "Failed write attempts", ["sink", "error"]
        )
        self.link = m.gauge(
            "edge_sink_link_up", "1 while the last write to the sink succeeded", ["sink"]
        ).labels(sink)
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
    max_entries: int = 64,
    max_points: int = 50_000,
    backoff: Backoff = Backoff(),
    idle_poll_s: float = 0.05,
    stop: asyncio.Event | None = None,
    rng: random.Random | None = None,
) -> None:
    """Deliver the journal to ``sink`` until cancelled, or until ``stop`` is set and
    nothing is left to deliver."""
    state = state or SinkState(sink.name)
    rng = rng or random.Random()
    m = _SinkMetrics(metrics or Metrics(), sink.name)
    journal = writer.journal
    read = functools.partial(
        journal.read, sink.name, max_entries=max_entries, max_points=max_points,
        kinds=sink.kinds,
    )
    connected = False
    while True:
        if not connected:
            try:
                await sink.connect()
                connected = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a sink's connect may raise anything on a bad link
                await _failed(state, sink.name, exc, backoff, rng, m, "connect")
                continue
        result = await writer.call(read)
        if not result.entries:
            if result.upto > journal.cursor(sink.name):
                await writer.call(journal.ack, sink.name, result.upto)
            if stop is not None and stop.is_set() and writer.pending_points == 0:
                return
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
        except Exception as exc:  # RetryableError, or a bug in a sink: retry, never ack
            await _failed(state, sink.name, exc, backoff, rng, m, "write")
            continue
        else:
            rejected = {r.seq: r for r in outcome.rejected}
        m.write.observe(time.perf_counter() - t0)
        for entry in result.entries:
            r = rejected.get(entry.seq)
            if r is not None:
                await writer.call(journal.dead_letter, sink.name, entry, redact(r.reason),
                                  redact(r.body))
            else:
                m.delivered.labels(sink.name, entry.kind).inc(entry.count)
                state.delivered_points += entry.count
        await writer.call(journal.ack, sink.name, result.upto)
        if not state.link_up:
            log.info("sink link up", sink=sink.name, after_attempts=state.attempt)
        state.link_up = True
        state.attempt = 0
        state.last_success_ns = time.time_ns()
        m.link.set(1)


async def _failed(
    state: SinkState, sink: str, exc: BaseException, backoff: Backoff, rng: random.Random,
    m: _SinkMetrics, what: str,
) -> None:
    delay = backoff.delay(state.attempt, rng)
    hint = exc.retry_after_s if isinstance(exc, RetryableError) else None
    if hint is not None:  # the peer knows best when it can take more; within reason
        delay = max(delay, min(hint, RETRY_AFTER_MAX_S))
    m.errors.labels(sink, type(exc).__name__).inc()
    m.link.set(0)
    event = f"sink {what} failed; retrying"
    fields = dict(
        sink=sink, error=redact(str(exc)) or type(exc).__name__, attempt=state.attempt + 1,
        retry_in_s=round(delay, 3), retry_after_s=hint,
    )
    if not isinstance(exc, RetryableError):
        log.error(event, exc_info=exc, **fields)
    elif state.link_up or state.attempt == 0:
        log.warning(event, **fields)
    else:
        log.debug(event, **fields)
    state.link_up = False
    state.last_error = redact(str(exc)) or type(exc).__name__
    state.attempt += 1
    await asyncio.sleep(delay)
