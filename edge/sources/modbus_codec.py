"""Modbus register words -> engineering values, and back (pure: no sockets).

Conventions (the usual device-manual names for a float32 ``0x41200000`` = 10.0):

* ``word_order`` big = high word first (``ABCD``, pymodbus ``word_order="big"``);
  little = low word first (``CDAB``).
* ``byte_order`` big = the high byte first inside each 16-bit register (the Modbus
  standard); little = bytes swapped inside each register (``BADC`` / ``DCBA``).
* value = raw * scale + offset, as float64.

``decode`` is the obvious scalar reference; ``Decoder`` decodes all registers of one
read with numpy and is checked against ``decode`` in the tests.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

RegType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"]
Order = Literal["big", "little"]
WORDS: dict[str, int] = {
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4, "bool": 1,
}
_FMT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f",
        "float64": ">d"}
_NP: dict[str, np.dtype[Any]] = {
    "int16": np.dtype(">i2"), "uint16": np.dtype(">u2"), "int32": np.dtype(">i4"),
    "uint32": np.dtype(">u4"), "float32": np.dtype(">f4"), "float64": np.dtype(">f8"),
}


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
    """Decodes every field of one read in a few numpy operations per type/order group."""

    def __init__(self, fields: Sequence[Field]) -> None:
        self.n = len(fields)
        groups: dict[tuple[str, str, str], list[int]] = {}
        for i, f in enumerate(fields):
            groups.setdefault((f.rtype, f.word_order, f.byte_order), []).append(i)
        self._groups: list[tuple[str, bool, npt.NDArray[np.intp], npt.NDArray[np.intp]]] = []
        for (rtype, word_order, byte_order), members in groups.items():
            width = WORDS[rtype]
            order = range(width - 1, -1, -1) if word_order == "little" else range(width)
            idx = np.array([[fields[i].offset + k for k in order] for i in members], np.intp)
            self._groups.append((rtype, byte_order == "little", idx, np.array(members, np.intp)))
        self.scale = np.array([f.scale for f in fields], np.float64)
        self.offset = np.array([f.value_offset for f in fields], np.float64)
        self.span = max((f.offset + WORDS[f.rtype] for f in fields), default=0)

    def decode(self, words: Sequence[int] | Sequence[bool]) -> npt.NDArray[np.float64]:
        """Values of every field (registers or bits of the read, in wire order)."""
        if len(words) < self.span:
            raise ValueError(f"read returned {len(words)} items, expected {self.span}")
        arr = np.asarray(words[: self.span], dtype=np.uint16)
        out = np.empty(self.n, np.float64)
        for rtype, swap, idx, members in self._groups:
            w = arr[idx]
            if rtype == "bool":
                out[members] = (w[:, 0] != 0).astype(np.float64)
                continue
            if swap:
                w = ((w >> 8) | (w << 8)).astype(np.uint16)
            out[members] = np.frombuffer(w.astype(">u2").tobytes(), _NP[rtype])
        # A device may send any bit pattern, signalling NaNs included: they decode to NaN
        # (as the scalar path does) instead of raising a floating-point warning.
        with np.errstate(invalid="ignore", over="ignore"):
            return out * self.scale + self.offset
