"""OPC-UA server with many subscribed clients: what asyncua costs per notification and per
client, and what it does to the event loop while the gateway ingests.

One run: the OPC-UA sink in this process with ``--tags`` tags, a producer publishing
``--rate`` samples/s (batches every 5 ms, the tags in turn), and ``--clients`` node-opcua
clients (separate processes) each subscribed to every tag (sampling 0, queue 1,
publishing ``--publishing-ms``). Measured over ``--seconds`` once every client is
subscribed:

* loop lag p99 / max: a 1 ms ticker on the loop;
* reaction p99 / max: a thread sends a UDP datagram every 10 ms to an endpoint served
  by the loop, which answers at once (the path of a device answer that an interlock on
  the main loop waits for); round trip measured by the thread;
* notifications/s received per client, the server's tag writes/s, process CPU, peak RSS,
  load average.

    .venv/bin/python bench/opcua_clients.py --clients 5 --tags 5000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from peers import free_port, node_client_result, spawn_node_client, wait_stderr_line  # noqa: E402

from edge.app import SWITCH_INTERVAL_S  # noqa: E402
from edge.components import BuildContext, Hooks  # noqa: E402
from edge.model import SampleBatch, TagRegistry  # noqa: E402
from edge.runtime.metrics import Metrics  # noqa: E402
from edge.sinks import opcua_notify  # noqa: E402
from edge.sinks.opcua import OpcUaConfig, OpcUaSink  # noqa: E402
from edge.sinks.opcua_history import OpcUaHistoryConfig  # noqa: E402
from edge.sinks.opcua_thread import ThreadedOpcUaSink  # noqa: E402

SPAWNED: list[asyncio.subprocess.Process] = []  # killed at exit, whatever happened


class _Costs:
    """asyncua's per-notification costs, by thread CPU time (measurement only: wraps two
    asyncua methods in this process). ``datachange_callback`` runs for every tag write
    and every client monitoring the tag; ``forward_publish_response`` builds and encodes
    one client's publish response (all its queued notifications) in one go."""

    def __init__(self) -> None:
        self.cb_ns = 0
        self.cb_calls = 0
        self.pub_ns: list[int] = []
        self.pub_wall_ns: list[int] = []
        self.pub_items: list[int] = []

    def install(self) -> None:
        from asyncua.server.monitored_item_service import MonitoredItemService
        from asyncua.server.uaprocessor import UaProcessor
        costs = self
        cb = MonitoredItemService.datachange_callback
        fwd = UaProcessor.forward_publish_response

        async def datachange_callback(self: object, *a: object, **k: object) -> None:
            t = time.thread_time_ns()
            await cb(self, *a, **k)
            costs.cb_ns += time.thread_time_ns() - t
            costs.cb_calls += 1

        async def forward_publish_response(self: object, result: object, req: object) -> None:
            data: list[object] = result.NotificationMessage.NotificationData  # type: ignore[attr-defined]
            items = 0
            for n in data:
                items += len(getattr(n, "MonitoredItems", ()))
            t, w = time.thread_time_ns(), time.perf_counter_ns()
            await fwd(self, result, req)
            costs.pub_ns.append(time.thread_time_ns() - t)
            costs.pub_wall_ns.append(time.perf_counter_ns() - w)
            costs.pub_items.append(items)

        MonitoredItemService.datachange_callback = datachange_callback  # type: ignore[method-assign]
        UaProcessor.forward_publish_response = forward_publish_response  # type: ignore[method-assign]

    def report(self) -> dict[str, float]:
        items = sum(self.pub_items)
        big = [ns for ns, n in zip(self.pub_ns, self.pub_items, strict=True) if n]
        return {
            "datachange_callback_us": round(self.cb_ns / max(1, self.cb_calls) / 1e3, 2),
            "datachange_callbacks": self.cb_calls,
            "publish_responses": len(big),
            "notifications_per_response": round(items / max(1, len(big))),
            "encode_us_per_notification": round(sum(self.pub_ns) / max(1, items) / 1e3, 2),
            "publish_response_cpu_ms_max": round(max(self.pub_ns, default=0) / 1e6, 1),
            "publish_response_wall_ms_max": round(max(self.pub_wall_ns, default=0) / 1e6, 1),
        }


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


def _prober(port: int, stop: threading.Event, out: list[float]) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2.0)
    while not stop.is_set():
        t0 = time.perf_counter()
        s.sendto(b"x", ("127.0.0.1", port))
        try:
            s.recv(16)
            out.append(time.perf_counter() - t0)
        except TimeoutError:
            out.append(2.0)
        time.sleep(0.01)
    s.close()


