"""Chaos: kill -9 of the gateway at random moments (ingest, drain, eviction)."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from harness import (
    INTERLOCK_BUDGET_MS,
    SOAK,
    account,
    expected_parts,
    record,
    soak,
    stack,
    trip_once,
    wait_all_delivered,
    wait_for,
)
from mqtt_records import Publisher, source_config
from peers import free_port

pytestmark = [pytest.mark.peer("mosquitto"), pytest.mark.timeout(soak(360, 3600))]


def test_kill9_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """At least 20 SIGKILLs at random moments (during start-up and ingest, during a
    backlog drain, while the byte limit evicts samples): after a restart the MES holds
    every CMM measurement exactly once (from the file drop and, counted one by one by part
    id, every result the publisher got a PUBACK for over MQTT QoS 1 with a persistent
    session), and the file source resumes at its checkpoint."""
    rng = random.Random(int(time.time()))
    seed = rng.getrandbits(32)
    rng.seed(seed)
    per_phase = soak(7, 35)
    with stack(tmp_path, cmm={"mode": "daily", "part_interval_s": 0.1}, motors={}) as st:
        normal = st.gateway_config(opcua=False)
        # An InfluxDB sink nobody answers keeps the bulk samples in the journal (a kind no
        # sink takes is not stored), so the tiny journal must evict them.
        dead_influx = f"http://127.0.0.1:{free_port()}"
        small = st.gateway_config(opcua=False, bulk=True, influx=dead_influx,
                                  journal={"max_mb": 1.0})
        assert st.broker is not None
        for cfg in (normal, small):  # CMM results over MQTT, acknowledged after the commit
            cfg["sources"].append(source_config(st.broker.port))
            cfg["compensation"].append({"name": "cmm2"})
        gw = st.make_gateway(normal)
        gw.start()
        st.start_line()
        # The persistent session exists once the source has subscribed (sources start
        # after READY): a result the broker acknowledged before that has no session to
        # wait in, and no gateway could have it.
        wait_for("the MQTT results source subscribed", lambda: any(
            e.get("link") == "source:quality" for e in gw.events("link up")), 30, logs=st.logs)
        pub = Publisher(st.broker.port, rate=20.0).start()
        wait_for("first measurements at the MES", lambda: st.mes.count("measurement") > 0, 30,
                 logs=st.logs)
        kills: list[str] = []

        def cycle(phase: str, lo: float, hi: float, *, wait_ready: bool = True) -> None:
            if not gw.alive:
                gw.start(wait_ready=wait_ready)
            time.sleep(rng.uniform(lo, hi))
            gw.kill9()
            kills.append(phase)

        for i in range(per_phase):  # ingest, some of them before READY
            cycle("ingest", 0.0 if i % 3 == 0 else 0.3, 2.5, wait_ready=i % 3 != 0)
        for _ in range(per_phase):  # drain: a backlog built with the MES down, then drained
            st.mes.fault("refuse")
            gw.start()
            time.sleep(rng.uniform(1.5, 3.0))
            st.mes.fault("ok")
            cycle("drain", 0.05, 1.5)
        gw.write_config(small)
        st.mes.fault("refuse")
        for _ in range(per_phase):  # eviction: a tiny journal over its byte limit
            seen = len(gw.events("journal evicted data"))
            st.drop_bulk(20_000)  # 60k samples, 1.3 MB: over the limit, records are not
            gw.start()
            wait_for("the byte limit to evict",
                     lambda n=seen: len(gw.events("journal evicted data")) > n, 20,
                     logs=st.logs)
            cycle("evict", 0.0, 1.5)
        st.mes.fault("ok")
        gw.write_config(normal)
        gw.start()
        trips = trip_once(st)
        st.parts["line"].stop()
        pub.stop()
        parts = expected_parts(st)
        wait_all_delivered(st, parts, 90)
        wait_for("every acknowledged MQTT result at the MES",
                 lambda: {r["part_id"] for r in st.mes.records("measurement")} >= pub.acked,
                 60, logs=st.logs)
        mqtt_seen = Counter(r["part_id"] for r in st.mes.records("measurement")
                            if r["device"] == "cmm2")
        mqtt_dups = sum(n - 1 for n in mqtt_seen.values())
        wait_for("the trip at the MES", lambda: st.mes.count("interlock_trip") >= trips, 30)

        evictions = gw.events("journal evicted data")
        evicted_records = sum(int(e.get("records", 0)) for e in evictions)
        restarts_from_zero = gw.events("file replaced or truncated, reading it from the start")
        summary = account(
            st, "kill9" + ("_soak" if SOAK else ""), parts, trips,
            note=f"kills={len(kills)} seed={seed} evictions={len(evictions)} "
                 f"evicted_samples={sum(int(e.get('samples', 0)) for e in evictions)} "
                 f"mqtt_acked={len(pub.acked)} mqtt_at_mes={len(mqtt_seen)} "
                 f"mqtt_dups={mqtt_dups}",
        )
        record(summary)
        rc, _ = gw.terminate()
        assert rc == 0
        marks = _checkpoint(gw.state_dir)
        assert len(kills) >= 20
        assert len(pub.acked) > 500 and mqtt_dups == 0 and set(mqtt_seen) >= pub.acked
        assert evictions and evicted_records == 0, "records must outlive samples"
        assert not restarts_from_zero, restarts_from_zero
        daily = sorted(st.cmm_dir.glob("cmm-*.csv"))
        for path in daily:  # the file source stands at the end of each file it read
            mark = next((m for k, m in _marks(marks).items() if k.endswith(path.name)), None)
            assert mark is not None and mark == path.stat().st_size, (path, mark)
        assert summary.lost == 0 and summary.duplicates == 0, summary.line()
        assert summary.worst_interlock_ms < INTERLOCK_BUDGET_MS


def _checkpoint(state_dir: Path) -> object:
    """The file source's committed checkpoint: in the journal, else its own file."""
    db = sqlite3.connect(f"file:{state_dir / 'journal.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM checkpoints WHERE key = 'file:cmm1'").fetchone()
    except sqlite3.OperationalError:
        row = None
    finally:
        db.close()
    if row is not None:
        return json.loads(bytes(row[0]))
    return json.loads((state_dir / "checkpoints" / "cmm1.json").read_text())


def _marks(doc: object) -> dict[str, int]:
    """{file path: offset} from the checkpoint JSON, whatever its outer shape."""
    files = doc.get("files", doc) if isinstance(doc, dict) else {}
    out: dict[str, int] = {}
    for key, mark in files.items():
        if isinstance(mark, dict) and "offset" in mark:
            out[key] = int(mark["offset"])
        elif isinstance(mark, list) and len(mark) > 2:
            out[key] = int(mark[2])
    return out
