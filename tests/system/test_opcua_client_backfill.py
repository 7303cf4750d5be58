"""The daemon filling an OPC-UA link's gap from the PLC's history: node-opcua as the
simulated PLC (history on its counter and temperature), the hw_sim link proxy
black-holing the link for a few seconds; after recovery the gap's values are in the
journal once each, in order, marked as backfill by the journal checkpoint committed with
them, and accounted in the log and in `status`."""

from __future__ import annotations

import itertools
import json
import sqlite3
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from harness import Proc, Stack, link_mode, stack, wait_for, wait_port
from test_opcua_client_restart import plc_proc, start_plc

from edge.app import Gateway as App
from edge.config import load
from edge.model import Quality, SampleBatch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import free_port

# PLC start (up to 120 s loaded), daemon READY (120 s) and the bounded waits below
pytestmark = [pytest.mark.timeout(480)]

GOOD, BAD_NC = int(Quality.GOOD), int(Quality.BAD_NOT_CONNECTED)
GAP_S = 3.0


def link_proxy(tmp: Path, listen: int, target: int, admin: int) -> Proc:
    """hw_sim's link proxy in front of the PLC, switched over its admin port."""
    code = "import sys; from hw_sim.cli import main; sys.exit(main())"
    return Proc("link", [sys.executable, "-c", code, "link", "--listen", str(listen),
                         "--target", f"127.0.0.1:{target}", "--admin", str(admin)], tmp)


def journal_checkpoint(state_dir: Path, key: str) -> bytes:
    db = sqlite3.connect(f"file:{state_dir / 'journal.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM checkpoints WHERE key = ?", (key,)).fetchone()
    finally:
        db.close()
    assert row is not None, f"no checkpoint {key} in the journal"
    return bytes(row[0])


def journal_rows(state_dir: Path, tag_ids: set[int]) -> list[tuple[int, int, float, int]]:
    """(tag id, ts_ns, value, quality) of these tags, in journal order."""
    db = sqlite3.connect(f"file:{state_dir / 'journal.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT payload FROM entries WHERE kind = 0 ORDER BY seq").fetchall()
    finally:
        db.close()
    out: list[tuple[int, int, float, int]] = []
    for (payload,) in rows:
        b = SampleBatch.from_bytes(bytes(payload))
        for i in range(len(b)):
            if int(b.tag_id[i]) in tag_ids:
                out.append((int(b.tag_id[i]), int(b.ts_ns[i]), float(b.value[i]),
                            int(b.quality[i])))
    return out


def test_a_black_holed_links_gap_is_backfilled_once_in_order(tmp_path: Path) -> None:
    """While the link to the PLC is a black hole the tags go Bad; after it passes again
    the daemon reads the gap from the PLC's history before any live value, so the
    journal holds every counter value once, in order, with no hole; the values the
    backfill reports (log line and `status`) are exactly the gap's values in the journal."""
    port, listen, admin = free_port(), free_port(), free_port()
    plc = plc_proc(tmp_path, port)
    link = link_proxy(tmp_path, listen, port, admin)
    try:
        start_plc(plc, port)
        link.start()
        wait_port(listen)
        with stack(tmp_path, mqtt=False, etch=False) as st:
            _run(st, listen, admin)
    finally:
        link.stop()
        plc.kill9()


