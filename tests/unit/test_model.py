"""Data model: sample batches round-trip exactly; records and ids are stable."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.model import (
    RECORD_TYPE_NAMES,
    RECORD_TYPES,
    InterlockTrip,
    Quality,
    Quarantine,
    Sample,
    SampleBatch,
    TagRegistry,
    decode_records,
    encode_records,
    item_id,
    record_to_builtins,
    record_type,
    severity,
)


@given(st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(-(2**63), 2**63 - 1),
                          st.floats(allow_nan=True, allow_infinity=True),
                          st.integers(0, 255)), max_size=200))
def test_batch_bytes_round_trip(rows: list[tuple[int, int, float, int]]) -> None:
    """A SampleBatch packed for the journal unpacks to the same columns, NaN included."""
    cols = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    batch = SampleBatch(*cols)
    assert SampleBatch.from_bytes(batch.to_bytes()) == batch
    assert len(batch.to_bytes()) == batch.nbytes


def test_batch_rejects_ragged_columns() -> None:
    """Columns of different length are refused at construction, not downstream."""
    with pytest.raises(ValueError, match="column 'ts_ns'"):
        SampleBatch([1, 2], [1], [0.0, 1.0])


def test_registry_ids_are_dense_and_stable() -> None:
    """Tags get ids 0..n-1 in declaration order; redeclaring returns the same tag."""
    reg = TagRegistry()
    a = reg.add("etch1", "chamber_temp", unit="degC")
    b = reg.add("etch1", "pressure", unit="mTorr")
    assert (a.id, b.id) == (0, 1)
    assert reg.add("etch1", "chamber_temp", unit="degC") is a
    assert reg.id_of("etch1/pressure") == 1
    with pytest.raises(ValueError, match="declared twice"):
        reg.add("etch1", "chamber_temp", unit="K")
    with pytest.raises(KeyError, match="unknown tag 'x/y'"):
        reg.id_of("x/y")


def test_records_round_trip_and_carry_ids() -> None:
    """Records survive msgpack for the journal and show id and type in their JSON shape."""
    recs = [
        InterlockTrip(ts_ns=1, interlock="etch1_overtemp", tag="etch1/chamber_temp_c",
                      condition="high", value=189.0, limit=188.0, action="etch1:stop",
                      action_ok=True, reaction_ns=1000, context={"lot": "4711"}),
        Quarantine(ts_ns=2, source="cmm", reason="duplicate row", where="a.csv:3",
                   evidence=[Sample("etch1/chamber_temp_c", 1, 189.0, 0)]),
    ]
    assert decode_records(encode_records(recs)) == recs
    doc = record_to_builtins(recs[0], item_id("gw1", 42, 0))
    assert doc["id"] == "gw1-42-0" and doc["type"] == "interlock_trip"



def test_record_type_names_are_the_json_type_of_each_record() -> None:
    """The names sinks accept in record_types are the ``type`` each record carries."""
    trip = InterlockTrip(ts_ns=1, interlock="i", tag="d/t", condition="high", value=1.0,
                         limit=0.0, action="d:stop", action_ok=True, reaction_ns=0)
    assert len(RECORD_TYPE_NAMES) == len(set(RECORD_TYPE_NAMES)) == len(RECORD_TYPES)
    assert record_type(trip) in RECORD_TYPE_NAMES
    assert {"cmm_reading", "measurement", "interlock_trip", "quarantine"} <= set(RECORD_TYPE_NAMES)


def test_quality_severity() -> None:
    """Quality codes carry their severity in the top bits."""
    assert severity(Quality.GOOD) == "good"
    assert severity(Quality.UNCERTAIN_STALE) == "uncertain"
    assert severity(Quality.BAD_TIMEOUT) == "bad"
    assert Quality.BAD_TIMEOUT.reason == "bad_timeout"
    assert np.uint8(Quality.BAD_DECODE) == 0x82
