"""Config of the Modbus source: one device on TCP, or devices on an RTU bus.

``transport`` picks the wire:

* ``"tcp"`` (the default, and every key as before): Modbus TCP to ``host:port``, one
  device (``device_id``);
* ``"rtu"``: Modbus RTU on a serial line (RS-485/RS-232) at ``serial_port``, with
  ``baudrate``, ``parity``, ``stop_bits``; 8 data bits (RTU knows no other);
* ``"rtu-over-tcp"``: RTU frames (with CRC) carried over TCP to a serial-to-Ethernet
  converter at ``host:port``.

On the two RTU transports ``[[devices]]`` lists several devices of one bus, polled in
turn; each may have its own ``timeout_s``, ``registers`` and ``commands`` (else the
source's). Keys of another transport are refused by name, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import msgspec

from edge.config import ConfigStruct
from edge.model import DataType, TagRegistry
from edge.protocols.modbus.codec import WORDS, Order, RegType
from edge.protocols.modbus.plan import Function, ReadRequest, RegisterRef, plan_reads
from edge.sources.tag_config import ScaledTagConfig

if TYPE_CHECKING:
    from edge.components import BuildContext
    from edge.sources.modbus.bus import ModbusBusSource
    from edge.sources.modbus.source import ModbusSource

Transport = Literal["tcp", "rtu", "rtu-over-tcp"]
Parity = Literal["none", "even", "odd"]
PARITY_CHAR: dict[Parity, str] = {"none": "N", "even": "E", "odd": "O"}
SERIAL_KEYS = ("serial_port", "baudrate", "parity", "stop_bits")


class RegisterConfig(ScaledTagConfig, frozen=True, kw_only=True):
    address: int
    function: Function = "holding"
    type: RegType | None = None  # default: bool for coil/discrete, uint16 otherwise
    word_order: Order = "big"
    byte_order: Order = "big"

    def __post_init__(self) -> None:
        super().__post_init__()
        bits = self.function in ("coil", "discrete")
        if bits and self.type not in (None, "bool"):
            raise ValueError(f"type must be 'bool' for function '{self.function}'")
        if not bits and self.type == "bool":
            raise ValueError("type 'bool' needs function 'coil' or 'discrete'")

    @property
    def rtype(self) -> RegType:
        if self.type is not None:
            return self.type
        return "bool" if self.function in ("coil", "discrete") else "uint16"


class ModbusCommandConfig(ConfigStruct, frozen=True):
    action: str
    function: Literal["coil", "register"]
    address: int
    value: int = 1

    def __post_init__(self) -> None:
        if not self.action or "/" in self.action:
            raise ValueError("action must be non-empty and without '/'")
        if not 0 <= self.value <= 0xFFFF:
            raise ValueError("value must be 0..65535")


class ModbusDeviceConfig(ConfigStruct, frozen=True):
    """One device on an RTU bus; unset keys take the source's value."""

    device_id: int
    device: str
    timeout_s: float | None = None
    registers: list[RegisterConfig] | None = None
    commands: list[ModbusCommandConfig] | None = None
    holes: list[tuple[int, int]] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.device_id <= 247:
            raise ValueError("device_id must be 1..247 on an RTU bus (0 is broadcast)")
        if not self.device or "/" in self.device:
            raise ValueError("device must be non-empty and without '/'")
        if self.timeout_s is not None and not 0 < self.timeout_s <= 60:
            raise ValueError("timeout_s must be > 0 and <= 60")


@dataclass(frozen=True, slots=True)
class Unit:
    """One device as polled: its name (the tag prefix), id, timeout and register map."""

    name: str
    device_id: int
    timeout_s: float
    registers: tuple[RegisterConfig, ...]
    commands: tuple[ModbusCommandConfig, ...]
    holes: tuple[tuple[int, int], ...]


def plan_registers(registers: Sequence[RegisterConfig], address_base: int,
                   holes: Sequence[tuple[int, int]], max_registers: int,
                   max_bits: int) -> list[ReadRequest]:
    """The merged reads that cover ``registers`` (addresses as configured)."""
    refs = [RegisterRef(i, r.function, r.address - address_base, WORDS[r.rtype])
            for i, r in enumerate(registers)]
    limits: dict[Function, int] = {"holding": max_registers, "input": max_registers,
                                   "coil": max_bits, "discrete": max_bits}
    return plan_reads(refs, limits, [(h0 - address_base, h1 - address_base)
                                     for h0, h1 in holes])


