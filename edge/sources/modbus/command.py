"""The Modbus write-back port: commands (a machine stop) on their own connection.

Invariants:

* Commands never share the polling connection, so a stop never queues behind a poll
  that hangs; one command at a time (a lock), each bounded by a timeout.
* The connection is opened as soon as the poll link is up (``keep_open``, called by
  the source between polls, at most every ``REOPEN_EVERY_S`` while the device refuses),
  so the first stop of the day does not pay for a TCP connect (~6 ms under load);
  a command that finds it closed opens it inside its own timeout. It is dropped when
  the poll link goes down (the source calls ``close``), so a stop after a device
  restart reconnects (tens of ms) instead of timing out on a dead socket (seen in the
  chaos suite: 502 ms).
* A failed command closes the connection (a late answer can never be taken for the
  next command's) and raises ``RetryableError``; an unknown action ``PermanentError``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from edge.components import Command
from edge.errors import RetryableError
from edge.sources.commands import command_of

if TYPE_CHECKING:
    from edge.sources.modbus.config import ModbusSourceConfig

log = structlog.get_logger("edge.sources.modbus")

REOPEN_EVERY_S = 5.0


class ModbusCommandPort:
    def __init__(self, cfg: ModbusSourceConfig,
                 make_client: Callable[[], AsyncModbusTcpClient]) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.commands = {c.action: c for c in cfg.commands}
        self._make_client = make_client
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._opened_at = -math.inf

    async def keep_open(self) -> None:
        """Open the command connection ahead of the first command (no-op when open, when
        the source has no commands, or when the last attempt was under
        ``REOPEN_EVERY_S`` ago); a failure is left for the next command to report."""
        client = self._client
        if not self.commands or (client is not None and client.connected):
            return
        now = time.monotonic()
        if now - self._opened_at < REOPEN_EVERY_S or self._lock.locked():
            return
        self._opened_at = now
        async with self._lock:
            try:
                async with asyncio.timeout(self.cfg.timeout_s):
                    await self._connected()
            except (TimeoutError, ModbusException, OSError) as exc:
                self.close()
                self._opened_at = now  # not again before REOPEN_EVERY_S
                log.debug("modbus command connection not open yet", source=self.name,
                          error=str(exc) or type(exc).__name__)

    async def _connected(self) -> AsyncModbusTcpClient:
        client = self._client
        if client is None or not client.connected:
            if client is not None:
                client.close()
            client = self._client = self._make_client()
            if not await client.connect():
                raise ConnectionException(f"cannot connect to {self.cfg.host}")
        return client

    async def write(self, command: Command) -> None:
        """Send a configured command (e.g. ``stop``); raises RetryableError on failure."""
        spec = command_of(self.commands, self.name, command.action)
        address = spec.address - self.cfg.address_base
        async with self._lock:
            try:
                async with asyncio.timeout(self.cfg.timeout_s * 2 + 1):
                    client = await self._connected()
                    if spec.function == "coil":
                        rr = await client.write_coil(address, bool(spec.value),
                                                     device_id=self.cfg.unit_id)
                    else:
                        rr = await client.write_register(address, spec.value,
                                                         device_id=self.cfg.unit_id)
            except (TimeoutError, ModbusException, OSError) as exc:
                self.close()
                log.error("modbus command failed", source=self.name, action=command.action,
                          function=spec.function, address=address, error=str(exc))
                raise RetryableError(
                    f"source '{self.name}': command '{command.action}' failed: {exc}"
                ) from None
        if rr.isError():
            raise RetryableError(
                f"source '{self.name}': command '{command.action}' answered with "
                f"exception {rr.exception_code}"
            )

    def close(self) -> None:
        self._opened_at = -math.inf  # the next poll opens it again
        if self._client is not None:
            self._client.close()
            self._client = None
