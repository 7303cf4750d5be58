"""Small in-memory sources, sinks, stages and configs for the flow and gateway tests: no
device, no network, no subprocess."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.components import (
    BuildContext,
    Command,
    Emit,
    StageOutput,
    WriteResult,
)
from edge.errors import RetryableError
from edge.journal import Entry, Kind
from edge.model import InterlockTrip, Record, SampleBatch, TagRegistry


class Events:
    """What happened, in order, across every fake that shares it."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def __call__(self, what: str) -> None:
        self.log.append(what)

    def index(self, what: str) -> int:
        return self.log.index(what)


class FakeSource:
    """Emits ``batches`` (each a number of samples of tag 0), then waits; records the
    commands its write-back port gets, or fails them with ``fail_writes``."""

    def __init__(self, name: str, batches: Sequence[int], events: Events,
                 tag_id: int = 0, fail_writes: str = "") -> None:
        self.name = name
        self.batches = list(batches)
        self.events = events
        self.tag_id = tag_id
        self.fail_writes = fail_writes
        self.commands: list[Command] = []
        self.emitted = asyncio.Event()

    async def run(self, emit: Emit) -> None:
        try:
            for n in self.batches:
                await emit(samples(n, self.tag_id), [])
            self.emitted.set()
            await asyncio.Event().wait()
        finally:
            self.events(f"source {self.name} stopped")

    async def write(self, command: Command) -> None:
        if self.fail_writes:
            raise ConnectionError(self.fail_writes)
        self.commands.append(command)


class FakeLiveSink:
    """A live sink; with ``listens`` it has a ``started`` event READY must wait for."""

    def __init__(self, name: str, events: Events, *, listens: bool = False) -> None:
        self.name = name
        self.events = events
        self.published: list[tuple[SampleBatch, list[Record]]] = []
        self._started = asyncio.Event() if listens else None
        self.may_start = asyncio.Event()
        self.entered = asyncio.Event()

    @property
    def started(self) -> asyncio.Event | None:
        return self._started

    def publish(self, batch: SampleBatch, records: Sequence[Record]) -> None:
        self.published.append((batch, list(records)))

    async def run(self) -> None:
        self.entered.set()
        try:
            if self._started is not None:
                await self.may_start.wait()
                self._started.set()
            await asyncio.Event().wait()
        finally:
            self.events(f"live {self.name} stopped")

    def points(self) -> int:
        return sum(len(b) for b, _ in self.published)


class FakeDurableSink:
    """A session-oriented durable sink: its first session drops after ``drop_after``
    accepted entries; a write on a dropped session fails until it connects again."""

    def __init__(self, name: str, events: Events, drop_after: int | None = None,
                 kinds: tuple[Kind, ...] = ("samples", "records")) -> None:
        self.name = name
        self.kinds = kinds
        self.events = events
        self.drop_after = drop_after
        self.sessions = 0
        self.alive = False
        self.accepted: list[int] = []

    async def connect(self) -> None:
        self.sessions += 1
        self.alive = True
        self.events(f"sink {self.name} connect {self.sessions}")

    async def write(self, entries: Sequence[Entry]) -> WriteResult:
        if self.alive and self.sessions == 1 and len(self.accepted) == self.drop_after:
            self.alive = False
            self.events(f"sink {self.name} dropped")
        if not self.alive:
            raise RetryableError("session lost")
        self.accepted += [e.seq for e in entries]
        return WriteResult()

    async def close(self) -> None:
        self.alive = False
        self.events(f"sink {self.name} closed")


class BothSink(FakeDurableSink):
    """One object that is a durable and a live sink at once."""

    def __init__(self, name: str, events: Events) -> None:
        super().__init__(name, events)
        self.live = FakeLiveSink(name, events)

    @property
    def started(self) -> asyncio.Event | None:
        return None

    def publish(self, batch: SampleBatch, records: Sequence[Record]) -> None:
        self.live.publish(batch, records)

    async def run(self) -> None:
        await self.live.run()


class StopOnAnything:
    """A stage that commands ``source`` to stop on every non-empty batch and makes the
    InterlockTrip the runtime completes with the command's outcome."""

    name = "interlock"

    def __init__(self, source: str) -> None:
        self.source = source

    def process(self, batch: SampleBatch, records: Sequence[Record],
                now_ns: int) -> StageOutput:
        if not len(batch):
            return StageOutput(batch, list(records))
        trip = InterlockTrip(ts_ns=now_ns, interlock="il", tag="dev/x", condition="> 1",
                             value=2.0, limit=1.0, action="stop", action_ok=False,
                             reaction_ns=0)
        return StageOutput(batch, [*records, trip],
                           [Command(self.source, "stop", reason="il")])

    def tick(self, now_ns: int) -> StageOutput:
        return StageOutput(SampleBatch.empty())


def samples(n: int, tag_id: int = 0) -> SampleBatch:
    return SampleBatch(np.full(n, tag_id, np.int32), np.arange(n, dtype=np.int64) + 1,
                       np.ones(n))


# ---------------------------------------------------------------- configs


@dataclass(frozen=True)
class SourceCfg:
    name: str
    source: FakeSource

    def declare_tags(self, tags: TagRegistry) -> None:
        tags.add(self.name, "x")

    def build(self, ctx: BuildContext) -> FakeSource:
        return self.source


@dataclass(frozen=True)
class SinkCfg:
    name: str
    sink: FakeLiveSink | FakeDurableSink = field(compare=False)

    def build(self, ctx: BuildContext) -> FakeLiveSink | FakeDurableSink:
        return self.sink
