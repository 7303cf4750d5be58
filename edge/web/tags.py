"""The latest value of every tag, as the live path sees it, for ``GET /api/tags``.

Invariants:

* ``publish`` runs on the event loop for every batch: numpy only (no per-point Python),
  never awaits, never fails on data; unknown tag ids are ignored.
* Per tag, the value with the last position in the batch wins (the batch order is the
  order the source produced them), as in the OPC-UA server.
* A tag never published has no value, quality ``bad_missing`` and no age.
"""

from __future__ import annotations

import math
import time

import numpy as np

from edge.model import Quality, SampleBatch, TagRegistry, severity
from edge.sinks.latest import newest

MAX_ROWS = 1000


class LatestTags:
    """Latest (value, timestamp, quality) per tag id, sized to the registry."""

    def __init__(self, tags: TagRegistry) -> None:
        self.tags = tags
        self._value = np.zeros(0, np.float64)
        self._ts = np.zeros(0, np.int64)
        self._quality = np.zeros(0, np.uint8)
        self.fit()

    def fit(self) -> None:
        """Grow the arrays to tags declared after this was built (what is kept stays)."""
        k = len(self.tags) - self._ts.shape[0]
        if k <= 0:
            return
        self._value = np.concatenate((self._value, np.full(k, math.nan)))
        self._ts = np.concatenate((self._ts, np.zeros(k, np.int64)))
        self._quality = np.concatenate(
            (self._quality, np.full(k, int(Quality.BAD_MISSING), np.uint8)))

    def publish(self, batch: SampleBatch) -> None:
        n = len(batch)
        if not n:
            return
        ids, last = newest(batch, self._ts, time.time_ns())  # late data never goes back in time
        self._value[ids] = batch.value[last]
        self._ts[ids] = batch.ts_ns[last]
        self._quality[ids] = batch.quality[last]

    def search(self, query: str = "", limit: int = 200, now_ns: int | None = None
               ) -> dict[str, object]:
        """Tags whose ``device/name`` contains every word of ``query`` (case-insensitive),
        sorted by name, at most ``limit``; ``matched`` counts them all."""
        self.fit()
        now = time.time_ns() if now_ns is None else now_ns
        words = query.lower().split()
        limit = max(1, min(limit, MAX_ROWS))
        rows: list[dict[str, object]] = []
        matched = 0
        for spec in sorted(self.tags, key=lambda t: t.key):
            key = spec.key.lower()
            if not all(w in key for w in words):
                continue
            matched += 1
            if len(rows) >= limit:
                continue
            ts = int(self._ts[spec.id])
            q = int(self._quality[spec.id])
            try:
                reason = Quality(q).reason
            except ValueError:
                reason = f"0x{q:02x}"
            rows.append({
                "tag": spec.key, "unit": spec.unit,
                "value": float(self._value[spec.id]) if ts else None,
                "quality": severity(q), "reason": reason,
                "ts_ns": ts or None,
                "age_s": round(max(0, now - ts) / 1e9, 3) if ts else None,
            })
        return {"matched": matched, "tags": rows}