def _run(st: Stack, listen: int, admin: int) -> None:
    # A durable sink that never acks keeps every sample in the journal: InfluxDB on a
    # port nobody listens on.
    cfg = st.gateway_config(sources=(), interlock=False,
                            influx=f"http://127.0.0.1:{free_port()}")
    every_change = {"sampling_interval_ms": 0, "queue_size": 100}
    cfg["sources"].append({
        "type": "opcua", "name": "plc", "endpoint": f"opc.tcp://127.0.0.1:{listen}",
        "keepalive_s": 1.0, "backoff_max_s": 1.0, "timeout_s": 2.0,
        "groups": [{"name": "fast", "publishing_interval_ms": 100, "tags": [
            {"name": "counter", "node_id": "ns=1;s=PLC.Counter", "type": "int32",
             **every_change},
            {"name": "temp", "node_id": "ns=1;s=PLC.Temp", "unit": "degC", **every_change},
            {"name": "flag", "node_id": "ns=1;s=PLC.Flag", "type": "bool"}]}],
    })
    gw = st.make_gateway(cfg)
    gw.start(ready_timeout=120)
    app = App(load(gw.cfg_path))
    app.check()
    counter, temp = app.tags.id_of("plc/counter"), app.tags.id_of("plc/temp")

    def counter_rows() -> list[tuple[int, int, float, int]]:
        return [r for r in journal_rows(gw.state_dir, {counter}) if r[0] == counter]

    wait_for("10 Good counter values in the journal",
             lambda: sum(q == GOOD for *_, q in counter_rows()) >= 10, 60, logs=gw.tail)
    # a first connect that timed out on a loaded machine is an outage too
    outages = gw.status()["sources"]["plc"]["outages"]
    bad0 = sum(q == BAD_NC for *_, q in counter_rows())
    link_mode(admin, "blackhole")
    cut = time.monotonic()
    wait_for("the counter Bad (not connected) in the journal",
             lambda: sum(q == BAD_NC for *_, q in counter_rows()) > bad0, 30, logs=gw.tail)
    down = gw.status()["sources"]["plc"]
    assert not down["link_up"] and down["bad_reason"] and down["outages"] == outages + 1
    # the PLC keeps counting and historizing: let the gap grow
    wait_for(f"a gap of {GAP_S} s", lambda: time.monotonic() - cut > GAP_S, GAP_S + 5)
    link_mode(admin, "pass")
    wait_for("the backfill in `status`",
             lambda: gw.status()["sources"]["plc"]["backfill"] != "none", 60, interval=0.5,
             logs=gw.tail)

    def last_bad(rows: list[tuple[int, int, float, int]]) -> int:
        """Where the cut's Bad sample is (a failed first connect may have put one earlier)."""
        return max(i for i, r in enumerate(rows) if r[3] == BAD_NC)

    def live_after_bad() -> int:
        rows = counter_rows()
        return sum(q == GOOD for *_, q in rows[last_bad(rows):])

    wait_for("gap and live counter values after the Bad sample",
             lambda: live_after_bad() >= 10 * GAP_S + 20, 60, logs=gw.tail)

    rows = counter_rows()
    good = [(ts, v) for _, ts, v, q in rows if q == GOOD]
    values = [int(v) for _, v in good]
    assert values == list(range(values[0], values[0] + len(values))), values  # once, no hole
    assert all(a < b for (a, _), (b, _) in itertools.pairwise(good))  # in order
    bad = last_bad(rows)
    before = [int(v) for _, _, v, q in rows[:bad] if q == GOOD]
    after = [int(v) for _, _, v, q in rows[bad:] if q == GOOD]
    assert after[0] == before[-1] + 1  # the first value after the cut came from history

    filled = gw.events("opcua backfill")
    assert len(filled) == 1 and filled[0]["tags"] == 2, filled  # counter, temp: flag has none
    # the journal marks the backfill: its checkpoint, committed with the backfilled
    # batches, names the window (the log line says the same to the microsecond)
    mark = json.loads(journal_checkpoint(gw.state_dir, "opcua_backfill:plc"))
    gap_to = int(mark["gap_to_ns"])
    logged = int(datetime.fromisoformat(filled[0]["gap_to"]).timestamp() * 1e9)
    assert abs(gap_to - logged) < 2000 and mark["tags"] == 2
    both = journal_rows(gw.state_dir, {counter, temp})
    cut_at = last_bad(both)
    seen: dict[int, int] = {}  # each tag's newest Good value before the cut
    for tag, ts, _, q in both[:cut_at]:
        if q == GOOD:
            seen[tag] = ts
    gap_values = [r for r in both[cut_at:] if r[3] == GOOD and seen[r[0]] < r[1] <= gap_to]
    assert len(gap_values) >= 2 * 10 * GAP_S * 0.8  # two tags at 10 Hz over the gap
    # what the backfill counted (journal mark, log, status) is exactly the gap's values
    assert mark["values"] == filled[0]["values"] == len(gap_values)
    st_plc = gw.status()["sources"]["plc"]
    assert st_plc["link_up"] and st_plc["bad_reason"] == ""
    assert st_plc["outages"] == outages + 1
    assert (st_plc["backfill"], st_plc["backfilled_values"], st_plc["unfilled_tags"]) == (
        "partial", len(gap_values), 1)
    flowing = gw.events("opcua data flowing again")
    assert len(flowing) == outages + 1
    assert st_plc["last_outage_s"] == pytest.approx(flowing[-1]["missing_s"], abs=0.01)
    # from the loss (within two keepalives of the cut) to the first value again
    assert 0 < st_plc["last_outage_s"] < time.monotonic() - cut
