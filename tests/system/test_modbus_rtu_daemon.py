"""The daemon reads the hw_sim etch tool over Modbus RTU (``hw-sim etch --serial``) through
socat pty pairs joined by a relay that can garble the line: an interlock on an RTU tag
stops the tool, a dead device id on the same bus goes Bad with its reason without
stalling the live one, and a noisy line gives Bad with a reason and no crash."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import REPO, Gateway, Proc, free_port, wait_for

from hw_sim.truth import read_truth

sys.path.insert(0, str(REPO / "tests" / "integration"))
from serial_peers import NoisyLine, pty_pair

WAIT_S = 60.0  # the machine is loaded: generous, every wait stops on its condition


class Relay:
    """``NoisyLine`` on its own event loop in a thread (the test itself is synchronous)."""

    def __init__(self, end1: str, end2: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.line = NoisyLine(end1, end2)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="noisy-line")

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        self.line.start()

    def noise(self, mode: str) -> None:
        self.loop.call_soon_threadsafe(setattr, self.line, "noise", mode)

    def stop(self) -> None:
        async def stop() -> None:
            self.line.stop()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def rtu_line(tmp: Path) -> Iterator[tuple[str, str, Relay]]:
    """The gateway's end, the tool's end, and the relay between them."""
    with pty_pair(tmp, "gw") as (gw0, gw1), pty_pair(tmp, "tool") as (tool0, tool1):
        relay = Relay(gw1, tool1)
        relay.start()
        try:
            yield gw0, tool0, relay
        finally:
            relay.stop()


def gateway_config(tmp: Path, port: str, metrics_port: int) -> dict[str, Any]:
    registers = [
        {"name": "chamber_temp", "address": 0, "type": "float32", "unit": "degC"},
        {"name": "status", "address": 11, "type": "uint16"},
        {"name": "heartbeat", "address": 12, "type": "uint16"},
    ]
    return {
        "gateway": {"id": "gw-rtu", "state_dir": str(tmp / "state"), "log_level": "info",
                    "log_format": "json", "metrics_port": metrics_port},
        "journal": {"durability": "process-crash"},
        "sources": [{
            "type": "modbus", "name": "bus1", "transport": "rtu", "serial_port": port,
            "baudrate": 19200, "parity": "none", "poll_interval_s": 0.1, "timeout_s": 0.3,
            "backoff_max_s": 2.0, "registers": registers,
            "commands": [{"action": "stop", "function": "coil", "address": 0, "value": 1}],
            "devices": [{"device_id": 1, "device": "etch1"},
                        {"device_id": 7, "device": "dead7", "timeout_s": 0.2}],
        }],
        # the tool runs near 180 C: the first Good sample trips the interlock
        "interlocks": [{"name": "etch1_overtemp", "tag": "etch1/chamber_temp", "high": 150.0,
                        "action": {"source": "bus1", "action": "etch1/stop"}}],
        "sinks": [],
    }


@pytest.mark.peer("socat")
def test_daemon_over_rtu_trips_isolates_a_dead_device_and_survives_noise(
        tmp_path: Path) -> None:
    """Over RTU the interlock writes the stop coil; dead7 is Bad (timeout, 'no answer')
    while etch1 keeps its poll rate; garbled answers give Bad (decode) with a reason,
    the daemon keeps running, and etch1 is Good again once the line is clean."""
    truth = tmp_path / "truth-etch.jsonl"
    with rtu_line(tmp_path) as (gw_port, tool_port, relay):
        etch = Proc("etch", [sys.executable, "-m", "hw_sim.cli", "etch", "--serial", tool_port,
                             "--parity", "N", "--device-ids", "1", "--seed", "7",
                             "--truth", str(truth)], tmp_path)
        gw = Gateway(tmp_path, gateway_config(tmp_path, gw_port, free_port()))
        procs: list[Proc] = [etch, gw]
        try:
            etch.start()
            wait_for("the RTU slave", lambda: "etch: modbus rtu" in etch.tail(), WAIT_S,
                     logs=etch.tail)
            gw.start(ready_timeout=120)

            def stopped() -> bool:
                return any(e["kind"] == "stop" and e.get("cause") == "coil"
                           for e in read_truth(truth)) if truth.exists() else False

            wait_for("the interlock to stop the tool over RTU", stopped, WAIT_S, logs=gw.tail)
            wait_for("the trip in status",
                     lambda: gw.status()["interlocks"]["etch1_overtemp"]["trips"] >= 1,
                     WAIT_S, logs=gw.tail)

            # dead7: Bad with its reason, its link down; etch1 keeps polling meanwhile
            def dead_down() -> bool:
                return any(e.get("link") == "source:bus1/dead7" and e.get("error") == "no answer"
                           for e in gw.events("link down"))

            wait_for("dead7's link down with its reason", dead_down, WAIT_S, logs=gw.tail)
            links = gw.status()["links"]
            assert links["source:bus1/etch1"] and not links["source:bus1/dead7"], links
            assert gw.metric_sum("edge_source_rejected_total", 'reason="timeout"') > 0

            def sampled(name: str) -> float:
                return gw.metric_sum("edge_source_last_sample_age_seconds", f'device="{name}"')

            ages = [sampled("etch1") for _ in range(10)]
            # polled every 0.1 s; a bus waiting out dead7's timeout each tick would still
            # be under 1 s, but a stalled bus would not be
            assert max(ages) < 1.0, ages

            # a noisy line: garbled answers are Bad (decode) with a reason, no crash
            decode0 = gw.metric_sum("edge_source_rejected_total", 'reason="decode"')
            relay.noise("answers")
            wait_for("garbled answers counted as decode errors",
                     lambda: gw.metric_sum("edge_source_rejected_total",
                                           'reason="decode"') > decode0 + 3,
                     WAIT_S, logs=gw.tail)
            assert any(e.get("device") == "etch1" and "garbled" in e.get("reason", "")
                       for e in gw.events("modbus device read failed")), gw.tail()
            relay.noise("")
            wait_for("etch1 Good again on a clean line",
                     lambda: any(e.get("device") == "etch1"
                                 for e in gw.events("modbus device read recovered")),
                     WAIT_S, logs=gw.tail)
            assert gw.alive
            status = gw.status()
            assert status["components"]["source:bus1"]["restarts"] == 0, status["components"]
        finally:
            for proc in reversed(procs):
                with contextlib.suppress(Exception):
                    if isinstance(proc, Gateway):
                        proc.close()
                    else:
                        proc.stop()
