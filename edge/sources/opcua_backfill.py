"""OPC-UA backfill: after a reconnect, the values the server historized during the gap.

How a backfill is visible: its values travel as ordinary samples (the server's value,
source timestamp and status; the columnar ``SampleBatch`` has no room for an origin
flag), in batches that hold only backfilled values, emitted before any live value of the
new session. Each backfill batch carries the journal checkpoint
``opcua_backfill:<source>`` (JSON: the gap's bounds in ns, values and tags so far),
committed with it: the journal says which source-time window of which tags the last
backfill wrote, and the writer never sheds a batch that carries a checkpoint. Each
backfill logs one line ("opcua backfill": tags, values, the gap's bounds), adds its
values to ``edge_opcua_backfilled_total{source}`` and shows in the status document.

Invariants:

* ``seen`` holds, per tag, the newest source timestamp delivered from the server (live
  or backfilled). A tag's gap runs from it (exclusive) to the moment the backfill starts,
  after the new session's subscriptions exist (inclusive), capped at ``backfill_max_s``.
  A tag that never delivered a value has no gap to fill.
* Backfilled values are handed over in source-time order per tag, each at most once.
* A live value of a backfilled tag whose source timestamp is not newer than the newest
  backfilled value of that tag is dropped (the backfill delivered it). The check ends for
  a tag at its first newer live value, so a PLC whose clock steps back later loses nothing.
  A tag without backfilled values gets its live value as is: it is what turns it Good
  again after the Bad sample of the loss.
* A tag the server cannot backfill (no HistoryRead access bit, a Bad HistoryRead status,
  a server without the HistoryRead service) is counted in
  ``edge_opcua_backfill_unavailable_total{source}`` and logged once per source and
  reason, never retried in a loop; the data flows live as usual.
* A transport failure during a backfill loses the session (the caller rebuilds it); the
  watermarks did not move, so the next session fills the same gap.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import structlog
from asyncua import Client, ua

from edge.model import SampleBatch
from edge.protocols.opcua.client import Columns, status_name
from edge.runtime.metrics import Metrics
from edge.sources.opcua_connect import within

log = structlog.get_logger("edge.sources.opcua")

NONE = np.iinfo(np.int64).min  # no timestamp
_CHUNK = 64  # nodes per HistoryRead request
_PER_NODE = 1000  # values per node per answer (then a continuation point)
_HISTORY_READ = 0x04  # AccessLevel bit


def _datetime(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns // 1000 / 1e6, UTC)


class Filled(NamedTuple):
    """What one backfill did: values read, tags that had a gap, tags it could not fill."""

    values: int
    tags: int
    unfilled: int


class Backfill:
    """Watermarks of one source's tags and the HistoryRead that fills a gap."""

    def __init__(self, source: str, tag_ids: npt.NDArray[np.int32], node_ids: list[ua.NodeId],
                 metrics: Metrics, *, max_s: float, max_values: int, timeout_s: float) -> None:
        self.source = source
        self.checkpoint = f"opcua_backfill:{source}"
        self.tag_ids = tag_ids
        self.node_ids = node_ids
        self.pos = np.full(int(tag_ids.max(initial=-1)) + 1, -1, np.int64)
        self.pos[tag_ids] = np.arange(len(tag_ids))
        self.seen = np.full(len(tag_ids), NONE, np.int64)
        self.watermark = np.full(len(tag_ids), NONE, np.int64)
        self.dedup = False
        self.max_ns = int(max_s * 1e9)
        self.max_values = max_values
        self.timeout_s = timeout_s
        self._reported: set[tuple[int, str]] = set()  # (tag position, reason) logged
        self._values = metrics.counter(
            "edge_opcua_backfilled_total",
            "Values an OPC-UA source read from the server's history after a gap", ["source"],
        ).labels(source)
        self._unavailable = metrics.counter(
            "edge_opcua_backfill_unavailable_total",
            "Tags an OPC-UA source could not backfill after a gap (no history)", ["source"],
        ).labels(source)

    def live(self, batch: SampleBatch) -> SampleBatch:
        """A live batch, less what the backfill already delivered; notes what it carries."""
        if not len(batch):
            return batch
        p = self.pos[batch.tag_id]
        if self.dedup:
            keep = batch.ts_ns > self.watermark[p]
            if not keep.all():
                batch, p = batch.take(keep), p[keep]
            self.watermark[p] = NONE
            self.dedup = bool((self.watermark != NONE).any())
        np.maximum.at(self.seen, p, batch.ts_ns)
        return batch

    async def fill(self, client: Client,
                   emit: Callable[[SampleBatch, tuple[str, bytes]], Awaitable[None]]
                   ) -> Filled:
        """Read and hand over every tag's gap (see the module docstring). Raises the
        transport's errors (the session is lost); a refusal is logged, not raised."""
        gap = np.flatnonzero(self.seen != NONE)
        if not len(gap):
            return Filled(0, 0, 0)
        unfilled: set[int] = set()
        end_ns = ua_now_ns()
        gap_from = max(int(self.seen[gap].min()), end_ns - self.max_ns)
        self.watermark[:] = NONE
        started = asyncio.get_running_loop().time()
        history, refused = await self._readable(client, gap)
        for reason, positions in refused.items():
            self._refused(positions, reason)
            unfilled.update(positions)
        total = 0
        order = history[np.argsort(self.seen[history], kind="stable")]
        for i in range(0, len(order), _CHUNK):
            chunk = order[i:i + _CHUNK]
            start_ns = max(int(self.seen[chunk].min()), end_ns - self.max_ns)
            batch, failed = await self._read_chunk(client, chunk, start_ns, end_ns)
            for reason, positions in failed.items():
                self._refused(positions, reason)
                unfilled.update(positions)
            if len(batch):
                p = self.pos[batch.tag_id]
                np.maximum.at(self.watermark, p, batch.ts_ns)
                np.maximum.at(self.seen, p, batch.ts_ns)
                total += len(batch)
                mark = {"gap_from_ns": gap_from, "gap_to_ns": end_ns, "values": total,
                        "tags": len(history)}
                await emit(batch, (self.checkpoint, json.dumps(mark).encode()))
        self.dedup = bool((self.watermark != NONE).any())
        if total:
            self._values.inc(total)
        if len(history):
            log.info("opcua backfill", source=self.source, tags=len(history), values=total,
                     gap_from=_datetime(gap_from).isoformat(),
                     gap_to=_datetime(end_ns).isoformat(),
                     took_s=round(asyncio.get_running_loop().time() - started, 3))
        return Filled(total, len(gap), len(unfilled))

    async def _readable(self, client: Client, gap: npt.NDArray[np.intp]
                        ) -> tuple[npt.NDArray[np.intp], dict[str, list[int]]]:
        """The tags of ``gap`` whose node grants us HistoryRead, and the others by reason."""
        params = ua.ReadParameters()
        for p in gap:
            rv = ua.ReadValueId()
            rv.NodeId = self.node_ids[p]
            rv.AttributeId = ua.AttributeIds.UserAccessLevel
            params.NodesToRead.append(rv)
        ok: list[int] = []
        refused: dict[str, list[int]] = {}
        try:
            results = await within(self.timeout_s, client.uaclient.read(params))
        except ua.UaStatusCodeError as exc:
            refused[status_name(exc.code)] = gap.tolist()
            return np.array(ok, np.intp), refused
        for p, dv in zip(gap.tolist(), results, strict=True):
            level = dv.Value.Value if dv.Value is not None else None
            if dv.StatusCode is not None and not dv.StatusCode.is_good():
                refused.setdefault(status_name(dv.StatusCode), []).append(p)
            elif isinstance(level, int) and level & _HISTORY_READ:
                ok.append(p)
            else:
                refused.setdefault("no HistoryRead access", []).append(p)
        return np.array(ok, np.intp), refused

    async def _read_chunk(self, client: Client, chunk: npt.NDArray[np.intp], start_ns: int,
                          end_ns: int) -> tuple[SampleBatch, dict[str, list[int]]]:
        """The raw history of ``chunk``'s nodes in (their watermark, end], sorted by time."""
        details = ua.ReadRawModifiedDetails()
        details.IsReadModified = False
        details.StartTime = _datetime(start_ns)
        details.EndTime = _datetime(end_ns)
        details.NumValuesPerNode = _PER_NODE
        details.ReturnBounds = False
        cols = Columns()
        failed: dict[str, list[int]] = {}
        counts = dict.fromkeys(chunk.tolist(), 0)
        pending: list[tuple[int, bytes | None]] = [(p, None) for p in chunk.tolist()]
        arrival = ua_now_ns()
        while pending:
            params = ua.HistoryReadParameters()
            params.HistoryReadDetails = details
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.ReleaseContinuationPoints = False
            for p, cont in pending:
                hv = ua.HistoryReadValueId()
                hv.NodeId = self.node_ids[p]
                hv.ContinuationPoint = cont
                params.NodesToRead.append(hv)
            try:
                results = await within(self.timeout_s, client.uaclient.history_read(params))
            except ua.UaStatusCodeError as exc:  # the service itself refused
                failed.setdefault(status_name(exc.code), []).extend(p for p, _ in pending)
                break
            following: list[tuple[int, bytes | None]] = []
            for (p, _), res in zip(pending, results, strict=True):
                if not res.StatusCode.is_good():
                    failed.setdefault(status_name(res.StatusCode), []).append(p)
                    continue
                values: Sequence[ua.DataValue] = getattr(res.HistoryData, "DataValues",
                                                         None) or []
                tag = int(self.tag_ids[p])
                for dv in values:
                    cols.add(tag, dv, arrival)
                counts[p] += len(values)
                if res.ContinuationPoint and counts[p] < self.max_values:
                    following.append((p, res.ContinuationPoint))
                elif res.ContinuationPoint:
                    log.warning("opcua backfill truncated", source=self.source,
                                node_id=self.node_ids[p].to_string(), values=counts[p],
                                limit="backfill_max_values")
            pending = following
        batch = cols.batch()
        if len(batch):
            at = self.pos[batch.tag_id]
            keep = (batch.ts_ns > self.seen[at]) & (batch.ts_ns <= end_ns)
            batch = batch.take(keep)
            batch = batch.take(np.argsort(batch.ts_ns, kind="stable"))
        return batch, failed

    def _refused(self, positions: list[int], reason: str) -> None:
        """Count tags that cannot be backfilled; log each (tag, reason) once per source."""
        self._unavailable.inc(len(positions))
        new = [p for p in positions if (p, reason) not in self._reported]
        if new:
            self._reported.update((p, reason) for p in new)
            log.warning("opcua backfill unavailable", source=self.source, tags=len(new),
                        reason=reason, nodes=[self.node_ids[p].to_string() for p in new[:5]])


def ua_now_ns() -> int:
    """Wall clock in ns at OPC-UA's resolution (100 ns)."""
    return time.time_ns() // 100 * 100
