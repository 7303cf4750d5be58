"""``[[energy]]``: a line's motors, their electrical model and the shift calendar (the
stage is ``edge.processing.energy``)."""

from __future__ import annotations

import msgspec

from edge.config import ConfigStruct
from edge.model import TagRegistry
from edge.processing.calendar import CalendarConfig


class EnergyMotorConfig(ConfigStruct, frozen=True):
    """One motor: its name (tag device of ``<name>/energy_kwh``), its current tag and its
    station (default: the name up to its first ``_``)."""

    name: str
    current_tag: str
    station: str = ""

    def __post_init__(self) -> None:
        if self.current_tag.count("/") < 1:
            raise ValueError(f"current_tag must be 'device/name', got {self.current_tag!r}")

    @property
    def station_name(self) -> str:
        return self.station or self.name.split("_", 1)[0]


class EnergyConfig(ConfigStruct, frozen=True):
    """``[[energy]]``: one line's motors, their electrical model and the shift calendar."""

    name: str
    motors: list[EnergyMotorConfig]
    voltage_v: float = 24.0
    power_factor: float = 1.0
    max_gap_s: float = 2.0
    gap_mean_s: float = 600.0
    window_s: float = 3600.0
    publish_interval_s: float = 10.0
    close_after_s: float = 30.0
    parts_tools: list[str] = msgspec.field(default_factory=list)
    report_wait_s: float = 300.0
    calendar: CalendarConfig = msgspec.field(default_factory=CalendarConfig)
    emit_samples: bool = True

    def __post_init__(self) -> None:
        if not self.motors:
            raise ValueError("motors must list at least one motor")
        names = [m.name for m in self.motors]
        if len(set(names)) != len(names):
            raise ValueError("motors: a motor name is used twice")
        for key in ("voltage_v", "max_gap_s", "gap_mean_s", "window_s", "publish_interval_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0")
        if not 0 < self.power_factor <= 1:
            raise ValueError("power_factor must be in (0, 1]")
        if self.close_after_s < 0 or self.report_wait_s < 0:
            raise ValueError("close_after_s and report_wait_s must be >= 0")
        if self.window_s < 60:
            raise ValueError("window_s must be >= 60 (energy is kept per minute)")

    def stations(self) -> list[str]:
        return sorted({m.station_name for m in self.motors})

    def declare_tags(self, tags: TagRegistry) -> None:
        """``<motor|station|line>/energy_kwh`` (rolling window), ``<line>/energy_shift_kwh``
        and ``<line>/kwh_per_good_part``."""
        if not self.emit_samples:
            return
        window = f"energy over the last {self.window_s:g} s"
        for device in [m.name for m in self.motors] + self.stations() + [self.name]:
            tags.add(device, "energy_kwh", unit="kWh", low=0.0, description=window)
        tags.add(self.name, "energy_shift_kwh", unit="kWh", low=0.0,
                 description="energy of the shift so far")
        tags.add(self.name, "kwh_per_good_part", unit="kWh", low=0.0,
                 description="energy per good part of the last shift")
