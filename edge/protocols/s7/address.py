"""S7 absolute addresses, parsed into (area, db, byte, bit) (pure).

Accepted forms (case-insensitive; German mnemonics E/A for I/Q too):

* data blocks: ``DB10.DBX0.3`` (bit), ``DB10.DBB4``, ``DB10.DBW4``, ``DB10.DBD4``;
* inputs, outputs, markers: ``I0.1``, ``Q1.0``, ``M10.2`` (bits), ``IB0``, ``QW2``,
  ``MW20``, ``MD30``.

Invariants: ``str(parse(text))`` is the canonical spelling of ``text`` and parses back to
the same address; a bit address has ``bit`` 0..7 and ``width`` 0, a byte address ``bit``
-1 and ``width`` 1, 2 or 4 (the B/W/D letter). The letter only names the start byte and
its width; the tag's type decides how many bytes are read (``codec.py`` checks they
agree).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Area = Literal["DB", "I", "Q", "M"]
AREAS: tuple[Area, ...] = ("DB", "I", "Q", "M")
MAX_DB = 65535
MAX_BYTE = 65535  # S7-1500 areas are larger, but an absolute DB address tops out here

_WIDTH = {"B": 1, "W": 2, "D": 4}
_LETTER = {1: "B", 2: "W", 4: "D"}
_AREA_ALIAS: dict[str, Area] = {"I": "I", "E": "I", "Q": "Q", "A": "Q", "M": "M"}
_DB_RE = re.compile(r"DB(\d{1,5})\.DB(?:X(\d{1,5})\.(\d{1,2})|([BWD])(\d{1,5}))")
_IQM_RE = re.compile(r"([IEQAM])(?:(\d{1,5})\.(\d{1,2})|([BWD])(\d{1,5}))")


@dataclass(frozen=True, slots=True)
class Address:
    area: Area
    db: int  # 0 outside data blocks
    byte: int
    bit: int = -1  # 0..7 for a bit address, -1 for a byte address
    width: int = 0  # 1, 2 or 4 for a byte address (B/W/D), 0 for a bit address

    @property
    def is_bit(self) -> bool:
        return self.bit >= 0

    def __str__(self) -> str:
        if self.area == "DB":
            if self.is_bit:
                return f"DB{self.db}.DBX{self.byte}.{self.bit}"
            return f"DB{self.db}.DB{_LETTER[self.width]}{self.byte}"
        if self.is_bit:
            return f"{self.area}{self.byte}.{self.bit}"
        return f"{self.area}{_LETTER[self.width]}{self.byte}"


def parse(text: str) -> Address:
    """The address ``text`` names; ValueError saying what is wrong with it."""
    s = text.strip().upper().replace(" ", "")
    m = _DB_RE.fullmatch(s)
    if m:
        db = int(m.group(1))
        if not 1 <= db <= MAX_DB:
            raise ValueError(f"address '{text}': DB number must be 1..{MAX_DB}")
        area: Area = "DB"
        groups = m.group(2, 3, 4, 5)
    else:
        m = _IQM_RE.fullmatch(s)
        if not m:
            raise ValueError(
                f"address '{text}' is not an S7 address (examples: DB10.DBD4, DB1.DBX0.3, "
                "I0.1, Q1.0, M10.2, MW20)")
        db = 0
        area = _AREA_ALIAS[m.group(1)]
        groups = m.group(2, 3, 4, 5)
    bit_byte, bit, letter, byte_s = groups
    if bit_byte is not None:
        byte, b = int(bit_byte), int(bit)
        if not 0 <= b <= 7:
            raise ValueError(f"address '{text}': bit must be 0..7")
        width = 0
    else:
        byte, b, width = int(byte_s), -1, _WIDTH[letter]
    if byte > MAX_BYTE:
        raise ValueError(f"address '{text}': byte offset must be 0..{MAX_BYTE}")
    return Address(area, db, byte, b, width)
