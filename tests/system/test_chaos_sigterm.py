"""Chaos: SIGTERM while a large backlog drains to a slow MES."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness import (
    SOAK,
    account,
    expected_parts,
    record,
    soak,
    stack,
    wait_all_delivered,
    wait_for,
)

pytestmark = [pytest.mark.peer("mosquitto"), pytest.mark.timeout(soak(200, 1800))]

SHUTDOWN_S = 6.0


def test_sigterm_during_a_large_drain_exits_in_time_and_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM in the middle of draining a backlog to a slow MES: the daemon exits 0
    within gateway.shutdown_timeout_s, and after a restart the MES holds every
    measurement exactly once."""
    rounds = soak(1, 5)
    with stack(tmp_path, cmm={"part_interval_s": 0.05}, motors={}) as st:
        gw = st.make_gateway(st.gateway_config(opcua=False, shutdown_timeout_s=SHUTDOWN_S))
        gw.start()
        st.start_line()
        worst_exit = 0.0
        backlog = 0
        for _ in range(rounds):
            st.mes.fault("refuse")
            wait_for("a backlog of records", lambda: st.written_records() > 600, 30)
            time.sleep(soak(2.0, 5.0))
            backlog = max(backlog, gw.depth("mes"))
            st.mes.fault("slow", latency_s=0.5)
            wait_for("the drain to start", lambda: st.mes.count("measurement") > 0, 30)
            rc, took = gw.terminate(timeout=SHUTDOWN_S + 10)
            worst_exit = max(worst_exit, took)
            assert rc == 0, gw.tail()
            assert took < SHUTDOWN_S + 1.5, f"exit took {took:.1f} s"
            st.mes.fault("ok")
            gw.start()
        st.parts["line"].stop()
        parts = expected_parts(st)
        wait_all_delivered(st, parts, 90)
        summary = account(st, "sigterm_drain" + ("_soak" if SOAK else ""), parts, 0,
                          note=f"rounds={rounds} backlog_points={backlog} "
                               f"worst_exit_s={worst_exit:.2f}")
        record(summary)
        assert summary.lost == 0 and summary.duplicates == 0, summary.line()
        rc, _ = gw.terminate()
        assert rc == 0