def _check_map(where: str, registers: Sequence[RegisterConfig],
               commands: Sequence[ModbusCommandConfig], holes: Sequence[tuple[int, int]],
               base: int) -> None:
    names = [r.name for r in registers]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}registers: a name is used twice")
    for r in registers:
        if r.address < base:
            raise ValueError(f"{where}registers: '{r.name}' address {r.address} is below "
                             f"address_base {base}")
    actions: set[str] = set()
    for c in commands:
        if c.address < base:
            raise ValueError(f"{where}commands: '{c.action}' address is below address_base")
        if c.action in actions:
            raise ValueError(f"{where}commands: action '{c.action}' is defined twice")
        actions.add(c.action)
    for h0, h1 in holes:
        if h1 < h0 or h0 < base:
            raise ValueError(f"{where}holes: [{h0}, {h1}] is not a valid inclusive range")


class ModbusSourceConfig(ConfigStruct, frozen=True):
    name: str
    transport: Transport = "tcp"
    host: str = ""
    port: int | None = None  # 502 when unset
    serial_port: str = ""
    baudrate: int | None = None  # 19200 when unset
    parity: Parity | None = None  # "even" when unset (the Modbus RTU default)
    stop_bits: Literal[1, 2] | None = None  # 1 when unset
    inter_frame_s: float | None = None  # silence before a request; see bus_gap_s()
    device_id: int | None = None  # 1 when unset
    device: str = ""
    devices: list[ModbusDeviceConfig] = msgspec.field(default_factory=list)
    address_base: Literal[0, 1] = 0
    poll_interval_s: float = 1.0
    timeout_s: float = 1.0
    max_registers_per_read: int = 125
    max_bits_per_read: int = 2000
    holes: list[tuple[int, int]] = msgspec.field(default_factory=list)
    registers: list[RegisterConfig] = msgspec.field(default_factory=list)
    commands: list[ModbusCommandConfig] = msgspec.field(default_factory=list)
    backoff_max_s: float = 10.0

    def __post_init__(self) -> None:
        self._check_transport()
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError("port must be 1..65535")
        if self.device_id is not None and not 0 <= self.device_id <= 255:
            raise ValueError("device_id must be 0..255")
        if self.poll_interval_s <= 0 or self.timeout_s <= 0 or self.backoff_max_s <= 0:
            raise ValueError("poll_interval_s, timeout_s and backoff_max_s must be > 0")
        if not 1 <= self.max_registers_per_read <= 125:
            raise ValueError("max_registers_per_read must be 1..125")
        if not 1 <= self.max_bits_per_read <= 2000:
            raise ValueError("max_bits_per_read must be 1..2000")
        if self.devices:
            if self.device or self.device_id is not None:
                raise ValueError("device and device_id go inside [[devices]] when devices "
                                 "are listed")
            ids = [d.device_id for d in self.devices]
            names = [d.device for d in self.devices]
            if len(set(ids)) != len(ids):
                raise ValueError("devices: a device_id is used twice on one bus")
            if len(set(names)) != len(names):
                raise ValueError("devices: a device name is used twice")
        _check_map("", self.registers, self.commands, self.holes, self.address_base)
        for u in self.units():
            where = f"devices: '{u.name}': " if self.devices else ""
            if not u.registers:
                raise ValueError(f"{where}registers must list at least one register")
            _check_map(where, u.registers, u.commands, u.holes, self.address_base)
            try:
                self.plan_for(u)
            except ValueError as exc:
                raise ValueError(f"{where}registers: {exc}") from None

    def _check_transport(self) -> None:
        t = self.transport
        serial = [k for k in SERIAL_KEYS if getattr(self, k) not in (None, "")]
        if t == "rtu":
            if not self.serial_port:
                raise ValueError("serial_port is required for transport 'rtu' "
                                 "(e.g. '/dev/ttyUSB0')")
            if self.host or self.port is not None:
                raise ValueError("host and port are for transport 'tcp' or 'rtu-over-tcp'; "
                                 "transport 'rtu' takes serial_port")
            if self.baudrate is not None and not 300 <= self.baudrate <= 4_000_000:
                raise ValueError("baudrate must be 300..4000000")
        else:
            if not self.host:
                raise ValueError(f"host is required for transport '{t}'")
            if serial:
                raise ValueError(f"{', '.join(serial)}: serial line keys need transport "
                                 f"'rtu' (this source has transport '{t}')")
        if t == "tcp":
            if self.devices:
                raise ValueError("devices: several devices on one bus need transport 'rtu' "
                                 "or 'rtu-over-tcp'; for Modbus TCP use one source per device")
            if self.inter_frame_s is not None:
                raise ValueError("inter_frame_s is for transport 'rtu' or 'rtu-over-tcp'")
        if self.inter_frame_s is not None and not 0 <= self.inter_frame_s <= 1:
            raise ValueError("inter_frame_s must be 0..1 s")

    # ------------------------------------------------------------ resolved values

    @property
    def device_name(self) -> str:
        return self.device or self.name

    @property
    def tcp_port(self) -> int:
        return 502 if self.port is None else self.port

    @property
    def unit_id(self) -> int:
        return 1 if self.device_id is None else self.device_id

    @property
    def bus(self) -> bool:
        """True on the RTU transports: one request at a time, devices in turn."""
        return self.transport != "tcp"

    @property
    def baud(self) -> int:
        return 19200 if self.baudrate is None else self.baudrate

    def bus_gap_s(self) -> float:
        """Silence kept before each request. Unset: on a serial line 3.5 characters of
        11 bits (1.75 ms above 19,200 baud, as the Modbus serial spec fixes it); over TCP
        none (the converter keeps the line timing)."""
        if self.inter_frame_s is not None:
            return self.inter_frame_s
        if self.transport != "rtu":
            return 0.0
        return 0.00175 if self.baud > 19200 else 3.5 * 11 / self.baud

    def where(self) -> str:
        """Where the bus or device is, for log lines and errors."""
        if self.transport == "rtu":
            return self.serial_port
        return f"{self.host}:{self.tcp_port}"

    def units(self) -> list[Unit]:
        """The devices polled by this source, in polling order."""
        if not self.devices:
            return [Unit(self.device_name, self.unit_id, self.timeout_s, tuple(self.registers),
                         tuple(self.commands), tuple(self.holes))]
        return [Unit(d.device, d.device_id,
                     self.timeout_s if d.timeout_s is None else d.timeout_s,
                     tuple(self.registers if d.registers is None else d.registers),
                     tuple(self.commands if d.commands is None else d.commands),
                     tuple(self.holes if d.holes is None else d.holes))
                for d in self.devices]

    def plan_for(self, unit: Unit) -> list[ReadRequest]:
        return plan_registers(unit.registers, self.address_base, unit.holes,
                              self.max_registers_per_read, self.max_bits_per_read)

    def plan(self) -> list[ReadRequest]:
        """The reads of the (first) device."""
        return self.plan_for(self.units()[0])

    # ------------------------------------------------------------ the component contract

    def measurement_devices(self) -> frozenset[str]:
        """Modbus gives samples, never ``CmmReading``s."""
        return frozenset()

    def declare_tags(self, tags: TagRegistry) -> None:
        for u in self.units():
            for r in u.registers:
                dtype: DataType = "float64" if r.scaled and r.rtype != "float64" else r.rtype
                tags.add(u.name, r.name, unit=r.unit, dtype=dtype, low=r.low,
                         high=r.high, description=r.description)

    def build(self, ctx: BuildContext) -> ModbusSource | ModbusBusSource:
        if self.bus:
            from edge.sources.modbus.bus import ModbusBusSource
            return ModbusBusSource(self, ctx)
        from edge.sources.modbus.source import ModbusSource
        return ModbusSource(self, ctx)

    def actions(self) -> frozenset[str]:
        """The commands its devices take, for interlock checks: the ``commands`` table's
        actions, as ``<device>/<action>`` when ``[[devices]]`` lists the bus's devices."""
        if not self.devices:
            return frozenset(c.action for c in self.commands)
        return frozenset(f"{u.name}/{c.action}" for u in self.units() for c in u.commands)
