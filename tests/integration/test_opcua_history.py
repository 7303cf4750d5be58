"""HistoryRead on the gateway's OPC-UA server, read by an independent client (node-opcua)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opcua_fixtures import (
    NS_URI,
    FakeGateway,
    demo_registry,
    history_ready,
    running_sink,
    server_mode,  # noqa: F401  (every test in both server modes)
    until,
)
from peers import run_node_client

from edge.model import (
    HealthAlert,
    InterlockTrip,
    OperatorAction,
    Quality,
    Quarantine,
    SampleBatch,
    SpcViolation,
)
from edge.sinks.opcua import OpcUaSink
from edge.sinks.opcua_history import OpcUaHistoryConfig

pytestmark = pytest.mark.peer("node")
HISTORY = {"flush_interval_ms": 50.0, "max_values_per_read": 100}


def history(**kw: Any) -> OpcUaHistoryConfig:
    return OpcUaHistoryConfig(**(HISTORY | kw))


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def node_iso(ns: int) -> str:
    """How node-opcua prints a timestamp (milliseconds)."""
    return datetime.fromtimestamp(ns // 1_000_000 / 1e3, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def history_read(sink: OpcUaSink, tmp: Path, reads: list[dict[str, Any]]
                       ) -> list[dict[str, Any]]:
    out = await run_node_client("opcua_history.js", {
        "endpoint": sink.endpoint, "pki": str(tmp / "client-pki"), "ns_uri": NS_URI,
        "reads": reads}, timeout=120)
    assert out["ok"], out.get("error")
    results: list[dict[str, Any]] = out["results"]
    return results


async def stored(sink: OpcUaSink, samples: int, records: int = 0) -> None:
    snap = sink.ctx.metrics.snapshot(["edge_history_stored_total"])
    await until(lambda: sink.ctx.metrics.snapshot(["edge_history_stored_total"]).get(
        'edge_history_stored_total{kind="samples"}', 0) >= samples + snap.get(
        'edge_history_stored_total{kind="samples"}', 0) and sink.ctx.metrics.snapshot(
        ["edge_history_stored_total"]).get('edge_history_stored_total{kind="records"}', 0)
        >= records, timeout=60)


async def recording_ms(sink: OpcUaSink) -> int:
    """Once the history records: now, on a whole millisecond (node-opcua's Date keeps
    milliseconds), plus two: a read from one millisecond before it then starts after the
    recording span began (which can be in the same millisecond as now), never in a gap."""
    await history_ready(sink)
    return time.time_ns() // 1_000_000 * 1_000_000 + 2_000_000


async def test_raw_history_walks_continuation_points_and_says_where_the_gap_is(
        tmp_path: Path) -> None:
    """Every value the server ingested reads back through node-opcua's historyRead with its
    value, timestamp and status, in pages walked by continuation points to the end (equal
    timestamps across a page boundary included); after a restart, a read over the downtime
    returns both runs' values and one BadDataLost marker where the gateway was down."""
    gw = FakeGateway()
    reg = demo_registry()
    pressure, lot = reg.id_of("etch1/pressure"), reg.id_of("etch1/lot")
    async with running_sink(tmp_path, reg, gw, history=history()) as sink:
        t0 = await recording_ms(sink)
        n = 250
        ts = [t0 + i * 1_000_000 for i in range(n)]
        ts[100] = ts[99]  # two values at one timestamp, across the page boundary (100)
        values = [float(i) * 0.5 for i in range(n)]
        quality = [int(Quality.UNCERTAIN_STALE) if i == 7 else 0 for i in range(n)]
        for k in range(0, n, 50):  # the flow's batches
            sink.publish(SampleBatch([pressure] * 50, ts[k:k + 50], values[k:k + 50],
                                     quality[k:k + 50]), [])
        sink.publish(SampleBatch([lot, lot], [t0, t0 + 5_000_000], [4711, 4712]), [])
        await stored(sink, n + 2)
        first = await history_read(sink, tmp_path, [
            {"node": "s=etch1/pressure", "start": iso(t0 - 1_000_000),
             "end": iso(t0 + n * 1_000_000)},
            {"node": "s=etch1/lot", "start": iso(t0), "end": iso(t0 + 10_000_000)},
            {"node": "s=etch1/pressure", "start": iso(t0 + n * 1_000_000), "end": iso(t0),
             "max": 7},
        ])
    raw, ints, backwards = first
    assert raw["pages"] == 3 and raw["status"] == ["Good", "Good", "Good"]
    assert [v["v"] for v in raw["values"]] == values
    assert [v["ts"] for v in raw["values"]] == [node_iso(t) for t in ts]
    assert [v["status"] for v in raw["values"]] == [
        "UncertainLastUsableValue" if i == 7 else "Good" for i in range(n)]
    assert [v["v"] for v in ints["values"]] == [4711, 4712]
    assert [v["v"] for v in backwards["values"]] == values[::-1]
    assert backwards["pages"] == 36  # 250 values, 7 per page

    async with running_sink(tmp_path, reg, gw, history=history()) as sink:
        t1 = await recording_ms(sink)
        sink.publish(SampleBatch([pressure] * 3, [t1, t1 + 1_000_000, t1 + 2_000_000],
                                 [100.0, 101.0, 102.0]), [])
        await stored(sink, 3)
        (gap_read,) = await history_read(sink, tmp_path, [
            {"node": "s=etch1/pressure", "start": iso(t0), "end": iso(t1 + 2_000_000)}])
    got = gap_read["values"]
    markers = [i for i, v in enumerate(got) if v["status"] == "BadDataLost"]
    assert len(markers) == 1, [v for v in got if v["status"] != "Good"][:5]
    mark = got[markers[0]]
    assert mark["v"] is None
    assert node_iso(ts[-1]) <= mark["ts"] <= node_iso(t1)
    assert [v["v"] for v in got[:markers[0]]] == values
    assert [v["v"] for v in got[markers[0] + 1:]] == [100.0, 101.0, 102.0]


