"""The small interfaces every source, stage and sink implements; the runtime does the rest.

* A **source** reads a device and hands batches to ``emit``. It never retries a whole
  run itself: if ``run`` raises, the supervisor restarts it with backoff. Where the
  device takes commands it also implements ``write(command)`` (the write-back port).
* A **stage** is pure and synchronous: ``process(batch, records, now_ns) -> StageOutput``.
  No I/O. It returns the batch and the records to pass on (those it does not consume
  plus those it makes) and the commands to send (the runtime sends them at once).
  ``tick(now_ns)`` is called about every 100 ms for time-based decisions (stale data).
* A **durable sink** gets journal entries: ``write(entries)`` returns what it rejected;
  raising ``RetryableError`` means "retry the whole call later".
* A **live sink** (OPC-UA) gets the fast path: ``publish(batch, records)`` must return
  at once; it coalesces and does its own slicing. A sink that clients connect to says
  so with a ``started`` event: READY waits until it is set.
* Every sink is one ``[[sinks]]`` entry; what it is follows from what it implements,
  resolved once when the gateway is built (never per batch): a live sink, a durable
  sink, or both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from edge.asset import AssetConfig
from edge.model import Record, SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.runtime.statusdoc import StatusDoc

if TYPE_CHECKING:
    from edge.journal import Entry, Kind
    from edge.runtime.conditions import ConditionBoard


@dataclass(frozen=True, slots=True)
class Command:
    """A command for a device, e.g. a machine stop. ``source`` names the source whose
    write-back port carries it; ``target`` and ``value`` mean what that source says."""

    source: str
    action: str
    target: str = ""
    value: float | str | bool = True
    reason: str = ""


class Emit(Protocol):
    """Hand a batch and/or records to the pipeline. ``checkpoint=(key, value)`` is stored
    in the journal in the same transaction as this data (see ``BuildContext.checkpoints``);
    a source with ``wait_durable = True`` gets control back only after that commit."""

    async def __call__(
        self, batch: SampleBatch | None, records: Sequence[Record], /, *,
        checkpoint: tuple[str, bytes] | None = None,
    ) -> None: ...


@runtime_checkable
class Source(Protocol):
    name: str

    async def run(self, emit: Emit) -> None: ...


@runtime_checkable
class WaitsDurable(Protocol):
    """A source whose ``emit`` returns only once the data is committed to the journal
    (the file source: it deletes its input after that)."""

    wait_durable: bool


@runtime_checkable
class Commandable(Protocol):
    async def write(self, command: Command) -> None: ...


@dataclass(slots=True)
class StageOutput:
    batch: SampleBatch
    records: list[Record] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)


class Stage(Protocol):
    name: str

    def process(
        self, batch: SampleBatch, records: Sequence[Record], now_ns: int
    ) -> StageOutput: ...

    def tick(self, now_ns: int) -> StageOutput: ...


@runtime_checkable
class Checkpointed(Protocol):
    """A stage whose state summarises data already journaled (OEE tallies, energy totals,
    a wafer's open step). The runtime stores ``snapshot`` in the same journal transaction
    as the data it hands over with it (None: not due) and gives the last one stored to
    ``restore`` at start, before any source runs (``edge.processing.stage_state``)."""

    checkpoint_key: str

    def snapshot(self, mono_ns: int) -> bytes | None: ...

    def restore(self, data: bytes) -> None: ...


@runtime_checkable
class Armable(Protocol):
    """A stage whose clocks (stale data) start when the sources start, not at build."""

    def arm(self, now_ns: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Rejection:
    """One journal entry the peer refused as invalid, with its answer."""

    seq: int
    reason: str
    body: str = ""


@dataclass(frozen=True, slots=True)
class WriteResult:
    rejected: tuple[Rejection, ...] = ()


@runtime_checkable
class DurableSink(Protocol):
    name: str
    kinds: tuple[Kind, ...]

    async def connect(self) -> None: ...

    async def write(self, entries: Sequence[Entry]) -> WriteResult: ...

    async def close(self) -> None: ...


@runtime_checkable
class LiveSink(Protocol):
    name: str

    @property
    def started(self) -> asyncio.Event | None:
        """Set while the sink serves its clients; READY waits for it. None: READY does
        not wait for this sink."""

    async def run(self) -> None: ...

    def publish(self, batch: SampleBatch, records: Sequence[Record]) -> None: ...


# ---------------------------------------------------------------------- configs
#
# A config struct (msgspec, beside its component) is what a registry line in
# ``edge.config`` names. Its fields are frozen, so the Protocols read them as properties.


class SourceConfig(Protocol):
    """``[[sources]]``: declares its tags (before anything is built), builds the source."""

    @property
    def name(self) -> str: ...

    def declare_tags(self, tags: TagRegistry) -> None: ...

    def build(self, ctx: BuildContext) -> Source: ...

    def actions(self) -> frozenset[str]:
        """The commands its write-back port takes (interlocks and DCMDs name them; check-config
        verifies every name). Empty for a source that takes none."""
        ...

    def measurement_devices(self) -> frozenset[str] | None:
        """The devices it gives CMM readings for (a ``[[compensation]]`` stage needs one);
        None: it cannot say before it runs."""
        ...


@runtime_checkable
class Preflight(Protocol):
    """A config that can check files it names (a users file, a certificate) before
    ``build``: check-config runs it; each string is one mistake, naming the key."""

    def preflight(self) -> list[str]: ...


@runtime_checkable
class UsesAsset(Protocol):
    """A config that takes something from ``[asset]`` (Sparkplug ids, UNS topics):
    check-config runs it; each string is one mistake, naming the component and key."""

    def asset_problems(self, asset: AssetConfig, tags: TagRegistry) -> list[str]: ...


@runtime_checkable
class UsesActions(Protocol):
    """A config that names sources' commands (the Sparkplug DCMD allow-list): check-config
    runs it with every source's ``actions()``; each string is one mistake, naming the key."""

    def action_problems(self, actions: Mapping[str, frozenset[str]],
                        tags: TagRegistry) -> list[str]: ...


class SinkConfig(Protocol):
    """``[[sinks]]``: builds a live sink, a durable sink, or one object that is both."""

    @property
    def name(self) -> str: ...

    def build(self, ctx: BuildContext) -> LiveSink | DurableSink: ...


class StageConfig(Protocol):
    """One table of a stage section (``[[interlocks]]``, ``[[spc]]``, ...); the stage is
    built from all of its section's tables (``edge.processing.STAGES``)."""

    @property
    def name(self) -> str: ...

    def declare_tags(self, tags: TagRegistry) -> None: ...


@dataclass(slots=True)
class Hooks:
    """What the running gateway offers to components built late (OPC-UA, status).

    ``status()`` returns the live status document (``edge.runtime.statusdoc``);
    ``conditions`` is the condition board (``edge.runtime.conditions``): the alarm list,
    and acknowledge, confirm and interlock reset, each audited.
    ``send_commands`` sends commands a remote system asked for (a Sparkplug DCMD) through
    the sources' write-back ports: (answered, why not) each. ``journal`` keeps records
    (an ``OperatorAction``) and returns once they are committed. None outside the daemon.
    """

    status: Callable[[], StatusDoc | None]
    conditions: ConditionBoard | None = None
    send_commands: Callable[[Sequence[Command]], Awaitable[list[tuple[bool, str]]]] | None = None
    journal: Callable[[Sequence[Record]], Awaitable[None]] | None = None


def _no_status() -> StatusDoc | None:
    return None


@dataclass(slots=True)
class BuildContext:
    """What a component's config gets when it builds its component."""

    gateway_id: str
    tags: TagRegistry
    metrics: Metrics
    state_dir: Path
    secrets: Callable[[str], str]
    hooks: Hooks = field(default_factory=lambda: Hooks(_no_status))
    # Reads a checkpoint committed with emit(..., checkpoint=...); None outside the daemon.
    checkpoints: Callable[[str], Awaitable[bytes | None]] | None = None
    # Where each device sits in the plant (``[asset]``); empty paths when not configured.
    asset: AssetConfig = field(default_factory=AssetConfig)
