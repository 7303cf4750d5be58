"""The S7 source's config: the PLC, its tags and its commands, checked when the file is
loaded (every address parsed, every type fitted to its address, every command value
encoded, the reads planned), so a mistake is a config error naming the tag, never a
failure at the first poll."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from edge.components import BuildContext
from edge.config import ConfigStruct
from edge.model import DataType, TagRegistry
from edge.protocols.s7.address import Address, parse
from edge.protocols.s7.codec import S7Type, check, encode, parse_type
from edge.protocols.s7.plan import ReadRequest, TagRef, max_read_bytes, plan_reads
from edge.sources.tag_config import ScaledTagConfig

if TYPE_CHECKING:
    from edge.sources.s7.source import S7Source


def address_of(text: str, type_text: str) -> tuple[Address, S7Type]:
    addr, t = parse(text), parse_type(type_text)
    check(addr, t)
    return addr, t


class S7TagConfig(ScaledTagConfig, frozen=True, kw_only=True):
    address: str  # DB10.DBD4, DB1.DBX0.3, I0.1, Q1.0, M10.2, MW20...
    type: str  # BOOL, BYTE, WORD, INT, DWORD, DINT, REAL, LREAL, DATE_AND_TIME, STRING[n]

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            _, t = address_of(self.address, self.type)
        except ValueError as exc:
            raise ValueError(f"tag '{self.name}': {exc}") from None
        if not t.numeric and self.scaled:
            raise ValueError(f"tag '{self.name}': type {t} is text: scale and offset are "
                             "for numbers")

    @property
    def text(self) -> bool:
        """True for a STRING tag: its value travels as a ``TextValue`` record (on change),
        not as a sample."""
        return not parse_type(self.type).numeric

    @property
    def dtype(self) -> DataType:
        t = parse_type(self.type)
        if self.scaled and t.dtype != "float64":
            return "float64"
        return t.dtype


class S7CommandConfig(ConfigStruct, frozen=True):
    action: str
    address: str  # e.g. DB1.DBX0.0 for a stop bit
    type: str = "BOOL"
    value: bool | int | float = True

    def __post_init__(self) -> None:
        try:
            _, t = address_of(self.address, self.type)
            encode(t, self.value)
        except ValueError as exc:
            raise ValueError(f"command '{self.action}': {exc}") from None


class S7SourceConfig(ConfigStruct, frozen=True):
    name: str
    host: str
    port: int = 102
    rack: int = 0
    slot: int = 1
    local_tsap: int | None = None
    remote_tsap: int | None = None
    device: str = ""
    poll_interval_s: float = 1.0
    timeout_s: float = 2.0
    pdu_size: int = 480
    max_gap_bytes: int = 32
    tags: list[S7TagConfig] = msgspec.field(default_factory=list)
    commands: list[S7CommandConfig] = msgspec.field(default_factory=list)
    backoff_max_s: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError("port must be 1..65535")
        if not 0 <= self.rack <= 7 or not 0 <= self.slot <= 31:
            raise ValueError("rack must be 0..7 and slot 0..31")
        if (self.local_tsap is None) != (self.remote_tsap is None):
            raise ValueError("local_tsap and remote_tsap go together (or use rack/slot)")
        for tsap in (self.local_tsap, self.remote_tsap):
            if tsap is not None and not 0 <= tsap <= 0xFFFF:
                raise ValueError("local_tsap and remote_tsap must be 0..0xFFFF")
        if self.poll_interval_s <= 0 or self.timeout_s <= 0 or self.backoff_max_s <= 0:
            raise ValueError("poll_interval_s, timeout_s and backoff_max_s must be > 0")
        if not 240 <= self.pdu_size <= 960:
            raise ValueError("pdu_size must be 240..960 (bytes; S7-300: 240, S7-1500: 960)")
        if not 0 <= self.max_gap_bytes <= 65535:
            raise ValueError("max_gap_bytes must be 0..65535")
        if not self.tags:
            raise ValueError("tags must list at least one tag")
        names = [t.name for t in self.tags]
        if len(set(names)) != len(names):
            raise ValueError("tags: a name is used twice")
        actions = [c.action for c in self.commands]
        if len(set(actions)) != len(actions):
            raise ValueError("commands: an action is defined twice")
        try:
            self.plan(self.pdu_size)
        except ValueError as exc:
            raise ValueError(f"tags: {exc}") from None

    @property
    def device_name(self) -> str:
        return self.device or self.name

    def plan(self, pdu_size: int) -> list[ReadRequest]:
        refs = []
        for i, tag in enumerate(self.tags):
            addr, t = address_of(tag.address, tag.type)
            refs.append(TagRef(i, addr.area, addr.db, addr.byte, t.size))
        return plan_reads(refs, max_read_bytes(pdu_size), self.max_gap_bytes)

    def declare_tags(self, tags: TagRegistry) -> None:
        """The numeric tags (samples); STRING tags are records, not registered tags."""
        for t in self.tags:
            if t.text:
                continue
            tags.add(self.device_name, t.name, unit=t.unit, dtype=t.dtype, low=t.low,
                     high=t.high, description=t.description)

    def build(self, ctx: BuildContext) -> S7Source:
        from edge.sources.s7.source import S7Source

        return S7Source(self, ctx)

    def actions(self) -> frozenset[str]:
        """The commands this PLC takes (its ``commands`` table), for interlock checks."""
        return frozenset(c.action for c in self.commands)

    def measurement_devices(self) -> frozenset[str]:
        """S7 gives samples, never ``CmmReading``s."""
        return frozenset()
