"""The typed records of events: readings, judgements, trips, quarantines, alerts, text
values and operator actions.

Invariant: records are frozen msgspec Structs tagged by ``type``; they serialise to
msgpack for the journal and to JSON for the MES with the same field names. A new record
type is added to ``registry.RECORD_TYPES`` (and ``Record``) too.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class Sample(msgspec.Struct, frozen=True, array_like=True):
    """One sample kept as evidence inside a record."""

    tag: str
    ts_ns: int
    value: float
    quality: int


class Measurement(msgspec.Struct, frozen=True, tag="measurement", tag_field="type"):
    """A CMM feature measurement, compensated to 20 C and judged."""

    ts_ns: int
    device: str
    part_id: str
    lot: str
    feature: str
    nominal_mm: float
    tol_mm: float
    raw_mm: float
    part_temp_c: float
    air_temp_c: float
    scale_temp_c: float
    l20_mm: float
    u_mm: float
    verdict: Literal["conforming", "nonconforming", "indeterminate"]
    part_temp_estimated: bool = False
    source: str = ""


class CmmReading(msgspec.Struct, frozen=True, tag="cmm_reading", tag_field="type"):
    """One raw CMM feature reading as it arrived, before compensation and judgement."""

    ts_ns: int
    device: str
    part_id: str
    lot: str
    feature: str
    nominal_mm: float
    tol_mm: float
    measured_mm: float
    part_temp_c: float  # NaN when the CMM has no part probe
    air_temp_c: float
    scale_temp_c: float
    where: str = ""


class InterlockTrip(msgspec.Struct, frozen=True, tag="interlock_trip", tag_field="type"):
    """An interlock fired and its action was sent."""

    ts_ns: int
    interlock: str
    tag: str
    condition: str
    value: float
    limit: float
    action: str
    action_ok: bool
    reaction_ns: int
    context: dict[str, str] = {}


class Quarantine(msgspec.Struct, frozen=True, tag="quarantine", tag_field="type"):
    """Data or product set aside with a reason: a bad input row, or the lot of a trip."""

    ts_ns: int
    source: str
    reason: str
    where: str = ""
    subject: str = ""
    payload: str = ""
    evidence: list[Sample] = []


class HealthAlert(msgspec.Struct, frozen=True, tag="health_alert", tag_field="type"):
    """A motor's health or time to failure crossed its alert threshold."""

    ts_ns: int
    motor: str
    health: float
    ttf_s: float
    reason: str


class SpcViolation(msgspec.Struct, frozen=True, tag="spc_violation", tag_field="type"):
    """A control-chart rule fired on a tag: an alarm (act on it) or a supporting signal."""

    ts_ns: int
    tag: str
    rule: str
    value: float
    center: float
    sigma: float
    detail: str = ""
    alarm: bool = False


class TextValue(msgspec.Struct, frozen=True, tag="text_value", tag_field="type"):
    """A tag whose value is text (an OPC-UA String or enum name, an S7 STRING): a sample
    cannot hold it, so it travels as a record with the sample's timestamp and quality.
    A source emits one only when the text changes (or its quality does)."""

    ts_ns: int
    source: str
    tag: str
    value: str
    quality: int  # Quality
    reason: str = ""  # why the quality is not Good


class OperatorAction(msgspec.Struct, frozen=True, tag="operator_action", tag_field="type"):
    """A person or a remote system acted on the gateway: reset an interlock, acknowledge
    or confirm an alarm, send a command. The audit trail: who, from where, on what, with
    what result. Journaled before the action's answer is returned."""

    ts_ns: int
    origin: str  # "web", "opcua", "sparkplug", "cli"
    user: str  # the authenticated identity, "anonymous" when there is none
    action: str  # "reset", "acknowledge", "confirm", "command"
    target: str  # the interlock, condition or command it acted on
    ok: bool
    comment: str = ""
    detail: str = ""  # the refusal reason, or what the action changed
