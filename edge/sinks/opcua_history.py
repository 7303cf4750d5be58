"""HistoryRead on the OPC-UA server: raw values of every tag, and the gateway's events.

asyncua sends every HistoryRead to ``iserver.history_manager.read_history``; we replace
that manager (``install``) with one served from the history store (``edge.history``).

Invariants:

* **Raw (ReadRawModifiedDetails, IsReadModified false)** for every tag variable (their
  AccessLevel carries HistoryRead and Historizing is true). Values carry the variant type
  of the tag's node, their source timestamp and the status of their quality, as the live
  values do. Times follow Part 11: start <= end reads forward, start > end backward; one
  bound alone needs NumValuesPerNode and reads away from it; no bound at all is
  BadInvalidTimestampArgument. Modified values are not kept: IsReadModified is
  BadHistoryOperationUnsupported.
* **Events (ReadEventDetails)** on the Server object (its EventNotifier carries
  HistoryRead): the records of ``history.record_types`` (trips, SPC violations, health
  alerts, operator actions, ...), each answered for the client's select clauses:
  the BaseEventType fields (EventId, EventType, SourceNode, SourceName, Time,
  ReceiveTime, Message, Severity) and any field named after a record field
  (``Interlock`` -> ``interlock``, ``ActionOk`` -> ``action_ok``); anything else is null.
  The filter's WhereClause is applied (``opcua_history_filter``: OfType, comparisons,
  InList, Between, And/Or/Not); a filter it cannot apply refuses the read
  (BadFilterOperatorUnsupported, BadEventFilterInvalid), never unfiltered events. A
  filtered page may hold fewer events than asked (up to ``FILTER_PAGES`` store pages are
  read to fill it), with the continuation point after the last record read; gap events
  are always returned (a filter does not hide that the history is incomplete).
* **Continuation points** are the store's ``Position`` of the last value returned: a
  response holds at most ``min(NumValuesPerNode, max_values_per_read)`` entries, and the
  client resumes exactly after the last one (no value repeated or skipped, even with
  equal timestamps). A continuation point we did not hand out is
  BadContinuationPointInvalid. They hold no server state: nothing to release or leak.
* **Gaps are said, in the data.** Where the store was not recording (the gateway was
  down) or its limits evicted the data, a raw read returns, in time order, one
  DataValue with StatusCode **BadDataLost** (Part 11: "data is missing due to
  collection started/stopped/lost") and a null value at the start of the gap; an event
  read returns one event with SourceName ``history`` and a Message giving the gap's
  start and end. The data that exists on either side is returned as usual. A read with
  nothing at all is GoodNoData.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import structlog
from asyncua import Server, ua
from asyncua.server.history import HistoryManager

from edge.config import ConfigStruct
from edge.history.feed import HistoryFeed
from edge.history.store import Gap, HistoryLimits, Position
from edge.model import RECORD_TYPE_NAMES, Record, TagRegistry, TagSpec
from edge.protocols.opcua.status import STATUS_OF_QUALITY
from edge.protocols.opcua.variants import DTYPES
from edge.runtime.metrics import Metrics
from edge.sinks.opcua_history_events import event_field, gap_event, gateway_source_node
from edge.sinks.opcua_history_filter import FilterRefused, where

log = structlog.get_logger("edge.opcua")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAR_FUTURE_NS = 1 << 62
_SC = ua.StatusCodes
DEFAULT_RECORD_TYPES = ("interlock_trip", "spc_violation", "health_alert", "operator_action",
                        "quarantine", "measurement")
# EventNotifier bits: SubscribeToEvents | HistoryRead
EVENT_NOTIFIER = 0x01 | 0x04
FILTER_PAGES = 16  # store pages read at most for one filtered event read


class OpcUaHistoryConfig(ConfigStruct, frozen=True):
    """``[sinks.history]`` of an OPC-UA sink: the on-disk history HistoryRead serves."""

    enabled: bool = True
    path: str = ""  # default: <state_dir>/<sink name>_history.db
    max_mb: float = 256.0
    max_age_h: float = 24.0
    record_max_age_h: float = 720.0
    flush_interval_ms: float = 1000.0
    max_pending_points: int = 2_000_000
    max_values_per_read: int = 10_000
    record_types: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_RECORD_TYPES))

    def __post_init__(self) -> None:
        for key in ("max_mb", "max_age_h", "record_max_age_h"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0")
        if not 10 <= self.flush_interval_ms <= 60_000:
            raise ValueError("flush_interval_ms must be between 10 and 60000")
        if self.max_pending_points < 1000:
            raise ValueError("max_pending_points must be >= 1000")
        if not 1 <= self.max_values_per_read <= 1_000_000:
            raise ValueError("max_values_per_read must be between 1 and 1000000")
        unknown = sorted(set(self.record_types) - set(RECORD_TYPE_NAMES))
        if unknown:
            raise ValueError(f"record_types: unknown {unknown}; valid: {list(RECORD_TYPE_NAMES)}")


def _ns(t: datetime | None) -> int | None:
    """Nanoseconds since the epoch; None for an unspecified time (null or before 1601)."""
    if t is None or t.year <= 1601:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // timedelta(microseconds=1) * 1000


def _dt(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


class _Refused(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _window(start: datetime | None, end: datetime | None, n: int
            ) -> tuple[int, int, bool]:
    """(low, high, reverse) of a read, by Part 11's rules for start/end/NumValuesPerNode."""
    s, e = _ns(start), _ns(end)
    if s is None and e is None:
        raise _Refused(_SC.BadInvalidTimestampArgument)
    if (s is None or e is None) and n == 0:
        raise _Refused(_SC.BadInvalidTimestampArgument)
    if e is None:
        assert s is not None
        return s, _FAR_FUTURE_NS, False
    if s is None:
        return 0, e, True
    return min(s, e), max(s, e), s > e


