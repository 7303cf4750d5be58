"""The OPC-UA server's fast path: the latest value per tag, and its writes into asyncua.

Invariants:

* ``publish`` runs on the server's loop for every batch and only stashes the latest
  (value, timestamp, quality) per tag into preallocated arrays and marks the tag dirty
  (numpy, no per-point Python). It never awaits and never fails on data: unknown tag ids
  are ignored. Late data never goes back in time (``edge.sinks.latest``).
* ``write_due`` writes the dirty tags that are due, in slices that each hold the loop for
  at most ``slice_budget_s`` (then it yields). A tag that changes several times between
  two of its writes is written once, with its latest value, its own source timestamp and
  quality: coalescing loses no meaning for a client, only values it could not have seen.
* **Coalescing to the clients' pace.** For every value written to a monitored tag,
  asyncua runs a data-change callback per monitored item at once (BENCHMARKS.md, "OPC-UA
  server with many clients"), whatever the publishing interval. A monitored tag is
  therefore written at most once per ``pace`` of its fastest monitored item, where an
  item's pace is its subscription's publishing interval divided by its queue size (a
  client with queue size 1 gets the latest value each publishing interval; one with
  queue size q at interval P can hold q values per P, and gets them), bounded by
  ``[update_interval, coalesce_max]``. A tag nobody monitors is written every
  ``update_interval`` (a Read sees it that fresh). The paces are recomputed when the
  subscriptions or their item counts change, and every ``PACE_REFRESH_S`` (a modified
  queue size or publishing interval). ``coalesce_max = 0`` turns coalescing off.
* Every value is written with the variant type of its node (``protocols.opcua.variants``),
  its source timestamp and a status code mapped from ``model.Quality``
  (``protocols.opcua.status``); an integer value that is NaN or outside its type's range
  is written as BadOutOfRange.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog
from asyncua import Server, ua

from edge.model import Quality, SampleBatch, TagRegistry
from edge.protocols.opcua.status import STATUS_OF_QUALITY
from edge.protocols.opcua.variants import DTYPES
from edge.runtime.metrics import Metrics
from edge.sinks.latest import newest

log = structlog.get_logger("edge.opcua")

_OUT_OF_RANGE = ua.StatusCode(ua.StatusCodes.BadOutOfRange)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KIND_FLOAT, _KIND_INT, _KIND_BOOL = 0, 1, 2
PACE_REFRESH_S = 2.0


class TagWriter:
    """Latest values per tag (``publish``) and their coalesced writes (``write_due``)."""

    def __init__(self, tags: TagRegistry, metrics: Metrics, *, update_interval_s: float,
                 slice_budget_s: float, update_slice: int, coalesce_max_s: float) -> None:
        self.tags = tags
        self.update_interval_ns = int(update_interval_s * 1e9)
        self.slice_budget_s = slice_budget_s
        self.update_slice = update_slice
        self.coalesce_max_ns = int(coalesce_max_s * 1e9)
        self._value = np.zeros(0, np.float64)
        self._ts = np.zeros(0, np.int64)
        self._quality = np.zeros(0, np.uint8)
        self._dirty = np.zeros(0, np.bool_)
        self._kind = np.zeros(0, np.uint8)
        self._low = np.zeros(0, np.float64)
        self._high = np.zeros(0, np.float64)
        self._vtypes: list[ua.VariantType] = []
        self._nodeids: list[ua.NodeId] = []
        self._index: dict[ua.NodeId, int] = {}
        self._pace = np.zeros(0, np.int64)  # ns between two writes of a tag
        self._written = np.zeros(0, np.int64)  # monotonic ns of a tag's last write
        self._pace_key: tuple[int, ...] = ()
        self._pace_at = 0.0
        self._pace_broken = False
        self.fit()
        self._m_updates = metrics.counter("edge_opcua_updates_total",
                                          "Tag values written to OPC-UA")
        self._m_dirty = metrics.gauge("edge_opcua_pending_tags",
                                      "Tags waiting for their OPC-UA write")

    def fit(self) -> None:
        """Size the per-tag arrays to the registry. Tags declared after this sink was built
        (the gateway's own per-sink tags, once every sink is known) are served too; what
        was published already stays."""
        new = list(self.tags)[self._dirty.shape[0]:]
        if not new:
            return
        k = len(new)
        self._value = np.concatenate((self._value, np.zeros(k, np.float64)))
        self._ts = np.concatenate((self._ts, np.zeros(k, np.int64)))
        self._quality = np.concatenate(
            (self._quality, np.full(k, int(Quality.BAD_MISSING), np.uint8)))
        self._dirty = np.concatenate((self._dirty, np.zeros(k, np.bool_)))
        self._kind = np.concatenate((self._kind, np.array(
            [_KIND_BOOL if t.dtype == "bool" else _KIND_INT if DTYPES[t.dtype].integer
             else _KIND_FLOAT for t in new], np.uint8)))
        self._low = np.concatenate(
            (self._low, np.array([DTYPES[t.dtype].low for t in new], np.float64)))
        self._high = np.concatenate(
            (self._high, np.array([DTYPES[t.dtype].high for t in new], np.float64)))
        self._vtypes += [DTYPES[t.dtype].variant for t in new]
        self._pace = np.concatenate((self._pace, np.full(k, self.update_interval_ns, np.int64)))
        self._written = np.concatenate((self._written, np.zeros(k, np.int64)))

    def bind(self, nodeids: list[ua.NodeId]) -> None:
        """The node of each tag (in registry order), once the address space holds them;
        every tag with a value so far is written at the next round."""
        self._nodeids = nodeids
        self._index = {n: k for k, n in enumerate(nodeids)}
        self._pace_key = ()
        n = len(nodeids)
        self._dirty[:n] |= self._ts[:n] > 0

    # ------------------------------------------------------------------ fast path

    def publish(self, batch: SampleBatch) -> None:
        ids, last = newest(batch, self._ts, time.time_ns())
        self._value[ids] = batch.value[last]
        self._ts[ids] = batch.ts_ns[last]
        self._quality[ids] = batch.quality[last]
        self._dirty[ids] = True

    # ------------------------------------------------------------------ writes

    def next_due_s(self) -> float | None:
        """Seconds until the next dirty tag is due; None when nothing waits."""
        idx = np.flatnonzero(self._dirty[: len(self._nodeids)])
        if not idx.size:
            return None
        due = int((self._written[idx] + self._pace[idx]).min())
        return max(0.0, (due - time.monotonic_ns()) / 1e9)

    async def write_due(self, server: Server) -> int:
        """Write every dirty tag whose pace allows it now; the number written."""
        self._refresh_pace(server)
        n = len(self._nodeids)
        now = time.monotonic_ns()
        dirty = self._dirty[:n]
        idx = np.flatnonzero(dirty & (self._written[:n] + self._pace[:n] <= now))
        if not idx.size:
            return 0
        self._dirty[idx] = False
        self._written[idx] = now
        self._m_dirty.set(int(idx.size))
        await self._write(server, idx)
        self._m_dirty.set(int(np.count_nonzero(self._dirty)))
        return int(idx.size)

    def _refresh_pace(self, server: Server) -> None:
        if self.coalesce_max_ns <= 0 or self._pace_broken:
            return
        subs: dict[Any, Any] = server.iserver.subscription_service.subscriptions
        try:
            key = tuple(len(s.monitored_item_srv._monitored_items) for s in subs.values())
        except AttributeError:
            self._give_up_pace()
            return
        now = time.monotonic()
        if key == self._pace_key and now - self._pace_at < PACE_REFRESH_S:
            return
        self._pace_key, self._pace_at = key, now
        try:
            self._pace[: len(self._nodeids)] = self._paces(subs)
        except AttributeError:
            self._give_up_pace()

    def _paces(self, subs: dict[Any, Any]) -> npt.NDArray[np.int64]:
        n = len(self._nodeids)
        fastest = np.full(n, np.inf)
        ks: list[int] = []
        paces: list[float] = []
        value = ua.AttributeIds.Value
        disabled = ua.MonitoringMode.Disabled
        for sub in list(subs.values()):
            publishing_ns = float(sub.data.RevisedPublishingInterval) * 1e6
            for item in list(sub.monitored_item_srv._monitored_items.values()):
                rv = item.read_value_id
                if rv is None or rv.AttributeId != value or item.mode == disabled:
                    continue
                k = self._index.get(rv.NodeId)
                if k is not None:
                    ks.append(k)
                    paces.append(publishing_ns / max(1, int(item.queue_size)))
        if ks:
            np.minimum.at(fastest, np.array(ks, np.intp), np.array(paces))
        lo, hi = self.update_interval_ns, max(self.update_interval_ns, self.coalesce_max_ns)
        return np.where(np.isinf(fastest), lo, np.clip(fastest, lo, hi)).astype(np.int64)

    def _give_up_pace(self) -> None:
        self._pace_broken = True
        self._pace[:] = self.update_interval_ns
        log.warning("opcua: asyncua's subscriptions changed shape; tag writes are not "
                    "coalesced to the clients' publishing intervals")

    async def _write(self, server: Server, idx: npt.NDArray[np.intp]) -> None:
        values = self._value[idx]
        quality = self._quality[idx]
        kind = self._kind[idx]
        integral = kind != _KIND_FLOAT
        invalid = integral & (
            ~np.isfinite(values) | (values < self._low[idx]) | (values > self._high[idx])
        )
        ints = np.where(invalid | ~np.isfinite(values), 0, values).astype(np.int64).tolist()
        floats = values.tolist()
        kinds = kind.tolist()
        quals = quality.tolist()
        bad = invalid.tolist()
        micros = (self._ts[idx] // 1000).tolist()
        ids = idx.tolist()
        write = server.write_attribute_value
        nodeids, vtypes = self._nodeids, self._vtypes
        budget = self.slice_budget_s
        cap = self.update_slice
        now = datetime.now(UTC)
        deadline = time.perf_counter() + budget
        in_slice = 0
        for k, tag in enumerate(ids):
            kd = kinds[k]
            v: object = floats[k] if kd == _KIND_FLOAT else ints[k] if kd == _KIND_INT \
                else ints[k] != 0
            status = _OUT_OF_RANGE if bad[k] and quals[k] < 0x80 else STATUS_OF_QUALITY[quals[k]]
            await write(nodeids[tag], ua.DataValue(
                ua.Variant(v, vtypes[tag]), StatusCode=status,
                SourceTimestamp=_EPOCH + timedelta(microseconds=micros[k]), ServerTimestamp=now,
            ))
            in_slice += 1
            if in_slice >= cap or (k & 15 == 15 and time.perf_counter() > deadline):
                self._m_updates.inc(in_slice)
                in_slice = 0
                await asyncio.sleep(0)
                now = datetime.now(UTC)
                deadline = time.perf_counter() + budget
        self._m_updates.inc(in_slice)
