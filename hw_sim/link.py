"""Link faults: a TCP proxy in front of any service, switchable while it runs.

Modes:
  pass       forward bytes both ways (new connections open one to the target);
  refuse     close the listening socket (connects get ECONNREFUSED) and reset
             open connections, like a peer that went down;
  blackhole  accept connections but forward nothing: bytes either way are read
             and dropped, nothing is answered, no connection is closed;
  cut        reset (RST) every open connection now, then pass new ones; the
             mode reads back "pass" and `cuts` counts the connections cut.
Switch in-process with `await proxy.set_mode(m)` or over HTTP on the admin port:
`POST /mode {"mode": m}` (or `POST /mode/<m>`), `GET /mode`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from typing import Any

from .httpmini import HttpServer, Request, Response
from .truth import TruthLog

LINK_MODES = ("pass", "refuse", "blackhole", "cut")


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class LinkProxy:
    """TCP proxy 127.0.0.1:listen_port -> target_host:target_port with fault modes."""

    def __init__(
        self,
        listen_port: int,
        target_host: str,
        target_port: int,
        admin_port: int | None = None,
        *,
        host: str = "127.0.0.1",
        truth: TruthLog | None = None,
    ) -> None:
        self.host, self.listen_port = host, listen_port
        self.target = (target_host, target_port)
        self.truth = truth
        self.mode = "pass"
        self.server: asyncio.Server | None = None
        self.admin = HttpServer(self._admin, host, admin_port) if admin_port is not None else None
        self.pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self.stats = {"accepted": 0, "cuts": 0, "bytes_up": 0, "bytes_down": 0, "dropped": 0}

    @property
    def admin_port(self) -> int | None:
        return self.admin.port if self.admin is not None else None

    async def start(self) -> None:
        await self._listen()
        if self.admin is not None:
            await self.admin.start()

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(
            self._accept, self.host, self.listen_port, reuse_address=True
        )
        self.listen_port = int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        self._cut_all()
        if self.admin is not None:
            await self.admin.close()

    def _cut_all(self) -> int:
        n = len(self.pairs)
        for client, upstream in list(self.pairs):
            _reset(client)
            if upstream is not None:
                _reset(upstream)
        self.pairs.clear()
        return n

    async def set_mode(self, mode: str) -> dict[str, Any]:
        """Switch the link; returns the state after the switch."""
        if mode not in LINK_MODES:
            raise ValueError(f"link mode must be one of {LINK_MODES}, got {mode!r}")
        if mode in ("refuse", "cut"):
            self.stats["cuts"] += self._cut_all()
        if mode == "refuse" and self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        elif mode != "refuse" and self.server is None:
            await self._listen()
        self.mode = "pass" if mode == "cut" else mode
        if self.truth is not None:
            self.truth.emit(
                "mode",
                "link",
                time.time_ns(),
                mode=mode,
                listen=self.listen_port,
                target=f"{self.target[0]}:{self.target[1]}",
            )
        return self.state()

    def state(self) -> dict[str, Any]:
        return {"mode": self.mode, "connections": len(self.pairs), **self.stats}

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["accepted"] += 1
        if self.mode == "blackhole":
            pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (writer, None)
            self.pairs.add(pair)
            try:
                await self._pump(reader, None, "dropped")
            finally:
                self.pairs.discard(pair)
                writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        pair = (writer, up_writer)
        self.pairs.add(pair)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, "bytes_up"),
                self._pump(up_reader, writer, "bytes_down"),
            )
        finally:
            self.pairs.discard(pair)
            for w in (writer, up_writer):
                w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, counter: str
    ) -> None:
        try:
            while data := await reader.read(65536):
                if writer is None or self.mode == "blackhole":
                    self.stats["dropped"] += len(data)
                    continue
                self.stats[counter] += len(data)
                writer.write(data)
                await writer.drain()
            if writer is not None and self.mode != "blackhole" and writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            if writer is not None:
                _reset(writer)

    async def _admin(self, req: Request) -> Response | None:
        if not req.path.startswith("/mode"):
            return Response(404, {"error": f"no route {req.path}"})
        if req.method == "GET":
            return Response(200, self.state())
        if req.method != "POST":
            return Response(405, {"error": "use GET or POST"})
        mode = req.path.removeprefix("/mode").strip("/")
        try:
            if not mode:
                mode = str(req.json()["mode"])
            return Response(200, await self.set_mode(mode))
        except (ValueError, KeyError, TypeError) as exc:
            return Response(400, {"error": str(exc)})
