"""Issue 15's record benchmark: CMM results over MQTT QoS 1 -> compensation -> hw_sim MES.

A publisher (a paho thread in this process) sends one JSON CMM result per message at
QoS 1 with a unique part id, over 4 topics, at each rate in turn for ``--seconds``; the
gateway (the daemon, as in tests/system) compensates each result and delivers the
Measurement to the hw_sim MES. Per rate: the part ids the broker acknowledged against
those at the MES (counted by part id, not by our record id: lost and duplicates), the
gateway's CPU (share of one core) and peak RSS, the publisher's CPU, and
publish-to-MES latency p50/p99 (publish time to the MES's commit time). Lossless means
every acknowledged part exactly once at the MES and the publisher kept 95% of the rate.

    PYTHONPATH=$PWD python bench/mqtt_records.py --rates 250,500,1000,2000 --seconds 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "system"))
from harness import stack, wait_for  # noqa: E402
from mqtt_records import Publisher, source_config  # noqa: E402


def at_mes(db: Path, prefix: str) -> dict[str, list[int]]:
    """part id -> MES commit times (ns) of its measurement records."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT received_ns, body FROM records WHERE type = 'measurement'"
                           ).fetchall()
    finally:
        con.close()
    out: dict[str, list[int]] = {}
    for received_ns, body in rows:
        part = json.loads(body)["part_id"]
        if part.startswith(prefix + "-"):
            out.setdefault(part, []).append(int(received_ns))
    return out


def step(st: Any, gw_proc: psutil.Process, rate: int, seconds: float) -> dict[str, Any]:
    me = psutil.Process()
    prefix = f"R{rate}"
    g0, m0, t0 = gw_proc.cpu_times(), me.cpu_times(), time.monotonic()
    rss = 0
    pub = Publisher(st.broker.port, float(rate), prefix=prefix, max_inflight=1000).start()
    while time.monotonic() - t0 < seconds:
        rss = max(rss, gw_proc.memory_info().rss)
        time.sleep(0.25)
    sent_s = time.monotonic() - t0
    pub.stop()
    g1, m1 = gw_proc.cpu_times(), me.cpu_times()
    db = st.tmp / "mes.sqlite"

    def delivered() -> bool | None:
        return set(at_mes(db, prefix)) >= pub.acked or None
    with contextlib.suppress(AssertionError):  # what is missing then counts as lost
        wait_for("the MES to hold every acknowledged part", delivered, 120, interval=0.5)
    wall = time.monotonic() - t0
    got = at_mes(db, prefix)
    lat = np.array([min(ts) - pub.sent_ns[p] for p, ts in got.items() if p in pub.sent_ns],
                   np.float64) / 1e6
    lost = len(pub.acked - set(got))
    dups = sum(len(v) - 1 for v in got.values())
    return {
        "rate": rate, "sent": pub.sent, "achieved_rate": round(pub.sent / sent_s, 1),
        "acked": len(pub.acked), "at_mes": len(got), "lost": lost, "duplicates": dups,
        "lossless": lost == 0 and dups == 0 and pub.sent >= 0.95 * rate * seconds,
        "gateway_cpu": round((g1.user + g1.system - g0.user - g0.system) / wall, 3),
        "publisher_cpu": round((m1.user + m1.system - m0.user - m0.system) / sent_s, 3),
        "gateway_rss_mb": round(rss / 2**20, 1),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rates", default="250,500,1000,2000,4000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), etch=False) as st:
        assert st.broker is not None
        cfg = st.gateway_config(sources=(), interlock=False, opcua=False)
        cfg["sources"].append(source_config(st.broker.port))
        cfg["compensation"] = [{"name": "cmm2"}]
        gw = st.make_gateway(cfg)
        gw.start()
        wait_for("the MQTT source's link", lambda: gw.metric_sum(
            "edge_source_link_up", 'source="quality"') >= 1, 20)
        proc = psutil.Process(gw.pid)
        print(f"{'rate/s':>7}{'sent/s':>8}{'acked':>8}{'lost':>6}{'dups':>6}{'gw cpu':>8}"
              f"{'pub cpu':>8}{'rss MB':>8}{'p50 ms':>8}{'p99 ms':>8}  lossless")
        for rate in (int(r) for r in args.rates.split(",")):
            r = step(st, proc, rate, args.seconds)
            results.append(r)
            print(f"{r['rate']:>7}{r['achieved_rate']:>8}{r['acked']:>8}{r['lost']:>6}"
                  f"{r['duplicates']:>6}{r['gateway_cpu']:>8}{r['publisher_cpu']:>8}"
                  f"{r['gateway_rss_mb']:>8}{r['latency_p50_ms']!s:>8}"
                  f"{r['latency_p99_ms']!s:>8}  {r['lossless']}", flush=True)
        gw.terminate()
    best = max((r["rate"] for r in results if r["lossless"]), default=0)
    print(f"highest lossless rate: {best} records/s")
    if args.out:
        Path(args.out).write_text(json.dumps({"results": results, "best": best}, indent=1))


if __name__ == "__main__":
    main()
