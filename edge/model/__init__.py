"""The data model: tags, columnar sample batches, typed records, quality, ids.

One module per part, every public name re-exported here (``from edge.model import X``
is how the rest of the code imports them):

* ``quality``: ``Quality`` and ``severity``;
* ``tags``: ``DataType``, ``TagSpec``, ``TagRegistry``;
* ``samples``: ``SampleBatch`` (the columns and their packing);
* ``records``: the event records (``CmmReading``, ``Measurement``, ``InterlockTrip``,
  ``Quarantine``, ...);
* ``reports``: the records that summarise a span (``OeeReport``, ``EnergyReport``,
  ``WaferStep``);
* ``registry``: ``Record``, ``RECORD_TYPES``, ``RECORD_TYPE_NAMES``, the record codecs and ids.

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

from edge.model.quality import Quality, severity
from edge.model.records import (
    CmmReading,
    HealthAlert,
    InterlockTrip,
    Measurement,
    OperatorAction,
    Quarantine,
    Sample,
    SpcViolation,
    TextValue,
)
from edge.model.registry import (
    RECORD_TYPE_NAMES,
    RECORD_TYPES,
    Record,
    decode_records,
    encode_records,
    item_id,
    json_dumps,
    record_to_builtins,
    record_type,
)
from edge.model.reports import EnergyReport, OeeReport, TagSummary, WaferStep
from edge.model.samples import ROW_BYTES, SampleBatch
from edge.model.tags import DataType, TagRegistry, TagSpec

__all__ = [
    "RECORD_TYPES",
    "RECORD_TYPE_NAMES",
    "ROW_BYTES",
    "CmmReading",
    "DataType",
    "EnergyReport",
    "HealthAlert",
    "InterlockTrip",
    "Measurement",
    "OeeReport",
    "OperatorAction",
    "Quality",
    "Quarantine",
    "Record",
    "Sample",
    "SampleBatch",
    "SpcViolation",
    "TagRegistry",
    "TagSpec",
    "TagSummary",
    "TextValue",
    "WaferStep",
    "decode_records",
    "encode_records",
    "item_id",
    "json_dumps",
    "record_to_builtins",
    "record_type",
    "severity",
]
