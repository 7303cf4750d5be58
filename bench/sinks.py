"""Durable sinks: delivery rates and how long a backlog takes to drain.

Every figure goes through the real path: journal (SQLite) -> delivery loop -> sink ->
HTTP -> peer, with the peer in its own process (influxd 1.x, VictoriaMetrics, the
hw_sim MES). While the backlog drains, a ticker task measures how long the event loop
was held at a time (the interlocks' clock must stay free).

    .venv/bin/python bench/sinks.py              # 1,000,000-sample backlog, 100k records
    .venv/bin/python bench/sinks.py --quick      # 200,000 samples, 20k records
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from peers import Peer, free_port, start_influxdb1, start_victoria_metrics, wait_http  # noqa: E402

from edge.components import DurableSink  # noqa: E402
from edge.journal import Journal, JournalWriter  # noqa: E402
from edge.model import HealthAlert, InterlockTrip, Record, SampleBatch, TagRegistry  # noqa: E402
from edge.runtime.metrics import Metrics  # noqa: E402
from edge.sinks.delivery import deliver  # noqa: E402
from edge.sinks.influx import InfluxSink, InfluxSinkConfig  # noqa: E402
from edge.sinks.lineproto import SampleEncoder  # noqa: E402
from edge.sinks.mes import MesSink, MesSinkConfig  # noqa: E402

BATCH = 5000


def registry() -> TagRegistry:
    reg = TagRegistry()
    for d in range(10):
        for t in range(50):
            reg.add(f"dev{d}", f"tag{t}")
    return reg


def sample_batches(n_points: int, reg: TagRegistry) -> list[SampleBatch]:
    rng = np.random.default_rng(0)
    base = (time.time_ns() // 10**9 - 7200) * 10**9
    out = []
    for b in range(n_points // BATCH):
        i = np.arange(BATCH) + b * BATCH
        out.append(SampleBatch(i % len(reg), base + (i // len(reg)) * 1_000_000,
                               np.round(rng.normal(100, 20, BATCH), 3)))
    return out


def record_lists(n_records: int, per_entry: int) -> list[list[Record]]:
    out: list[list[Record]] = []
    base = time.time_ns() - 3600 * 10**9
    for e in range(n_records // per_entry):
        recs: list[Record] = []
        for k in range(per_entry):
            ts = base + (e * per_entry + k) * 1000
            if k % 2:
                recs.append(HealthAlert(ts_ns=ts, motor=f"stf/m{k % 14}", health=0.45,
                                        ttf_s=3600.0, reason="health below 0.5"))
            else:
                recs.append(InterlockTrip(ts_ns=ts, interlock="overtemp",
                                          tag="etch1/chamber_temp", condition="> 188",
                                          value=189.2, limit=188.0, action="stop",
                                          action_ok=True, reaction_ns=900_000))
        out.append(recs)
    return out


def bench_encode(reg: TagRegistry) -> float:
    batch = sample_batches(BATCH, reg)[0]
    enc = SampleEncoder(reg, {"gateway": "gw1", "site": "fab1"})
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        enc.encode(batch)
        best = min(best, time.perf_counter() - t0)
    return BATCH / best


async def drain(tmp: Path, sink: DurableSink, items: list[SampleBatch] | list[list[Record]],
                points: int) -> dict[str, float]:
    """Fill a journal with ``items``, then time the delivery loop until it drained."""
    metrics = Metrics()
    journal = Journal(tmp / f"{sink.name}.db", sinks=[sink.name], metrics=metrics)
    writer = JournalWriter(journal, commit_interval_s=0.001, metrics=metrics,
                           max_pending_points=4 * points + 1000)
    writer_task = asyncio.create_task(writer.run())
    for item in items:
        writer.submit(item)
    await writer.flush()
    stall = cpu_stall = 0.0

    async def ticker() -> None:
        # Wall time also counts the OS preempting us on a busy host; thread CPU time is
        # what this process itself held the loop for.
        nonlocal stall, cpu_stall
        while True:
            t0, c0 = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0)
            stall = max(stall, time.perf_counter() - t0)
            cpu_stall = max(cpu_stall, time.thread_time() - c0)

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    task = asyncio.create_task(deliver(writer, sink, metrics=metrics, idle_poll_s=0.005))
    await wait_drained(journal, sink.name)
    seconds = time.perf_counter() - t0
    for t in (task, tick, writer_task):
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    await sink.close()
    dead = len(journal.dead_letters())
    journal.close()
    return {"seconds": seconds, "rate": points / seconds, "max_stall_ms": stall * 1e3,
            "max_cpu_stall_ms": cpu_stall * 1e3, "dead_letters": dead}


async def wait_drained(journal: Journal, sink: str) -> None:
    while journal.cursor(sink) < journal.head:  # noqa: ASYNC110 - a poll, by design
        await asyncio.sleep(0.005)


def start_mes(tmp: Path) -> Peer:
    port, admin = free_port(), free_port()
    log = tmp / "mes.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from hw_sim.cli import main; main()", "mes",
             "--port", str(port), "--admin-port", str(admin), "--db", str(tmp / "mes.db")],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )
    peer = Peer("hw_sim mes", admin, proc, tmp, log)
    wait_http(peer, "/api/v1/counts")
    peer.port = port
    return peer


async def run(n_points: int, n_records: int) -> None:
    reg = registry()
    print(f"line protocol encode, {BATCH}-point batch: {bench_encode(reg):,.0f} points/s")
    batches = sample_batches(n_points, reg)
    records = record_lists(n_records, per_entry=100)
    rows: list[tuple[str, str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        influx = start_influxdb1(tmp)
        vm = start_victoria_metrics(tmp)
        mes = start_mes(tmp)
        try:
            async with httpx.AsyncClient() as c:
                await c.post(f"{influx.url}/query", data={"q": "CREATE DATABASE bench"})
            cases: list[tuple[str, str, Callable[[], Awaitable[dict[str, float]]]]] = []
            v1 = InfluxSink(InfluxSinkConfig(name="influx_v1", url=influx.url,
                                             database="bench"), gateway_id="gw1", tags=reg)
            v2 = InfluxSink(InfluxSinkConfig(name="vm_v2", url=vm.url, api="v2", org="o",
                                             bucket="b", precision="ms"),
                            gateway_id="gw1", tags=reg)
            ms = MesSink(MesSinkConfig(name="mes", url=f"http://127.0.0.1:{mes.port}"),
                         gateway_id="gw1")
            cases = [
                ("InfluxDB 1.6 (v1 /write, ns)", "samples",
                 lambda: drain(tmp, v1, batches, n_points)),
                ("VictoriaMetrics (v2 /api/v2/write, ms)", "samples",
                 lambda: drain(tmp, v2, batches, n_points)),
                ("hw_sim MES (JSON, 100 records/entry)", "records",
                 lambda: drain(tmp, ms, records, n_records)),
            ]
            for name, unit, fn in cases:
                rows.append((name, unit, await fn()))
        finally:
            for p in (influx, vm, mes):
                p.stop()
    print(f"{'peer':<40}{'backlog':>10}{'unit':>8}{'drain s':>9}{'per s':>11}"
          f"{'loop held ms: wall':>20}{'cpu':>6}{'dead':>6}")
    for name, unit, r in rows:
        n = n_points if unit == "samples" else n_records
        print(f"{name:<40}{n:>10,}{unit:>8}{r['seconds']:>9.2f}{r['rate']:>11,.0f}"
              f"{r['max_stall_ms']:>20.1f}{r['max_cpu_stall_ms']:>6.1f}"
              f"{r['dead_letters']:>6.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}; journal -> delivery loop -> sink -> peer "
          "(peers in their own processes, loopback)")
    if args.quick:
        asyncio.run(run(200_000, 20_000))
    else:
        asyncio.run(run(1_000_000, 100_000))


if __name__ == "__main__":
    main()
