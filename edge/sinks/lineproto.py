"""InfluxDB line protocol, pure: samples and records in, text out. No I/O.

The schema (what Grafana queries see):

* A sample is one line: measurement = the tag's device, tags = ``gateway=<id>``, the
  configured static tags and the device's asset path levels (``enterprise=acme,
  site=dresden,...``, from ``[asset]``; sorted), field = the tag's name as a float, time = the
  sample's timestamp at the configured precision. Values are always floats, so a
  field never changes type (InfluxDB 1.x refuses a type change as a partial write).
* Quality: a sample whose quality is not GOOD (0) also gets the integer field
  ``<name>_quality`` (the OPC-UA-like code, e.g. 129i = bad_timeout). Line protocol
  cannot carry NaN or inf, so a non-finite value is left out and only
  ``<name>_quality`` is written: a Bad sample shows as a quality point without value,
  never as a silently missing point. Absence of ``<name>_quality`` means GOOD.
* A record is one line: measurement = its type (``measurement``, ``interlock_trip``,
  ...), tags = ``gateway``, the static tags, the asset path levels of the device the
  record is about (the gateway's own path when it names none) and a few
  low-cardinality fields of the record (``RECORD_TAGS``), fields = every other field
  plus ``id`` (the stable record id). Non-finite floats are left out; lists and dicts
  are written as JSON strings.

Escaping follows the line-protocol spec; identifiers (measurement, tag keys and values,
field keys) are first sanitised so every server parses them alike: backslashes become
``/`` (InfluxDB 1.x and 2.x disagree on them) and control characters become spaces. A
tag key or field key ``time`` (refused by InfluxDB) becomes ``time_``. String field
values escape ``"`` and ``\\``; a newline in them is written as the two characters
``\\n``. Empty tag values are left out (InfluxDB refuses them).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import msgspec
import numpy as np
import numpy.typing as npt

from edge.asset import record_device
from edge.model import Record, SampleBatch, TagRegistry, record_type

DeviceTags = Callable[[str], Mapping[str, str]]  # device -> its asset path tags


def _no_device_tags(device: str) -> Mapping[str, str]:
    return {}

Precision = str  # "ns" | "us" | "ms" | "s"
DIVISOR: dict[str, int] = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
QUALITY_SUFFIX = "_quality"

RECORD_TAGS: dict[str, tuple[str, ...]] = {
    "measurement": ("device", "feature", "verdict"),
    "cmm_reading": ("device", "feature"),
    "interlock_trip": ("interlock", "tag", "action"),
    "quarantine": ("source",),
    "health_alert": ("motor",),
    "text_value": ("source", "tag"),
    "operator_action": ("origin", "action", "target"),
    "spc_violation": ("tag", "rule"),
    "oee_report": ("scope", "name", "line", "shift"),
    "energy_report": ("scope", "name", "line", "shift"),
    "wafer_step": ("tool", "recipe"),
}

_SANITISE = str.maketrans({"\\": "/", "\n": " ", "\r": " ", "\t": " "})
_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\", "\n": r"\n", "\r": r"\r"})
_json = msgspec.json.Encoder()


def sanitise(name: str) -> str:
    """What an identifier becomes before escaping (see the module docstring)."""
    return name.translate(_SANITISE)


def escape_measurement(name: str) -> str:
    return sanitise(name).translate(_ESCAPE_MEASUREMENT)


def escape_key(name: str) -> str:
    """Escape a tag key, a tag value or a field key."""
    key = sanitise(name).translate(_ESCAPE_KEY)
    return "time_" if key == "time" else key


def escape_string(value: str) -> str:
    """A string field value, quoted."""
    return '"' + value.translate(_ESCAPE_STRING) + '"'


def tag_set(tags: Mapping[str, str]) -> str:
    """``,k1=v1,k2=v2`` sorted by key, empty values left out."""
    return "".join(
        f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()) if v != ""
    )


class UnknownTagError(ValueError):
    """A sample names a tag id the registry does not hold (journal from another config)."""


class SampleEncoder:
    """Encodes ``SampleBatch``es; per-tag line prefixes are computed once."""

    def __init__(self, registry: TagRegistry, static_tags: Mapping[str, str],
                 precision: Precision = "ns",
                 device_tags: DeviceTags = _no_device_tags) -> None:
        if precision not in DIVISOR:
            raise ValueError(f"precision must be one of {', '.join(DIVISOR)}")
        self._registry = registry
        self._static = dict(static_tags)
        self._device_tags = device_tags
        self._div = DIVISOR[precision]
        self._series: list[str] = []
        self._value_key: list[str] = []
        self._quality_key: list[str] = []
        self._prefix = np.empty(0, dtype=object)
        self._build()

    def _build(self) -> None:
        start = len(self._series)
        for spec in list(self._registry)[start:]:
            tags = tag_set({**self._static, **self._device_tags(spec.device)})
            self._series.append(f"{escape_measurement(spec.device)}{tags} ")
            self._value_key.append(escape_key(spec.name))
            self._quality_key.append(escape_key(spec.name + QUALITY_SUFFIX))
        self._prefix = np.array(
            [s + k + "=" for s, k in zip(self._series, self._value_key, strict=True)],
            dtype=object,
        )

    def encode(self, batch: SampleBatch) -> str:
        """One line per sample, in batch order."""
        n = len(batch)
        if n == 0:
            return ""
        tid = batch.tag_id
        lo, hi = int(tid.min()), int(tid.max())
        if hi >= len(self._series) and len(self._registry) > len(self._series):
            self._build()
        if lo < 0 or hi >= len(self._series):
            bad = lo if lo < 0 else hi
            raise UnknownTagError(f"tag id {bad} is not in the tag registry "
                                  f"({len(self._series)} tags)")
        ts = batch.ts_ns if self._div == 1 else batch.ts_ns // self._div
        ts_list: list[int] = ts.tolist()
        values: list[float] = batch.value.tolist()
        lines = [
            f"{p}{v!r} {t}\n"
            for p, v, t in zip(self._prefix[tid].tolist(), values, ts_list, strict=True)
        ]
        odd: npt.NDArray[np.intp] = np.flatnonzero(
            (batch.quality != 0) | ~np.isfinite(batch.value)
        )
        if odd.size:
            quality: list[int] = batch.quality.tolist()
            tids: list[int] = tid.tolist()
            for i in odd.tolist():
                k, v = tids[i], values[i]
                q = f"{self._quality_key[k]}={quality[i]}i"
                fields = f"{self._value_key[k]}={v!r},{q}" if math.isfinite(v) else q
                lines[i] = f"{self._series[k]}{fields} {ts_list[i]}\n"
        return "".join(lines)


class RecordEncoder:
    """Encodes records; one line per record."""

    def __init__(self, static_tags: Mapping[str, str], precision: Precision = "ns",
                 device_tags: DeviceTags = _no_device_tags,
                 registry: TagRegistry | None = None) -> None:
        if precision not in DIVISOR:
            raise ValueError(f"precision must be one of {', '.join(DIVISOR)}")
        self._static = dict(static_tags)
        self._device_tags = device_tags
        self._registry = registry  # finds the device of a record's tag key
        self._div = DIVISOR[precision]

    def encode(self, records: Sequence[Record], ids: Sequence[str]) -> str:
        return "".join(self.line(r, i) for r, i in zip(records, ids, strict=True))

    def line(self, record: Record, record_id: str) -> str:
        kind = record_type(record)
        tag_keys = RECORD_TAGS.get(kind, ())
        tags = {**self._static,
                **self._device_tags(record_device(record, self._registry))}
        fields: list[str] = []
        floats = _float_fields(type(record))
        for name in record.__struct_fields__:
            if name == "ts_ns":
                continue
            value = getattr(record, name)
            if name in tag_keys:
                tags[name] = str(value)
                continue
            if name in floats and not isinstance(value, float):
                value = float(value)  # a float field stays a float field: no type conflict
            text = _field_value(value)
            if text is not None:
                fields.append(f"{escape_key(name)}={text}")
        fields.append(f"id={escape_string(record_id)}")
        ts = record.ts_ns // self._div
        return f"{escape_measurement(kind)}{tag_set(tags)} {','.join(fields)} {ts}\n"


@functools.cache
def _float_fields(cls: type[Record]) -> frozenset[str]:
    return frozenset(f.name for f in msgspec.structs.fields(cls) if f.type is float)


def _field_value(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return escape_string(value)
    return escape_string(_json.encode(value).decode())
