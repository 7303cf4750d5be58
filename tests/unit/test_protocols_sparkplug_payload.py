"""Unit tests of Sparkplug B payload encoding: births, data, deaths, value round trips."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from edge.model import TagSpec
from edge.protocols.sparkplug import payload as P
from edge.protocols.sparkplug import sparkplug_b_pb2 as pb

TEMP = TagSpec(0, "etch1", "chamber_temp", unit="degC", low=0.0, high=400.0,
               description="chamber")
RUN = TagSpec(1, "etch1", "running", dtype="bool")


def decode(p: P.Payload) -> P.Payload:
    return P.Payload.FromString(p.SerializeToString())


def props(m: P.Metric) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in zip(m.properties.keys, m.properties.values, strict=True):
        out[k] = getattr(v, v.WhichOneof("value"))
    return out


def test_nbirth_has_seq0_bdseq_rebirth_and_every_metric_with_units() -> None:
    """tck-id-topics-nbirth-*: seq 0, timestamp, bdSeq, Rebirth false, name/type/alias/units."""
    metrics = [P.BirthMetric(a, t) for t, a in zip((TEMP, RUN), (2, 3), strict=True)]
    b = decode(P.node_birth(5, 1_700_000_000_123, metrics, {0: 21.5}))
    assert b.seq == 0 and b.timestamp == 1_700_000_000_123
    bd, rebirth, temp, run = b.metrics
    assert (bd.name, bd.datatype, bd.long_value) == ("bdSeq", pb.Int64, 5)
    assert (rebirth.name, rebirth.datatype, rebirth.boolean_value) == (
        "Node Control/Rebirth", pb.Boolean, False)
    # tck-id-operational-behavior-data-commands-rebirth-name-aliases: no alias for it
    assert not rebirth.HasField("alias") and bd.alias == 0
    assert (temp.name, temp.alias, temp.datatype, temp.double_value) == (
        "chamber_temp", 2, pb.Double, 21.5)
    assert props(temp) == {"engUnit": "degC", "engLow": 0.0, "engHigh": 400.0,
                           "description": "chamber"}
    assert (run.name, run.alias, run.datatype, run.is_null) == ("running", 3, pb.Boolean, True)


def test_ndeath_carries_only_bdseq_and_no_seq() -> None:
    """tck-id-topics-ndeath-payload / -seq: only the bdSeq metric, no sequence number."""
    d = decode(P.death(9, 1))
    assert not d.HasField("seq")
    assert [(m.name, m.datatype, m.long_value) for m in d.metrics] == [("bdSeq", pb.Int64, 9)]


def test_data_metrics_use_alias_only_and_mark_history() -> None:
    """Data after the birth: alias, timestamp, value; no name; replays marked historical."""
    d = decode(P.data(7, 10, [(2, "float64", 9, 1.5)], historical=True))
    (m,) = d.metrics
    assert d.seq == 7 and m.alias == 2 and not m.name and m.timestamp == 9
    assert m.is_historical and m.double_value == 1.5
    live = decode(P.data(8, 10, [(2, "float64", 9, 1.5)])).metrics[0]
    assert not live.HasField("is_historical")


@given(st.sampled_from(["int16", "int32", "int64", "uint16", "uint32"]),
       st.integers(-(2**15), 2**15 - 1))
def test_integer_values_round_trip_including_negatives(dtype: str, value: int) -> None:
    """Signed values travel as two's complement and decode to the same number."""
    if dtype.startswith("uint"):
        value = abs(value)
    d = decode(P.data(0, 0, [(2, dtype, 0, float(value))]))  # type: ignore[list-item]
    assert P.get_value(d.metrics[0]) == value


@given(st.floats(allow_nan=False, allow_infinity=True))
def test_double_round_trips_exactly(value: float) -> None:
    """A float64 tag's value arrives bit for bit."""
    d = decode(P.data(0, 0, [(2, "float64", 0, value)]))
    assert P.get_value(d.metrics[0]) == value


def test_nan_is_sent_as_null() -> None:
    """A Bad sample (NaN) is an explicit null, not a made-up number."""
    d = decode(P.data(0, 0, [(2, "float64", 0, math.nan)]))
    assert d.metrics[0].is_null and P.get_value(d.metrics[0]) is None


def test_rebirth_request_by_name() -> None:
    """tck-id-operational-behavior-data-commands-ncmd-rebirth-name/-value: an NCMD Node
    Control/Rebirth=true asks for a rebirth; false, or a metric by alias only, does not."""
    p = P.Payload()
    m = p.metrics.add()
    m.name, m.datatype, m.boolean_value = P.REBIRTH, pb.Boolean, True
    assert P.rebirth_requested(p)
    q = P.Payload()
    q.metrics.add(alias=1, boolean_value=True)
    assert not P.rebirth_requested(q)
    m.boolean_value = False
    assert not P.rebirth_requested(p)


def test_topics_and_ids() -> None:
    """Topics follow spBv1.0/group/TYPE/node[/device]; ids with / + # are refused."""
    assert P.topic("g", "DDATA", "n", "d") == "spBv1.0/g/DDATA/n/d"
    assert P.topic("g", "NBIRTH", "n") == "spBv1.0/g/NBIRTH/n"
    assert P.state_topic("scada") == "spBv1.0/STATE/scada"
    for bad in ("", "a/b", "a+", "#"):
        try:
            P.check_id("group_id", bad)
        except ValueError as e:
            assert "group_id" in str(e)
        else:
            raise AssertionError(bad)
