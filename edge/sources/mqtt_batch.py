"""The MQTT source's batch in hand: the samples, records and acks of the messages taken
since the last hand-over, and the hand-over to the task that keeps and acks them.

Invariant: batches reach the keeper in the order they were taken, at most one waiting
while it keeps the one before (``hand_over`` waits while the queue is full).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.model import CmmReading, Quarantine, Record, SampleBatch
from edge.protocols.mqtt import Received

Samples = tuple[str, npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.float64]]


@dataclass(slots=True)
class Batch:
    """Messages taken since the last hand-over: their samples, records and acks."""

    tags: list[npt.NDArray[np.int32]] = field(default_factory=list)
    ts: list[npt.NDArray[np.int64]] = field(default_factory=list)
    values: list[npt.NDArray[np.float64]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    acks: list[Received] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)  # of the QoS>0 messages kept
    count: int = 0

    def add(self, got: Quarantine | CmmReading | Samples) -> None:
        if isinstance(got, Quarantine):
            self.records.append(got)
            return
        if isinstance(got, CmmReading):
            self.records.append(got)
            self.devices.add(got.device)
            self.count += 1
            return
        dev, tags, ts, vals = got
        self.tags.append(tags)
        self.ts.append(ts)
        self.values.append(vals)
        self.devices.add(dev)
        self.count += len(tags)

    def samples(self) -> SampleBatch | None:
        if not self.tags:
            return None
        return SampleBatch(np.concatenate(self.tags), np.concatenate(self.ts),
                           np.concatenate(self.values))

    def empty(self) -> bool:
        return not self.tags and not self.records and not self.acks


async def hand_over(pending: asyncio.Queue[Batch | None], keeper: asyncio.Task[None],
                    batch: Batch | None) -> None:
    """Queue a batch (None: the end) for the keeper; raise the keeper's error if it
    failed; wait while it is a batch behind."""
    if batch is not None and batch.empty():
        return
    if pending.full() and not keeper.done():
        put = asyncio.ensure_future(pending.put(batch))
        await asyncio.wait([put, keeper], return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
    elif not keeper.done():
        pending.put_nowait(batch)
    if keeper.done():
        keeper.result()
