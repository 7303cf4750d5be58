"""The S7 types: bytes <-> values (pure). S7 is big-endian throughout.

Invariants (hypothesis round trips in the tests):

* ``decode(t, encode(t, v)) == v`` for every value ``v`` the type holds (REAL: the
  nearest float32; DATE_AND_TIME: whole milliseconds, 1990-01-01 to 2089-12-31).
* ``encode`` raises ValueError for a value the type cannot hold (out of range, a
  fraction for an integer type, a string too long or not latin-1); it never wraps or
  truncates silently.
* ``decode`` raises ValueError for bytes that are not a value of the type (a STRING
  whose current length exceeds its maximum, DATE_AND_TIME with non-BCD digits or an
  impossible date), so the source marks that one tag Bad and keeps the others.
* A tag's bytes are ``size`` bytes from its start byte; BOOL reads the byte holding its
  bit. DATE_AND_TIME is decoded as UTC seconds since the epoch (the PLC's clock has no
  zone; set the PLC to UTC or shift the value downstream).
"""

from __future__ import annotations

import calendar
import math
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from edge.model import DataType
from edge.protocols.s7.address import Address

TypeName = Literal["BOOL", "BYTE", "WORD", "INT", "DWORD", "DINT", "REAL", "LREAL",
                   "STRING", "DATE_AND_TIME"]
STRING_MAX = 254
Buf = bytes | bytearray | memoryview
DecodeFn = Callable[[Buf, int], "float | bool | str"]

_FIXED: dict[str, tuple[int, str, DataType]] = {
    # name: (bytes, struct format, tag data type)
    "BOOL": (1, "", "bool"),
    "BYTE": (1, ">B", "uint16"),
    "WORD": (2, ">H", "uint16"),
    "INT": (2, ">h", "int16"),
    "DWORD": (4, ">I", "uint32"),
    "DINT": (4, ">i", "int32"),
    "REAL": (4, ">f", "float32"),
    "LREAL": (8, ">d", "float64"),
    "DATE_AND_TIME": (8, "", "float64"),
}
_ALIASES = {"DT": "DATE_AND_TIME", "USINT": "BYTE", "UINT": "WORD", "UDINT": "DWORD"}
_STRING_RE = re.compile(r"STRING(?:\[(\d{1,3})\])?")
_INT_RANGE = {"BYTE": (0, 0xFF), "WORD": (0, 0xFFFF), "INT": (-0x8000, 0x7FFF),
              "DWORD": (0, 0xFFFF_FFFF), "DINT": (-0x8000_0000, 0x7FFF_FFFF)}


@dataclass(frozen=True, slots=True)
class S7Type:
    name: TypeName
    size: int  # bytes on the wire (STRING[n]: n + 2)
    dtype: DataType  # the tag's data type when it is a sample
    length: int = 0  # STRING[n]: n

    @property
    def numeric(self) -> bool:
        """True when a value of this type is a number (a sample); STRING is not."""
        return self.name != "STRING"

    def __str__(self) -> str:
        return f"STRING[{self.length}]" if self.name == "STRING" else self.name


def parse_type(text: str) -> S7Type:
    """The type ``text`` names (``REAL``, ``STRING[20]``, ``DT``...); ValueError if none."""
    s = text.strip().upper().replace(" ", "")
    s = _ALIASES.get(s, s)
    if s in _FIXED:
        size, _, dtype = _FIXED[s]
        return S7Type(s, size, dtype)  # type: ignore[arg-type]
    m = _STRING_RE.fullmatch(s)
    if m:
        n = int(m.group(1) or STRING_MAX)
        if not 1 <= n <= STRING_MAX:
            raise ValueError(f"type '{text}': STRING length must be 1..{STRING_MAX}")
        return S7Type("STRING", n + 2, "float64", n)
    raise ValueError(
        f"type '{text}' is not an S7 type (BOOL, BYTE, WORD, INT, DWORD, DINT, REAL, LREAL, "
        "STRING[n], DATE_AND_TIME)")


def check(addr: Address, t: S7Type) -> None:
    """ValueError when ``addr`` cannot hold a ``t`` (a BOOL needs a bit address, a REAL a
    D address: the letter must agree with the type's width up to 4 bytes)."""
    if t.name == "BOOL":
        if not addr.is_bit:
            raise ValueError(f"type BOOL needs a bit address (e.g. DB1.DBX0.3, M10.2), "
                             f"not {addr}")
        return
    if addr.is_bit:
        raise ValueError(f"type {t} needs a byte address (B/W/D), not the bit address {addr}")
    if t.size <= 4 and addr.width != t.size:
        raise ValueError(f"type {t} is {t.size} bytes but {addr} names {addr.width}: "
                         f"use the {'BWD'[(1, 2, 4).index(t.size)]} form")
    if addr.byte + t.size > 65536:
        raise ValueError(f"{addr} with type {t} runs past byte 65535")


# ---------------------------------------------------------------------- decode

