"""The keys a polled tag shares across protocols (Modbus registers, S7 tags): its name,
the linear scaling of the raw value, its unit, limits and description, and their checks.

Invariants: a tag's name is non-empty and has no '/' (it becomes ``device/name``);
``value = raw * scale + offset`` with ``scale`` finite and not 0 and ``offset`` finite, so
scaling never makes a NaN or infinity out of a good raw value.
"""

from __future__ import annotations

import math

from edge.config import ConfigStruct


class ScaledTagConfig(ConfigStruct, frozen=True):
    """Base of a protocol's tag struct; its own keys come after these (``kw_only``, so a
    required key may follow the defaults), and its ``__post_init__`` calls this one first."""

    name: str
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    low: float | None = None
    high: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError("name must be non-empty and without '/'")
        if self.scale == 0 or not math.isfinite(self.scale):
            raise ValueError("scale must not be 0")
        if not math.isfinite(self.offset):
            raise ValueError("offset must be a finite number")

    @property
    def scaled(self) -> bool:
        """True when the raw value is scaled or offset (it is then a float64 tag)."""
        return (self.scale, self.offset) != (1.0, 0.0)
