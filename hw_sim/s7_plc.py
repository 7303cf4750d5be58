"""A simulated Siemens S7 PLC: python-snap7's server with a data block of known values.

DB1 holds one tag of every S7 type the gateway reads (``LAYOUT``, byte offsets), and two
command bits the gateway writes (``DB1.DBX52.0`` stop, ``DB1.DBX52.1`` reset). The values
follow ``values(step)``: each ``tick()`` moves to the next step, so a test reads known
values that change. Inputs (IB0..IB3), outputs (QB0..QB3) and markers (MB0..MB63) exist
too; extra data blocks of any size (``extra_dbs``, zeros) serve benchmarks.

Differences from snap7's stock server, both to behave like a real CPU:

* a bit write (``WordLen.Bit``) sets that one bit; the stock server (3.3.0) wrote the
  whole byte, clearing the seven other bits;
* ``stop()`` resets the open connections (a CPU that powers off), where the stock
  server kept serving them once started again.

In-process: ``plc = S7Plc(); plc.start(); plc.port; plc.tick(); plc.stop()``.
As a process: ``python -m hw_sim.s7_plc [--port N] [--interval S]`` prints
``READY port=N`` once it listens (port 0: a free one) and ticks every interval.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import socket
import struct
import sys
import threading
import time
from typing import Any

from snap7.datatypes import S7Area, S7WordLen
from snap7.server import Server
from snap7.type import SrvArea

from edge.protocols.s7.address import parse
from edge.protocols.s7.codec import encode, parse_type

DB = 1
DB_SIZE = 64
# name: (address, type): the documented map of DB1 and the I/Q/M areas
LAYOUT: dict[str, tuple[str, str]] = {
    "running": ("DB1.DBX0.0", "BOOL"),
    "alarm": ("DB1.DBX0.5", "BOOL"),
    "counter": ("DB1.DBB1", "BYTE"),
    "temp_x10": ("DB1.DBW2", "INT"),
    "cycles": ("DB1.DBD4", "DINT"),
    "temperature": ("DB1.DBD8", "REAL"),
    "pressure": ("DB1.DBB12", "LREAL"),
    "recipe": ("DB1.DBB20", "STRING[16]"),
    "clock": ("DB1.DBB38", "DATE_AND_TIME"),
    "status": ("DB1.DBW46", "WORD"),
    "parts": ("DB1.DBD48", "DWORD"),
    "door_closed": ("I0.3", "BOOL"),
    "motor_on": ("Q1.0", "BOOL"),
    "speed": ("MW20", "INT"),
}
STOP_BIT = (52, 0)  # DB1.DBX52.0
RESET_BIT = (52, 1)  # DB1.DBX52.1
CLOCK_T0 = calendar.timegm((2026, 12, 7, 8, 0, 0, 0, 0, 0))


def values(step: int) -> dict[str, float | bool | str]:
    """The values of ``LAYOUT`` at ``step`` (what a test expects to read)."""
    return {
        "running": step % 2 == 1,
        "alarm": step % 3 == 0,
        "counter": step % 256,
        "temp_x10": -50 + 7 * step,
        "cycles": 100_000 + 1_000 * step,
        "temperature": 20.5 + 0.25 * step,  # exact in float32
        "pressure": 1.0 + step / 3,
        "recipe": f"recipe-{step}",
        "clock": CLOCK_T0 + step + 0.125,
        "status": 0xA000 + step,
        "parts": 3_000_000_000 + step,
        "door_closed": step % 2 == 0,
        "motor_on": step % 2 == 1,
        "speed": 1500 - step,
    }


class _Server(Server):
    """snap7's server with single-bit writes and a hard stop (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(log=False)
        self._sockets: set[socket.socket] = set()
        self._sock_lock = threading.Lock()

    def _parse_address_specification(self, addr_spec: bytes) -> dict[str, Any]:
        spec = super()._parse_address_specification(addr_spec)
        if spec and spec.get("word_len") == S7WordLen.BIT:
            spec["bit"] = struct.unpack(">I", b"\x00" + addr_spec[9:12])[0] % 8
        return spec

    def _parse_write_address(
        self, request: dict[str, Any]
    ) -> tuple[S7Area, int, int, int, bytearray] | None:
        parsed = super()._parse_write_address(request)
        spec = request.get("parameters", {}).get("address_spec", {})
        if parsed is None or "bit" not in spec:
            return parsed
        area, db, start, count, data = parsed
        key = (area, db)
        memory = self.memory_areas.get(key)
        if memory is None or start >= len(memory):
            return parsed  # the stock path answers the error
        mask = 1 << spec["bit"]
        with self.area_locks[key]:
            byte = (memory[start] & ~mask) | (mask if data[0] & 1 else 0)
        return area, db, start, count, bytearray([byte])

    def _handle_client(self, client_socket: socket.socket, address: tuple[str, int]) -> None:
        with self._sock_lock:
            self._sockets.add(client_socket)
        try:
            super()._handle_client(client_socket, address)
        finally:
            with self._sock_lock:
                self._sockets.discard(client_socket)

    def stop(self) -> int:
        with self._sock_lock:
            sockets = list(self._sockets)
        for s in sockets:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)
        return super().stop()


