"""Issue 15's record benchmark: CMM results over MQTT QoS 1 -> compensation -> hw_sim MES.

A publisher (a paho thread in this process) sends one JSON CMM result per message at
QoS 1 with a unique part id, over 4 topics, at each rate in turn for ``--seconds``; the
gateway (the daemon, as in tests/system) compensates each result and delivers the
Measurement to the hw_sim MES. Per rate: the part ids the broker acknowledged against
those at the MES (counted by part id, not by our record id: lost and duplicates), the
gateway's CPU (share of one core) and peak RSS, the publisher's CPU, and
publish-to-MES latency p50/p99 (publish time to the MES's commit time). Lossless means
every acknowledged part exactly once at the MES and the publisher kept 95% of the rate.

Side by side (``--bare``): at each rate the same publisher also feeds the bare path
(``bench/mqtt_records_bare.py``: aiomqtt + httpx, ack on receipt, no journal) on
other topics, one after the other, counted the same way. ``--inflight N`` sets the
broker's ``max_inflight_messages`` (mosquitto's default is 20 per client; the gateway
acknowledges a QoS 1 message only after its journal commit, so this window bounds how
many messages one commit round can take). ``--repeat`` runs every step that often;
the table then shows medians.

    PYTHONPATH=$PWD python bench/mqtt_records.py --rates 1000,2000,5000 --seconds 10 --bare
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "system"))
from harness import stack, wait_for  # noqa: E402
from mqtt_records import TOPICS, Publisher, result, source_config  # noqa: E402
from peers import start_mosquitto  # noqa: E402

BARE_TOPICS = [f"bare/st{k}/result" for k in range(4)]


class LinePublisher:
    """``Publisher``'s interface over one ``mosquitto_pub -l -q 1`` per topic (C, so a
    loaded machine's spare CPU goes to the paths measured, not to paho): a thread writes
    one JSON result per line at ``rate``. mosquitto_pub exits 0 on end of input only once
    every message was acknowledged, so then ``acked`` is every part sent."""

    def __init__(self, port: int, rate: float, prefix: str, max_inflight: int = 1000,
                 topics: list[str] | None = None) -> None:
        self.rate, self.prefix = rate, prefix
        self.topics = TOPICS if topics is None else topics
        self.acked: set[str] = set()
        self.sent_ns: dict[str, int] = {}
        self.sent = 0
        self._stop = threading.Event()
        self.procs = [subprocess.Popen(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-l",
             "-M", str(max_inflight), "-t", t, "-i", f"pub-{prefix}-{k}"],
            stdin=subprocess.PIPE) for k, t in enumerate(self.topics)]
        self._thread = threading.Thread(target=self._run, daemon=True, name="line-publisher")

    def start(self) -> LinePublisher:
        time.sleep(0.3)  # let mosquitto_pub connect (a bench, not a test)
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        i = 0
        n = len(self.procs)
        while not self._stop.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            if due <= i:
                time.sleep(0.001)  # pacing, not a wait for correctness
                continue
            lines: list[list[bytes]] = [[] for _ in range(n)]
            now = time.time_ns()
            for j in range(i, due):
                part = f"{self.prefix}-{j:08d}"
                self.sent_ns[part] = now
                lines[j % n].append(result(part, now / 1e9) + b"\n")
            for proc, chunk in zip(self.procs, lines, strict=True):
                if chunk:
                    assert proc.stdin is not None
                    proc.stdin.write(b"".join(chunk))
                    proc.stdin.flush()
            self.sent = i = due

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        ok = True
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self.procs:
            try:
                ok = proc.wait(timeout) == 0 and ok
            except subprocess.TimeoutExpired:
                proc.kill()
                ok = False
        if ok:
            self.acked = set(self.sent_ns)


def at_mes(db: Path, prefix: str) -> dict[str, list[int]]:
    """part id -> MES commit times (ns) of its measurement records."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT received_ns, json_extract(body, '$.part_id') AS part FROM records "
            "WHERE type = 'measurement' AND part LIKE ?", (prefix + "-%",)).fetchall()
    finally:
        con.close()
    out: dict[str, list[int]] = {}
    for received_ns, part in rows:
        out.setdefault(part, []).append(int(received_ns))
    return out


def step(st: Any, gw_proc: psutil.Process, rate: int, seconds: float, prefix: str,
         topics: list[str] | None = None, c_publisher: bool = True) -> dict[str, Any]:
    me = psutil.Process()
    peers = {"mes": next(p for p in me.children() if "plant-mes.toml" in " ".join(p.cmdline())),
             "broker": psutil.Process(st.broker.proc.pid)}
    p0 = {k: sum(p.cpu_times()[:2]) for k, p in peers.items()}
    g0, m0, t0 = gw_proc.cpu_times(), me.cpu_times(), time.monotonic()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    rss = 0
    kind = LinePublisher if c_publisher else Publisher
    pub = kind(st.broker.port, float(rate), prefix=prefix, max_inflight=1000,
               topics=topics).start()
    while time.monotonic() - t0 < seconds:
        rss = max(rss, gw_proc.memory_info().rss)
        time.sleep(0.25)
    sent_s = time.monotonic() - t0
    pub.stop()
    g1, m1 = gw_proc.cpu_times(), me.cpu_times()
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the mosquitto_pub processes
    pub_cpu = (m1.user + m1.system - m0.user - m0.system
               + c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
    db = st.tmp / "mes.sqlite"

    def delivered() -> bool | None:
        return set(at_mes(db, prefix)) >= pub.acked or None
    with contextlib.suppress(AssertionError):  # what is missing then counts as lost
        wait_for("the MES to hold every acknowledged part", delivered, 120, interval=0.5)
    wall = time.monotonic() - t0
    p1 = {k: sum(p.cpu_times()[:2]) for k, p in peers.items()}
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
        "cpu_us_per_record": round(1e6 * (g1.user + g1.system - g0.user - g0.system)
                                   / max(1, len(got)), 1),
        "publisher_cpu": round(pub_cpu / sent_s, 3),
        "gateway_rss_mb": round(rss / 2**20, 1),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "load": round(max(load0, os.getloadavg()[0]), 1),
        "drain_s": round(wall - sent_s, 1),  # after the publisher stopped: the backlog
        "mes_cpu": round((p1["mes"] - p0["mes"]) / wall, 3),
        "broker_cpu": round((p1["broker"] - p0["broker"]) / wall, 3),
    }


