"""Sparkplug B encoding rate on one core: our DDATA path vs the bare protobuf library.

Three rows, each encoding ``--metrics`` metrics per DDATA message (alias, timestamp,
datatype, double value) and serialising it, for ``--seconds``:

* ``bare protobuf``: the generated ``Payload`` filled in a plain loop (the ceiling of
  any encoder built on the ``protobuf`` runtime);
* ``payload.data``: ``edge.protocols.sparkplug.payload.data`` (what the sink's replay
  and live paths call);
* ``sink.publish``: ``SparkplugSink.publish`` on a born session with a connection
  that drops the bytes (by exception: every value differs), i.e. the live fast path with
  its per-sample work, without the socket.

Issue 17's goal: >= 200,000 metrics/s on <= 1 core.

    .venv/bin/python bench/sparkplug.py --metrics 500 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge.components import BuildContext
from edge.model import SampleBatch, TagRegistry
from edge.protocols.sparkplug import payload as P
from edge.protocols.sparkplug import session as S
from edge.protocols.sparkplug import sparkplug_b_pb2 as pb
from edge.runtime.metrics import Metrics
from edge.sinks.sparkplug import SparkplugSinkConfig

GOAL = 200_000


def rate(fn: Callable[[int], int], seconds: float) -> float:
    n, metrics, t0 = 0, 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        metrics += fn(n)
        n += 1
    return metrics / elapsed


def bare(k: int) -> Callable[[int], int]:
    def run(i: int) -> int:
        p = pb.Payload(timestamp=1_700_000_000_000, seq=i % 256)
        add = p.metrics.add
        for j in range(k):
            m = add()
            m.alias = j + 2
            m.timestamp = 1_700_000_000_000 + i
            m.datatype = pb.Double
            m.double_value = float(i + j)
        p.SerializeToString()
        return k
    return run


def ours(k: int) -> Callable[[int], int]:
    def run(i: int) -> int:
        pts = [(j + 2, "float64", 1_700_000_000_000 + i, float(i + j)) for j in range(k)]
        P.data(i % 256, 1_700_000_000_000, pts).SerializeToString()  # type: ignore[arg-type]
        return k
    return run


class _Drop:
    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        return True


def live(k: int) -> Callable[[int], int]:
    tags = TagRegistry()
    for j in range(k):
        tags.add("d1", f"t{j}")
    cfg = SparkplugSinkConfig(group_id="g", edge_node_id="n")
    ctx = BuildContext("gw", tags, Metrics(), Path(tempfile.mkdtemp()), lambda name: "")
    sink = cfg.build(ctx)
    sink.state = S.Session("g", "n", ("d1",), phase=S.Phase.BORN, bd_seq=0)
    sink._client = _Drop()  # type: ignore[assignment]
    sink._born = asyncio.Event()
    sink._born.set()
    ids = np.arange(k, dtype=np.int32)

    def run(i: int) -> int:
        sink.publish(SampleBatch(ids, np.full(k, time.time_ns()), ids + float(i)), [])
        return k
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", type=int, default=500, help="metrics per message")
    ap.add_argument("--seconds", type=float, default=3.0, help="per row")
    a = ap.parse_args()
    rows = {"bare protobuf": bare(a.metrics), "payload.data": ours(a.metrics),
            "sink.publish": live(a.metrics)}
    print(f"| encoder ({a.metrics} metrics/message) | metrics/s | goal {GOAL:,} |")
    print("|---|---:|---|")
    for name, fn in rows.items():
        r = rate(fn, a.seconds)
        print(f"| {name} | {r:,.0f} | {'met' if r >= GOAL else 'NOT met'} |")


if __name__ == "__main__":
    main()
