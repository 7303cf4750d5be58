"""CMM results over MQTT QoS 1 -> thermal compensation -> MES, through the daemon."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from harness import stack, wait_for
from mqtt_records import ALPHA_PART, NOMINAL_MM, Publisher, source_config

pytestmark = [pytest.mark.peer("mosquitto"), pytest.mark.timeout(180)]


def test_cmm_results_over_mqtt_reach_the_mes_compensated(tmp_path: Path) -> None:
    """Each JSON result published at QoS 1 arrives at the MES once, as a Measurement
    compensated to 20 C and judged (a 50 mm part measured at 23.4 C is conforming)."""
    with stack(tmp_path, etch=False) as st:
        assert st.broker is not None
        cfg = st.gateway_config(sources=(), interlock=False, opcua=False)
        cfg["sources"].append(source_config(st.broker.port))
        cfg["compensation"] = [{"name": "cmm2"}]
        gw = st.make_gateway(cfg)
        gw.start()
        wait_for("the MQTT source's link", lambda: gw.metric_sum(
            "edge_link_up", 'link="source:quality"') >= 1, 20, logs=st.logs)
        pub = Publisher(st.broker.port, rate=200.0).start()
        wait_for("300 results published", lambda: pub.sent >= 300, 30)
        pub.stop()
        wait_for("every acknowledged result at the MES",
                 lambda: {r["part_id"] for r in st.mes.records("measurement")} >= pub.acked,
                 60, logs=st.logs)
        records = st.mes.records("measurement")
        assert len(pub.acked) >= 300
        by_part = Counter(r["part_id"] for r in records)
        assert max(by_part.values()) == 1
        for r in records:
            assert r["device"] == "cmm2" and r["feature"] == "bore_50"
            assert r["verdict"] == "conforming", r
            assert abs(r["l20_mm"] - NOMINAL_MM) < 1e-5
            assert r["raw_mm"] == pytest.approx(NOMINAL_MM * (1 + ALPHA_PART * 3.4), abs=1e-6)
        assert not st.mes.records("quarantine")
        rc, _ = gw.terminate()
        assert rc == 0
