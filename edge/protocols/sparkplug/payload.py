"""Sparkplug B payloads from our tags and values: births, data, deaths; topics.

Invariants:

* Every metric in a birth carries its name, alias, datatype and properties (engineering
  unit and range where the tag has them); data metrics carry only alias, timestamp and
  value (the birth bound the alias to the name).
* Timestamps are UTC milliseconds since the epoch.
* Signed integers travel as two's complement in the unsigned ``int_value`` (Int8..Int32)
  or ``long_value`` (Int64) fields, as the specification says; a NaN value (a Bad
  sample) is sent as ``is_null`` with no value.
* The node's ``bdSeq`` metric (Int64) is alias 0 in births; ``Node Control/Rebirth``
  (Boolean, false) has no alias, so any host can ask for a rebirth by name
  (tck-id-operational-behavior-data-commands-rebirth-name-aliases); alias 1 stays unused
  and tags get aliases 2.. in tag id order, so one config gives the same aliases on every
  birth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge.model import DataType, TagSpec
from edge.protocols.sparkplug import sparkplug_b_pb2 as pb

NAMESPACE = "spBv1.0"
BDSEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
BDSEQ_ALIAS = 0
FIRST_TAG_ALIAS = 2

Payload = pb.Payload
Metric = pb.Payload.Metric

# our dtype -> (Sparkplug DataType, value field)
DATATYPES: dict[DataType, tuple[int, str]] = {
    "float64": (pb.Double, "double_value"),
    "float32": (pb.Float, "float_value"),
    "int16": (pb.Int16, "int_value"),
    "uint16": (pb.UInt16, "int_value"),
    "int32": (pb.Int32, "int_value"),
    "uint32": (pb.UInt32, "int_value"),
    "int64": (pb.Int64, "long_value"),
    "bool": (pb.Boolean, "boolean_value"),
}


_SIGNED_BITS: dict[int, int] = {int(pb.Int8): 8, int(pb.Int16): 16, int(pb.Int32): 32}


def topic(group: str, kind: str, node: str, device: str = "") -> str:
    """``spBv1.0/{group}/{kind}/{node}[/{device}]``."""
    base = f"{NAMESPACE}/{group}/{kind}/{node}"
    return f"{base}/{device}" if device else base


def state_topic(host_id: str) -> str:
    """The primary host's STATE topic (Sparkplug 3.0)."""
    return f"{NAMESPACE}/STATE/{host_id}"


def check_id(kind: str, value: str) -> None:
    """Group, node, device and host ids are topic levels: no ``/ + #``, not empty."""
    if not value or any(c in value for c in "/+#"):
        raise ValueError(f"{kind} {value!r} must be non-empty without '/', '+' or '#'")


def set_value(metric: Metric, dtype: DataType, value: float) -> None:
    """Put ``value`` in the field its datatype uses; NaN becomes ``is_null``."""
    if math.isnan(value):
        metric.is_null = True
        return
    field = DATATYPES[dtype][1]
    if field == "double_value":
        metric.double_value = value
    elif field == "float_value":
        metric.float_value = value
    elif field == "int_value":
        metric.int_value = int(value) & 0xFFFFFFFF
    elif field == "long_value":
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    else:
        metric.boolean_value = bool(value)


def get_value(metric: Metric) -> float | None:
    """The value of a metric as a float (signed where its datatype is); None when null."""
    if metric.is_null or metric.WhichOneof("value") is None:
        return None
    dt = metric.datatype
    bits = _SIGNED_BITS.get(dt)
    if bits is not None:
        v = metric.int_value & ((1 << bits) - 1)
        return float(v - (1 << bits) if v >> (bits - 1) else v)
    if dt == pb.Int64:
        v = metric.long_value
        return float(v - (1 << 64) if v >> 63 else v)
    field = metric.WhichOneof("value")
    return float(getattr(metric, field))


def _property(props: pb.Payload.PropertySet, key: str, value: str | float) -> None:
    props.keys.append(key)
    pv = props.values.add()
    if isinstance(value, str):
        pv.type = pb.String
        pv.string_value = value
    else:
        pv.type = pb.Double
        pv.double_value = value


@dataclass(frozen=True, slots=True)
class BirthMetric:
    """One tag as a birth announces it, with the alias data messages use."""

    alias: int
    tag: TagSpec