COLS = ["achieved_rate", "acked", "lost", "duplicates", "gateway_cpu", "cpu_us_per_record",
        "publisher_cpu",
        "gateway_rss_mb", "latency_p50_ms", "latency_p99_ms", "load", "drain_s", "mes_cpu",
        "broker_cpu"]


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(runs[0])
    for c in COLS:
        vals = [r[c] for r in runs if r[c] is not None]
        out[c] = round(statistics.median(vals), 3) if vals else None
    out["lossless"] = all(r["lossless"] for r in runs)
    out["runs"] = len(runs)
    return out


def show(who: str, r: dict[str, Any]) -> None:
    print(f"{who:>8}{r['rate']:>7}{r['achieved_rate']:>8}{r['acked']:>8}{r['lost']:>6}"
          f"{r['duplicates']:>6}{r['gateway_cpu']:>8}{r['cpu_us_per_record']:>8}"
          f"{r['publisher_cpu']:>8}"
          f"{r['gateway_rss_mb']:>8}{r['latency_p50_ms']!s:>8}"
          f"{r['latency_p99_ms']!s:>8}{r['load']:>6}{r['drain_s']:>7}{r['mes_cpu']:>7}"
          f"{r['broker_cpu']:>7}  {r['lossless']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rates", default="1000,2000,5000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--inflight", type=int, default=0,
                    help="broker max_inflight_messages (0: mosquitto's default, 20)")
    ap.add_argument("--bare", action="store_true", help="also run the bare aiomqtt+httpx path")
    ap.add_argument("--paho", action="store_true",
                    help="publish with paho in this process (default: mosquitto_pub)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if not args.paho and shutil.which("mosquitto_pub") is None:
        raise SystemExit("mosquitto_pub not found: apt-get install mosquitto-clients "
                         "(or --paho)")
    results: dict[str, list[dict[str, Any]]] = {"gateway": [], "bare": []}
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), etch=False) as st:
        assert st.broker is not None
        if args.inflight:  # the same broker again, with the window set
            port = st.broker.port
            st.peers.remove(st.broker)
            st.broker.stop()
            st.broker = start_mosquitto(st.tmp, port,
                                        extra=f"max_inflight_messages {args.inflight}\n")
            st.peers.append(st.broker)
        cfg = st.gateway_config(sources=(), interlock=False, opcua=False)
        cfg["sources"].append(source_config(st.broker.port))
        cfg["compensation"] = [{"name": "cmm2"}]
        gw = st.make_gateway(cfg)
        gw.start()
        wait_for("the MQTT source's link", lambda: gw.metric_sum(
            "edge_link_up", 'link="source:quality"') >= 1, 20)
        procs = {"gateway": psutil.Process(gw.pid)}
        bare = None
        if args.bare:
            bare = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "mqtt_records_bare.py"),
                 "--broker-port", str(st.broker.port),
                 "--mes", f"http://127.0.0.1:{st.ports.mes}"])
            procs["bare"] = psutil.Process(bare.pid)
            time.sleep(1.0)  # let it subscribe (a bench, not a test)
        print(f"{'path':>8}{'rate/s':>7}{'sent/s':>8}{'acked':>8}{'lost':>6}{'dups':>6}"
              f"{'cpu':>8}{'us/rec':>8}{'pub cpu':>8}{'rss MB':>8}{'p50 ms':>8}{'p99 ms':>8}"
              f"{'load':>6}{'drain':>7}{'mes':>7}{'broker':>7}"
              "  lossless")
        try:
            for k in range(args.repeat):
                for rate in (int(r) for r in args.rates.split(",")):
                    for who, proc in procs.items():
                        topics = BARE_TOPICS if who == "bare" else None
                        prefix = f"{who[0].upper()}{rate}r{k}"
                        r = step(st, proc, rate, args.seconds, prefix, topics,
                                 c_publisher=not args.paho)
                        r["path"] = who
                        results[who].append(r)
                        show(who, r)
        finally:
            if bare is not None:
                bare.terminate()
                bare.wait(10)
            gw.terminate()
    if args.repeat > 1:
        print("medians:")
    summary = {}
    for who, runs in results.items():
        by_rate: dict[int, list[dict[str, Any]]] = {}
        for r in runs:
            by_rate.setdefault(r["rate"], []).append(r)
        summary[who] = [median(v) for v in by_rate.values()]
        if args.repeat > 1:
            for r in summary[who]:
                show(who, r)
        best = max((r["rate"] for r in summary[who] if r["lossless"]), default=0)
        if runs:
            print(f"{who}: highest lossless rate: {best} records/s")
    if args.out:
        Path(args.out).write_text(json.dumps({"results": results, "medians": summary},
                                             indent=1))


if __name__ == "__main__":
    main()
