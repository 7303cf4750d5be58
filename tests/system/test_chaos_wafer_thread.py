"""Chaos: every wafer's history at the MES equals the etch tool's truth, across an MES
outage and a kill -9 of the gateway."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import REPO, Stack, Summary, record, stack, trip_once, wait_for, worst_interlock_ms

pytestmark = [pytest.mark.timeout(420)]

STEP_S = 3.0  # the tool's five recipe steps: a wafer every 15 s
WAFER_S = 5 * STEP_S
POLL_S = 0.1
POLL_NS = round(POLL_S * 1e9)


def _truth(st: Stack, kind: str) -> list[dict[str, Any]]:
    return [e for e in st.parts["etch"].truth() if e["kind"] == kind]


def _next_wafer(st: Stack) -> dict[str, Any]:
    """Wait for the tool to take its next wafer; that wafer's start event."""
    seen = len(_truth(st, "wafer_start"))
    starts = wait_for("the next wafer", lambda: _truth(st, "wafer_start")[seen:], WAFER_S * 3,
                      logs=st.logs)
    return starts[0]


def _history(st: Stack, wafer: str) -> list[dict[str, Any]]:
    """The MES's answer to GET /api/v1/wafers/<id>/history (admin port: never faulted)."""
    r = httpx.get(f"http://127.0.0.1:{st.ports.mes_admin}/api/v1/wafers/{wafer}/history",
                  timeout=10)
    if r.status_code == 404:
        return []
    r.raise_for_status()
    steps: list[dict[str, Any]] = r.json()["steps"]
    return steps


def test_wafer_history_at_the_mes_equals_the_tools_truth(tmp_path: Path) -> None:
    """Wafers through the etch tool, with interlock trips in some, an MES outage across a
    wafer change and a kill -9 mid-wafer: for each wafer that left the tool while the
    gateway ran, the MES history holds exactly one etch1 step whose start and end are
    within one poll interval of the truth and whose trips are the tool's stops."""
    # The tool's model steps at 20 Hz: its elapsed-time register is then at most 50 ms
    # behind the poll, which leaves the rest of the 100 ms bound for a loaded machine.
    with stack(tmp_path, mqtt=False, etch_opts={"step_s": STEP_S, "dt_s": 0.05}) as st:
        cfg = st.gateway_config(sources=("etch",), opcua=False)
        etch = next(s for s in cfg["sources"] if s["name"] == "etch1")
        etch["registers"] += [
            {"name": "wafer_elapsed", "address": 13, "type": "float32", "unit": "s"},
            {"name": "recipe", "address": 15, "type": "uint16"},
        ]
        cfg["wafer_steps"] = [{"name": "etch1", "wafer_tag": "etch1/wafer",
                               "lot_tag": "etch1/lot", "elapsed_tag": "etch1/wafer_elapsed",
                               "recipe_tag": "etch1/recipe"}]
        gw = st.make_gateway(cfg)
        gw.start()
        ready_ns = time.time_ns()

        _next_wafer(st)  # a wafer with a trip, all links up
        time.sleep(1.0)
        trip_once(st)

        st.mes.fault("refuse")  # the MES down across a wafer change, a trip in it
        _next_wafer(st)
        time.sleep(1.0)
        trip_once(st)
        _next_wafer(st)
        st.mes.fault("ok")

        _next_wafer(st)  # kill -9 early in a wafer, restart, a trip after it
        time.sleep(0.5)
        killed_ns = time.time_ns()
        gw.kill9()
        gw.start()
        up_ns = time.time_ns()
        restart_s = (up_ns - killed_ns) / 1e9
        trip_once(st)
        _next_wafer(st)
        _next_wafer(st)
        last_end = _truth(st, "wafer_end")[-1]["end_ns"]

        expected = {f"{e['lot']}.{e['wafer']:02d}": e for e in _truth(st, "wafer_end")
                    if ready_ns < e["end_ns"] <= last_end}
        assert len(expected) >= 5, expected
        # A wafer that left while the gateway was down has no step (no reading showed it
        # leave, see edge.processing.trace): the scenario must not make one.
        down = [w for w, e in expected.items() if killed_ns < e["end_ns"] < up_ns]
        assert not down, f"wafer {down} left while the gateway restarted ({restart_s:.1f} s)"

        def delivered() -> dict[str, list[dict[str, Any]]] | None:
            got = {w: _history(st, w) for w in expected}
            return got if all(got.values()) else None

        histories = wait_for("every wafer's step at the MES", delivered, 90, interval=1.0,
                             logs=st.logs)
        errors: list[str] = []
        worst_ns = 0
        for wafer, truth in expected.items():
            steps = [s for s in histories[wafer] if s["tool"] == "etch1"]
            if len(steps) != 1:
                errors.append(f"{wafer}: {len(steps)} etch1 steps at the MES")
                continue
            s = steps[0]
            d_start, d_end = s["start_ns"] - truth["start_ns"], s["end_ns"] - truth["end_ns"]
            worst_ns = max(worst_ns, abs(d_start), abs(d_end))
            if abs(d_start) > POLL_NS or abs(d_end) > POLL_NS:
                errors.append(f"{wafer}: start off by {d_start / 1e6:.0f} ms, end by "
                              f"{d_end / 1e6:.0f} ms")
            if len(s["trips"]) != truth["stops"]:
                errors.append(f"{wafer}: {len(s['trips'])} trips at the MES, the tool was "
                              f"stopped {truth['stops']} times")
            if s["recipe"] != "1" or s["lot"] != str(truth["lot"]):
                errors.append(f"{wafer}: recipe {s['recipe']!r} lot {s['lot']!r}")
        steps_at_mes = Counter(r["wafer"] for r in st.mes.records("wafer_step"))
        dups = sum(n - 1 for n in steps_at_mes.values())
        with_trips = [w for w, e in expected.items() if e["stops"]]
        summary = Summary("wafer_thread", len(expected), len(expected) - len(errors), dups,
                          len(errors), worst_interlock_ms(st),
                          int(st.mes.counts().get("duplicate_records", 0)),
                          note=f"kills=1 restart_s={restart_s:.1f} "
                               f"trips={st.mes.count('interlock_trip')} "
                               f"wafers_with_trips={len(with_trips)} "
                               f"worst_time_error_ms={worst_ns / 1e6:.1f}")
        record(summary)

        cli = subprocess.run(  # what an operator types
            [sys.executable, "-m", "edge", "wafer-history", with_trips[-1], "--mes",
             f"http://127.0.0.1:{st.ports.mes_admin}"],
            capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
        assert cli.returncode == 0, cli.stderr
        assert "etch1_overtemp: etch1/chamber_temp high" in cli.stdout, cli.stdout

        assert not errors, "\n".join(errors)
        assert dups == 0 and len(with_trips) >= 3