def aliases(tags: Iterable[TagSpec]) -> dict[int, int]:
    """tag id -> alias, in tag id order from FIRST_TAG_ALIAS."""
    return {t.id: FIRST_TAG_ALIAS + i for i, t in enumerate(sorted(tags, key=lambda t: t.id))}


def _bdseq_metric(payload: Payload, bd_seq: int, ts_ms: int, *, alias: bool) -> None:
    m = payload.metrics.add()
    m.name = BDSEQ
    if alias:
        m.alias = BDSEQ_ALIAS
    m.timestamp = ts_ms
    m.datatype = pb.Int64
    m.long_value = bd_seq


def node_birth(bd_seq: int, ts_ms: int, metrics: Sequence[BirthMetric],
               values: dict[int, float], texts: Sequence[tuple[int, str]] = ()) -> Payload:
    """NBIRTH: seq 0, bdSeq, the rebirth control, and every node-level metric; ``texts``
    (``(alias, name)``) are String metrics announced with a null value."""
    p = Payload(timestamp=ts_ms, seq=0)
    _bdseq_metric(p, bd_seq, ts_ms, alias=True)
    m = p.metrics.add()
    m.name, m.timestamp, m.datatype = REBIRTH, ts_ms, pb.Boolean
    m.boolean_value = False
    _birth_metrics(p, metrics, values, ts_ms)
    for alias, name in texts:
        m = p.metrics.add()
        m.name, m.alias, m.timestamp, m.datatype, m.is_null = name, alias, ts_ms, pb.String, True
    return p


def device_birth(seq: int, ts_ms: int, metrics: Sequence[BirthMetric],
                 values: dict[int, float],
                 commands: Sequence[tuple[int, str]] = ()) -> Payload:
    """DBIRTH: every metric of one device, with its current value when known, then the
    commands a host may run on it (``(alias, name)``: Boolean metrics, value false)."""
    p = Payload(timestamp=ts_ms, seq=seq)
    _birth_metrics(p, metrics, values, ts_ms)
    for alias, name in commands:
        m = p.metrics.add()
        m.name, m.alias, m.timestamp, m.datatype = name, alias, ts_ms, pb.Boolean
        m.boolean_value = False
    return p


def _birth_metrics(p: Payload, metrics: Sequence[BirthMetric], values: dict[int, float],
                   ts_ms: int) -> None:
    for bm in metrics:
        t = bm.tag
        m = p.metrics.add()
        m.name = t.name
        m.alias = bm.alias
        m.timestamp = ts_ms
        m.datatype = DATATYPES[t.dtype][0]
        if t.unit:
            _property(m.properties, "engUnit", t.unit)
        if t.low is not None:
            _property(m.properties, "engLow", t.low)
        if t.high is not None:
            _property(m.properties, "engHigh", t.high)
        if t.description:
            _property(m.properties, "description", t.description)
        set_value(m, t.dtype, values.get(t.id, math.nan))


def death(bd_seq: int, ts_ms: int) -> Payload:
    """NDEATH (the Will, and the clean shutdown): the bdSeq of its connection, no seq."""
    p = Payload(timestamp=ts_ms)
    _bdseq_metric(p, bd_seq, ts_ms, alias=False)
    return p


def data(seq: int, ts_ms: int, points: Iterable[tuple[int, DataType, int, float]], *,
         historical: bool = False,
         texts: Iterable[tuple[int, int, str]] = ()) -> Payload:
    """NDATA/DDATA from ``(alias, dtype, ts_ms, value)`` points and ``(alias, ts_ms,
    text)`` String values."""
    p = Payload(timestamp=ts_ms, seq=seq)
    add = p.metrics.add
    for alias, dtype, point_ms, value in points:
        m = add()
        m.alias = alias
        m.timestamp = point_ms
        m.datatype = DATATYPES[dtype][0]
        if historical:
            m.is_historical = True
        set_value(m, dtype, value)
    for alias, point_ms, value_text in texts:
        m = add()
        m.alias, m.timestamp, m.datatype, m.string_value = alias, point_ms, pb.String, value_text
        if historical:
            m.is_historical = True
    return p


def rebirth_requested(payload: Payload) -> bool:
    """An NCMD asking for a rebirth: ``Node Control/Rebirth`` = true, by name (it has no
    alias)."""
    return any(
        m.name == REBIRTH and m.WhichOneof("value") == "boolean_value" and m.boolean_value
        for m in payload.metrics
    )
