"""Modbus register words -> engineering values, and back (pure: no sockets).

Conventions (the usual device-manual names for a float32 ``0x41200000`` = 10.0):

* ``word_order`` big = high word first (``ABCD``, pymodbus ``word_order="big"``);
  little = low word first (``CDAB``).
* ``byte_order`` big = the high byte first inside each 16-bit register (the Modbus
  standard); little = bytes swapped inside each register (``BADC`` / ``DCBA``).
* value = raw * scale + offset, as float64.

``decode`` is the obvious scalar reference; ``Decoder`` decodes all registers of one
read at once (precompiled per read, it runs on every poll) and is checked against
``decode`` in the tests.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

RegType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"]
Order = Literal["big", "little"]
WORDS: dict[str, int] = {
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4, "bool": 1,
}
_FMT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f",
        "float64": ">d"}


def _swap(word: int) -> int:
    return ((word >> 8) | (word << 8)) & 0xFFFF


def to_words(raw: bytes, word_order: Order, byte_order: Order) -> list[int]:
    """Big-endian value bytes -> register words in the device's order."""
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [_swap(w) for w in words]
    return words


def decode(
    words: Sequence[int], rtype: RegType, word_order: Order = "big",
    byte_order: Order = "big", scale: float = 1.0, offset: float = 0.0,
) -> float:
    """One value from its registers (scalar reference implementation)."""
    if rtype == "bool":
        return float(bool(words[0])) * scale + offset
    w = [x & 0xFFFF for x in words[: WORDS[rtype]]]
    if byte_order == "little":
        w = [_swap(x) for x in w]
    if word_order == "little":
        w.reverse()
    raw = b"".join(x.to_bytes(2, "big") for x in w)
    return float(struct.unpack(_FMT[rtype], raw)[0]) * scale + offset


def encode(
    value: float, rtype: RegType, word_order: Order = "big", byte_order: Order = "big",
    scale: float = 1.0, offset: float = 0.0,
) -> list[int]:
    """Registers for an engineering value (inverse of ``decode``; ints are rounded)."""
    raw_value = (value - offset) / scale
    if rtype == "bool":
        return [1 if raw_value else 0]
    fmt = _FMT[rtype]
    packed = struct.pack(fmt, raw_value if rtype.startswith("float") else round(raw_value))
    return to_words(packed, word_order, byte_order)


@dataclass(frozen=True, slots=True)
class Field:
    """Where one register's value sits in a read, and how to decode it."""

    offset: int  # in registers (or bits) from the start of the read
    rtype: RegType
    word_order: Order = "big"
    byte_order: Order = "big"
    scale: float = 1.0
    value_offset: float = 0.0


class Decoder:
    """Decodes every field of one read with two precompiled ``struct`` calls.

    Built once per planned read: the read's words are packed to big-endian bytes, the
    bytes of each field are gathered into its big-endian value order (word and byte
    order, overlaps and gaps resolved at build time), and one ``Struct`` unpacks all
    values. This is the scalar reference's own arithmetic, so the results are
    bit-identical to ``decode``.
    """

    def __init__(self, fields: Sequence[Field]) -> None:
        self.n = len(fields)
        self.span = max((f.offset + WORDS[f.rtype] for f in fields), default=0)
        self._scale_offset = [(f.scale, f.value_offset) for f in fields]
        # raw values need no arithmetic (x * 1.0 + 0.0 is x for every float, NaN and inf)
        self._plain = all(so == (1.0, 0.0) for so in self._scale_offset)
        self._bits = any(f.rtype == "bool" for f in fields)
        if self._bits:
            if not all(f.rtype == "bool" for f in fields):
                raise ValueError("a read carries either bits or registers, not both")
            self._bit_at = [f.offset for f in fields]
            return
        self._pack = struct.Struct(f">{self.span}H")
        perm: list[int] = []  # byte positions in the packed read, in unpack order
        fmt = ">"
        for f in fields:
            width = WORDS[f.rtype]
            words = range(width - 1, -1, -1) if f.word_order == "little" else range(width)
            for k in words:
                pos = 2 * (f.offset + k)
                perm += [pos + 1, pos] if f.byte_order == "little" else [pos, pos + 1]
            fmt += _FMT[f.rtype][1]
        self._unpack = struct.Struct(fmt)
        self._gather = None if perm == list(range(len(perm))) else operator.itemgetter(*perm)

    def decode(self, words: Sequence[int] | Sequence[bool]) -> Sequence[float]:
        """Values of every field (registers or bits of the read, in wire order); integer
        types unscaled come as ints (exact, and float64 holds every one of them)."""
        if len(words) < self.span:
            raise ValueError(f"read returned {len(words)} items, expected {self.span}")
        if self._bits:
            return [(1.0 if words[at] else 0.0) * s + o
                    for at, (s, o) in zip(self._bit_at, self._scale_offset, strict=True)]
        try:
            raw = self._pack.pack(*words[: self.span])
        except struct.error as exc:
            raise ValueError(f"register value out of range: {exc}") from None
        if self._gather is not None:
            raw = bytes(self._gather(raw))
        if self._plain:
            return self._unpack.unpack(raw)  # type: ignore[no-any-return]
        # Python float arithmetic: a device's NaN or huge value stays NaN / becomes inf
        # silently, as in the scalar reference.
        return [v * s + o for v, (s, o) in
                zip(self._unpack.unpack(raw), self._scale_offset, strict=True)]
