"""The config structs every section builds on, the ``[gateway]`` and ``[journal]``
sections, and ``Config``, the checked document.

Invariant: every section is a frozen Struct that forbids unknown keys, so a typo is an
error, never a silently ignored setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from edge.asset import AssetConfig
from edge.components import SinkConfig, SourceConfig, StageConfig
from edge.config.registry import SECTION_TYPES


class ConfigStruct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base for every config section: frozen, keyword-only, unknown keys rejected.

    Subclasses repeat ``frozen=True`` in their class line (mypy's dataclass_transform
    needs it): ``class ModbusSourceConfig(ConfigStruct, frozen=True)``."""


class GatewaySection(ConfigStruct, frozen=True):
    id: str = "edge-gateway"
    state_dir: str = "/var/lib/edge-gateway"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    shutdown_timeout_s: float = 10.0
    # WATCHDOG=1 is withheld once a component has made no progress for this long.
    stall_timeout_s: float = 30.0
    metrics_port: int = 0
    # Sources whose tags an interlock watches run on their own thread and event loop,
    # so a stop never waits behind the bulk work of the main loop.
    fast_lane: bool = True
    # Real-time priority (SCHED_FIFO 1-99) of the fast lane's thread, so a device's answer
    # is taken at once on a busy CPU instead of after the next time slice; 0: normal
    # scheduling. Needs CAP_SYS_NICE or RLIMIT_RTPRIO (the unit sets LimitRTPRIO=10);
    # without either the lane runs at normal priority and the log says so.
    fast_lane_rt_priority: int = 10

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", self.id):
            raise ValueError("id must be 1-64 letters, digits, '.', '_' or '-'")
        if self.shutdown_timeout_s <= 0:
            raise ValueError("shutdown_timeout_s must be > 0")
        if self.stall_timeout_s <= 0:
            raise ValueError("stall_timeout_s must be > 0")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError("metrics_port must be 0 (off) or a TCP port")
        if not 0 <= self.fast_lane_rt_priority <= 99:
            raise ValueError("fast_lane_rt_priority must be 0 (off) to 99")


class JournalSection(ConfigStruct, frozen=True):
    path: str = ""  # default: <state_dir>/journal.db
    durability: Literal["process-crash", "power-loss"] = "process-crash"
    max_mb: float = 1024.0
    max_age_h: float = 168.0
    record_max_age_h: float = 720.0
    commit_interval_ms: float = 5.0
    max_pending_points: int = 2_000_000

    def __post_init__(self) -> None:
        for key in ("max_mb", "max_age_h", "record_max_age_h"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0")
        if not 0 <= self.commit_interval_ms <= 1000:
            raise ValueError("commit_interval_ms must be between 0 and 1000")
        if self.max_pending_points < 1000:
            raise ValueError("max_pending_points must be >= 1000")


@dataclass(frozen=True)
class Config:
    gateway: GatewaySection
    journal: JournalSection
    sources: list[SourceConfig] = field(default_factory=list)
    sinks: list[SinkConfig] = field(default_factory=list)
    sections: dict[str, list[StageConfig]] = field(default_factory=dict)
    path: Path | None = None
    asset: AssetConfig = field(default_factory=AssetConfig)

    @property
    def state_dir(self) -> Path:
        return Path(self.gateway.state_dir)

    @property
    def journal_path(self) -> Path:
        return Path(self.journal.path) if self.journal.path else self.state_dir / "journal.db"

    def section(self, name: str) -> list[StageConfig]:
        """The tables of a stage section (``[]`` when absent); ``name`` must be known."""
        if name not in SECTION_TYPES:
            raise KeyError(name)
        return self.sections.get(name, [])
