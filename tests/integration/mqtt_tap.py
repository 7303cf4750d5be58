"""A TCP proxy in front of an MQTT broker that records every CONNECT packet crossing it,
as the Sparkplug TCK's broker-side monitor does, to check the bdSeq of each CONNECT's Will.

``ConnectTap(target_port)``: ``await start()``, then clients connect to ``port``.
``connects`` lists each CONNECT seen (client id, Will topic and payload), in order.
``refuse_connack`` > 0: that many next CONNECTs are answered CONNACK 0x05 (not
authorized) and closed, as a broker refusing the credentials; ``await stop_listening()``
and ``await listen()`` make connects fail with ECONNREFUSED before any CONNECT is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Connect:
    client_id: str
    will_topic: str
    will_payload: bytes


def _string(buf: bytes, at: int) -> tuple[bytes, int]:
    n = int.from_bytes(buf[at:at + 2], "big")
    return buf[at + 2:at + 2 + n], at + 2 + n


def parse_connect(body: bytes) -> Connect:
    """The CONNECT packet's variable header and payload (MQTT 3.1.1, 3.1)."""
    _, at = _string(body, 0)  # protocol name
    flags = body[at + 1]
    at += 4  # level, flags, keepalive
    client_id, at = _string(body, at)
    topic = payload = b""
    if flags & 0x04:
        topic, at = _string(body, at)
        payload, at = _string(body, at)
    return Connect(client_id.decode(), topic.decode(), payload)


async def _read_packet(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(raw bytes, body) of one MQTT packet."""
    head = await reader.readexactly(1)
    length, shift, raw_len = 0, 0, b""
    while True:
        b = await reader.readexactly(1)
        raw_len += b
        length |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            break
    body = await reader.readexactly(length)
    return head + raw_len + body, body


class ConnectTap:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.host = host
        self.port = 0
        self.connects: list[Connect] = []
        self.refuse_connack = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.listen()

    async def listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def close(self) -> None:
        await self.stop_listening()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            raw, body = await _read_packet(reader)
            if raw[0] >> 4 != 1:
                return  # not a CONNECT first: a broker would close too
            self.connects.append(parse_connect(body))
            if self.refuse_connack > 0:
                self.refuse_connack -= 1
                writer.write(bytes([0x20, 0x02, 0x00, 0x05]))
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            up_writer.write(raw)
            try:
                await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
            finally:
                up_writer.close()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return
        finally:
            writer.close()
            self._tasks.discard(task)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError):
        writer.close()
