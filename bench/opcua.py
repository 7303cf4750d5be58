"""OPC-UA server: address-space build time and live update rate with a subscribed client.

1. Ready time for 5,000 tags (15,000 nodes: variable + EngineeringUnits + EURange) with
   the bulk inserter, and, for reference, the same items through asyncua's add_nodes
   service. ``server.init()`` (asyncua's standard address space, the same for any tag
   count) is reported apart, built by asyncua and loaded from the daemon's cache folder.
2. Updates/s with one node-opcua client subscribed to 1,000 tags (sampling 0, publishing
   100 ms) while a producer publishes a batch of all 1,000 tags every 5 ms: tag values
   the server wrote per second, notifications the client received per second, and the
   event-loop lag (a 1 ms ticker) as evidence that the writer's slicing keeps the loop
   free for the interlocks.

    .venv/bin/python bench/opcua.py            # about 1 minute
    .venv/bin/python bench/opcua.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from asyncua import Server, ua  # noqa: E402
from peers import free_port, node_client_result, spawn_node_client, wait_stderr_line  # noqa: E402

from edge.components import BuildContext, Hooks  # noqa: E402
from edge.model import TagRegistry  # noqa: E402
from edge.runtime.metrics import Metrics  # noqa: E402
from edge.sinks import opcua_standard  # noqa: E402
from edge.sinks.opcua import OpcUaConfig, OpcUaSink  # noqa: E402
from edge.sinks.opcua_insert import insert_nodes  # noqa: E402
from edge.sinks.opcua_space import object_item, tag_items  # noqa: E402


def registry(devices: int, per_device: int) -> TagRegistry:
    reg = TagRegistry()
    for d in range(devices):
        for t in range(per_device):
            reg.add(f"dev{d:03d}", f"tag{t:04d}", unit="degC",
                    dtype="float32" if t % 2 else "float64", low=0.0, high=250.0)
    return reg


async def build_time(devices: int, per_device: int, service: bool) -> dict[str, float]:
    reg = registry(devices, per_device)
    t0 = time.perf_counter()
    server = Server()
    await server.init()
    t1 = time.perf_counter()
    idx = await server.register_namespace("urn:bench")
    root = ua.NodeId("_devices", idx)
    items = [object_item(root, "Devices", server.nodes.objects.nodeid, idx, folder=True)]
    items += tag_items(reg, idx, root)
    t2 = time.perf_counter()
    if service:
        results = await server.iserver.isession.add_nodes(items)
        assert all(r.StatusCode.is_good() for r in results)
    else:
        await insert_nodes(server.iserver.aspace, items)
    t3 = time.perf_counter()
    return {"init_s": t1 - t0, "items_s": t2 - t1, "insert_s": t3 - t2,
            "tags_ready_s": t3 - t1, "nodes": float(len(items))}


async def init_times(runs: int = 3) -> dict[str, float]:
    """server.init(): asyncua building its standard address space, and the daemon's server
    loading it from the cache folder (written by a first, uncounted start); medians."""
    built, cached = [], []
    with tempfile.TemporaryDirectory() as tmp:
        await opcua_standard.server(Path(tmp)).init()
        for _ in range(runs):
            t0 = time.perf_counter()
            await Server().init()
            built.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await opcua_standard.server(Path(tmp)).init()
            cached.append(time.perf_counter() - t0)
    return {"built_s": float(np.median(built)), "cached_s": float(np.median(cached))}


async def update_rate(
    seconds: float, interval_ms: float, tags: int = 1000, subscribe: bool = True
) -> dict[str, float]:
    reg = registry(10, tags // 10)
    metrics = Metrics()
    with tempfile.TemporaryDirectory() as tmp:
        # the in-loop server writing every round, as when these figures were first taken
        cfg = OpcUaConfig(endpoint=f"opc.tcp://127.0.0.1:{free_port()}/edge",
                          update_interval_ms=interval_ms, threaded=False, coalesce_max_ms=0.0)
        ctx = BuildContext("bench", reg, metrics, Path(tmp), lambda n: "",
                           Hooks(lambda: None))
        sink = cfg.build(ctx)
        assert isinstance(sink, OpcUaSink)
        server_task = asyncio.create_task(sink.run())
        await asyncio.wait_for(sink.started.wait(), 60)
        proc = None
        if subscribe:
            proc = await spawn_node_client("opcua_client.js", {
                "endpoint": sink.endpoint, "pki": str(Path(tmp) / "pki"), "security": "none",
                "ns_uri": cfg.namespace_uri, "signal_ready": True,
                "steps": [{"subscribe": [f"s={t.key}" for t in reg], "ms": seconds * 1000,
                           "publishing_ms": 100}],
            })
            await wait_stderr_line(proc, "SUBSCRIBED", 60)
        ids = np.arange(len(reg), dtype=np.int32)
        lags: list[float] = []
        stop = asyncio.Event()

        async def produce() -> None:
            from edge.model import SampleBatch
            i = 0
            while not stop.is_set():
                i += 1
                sink.publish(SampleBatch(ids, np.full(len(ids), time.time_ns()),
                                         np.full(len(ids), float(i))), [])
                await asyncio.sleep(0.005)

        async def ticker() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(time.perf_counter() - t - 0.001)

        before = metrics.snapshot().get("edge_opcua_updates_total", 0.0)
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(produce()), asyncio.create_task(ticker())]
        if proc is not None:
            out = await node_client_result(proc, seconds + 60)
            sub = out["results"][0]["subscribe"]
        else:
            await asyncio.sleep(seconds)
            sub = {"count": 0, "seconds": seconds}
        elapsed = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*tasks)
        written = metrics.snapshot().get("edge_opcua_updates_total", 0.0) - before
        server_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server_task
    lag = np.array(lags) * 1000
    return {
        "server_updates_per_s": written / elapsed,
        "client_notifications_per_s": sub["count"] / sub["seconds"],
        "loop_lag_p99_ms": float(np.percentile(lag, 99)),
        "loop_lag_max_ms": float(lag.max()),
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seconds = 4.0 if args.quick else 10.0
    print("# address space: 5,000 tags (variable + EngineeringUnits + EURange each)")
    shapes = [(50, 100)] if args.quick else [(50, 100), (5, 1000)]
    for devices, per in shapes:
        for service in (False, True):
            r = await build_time(devices, per, service)
            how = "add_nodes service" if service else "bulk insert_nodes"
            print(f"{devices:3d} devices x {per:4d} tags, {how:18s}: tags ready in "
                  f"{r['tags_ready_s']:.2f} s (items {r['items_s']:.2f} s + insert "
                  f"{r['insert_s']:.2f} s, {int(r['nodes'])} nodes); server.init() "
                  f"{r['init_s']:.2f} s")
    r = await init_times()
    print(f"server.init(): standard address space built {r['built_s']:.2f} s, loaded from "
          f"the cache folder {r['cached_s']:.3f} s (medians of 3)")
    print("# live updates: node-opcua client subscribed to 1,000 tags, producer 200 batches/s")
    for interval, subscribed in ((50.0, True), (0.0, True), (50.0, False)):
        r = await update_rate(seconds, interval, subscribe=subscribed)
        who = "1 client" if subscribed else "no client"
        print(f"{who:9s} update_interval_ms={interval:4.0f}: server wrote "
              f"{r['server_updates_per_s']:,.0f} updates/s, client received "
              f"{r['client_notifications_per_s']:,.0f} "
              f"notifications/s; loop lag p99 {r['loop_lag_p99_ms']:.2f} ms, "
              f"max {r['loop_lag_max_ms']:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