async def test_event_history_of_trips_spc_and_operator_actions(tmp_path: Path) -> None:
    """The gateway's records read back as the Server object's event history (standard
    fields and record fields by name), paged by continuation points; a continuation point
    the server never handed out is refused with BadContinuationPointInvalid."""
    gw = FakeGateway()
    async with running_sink(tmp_path, demo_registry(), gw,
                            history=history(max_values_per_read=2)) as sink:
        t0 = await recording_ms(sink)
        trip = InterlockTrip(ts_ns=t0, interlock="etch_overtemp", tag="etch1/chamber_temp",
                             condition="> 188", value=191.5, limit=188.0, action="stop",
                             action_ok=True, reaction_ns=1_500_000)
        spc = SpcViolation(ts_ns=t0 + 1_000_000, tag="etch1/pressure", rule="we1",
                           value=14.2, center=12.0, sigma=0.5, alarm=True)
        action = OperatorAction(ts_ns=t0 + 2_000_000, origin="opcua", user="alice",
                                action="reset", target="etch_overtemp", ok=True,
                                comment="chiller fixed")
        sink.publish(SampleBatch.empty(), [trip, spc, action])
        await stored(sink, 0, 3)
        fields = ["EventId", "SourceName", "Message", "Severity", "Time", "Interlock", "Value",
                  "ActionOk", "User", "Comment"]
        events, bad = await history_read(sink, tmp_path, [
            {"events": fields, "start": iso(t0), "end": iso(t0 + 3_000_000)},
            {"node": "s=etch1/pressure", "start": iso(t0), "end": iso(t0 + 3_000_000),
             "cp": "not a continuation point"},
        ])
    assert events["pages"] == 2
    got = events["events"]
    assert [e["SourceName"] for e in got] == ["etch_overtemp", "etch1/pressure", "etch_overtemp"]
    assert [e["Severity"] for e in got] == [900, 700, 300]
    assert [e["Time"] for e in got] == [node_iso(t0), node_iso(t0 + 1_000_000),
                                        node_iso(t0 + 2_000_000)]
    assert got[0]["Interlock"] == "etch_overtemp" and got[0]["Value"] == 191.5
    assert got[0]["ActionOk"] is True and "tripped" in got[0]["Message"]
    assert got[2]["User"] == "alice" and got[2]["Comment"] == "chiller fixed"
    assert len({e["EventId"] for e in got}) == 3
    assert bad["status"] == ["BadContinuationPointInvalid"]


