"""Value changes/s through the OPC-UA client source against a bare asyncua client, from
the same node-opcua server (tests/node/opcua_server.js) in the same run.

The server changes ``--items`` Double variables every ``--interval-ms``; each client
subscribes to all of them (publishing interval 100 ms, sampling 0 = every change) for
``--seconds`` and counts what it received. The bare client is asyncua's own handler mode
(one ``datachange_notification`` per value); the source is ours (one batch per publish,
through ``emit``). The issue's goal: the source within 20% of the bare client.
CPU is this process' CPU time over the window (the server runs in its own process).

    EDGE_TEST_NODE_MODULES=... .venv/bin/python bench/opcua_client.py --items 300

Measured here (2026-12-07, 2 loaded cores, 5 s windows): 300 items at 10 Hz: source
2,939/s at 0.29 CPU s per 10k values, bare 2,999/s at 0.47; 2,000 items at 10 Hz (the
node-opcua server could not produce the 20,000/s offered): source 5,992/s at 0.25 CPU s
per 10k, bare 3,516/s at 0.46.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asyncua import Client

from edge.components import BuildContext
from edge.config import convert
from edge.model import Record, SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sources.opcua_config import OpcUaSourceConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from peers import start_node_opcua_server


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for ``cond``, at most ``timeout`` s: a run that stalls says where."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.01)


async def stop(task: asyncio.Task[None], timeout: float = 30.0) -> None:
    """Cancel the source and wait (bounded) until it has ended."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        raise SystemExit(f"the source did not stop within {timeout:.0f} s of its cancellation")


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.n += 1


async def bare(endpoint: str, items: int, seconds: float) -> tuple[float, float]:
    """Values/s and CPU s per 10k values of a bare asyncua subscription."""
    count = _Count()
    async with Client(endpoint, timeout=30) as client:
        sub = await client.create_subscription(100, count)
        nodes = [client.get_node(f"ns=1;s=PLC.V{i}") for i in range(items)]
        for i in range(0, items, 1000):
            await sub.subscribe_data_change(nodes[i:i + 1000], sampling_interval=0)
        await asyncio.sleep(2.0)  # initial values and warm-up
        n0, c0, t0 = count.n, cpu_s(), time.monotonic()
        await asyncio.sleep(seconds)
        n, c, t = count.n - n0, cpu_s() - c0, time.monotonic() - t0
        await sub.delete()
    return n / t, c / max(n, 1) * 10_000


async def ours(endpoint: str, items: int, seconds: float, tmp: Path) -> tuple[float, float]:
    """Values/s and CPU s per 10k values through the source's emit (CPU s per 10k values
    is also the share of one core the source takes at 10k values/s)."""
    received = [0]

    async def emit(batch: SampleBatch | None, records: Sequence[Record], /, *,
                   checkpoint: tuple[str, bytes] | None = None) -> None:
        if batch is not None:
            received[0] += len(batch)

    raw = {"name": "plc", "endpoint": endpoint, "timeout_s": 30.0, "groups": [{
        "name": "all", "publishing_interval_ms": 100, "sampling_interval_ms": 0,
        "tags": [{"name": f"v{i}", "node_id": f"ns=1;s=PLC.V{i}"} for i in range(items)]}]}
    cfg = convert(raw, OpcUaSourceConfig, "source 'plc'")
    tags = TagRegistry()
    cfg.declare_tags(tags)
    source = cfg.build(BuildContext("bench", tags, Metrics(), tmp, lambda n: ""))
    task = asyncio.create_task(source.run(emit))
    try:
        await until(lambda: received[0] >= items, 300, "the initial values of every item")
        await asyncio.sleep(2.0)
        n0, c0, t0 = received[0], cpu_s(), time.monotonic()
        await asyncio.sleep(seconds)
        n, c, t = received[0] - n0, cpu_s() - c0, time.monotonic() - t0
    finally:
        await stop(task)
    return n / t, c / max(n, 1) * 10_000


