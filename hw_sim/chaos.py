"""The rest of a plant's data chaos, for the parts that write data out (see
`baddata.CHAOS`): other spellings of a device, a timestamp in another UTC offset, late
bursts and device clocks that jump. Pure helpers with their own seeded stream, so the
physics of a run never changes with them.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np

from .baddata import BadData

_OFFSETS_MIN = (-300, -240, 60, 120, 330, 540)  # New York, Halifax, Paris, Athens, Delhi, Tokyo


def spellings(name: str) -> tuple[str, str]:
    """Two other spellings of a `station/component` name: `Conveyor/Pusher 1` and
    `CONVEYOR/PUSHER-1` for `conveyor/pusher1` (the same once case and punctuation are
    ignored)."""
    def spaced(level: str, sep: str) -> str:
        return re.sub(r"(?<=[A-Za-z])(?=\d)", sep, level)

    levels = name.split("/")
    title = "/".join(spaced(lv, " ").title() for lv in levels)
    upper = "/".join(spaced(lv, "-").upper() for lv in levels)
    return title, upper


def iso_in_offset(t_ns: int, minutes: int) -> str:
    """ISO 8601 of `t_ns` in the UTC offset `minutes`, milliseconds: the same instant."""
    zone = dt.timezone(dt.timedelta(minutes=minutes))
    stamp = dt.datetime.fromtimestamp(t_ns // 1_000_000_000, zone)
    stamp = stamp.replace(microsecond=(t_ns % 1_000_000_000) // 1000)
    return stamp.isoformat(timespec="milliseconds")


class Chaos:
    """Per-device state of the chaos kinds: clock jumps in progress, the late buffer."""

    def __init__(self, seed: int, stream: int, cfg: BadData) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng([seed, stream, 0xC4A05])
        self.jumps: dict[str, tuple[int, int]] = {}  # device -> (messages left, shift ns)
        self.late: list[tuple[str, bytes]] = []

    def shift(self, device: str, defect: str | None) -> tuple[int, str | None]:
        """(ns added to the device's timestamps, the defect of this message): a clock jump
        picked now starts one, and it lasts `clock_jump_ticks` messages; a late message is
        `late_s` older."""
        left, shift = self.jumps.get(device, (0, 0))
        if left == 0 and defect == "clock_jump":
            sign = 1 if self.rng.random() < 0.5 else -1
            left, shift = self.cfg.clock_jump_ticks, sign * round(self.cfg.clock_jump_s * 1e9)
        if left > 0:
            self.jumps[device] = (left - 1, shift)
            return shift, "clock_jump"
        if defect == "late":
            return -round(self.cfg.late_s * 1e9), defect
        return 0, defect

    def spelled(self, name: str) -> str:
        return spellings(name)[int(self.rng.integers(2))]

    def offset_min(self) -> int:
        return int(self.rng.choice(_OFFSETS_MIN))

    def hold(self, message: tuple[str, bytes]) -> list[tuple[str, bytes]]:
        """Keep a late message; the whole buffer, shuffled, once `late_burst` are held."""
        self.late.append(message)
        if len(self.late) < self.cfg.late_burst:
            return []
        burst, self.late = self.late, []
        order = self.rng.permutation(len(burst))
        return [burst[int(i)] for i in order]
