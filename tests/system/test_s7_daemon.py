"""The daemon against the simulated S7 PLC as its own process (``python -m hw_sim.s7_plc``):
an interlock on an S7 tag sets the PLC's stop bit, and a PLC restart is a link down and
up again with values flowing, without restarting the source."""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path
from typing import Any

from harness import Gateway, Proc, free_port, wait_for
from snap7.client import Client

from hw_sim.s7_plc import STOP_BIT, values

WAIT_S = 60.0  # the machine is loaded: generous, every wait stops on its condition
INTERVAL_S = 0.2  # the PLC's step: its values change every 0.2 s


def stop_bit(port: int) -> bool:
    client = Client()
    try:
        client.connect("127.0.0.1", 0, 1, tcp_port=port)
        return bool(client.db_read(1, STOP_BIT[0], 1)[0] >> STOP_BIT[1] & 1)
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()


def gateway_config(tmp: Path, port: int, high: float) -> dict[str, Any]:
    return {
        "gateway": {"id": "gw-s7", "state_dir": str(tmp / "state"), "log_level": "info",
                    "log_format": "json", "metrics_port": free_port()},
        "journal": {"durability": "process-crash"},
        "sources": [{
            "type": "s7", "name": "plc1", "host": "127.0.0.1", "port": port,
            "poll_interval_s": 0.1, "timeout_s": 1.0, "backoff_max_s": 1.0,
            "tags": [{"name": "temperature", "address": "DB1.DBD8", "type": "REAL"},
                     {"name": "recipe", "address": "DB1.DBB20", "type": "STRING[16]"}],
            "commands": [{"action": "stop", "address": "DB1.DBX52.0"}],
        }],
        "interlocks": [{"name": "plc1_overtemp", "tag": "plc1/temperature", "high": high,
                        "action": {"source": "plc1", "action": "stop"}}],
        "sinks": [],
    }


def test_daemon_s7_interlock_sets_the_stop_bit_and_survives_a_plc_restart(
        tmp_path: Path) -> None:
    """The PLC's temperature climbs past the limit: the daemon's interlock sets
    DB1.DBX52.0 in the PLC process. Killing the PLC takes the link down with its reason;
    started again on the same port, the source reconnects by itself (no restart of the
    component) and the interlock state follows the new values."""
    port = free_port()
    plc_argv = [sys.executable, "-m", "hw_sim.s7_plc", "--port", str(port),
                "--interval", str(INTERVAL_S)]
    plc = Proc("plc", plc_argv, tmp_path)
    # about 3 s of steps before the limit: the daemon is polling by then
    high = float(values(15)["temperature"])  # type: ignore[arg-type]
    gw = Gateway(tmp_path, gateway_config(tmp_path, port, high))
    try:
        plc.start()
        wait_for("the PLC", lambda: "READY port=" in plc.tail(), WAIT_S, logs=plc.tail)
        gw.start(ready_timeout=120)
        wait_for("the stop bit set by the interlock", lambda: stop_bit(port), WAIT_S,
                 logs=gw.tail)
        assert gw.status()["interlocks"]["plc1_overtemp"]["trips"] >= 1

        plc.kill9()
        wait_for("the link down with a reason",
                 lambda: [e for e in gw.events("link down")
                          if e.get("link") == "source:plc1" and e.get("error")],
                 WAIT_S, logs=gw.tail)
        assert not gw.status()["links"]["source:plc1"]
        ups = len([e for e in gw.events("link up") if e.get("link") == "source:plc1"])
        plc.argv = [*plc_argv[:-1], "60"]  # a fresh PLC that stays at step 0, below
        plc.start()
        wait_for("the PLC again", lambda: len(re.findall("READY port=", plc.tail())) >= 2,
                 WAIT_S, logs=plc.tail)
        wait_for("the link up again",
                 lambda: len([e for e in gw.events("link up")
                              if e.get("link") == "source:plc1"]) > ups,
                 WAIT_S, logs=gw.tail)
        wait_for("values below the limit after the restart",
                 lambda: gw.status()["interlocks"]["plc1_overtemp"]["last_value"] < high,
                 WAIT_S, logs=gw.tail)
        assert gw.status()["links"]["source:plc1"]
        assert gw.status()["components"]["source:plc1"]["restarts"] == 0
        assert gw.alive
    finally:
        gw.close()
        plc.stop()
