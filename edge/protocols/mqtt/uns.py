"""Unified-namespace JSON over MQTT, pure: topics and payloads. No I/O.

The schema (what a UNS subscriber sees):

* ``<asset path>/<device>/<tag>``: the tag's latest value, retained,
  ``{"value": 21.5, "quality": "good", "ts": 1765130000123, "unit": "degC"}``; ``ts`` is
  the sample's UTC time in ms since the epoch, ``value`` a number (an integer for the
  integer data types), ``true``/``false`` for a bool tag and ``null`` when the sample
  has no value (a Bad one); ``quality`` is ``good``, or the reason (``bad_timeout``,
  ``uncertain_stale``, ...); ``unit`` is left out when the tag has none.
* ``<asset path>/<device>/records/<type>``: every record, not retained, its fields as
  the MES gets them plus ``id`` (stable across replays: deduplicate on it).
* ``<asset path>/<gateway id>/status``: ``{"online": true|false, "ts": ..,
  "gateway": ..}``, retained; the Will says offline when the gateway dies.

A device or tag name is never empty and never holds ``+``, ``#`` or NUL (the broker
refuses them in a topic) or an empty level; a ``/`` in it (``stf/motor1``, as an MQTT
source names its devices) gives the topic more levels. ``name_problem`` is checked at
check-config, and so is that no two tags share a topic.
"""

from __future__ import annotations

import math

import msgspec

from edge.model import DataType, Quality, Record, record_type, severity

_json = msgspec.json.Encoder()
_FORBIDDEN = ("+", "#", "\x00")
_INTEGER = frozenset({"int16", "uint16", "int32", "uint32", "int64"})


def name_problem(kind: str, name: str) -> str | None:
    """Why ``name`` cannot be one topic level (None when it can)."""
    if not name:
        return f"{kind} name is empty"
    bad = [c for c in _FORBIDDEN if c in name]
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return f"{kind} {name!r} holds {shown}: MQTT topics cannot carry it"
    if "" in name.split("/"):
        return (f"{kind} {name!r} would make an empty MQTT topic level (a leading, "
                "trailing or double '/')")
    return None


def join(*levels: str) -> str:
    """Topic levels joined by ``/``; an empty prefix (no asset path) is left out."""
    return "/".join(level for level in levels if level)


def quality_name(code: int) -> str:
    try:
        return Quality(code).name.lower()
    except ValueError:
        return severity(code)


def value_payload(value: float, quality: int, ts_ns: int, dtype: DataType,
                  unit: str) -> bytes:
    v: float | int | bool | None
    if not math.isfinite(value):
        v = None
    elif dtype == "bool":
        v = value != 0.0
    elif dtype in _INTEGER:
        v = int(value)
    else:
        v = value
    doc: dict[str, object] = {"value": v, "quality": quality_name(quality),
                              "ts": ts_ns // 1_000_000}
    if unit:
        doc["unit"] = unit
    return _json.encode(doc)


def text_payload(text: str, quality: int, ts_ns: int) -> bytes:
    """A text tag's latest value (a ``TextValue`` record): the same keys, a string value."""
    return _json.encode({"value": text, "quality": quality_name(quality),
                         "ts": ts_ns // 1_000_000})


def record_payload(record: Record, record_id: str) -> bytes:
    doc = msgspec.to_builtins(record)
    doc["id"] = record_id
    doc["ts"] = record.ts_ns // 1_000_000
    return _json.encode(doc)  # msgspec writes NaN and inf as null (JSON has neither)


def record_topic(prefix: str, device: str, record: Record) -> str:
    return join(prefix, device, "records", record_type(record))


def status_payload(online: bool, ts_ms: int, gateway: str) -> bytes:
    return _json.encode({"online": online, "ts": ts_ms, "gateway": gateway})
