"""OEE and energy leave a real gateway run: per-shift reports at the MES, rolling values
as variables of the OPC-UA server (one-minute shifts, as in the dashboard test's run)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.ua.uaerrors import UaStatusCodeError

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grafana_run import Run, gateway_run
from peers import free_port


def _mes_records(run: Run, kind: str) -> list[dict[str, Any]]:
    db = run.state / "mes.sqlite"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT body FROM records WHERE type = ?", (kind,)).fetchall()
    except sqlite3.OperationalError:  # the MES has not made its tables yet
        return []
    finally:
        con.close()
    return [json.loads(r[0]) for r in rows]


async def _read(url: str, names: list[str]) -> dict[str, float]:
    """The first Good value of each node (bounded: 30 s)."""
    got: dict[str, float] = {}
    async with Client(url, timeout=10) as client:
        idx = await client.get_namespace_index("urn:edge-gateway:tags")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(got) < len(names):
            for name in names:
                if name in got:
                    continue
                try:
                    dv = await client.get_node(ua.NodeId(name, idx)).read_data_value()
                except UaStatusCodeError:
                    continue
                if dv.StatusCode is not None and dv.StatusCode.is_good() and \
                        dv.Value is not None and dv.Value.Value is not None:
                    got[name] = float(dv.Value.Value)
            await asyncio.sleep(0.5)
    return got


@pytest.mark.peer("influxd")
def test_shift_reports_reach_the_mes_and_rolling_values_the_opcua_server(
        tmp_path: Path) -> None:
    """A one-minute shift closes: the MES holds an oee_report per tool and for the line
    and an energy_report per motor, station and line; the OPC-UA server serves the rolling
    OEE factors and energies as Good values."""
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/edge"
    sink = f'\n[[sinks]]\ntype = "opcua"\nname = "opcua"\nendpoint = "{url}"\nprofile = "demo"\n'

    def ready(run: Run) -> bool:
        return bool(_mes_records(run, "oee_report")) and bool(
            _mes_records(run, "energy_report"))

    with gateway_run(tmp_path, ready, timeout=150.0, extra_toml=sink) as run:
        oee = _mes_records(run, "oee_report")
        energy = _mes_records(run, "energy_report")
        values = asyncio.run(_read(url, ["etch1/availability", "fab/oee", "cmm_cell/quality",
                                         "stf/energy_kwh", "conveyor_belt/energy_kwh"]))
    shift = oee[0]["shift"]
    assert {(r["scope"], r["name"]) for r in oee if r["shift"] == shift} == {
        ("tool", "etch1"), ("tool", "cmm_cell"), ("line", "fab")}
    first = [r for r in energy if r["shift"] == energy[0]["shift"]]
    assert {(r["scope"], r["name"]) for r in first} >= {
        ("motor", "conveyor_belt"), ("station", "conveyor"), ("line", "stf")}
    assert all(r["kwh"] > 0 and r["measured_kwh"] > 0 for r in first)
    assert all(0 <= r["availability"] <= 1 for r in oee if r["planned_s"] > 0)
    assert set(values) == {"etch1/availability", "fab/oee", "cmm_cell/quality",
                           "stf/energy_kwh", "conveyor_belt/energy_kwh"}, values
    assert values["stf/energy_kwh"] > 0
