"""Chaos: a kill -9 of the gateway while a wafer is in a tool that has no elapsed-time
register: the wafer still gets exactly one step at the MES, starting when it entered."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import Stack, Summary, record, stack, trip_once, wait_for, worst_interlock_ms

pytestmark = [pytest.mark.timeout(300)]

STEP_S = 3.0  # a wafer every 15 s
POLL_NS = 100_000_000
TOOL_DT_NS = 50_000_000  # the tool's model step: when its wafer register changes


def _truth(st: Stack, kind: str) -> list[dict[str, Any]]:
    return [e for e in st.parts["etch"].truth() if e["kind"] == kind]


def _history(st: Stack, wafer: str) -> list[dict[str, Any]]:
    r = httpx.get(f"http://127.0.0.1:{st.ports.mes_admin}/api/v1/wafers/{wafer}/history",
                  timeout=10)
    if r.status_code == 404:
        return []
    r.raise_for_status()
    steps: list[dict[str, Any]] = r.json()["steps"]
    return steps


def test_a_wafer_in_the_tool_across_a_kill9_gets_one_step_with_its_start(
        tmp_path: Path) -> None:
    """The gateway sees a wafer enter (no elapsed register: its start is the first reading
    that shows it), an interlock trip in it, then is killed with -9 and restarted while
    the wafer is still in: at the MES the wafer has exactly one etch1 step whose start
    is within a poll of the truth (not the first reading after the restart), whose end
    is within a poll too, with the trip made before the kill."""
    with stack(tmp_path, mqtt=False, etch_opts={"step_s": STEP_S, "dt_s": 0.05}) as st:
        cfg = st.gateway_config(sources=("etch",), opcua=False)
        cfg["wafer_steps"] = [{"name": "etch1", "wafer_tag": "etch1/wafer",
                               "lot_tag": "etch1/lot"}]
        gw = st.make_gateway(cfg)
        gw.start()
        seen = len(_truth(st, "wafer_start"))
        start = wait_for("the next wafer", lambda: _truth(st, "wafer_start")[seen:], 45,
                         logs=st.logs)[0]
        wafer = f"{start['lot']}.{start['wafer']:02d}"
        time.sleep(0.5)
        trip_once(st)
        in_wafer = (time.time_ns() - start["t_ns"]) / 1e9
        assert in_wafer < 5 * STEP_S - 8, f"the trip took {in_wafer:.1f} s of the wafer"
        killed_ns = time.time_ns()
        gw.kill9()
        gw.start()
        up_ns = time.time_ns()
        end = wait_for("the wafer to leave", lambda: [
            e for e in _truth(st, "wafer_end")
            if f"{e['lot']}.{e['wafer']:02d}" == wafer], 60, logs=st.logs)[0]
        assert up_ns < end["end_ns"], "the wafer left while the gateway restarted"
        steps = wait_for("the wafer's step at the MES", lambda: [
            s for s in _history(st, wafer) if s["tool"] == "etch1"], 60, interval=0.5,
            logs=st.logs)
        time.sleep(2.0)  # a duplicate would come with the same commit or the next
        steps = [s for s in _history(st, wafer) if s["tool"] == "etch1"]
        all_steps = [r for r in st.mes.records("wafer_step") if r["wafer"] == wafer]
        worst_ms = worst_interlock_ms(st)
    d_start = steps[0]["start_ns"] - end["start_ns"]
    d_end = steps[0]["end_ns"] - end["end_ns"]
    record(Summary("wafer_restart", 1, len(steps), len(all_steps) - 1, 0, worst_ms,
                   note=f"restart_s={(up_ns - killed_ns) / 1e9:.1f} "
                        f"start_error_ms={d_start / 1e6:.0f} end_error_ms={d_end / 1e6:.0f}"))
    assert len(steps) == len(all_steps) == 1, all_steps
    # a poll is stamped when it is sent, the tool's clock steps every TOOL_DT_NS: either way
    assert abs(d_start) <= POLL_NS + TOOL_DT_NS, f"start off by {d_start / 1e6:.0f} ms"
    assert abs(d_end) <= POLL_NS + TOOL_DT_NS, f"end off by {d_end / 1e6:.0f} ms"
    assert steps[0]["first_seen_ns"] == steps[0]["start_ns"]
    assert len(steps[0]["trips"]) == end["stops"] == 1
