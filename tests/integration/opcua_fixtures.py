"""Shared set-up for the OPC-UA tests: an in-process OPC-UA sink with a fake gateway.

A test module that imports ``server_mode`` runs each of its tests twice: against the
server on the test's event loop (``threaded = false``) and on its own thread
(``threaded = true``); ``running_sink`` builds the one the test runs for.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edge.components import BuildContext, Hooks
from edge.model import OperatorAction, Record, TagRegistry
from edge.runtime.conditions import ConditionBoard, Declared
from edge.runtime.metrics import Metrics
from edge.runtime.statusdoc import (
    HealthStatus,
    InterlockStatus,
    JournalDepth,
    SinkStatus,
    StatusDoc,
)
from edge.sinks.opcua import OpcUaConfig, OpcUaSink
from edge.sinks.opcua_thread import ThreadedOpcUaSink

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import free_port

NS_URI = "urn:edge-gateway:tags"
T = TypeVar("T")
_THREADED: ContextVar[bool] = ContextVar("opcua_threaded", default=False)


@pytest.fixture(params=[False, True], ids=["in-loop", "threaded"], autouse=True)
def server_mode(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Each test of a module that imports this: once per server mode."""
    token = _THREADED.set(bool(request.param))
    try:
        yield bool(request.param)
    finally:
        _THREADED.reset(token)


async def on_server(sink: OpcUaSink | ThreadedOpcUaSink,
                    make: Callable[[OpcUaSink], Coroutine[Any, Any, T]]) -> T:
    """Run ``make(server sink)`` on the loop the server runs on (its own thread's, when
    threaded): what the server owns is only touched there."""
    if isinstance(sink, ThreadedOpcUaSink):
        assert sink._loop is not None
        inner = sink.inner
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(make(inner),
                                                                         sink._loop))
    return await make(sink)


async def history_ready(sink: OpcUaSink | ThreadedOpcUaSink, timeout: float = 60) -> None:
    """Until the sink's history store is open."""
    async def ready(s: OpcUaSink) -> None:
        assert s._history is not None
        await asyncio.wait_for(s._history.ready.wait(), timeout)
    await on_server(sink, ready)


def sample_status() -> StatusDoc:
    """A status document of the real type (a dict fixture once drifted from it)."""
    features = dict.fromkeys(HealthStatus.__struct_fields__, 0.0)
    return StatusDoc(
        gateway="gw-test", pid=1, uptime_s=1.0, ready=True,
        journal={"mes": JournalDepth(depth_points=12, depth_entries=2, depth_bytes=252,
                                     oldest_unsent_age_s=3.5, acked=40)},
        journal_bytes=4096, journal_pending_points=0,
        links={"sink:mes": True, "source:etch1": False},
        rates={"ingest_samples_per_s": 1234.5},
        components={},
        sinks={"mes": SinkStatus(link_up=True, delivered_points=40, last_error="",
                                 attempt=0)},
        interlocks={"etch_overtemp": InterlockStatus(
            state="ok", tag="etch1/chamber_temp", last_trip_ns=0, last_value=120.0,
            limit=188.0, trips=0, condition="none", trip_value=float("nan"))},
        health={"stf/motor1": HealthStatus(**features | {"health": 0.93, "ttf_s": 86400.0})},
        spc={},
    )


@dataclass
class FakeGateway:
    """The status document, and a real condition board with one limit interlock
    (``etch_overtemp``) whose latch and activity the test sets; operator actions land in
    ``actions`` (the journal's stand-in)."""

    status: StatusDoc = field(default_factory=sample_status)
    resets: list[str] = field(default_factory=list)
    reset_result: bool = True
    latched: bool = True
    active: bool = False
    actions: list[OperatorAction] = field(default_factory=list)
    board: ConditionBoard = field(init=False)

    def __post_init__(self) -> None:
        self.board = ConditionBoard(
            [Declared("interlock", "etch_overtemp", "limit", "etch1/chamber_temp", 900,
                      high=188.0),
             Declared("health", "stf/motor1", "off_normal", "stf/motor1/current", 600)],
            journal=self._journal)
        self.board.bind(probes={"interlock": self._probe}, reset_latch=self._latch,
                        send_reset=None)

    async def _journal(self, records: Sequence[Record]) -> None:
        self.actions += [r for r in records if isinstance(r, OperatorAction)]

    def _probe(self, now_ns: int) -> dict[str, tuple[bool, bool]]:
        return {"etch_overtemp": (self.latched, self.active)}

    def _latch(self, name: str, now_ns: int) -> bool:
        self.resets.append(name)
        if self.reset_result and not self.active:
            self.latched = False
            return True
        return False


def demo_registry() -> TagRegistry:
    reg = TagRegistry()
    reg.add("etch1", "chamber_temp", unit="degC", dtype="float32", low=0, high=250)
    reg.add("etch1", "pressure", unit="mTorr", dtype="float64")
    reg.add("etch1", "lot", dtype="int32")
    reg.add("etch1", "stop_coil", dtype="bool")
    reg.add("stf/motor1", "current", unit="A", dtype="float64", low=0, high=5)
    return reg


@contextlib.asynccontextmanager
async def running_sink(
    tmp: Path, tags: TagRegistry, gw: FakeGateway, *,
    secrets: dict[str, str] | None = None, **cfg: Any,
) -> AsyncIterator[Any]:
    """The sink (``OpcUaSink``, or ``ThreadedOpcUaSink`` in the threaded mode), started."""
    port = free_port()
    cfg.setdefault("threaded", _THREADED.get())
    config = OpcUaConfig(endpoint=f"opc.tcp://127.0.0.1:{port}/edge", **cfg)
    ctx = BuildContext(
        gateway_id="gw-test", tags=tags, metrics=Metrics(), state_dir=tmp / "state",
        secrets=(secrets or {}).__getitem__,
        hooks=Hooks(status=lambda: gw.status, conditions=gw.board),
    )
    sink = config.build(ctx)
    assert isinstance(sink, ThreadedOpcUaSink if config.threaded else OpcUaSink)
    task = asyncio.create_task(sink.run())
    try:
        # A cold start builds the standard address space cache: 48 s was seen on this
        # 2-core machine under load; the bound only stops a server that never listens.
        await asyncio.wait_for(sink.started.wait(), 120)
        yield sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
