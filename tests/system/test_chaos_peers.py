"""Chaos: InfluxDB down and up, broker restart, Modbus device restart."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from harness import (
    INTERLOCK_BUDGET_MS,
    SOAK,
    Stack,
    account,
    expected_parts,
    record,
    restart_peer,
    soak,
    stack,
    trip_once,
    wait_all_delivered,
    wait_for,
    wait_port,
)

pytestmark = [pytest.mark.peer("mosquitto"), pytest.mark.peer("influxd"),
              pytest.mark.timeout(soak(240, 1800))]


def _influx_count(st: Stack, since_ns: int) -> int:
    assert st.influx is not None
    q = f"SELECT count(chamber_temp) FROM etch1 WHERE time >= {since_ns}"
    r = httpx.get(f"{st.influx.url}/query", params={"db": "edge", "q": q}, timeout=10)
    r.raise_for_status()
    series = r.json()["results"][0].get("series") or []
    return int(series[0]["values"][0][1]) if series else 0


def _ingested(st: Stack, source: str) -> float:
    assert st.gateway is not None
    return st.gateway.metric_sum("edge_ingest_total", f'source="{source}"')


def test_peer_restarts_do_not_crash_and_lose_nothing(tmp_path: Path) -> None:
    """InfluxDB stopped and started, the MQTT broker restarted, the Modbus device
    restarted: the daemon stays up, every link comes back, InfluxDB receives what was
    journaled while it was down, and the MES holds every measurement exactly once."""
    down_s = soak(3.0, 15.0)
    rounds = soak(1, 3)
    with stack(tmp_path, influx=True, cmm={"part_interval_s": 0.25}, motors={}) as st:
        gw = st.make_gateway(st.gateway_config(influx=True, opcua=False))
        gw.start()
        st.start_line()
        assert st.influx is not None and st.broker is not None
        wait_for("samples in InfluxDB", lambda: _influx_count(st, 0) > 0, 30, logs=st.logs)
        trips = 0
        for _ in range(rounds):
            # InfluxDB down and up (same port, same data)
            t_down = time.time_ns()
            st.influx.stop()
            time.sleep(down_s)
            wait_for("an InfluxDB backlog", lambda: gw.depth("influx") > 100, 15, logs=st.logs)
            restart_peer(st.influx)
            wait_port(st.influx.port, 30)
            want = int(10 * down_s * 0.8)  # polls at 10 Hz during the outage
            wait_for("InfluxDB to receive the outage's samples",
                     lambda t=t_down, w=want: _influx_count(st, t) >= w, 60, interval=0.5,
                     logs=st.logs)

            # broker restart: the MQTT source reconnects and motor data flows again
            before = _ingested(st, "stf")
            st.broker.stop()
            time.sleep(down_s / 2)
            restart_peer(st.broker)
            wait_port(st.broker.port)
            wait_for("motor data after the broker restart",
                     lambda b=before: _ingested(st, "stf") > b + 500, 30, logs=st.logs)

            # Modbus device restart: polls resume, the interlock trips again
            before = _ingested(st, "etch1")
            st.restart_etch(down_s / 2)
            wait_for("etch data after the device restart",
                     lambda b=before: _ingested(st, "etch1") > b + 100, 30, logs=st.logs)
            trips = trip_once(st)
            assert gw.alive
        st.parts["line"].stop()
        parts = expected_parts(st)
        wait_all_delivered(st, parts, 60)
        wait_for("every trip at the MES", lambda: st.mes.count("interlock_trip") >= trips, 30)
        wait_for("InfluxDB to hold every journaled sample",
                 lambda: gw.depth("influx") == 0 or None, 60, interval=0.5)
        appended = gw.metric_sum("edge_journal_appended_total", 'kind="samples"')
        delivered = sum(v for k, v in gw.metrics().items()
                        if k.startswith("edge_sink_delivered_total{")
                        and 'sink="influx"' in k and 'kind="samples"' in k)
        evicted = gw.metric_sum("edge_journal_evicted_total")
        restarts = gw.events("component failed; restarting")
        summary = account(st, "peer_restarts" + ("_soak" if SOAK else ""), parts, trips,
                          note=f"influx_appended={int(appended)} influx_delivered="
                               f"{int(delivered)} evicted={int(evicted)} "
                               f"component_restarts={len(restarts)}")
        record(summary)
        assert gw.starts == 1 and gw.alive, "the daemon must not crash"
        assert evicted == 0 and delivered >= appended - 100, summary.note
        assert summary.lost == 0 and summary.duplicates == 0, summary.line()
        assert summary.worst_interlock_ms < INTERLOCK_BUDGET_MS
