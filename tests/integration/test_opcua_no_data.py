"""The gateway objects of the OPC-UA server never read Good without a value."""

from __future__ import annotations

from pathlib import Path

import msgspec
from asyncua import ua
from opcua_fixtures import (
    FakeGateway,
    demo_registry,
    running_sink,
    server_mode,  # noqa: F401  (every test in both server modes)
    until,
)


async def test_nan_and_dropped_values_read_bad_no_data(tmp_path: Path) -> None:
    """An interlock that never tripped has no trip value: it reads BadNoData, not a Good
    NaN; its last value reads Good; a diagnostics value the document drops turns
    BadNoData instead of keeping its old value with status Good."""
    gw = FakeGateway()
    async with running_sink(tmp_path, demo_registry(), gw) as sink:
        server = sink.server
        assert server is not None

        def read(path: str) -> ua.DataValue:
            dv: ua.DataValue = server.read_attribute_value(ua.NodeId(path, sink.idx))
            return dv

        def status(path: str) -> str:
            code = read(path).StatusCode
            return "Good" if code is None else code.name

        trip_value = "_interlocks/etch_overtemp/trip_value"
        await until(lambda: status(trip_value) == "BadNoData", 10.0)
        assert status("_interlocks/etch_overtemp/last_value") == "Good"
        assert read("_interlocks/etch_overtemp/last_value").Value.Value == 120.0

        rates = "_diagnostics/rates/ingest_samples_per_s"
        await until(lambda: status(rates) == "Good", 10.0)
        gw.status = msgspec.structs.replace(
            gw.status, rates={"ingest_samples_per_s": None})  # type: ignore[dict-item]
        await until(lambda: status(rates) == "BadNoData", 10.0)
