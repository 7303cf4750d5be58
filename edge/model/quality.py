"""Quality of a sample: OPC-UA-like, the top two bits give the severity, the rest the reason.

Invariant: bad data is kept; a Bad sample carries its value as NaN and the reason here.
"""

from __future__ import annotations

import enum
from typing import Literal


class Quality(enum.IntEnum):
    """OPC-UA-like quality: the top two bits give the severity, the rest the reason."""

    GOOD = 0x00
    GOOD_COMPENSATED = 0x01
    UNCERTAIN = 0x40
    UNCERTAIN_ESTIMATED = 0x41
    UNCERTAIN_STALE = 0x42
    UNCERTAIN_OUT_OF_RANGE = 0x43
    BAD = 0x80
    BAD_TIMEOUT = 0x81
    BAD_DECODE = 0x82
    BAD_STALE = 0x83
    BAD_OUT_OF_RANGE = 0x84
    BAD_DEVICE_EXCEPTION = 0x85
    BAD_NOT_CONNECTED = 0x86
    BAD_MISSING = 0x87

    @property
    def severity(self) -> Literal["good", "uncertain", "bad"]:
        return severity(int(self))

    @property
    def reason(self) -> str:
        return self.name.lower()


def severity(code: int) -> Literal["good", "uncertain", "bad"]:
    if code & 0x80:
        return "bad"
    if code & 0x40:
        return "uncertain"
    return "good"
