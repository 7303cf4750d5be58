"""Chaos: a barrage of bad input (CSV, MQTT, Modbus exceptions, a hung device)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from harness import (
    SOAK,
    Stack,
    account,
    etch_write,
    expected_parts,
    record,
    soak,
    stack,
    trip_once,
    wait_all_delivered,
    wait_for,
)

pytestmark = [pytest.mark.peer("mosquitto"), pytest.mark.timeout(soak(200, 1800))]

FEATURE_NAMES = ("length_120", "width_80", "bore_50")


def _rejected(st: Stack, source: str) -> Counter[str]:
    assert st.gateway is not None
    out: Counter[str] = Counter()
    for key, value in st.gateway.metrics().items():
        if key.startswith("edge_source_rejected_total{") and f'source="{source}"' in key:
            reason = key.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] += int(value)
    return out


def test_bad_input_is_quarantined_with_a_reason_and_the_daemon_stays_up(
    tmp_path: Path,
) -> None:
    """Malformed CSV rows, garbage MQTT payloads, Modbus exception replies and a device
    that never answers: the daemon stays up, every spoiled CMM row and MQTT message is
    quarantined with a reason (or, when still usable, measured), every bad Modbus read
    is a Bad sample counted by reason, and the good data all arrives."""
    bad = {"rate": 0.08, "kinds": ["missing", "duplicate", "naive_ts", "garbage"]}
    fault_s = soak(2.0, 8.0)
    with stack(tmp_path, cmm={"part_interval_s": 0.2}, motors={}, bad_data=bad) as st:
        gw = st.make_gateway(st.gateway_config(opcua=False))
        gw.start()
        st.start_line()
        wait_for("quarantines at the MES", lambda: st.mes.count("quarantine") > 5, 30,
                 logs=st.logs)
        for mode in ("busy", "fail", "hang") * soak(1, 3):  # exceptions, then silence
            etch_write(st.ports.etch, register=21, value=("ok", "busy", "fail", "hang")
                       .index(mode))
            time.sleep(fault_s)
            etch_write(st.ports.etch, register=21, value=0)
            time.sleep(0.5)
        assert gw.alive
        trips = trip_once(st)
        st.parts["line"].stop()
        parts = expected_parts(st)
        truth = st.parts["line"].truth()
        cmm_bad = [e for e in truth if e["kind"] == "bad_data" and e["source"] == "cmm"]
        motor_bad = [e for e in truth if e["kind"] == "bad_data" and e["source"] == "motors"]

        def quarantined() -> set[tuple[str, str]]:
            out = set()
            for q in st.mes.records("quarantine"):
                if q["source"] != "cmm1":
                    continue
                for p in parts:
                    if p in q["payload"]:
                        out |= {(p, f) for f in FEATURE_NAMES if f in q["payload"]}
            return out

        measured = {(r["part_id"], r["feature"]) for r in st.mes.records("measurement")}
        expected = {(p, f) for p in parts for f in FEATURE_NAMES}

        def all_accounted() -> bool:
            nonlocal measured
            measured = {(r["part_id"], r["feature"]) for r in st.mes.records("measurement")}
            return expected <= measured | quarantined()

        wait_for("every CMM row measured or quarantined", all_accounted, 60, interval=0.5,
                 logs=st.logs)
        q_all = st.mes.records("quarantine")
        assert all(q["reason"] for q in q_all), "a quarantine without a reason"
        unquarantined_garbage = {
            (e["part_id"], e["feature"]) for e in cmm_bad
            if e["defect"] == "garbage" and e["part_id"] in parts
        } - quarantined()
        assert not unquarantined_garbage, sorted(unquarantined_garbage)[:5]
        stf = _rejected(st, "stf")
        etch = _rejected(st, "etch1")
        garbage_msgs = sum(1 for e in motor_bad if e["defect"] in ("garbage", "missing"))
        assert sum(stf.values()) >= garbage_msgs * 0.9, (stf, garbage_msgs)
        assert etch.get("device_exception", 0) > 0 and etch.get("timeout", 0) > 0, etch
        clean_parts = parts - {e["part_id"] for e in cmm_bad}
        good = wait_all_delivered(st, clean_parts, 30)
        summary = account(st, "bad_input" + ("_soak" if SOAK else ""), parts, trips,
                          note=f"cmm_defects={len(cmm_bad)} motor_defects={len(motor_bad)} "
                               f"quarantines={len(q_all)} stf_rejected={dict(stf)} "
                               f"etch_bad={dict(etch)}")
        # a spoiled row is accounted for by its quarantine, not lost
        summary.delivered += len((expected - measured) & quarantined())
        summary.lost = summary.sent - summary.delivered
        record(summary)
        assert good.duplicates == 0 and summary.lost == 0, summary.line()
        assert gw.starts == 1 and gw.alive
