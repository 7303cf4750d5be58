"""Per-source metrics, the same four families for every protocol.

* ``edge_source_received_total{source}``: samples and records handed to emit.
* ``edge_source_rejected_total{source,reason}``: inputs quarantined, by a short reason
  category (the full reason is in the Quarantine record and the log line).
* Link state is not a source metric: it is on the link board (``edge.runtime.links``)
  as ``source:<name>`` (or ``source:<name>/<device>`` for another device), which the
  status reads and which keeps ``edge_link_up{link}``.
* ``edge_source_last_sample_age_seconds{source,device}``: computed at scrape time from
  the wall-clock time of the last sample emitted for that device.

Quarantines are logged through ``QuarantineLog``: one line per reason and interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from edge.runtime.metrics import Metrics


class WarningLogger(Protocol):
    def warning(self, event: str, /, **kw: object) -> object: ...


def link_name(source: str, device: str) -> str:
    """The link board's name for a source's link to ``device``."""
    return f"source:{source}" if device in ("", source) else f"source:{source}/{device}"


class SourceMetrics:
    """Counters and gauges of one source; count per batch, never per point."""

    def __init__(self, metrics: Metrics, source: str) -> None:
        self.source = source
        self._received = metrics.counter(
            "edge_source_received_total", "Samples and records received by a source",
            ["source"],
        ).labels(source)
        self._rejected = metrics.counter(
            "edge_source_rejected_total", "Inputs quarantined by a source, by reason",
            ["source", "reason"],
        )
        self._age = metrics.gauge(
            "edge_source_last_sample_age_seconds",
            "Seconds since the last sample of a device was emitted", ["source", "device"],
        )
        self._last: dict[str, float] = {}
        self.link_state: dict[str, bool] = {}
        self._links = metrics.links

    def received(self, n: int) -> None:
        if n:
            self._received.inc(n)

    def rejected(self, reason: str, n: int = 1) -> None:
        if n:
            self._rejected.labels(self.source, reason).inc(n)

    def link(self, device: str, up: bool) -> bool:
        """Set the link state of ``device`` on the board; True when it changed."""
        changed = self.link_state.get(device) != up
        self.link_state[device] = up
        self._links.open(link_name(self.source, device)).mark(up)
        return changed

    def sampled(self, device: str) -> None:
        """Note that a sample of ``device`` was emitted now."""
        if device not in self._last:
            self._age.labels(self.source, device).set_function(
                lambda d=device: time.time() - self._last[d]  # type: ignore[misc]
            )
        self._last[device] = time.time()


class QuarantineLog:
    """Log quarantines per reason and interval, not per item (the records carry every item).

    The first quarantine of a reason is logged at once, with its example; further ones of
    that reason within ``interval_s`` are counted and logged as one summary line when the
    interval ends (at the next quarantine or, on an event loop, by a timer). A reason
    quiet for a whole interval is logged at once again. At 2,000 bad messages/s a line
    per message held the event loop long enough to raise publish-to-MES latency 20-fold.
    """

    def __init__(self, logger: WarningLogger, source: str, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = logger
        self.source = source
        self.interval_s = interval_s
        self.clock = clock
        self._since: dict[str, float] = {}  # kind -> when its last line was logged
        self._held: dict[str, tuple[str, int, dict[str, object]]] = {}  # event, count, last
        self._timer: asyncio.TimerHandle | None = None

    def note(self, event: str, kind: str, n: int = 1, /, **example: object) -> None:
        """``n`` items quarantined for ``kind`` (a short reason category); ``example``
        says what the first (or latest) one was."""
        now = self.clock()
        self.flush(now)
        if kind not in self._since:
            self._since[kind] = now
            self.log.warning(event, source=self.source, count=n, **example)
            return
        _, held, _ = self._held.get(kind, (event, 0, example))
        self._held[kind] = (event, held + n, example)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._timer = loop.call_later(self.interval_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush(self.clock())
        if self._held:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._on_timer)

    def flush(self, now: float) -> None:
        """Log the summary of every kind whose interval has ended."""
        for kind, since in list(self._since.items()):
            if now - since < self.interval_s:
                continue
            held = self._held.pop(kind, None)
            if held is None:
                del self._since[kind]  # quiet for an interval: the next one logs at once
                continue
            event, count, last = held
            self.log.warning(event, source=self.source, count=count, repeated=True,
                             interval_s=round(now - since, 1), **last)
            self._since[kind] = now
