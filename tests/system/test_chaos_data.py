"""Chaos: the motor line's data chaos through mosquitto and the real daemon, scored
against hw_sim's truth (spellings, mixed time zones, late bursts, jumping clocks)."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from harness import MOTORS, Summary, record, stack, wait_for
from peers import free_port

from edge.config import load
from edge.journal.entries import KIND_SAMPLES
from edge.model import SampleBatch, TagRegistry
from hw_sim.baddata import CHAOS

pytestmark = [pytest.mark.peer("mosquitto"), pytest.mark.timeout(300)]

RUN_S = 30.0
EDGE_S = 5.0  # events this close to the line's start or stop are not judged


def _journal_samples(state_dir: Path, tags: TagRegistry) -> Counter[tuple[str, int]]:
    """(tag, ts in ms) of every source sample the journal holds (a dead InfluxDB keeps
    them there)."""
    db = sqlite3.connect(f"file:{state_dir / 'journal.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT payload FROM entries WHERE kind = ?", (KIND_SAMPLES,))
        out: Counter[tuple[str, int]] = Counter()
        for (payload,) in rows:
            b = SampleBatch.from_bytes(bytes(payload))
            out.update((tags[t].key, round(ts / 1e6))  # the gateway's own status tags
                       for t, ts in zip(b.tag_id.tolist(), b.ts_ns.tolist(), strict=True)
                       if t < len(tags))  # come after the sources' tags: not judged
        return out
    finally:
        db.close()


def test_data_chaos_through_the_daemon_is_kept_once_or_quarantined(tmp_path: Path) -> None:
    """30 s of the 14-motor line over MQTT QoS 1 with the chaos kinds on: every message
    under another spelling, another UTC offset, or late in a shuffled burst is in the
    journal once at its own time under its canonical tag; every clock-jumped one is not,
    and is in a clock_jump quarantine at the MES; no sample is stored twice."""
    bad = {"rate": 0.04, "kinds": list(CHAOS), "late_burst": 5}
    with stack(tmp_path, etch=False, motors={"qos": 1}, bad_data=bad) as st:
        cfg = st.gateway_config(sources=("motors",), opcua=False, interlock=False,
                                influx=f"http://127.0.0.1:{free_port()}")  # never answers
        src = next(s for s in cfg["sources"] if s["name"] == "stf")
        src["qos"] = 1
        src["subscriptions"][0]["spelling"] = "loose"
        cfg["clock_checks"] = [{"name": "clocks", "devices": MOTORS, "jump_s": 5.0,
                                "confirm_s": 1.0}]
        gw = st.make_gateway(cfg)
        gw.start()
        wait_for("the MQTT source subscribed", lambda: any(
            e.get("link") == "source:stf" for e in gw.events("link up")), 30, logs=st.logs)
        st.start_line()
        time.sleep(RUN_S)
        st.parts["line"].stop()
        time.sleep(3.0)  # the last messages in, held samples judged (confirm_s 1 s)
        rc, _ = gw.terminate()
        assert rc == 0, gw.tail()

        tags = TagRegistry()
        for s in load(gw.cfg_path).sources:
            s.declare_tags(tags)
        stored = _journal_samples(gw.state_dir, tags)
        events = [e for e in st.parts["line"].truth()
                  if e["kind"] == "bad_data" and e["defect"] in CHAOS]
        assert events, "the line spoiled nothing"
        # the publisher sends (and the truth counts) before it is connected: judge from
        # the first live sample the gateway stored
        start = next(e["t_ns"] for e in st.parts["line"].truth() if e["kind"] == "run_start")
        first = min(ms for _, ms in stored if ms * 1e6 >= start - 1e9)
        lo = first * 1e6 + EDGE_S * 1e9
        hi = max(e["t_ns"] for e in events) - EDGE_S * 1e9
        late = sorted((e for e in events if e["defect"] == "late"), key=lambda e: e["t_ns"])
        unsent = late[len(late) - len(late) % bad["late_burst"]:]  # still in the buffer
        judged = [e for e in events if lo <= e["t_ns"] <= hi and e not in unsent]
        quarantined: Counter[tuple[str, int]] = Counter()
        for q in st.mes.records("quarantine"):
            if q["reason"].startswith("clock_jump"):
                quarantined.update((s[0], round(s[1] / 1e6)) for s in q["evidence"])
        errors: list[str] = []
        by_kind: Counter[str] = Counter()
        def near(held: Counter[tuple[str, int]], key: tuple[str, int]) -> int:
            """Held within 1 ms: an ISO time is cut to the ms, an epoch one rounded."""
            return sum(held[(key[0], key[1] + d)] for d in (-1, 0, 1))

        for e in judged:
            key = (e["motor"].replace("/", "_") + "/current_a", round(e["sent_ts_ns"] / 1e6))
            by_kind[e["defect"]] += 1
            n_stored, n_quarantined = near(stored, key), near(quarantined, key)
            if e["good"] and n_stored != 1:
                errors.append(f"{e['defect']} {key}: stored {n_stored} times")
            if not e["good"] and (n_stored or n_quarantined != 1):
                errors.append(f"clock_jump {key}: stored {n_stored}, quarantined "
                              f"{n_quarantined}")
        twice = [k for k, n in stored.items() if n > 1]
        record(Summary("data_chaos", len(judged), len(judged) - len(errors),
                       len(twice), len(errors), 0.0,
                       note=f"by_kind={dict(by_kind)} stored_samples={sum(stored.values())} "
                            f"quarantined_samples={sum(quarantined.values())}"))
        assert all(by_kind[k] > 0 for k in CHAOS), by_kind
        assert not errors, "\n".join(errors[:20])
        assert not twice, twice[:10]

