"""Per-source metrics, the same four families for every protocol.

* ``edge_source_received_total{source}``: samples and records handed to emit.
* ``edge_source_rejected_total{source,reason}``: inputs quarantined, by a short reason
  category (the full reason is in the Quarantine record and the log line).
* ``edge_source_link_up{source,device}``: 1 while the link to the device is up. The
  same state is on the link board (``edge.runtime.links``) as ``source:<name>`` (or
  ``source:<name>/<device>`` for another device), which the status reads.
* ``edge_source_last_sample_age_seconds{source,device}``: computed at scrape time from
  the wall-clock time of the last sample emitted for that device.
"""

from __future__ import annotations

import time

from edge.runtime.metrics import Metrics


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
        self._link = metrics.gauge(
            "edge_source_link_up", "1 while the source's link to a device is up",
            ["source", "device"],
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
        """Set the link state; True when it changed (log only transitions)."""
        changed = self.link_state.get(device) != up
        self.link_state[device] = up
        self._link.labels(self.source, device).set(1.0 if up else 0.0)
        self._links.open(link_name(self.source, device)).mark(up)
        return changed

    def sampled(self, device: str) -> None:
        """Note that a sample of ``device`` was emitted now."""
        if device not in self._last:
            self._age.labels(self.source, device).set_function(
                lambda d=device: time.time() - self._last[d]  # type: ignore[misc]
            )
        self._last[device] = time.time()