def severity_at_least(n: int) -> dict[str, Any]:
    return {"op": "GreaterThanOrEqual", "args": [{"field": "Severity"},
                                                 {"lit": n, "type": "UInt16"}]}


async def test_event_history_applies_the_where_clause_or_refuses_it(tmp_path: Path) -> None:
    """An event HistoryRead with a WhereClause (as an alarm-history view sends it) gets only
    the events it selects: OfType(AlarmConditionType) with Severity >= 700, an Or with a
    Not and an audit type, a Time window, SourceName equality; an operator the server
    cannot apply (Like) is refused with BadFilterOperatorUnsupported, not answered with
    every event."""
    gw = FakeGateway()
    async with running_sink(tmp_path, demo_registry(), gw, history=history()) as sink:
        t0 = await recording_ms(sink)
        ms = 1_000_000
        records = [
            InterlockTrip(ts_ns=t0, interlock="etch_overtemp", tag="etch1/chamber_temp",
                          condition="high", value=191.5, limit=188.0, action="stop",
                          action_ok=True, reaction_ns=1_500_000),
            SpcViolation(ts_ns=t0 + ms, tag="etch1/pressure", rule="we1", value=14.2,
                         center=12.0, sigma=0.5, alarm=True),
            SpcViolation(ts_ns=t0 + 2 * ms, tag="etch1/pressure", rule="we2", value=13.1,
                         center=12.0, sigma=0.5, alarm=False),
            HealthAlert(ts_ns=t0 + 3 * ms, motor="stf/motor1", health=0.4, ttf_s=900.0,
                        reason="health 0.40 below 0.5"),
            OperatorAction(ts_ns=t0 + 4 * ms, origin="opcua", user="alice",
                           action="acknowledge", target="interlock:etch_overtemp", ok=True),
            Quarantine(ts_ns=t0 + 5 * ms, source="mqtt", reason="not JSON"),
        ]
        sink.publish(SampleBatch.empty(), records)
        await stored(sink, 0, len(records))
        fields = ["EventType", "SourceName", "Severity", "Time"]
        window = {"events": fields, "start": iso(t0), "end": iso(t0 + 6 * ms)}
        alarms, low, timed, named, like, everything = await history_read(sink, tmp_path, [
            window | {"where": {"op": "And", "args": [{"ofType": "i=2915"},
                                                      severity_at_least(700)]}},
            window | {"where": {"op": "Or", "args": [
                {"ofType": "i=2790"},
                {"op": "Not", "args": [severity_at_least(500)]}]}},
            window | {"where": {"op": "And", "args": [
                {"op": "GreaterThanOrEqual", "args": [
                    {"field": "Time"}, {"lit": iso(t0 + 2 * ms), "type": "DateTime"}]},
                {"op": "LessThan", "args": [
                    {"field": "Time"}, {"lit": iso(t0 + 4 * ms), "type": "DateTime"}]}]}},
            window | {"where": {"op": "Equals", "args": [
                {"field": "SourceName"}, {"lit": "etch_overtemp", "type": "String"}]}},
            window | {"where": {"op": "Like", "args": [
                {"field": "SourceName"}, {"lit": "etch%", "type": "String"}]}},
            window,
        ])
    assert [(e["EventType"], e["Severity"]) for e in alarms["events"]] == [
        ("ns=0;i=9482", 900), ("ns=0;i=10637", 700)]
    assert [(e["EventType"], e["Severity"]) for e in low["events"]] == [
        ("ns=0;i=2041", 400), ("ns=0;i=8944", 300)]
    assert [e["Time"] for e in timed["events"]] == [node_iso(t0 + 2 * ms),
                                                    node_iso(t0 + 3 * ms)]
    assert [e["Severity"] for e in named["events"]] == [900]
    assert like["status"] == ["BadFilterOperatorUnsupported"] and like["events"] == []
    assert len(everything["events"]) == len(records)
