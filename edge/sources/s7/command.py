"""The S7 write-back port: commands (an interlock's stop bit) on their own connection.

Invariants:

* Commands never share the polling connection, so a stop never queues behind a poll
  that hangs; one command at a time (a lock); each runs in a worker thread through
  ``blocking`` and is bounded by the socket timeout (``timeout_s``; connect: snap7's 5 s).
* A BOOL command writes that one bit (an S7 bit write): the PLC's other bits of the byte
  are left as they are.
* The connection is opened ahead of the first command (``keep_open``, called by the
  source between polls, at most every ``REOPEN_EVERY_S``) and dropped when the poll
  link goes down (``close``), so a stop after a PLC restart reconnects instead of
  timing out on a dead socket.
* A failed command closes the connection and raises ``RetryableError``; an unknown
  action raises ``PermanentError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from snap7.client import Client
from snap7.error import S7Error
from snap7.type import Area as Snap7Area
from snap7.type import WordLen

from edge.components import Command
from edge.errors import RetryableError
from edge.protocols.s7.address import parse
from edge.protocols.s7.codec import encode, parse_type
from edge.runtime.progress import blocking
from edge.sources.commands import command_of

if TYPE_CHECKING:
    from edge.sources.s7.config import S7SourceConfig

log = structlog.get_logger("edge.sources.s7")

REOPEN_EVERY_S = 5.0
_AREA = {"DB": Snap7Area.DB, "I": Snap7Area.PE, "Q": Snap7Area.PA, "M": Snap7Area.MK}


class _Write:
    """One configured command, resolved to what goes on the wire."""

    def __init__(self, address: str, type_text: str, value: bool | int | float) -> None:
        addr, t = parse(address), parse_type(type_text)
        self.address = address
        self.area = _AREA[addr.area]
        self.db = addr.db
        self.data = bytearray(encode(t, value))
        if t.name == "BOOL":
            self.start, self.word_len = addr.byte * 8 + addr.bit, WordLen.Bit
        else:
            self.start, self.word_len = addr.byte, WordLen.Byte

    def send(self, client: Client) -> None:
        client.write_area(self.area, self.db, self.start, self.data, self.word_len)


class S7CommandPort:
    def __init__(self, cfg: S7SourceConfig, connect: Callable[[], Client]) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.where = f"{cfg.host}:{cfg.port}"
        self.commands = {c.action: _Write(c.address, c.type, c.value) for c in cfg.commands}
        self._connect = connect
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        self._opened_at = -math.inf

    def _connected(self) -> Client:
        """The open connection, opened if needed (blocking: runs in the worker thread)."""
        client = self._client
        if client is None or not client.get_connected():
            if client is not None:
                client.disconnect()
            self._client = None
            client = self._client = self._connect()
        return client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(S7Error, OSError):
                client.disconnect()

    async def keep_open(self) -> None:
        """Open the command connection ahead of the first command (no-op when open, when
        there are no commands, or within ``REOPEN_EVERY_S`` of the last attempt); a
        failure is left for the next command to report."""
        if not self.commands or self._client is not None or self._lock.locked():
            return
        now = time.monotonic()
        if now - self._opened_at < REOPEN_EVERY_S:
            return
        self._opened_at = now
        async with self._lock:
            try:
                await blocking(f"s7 command connect {self.where}", self._connected)
            except (S7Error, OSError) as exc:
                await blocking(f"s7 command disconnect {self.where}", self._drop)
                log.debug("s7 command connection not open yet", source=self.name,
                          error=str(exc) or type(exc).__name__)

    def _send(self, spec: _Write) -> None:
        spec.send(self._connected())

    async def write(self, command: Command) -> None:
        """Send a configured command (e.g. ``stop``); raises RetryableError on failure."""
        spec = command_of(self.commands, self.name, command.action)
        async with self._lock:
            try:
                await blocking(f"s7 command {command.action} to {self.where}", self._send, spec)
            except (S7Error, OSError) as exc:
                await blocking(f"s7 command disconnect {self.where}", self._drop)
                log.error("s7 command failed", source=self.name, action=command.action,
                          address=spec.address, error=str(exc) or type(exc).__name__)
                raise RetryableError(
                    f"source '{self.name}': command '{command.action}' failed: {exc}"
                ) from None
        log.info("s7 command sent", source=self.name, action=command.action,
                 address=spec.address)

    async def close(self) -> None:
        self._opened_at = -math.inf  # the next poll opens it again
        if self._client is not None:
            await blocking(f"s7 command disconnect {self.where}", self._drop)
