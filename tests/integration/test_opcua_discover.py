"""``edge-gateway discover`` against an independent server: node-opcua as a simulated PLC
(tests/node/opcua_server.js), over loopback."""

from __future__ import annotations

import asyncio
import os
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from edge.config import load

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from opcua_client_peers import GOOD, Collector, build, running, until
from peers import NodeOpcUaServer, free_port, start_node_opcua_server

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NodeOpcUaServer]:
    server = await start_node_opcua_server(tmp_path_factory.mktemp("plc"), extra=3)
    try:
        yield server
    finally:
        await server.kill()


async def discover(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", "discover", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_discovered_config_passes_check_config_and_reads_the_plc(
        plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """The printed snippet is a config check-config accepts as it is: every readable
    variable with our type (enumerations and strings as text), the ones the source cannot
    read listed with the reason; the source built from it receives Good values."""
    rc, out, err = await discover(plc.endpoint, "--name", "press")
    assert rc == 0, err
    path = tmp_path / "discovered.toml"
    path.write_text(out)
    cfg = load(path)  # what check-config does
    (source,) = cfg.sources
    tags = {t.node_id: t for g in source.groups for t in g.tags}  # type: ignore[attr-defined]
    assert {n: t.type for n, t in tags.items() if n.endswith(("Temp", "Counter", "Flag",
            "Text", "Mode"))} == {"ns=1;s=PLC.Temp": "float64", "ns=1;s=PLC.Counter": "int32",
                                 "ns=1;s=PLC.Flag": "bool", "ns=1;s=PLC.Text": "text",
                                 "ns=1;s=PLC.Mode": "text"}
    assert {f"ns=1;s=PLC.V{i}" for i in range(3)} <= set(tags)
    assert "PLC/Array (ns=1;s=PLC.Array): an array" in out
    assert "PLC/Morph (ns=1;s=PLC.Morph): BaseDataType" in out
    assert "None / None: anonymous" in out and "Basic256Sha256 / SignAndEncrypt" in out
    assert err == ""

    raw = tomllib.loads(out)["sources"][0]
    raw.pop("type")
    source_, registry = build(raw, tmp_path / "state")
    emit = Collector()
    temp = registry.id_of("press/PLC.Temp")
    async with running(source_, emit):
        await until(lambda: any(q == GOOD for _, _, q in emit.of(temp)), 60,
                    "Good values of the discovered tags")


async def test_unreachable_server_and_refused_login_are_one_line_errors(
        tmp_path: Path) -> None:
    """No server: exit 1 and one line naming the endpoint. A server that refuses the
    user: exit 1 and one line naming the security and the user, never the password."""
    dead = f"opc.tcp://127.0.0.1:{free_port()}"
    rc, out, err = await discover(dead, "--timeout", "2")
    assert rc == 1 and out == ""
    assert err.startswith(f"edge-gateway: cannot reach {dead}") and err.count("\n") == 1, err

    server = await start_node_opcua_server(tmp_path / "srv", user="op", password="s3cret")
    try:
        rc, out, err = await discover(server.endpoint, "--user", "op", "--password-env",
                                      "PLC_PW", env={"PLC_PW": "guess"})
        assert rc == 1 and out == ""
        assert "refused a session (security None/None, user op)" in err, err
        assert "BadUserAccessDenied" in err and "guess" not in err and err.count("\n") == 1
        rc, out, err = await discover(server.endpoint, "--user", "op", "--password-env",
                                      "PLC_PW", env={"PLC_PW": "s3cret"})
        assert rc == 0 and "ns=1;s=PLC.Temp" in out, err
    finally:
        await server.kill()
