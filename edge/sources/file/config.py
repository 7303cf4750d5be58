"""The file source's configuration: the folders, the mode and how rows map to tags.

``__post_init__`` raises ``ValueError`` naming the key; the loader adds the source's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

from edge.components import BuildContext
from edge.config import ConfigStruct
from edge.model import TagRegistry
from edge.sources.aliases import problems
from edge.sources.file.csv_parse import CMM_FIELDS
from edge.sources.file.rows import CMM_TEMPS
from edge.sources.timestamps import EpochUnit, zone

if TYPE_CHECKING:
    from edge.sources.file.source import FileSource


class ValueColumnConfig(ConfigStruct, frozen=True):
    column: str
    tag: str
    aliases: list[str] = msgspec.field(default_factory=list)  # other spellings of the header
    unit: str = ""
    low: float | None = None
    high: float | None = None


class FileSourceConfig(ConfigStruct, frozen=True):
    name: str
    paths: list[str]
    pattern: str = "*.csv"
    ignore: list[str] = msgspec.field(default_factory=lambda: ["*.tmp", ".*"])
    mode: Literal["cmm", "samples"] = "cmm"
    device: str = ""
    spelling: Literal["exact", "loose"] = "exact"  # loose: headers match ignoring case/punctuation
    columns: dict[str, str] = msgspec.field(default_factory=dict)
    timestamp_column: str = "timestamp"
    values: list[ValueColumnConfig] = msgspec.field(default_factory=list)
    timezone: str = ""
    epoch_unit: EpochUnit = "s"
    poll: bool = False
    poll_interval_ms: int = 500
    debounce_ms: int = 300
    rescan_s: float = 10.0
    batch_rows: int = 5000
    settle_s: float = 30.0
    max_file_read_mb: float = 4.0
    max_pass_read_mb: float = 16.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")
        if not self.paths:
            raise ValueError("paths must name at least one folder")
        zone(self.timezone)
        if self.mode == "cmm":
            unknown = set(self.columns) - set(CMM_FIELDS)
            if unknown:
                raise ValueError(
                    f"columns has unknown fields {sorted(unknown)}; known: {', '.join(CMM_FIELDS)}"
                )
            if self.values:
                raise ValueError("values is for mode = 'samples'; use columns in mode 'cmm'")
        else:
            if not self.values:
                raise ValueError("values must list at least one column in mode 'samples'")
            if self.columns:
                raise ValueError("columns is for mode = 'cmm'; use values in mode 'samples'")
            if len({v.column for v in self.values}) != len(self.values):
                raise ValueError("values names a column twice")
            wrong = problems([v.column for v in self.values],
                             {a: v.column for v in self.values for a in v.aliases},
                             loose_match=self.spelling == "loose", what="column")
            twice = sorted({a for v in self.values for a in v.aliases
                            if sum(a in w.aliases for w in self.values) > 1})
            wrong += [f"aliases: '{a}' is listed for two columns" for a in twice]
            if wrong:
                raise ValueError("values: " + "\nvalues: ".join(wrong))
        if self.batch_rows < 1:
            raise ValueError("batch_rows must be >= 1")
        if self.poll_interval_ms < 10 or self.debounce_ms < 0 or self.rescan_s <= 0:
            raise ValueError("poll_interval_ms must be >= 10, debounce_ms >= 0, rescan_s > 0")
        if self.settle_s <= 0:
            raise ValueError("settle_s must be > 0")
        if not 0 < self.max_file_read_mb <= self.max_pass_read_mb:
            raise ValueError("max_file_read_mb must be > 0 and <= max_pass_read_mb")

    @property
    def device_name(self) -> str:
        return self.device or self.name

    def measurement_devices(self) -> frozenset[str] | None:
        """The devices this source gives ``CmmReading``s for."""
        return frozenset({self.device_name}) if self.mode == "cmm" else frozenset()

    def declare_tags(self, tags: TagRegistry) -> None:
        if self.mode == "cmm":
            for t in CMM_TEMPS:
                tags.add(self.device_name, t, unit="degC", description=f"CMM {t}")
        else:
            for v in self.values:
                tags.add(self.device_name, v.tag, unit=v.unit, low=v.low, high=v.high)

    def build(self, ctx: BuildContext) -> FileSource:
        from edge.sources.file.source import FileSource

        return FileSource(self, ctx)

    def actions(self) -> frozenset[str]:
        """A drop folder takes no commands."""
        return frozenset()

