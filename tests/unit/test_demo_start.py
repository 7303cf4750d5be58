"""The demo waits for a slow gateway start (a Pi compiling its kernels, a busy machine)
instead of giving up after a fixed time, and says that it is still starting."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import pytest

from edge import demo


class _Broker:
    async def shutdown(self) -> None:
        return None


class _Plant:
    def __init__(self, cfg: object) -> None:
        pass

    async def start(self) -> dict[str, str]:
        return {}

    async def close(self) -> None:
        return None


class _SlowGateway:
    """Becomes ready only after several "still starting" intervals."""

    def __init__(self, cfg: object) -> None:
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> int:
        await asyncio.sleep(0.5)
        self.ready.set()
        await stop.wait()
        return 0


async def _start_broker(port: int) -> _Broker:
    return _Broker()


async def test_slow_start_is_waited_for_and_reported(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A gateway that needs longer than the note interval to become ready is waited for:
    the user sees "still starting" lines, then the endpoints, and the demo exits 0."""
    monkeypatch.setattr(demo, "STARTING_NOTE_S", 0.1)
    monkeypatch.setattr(demo, "start_broker", _start_broker)
    monkeypatch.setattr("hw_sim.plant.Plant", _Plant)
    monkeypatch.setattr("edge.app.Gateway", _SlowGateway)
    monkeypatch.setattr("edge.config.from_raw", lambda raw, path: None)
    args = argparse.Namespace(state_dir=str(tmp_path), opcua_port=0, influx_url="",
                              seconds=0.1, quiet=True)
    rc: Any = await asyncio.wait_for(demo._demo(args), 10)
    out = capsys.readouterr()
    assert rc == 0
    assert "still starting after" in out.err
    assert "OPC-UA server" in out.out and "gateway log" in out.out


async def test_failed_start_returns_the_gateway_exit_code(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A gateway whose start fails (it returns before ready) ends the demo with its code."""

    class _Failing(_SlowGateway):
        async def run(self, stop: asyncio.Event) -> int:
            await asyncio.sleep(0.05)
            return 3

    monkeypatch.setattr(demo, "STARTING_NOTE_S", 0.1)
    monkeypatch.setattr(demo, "start_broker", _start_broker)
    monkeypatch.setattr("hw_sim.plant.Plant", _Plant)
    monkeypatch.setattr("edge.app.Gateway", _Failing)
    monkeypatch.setattr("edge.config.from_raw", lambda raw, path: None)
    args = argparse.Namespace(state_dir=str(tmp_path), opcua_port=0, influx_url="",
                              seconds=0.1, quiet=True)
    assert await asyncio.wait_for(demo._demo(args), 10) == 3
