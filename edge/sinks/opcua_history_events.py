"""The gateway's records as OPC-UA events of the history (``opcua_history``): the
fields a client selects, answered from a record.

Invariants:

* The BaseEventType fields come from every record the same way: EventId (unique per
  stored record), EventType (``event_type``: a limit trip ExclusiveLevelAlarmType, any
  other trip, an SPC alarm or a health alert OffNormalAlarmType, as their conditions
  are; an acknowledge, confirm or reset its AuditCondition*EventType; anything else
  BaseEventType), SourceNode (the gateway object the record
  belongs to, else the Server object), SourceName, Time and ReceiveTime (the record's
  time), Message (one line), Severity (trips 900, SPC alarms 700, health 600, ...).
* Any other selected field named after a record field (``Interlock`` -> ``interlock``,
  ``ActionOk`` -> ``action_ok``) gets that field's value; anything else is null.
* A gap is an event too: SourceName ``history``, a Message giving its start and end.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import msgspec
from asyncua import ua

from edge.history.store import Gap
from edge.model import (
    HealthAlert,
    InterlockTrip,
    Measurement,
    OperatorAction,
    Quarantine,
    Record,
    SpcViolation,
    record_type,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _dt(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def event_field(rec: Record, row: int, clause: ua.SimpleAttributeOperand,
                source_node: Callable[[Record], ua.NodeId]) -> ua.Variant:
    """The value of one select clause for the record stored as ``row``."""
    name = clause.BrowsePath[-1].Name if clause.BrowsePath else ""
    ts = _dt(rec.ts_ns)
    if name == "EventId":
        return ua.Variant(b"edge-history-%d" % row, ua.VariantType.ByteString)
    if name == "EventType":
        return ua.Variant(event_type(rec), ua.VariantType.NodeId)
    if name == "SourceNode":
        return ua.Variant(source_node(rec), ua.VariantType.NodeId)
    if name == "SourceName":
        return ua.Variant(source_name(rec), ua.VariantType.String)
    if name in ("Time", "ReceiveTime"):
        return ua.Variant(ts, ua.VariantType.DateTime)
    if name == "Message":
        return ua.Variant(ua.LocalizedText(message(rec)), ua.VariantType.LocalizedText)
    if name == "Severity":
        return ua.Variant(severity(rec), ua.VariantType.UInt16)
    return _record_field(rec, name)


def gap_event(gap: Gap, clauses: Sequence[ua.SimpleAttributeOperand], server: ua.NodeId
               ) -> ua.HistoryEventFieldList:
    text = (f"history gap: no events kept from {_dt(gap.start_ns).isoformat()} "
            f"to {_dt(gap.end_ns).isoformat()} (the gateway was not recording, or the "
            "history limits evicted them)")
    fields = []
    for c in clauses:
        name = c.BrowsePath[-1].Name if c.BrowsePath else ""
        fields.append({
            "EventId": ua.Variant(b"edge-history-gap-%d" % gap.start_ns, ua.VariantType.ByteString),
            "EventType": ua.Variant(ua.NodeId(ua.ObjectIds.BaseEventType), ua.VariantType.NodeId),
            "SourceNode": ua.Variant(server, ua.VariantType.NodeId),
            "SourceName": ua.Variant("history", ua.VariantType.String),
            "Time": ua.Variant(_dt(gap.start_ns), ua.VariantType.DateTime),
            "ReceiveTime": ua.Variant(_dt(gap.start_ns), ua.VariantType.DateTime),
            "Message": ua.Variant(ua.LocalizedText(text), ua.VariantType.LocalizedText),
            "Severity": ua.Variant(1, ua.VariantType.UInt16),
        }.get(name, ua.Variant()))
    return ua.HistoryEventFieldList(EventFields=fields)


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _record_field(rec: Record, name: str) -> ua.Variant:
    attr = _CAMEL.sub("_", name).lower()
    if attr not in rec.__struct_fields__:
        return ua.Variant()
    v = getattr(rec, attr)
    if isinstance(v, bool):
        return ua.Variant(v, ua.VariantType.Boolean)
    if isinstance(v, int):
        return ua.Variant(v, ua.VariantType.Int64)
    if isinstance(v, float):
        return ua.Variant(v, ua.VariantType.Double)
    if isinstance(v, str):
        return ua.Variant(v, ua.VariantType.String)
    return ua.Variant(msgspec.json.encode(v).decode(), ua.VariantType.String)


_ID = ua.ObjectIds
_AUDIT = {"acknowledge": ua.NodeId(_ID.AuditConditionAcknowledgeEventType),
          "confirm": ua.NodeId(_ID.AuditConditionConfirmEventType),
          "reset": ua.NodeId(_ID.AuditConditionResetEventType)}


def event_type(rec: Record) -> ua.NodeId:
    """The event type a record is in the history: its condition's type for a trip, an
    SPC alarm or a health alert; the audit type of an operator action on a condition."""
    if isinstance(rec, InterlockTrip):
        limit = rec.condition in ("high", "low") or rec.condition[:1] in ("<", ">")
        return ua.NodeId(_ID.ExclusiveLevelAlarmType if limit else _ID.OffNormalAlarmType)
    if isinstance(rec, HealthAlert) or (isinstance(rec, SpcViolation) and rec.alarm):
        return ua.NodeId(_ID.OffNormalAlarmType)
    if isinstance(rec, OperatorAction) and rec.action in _AUDIT:
        return _AUDIT[rec.action]
    return ua.NodeId(_ID.BaseEventType)


def source_name(rec: Record) -> str:
    if isinstance(rec, InterlockTrip):
        return rec.interlock
    if isinstance(rec, HealthAlert):
        return rec.motor
    if isinstance(rec, SpcViolation):
        return rec.tag
    if isinstance(rec, Measurement):
        return rec.device
    if isinstance(rec, OperatorAction):
        return rec.target
    if isinstance(rec, Quarantine):
        return rec.source
    return record_type(rec)


def severity(rec: Record) -> int:
    if isinstance(rec, InterlockTrip):
        return 900
    if isinstance(rec, SpcViolation):
        return 700 if rec.alarm else 400
    if isinstance(rec, HealthAlert):
        return 600
    if isinstance(rec, Quarantine):
        return 500
    if isinstance(rec, Measurement):
        return 500 if rec.verdict == "nonconforming" else 100
    if isinstance(rec, OperatorAction):
        return 300
    return 100


def message(rec: Record) -> str:
    if isinstance(rec, InterlockTrip):
        return (f"interlock {rec.interlock} tripped: {rec.tag} {rec.condition} (value "
                f"{rec.value:g}, limit {rec.limit:g}), action {rec.action} "
                f"{'sent' if rec.action_ok else 'FAILED'}")
    if isinstance(rec, SpcViolation):
        return f"SPC {rec.rule} on {rec.tag}: value {rec.value:g} {rec.detail}".rstrip()
    if isinstance(rec, HealthAlert):
        return f"motor {rec.motor}: {rec.reason} (health {rec.health:.3f}, ttf {rec.ttf_s:.0f} s)"
    if isinstance(rec, OperatorAction):
        return (f"{rec.user} via {rec.origin}: {rec.action} {rec.target} "
                f"{'ok' if rec.ok else 'refused'} {rec.comment}").rstrip()
    if isinstance(rec, Quarantine):
        return f"quarantined from {rec.source}: {rec.reason}"
    if isinstance(rec, Measurement):
        return f"{rec.device} {rec.part_id} {rec.feature}: {rec.verdict}"
    return record_type(rec)


def gateway_source_node(idx: int) -> Callable[[Record], ua.NodeId]:
    """The gateway object a record belongs to (``opcua_objects``' node ids), else the
    Server object."""
    def node(rec: Record) -> ua.NodeId:
        if isinstance(rec, InterlockTrip):
            return ua.NodeId(f"_interlocks/{rec.interlock}", idx)
        if isinstance(rec, HealthAlert):
            return ua.NodeId(f"_health/{rec.motor}", idx)
        if isinstance(rec, SpcViolation):
            return ua.NodeId(f"_spc/{rec.tag.replace('/', '.')}", idx)
        if isinstance(rec, Measurement):
            return ua.NodeId(f"_measurements/{rec.device}", idx)
        return ua.NodeId(ua.ObjectIds.Server)
    return node


