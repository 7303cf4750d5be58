"""`edge-gateway demo`: one command brings up plant, MES and gateway, and it works."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from asyncua import Client, ua
from asyncua.ua.uaerrors import UaStatusCodeError

DEADLINE_S = 90


def _endpoints(proc: subprocess.Popen[str]) -> dict[str, str]:
    """Read the printed endpoint block (up to the 'gateway log' line)."""
    assert proc.stdout is not None
    found: dict[str, str] = {}
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.match(r"OPC-UA server\s+(opc\.tcp://\S+)", line):
            found["opcua"] = m.group(1)
        if m := re.match(r"MES \(mock\)\s+(http://\S+)", line):
            found["mes"] = m.group(1)
        if m := re.match(r"metrics\s+(http://\S+)", line):
            found["metrics"] = m.group(1)
        if m := re.match(r"web status page\s+(http://\S+)", line):
            found["web"] = m.group(1)
        if line.startswith("gateway log"):
            return found
    raise AssertionError(f"demo printed no endpoints; got {found}")


async def _read_live_value(url: str) -> tuple[float, ua.DataValue]:
    async with Client(url, timeout=10) as client:
        idx = await client.get_namespace_index("urn:edge-gateway:tags")
        node = client.get_node(ua.NodeId("etch1/chamber_temp", idx))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                dv = await node.read_data_value()
            except UaStatusCodeError:  # a Bad value (e.g. one Modbus timeout) raises here
                await asyncio.sleep(0.2)
                continue
            good = dv.StatusCode is not None and dv.StatusCode.is_good()
            if good and dv.Value is not None and dv.Value.Value is not None:
                return float(dv.Value.Value), dv
            await asyncio.sleep(0.2)
    raise AssertionError("no good chamber temperature on the OPC-UA server")


def test_demo_delivers_to_mes_and_opcua(tmp_path: Path) -> None:
    """The demo serves live etch values over OPC-UA and its web page, CMM measurements reach
    the MES, its metrics endpoint shows the interlock reaction histogram, and Ctrl-C
    (SIGINT) stops it cleanly with exit 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "demo", "--quiet", "--opcua-port", "0",
         "--state-dir", str(tmp_path / "demo"), "--seconds", str(DEADLINE_S)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        _check_demo(proc)
    except AssertionError as exc:
        log = tmp_path / "demo" / "gateway.log"
        tail = log.read_text().splitlines()[-30:] if log.exists() else ["(no log)"]
        raise AssertionError(f"{exc}\n--- gateway.log tail ---\n" + "\n".join(tail)) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _check_demo(proc: subprocess.Popen[str]) -> None:
    ep = _endpoints(proc)
    value, dv = asyncio.run(_read_live_value(ep["opcua"]))
    assert 20.0 < value < 400.0
    assert dv.SourceTimestamp is not None
    counts_url = ep["mes"]
    deadline = time.monotonic() + 60
    measurements = 0
    while time.monotonic() < deadline and measurements == 0:
        counts = httpx.get(counts_url, timeout=5).json()
        measurements = counts.get("by_type", {}).get("measurement", 0)
        time.sleep(0.5)
    assert measurements > 0, f"no measurement reached the MES: {counts}"
    metrics = httpx.get(ep["metrics"], timeout=5).text
    assert "edge_interlock_reaction_seconds" in metrics
    status = httpx.get(ep["web"] + "api/status", timeout=5).json()
    assert "etch1_overtemp" in status["interlocks"] and status["ready"] is True
    tags = httpx.get(ep["web"] + "api/tags", params={"q": "etch1/chamber_temp"}, timeout=5)
    assert 20.0 < tags.json()["tags"][0]["value"] < 400.0
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
