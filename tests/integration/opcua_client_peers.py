"""Shared pieces of the OPC-UA client source's integration tests: a collecting emit, a
source built from a raw config, the simulated PLC's standard group, a bounded wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import numpy as np

from edge.components import BuildContext
from edge.config import convert
from edge.model import Quality, Record, SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sources.opcua import OpcUaSource
from edge.sources.opcua_config import OpcUaSourceConfig

GOOD, BAD_NC = int(Quality.GOOD), int(Quality.BAD_NOT_CONNECTED)


class Collector:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.records: list[Record] = []
        self.checkpoints: list[tuple[int, str, bytes]] = []  # (batch index, key, value)

    async def __call__(self, batch: SampleBatch | None, records: Sequence[Record], /, *,
                       checkpoint: tuple[str, bytes] | None = None) -> None:
        if batch is not None:
            self.batches.append(batch)
        self.records.extend(records)
        if checkpoint is not None:
            self.checkpoints.append((len(self.batches) - 1, *checkpoint))

    def of(self, tag_id: int, since: int = 0) -> list[tuple[int, float, int]]:
        """(ts_ns, value, quality) of one tag, from batch ``since`` on, in arrival order."""
        rows = []
        for b in self.batches[since:]:
            for i in np.flatnonzero(b.tag_id == tag_id):
                rows.append((int(b.ts_ns[i]), float(b.value[i]), int(b.quality[i])))
        return rows


def build(raw: dict[str, object], tmp: Path,
          secrets: dict[str, str] | None = None) -> tuple[OpcUaSource, TagRegistry]:
    cfg = convert(raw, OpcUaSourceConfig, "source 'plc'")
    tags = TagRegistry()
    cfg.declare_tags(tags)
    known = secrets or {}
    return cfg.build(BuildContext("gw", tags, Metrics(), tmp, lambda n: known[n])), tags


def plc_config(endpoint: str, mode: str = "subscribe", **over: object) -> dict[str, object]:
    group: dict[str, object] = {
        "name": "fast", "mode": mode, "publishing_interval_ms": 100,
        "sampling_interval_ms": 50, "poll_interval_ms": 200,
        "tags": [
            {"name": "temp", "node_id": "ns=1;s=PLC.Temp", "unit": "degC"},
            {"name": "counter", "node_id": "ns=1;s=PLC.Counter", "type": "int32"},
            {"name": "flag", "node_id": "ns=1;s=PLC.Flag", "type": "bool"},
        ],
    }
    raw: dict[str, object] = {"name": "plc", "endpoint": endpoint, "keepalive_s": 1.0,
                              "backoff_max_s": 1.0, "groups": [group]}
    raw.update(over)
    return raw


_ASYNCUA_LOOPS = ("_publish_loop", "_connection_supervisor", "_stale_watchdog_loop",
                  "_renew_channel_loop")


def asyncua_loops() -> int:
    """asyncua client background loops still running in this event loop."""
    return sum(1 for t in asyncio.all_tasks()
               if getattr(t.get_coro(), "__qualname__", "").endswith(_ASYNCUA_LOOPS))


async def until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait (bounded) for ``cond``; the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not cond():
        if loop.time() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return loop.time() - start


async def stopped(task: asyncio.Task[None], timeout: float = 15.0) -> float:
    """Cancel the source's task and wait (bounded) until it has ended; the seconds it took.
    A source that swallows its cancellation fails here instead of hanging the test."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        raise AssertionError(f"the source did not stop within {timeout} s of its cancellation")
    error = None if task.cancelled() else task.exception()
    if error is not None:
        raise error
    return loop.time() - start


@contextlib.asynccontextmanager
async def running(source: OpcUaSource, emit: Collector) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run(emit))
    try:
        yield task
    finally:
        if not task.done():
            await stopped(task)
