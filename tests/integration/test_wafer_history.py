"""A wafer's history: the hw_sim MES answers it from what it received, the CLI prints it."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from edge.cli import main
from edge.model import InterlockTrip, TagSummary, WaferStep, json_dumps, record_to_builtins
from hw_sim.mes import MesServer

S = 1_000_000_000


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


T0 = 1_800_000_000 * S


def _step(wafer: str, tool: str, start_s: int, trips: int = 0) -> WaferStep:
    trip = InterlockTrip(ts_ns=T0 + (start_s + 1) * S, interlock="etch1_overtemp",
                         tag="etch1/chamber_temp", condition="high", value=190.5, limit=188.0,
                         action="etch1:stop", action_ok=True, reaction_ns=2_000_000)
    return WaferStep(
        ts_ns=T0 + (start_s + 10) * S, tool=tool, lot=wafer.split(".", maxsplit=1)[0], wafer=wafer,
        recipe="1", start_ns=T0 + start_s * S, end_ns=T0 + (start_s + 10) * S,
        first_seen_ns=T0 + start_s * S,
        telemetry=[TagSummary("etch1/chamber_temp", 100, 178.5, 180.0, 190.5, 180.2, 2),
                   TagSummary("etch1/rf_power", 0, math.nan, math.nan, math.nan, math.nan, 3)],
        trips=[trip] * trips)


@pytest.fixture
async def mes(tmp_path: Path) -> AsyncIterator[MesServer]:
    server = MesServer(tmp_path / "mes.sqlite", seed=1)
    await server.start()
    steps = [_step("4711.03", "etch1", 20, trips=1), _step("4711.04", "etch1", 30),
             _step("4711.03", "clean1", 0)]
    body = {"gateway_id": "gw", "records": [record_to_builtins(s, f"gw-1-{i}")
                                            for i, s in enumerate(steps)]}
    async with httpx.AsyncClient(timeout=5) as c:
        r = await c.post(f"http://127.0.0.1:{server.port}/api/v1/records",
                         content=json_dumps(body))  # as the MES sink does: NaN is null
        assert r.status_code == 201, r.text
    yield server
    await server.close()


async def test_mes_answers_a_wafers_steps_in_time_order(mes: MesServer) -> None:
    """GET /api/v1/wafers/4711.03/history gives that wafer's two steps, oldest first;
    an unknown wafer is a 404 naming it."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{mes.port}", timeout=5) as c:
        r = await c.get("/api/v1/wafers/4711.03/history")
        assert r.status_code == 200
        doc = r.json()
        assert doc["wafer"] == "4711.03"
        assert [s["tool"] for s in doc["steps"]] == ["clean1", "etch1"]
        assert doc["steps"][1]["trips"][0]["interlock"] == "etch1_overtemp"
        assert doc["steps"][1]["telemetry"][1]["min"] is None  # NaN: no good sample
        r = await c.get("/api/v1/wafers/9999.01/history")
        assert r.status_code == 404 and "9999.01" in r.json()["error"]


async def test_cli_prints_the_history_for_an_operator(mes: MesServer,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``edge-gateway wafer-history 4711.03 --mes URL`` prints each step with its tool,
    times, telemetry and trips; exit 0."""
    url = f"http://127.0.0.1:{mes.port}"
    rc = await asyncio.to_thread(main, ["wafer-history", "4711.03", "--mes", url])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "wafer 4711.03: 2 step(s)" in out
    assert "etch1  lot 4711  recipe 1  2027-01-15 08:00:20.000 -> 2027-01-15 08:00:30.000" in out
    assert "etch1_overtemp: etch1/chamber_temp high value=190.500 limit=188.000" in out
    assert "etch1/rf_power" in out and "interlock trips: none" in out


async def test_cli_errors_say_what_is_wrong(mes: MesServer, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown wafer and an MES that is down give one clear line each and exit 1; a
    config without an MES sink is a configuration error (exit 2)."""
    url = f"http://127.0.0.1:{mes.port}"
    rc = await asyncio.to_thread(main, ["wafer-history", "4711.99", "--mes", url])
    err = capsys.readouterr().err
    assert rc == 1 and f"the MES at {url} has no step of wafer '4711.99'" in err
    down = f"http://127.0.0.1:{_closed_port()}"
    rc = await asyncio.to_thread(main, ["wafer-history", "4711.03", "--mes", down])
    err = capsys.readouterr().err
    assert rc == 1 and f"the MES at {down} is not reachable" in err
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[gateway]\nid = "gw"\nstate_dir = "%s"\n' % (tmp_path / "st"))
    rc = await asyncio.to_thread(main, ["wafer-history", "4711.03", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert rc == 2 and 'no [[sinks]] type = "mes" in the config' in err
