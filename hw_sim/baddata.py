"""Bad-data modes, as real plants produce them. Off by default.

A `BadData` setting says how often a row or message is spoiled (`rate`) and which
defects may be chosen (`kinds`); `drift_ppm` makes the device clock run fast or
slow. A `Defects` picker draws from its own seeded random stream, so switching bad
data on never changes the physics of a run, only what is written out. Every
spoiled item is written to the ground truth by the part that spoils it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: missing: a value left out; duplicate: the same row/message twice; naive_ts: a
#: timestamp without time zone; garbage: a non-number or an unparseable payload.
DEFECTS: tuple[str, ...] = ("missing", "duplicate", "naive_ts", "garbage")
#: The rest of a plant's chaos, chosen only when named in `kinds`. Good data in an odd
#: shape: spelling (the device under another spelling, `Conveyor/Pusher 1`,
#: `CONVEYOR/PUSHER-1`), mixed_tz (the same instant written in another UTC offset), late
#: (held back and sent `late_s` older, in an out-of-order burst of `late_burst`: MQTT
#: messages, or CMM rows in a late-<part>.csv file). Spoiled:
#: clock_jump (the device clock `clock_jump_s` ahead or behind for `clock_jump_ticks`
#: messages). The truth says which with `good`.
CHAOS: tuple[str, ...] = ("spelling", "mixed_tz", "late", "clock_jump")
KNOWN: tuple[str, ...] = DEFECTS + CHAOS


@dataclass(frozen=True)
class BadData:
    """How often, and how, output is spoiled. The default spoils nothing."""

    rate: float = 0.0
    kinds: tuple[str, ...] = field(default=DEFECTS)
    drift_ppm: float = 0.0
    late_s: float = 3 * 3600.0
    late_burst: int = 20
    clock_jump_s: float = 3600.0
    clock_jump_ticks: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"bad_data.rate must be in [0, 1], got {self.rate}")
        unknown = set(self.kinds) - set(KNOWN)
        if unknown:
            raise ValueError(f"bad_data.kinds: unknown {sorted(unknown)}; known {KNOWN}")
        if self.late_burst < 1 or self.clock_jump_ticks < 1:
            raise ValueError("bad_data.late_burst and clock_jump_ticks must be >= 1")
        if self.rate > 0 and not self.kinds:
            raise ValueError("bad_data.kinds must not be empty when rate > 0")

    @property
    def enabled(self) -> bool:
        return self.rate > 0 or self.drift_ppm != 0


class Defects:
    """Seeded picker of defects; `pick()` returns a defect name or None."""

    def __init__(self, seed: int, stream: int, cfg: BadData) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng([seed, stream, 0xBAD])

    def pick(self) -> str | None:
        if self.cfg.rate <= 0:
            return None
        if self.rng.random() >= self.cfg.rate:
            return None
        return str(self.cfg.kinds[int(self.rng.integers(len(self.cfg.kinds)))])

    def drifted(self, t_ns: int, start_ns: int) -> int:
        """Device timestamp for true time `t_ns`, with the configured clock drift."""
        if self.cfg.drift_ppm == 0:
            return t_ns
        return t_ns + round((t_ns - start_ns) * self.cfg.drift_ppm * 1e-6)
