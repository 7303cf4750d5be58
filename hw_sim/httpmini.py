"""A tiny HTTP/1.1 server on asyncio streams, for the simulated peers.

Enough for JSON APIs: request line, headers, Content-Length bodies, keep-alive.
No chunked bodies (answered 411), no TLS. A handler returning None leaves the
request unanswered and keeps the connection open (the black-hole fault), until
the server is closed. Every open connection is tracked so it can be cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MAX_HEADER = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, keep_alive: bool) -> bytes:
        if isinstance(self.body, bytes):
            data, ctype = self.body, "application/octet-stream"
        else:
            data, ctype = json.dumps(self.body).encode(), "application/json"
        head = [
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(data)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + data


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Next request on the connection, None at a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest(400, "truncated request head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise BadRequest(400, "request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise BadRequest(400, f"bad request line {lines[0][:80]!r}") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise BadRequest(411, "chunked bodies are not supported; send Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError as exc:
        raise BadRequest(400, "bad Content-Length") from exc
    if length > MAX_BODY:
        raise BadRequest(413, f"body over {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    parts = urlsplit(target)
    return Request(method.upper(), parts.path, dict(parse_qsl(parts.query)), headers, body)


Handler = Callable[[Request], Awaitable[Response | None]]


class HttpServer:
    """Serves `handler` on host:port; `port` is the bound port after `start()`."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler, self.host, self.port = handler, host, port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self._hung: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEADER, reuse_address=True
        )
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def stop_listening(self) -> None:
        """Close the listening socket: new connections are refused."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    def cut_all(self) -> int:
        """Abort every open connection; returns how many."""
        n = len(self.writers)
        for w in list(self.writers):
            w.transport.abort()
        for fut in self._hung:  # held requests end without an answer, not with an error
            if not fut.done():
                fut.set_result(None)
        return n

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.cut_all()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                try:
                    req = await read_request(reader)
                except BadRequest as exc:
                    writer.write(Response(exc.status, {"error": str(exc)}).encode(False))
                    await writer.drain()
                    return
                if req is None:
                    return
                resp = await self.handler(req)
                if resp is None:  # black hole: never answer, hold the connection
                    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    self._hung.add(fut)
                    try:
                        await fut
                    finally:
                        self._hung.discard(fut)
                    return
                keep = req.headers.get("connection", "").lower() != "close"
                writer.write(resp.encode(keep))
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()