def _continuation(cp: bytes | None) -> Position | None:
    if not cp:
        return None
    try:
        return Position.unpack(cp)
    except ValueError:
        raise _Refused(_SC.BadContinuationPointInvalid) from None


class GatewayHistory(HistoryManager):  # type: ignore[misc]  # asyncua is untyped here
    """asyncua's HistoryManager, answering from the gateway's history store."""

    def __init__(self, server: Server, feed: HistoryFeed, tags: dict[ua.NodeId, TagSpec],
                 event_source: ua.NodeId, source_node: Callable[[Record], ua.NodeId],
                 max_values: int) -> None:
        super().__init__(server.iserver)
        self.feed = feed
        self.tags = tags
        self.event_source = event_source
        self.source_node = source_node
        self.max_values = max_values

    async def init(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def read_history(self, params: ua.HistoryReadParameters) -> list[ua.HistoryReadResult]:
        out = []
        for rv in params.NodesToRead:
            result = ua.HistoryReadResult()
            try:
                if params.ReleaseContinuationPoints:
                    pass  # stateless continuation points: nothing held
                else:
                    await self._read_one(params.HistoryReadDetails, rv,
                                         params.TimestampsToReturn, result)
            except (_Refused, FilterRefused) as exc:
                result.StatusCode = ua.StatusCode(exc.code)
            except RuntimeError as exc:  # the store is not open (starting, or restarting)
                log.warning("opcua history read refused", error=str(exc))
                result.StatusCode = ua.StatusCode(_SC.BadHistoryOperationUnsupported)
            except Exception as exc:  # a read must never take the server down
                log.error("opcua history read failed", node=rv.NodeId.to_string(),
                          error=repr(exc))
                result.StatusCode = ua.StatusCode(_SC.BadInternalError)
            out.append(result)
        return out

    async def _read_one(self, details: Any, rv: ua.HistoryReadValueId,
                        ts_return: ua.TimestampsToReturn, result: ua.HistoryReadResult) -> None:
        if isinstance(details, ua.ReadRawModifiedDetails):
            if details.IsReadModified:
                raise _Refused(_SC.BadHistoryOperationUnsupported)
            tag = self.tags.get(rv.NodeId)
            if tag is None:
                raise _Refused(_SC.BadHistoryOperationUnsupported)
            lo, hi, reverse = _window(details.StartTime, details.EndTime,
                                      details.NumValuesPerNode)
            limit = min(details.NumValuesPerNode or self.max_values, self.max_values)
            read = await self.feed.read_raw(tag.key, lo, hi, limit=limit, reverse=reverse,
                                            after=_continuation(rv.ContinuationPoint))
            values = _data_values(tag, read.ts_ns, read.value, read.quality, read.gaps,
                                  ts_return)
            result.HistoryData = ua.HistoryData(DataValues=values)
            result.ContinuationPoint = read.more.pack() if read.more else None
            if not values:
                result.StatusCode = ua.StatusCode(_SC.GoodNoData)
        elif isinstance(details, ua.ReadEventDetails):
            if rv.NodeId != self.event_source:
                raise _Refused(_SC.BadHistoryOperationUnsupported)
            lo, hi, reverse = _window(details.StartTime, details.EndTime,
                                      details.NumValuesPerNode)
            limit = min(details.NumValuesPerNode or self.max_values, self.max_values)
            flt = details.Filter
            keep = where(flt.WhereClause if flt else None, self.iserver.aspace,
                         self.source_node)
            clauses = list(flt.SelectClauses if flt else [])
            events: list[ua.HistoryEventFieldList] = []
            after = _continuation(rv.ContinuationPoint)
            for _ in range(FILTER_PAGES if keep is not None else 1):
                rec_read = await self.feed.read_records(lo, hi, limit=limit, reverse=reverse,
                                                        after=after)
                gaps = iter(rec_read.gaps)
                gap = next(gaps, None)
                for i, (row, rec) in enumerate(rec_read.records):
                    while gap is not None and gap[0] <= i:
                        events.append(gap_event(gap[1], clauses, self.event_source))
                        gap = next(gaps, None)
                    if keep is None or keep(rec, row):
                        events.append(ua.HistoryEventFieldList(EventFields=[
                            event_field(rec, row, c, self.source_node) for c in clauses]))
                while gap is not None:
                    events.append(gap_event(gap[1], clauses, self.event_source))
                    gap = next(gaps, None)
                after = rec_read.more
                if events or after is None:
                    break
            result.HistoryData = ua.HistoryEvent(Events=events)
            result.ContinuationPoint = rec_read.more.pack() if rec_read.more else None
            if not events:
                result.StatusCode = ua.StatusCode(_SC.GoodNoData)
        else:
            raise _Refused(_SC.BadHistoryOperationUnsupported)


def _data_values(tag: TagSpec, ts_ns: np.ndarray, value: np.ndarray, quality: np.ndarray,
                 gaps: Sequence[tuple[int, Gap]], ts_return: ua.TimestampsToReturn
                 ) -> list[ua.DataValue]:
    t = DTYPES[tag.dtype]
    vt = t.variant
    source = ts_return in (ua.TimestampsToReturn.Source, ua.TimestampsToReturn.Both)
    server = ts_return in (ua.TimestampsToReturn.Server, ua.TimestampsToReturn.Both)
    out: list[ua.DataValue] = []
    lost = ua.StatusCode(_SC.BadDataLost)
    out_of_range = ua.StatusCode(_SC.BadOutOfRange)
    gi = 0
    micros = (ts_ns // 1000).tolist()
    vals = value.tolist()
    quals = quality.tolist()
    for k in range(len(vals) + 1):
        while gi < len(gaps) and gaps[gi][0] == k:
            when = _dt(gaps[gi][1].start_ns)
            out.append(ua.DataValue(ua.Variant(), StatusCode=lost,
                                    SourceTimestamp=when if source else None,
                                    ServerTimestamp=when if server else None))
            gi += 1
        if k == len(vals):
            break
        q = quals[k]
        status = STATUS_OF_QUALITY[q]
        v = vals[k]
        variant = ua.Variant()
        if not q & 0x80:
            if vt == ua.VariantType.Boolean:
                variant = ua.Variant(bool(v), vt)
            elif t.integer:
                if v != v or not t.low <= v <= t.high:
                    status = out_of_range
                else:
                    variant = ua.Variant(int(v), vt)
            else:
                variant = ua.Variant(float(v), vt)
        when = _EPOCH + timedelta(microseconds=micros[k])
        out.append(ua.DataValue(variant, StatusCode=status,
                                SourceTimestamp=when if source else None,
                                ServerTimestamp=when if server else None))
    return out


async def install(server: Server, feed: HistoryFeed, tags: Sequence[TagSpec],
                  nodeids: Sequence[ua.NodeId], idx: int, max_values: int) -> GatewayHistory:
    """Serve HistoryRead from ``feed``: the Server object becomes a historical event
    notifier; every tag node already says HistoryRead (``opcua_space.tag_items``)."""
    manager = GatewayHistory(server, feed, dict(zip(nodeids, tags, strict=True)),
                             ua.NodeId(ua.ObjectIds.Server), gateway_source_node(idx),
                             max_values)
    server.iserver.history_manager = manager
    await server.nodes.server.write_attribute(
        ua.AttributeIds.EventNotifier,
        ua.DataValue(ua.Variant(EVENT_NOTIFIER, ua.VariantType.Byte)))
    return manager


def feed_for(cfg: OpcUaHistoryConfig, state_dir: Path, tags: TagRegistry, metrics: Metrics,
             sink: str = "opcua") -> HistoryFeed | None:
    """The history feed ``cfg`` asks for (None: history off); by default its file is
    ``<state_dir>/<sink name>_history.db``, one per OPC-UA sink."""
    if not cfg.enabled:
        return None
    limits = HistoryLimits(max_bytes=int(cfg.max_mb * 2**20), max_age_s=cfg.max_age_h * 3600,
                           record_max_age_s=cfg.record_max_age_h * 3600)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", sink).lstrip(".") or "opcua"  # a name is no path
    path = Path(cfg.path) if cfg.path else state_dir / f"{safe}_history.db"
    return HistoryFeed(path, limits, tags, metrics,
                       flush_interval_s=cfg.flush_interval_ms / 1000,
                       max_pending_points=cfg.max_pending_points, record_types=cfg.record_types)
