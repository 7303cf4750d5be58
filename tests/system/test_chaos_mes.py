"""Chaos: the MES link cut by each fault mode under load, then the backlog drains."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from harness import (
    INTERLOCK,
    INTERLOCK_BUDGET_MS,
    SOAK,
    Stack,
    account,
    expected_parts,
    opcua_live,
    record,
    soak,
    stack,
    trip_once,
    wait_all_delivered,
    wait_for,
)

pytestmark = [pytest.mark.peer("mosquitto"), pytest.mark.timeout(soak(240, 1800))]

# mode -> options of POST /admin/fault; "slow" is a degraded link, not a cut one
FAULTS: dict[str, dict[str, Any]] = {
    "refuse": {},
    "blackhole": {},
    "error5xx": {"rate": 1.0},
    "ratelimit": {"rate": 1.0, "retry_after_s": 1.0},
    "slow": {"latency_s": 1.5},
}


def _outage(st: Stack, mode: str, opts: dict[str, Any], seconds: float) -> dict[str, float]:
    """One fault for ``seconds``: depth must grow (cut modes), an interlock trip must
    still happen, OPC-UA must stay live; then the backlog must drain."""
    gw = st.gateway
    assert gw is not None
    d0 = gw.depth("mes")
    t0 = time.monotonic()
    st.mes.fault(mode, **opts)
    trips = trip_once(st)
    live = opcua_live(st.opcua_endpoint)
    assert live, f"OPC-UA values froze during MES {mode}"
    if mode != "slow":
        wait_for(f"journal depth to grow during MES {mode}",
                 lambda: gw.depth("mes") > d0 + 50, 15, logs=st.logs)
    peak = gw.depth("mes")
    time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
    peak = max(peak, gw.depth("mes"))
    st.mes.fault("ok")
    t_up = time.monotonic()
    wait_for(f"the backlog to drain after MES {mode}", lambda: gw.depth("mes") < 200, 60,
             interval=0.25, logs=st.logs)
    return {"trips": trips, "peak_depth": peak, "drain_s": time.monotonic() - t_up}


def test_mes_faults_lose_nothing_and_interlocks_keep_tripping(tmp_path: Path) -> None:
    """Under load, each MES fault mode (refuse, black-hole, 5xx storm, 429, slow) grows the
    journal while interlocks trip within budget and OPC-UA stays live; after recovery the
    MES holds every measurement and trip exactly once."""
    rounds = soak(1, 3)
    outage_s = soak(5.0, 20.0)
    with stack(tmp_path, cmm={"part_interval_s": 0.25}, motors={}) as st:
        gw = st.make_gateway(st.gateway_config())
        gw.start()
        st.start_line()
        wait_for("first measurements at the MES", lambda: st.mes.count("measurement") > 0, 30,
                 logs=st.logs)
        trips = 0
        notes = []
        for _ in range(rounds):
            for mode, opts in FAULTS.items():
                out = _outage(st, mode, opts, outage_s)
                trips = int(out["trips"])
                notes.append(f"{mode}:peak={int(out['peak_depth'])},drain={out['drain_s']:.1f}s")
        st.parts["line"].stop()
        parts = expected_parts(st)
        wait_all_delivered(st, parts, 60)
        wait_for("every trip at the MES", lambda: st.mes.count("interlock_trip") >= trips, 30)
        assert gw.alive, "the gateway died during the MES faults"
        summary = account(st, "mes_faults" + ("_soak" if SOAK else ""), parts, trips,
                          note=" ".join(notes))
        record(summary)
        state = gw.status()["interlocks"][INTERLOCK]
        assert state["trips"] == trips == rounds * len(FAULTS)
        assert summary.lost == 0 and summary.duplicates == 0, summary.line()
        assert summary.worst_interlock_ms < INTERLOCK_BUDGET_MS, summary.line()
        rc, took = gw.terminate()
        assert rc == 0 and took < 10
