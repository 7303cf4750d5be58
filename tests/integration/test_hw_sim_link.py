"""Link proxy: pass, refuse, blackhole and cut, probed with plain sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from hw_sim.link import LinkProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[LinkProxy]:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = echo.sockets[0].getsockname()[1]
    p = LinkProxy(0, "127.0.0.1", port, admin_port=0)
    await p.start()
    yield p
    await p.close()
    echo.close()


async def _roundtrip(port: int, data: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(data)), 2)
    finally:
        writer.close()


async def test_pass_forwards_bytes(proxy: LinkProxy) -> None:
    """pass: bytes go through to the target and back."""
    assert await _roundtrip(proxy.listen_port) == b"ping"


async def test_refuse_refuses_and_recovers(proxy: LinkProxy) -> None:
    """refuse: connects get ECONNREFUSED; pass again: they succeed."""
    await proxy.set_mode("refuse")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.listen_port)
    await proxy.set_mode("pass")
    assert await _roundtrip(proxy.listen_port) == b"ping"


async def test_blackhole_accepts_and_swallows(proxy: LinkProxy) -> None:
    """blackhole: the connection opens but nothing ever comes back."""
    await proxy.set_mode("blackhole")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_roundtrip(proxy.listen_port), 0.5)
    assert proxy.stats["dropped"] >= 4


async def test_cut_resets_open_connections(proxy: LinkProxy) -> None:
    """cut: an open connection is reset; a new one passes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
    writer.write(b"x")
    assert await asyncio.wait_for(reader.readexactly(1), 2) == b"x"
    state = await proxy.set_mode("cut")
    assert state["mode"] == "pass" and state["cuts"] == 1
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 2)
    writer.close()
    assert await _roundtrip(proxy.listen_port) == b"ping"


async def test_admin_http_switches_mode(proxy: LinkProxy) -> None:
    """POST /mode on the admin port switches the link, GET /mode reads it."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy.admin_port}") as c:
        assert (await c.post("/mode", json={"mode": "refuse"})).json()["mode"] == "refuse"
        assert (await c.get("/mode")).json()["mode"] == "refuse"
        assert (await c.post("/mode/pass")).json()["mode"] == "pass"
        assert (await c.post("/mode", json={"mode": "nope"})).status_code == 400