def _bcd(b: int) -> int:
    hi, lo = b >> 4, b & 0x0F
    if hi > 9 or lo > 9:
        raise ValueError(f"0x{b:02x} is not a BCD byte")
    return hi * 10 + lo


def decode_dt(buf: bytes | bytearray | memoryview, offset: int = 0) -> float:
    """DATE_AND_TIME (8 BCD bytes: yy mm dd hh mi ss, ms in 3 digits, weekday) as UTC
    seconds since the epoch. The weekday nibble is not checked (PLCs leave it 0)."""
    yy, mo, dd, hh, mi, ss = (_bcd(buf[offset + i]) for i in range(6))
    ms = _bcd(buf[offset + 6]) * 10 + _bcd(buf[offset + 7] & 0xF0) // 10
    year = 1900 + yy if yy >= 90 else 2000 + yy
    if not (1 <= mo <= 12 and 1 <= dd <= calendar.monthrange(year, mo)[1]
            and hh <= 23 and mi <= 59 and ss <= 59):
        raise ValueError(f"DATE_AND_TIME {year}-{mo:02d}-{dd:02d} {hh:02d}:{mi:02d}:{ss:02d} "
                         "is not a date")
    return calendar.timegm((year, mo, dd, hh, mi, ss, 0, 0, 0)) + ms / 1000.0


def decode_string(buf: bytes | bytearray | memoryview, offset: int, t: S7Type) -> str:
    declared, current = buf[offset], buf[offset + 1]
    if current > declared or current > t.length:
        raise ValueError(f"STRING current length {current} exceeds its maximum "
                         f"{min(declared, t.length)}")
    return bytes(buf[offset + 2: offset + 2 + current]).decode("latin-1")


def decoder(t: S7Type, bit: int = -1) -> DecodeFn:
    """A function ``(buf, offset) -> value`` for type ``t`` (``bit`` for BOOL): built once
    per tag, called once per poll."""
    if t.name == "BOOL":
        mask = 1 << bit
        return lambda buf, off: bool(buf[off] & mask)
    if t.name == "DATE_AND_TIME":
        return decode_dt
    if t.name == "STRING":
        return lambda buf, off: decode_string(buf, off, t)
    unpack = struct.Struct(_FIXED[t.name][1]).unpack_from
    return lambda buf, off: unpack(buf, off)[0]


def decode(t: S7Type, buf: bytes | bytearray | memoryview, offset: int = 0,
           bit: int = -1) -> float | bool | str:
    return decoder(t, bit)(buf, offset)


# ---------------------------------------------------------------------- encode

def encode_dt(seconds: float) -> bytes:
    """UTC seconds since the epoch as DATE_AND_TIME (rounded to the millisecond)."""
    if not math.isfinite(seconds):
        raise ValueError("DATE_AND_TIME must be a finite time")
    total_ms = round(seconds * 1000)
    secs, ms = divmod(total_ms, 1000)
    tm = time.gmtime(secs)
    if not 1990 <= tm.tm_year <= 2089:
        raise ValueError(f"DATE_AND_TIME holds 1990..2089, not {tm.tm_year}")

    def bcd(v: int) -> int:
        return (v // 10) << 4 | v % 10

    weekday = (tm.tm_wday + 1) % 7 + 1  # S7: 1 = Sunday
    return bytes([bcd(tm.tm_year % 100), bcd(tm.tm_mon), bcd(tm.tm_mday), bcd(tm.tm_hour),
                  bcd(tm.tm_min), bcd(tm.tm_sec), bcd(ms // 10), (ms % 10) << 4 | weekday])


def encode(t: S7Type, value: float | bool | str) -> bytes:
    """The bytes of ``value`` as type ``t`` (BOOL: one byte, 0 or 1, for a bit write)."""
    if t.name == "STRING":
        if not isinstance(value, str):
            raise ValueError(f"STRING needs a text value, not {value!r}")
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError("STRING holds latin-1 text only") from None
        if len(raw) > t.length:
            raise ValueError(f"'{value[:20]}' is longer than STRING[{t.length}]")
        return bytes([t.length, len(raw)]) + raw + bytes(t.length - len(raw))
    if isinstance(value, str):
        raise ValueError(f"type {t} needs a number, not {value!r}")
    if t.name == "BOOL":
        if value not in (0, 1):
            raise ValueError(f"BOOL needs 0/1 or true/false, not {value!r}")
        return b"\x01" if value else b"\x00"
    if t.name == "DATE_AND_TIME":
        return encode_dt(float(value))
    if t.name in ("REAL", "LREAL"):
        f = float(value)
        if t.name == "REAL" and math.isfinite(f) and abs(f) > 3.4028234663852886e38:
            raise ValueError(f"{value!r} is out of range for REAL")
        return struct.pack(_FIXED[t.name][1], f)
    lo, hi = _INT_RANGE[t.name]
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"type {t} needs a whole number, not {value!r}")
    n = int(value)
    if not lo <= n <= hi:
        raise ValueError(f"{value!r} is out of range for {t} ({lo}..{hi})")
    return struct.pack(_FIXED[t.name][1], n)
