"""The data model: tags, columnar sample batches, typed records, quality, ids.

Invariants:

* A ``SampleBatch`` holds four equal-length, C-contiguous columns with fixed dtypes
  (tag_id int32, ts_ns int64, value float64, quality uint8). Constructors coerce or
  raise; nothing downstream re-checks. Per-point work is done on the columns.
* Bad data is kept: a Bad sample carries its value as NaN and a reason in ``quality``.
* Records are frozen msgspec Structs tagged by ``type``; they serialise to msgpack for
  the journal and to JSON for the MES with the same field names.
* Ids are stable across replays: ``<gateway>-<journal seq>-<index>``. The journal
  assigns the seq, so an id exists only once the item is stored.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

# --------------------------------------------------------------------------- quality


class Quality(enum.IntEnum):
    """OPC-UA-like quality: the top two bits give the severity, the rest the reason."""

    GOOD = 0x00
    GOOD_COMPENSATED = 0x01
    UNCERTAIN = 0x40
    UNCERTAIN_ESTIMATED = 0x41
    UNCERTAIN_STALE = 0x42
    UNCERTAIN_OUT_OF_RANGE = 0x43
    BAD = 0x80
    BAD_TIMEOUT = 0x81
    BAD_DECODE = 0x82
    BAD_STALE = 0x83
    BAD_OUT_OF_RANGE = 0x84
    BAD_DEVICE_EXCEPTION = 0x85
    BAD_NOT_CONNECTED = 0x86
    BAD_MISSING = 0x87

    @property
    def severity(self) -> Literal["good", "uncertain", "bad"]:
        return severity(int(self))

    @property
    def reason(self) -> str:
        return self.name.lower()


def severity(code: int) -> Literal["good", "uncertain", "bad"]:
    if code & 0x80:
        return "bad"
    if code & 0x40:
        return "uncertain"
    return "good"


# --------------------------------------------------------------------------- tags

DataType = Literal["float64", "float32", "int16", "uint16", "int32", "uint32", "int64", "bool"]


@dataclass(frozen=True, slots=True)
class TagSpec:
    """One signal of one device, e.g. ``etch1/chamber_temp``."""

    id: int
    device: str
    name: str
    unit: str = ""
    dtype: DataType = "float64"
    low: float | None = None
    high: float | None = None
    description: str = ""

    @property
    def key(self) -> str:
        return f"{self.device}/{self.name}"


@dataclass(slots=True)
class TagRegistry:
    """All tags known to this gateway, with dense int32 ids starting at 0.

    Ids are assigned in the order tags are added, which follows the config file, so
    they are stable for a given config. Lookups by key are O(1).
    """

    _tags: list[TagSpec] = field(default_factory=list)
    _by_key: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        device: str,
        name: str,
        *,
        unit: str = "",
        dtype: DataType = "float64",
        low: float | None = None,
        high: float | None = None,
        description: str = "",
    ) -> TagSpec:
        key = f"{device}/{name}"
        if key in self._by_key:
            existing = self._tags[self._by_key[key]]
            if (existing.unit, existing.dtype) != (unit, dtype):
                raise ValueError(f"tag '{key}' declared twice with different unit or type")
            return existing
        spec = TagSpec(len(self._tags), device, name, unit, dtype, low, high, description)
        self._tags.append(spec)
        self._by_key[key] = spec.id
        return spec

    def id_of(self, key: str) -> int:
        """The id of ``device/name``; KeyError names the tag when it is unknown."""
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"unknown tag '{key}'") from None

    def get(self, key: str) -> TagSpec | None:
        i = self._by_key.get(key)
        return None if i is None else self._tags[i]

    def __getitem__(self, tag_id: int) -> TagSpec:
        return self._tags[tag_id]

    def __len__(self) -> int:
        return len(self._tags)

    def __iter__(self) -> Iterator[TagSpec]:
        return iter(self._tags)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def devices(self) -> list[str]:
        return list(dict.fromkeys(t.device for t in self._tags))


# --------------------------------------------------------------------------- samples

_DTYPES = (np.int32, np.int64, np.float64, np.uint8)
_I32, _I64, _F64, _U8 = np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.float64), \
    np.dtype(np.uint8)
ROW_BYTES = 4 + 8 + 8 + 1


class SampleBatch:
    """Columnar samples: ``tag_id`` int32, ``ts_ns`` int64, ``value`` float64, ``quality`` uint8."""

    __slots__ = ("quality", "tag_id", "ts_ns", "value")

    def __init__(
        self,
        tag_id: npt.ArrayLike,
        ts_ns: npt.ArrayLike,
        value: npt.ArrayLike,
        quality: npt.ArrayLike | None = None,
    ) -> None:
        # Built once per poll by every source: dtypes resolved once, columns checked
        # without a loop (a fast-polling source spent more on this than on its decoding).
        self.tag_id: npt.NDArray[np.int32] = np.ascontiguousarray(tag_id, dtype=_I32)
        self.ts_ns: npt.NDArray[np.int64] = np.ascontiguousarray(ts_ns, dtype=_I64)
        self.value: npt.NDArray[np.float64] = np.ascontiguousarray(value, dtype=_F64)
        n = self.tag_id.shape[0]
        if quality is None:
            self.quality: npt.NDArray[np.uint8] = np.zeros(n, dtype=_U8)
        else:
            self.quality = np.ascontiguousarray(quality, dtype=_U8)
        shape = (n,)
        if self.ts_ns.shape != shape or self.value.shape != shape or self.quality.shape != shape:
            for name in ("ts_ns", "value", "quality"):
                col = getattr(self, name)
                if col.shape != shape:
                    raise ValueError(
                        f"SampleBatch column '{name}' has {col.shape}, expected ({n},)")
        if self.tag_id.ndim != 1:
            raise ValueError("SampleBatch columns must be one-dimensional")

    @classmethod
    def empty(cls) -> SampleBatch:
        return cls(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.float64))

    @classmethod
    def concat(cls, batches: Sequence[SampleBatch]) -> SampleBatch:
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        return cls(
            np.concatenate([b.tag_id for b in batches]),
            np.concatenate([b.ts_ns for b in batches]),
            np.concatenate([b.value for b in batches]),
            np.concatenate([b.quality for b in batches]),
        )

    def __len__(self) -> int:
        return int(self.tag_id.shape[0])

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_] | slice) -> SampleBatch:
        return SampleBatch(
            self.tag_id[index], self.ts_ns[index], self.value[index], self.quality[index]
        )

    @property
    def nbytes(self) -> int:
        return len(self) * ROW_BYTES

    def to_bytes(self) -> bytes:
        """Column-major packing: all tag ids, then timestamps, values, qualities."""
        return b"".join(
            (self.tag_id.tobytes(), self.ts_ns.tobytes(), self.value.tobytes(),
             self.quality.tobytes())
        )

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> SampleBatch:
        if len(data) % ROW_BYTES:
            raise ValueError(f"sample payload of {len(data)} bytes is not a whole number of rows")
        n = len(data) // ROW_BYTES
        buf = memoryview(data)
        o1, o2, o3 = 4 * n, 12 * n, 20 * n
        return cls(
            np.frombuffer(buf[:o1], dtype=np.int32),
            np.frombuffer(buf[o1:o2], dtype=np.int64),
            np.frombuffer(buf[o2:o3], dtype=np.float64),
            np.frombuffer(buf[o3:], dtype=np.uint8),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SampleBatch):
            return NotImplemented
        return (
            np.array_equal(self.tag_id, other.tag_id)
            and np.array_equal(self.ts_ns, other.ts_ns)
            and np.array_equal(self.value, other.value, equal_nan=True)
            and np.array_equal(self.quality, other.quality)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SampleBatch(n={len(self)})"


# --------------------------------------------------------------------------- records


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


class OeeReport(msgspec.Struct, frozen=True, tag="oee_report", tag_field="type"):
    """OEE of a tool (or of a line, its tools together) over one shift, and why it was
    lost. Times are seconds of planned production time (shift less planned breaks);
    ``no_data_s`` of it had no usable state (a gap) and is left out of availability.
    The losses add up: planned - no_data = run + the downtime causes, and
    run = fully productive (oee x known planned time) + speed loss + scrap and rework."""

    ts_ns: int  # the shift's end
    start_ns: int  # the shift's start
    scope: Literal["tool", "line"]
    name: str
    line: str
    shift: str
    planned_s: float
    run_s: float
    no_data_s: float
    down_interlock_s: float  # stopped by an interlock trip until reset
    down_fault_s: float  # stopped longer than a micro-stoppage, no trip
    down_microstop_s: float  # stops shorter than the tool's micro-stoppage limit
    speed_loss_s: float  # run time less the ideal time of the parts made
    scrap_loss_s: float  # ideal time of the scrapped parts
    rework_loss_s: float  # ideal time of the parts sent to rework
    availability: float
    performance: float
    quality: float
    oee: float
    ideal_cycle_s: float
    total_count: int
    good_count: int
    scrap_count: int
    rework_count: int
    trips: int = 0
    stops: int = 0
    micro_stoppages: int = 0


class EnergyReport(msgspec.Struct, frozen=True, tag="energy_report", tag_field="type"):
    """Electrical energy of a motor, a station or a line over one shift. ``kwh`` =
    ``measured_kwh`` (integrated samples, Bad ones bridged when the span around them is
    short) + ``estimated_kwh`` (gaps longer than the limit, at the motor's mean power so
    far); ``gap_s`` and ``bridged_s`` say how much time each covers."""

    ts_ns: int  # the shift's end
    start_ns: int  # the shift's start
    scope: Literal["motor", "station", "line"]
    name: str
    line: str
    shift: str
    kwh: float
    measured_kwh: float
    estimated_kwh: float
    gap_s: float
    bridged_s: float
    good_parts: int = -1  # -1: no OEE report of the line's tools was seen for the shift
    kwh_per_good_part: float = math.nan
class TagSummary(msgspec.Struct, frozen=True):
    """One tag's telemetry over a span: min/mean/max over its Good and Uncertain samples
    (NaN when it had none), the last such value, and how many samples were Bad."""

    tag: str
    n: int
    min: float
    mean: float
    max: float
    last: float
    bad: int


class WaferStep(msgspec.Struct, frozen=True, tag="wafer_step", tag_field="type"):
    """One wafer's step through one tool, made when the wafer leaves it: the digital
    thread's unit. ``start_ns``/``end_ns`` are when it entered and left (from the tool's
    own elapsed-time register where configured, else the first reading that showed it);
    ``first_seen_ns`` is the first reading the gateway saw, later than ``start_ns`` when
    the gateway (re)started mid-step: the telemetry summary covers from there. The
    trips, quarantines and SPC alarms are those of the tool during the step."""

    ts_ns: int  # = end_ns: when the wafer left
    tool: str
    lot: str
    wafer: str
    recipe: str
    start_ns: int
    end_ns: int
    first_seen_ns: int
    telemetry: list[TagSummary] = []
    trips: list[InterlockTrip] = []
    quarantines: list[Quarantine] = []
    spc_alarms: list[SpcViolation] = []
    dropped: int = 0  # trips/quarantines/alarms over the per-step cap, counted not kept


Record = (
    CmmReading | Measurement | InterlockTrip | Quarantine | HealthAlert | SpcViolation
    | TextValue | OperatorAction | OeeReport | EnergyReport | WaferStep
)
RECORD_TYPES: tuple[type[Record], ...] = (
    CmmReading, Measurement, InterlockTrip, Quarantine, HealthAlert, SpcViolation,
    TextValue, OperatorAction, OeeReport, EnergyReport, WaferStep,
)
# The names a config uses for them (``record_types`` of a sink), as ``record_type`` gives.
RECORD_TYPE_NAMES: tuple[str, ...] = tuple(str(t.__struct_config__.tag) for t in RECORD_TYPES)


def _numpy_to_python(obj: object) -> object:
    """A stage that leaves a numpy scalar in a record field (``center=np.mean(x)``) must
    not make the record unstorable: numpy scalars and arrays encode as their values."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot encode objects of type {type(obj).__name__}")


_records_encoder = msgspec.msgpack.Encoder(enc_hook=_numpy_to_python)
_records_decoder = msgspec.msgpack.Decoder(list[Record])
_json_encoder = msgspec.json.Encoder()


def encode_records(records: Sequence[Record]) -> bytes:
    return _records_encoder.encode(list(records))


def decode_records(data: bytes | memoryview) -> list[Record]:
    return _records_decoder.decode(data)


def record_type(record: Record) -> str:
    return str(record.__struct_config__.tag)


def record_to_builtins(record: Record, record_id: str) -> dict[str, object]:
    """The JSON shape a peer sees: the record's fields plus ``id`` and ``type``."""
    out: dict[str, object] = msgspec.to_builtins(record)
    out["id"] = record_id
    return out


def item_id(gateway_id: str, seq: int, index: int) -> str:
    """Stable id of the ``index``-th item of journal entry ``seq``."""
    return f"{gateway_id}-{seq}-{index}"


def json_dumps(obj: object) -> bytes:
    return _json_encoder.encode(obj)
