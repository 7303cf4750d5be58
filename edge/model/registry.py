"""Every record type, and how records are encoded and named.

Invariants:

* ``RECORD_TYPES``, ``Record`` and ``RECORD_TYPE_NAMES`` list the same types; the journal
  decodes only these.
* Ids are stable across replays: ``<gateway>-<journal seq>-<index>``. The journal
  assigns the seq, so an id exists only once the item is stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np

from edge.model.records import (
    CmmReading,
    HealthAlert,
    InterlockTrip,
    Measurement,
    OperatorAction,
    Quarantine,
    SpcViolation,
    TextValue,
)
from edge.model.reports import EnergyReport, OeeReport, WaferStep

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
