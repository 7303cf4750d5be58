"""What the gateway judged, as Sparkplug metrics of the edge node: one String metric per
kind of judgement, whose every value is one record as JSON.

Why String metrics of the last record, not typed per-interlock or per-motor metrics: a
trip, a quarantine, a health alert and an SPC alarm are events with fields a host needs
together (the lot and wafer of a trip, the reason of a quarantine), not states with one
number; a birth must list every metric the node will ever report
(tck-id-payloads-nbirth / -ndata), and these four are known at build time while the
names of interlocks and motors belong to stages the sink does not see. Each value
carries the record's own timestamp, so a host historian keeps the event stream; a
String is decoded by every host (a DataSet would need fixed columns per kind).

Invariants:

* The metric names are fixed (``METRICS``); the NBIRTH declares each with an alias and a
  null value, NDATA carries only the alias (tck-id-payloads-alias-data-cmd-requirement).
* Only records a person acts on: every ``InterlockTrip``, ``Quarantine`` and
  ``HealthAlert``, and ``SpcViolation`` when it is an alarm (supporting signals stay in
  the journal and the MES).
* The JSON is the record as the journal keeps it (``type`` names its kind).
"""

from __future__ import annotations

import msgspec

from edge.model import HealthAlert, InterlockTrip, Quarantine, Record, SpcViolation

METRICS: tuple[str, ...] = (
    "Judgements/InterlockTrip", "Judgements/Quarantine", "Judgements/HealthAlert",
    "Judgements/SpcAlarm",
)
_BY_TYPE: dict[type, str] = {InterlockTrip: METRICS[0], Quarantine: METRICS[1],
                             HealthAlert: METRICS[2], SpcViolation: METRICS[3]}
_ENCODE = msgspec.json.Encoder()


def metric_of(record: Record) -> str | None:
    """The node metric that carries ``record``; None for records the fleet does not get."""
    if isinstance(record, SpcViolation) and not record.alarm:
        return None
    return _BY_TYPE.get(type(record))


def text(record: Record) -> str:
    """The record as JSON, as the journal keeps it."""
    return _ENCODE.encode(record).decode()