async def restart(tmp: Path, items: int, keepalive_s: float) -> None:
    """Kill the server under a running source, start it again on the same port, and time
    from its READY line to the source's first Good value; beside it the time a bare
    asyncua client needs to connect and subscribe the same items (the connect time)."""
    received: list[int] = [0]

    async def emit(batch: SampleBatch | None, records: Sequence[Record], /, *,
                   checkpoint: tuple[str, bytes] | None = None) -> None:
        if batch is not None:
            received[0] += int((batch.quality == 0).sum())

    raw = {"name": "plc", "endpoint": "", "timeout_s": 30.0, "keepalive_s": keepalive_s,
           "backoff_max_s": 1.0, "groups": [{
               "name": "all", "publishing_interval_ms": 100, "sampling_interval_ms": 0,
               "tags": [{"name": f"v{i}", "node_id": f"ns=1;s=PLC.V{i}"}
                        for i in range(items)]}]}
    server = await start_node_opcua_server(tmp / "srv", extra=items, interval_ms=1000,
                                           timeout=120)
    raw["endpoint"] = server.endpoint
    cfg = convert(raw, OpcUaSourceConfig, "source 'plc'")
    tags = TagRegistry()
    cfg.declare_tags(tags)
    source = cfg.build(BuildContext("bench", tags, Metrics(), tmp, lambda n: ""))
    task = asyncio.create_task(source.run(emit))
    try:
        await until(lambda: received[0] >= items, 300, "the initial values of every item")
        await server.kill()
        server = await start_node_opcua_server(tmp / "srv", port=server.port, extra=items,
                                               interval_ms=1000, timeout=120)
        ready = time.monotonic()
        before = received[0]
        await until(lambda: received[0] > before, 300, "data after the restart")
        back = time.monotonic() - ready
        print(f"data back after {back:.2f} s; stopping the source ...", file=sys.stderr,
              flush=True)
    finally:
        await stop(task)
    print("bare connect + subscribe ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    async with Client(server.endpoint, timeout=30) as client:
        sub = await client.create_subscription(100, _Count())
        nodes = [client.get_node(f"ns=1;s=PLC.V{i}") for i in range(items)]
        for i in range(0, items, 1000):
            await sub.subscribe_data_change(nodes[i:i + 1000], sampling_interval=0)
        connect = time.monotonic() - t0
    await server.kill()
    print(f"restart: items={items} keepalive={keepalive_s} s: data flowing {back:.2f} s "
          f"after the server's READY; bare connect+subscribe {connect:.2f} s; goal "
          f"<= 2 keepalives + connect = {2 * keepalive_s + connect:.2f} s")


async def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--interval-ms", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--restart", action="store_true",
                    help="measure the recovery after a server restart instead")
    ap.add_argument("--keepalive-s", type=float, default=2.0)
    args = ap.parse_args(argv)
    if args.restart:
        with tempfile.TemporaryDirectory() as tmp:
            await restart(Path(tmp), args.items, args.keepalive_s)
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = await start_node_opcua_server(Path(tmp), extra=args.items,
                                               interval_ms=args.interval_ms, timeout=120)
        try:
            offered = args.items * 1000 / args.interval_ms
            print("server up; opcua source ...", file=sys.stderr, flush=True)
            o_rate, o_cpu = await ours(server.endpoint, args.items, args.seconds, Path(tmp))
            print("bare asyncua ...", file=sys.stderr, flush=True)
            b_rate, b_cpu = await bare(server.endpoint, args.items, args.seconds)
        finally:
            await server.kill()
    print(f"items={args.items} offered={offered:.0f} values/s window={args.seconds} s")
    print(f"bare asyncua : {b_rate:9.0f} values/s  {b_cpu:6.3f} CPU s per 10k values")
    print(f"opcua source : {o_rate:9.0f} values/s  {o_cpu:6.3f} CPU s per 10k values")
    print(f"source/bare  : {o_rate / b_rate:6.2f} (goal >= 0.80)")
    print(f"source CPU   : {o_rate * o_cpu / 10_000:6.3f} core at {o_rate:.0f} values/s")
    print(f"RSS max      : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
