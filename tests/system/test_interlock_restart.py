"""The demo's etch tool restarts after an interlock reset, so the next excursion trips
again: the daemon against hw_sim's etch tool over Modbus, reset with the CLI's command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import INTERLOCK, etch_write, stack, wait_for

pytestmark = [pytest.mark.timeout(240)]


def _tool_stopped(port: int) -> bool:
    """The etch tool's stop coil (1 while stopped), read directly."""
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=1)
    try:
        assert client.connect(), "etch tool does not answer"  # type: ignore[no-untyped-call]
        rr = client.read_coils(0, count=1, device_id=1)
        assert not rr.isError(), rr
        return bool(rr.bits[0])
    finally:
        client.close()  # type: ignore[no-untyped-call]


def test_reset_restarts_the_tool_and_it_trips_again(tmp_path: Path) -> None:
    """A trip stops the tool; a reset is refused while the chamber is hot; once it takes,
    the gateway sends the tool's reset command and the tool runs again; a second
    excursion trips again; the MES has an operator_action for each reset request."""
    with stack(tmp_path, mqtt=False) as st:
        cfg = st.gateway_config(sources=("etch",), opcua=False)
        etch: dict[str, Any] = cfg["sources"][0]
        etch["commands"].append({"action": "reset", "function": "coil", "address": 0,
                                 "value": 0})
        gw = st.make_gateway(cfg)
        gw.start()
        port = st.ports.etch

        def trips() -> int:
            return int(gw.status()["interlocks"][INTERLOCK]["trips"])

        etch_write(port, register=20, value=1)
        wait_for("the first trip", lambda: trips() >= 1, 20, interval=0.05, logs=st.logs)
        wait_for("the tool to stop", lambda: _tool_stopped(port), 10, logs=st.logs)
        refused = gw.ask({"cmd": "interlock_reset", "name": INTERLOCK})
        assert not refused["ok"] and "still active" in refused["error"], refused
        assert _tool_stopped(port)

        wait_for("the reset to take", lambda: gw.ask(
            {"cmd": "interlock_reset", "name": INTERLOCK})["ok"], 60, interval=0.5,
            logs=st.logs)
        wait_for("the tool to run again", lambda: not _tool_stopped(port), 10, logs=st.logs)

        before = trips()
        etch_write(port, register=20, value=1)
        wait_for("the second trip", lambda: trips() > before, 20, interval=0.05,
                 logs=st.logs)
        actions = wait_for("the resets at the MES", lambda: (
            r if len(r := st.mes.records("operator_action")) >= 2 else None), 30,
            logs=st.logs)
        assert {a["action"] for a in actions} == {"reset"}
        assert any(a["ok"] for a in actions) and any(not a["ok"] for a in actions)
        assert all(a["origin"] == "cli" and a["user"] for a in actions)
