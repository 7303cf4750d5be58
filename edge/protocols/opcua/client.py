"""Client-side OPC-UA pieces with no sockets: DataValues -> columns, deadband filters,
the keepalive watchdog's rule.

Invariants:

* ``Columns`` turns what one publish (or one Read) brought into the four columns of a
  ``SampleBatch`` in one pass: the value as float64 (Boolean 0/1), the source timestamp
  (else the server's, else the time of arrival), the status mapped by
  ``status.quality_of_status``. A value that is no number (a string, an array, Null)
  never passes as Good: it is NaN with ``BAD_DECODE``, and kept in ``odd`` for the
  source to say why. A Bad status gives NaN whatever
  value came with it (as our own server and the Modbus source do); Uncertain keeps it.
* ``silent_for`` is the whole keepalive rule: a subscription whose last publish answer
  (data or keepalive) is older than two keepalive periods is lost, whatever the socket
  says; the session is then rebuilt.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
from asyncua import ua

from edge.model import Quality, SampleBatch
from edge.protocols.opcua.status import quality_of_status

_GOOD = int(Quality.GOOD)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_BAD_DECODE = int(Quality.BAD_DECODE)


def ts_ns_of(dv: ua.DataValue, arrival_ns: int) -> int:
    """The source timestamp of ``dv`` in ns; the server's when absent; else arrival."""
    stamp: datetime | None = dv.SourceTimestamp or dv.ServerTimestamp
    if stamp is None:
        return arrival_ns
    if stamp.tzinfo is None:  # OPC-UA times are UTC
        stamp = stamp.replace(tzinfo=UTC)
    return (stamp - _EPOCH) // _MICROSECOND * 1000  # exact: no float rounding


def value_of(dv: ua.DataValue) -> tuple[float, int]:
    """(value, quality byte) of one DataValue."""
    status = dv.StatusCode
    quality = _GOOD if status is None else int(quality_of_status(status))
    if quality & 0x80:
        return math.nan, quality
    variant = dv.Value
    raw = None if variant is None else variant.Value
    if isinstance(raw, bool):
        return (1.0 if raw else 0.0), quality
    if isinstance(raw, (int, float)):
        return float(raw), quality
    return math.nan, _BAD_DECODE


class Columns:
    """Samples of one publish or one Read, gathered then handed over as one batch."""

    __slots__ = ("ids", "odd", "q", "ts", "val")

    def __init__(self) -> None:
        self.odd: list[tuple[int, ua.DataValue]] = []  # values that were no number
        self.ids: list[int] = []
        self.ts: list[int] = []
        self.val: list[float] = []
        self.q: list[int] = []

    def add(self, tag_id: int, dv: ua.DataValue, arrival_ns: int) -> int:
        """Add one value; returns its quality byte."""
        value, quality = value_of(dv)
        if quality == _BAD_DECODE and (dv.StatusCode is None or not dv.StatusCode.is_bad()):
            self.odd.append((tag_id, dv))
        self.ids.append(tag_id)
        self.ts.append(ts_ns_of(dv, arrival_ns))
        self.val.append(value)
        self.q.append(quality)
        return quality

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self) -> SampleBatch:
        return SampleBatch(np.array(self.ids, np.int32), np.array(self.ts, np.int64),
                           np.array(self.val, np.float64), np.array(self.q, np.uint8))


def all_bad(tag_ids: npt.NDArray[np.int32], quality: Quality,
            now_ns: int | None = None) -> SampleBatch:
    """One Bad sample (value NaN) for each tag, stamped now: data is missing."""
    n = len(tag_ids)
    return SampleBatch(tag_ids, np.full(n, now_ns or time.time_ns(), np.int64),
                       np.full(n, math.nan), np.full(n, int(quality), np.uint8))


def deadband_filter(kind: str, value: float) -> ua.DataChangeFilter | None:
    """The monitored item's filter: None without a deadband."""
    if kind == "none":
        return None
    f = ua.DataChangeFilter()
    f.Trigger = ua.DataChangeTrigger.StatusValue
    f.DeadbandType = (ua.DeadbandType.Absolute if kind == "absolute"
                      else ua.DeadbandType.Percent)
    f.DeadbandValue = value
    return f


def keepalive_count(keepalive_s: float, publishing_interval_ms: float) -> int:
    """The MaxKeepAliveCount that makes the server answer at least every ``keepalive_s``."""
    return max(1, math.floor(keepalive_s * 1000.0 / publishing_interval_ms))


def silent_for(last_answer: float, now: float, keepalive_period_s: float) -> float | None:
    """Seconds of silence when past two keepalive periods (the subscription is lost),
    else None."""
    silent = now - last_answer
    return silent if silent > 2.0 * keepalive_period_s else None


def status_name(code: ua.StatusCode | int) -> str:
    """``BadNodeIdUnknown`` for a status code, for logs and records."""
    value = code.value if isinstance(code, ua.StatusCode) else int(code)
    name: str = ua.status_codes.get_name_and_doc(value)[0]
    return name


def failed_items(results: Sequence[int | ua.StatusCode]) -> list[tuple[int, ua.StatusCode]]:
    """(index, status) of each monitored item the server refused."""
    return [(i, r) for i, r in enumerate(results) if isinstance(r, ua.StatusCode)]


def monitored_item_request(handle: int, node_id: ua.NodeId, sampling_interval_ms: float,
                           queue_size: int, mfilter: ua.DataChangeFilter | None
                           ) -> ua.MonitoredItemCreateRequest:
    """A request to report changes of ``node_id``'s value under ``handle``."""
    rv = ua.ReadValueId()
    rv.NodeId = node_id
    rv.AttributeId = ua.AttributeIds.Value
    mp = ua.MonitoringParameters()
    mp.ClientHandle = handle
    mp.SamplingInterval = sampling_interval_ms
    mp.QueueSize = queue_size
    mp.DiscardOldest = True
    if mfilter is not None:
        mp.Filter = mfilter
    req = ua.MonitoredItemCreateRequest()
    req.ItemToMonitor = rv
    req.MonitoringMode = ua.MonitoringMode.Reporting
    req.RequestedParameters = mp
    return req