class S7Plc:
    """The simulated PLC. ``start`` binds 127.0.0.1 (port 0: a free port, read ``port``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 extra_dbs: dict[int, int] | None = None) -> None:
        self.host = host
        self.port = port
        self.step = 0
        self.db = bytearray(DB_SIZE)
        self.inputs = bytearray(4)
        self.outputs = bytearray(4)
        self.markers = bytearray(64)
        self.extra = {n: bytearray(size) for n, size in (extra_dbs or {}).items()}
        self._server: _Server | None = None
        self._lock = threading.Lock()
        self._write(values(0))

    def _area(self, address: str) -> tuple[bytearray, SrvArea, int]:
        a = address.upper()
        if a.startswith("DB"):
            return self.db, SrvArea.DB, DB
        return {"I": (self.inputs, SrvArea.PE, 0), "Q": (self.outputs, SrvArea.PA, 0),
                "M": (self.markers, SrvArea.MK, 0)}[a[0]]

    def _write(self, vals: dict[str, float | bool | str]) -> None:
        for name, v in vals.items():
            address, type_text = LAYOUT[name]
            addr, t = parse(address), parse_type(type_text)
            memory, area, index = self._area(address)
            with self._locked(area, index):
                if t.name == "BOOL":
                    mask = 1 << addr.bit
                    memory[addr.byte] = (memory[addr.byte] & ~mask) | (mask if v else 0)
                else:
                    raw = encode(t, v)
                    memory[addr.byte: addr.byte + len(raw)] = raw

    @contextlib.contextmanager
    def _locked(self, area: SrvArea, index: int) -> Any:
        server = self._server
        if server is None:
            yield
            return
        server.lock_area(area, index)
        try:
            yield
        finally:
            server.unlock_area(area, index)

    def tick(self) -> int:
        """Move to the next step (new values); returns it."""
        with self._lock:
            self.step += 1
            self._write(values(self.step))
            return self.step

    def bit(self, byte: int, bit: int) -> bool:
        """A bit of DB1 (e.g. ``STOP_BIT``), as the gateway wrote it."""
        return bool(self.db[byte] >> bit & 1)

    def clear_bit(self, byte: int, bit: int) -> None:
        with self._locked(SrvArea.DB, DB):
            self.db[byte] &= ~(1 << bit)

    def start(self) -> int:
        """Listen (again, after ``stop``, on the same port); returns the port."""
        server = _Server()
        server.register_area(SrvArea.DB, DB, self.db)
        server.register_area(SrvArea.PE, 0, self.inputs)
        server.register_area(SrvArea.PA, 0, self.outputs)
        server.register_area(SrvArea.MK, 0, self.markers)
        for n, memory in self.extra.items():
            server.register_area(SrvArea.DB, n, memory)
        server.start_to(self.host, self.port)
        assert server.server_socket is not None
        self.port = server.server_socket.getsockname()[1]
        self._server = server
        return self.port

    def stop(self) -> None:
        """Stop listening and reset every open connection (a CPU powering off)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    @property
    def running(self) -> bool:
        return self._server is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between steps")
    ap.add_argument("--steps", type=int, default=0, help="stop after N steps (0: never)")
    ap.add_argument("--db", action="append", default=[], metavar="N:SIZE",
                    help="an extra data block of SIZE bytes (zeros), e.g. 2:8000")
    args = ap.parse_args(argv)
    extra = {int(n): int(size) for n, size in (d.split(":") for d in args.db)}
    plc = S7Plc(args.host, args.port, extra)
    port = plc.start()
    print(f"READY port={port}", flush=True)
    try:
        while not args.steps or plc.step < args.steps:
            time.sleep(args.interval)
            plc.tick()
    except KeyboardInterrupt:
        pass
    finally:
        plc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
