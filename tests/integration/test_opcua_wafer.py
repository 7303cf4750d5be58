"""A tool's last wafer over OPC-UA, seen by an independent client (node-opcua): the
digital thread's last step per tool under Wafers/<tool>/LastWafer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from asyncua import ua
from opcua_fixtures import NS_URI, FakeGateway, demo_registry, running_sink, until
from peers import run_node_client

from edge.model import InterlockTrip, SampleBatch, TagSummary, WaferStep

pytestmark = pytest.mark.peer("node")
S = 1_000_000_000
T0 = 1_800_000_000 * S
LAST = "s=_wafers/etch1/LastWafer"


def _step(slot: int, start_s: int, trips: int) -> WaferStep:
    return WaferStep(
        ts_ns=T0 + (start_s + 15) * S, tool="etch1", lot="4711", wafer=f"4711.{slot:02d}",
        recipe="1", start_ns=T0 + start_s * S, end_ns=T0 + (start_s + 15) * S,
        first_seen_ns=T0 + start_s * S,
        telemetry=[TagSummary(tag="etch1/chamber_temp", n=150, min=179.5, mean=181.25,
                              max=190.5, last=180.0, bad=2),
                   TagSummary(tag="etch1/pressure", n=0, min=math.nan, mean=math.nan,
                              max=math.nan, last=math.nan, bad=150)],
        trips=[InterlockTrip(ts_ns=T0 + (start_s + 5) * S, interlock="etch1_overtemp",
                             tag="etch1/chamber_temp", condition="high", value=190.5,
                             limit=188.0, action="stop", action_ok=True, reaction_ns=1)
               for _ in range(trips)])


async def test_the_last_wafer_of_each_tool_is_an_object_a_client_reads(tmp_path: Path) -> None:
    """After two wafers left the etch tool, a node-opcua client browses Wafers/etch1 and
    reads the last one: id, lot, recipe, start and end as DateTime, its trips as a count
    and in words, the per-tag summary of its step (a tag with only Bad samples reads
    BadNoData, not a Good 0), and how many steps the tool made."""
    async with running_sink(tmp_path, demo_registry(), FakeGateway()) as sink:
        sink.publish(SampleBatch.empty(), [_step(1, 0, 0)])
        sink.publish(SampleBatch.empty(), [_step(2, 15, 1)])
        server = sink.server
        assert server is not None

        def wafer() -> object:
            dv = server.read_attribute_value(ua.NodeId("_wafers/etch1/LastWafer/WaferId",
                                                       sink.idx))
            return None if dv.Value is None else dv.Value.Value

        await until(lambda: wafer() == "4711.02", 10.0)
        temp, pres = f"{LAST}/Telemetry/etch1.chamber_temp", f"{LAST}/Telemetry/etch1.pressure"
        out = await run_node_client("opcua_client.js", {
            "endpoint": sink.endpoint, "pki": str(tmp_path / "client-pki"),
            "security": "none", "ns_uri": NS_URI, "steps": [
                {"browse": True, "depth": 5},
                {"read": [f"{LAST}/WaferId", f"{LAST}/Lot", f"{LAST}/Recipe",
                          f"{LAST}/Start", f"{LAST}/End", f"{LAST}/DurationS",
                          f"{LAST}/Trips", f"{LAST}/TripDetails", f"{LAST}/Quarantines",
                          "s=_wafers/etch1/StepCount", f"{temp}/Mean", f"{temp}/Max",
                          f"{temp}/BadSamples", f"{pres}/Mean"]}]})
    assert out["ok"], out
    browse, read = out["results"]
    names = {n["browseName"] for n in browse["browse"]}
    assert {"Wafers", "etch1", "LastWafer", "Telemetry", "etch1.chamber_temp", "WaferId",
            "TripDetails"} <= names
    got = {r["nodeId"].split("/", 3)[-1]: r for r in read["read"]}
    assert [got[k]["value"] for k in ("WaferId", "Lot", "Recipe", "DurationS", "Trips",
                                      "Quarantines")] == ["4711.02", "4711", "1", 15.0, 1, 0]
    assert got["Start"]["value"] == "2027-01-15T08:00:15.000Z"
    assert got["Start"]["dataType"] == "ns=0;i=13"  # DateTime
    assert got["End"]["value"] == "2027-01-15T08:00:30.000Z"
    assert got["Trips"]["dataType"] == "ns=0;i=7"  # UInt32
    assert got["TripDetails"]["value"] == \
        "etch1_overtemp: etch1/chamber_temp high 190.5 (limit 188)"
    assert got["StepCount"]["value"] == 2
    by_id = {r["nodeId"]: r for r in read["read"]}
    assert by_id[f"{temp}/Mean"]["value"] == 181.25
    assert by_id[f"{temp}/Max"]["value"] == 190.5
    assert by_id[f"{temp}/BadSamples"]["value"] == 2
    assert by_id[f"{pres}/Mean"]["status"] == "BadNoData"
