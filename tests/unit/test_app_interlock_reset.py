"""An interlock reset through the running gateway (the CLI's control command): refused
while the condition is active, and once it takes, the source's configured ``reset``
action is sent so the tool restarts. No device, no socket, no subprocess."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_app import no_socket, running, until

from edge.app import Gateway
from edge.components import BuildContext, Command, Emit, WriteResult
from edge.config import Config, GatewaySection, JournalSection
from edge.journal import Entry
from edge.model import OperatorAction, SampleBatch, TagRegistry
from edge.processing.interlock_config import InterlockAction, InterlockRuleConfig


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.enable()


class Tool:
    """A device with a stop and a reset command; emits the values it is given."""

    def __init__(self, name: str = "tool") -> None:
        self.name = name
        self.values: asyncio.Queue[float] = asyncio.Queue()
        self.commands: list[Command] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    async def run(self, emit: Emit) -> None:
        self.loop = asyncio.get_running_loop()
        ts = 0
        while True:
            v = await self.values.get()
            ts += 1
            await emit(SampleBatch(np.zeros(1, np.int32), np.array([ts], np.int64),
                                   np.array([v])), [])

    def feed(self, value: float) -> None:
        """From the test's loop; the source may run on the fast lane's loop."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.values.put_nowait, value)

    async def write(self, command: Command) -> None:
        self.commands.append(command)


@dataclass(frozen=True)
class ToolCfg:
    name: str
    tool: Tool = field(compare=False)
    commands: frozenset[str] = frozenset({"stop", "reset"})

    def declare_tags(self, tags: TagRegistry) -> None:
        tags.add(self.name, "temp")

    def build(self, ctx: BuildContext) -> Tool:
        return self.tool

    def actions(self) -> frozenset[str]:
        return self.commands

    def measurement_devices(self) -> frozenset[str] | None:
        return frozenset()


class Mes:
    """A durable sink of records (the MES): what reaches it, decoded."""

    name = "mes"
    kinds = ("records",)

    def __init__(self) -> None:
        self.records: list[object] = []

    async def connect(self) -> None:
        return None

    async def write(self, entries: Sequence[Entry]) -> WriteResult:
        for e in entries:
            self.records += e.records()
        return WriteResult()

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class MesCfg:
    name: str
    sink: Mes = field(compare=False)

    def build(self, ctx: BuildContext) -> Mes:
        return self.sink


def gateway(tmp_path: Path, tool: Tool, action: InterlockAction,
            mes: Mes | None = None) -> Gateway:
    rule = InterlockRuleConfig(name="overtemp", tag="tool/temp", high=10.0, action=action)
    cfg = Config(
        GatewaySection(id="gw-test", state_dir=str(tmp_path / "state"), shutdown_timeout_s=5),
        JournalSection(commit_interval_ms=1.0),
        sources=[ToolCfg("tool", tool)],
        sinks=[MesCfg("mes", mes)] if mes is not None else [],
        sections={"interlocks": [rule]},
    )
    return Gateway(cfg, secrets=lambda name: "", serve_control=no_socket)


async def reset(gw: Gateway) -> dict[str, Any]:
    # The control socket adds the connecting user (SO_PEERCRED) as peer_user.
    return await gw._control({"cmd": "interlock_reset", "name": "overtemp",
                              "peer_user": "op"})


async def test_reset_sends_the_sources_reset_action_once_clear(tmp_path: Path) -> None:
    """A reset is refused while the value is still above the limit and sends nothing;
    once the value is back it takes and the source gets its ``reset`` command."""
    tool = Tool()
    mes = Mes()
    gw = gateway(tmp_path, tool, InterlockAction(source="tool", action="stop"), mes)

    async def body() -> None:
        await until(lambda: tool.loop is not None, "the source runs")
        tool.feed(20.0)
        await until(lambda: [c.action for c in tool.commands] == ["stop"], "the stop")
        refused = await reset(gw)
        assert not refused["ok"] and "still active" in refused["error"]
        assert [c.action for c in tool.commands] == ["stop"]
        tool.feed(5.0)
        await until(lambda: gw.status().interlocks["overtemp"].last_value == 5.0,
                    "the value back below the limit")
        took = await reset(gw)
        assert took["ok"], took
        assert [c.action for c in tool.commands] == ["stop", "reset"]
        assert tool.commands[1].source == "tool" and tool.commands[1].reason == "overtemp"
        await until(lambda: sum(isinstance(r, OperatorAction) for r in mes.records) == 2,
                    "both resets audited at the MES")

    assert await running(gw, body) == 0
    audit = [(r.origin, r.user, r.action, r.target, r.ok) for r in mes.records
             if isinstance(r, OperatorAction)]
    assert audit == [("cli", "op", "reset", "interlock:overtemp", False),
                     ("cli", "op", "reset", "interlock:overtemp", True)]


async def test_reset_action_can_be_named_or_turned_off(tmp_path: Path) -> None:
    """``reset = ""`` sends no command on reset (someone else restarts the tool)."""
    tool = Tool()
    gw = gateway(tmp_path, tool, InterlockAction(source="tool", action="stop", reset=""))

    async def body() -> None:
        await until(lambda: tool.loop is not None, "the source runs")
        tool.feed(20.0)
        await until(lambda: len(tool.commands) == 1, "the stop")
        tool.feed(5.0)
        await until(lambda: gw.status().interlocks["overtemp"].last_value == 5.0, "clear")
        assert (await reset(gw))["ok"]
        assert [c.action for c in tool.commands] == ["stop"]

    assert await running(gw, body) == 0
