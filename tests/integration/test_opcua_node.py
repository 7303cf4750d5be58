"""The OPC-UA server seen by an independent client (node-opcua), demo profile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest
from asyncua import ua
from opcua_fixtures import (
    NS_URI,
    FakeGateway,
    demo_registry,
    running_sink,
    server_mode,  # noqa: F401  (every test in both server modes)
    until,
)
from peers import node_client_result, run_node_client, spawn_node_client, wait_stderr_line

from edge.model import InterlockTrip, Quality, SampleBatch, TagRegistry
from edge.protocols.opcua.variants import DTYPES

pytestmark = pytest.mark.peer("node")
TS0 = 1_700_000_000_000_000_000


def spec(sink_endpoint: str, tmp: Path, steps: list[dict[str, object]]) -> dict[str, object]:
    return {"endpoint": sink_endpoint, "pki": str(tmp / "client-pki"), "security": "none",
            "ns_uri": NS_URI, "steps": steps}


async def test_browse_read_values_with_units(tmp_path: Path) -> None:
    """A node-opcua client browses devices and tags, reads typed values with source
    timestamps and status codes, and reads EngineeringUnits of an AnalogItemType tag."""
    gw = FakeGateway()
    async with running_sink(tmp_path, demo_registry(), gw) as sink:
        sink.publish(SampleBatch(
            [0, 1, 2, 3, 4, 0], [TS0] * 6, [150.0, 12.5, 4711, 1, np.nan, 151.5],
            [0, int(Quality.UNCERTAIN_STALE), 0, 0, int(Quality.BAD_TIMEOUT), 0],
        ), [])
        await until(lambda: sink.ctx.metrics.snapshot().get("edge_opcua_updates_total", 0) >= 5)
        out = await run_node_client("opcua_client.js", spec(sink.endpoint, tmp_path, [
            {"browse": True, "depth": 4},
            {"read": ["s=etch1/chamber_temp", "s=etch1/pressure", "s=etch1/lot",
                      "s=etch1/stop_coil", "s=stf/motor1/current"]},
            {"eu": ["s=etch1/chamber_temp", "s=stf/motor1/current"]},
        ]))
    assert out["ok"], out
    browse, read, eu = (r for r in out["results"])
    names = {(n["browseName"], n["typeDefinition"]) for n in browse["browse"]}
    assert ("Devices", "ns=0;i=61") in names
    assert ("chamber_temp", "ns=0;i=2368") in names  # AnalogItemType
    assert {"etch1", "stf/motor1", "Interlocks", "Diagnostics"} <= {n[0] for n in names}
    values = {r["nodeId"]: r for r in read["read"]}
    temp = values["s=etch1/chamber_temp"]
    assert (temp["value"], temp["variantType"], temp["dataType"]) == (151.5, "Float", "ns=0;i=10")
    assert temp["status"] == "Good"
    assert temp["sourceTimestamp"] == "2023-11-14T22:13:20.000Z"
    assert values["s=etch1/pressure"]["status"] == "UncertainLastUsableValue"
    assert values["s=etch1/lot"]["value"] == 4711
    assert values["s=etch1/lot"]["dataType"] == "ns=0;i=6"  # Int32
    assert values["s=etch1/stop_coil"]["value"] is True
    assert values["s=stf/motor1/current"]["status"] == "BadTimeout"
    units = {e["nodeId"]: e["eu"] for e in eu["eu"]}
    assert units["s=etch1/chamber_temp"]["displayName"] == "°C"
    assert units["s=etch1/chamber_temp"]["unitId"] == 4408652  # UNECE "CEL"
    assert units["s=stf/motor1/current"]["displayName"] == "A"


async def test_subscription_receives_coalesced_updates(tmp_path: Path) -> None:
    """A subscribed client receives live updates; the last one it sees is the last value
    published, and a Bad quality arrives as its OPC-UA status code."""
    async with running_sink(tmp_path, demo_registry(), FakeGateway()) as sink:
        proc = await spawn_node_client("opcua_client.js", {
            **spec(sink.endpoint, tmp_path, [
                {"subscribe": ["s=etch1/chamber_temp", "s=stf/motor1/current"], "ms": 2500,
                 "publishing_ms": 50}]),
            "signal_ready": True,
        })
        await wait_stderr_line(proc, "SUBSCRIBED", 30)
        for i in range(20):
            sink.publish(SampleBatch([0, 0], [time.time_ns()] * 2, [100.0 + i, 100.5 + i]), [])
            await asyncio.sleep(0.05)
        sink.publish(SampleBatch([4], [time.time_ns()], [np.nan],
                                 [int(Quality.BAD_NOT_CONNECTED)]), [])
        out = await node_client_result(proc, 30)
    assert out["ok"], out
    sub = out["results"][0]["subscribe"]
    assert sub["count"] >= 10
    last = sub["last"]
    temp_key = next(k for k in last if "chamber_temp" in k)
    cur_key = next(k for k in last if "current" in k)
    assert last[temp_key] == {"value": 119.5, "status": "Good"}
    assert last[cur_key]["status"] == "BadCommunicationError"


async def test_reset_method_and_state_after_a_trip(tmp_path: Path) -> None:
    """Reset on an interlock object goes to the condition board and returns its answer; a
    trip record re-reads the status document at once: the interlock's status fields (one
    name each: ``trips``, no ``TripCount``) and its LastAction show the trip. Trips as
    alarm conditions: test_opcua_alarms.py."""
    gw = FakeGateway()
    async with running_sink(tmp_path, demo_registry(), gw) as sink:
        out = await run_node_client("opcua_client.js", spec(sink.endpoint, tmp_path, [
            {"call": {"object": "s=_interlocks/etch_overtemp",
                      "method": "s=_interlocks/etch_overtemp/Reset"}},
            {"read": ["s=_interlocks/etch_overtemp/state",
                      "s=_diagnostics/journal/mes/depth_points",
                      "s=_diagnostics/links/source:etch1",
                      "s=_diagnostics/rates/ingest_samples_per_s",
                      "s=_health/stf/motor1/health"]},
        ]))
        assert out["ok"], out
        assert out["results"][0]["call"] == {"status": "Good", "outputs": [True]}
        assert gw.resets == ["etch_overtemp"]
        assert [(a.origin, a.user, a.action, a.ok) for a in gw.actions] == [
            ("opcua", "anonymous", "reset", True)]
        read = [r["value"] for r in out["results"][1]["read"]]
        assert read == ["ok", 12.0, False, 1234.5, 0.93]

        server = sink.server
        assert server is not None
        il = gw.status.interlocks["etch_overtemp"]
        gw.status = msgspec.structs.replace(gw.status, interlocks={
            "etch_overtemp": msgspec.structs.replace(il, state="tripped", trips=1,
                                                     trip_value=191.25)})
        sink.publish(SampleBatch.empty(), [InterlockTrip(
            ts_ns=time.time_ns(), interlock="etch_overtemp", tag="etch1/chamber_temp",
            condition="high", value=191.25, limit=188.0, action="etch1:stop",
            action_ok=True, reaction_ns=800_000)])

        def value(name: str) -> object:
            dv = server.read_attribute_value(
                ua.NodeId(f"_interlocks/etch_overtemp/{name}", sink.idx))
            return None if dv.Value is None else dv.Value.Value

        await until(lambda: value("trips") == 1 and value("state") == "tripped", 5.0)
        assert value("LastAction") == "etch1:stop (sent)"
        assert ua.NodeId("_interlocks/etch_overtemp/TripCount", sink.idx) \
            not in server.iserver.aspace


async def test_five_thousand_tags_have_their_data_types(tmp_path: Path) -> None:
    """5,000 tags over 50 devices all exist after start-up with the DataType of their
    dtype, and the ones a client reads answer with that type."""
    reg = TagRegistry()
    dtypes = list(DTYPES)
    for d in range(50):
        for t in range(100):
            reg.add(f"dev{d:02d}", f"tag{t:03d}", unit="bar", dtype=dtypes[(d + t) % len(dtypes)],
                    low=0, high=10)
    async with running_sink(tmp_path, reg, FakeGateway()) as sink:
        server = sink.server
        assert server is not None
        for tag in reg:
            dv = server.read_attribute_value(ua.NodeId(tag.key, sink.idx), ua.AttributeIds.DataType)
            assert dv.Value.Value == DTYPES[tag.dtype].data_type, tag.key
        sink.publish(SampleBatch(np.arange(5000), np.full(5000, TS0), np.ones(5000)), [])
        await until(lambda: sink.ctx.metrics.snapshot().get("edge_opcua_updates_total", 0)
                    >= 5000, timeout=20)
        out = await run_node_client("opcua_client.js", spec(sink.endpoint, tmp_path, [
            {"read": [f"s={t.key}" for t in list(reg)[:16]]}]))
    assert out["ok"], out
    for r, tag in zip(out["results"][0]["read"], list(reg)[:16], strict=True):
        assert r["dataType"] == f"ns=0;i={DTYPES[tag.dtype].data_type.Identifier}"
        assert r["value"] in (1, True, 1.0), r
        assert r["status"] == "Good"


async def test_restart_from_cached_standard_space_serves_every_tag(tmp_path: Path) -> None:
    """A second start (asyncua's standard address space loaded from the cache folder)
    serves the standard Server object and every tag, reading BadWaitingForInitialData
    until its first sample."""
    async with running_sink(tmp_path, demo_registry(), FakeGateway()):
        pass
    assert list((tmp_path / "state" / "cache" / "opcua").glob("*.pickle"))
    async with running_sink(tmp_path, demo_registry(), FakeGateway()) as sink:
        out = await run_node_client("opcua_client.js", spec(sink.endpoint, tmp_path, [
            {"browse": True, "depth": 2},
            {"read": [f"s={t.key}" for t in sink.ctx.tags]},
        ]))
    assert out["ok"], out
    browse, read = out["results"]
    names = {n["browseName"] for n in browse["browse"]}
    assert {"Server", "ServerStatus", "NamespaceArray", "Devices", "etch1"} <= names
    assert len(read["read"]) == len(sink.ctx.tags)
    assert {r["status"] for r in read["read"]} == {"BadWaitingForInitialData"}
