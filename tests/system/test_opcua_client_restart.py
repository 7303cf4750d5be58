"""The daemon reading a PLC over OPC-UA (the node-opcua simulated PLC) through a PLC
restart: tags Bad with a reason everywhere a user looks, then Good again, without the
daemon or the source being restarted."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from harness import REPO, Proc, Stack, stack, wait_for, wait_port

from edge.app import Gateway as App
from edge.config import load
from edge.model import Quality, SampleBatch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import NODE_DIR, free_port, node_opcua_modules

pytestmark = [pytest.mark.timeout(300)]

KEEPALIVE_S = 1.0
TAG = "plc/counter"
BAD_NC = int(Quality.BAD_NOT_CONNECTED)


def plc_proc(tmp: Path, port: int) -> Proc:
    """The simulated PLC as a plain subprocess (restartable on the same port)."""
    workdir = tmp / "plc"
    workdir.mkdir(exist_ok=True)
    args = json.dumps({"port": port, "root": str(workdir), "interval_ms": 100})
    return Proc("plc", ["node", str(NODE_DIR / "opcua_server.js"), args], workdir,
                env={"NODE_PATH": str(node_opcua_modules())})


def start_plc(plc: Proc, port: int) -> None:
    plc.start()  # the log is appended across starts: one READY line per start
    wait_for("the PLC's READY line",
             lambda: plc.log.read_text(errors="replace").count(f"READY {port}") == plc.starts,
             120, interval=0.1, logs=plc.tail)
    wait_port(port)


def served(endpoint: str) -> tuple[str, float]:
    """(status name, value) of the counter tag on our own OPC-UA server."""
    async def go() -> tuple[str, float]:
        async with Client(endpoint, timeout=10) as client:
            idx = await client.get_namespace_index("urn:edge-gateway:tags")
            dv = await client.get_node(ua.NodeId(TAG, idx)).read_data_value(
                raise_on_bad_status=False)
            name: str = ua.status_codes.get_name_and_doc(dv.StatusCode.value)[0]
            value = dv.Value.Value if dv.Value is not None else None
            return name, float(value) if isinstance(value, (int, float)) else float("nan")
    return asyncio.run(asyncio.wait_for(go(), 30))


def status_json(cfg_path: Path) -> dict[str, Any]:
    """``edge-gateway status --json``, as an operator runs it."""
    out = subprocess.run([sys.executable, "-m", "edge", "status", "--json", "--config",
                          str(cfg_path)], capture_output=True, timeout=60, check=True,
                         cwd=REPO, env=os.environ)
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def journal_qualities(state_dir: Path, tag_id: int) -> list[int]:
    """The counter's qualities in the journal, in journal order."""
    db = sqlite3.connect(f"file:{state_dir / 'journal.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT payload FROM entries WHERE kind = 0 ORDER BY seq").fetchall()
    finally:
        db.close()
    out: list[int] = []
    for (payload,) in rows:
        b = SampleBatch.from_bytes(bytes(payload))
        out.extend(int(q) for q in b.quality[b.tag_id == tag_id])
    return out


def test_plc_restart_turns_tags_bad_with_a_reason_then_good_without_a_daemon_restart(
        tmp_path: Path) -> None:
    """Killing the PLC makes the counter Bad (BadCommunicationError) on our OPC-UA server,
    the source's link down in `status --json` and a bad_not_connected sample in the
    journal, within two keepalives; restarting the PLC brings Good values back on all
    three with the same daemon process and no restart of the source; the reconnect
    attempts meanwhile do not flood the log."""
    port = free_port()
    plc = plc_proc(tmp_path, port)
    try:
        start_plc(plc, port)
        with stack(tmp_path, mqtt=False, etch=False) as st:
            _run(st, plc, port)
    finally:
        plc.kill9()


def _run(st: Stack, plc: Proc, port: int) -> None:
    # A durable sink that takes samples and never acks them keeps them in the journal
    # (samples no sink claims are deleted): InfluxDB on a port nobody listens on.
    cfg = st.gateway_config(sources=(), interlock=False,
                            influx=f"http://127.0.0.1:{free_port()}")
    cfg["sources"].append({
        "type": "opcua", "name": "plc", "endpoint": f"opc.tcp://127.0.0.1:{port}",
        "keepalive_s": KEEPALIVE_S, "backoff_max_s": 1.0, "timeout_s": 2.0,
        "groups": [{"name": "fast", "publishing_interval_ms": 100,
                    "sampling_interval_ms": 50, "tags": [
                        {"name": "counter", "node_id": "ns=1;s=PLC.Counter", "type": "int32"},
                        {"name": "temp", "node_id": "ns=1;s=PLC.Temp", "unit": "degC"}]}],
    })
    gw = st.make_gateway(cfg)
    gw.start(ready_timeout=120)
    app = App(load(gw.cfg_path))
    app.check()
    tag_id = app.tags.id_of(TAG)
    endpoint = st.opcua_endpoint

    wait_for("Good counter values on our OPC-UA server",
             lambda: served(endpoint)[0] == "Good", 60, interval=0.5, logs=gw.tail)
    assert status_json(gw.cfg_path)["links"]["source:plc"] is True
    pid = gw.pid

    plc.kill9()
    killed = time.monotonic()
    wait_for("the counter Bad on our OPC-UA server",
             lambda: served(endpoint)[0] != "Good", 30, interval=0.1, logs=gw.tail)
    took = time.monotonic() - killed
    status, value = served(endpoint)
    assert status == "BadCommunicationError" and value != value  # NaN: no frozen value
    assert took <= 2 * KEEPALIVE_S + 3.0, took  # + one read of our server, loaded host
    doc = status_json(gw.cfg_path)
    assert doc["links"]["source:plc"] is False
    assert doc["components"]["source:plc"]["running"] is True
    wait_for("a bad_not_connected sample in the journal",
             lambda: BAD_NC in journal_qualities(gw.state_dir, tag_id), 20, logs=gw.tail)
    missing = gw.events("opcua data missing")
    assert len(missing) == 1 and missing[0]["reason"]

    start_plc(plc, port)
    wait_for("Good counter values again on our OPC-UA server",
             lambda: served(endpoint)[0] == "Good", 60, interval=0.5, logs=gw.tail)
    doc = status_json(gw.cfg_path)
    assert doc["links"]["source:plc"] is True
    assert doc["components"]["source:plc"]["restarts"] == 0
    qualities = journal_qualities(gw.state_dir, tag_id)
    assert qualities[-1] == int(Quality.GOOD) and BAD_NC in qualities
    assert qualities.index(BAD_NC) < len(qualities) - 1
    assert gw.pid == pid and gw.alive
    assert len(gw.events("opcua data flowing again")) == 1
    # the outage is told once, not once per reconnect attempt (asyncua's disconnect of a
    # session that never opened warned every attempt)
    assert gw.tail(10**7).count("close_secure_channel was called") <= 1
