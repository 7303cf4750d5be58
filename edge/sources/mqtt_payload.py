"""MQTT JSON payload -> samples, or a reason (pure: no sockets, no clock).

Invariants, which the fuzz tests check on arbitrary bytes:

* ``extract`` never raises anything but ``PayloadError``, whose ``kind`` is the metric
  label and whose text is the quarantine reason ("missing field 'current_a'").
* Hostile documents are refused before the decoder sees them: more than
  ``Limits.max_bytes`` bytes, or arrays/objects nested deeper than ``Limits.max_depth``
  (brackets inside strings do not count). msgspec recurses per nesting level, so a deep
  document would otherwise raise ``RecursionError`` from the decoder.
* A message is taken whole or not at all: a required field that is absent, null or
  not a number rejects the whole message. Optional fields that are absent or null
  give no sample (never a made-up one).
* Batched messages carry equal-length arrays; one sample per element.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt

from edge.model import CmmReading
from edge.sources.timestamps import EpochUnit, TimestampError, epoch_to_ns, parse_timestamp

_decoder = msgspec.json.Decoder()
_SCALE = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}
_MAX_NS = 7_258_118_400 * 10**9


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


@dataclass(frozen=True, slots=True)
class Limits:
    """What one payload may be: bytes, and nesting depth of arrays and objects."""

    max_bytes: int = 1 << 20
    max_depth: int = 32


DEFAULT_LIMITS = Limits()


class PayloadError(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FieldSpec:
    path: tuple[str, ...]
    required: bool = True
    enum: Mapping[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class Extracted:
    field_index: npt.NDArray[np.intp]  # which FieldSpec each sample belongs to
    ts_ns: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    identity: bytes = b""  # the message's id field, JSON-encoded, when one was asked for


_MISSING = object()


def _get(doc: object, path: tuple[str, ...]) -> object:
    node = doc
    for key in path:
        if not isinstance(node, dict):
            return _MISSING
        node = node.get(key, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node


def _scalar(value: object, spec: FieldSpec) -> float | None:
    """The number for one JSON value; None for an optional null; PayloadError otherwise."""
    if value is None or value is _MISSING:
        if spec.required:
            raise PayloadError("missing_field", f"missing field '{spec.name}'")
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            f = float(value)
        except OverflowError:
            f = math.inf
        if math.isfinite(f):
            return f
    elif isinstance(value, str) and value in spec.enum:
        return float(spec.enum[value])
    shown = repr(value)[:40]
    raise PayloadError("not_a_number", f"not a number in '{spec.name}': {shown}")


def _ts_scalar(value: object, name: str, tz: dt.tzinfo | None, unit: EpochUnit) -> int:
    try:
        if value is None or value is _MISSING:
            raise PayloadError("missing_field", f"missing field '{name}'")
        if isinstance(value, bool):
            raise TimestampError(f"not a timestamp: {value!r}")
        if isinstance(value, int | float):
            return epoch_to_ns(float(value), unit)
        if isinstance(value, str):
            return parse_timestamp(value, tz, unit)
        raise TimestampError(f"not a timestamp: {repr(value)[:40]}")
    except (TimestampError, OverflowError) as exc:
        raise PayloadError("timestamp", str(exc)) from None


def _ts_array(values: list[object], name: str, tz: dt.tzinfo | None,
              unit: EpochUnit) -> npt.NDArray[np.int64]:
    if values and all(type(v) is float or type(v) is int for v in values):
        try:
            arr = np.asarray(values, np.float64)
        except OverflowError:
            arr = np.array([math.inf])
        if np.isfinite(arr).all():
            u = unit
            if u == "auto":
                mag = float(np.abs(arr).max())
                u = "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"
            ns = np.rint(arr * _SCALE[u])
            if (ns >= 0).all() and (ns < _MAX_NS).all():
                return ns.astype(np.int64)
    return np.array([_ts_scalar(v, name, tz, unit) for v in values], np.int64)


def nesting_depth(payload: bytes) -> int:
    """The deepest array/object nesting of a JSON text (strings skipped; an upper bound
    for text that is not JSON)."""
    if payload.count(b"[") + payload.count(b"{") == 0:
        return 0
    if b'"' in payload:
        payload = _STRING.sub(b"", payload)
    steps = _OPEN[np.frombuffer(payload, np.uint8)]
    if not steps.any():
        return 0
    return int(np.cumsum(steps, dtype=np.int64).max())


def check_limits(payload: bytes, limits: Limits) -> None:
    """PayloadError when the payload is too large or too deeply nested to decode."""
    if len(payload) > limits.max_bytes:
        raise PayloadError("too_large", f"payload of {len(payload)} bytes is larger than "
                           f"{limits.max_bytes} bytes")
    # Fewer brackets than the limit cannot nest deeper: the usual payload costs two counts.
    if payload.count(b"[") + payload.count(b"{") > limits.max_depth:
        depth = nesting_depth(payload)
        if depth > limits.max_depth:
            raise PayloadError("too_deep", f"JSON nested deeper than {limits.max_depth} "
                               f"levels ({depth})")


def decode_object(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, object]:
    check_limits(payload, limits)
    try:
        doc = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise PayloadError("bad_json", f"not JSON: {exc}") from None
    except RecursionError:  # the limit above is lower than any stack; this is a backstop
        raise PayloadError("too_deep", "JSON nested too deeply to decode") from None
    if not isinstance(doc, dict):
        raise PayloadError("bad_json", "payload is not a JSON object")
    return doc


def extract(
    payload: bytes, fields: Sequence[FieldSpec], *, ts_path: tuple[str, ...] | None,
    tz: dt.tzinfo | None, ts_unit: EpochUnit, batched: bool, arrival_ns: int,
    limits: Limits = DEFAULT_LIMITS, id_path: tuple[str, ...] | None = None,
) -> Extracted:
    """Samples of one message (see the module invariants)."""
    doc = decode_object(payload, limits)
    if not batched:
        got = _single(doc, fields, ts_path, tz, ts_unit, arrival_ns)
    else:
        got = _batched(doc, fields, ts_path, tz, ts_unit, arrival_ns)
    if id_path is None:
        return got
    return Extracted(got.field_index, got.ts_ns, got.value, identity(doc, id_path))


def identity(doc: dict[str, object], id_path: tuple[str, ...]) -> bytes:
    """The id field of a message, JSON-encoded; PayloadError when it is absent."""
    value = _get(doc, id_path)
    if value is None or value is _MISSING or isinstance(value, dict | list):
        raise PayloadError("missing_field", f"missing id field '{'.'.join(id_path)}'")
    return msgspec.json.encode(value)


def _single(doc: dict[str, object], fields: Sequence[FieldSpec], ts_path: tuple[str, ...] | None,
            tz: dt.tzinfo | None, unit: EpochUnit, arrival_ns: int) -> Extracted:
    index: list[int] = []
    values: list[float] = []
    for i, spec in enumerate(fields):
        v = _scalar(_get(doc, spec.path), spec)
        if v is not None:
            index.append(i)
            values.append(v)
    if not index:
        raise PayloadError("no_fields", "no mapped field in the message")
    ts = arrival_ns if ts_path is None else _ts_scalar(
        _get(doc, ts_path), ".".join(ts_path), tz, unit)
    n = len(index)
    return Extracted(np.array(index, np.intp), np.full(n, ts, np.int64),
                     np.array(values, np.float64))


def _batched(doc: dict[str, object], fields: Sequence[FieldSpec],
             ts_path: tuple[str, ...] | None, tz: dt.tzinfo | None, unit: EpochUnit,
             arrival_ns: int) -> Extracted:
    columns: list[tuple[int, list[object]]] = []
    length: int | None = None
    for i, spec in enumerate(fields):
        raw = _get(doc, spec.path)
        if raw is _MISSING or raw is None:
            if spec.required:
                raise PayloadError("missing_field", f"missing field '{spec.name}'")
            continue
        if not isinstance(raw, list):
            raise PayloadError("not_an_array", f"field '{spec.name}' is not an array")
        if length is not None and len(raw) != length:
            raise PayloadError("array_length", f"array '{spec.name}' has {len(raw)} items, "
                               f"expected {length}")
        length = len(raw)
        columns.append((i, raw))
    if not columns or not length:
        raise PayloadError("no_fields", "no mapped field in the message")
    if ts_path is None:
        ts = np.full(length, arrival_ns, np.int64)
    else:
        name = ".".join(ts_path)
        raw_ts = _get(doc, ts_path)
        if not isinstance(raw_ts, list):
            raise PayloadError("timestamp", f"field '{name}' is not an array")
        if len(raw_ts) != length:
            raise PayloadError("array_length", f"array '{name}' has {len(raw_ts)} items, "
                               f"expected {length}")
        ts = _ts_array(raw_ts, name, tz, unit)
    index_parts, ts_parts, value_parts = [], [], []
    for i, raw in columns:
        spec = fields[i]
        vals = _column(raw, spec)
        keep = ~np.isnan(vals)
        index_parts.append(np.full(int(keep.sum()), i, np.intp))
        ts_parts.append(ts[keep])
        value_parts.append(vals[keep])
    return Extracted(np.concatenate(index_parts), np.concatenate(ts_parts),
                     np.concatenate(value_parts))


def _column(raw: list[object], spec: FieldSpec) -> npt.NDArray[np.float64]:
    """Values of one array field; NaN marks an optional null (dropped by the caller)."""
    if all(type(v) is float or type(v) is int for v in raw):
        try:
            arr = np.asarray(raw, np.float64)
        except OverflowError:
            arr = np.array([math.inf])
        if np.isfinite(arr).all():
            return arr
    out = [_scalar(v, spec) for v in raw]
    return np.array([math.nan if v is None else v for v in out], np.float64)


# ---------------------------------------------------------------------- CMM records

MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class CmmSpec:
    """Where each CMM reading field is in a message; ``None``: not in the message (the
    ``features`` table gives nominal and tolerance; a missing temperature is NaN, except
    the scale's, which is ``scale_temp_c``)."""

    part_id: tuple[str, ...]
    feature: tuple[str, ...]
    measured_mm: tuple[str, ...]
    lot: tuple[str, ...] | None = None
    nominal_mm: tuple[str, ...] | None = None
    tol_mm: tuple[str, ...] | None = None
    part_temp_c: tuple[str, ...] | None = None
    air_temp_c: tuple[str, ...] | None = None
    scale_temp_c: tuple[str, ...] | None = None
    features: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    scale_temp_default_c: float = 20.0


def _text(doc: dict[str, object], path: tuple[str, ...], *, required: bool = True) -> str:
    name = ".".join(path)
    value = _get(doc, path)
    if value is None or value is _MISSING or value == "":
        if required:
            raise PayloadError("missing_field", f"missing field '{name}'")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadError("not_text", f"not a text in '{name}': {repr(value)[:40]}")
    text = str(value).strip()
    if len(text) > MAX_TEXT or not text.isprintable():
        raise PayloadError("not_text", f"text in '{name}' too long or not printable")
    return text


def _number(doc: dict[str, object], path: tuple[str, ...] | None, default: float) -> float:
    """A finite number (or a text holding one); ``default`` when the path is None, or the
    value is absent/null and the default is NaN (an optional temperature)."""
    if path is None:
        return default
    name = ".".join(path)
    value = _get(doc, path)
    if value is None or value is _MISSING:
        if math.isnan(default):
            return default
        raise PayloadError("missing_field", f"missing field '{name}'")
    f = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            f = float(value)
        except OverflowError:
            f = math.inf
    elif isinstance(value, str) and len(value) < 40:
        with contextlib.suppress(ValueError):
            f = float(value)
    if not math.isfinite(f):
        raise PayloadError("not_a_number", f"not a number in '{name}': {repr(value)[:40]}")
    return f


def extract_cmm(
    payload: bytes, spec: CmmSpec, *, ts_path: tuple[str, ...] | None, tz: dt.tzinfo | None,
    ts_unit: EpochUnit, arrival_ns: int, limits: Limits = DEFAULT_LIMITS,
    id_path: tuple[str, ...] | None = None, device: str, where: str,
) -> tuple[CmmReading, bytes]:
    """One CMM reading (one JSON object per message) and the message's identity (its id
    field, JSON-encoded; empty without ``id_path``), or PayloadError."""
    doc = decode_object(payload, limits)
    part = _text(doc, spec.part_id)
    feature = _text(doc, spec.feature)
    lot = _text(doc, spec.lot, required=False) if spec.lot is not None else ""
    table = spec.features.get(feature)
    if (spec.nominal_mm is None or spec.tol_mm is None) and table is None:
        raise PayloadError("unknown_feature",
                           f"unknown feature {feature[:60]!r} (no nominal configured)")
    nominal = _number(doc, spec.nominal_mm, table[0] if table else math.nan)
    tol = _number(doc, spec.tol_mm, table[1] if table else math.nan)
    if spec.nominal_mm is not None and math.isnan(nominal):
        raise PayloadError("missing_field", f"missing field '{'.'.join(spec.nominal_mm)}'")
    if spec.tol_mm is not None and math.isnan(tol):
        raise PayloadError("missing_field", f"missing field '{'.'.join(spec.tol_mm)}'")
    measured = _number(doc, spec.measured_mm, 0.0)
    ts = arrival_ns if ts_path is None else _ts_scalar(
        _get(doc, ts_path), ".".join(ts_path), tz, ts_unit)
    reading = CmmReading(
        ts, device, part, lot, feature, nominal, tol, measured,
        _number(doc, spec.part_temp_c, math.nan), _number(doc, spec.air_temp_c, math.nan),
        _number(doc, spec.scale_temp_c, math.nan) if spec.scale_temp_c is not None
        else spec.scale_temp_default_c,
        where=where,
    )
    return reading, identity(doc, id_path) if id_path is not None else b""
