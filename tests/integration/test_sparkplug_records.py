"""What the gateway judged reaches the Sparkplug host: interlock trips, quarantines,
health alerts and SPC alarms as node String metrics (JSON of each record), declared in
the NBIRTH with aliases, live as NDATA and replayed from the journal marked historical;
decoded by Eclipse Tahu's JS codec."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

from test_sparkplug_sink import host, make_sink, metric

from edge.journal.entries import Entry
from edge.model import (
    HealthAlert,
    InterlockTrip,
    Quarantine,
    SampleBatch,
    SpcViolation,
    encode_records,
)

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import Peer, SparkplugCodec


async def test_judgements_are_node_metrics_live_and_replayed(
        broker: Peer, codec: SparkplugCodec, tmp_path: Path) -> None:
    """The NBIRTH declares Judgements/* as String metrics with aliases; a trip and a
    health alert go out live as NDATA by alias with the record as JSON (an SPC signal
    that is not an alarm does not); a quarantine from the journal comes historical."""
    sink = make_sink(broker.port, tmp_path, primary_host_id="scada")
    now = time.time_ns()
    trip = InterlockTrip(now, "etch1_overtemp", "etch1/chamber_temp", "high", 189.5, 188.0,
                         "stop", True, 2_000_000, {"lot": "L42", "wafer": "7"})
    alert = HealthAlert(now, "conveyor_belt", 0.31, 5400.0, "health below 0.4")
    signal = SpcViolation(now, "etch1/chamber_temp", "we2", 185.0, 180.0, 1.5)
    old = Quarantine(now - 60_000_000_000, "etch1", "lot of a trip", subject="L41")
    async with host(broker.port, codec) as h:
        await h.state(True, 1)
        run = asyncio.create_task(sink.run())
        try:
            nbirth = await h.next("NBIRTH")
            alias = {}
            for name in ("InterlockTrip", "Quarantine", "HealthAlert", "SpcAlarm"):
                m = metric(nbirth.payload, f"Judgements/{name}")
                assert m["type"] == "String" and "alias" in m
                alias[name] = m["alias"]
            assert len(set(alias.values())) == 4
            await sink.connect()
            sink.publish(SampleBatch.empty(), [trip, signal, alert])
            ndata = await h.next("NDATA")
            got = {m["alias"]: m for m in ndata.payload["metrics"]}
            assert set(got) == {alias["InterlockTrip"], alias["HealthAlert"]}
            live_trip = got[alias["InterlockTrip"]]
            assert "name" not in live_trip and not live_trip.get("isHistorical")
            assert live_trip["timestamp"] == str(now // 1_000_000)
            doc = json.loads(live_trip["value"])
            assert (doc["type"], doc["interlock"], doc["context"]) == (
                "interlock_trip", "etch1_overtemp", {"lot": "L42", "wafer": "7"})
            assert json.loads(got[alias["HealthAlert"]]["value"])["ttf_s"] == 5400.0

            await sink.write([Entry(1, "records", old.ts_ns, 1, encode_records([old]))])
            replay = await h.next("NDATA")
            (q,) = replay.payload["metrics"]
            assert q["alias"] == alias["Quarantine"] and q["isHistorical"] is True
            assert json.loads(q["value"])["subject"] == "L41"
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