async def run(clients: int, tags: int, rate: int, seconds: float, publishing_ms: float,
              history: bool, threaded: bool, profile: bool = False,
              coalesce: bool = True) -> dict[str, object]:
    costs = _Costs()
    if profile:
        costs.install()
    reg = TagRegistry()
    for i in range(tags):
        reg.add(f"dev{i // 100}", f"t{i}")
    metrics = Metrics()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = OpcUaConfig(endpoint=f"opc.tcp://127.0.0.1:{free_port()}/edge",
                          history=OpcUaHistoryConfig(enabled=history), threaded=threaded,
                          coalesce_max_ms=1000.0 if coalesce else 0.0)
        ctx = BuildContext("bench", reg, metrics, Path(tmp), lambda n: "",
                           Hooks(lambda: None))
        sink = cfg.build(ctx)
        assert isinstance(sink, OpcUaSink | ThreadedOpcUaSink)
        server_task = asyncio.create_task(sink.run())
        await asyncio.wait_for(sink.started.wait(), 120)
        stop = asyncio.Event()
        per = max(1, rate // 200)
        ids_all = np.arange(tags, dtype=np.int32)

        async def produce() -> None:
            i = 0
            while not stop.is_set():
                ids = ids_all[(np.arange(per) + i * per) % tags]
                i += 1
                sink.publish(SampleBatch(ids, np.full(per, time.time_ns()),
                                         np.full(per, float(i))), [])
                await asyncio.sleep(0.005)

        producer = asyncio.create_task(produce())
        procs = []
        for c in range(clients):
            proc = await spawn_node_client("opcua_client.js", {
                "endpoint": sink.endpoint, "pki": str(Path(tmp) / f"pki{c}"),
                "security": "none", "ns_uri": cfg.namespace_uri, "signal_ready": True,
                "steps": [{"subscribe": [f"s={t.key}" for t in reg],
                           "ms": seconds * 1000, "publishing_ms": publishing_ms}],
            })
            SPAWNED.append(proc)
            await wait_stderr_line(proc, "SUBSCRIBED", 120)
            procs.append(proc)
        loop = asyncio.get_running_loop()
        port = free_port()
        transport, _ = await loop.create_datagram_endpoint(
            _Echo, local_addr=("127.0.0.1", port))
        lags: list[float] = []
        rtts: list[float] = []
        halt = threading.Event()
        prober = threading.Thread(target=_prober, args=(port, halt, rtts), daemon=True)

        async def ticker() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(time.perf_counter() - t - 0.001)

        load0 = os.getloadavg()[0]
        cpu0 = time.process_time()
        before = metrics.snapshot(["edge_opcua_updates_total"]).get(
            "edge_opcua_updates_total", 0.0)
        t0 = time.perf_counter()
        tick = asyncio.create_task(ticker())
        prober.start()
        if procs:
            outs = [await node_client_result(p, seconds + 120) for p in procs]
            subs = [o["results"][0]["subscribe"] for o in outs if o.get("ok")]
        else:
            await asyncio.sleep(seconds)
            subs = []
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        halt.set()
        stop.set()
        await asyncio.gather(producer, tick)
        prober.join()
        transport.close()
        written = metrics.snapshot(["edge_opcua_updates_total"]).get(
            "edge_opcua_updates_total", 0.0) - before
        server_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server_task
    lag = np.array(lags) * 1000
    rtt = np.array(rtts) * 1000
    notes = [s["count"] / s["seconds"] for s in subs]
    return {
        "clients": clients, "tags": tags, "rate": rate, "history": history,
        "threaded": threaded, "coalesce": coalesce,
        "asyncua_deepcopy": not opcua_notify._installed,
        "loop_lag_p99_ms": round(float(np.percentile(lag, 99)), 2),
        "loop_lag_max_ms": round(float(lag.max()), 1),
        "reaction_p50_ms": round(float(np.percentile(rtt, 50)), 2),
        "reaction_p99_ms": round(float(np.percentile(rtt, 99)), 2),
        "reaction_max_ms": round(float(rtt.max()), 1), "probes": len(rtts),
        "notifications_per_s_per_client": [round(n) for n in notes],
        "server_writes_per_s": round(written / elapsed),
        "cpu_per_s": round(cpu / elapsed, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load": round(max(load0, os.getloadavg()[0]), 1),
    } | (costs.report() if profile else {})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--publishing-ms", type=float, default=1000.0)
    ap.add_argument("--no-history", action="store_true")
    ap.add_argument("--threaded", action="store_true")
    ap.add_argument("--no-coalesce", action="store_true",
                    help="write every tag every update interval (before edge.sinks.opcua_writer)")
    ap.add_argument("--deepcopy", action="store_true",
                    help="keep asyncua's per-client deepcopy (before edge.sinks.opcua_notify)")
    ap.add_argument("--profile", action="store_true",
                    help="also time asyncua's per-notification work (wraps two methods)")
    args = ap.parse_args()
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as the daemon runs (edge.app)
    if args.deepcopy:
        opcua_notify.install = lambda: False  # the sink calls it at start
    try:
        print(json.dumps(asyncio.run(run(args.clients, args.tags, args.rate, args.seconds,
                                         args.publishing_ms, not args.no_history,
                                         args.threaded, args.profile,
                                         not args.no_coalesce))))
    finally:
        for proc in SPAWNED:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()


if __name__ == "__main__":
    main()
