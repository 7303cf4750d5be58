"""MQTT source configuration: broker, subscriptions (samples or CMM readings), commands.

Every mistake is a ``ValueError`` raised at load time, which the config loader turns into
a ``ConfigError`` naming the source and the key (``source 'quality': subscription #1:
cmm: ...``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import msgspec

from edge.components import BuildContext
from edge.config import ConfigStruct
from edge.model import TagRegistry
from edge.protocols.mqtt import TlsConfig
from edge.sources.aliases import problems
from edge.sources.mqtt_payload import CmmSpec
from edge.sources.timestamps import EpochUnit, zone

if TYPE_CHECKING:
    from edge.sources.mqtt import MqttSource


class MqttFieldConfig(ConfigStruct, frozen=True):
    path: str
    tag: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    required: bool = True
    enum: dict[str, float] = msgspec.field(default_factory=dict)


class CmmFeatureConfig(ConfigStruct, frozen=True):
    nominal_mm: float
    tol_mm: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.nominal_mm) and math.isfinite(self.tol_mm)
                and self.tol_mm > 0):
            raise ValueError("nominal_mm must be finite and tol_mm a finite number > 0")


class CmmFieldsConfig(ConfigStruct, frozen=True):
    """``kind = "cmm"``: the JSON path of each CMM reading field. Text fields (part id,
    feature, lot) may be strings; an empty path means "not in the message"."""

    part_id: str = "part_id"
    feature: str = "feature"
    measured_mm: str = "measured_mm"
    lot: str = ""
    nominal_mm: str = ""  # empty: from features
    tol_mm: str = ""  # empty: from features
    part_temp_c: str = ""  # empty: no part probe (the stage estimates it from the air)
    air_temp_c: str = ""
    scale_temp_c: str = ""  # empty: scale_temp_default_c
    scale_temp_default_c: float = 20.0
    features: dict[str, CmmFeatureConfig] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("part_id", "feature", "measured_mm"):
            if not getattr(self, key):
                raise ValueError(f"{key} must name the JSON field that holds it")
        if not (self.nominal_mm and self.tol_mm) and not self.features:
            raise ValueError("give nominal_mm and tol_mm paths, or list features with "
                             "their nominal_mm and tol_mm (features.<name> = "
                             "{ nominal_mm = 50.0, tol_mm = 0.02 })")

    def spec(self) -> CmmSpec:
        def path(p: str) -> tuple[str, ...] | None:
            return tuple(p.split(".")) if p else None

        return CmmSpec(
            tuple(self.part_id.split(".")), tuple(self.feature.split(".")),
            tuple(self.measured_mm.split(".")), path(self.lot), path(self.nominal_mm),
            path(self.tol_mm), path(self.part_temp_c), path(self.air_temp_c),
            path(self.scale_temp_c),
            {k: (f.nominal_mm, f.tol_mm) for k, f in self.features.items()},
            self.scale_temp_default_c,
        )


class SubscriptionConfig(ConfigStruct, frozen=True):
    topic: str
    kind: Literal["samples", "cmm"] = "samples"  # cmm: each message is one CMM reading
    fields: list[MqttFieldConfig] = msgspec.field(default_factory=list)
    cmm: CmmFieldsConfig | None = None
    device: str = ""  # fixed name, or a template of topic levels like "{1}-{2}"
    devices: list[str] = msgspec.field(default_factory=list)
    # other spellings of the devices a template gives: {"Smelter #1" = "smelter_1"}
    aliases: dict[str, str] = msgspec.field(default_factory=dict)
    spelling: Literal["exact", "loose"] = "exact"  # loose: ignore case and punctuation
    batched: bool = False
    ts_field: str = ""  # empty: arrival time
    id_field: str = ""  # a message id: a repeated id on a topic is a duplicate
    ts_unit: EpochUnit = "auto"
    timezone: str = ""
    qos: Literal[0, 1, 2] | None = None

    def __post_init__(self) -> None:
        if not self.topic or "#" in self.topic[:-1]:
            raise ValueError("topic must be a valid filter ('#' only at the end)")
        if self.kind == "samples":
            if not self.fields:
                raise ValueError("fields must map at least one JSON path to a tag")
            if self.cmm is not None:
                raise ValueError("cmm is for kind = 'cmm'; this subscription is "
                                 "kind = 'samples'")
        else:
            if self.cmm is None:
                raise ValueError("kind = 'cmm' needs a [sources.subscriptions.cmm] table "
                                 "naming the JSON fields (part_id, feature, measured_mm)")
            if self.fields:
                raise ValueError("fields is for kind = 'samples'; kind = 'cmm' maps its "
                                 "fields in the cmm table")
            if self.batched:
                raise ValueError("batched is for kind = 'samples' (a CMM message holds "
                                 "one reading)")
        zone(self.timezone)
        if "{" in self.device:
            if not self.devices:
                raise ValueError("devices must list the devices a topic template can name")
            levels = self.topic.split("/")
            try:
                self.device.format(*levels)
            except (IndexError, KeyError, ValueError):
                raise ValueError(
                    f"device template {self.device!r} does not fit topic {self.topic!r}"
                ) from None
            wrong = problems(self.devices, self.aliases, loose_match=self.spelling == "loose")
            if wrong:
                raise ValueError("\n".join(wrong))
        elif self.aliases or self.spelling != "exact":
            raise ValueError("aliases and spelling are for a device template (device = "
                             "\"{1}_{2}\"): a fixed device has one spelling")


class MqttCommandConfig(ConfigStruct, frozen=True):
    action: str
    topic: str
    # JSON object; "{target}", "{value}" and "{reason}" in string values are replaced
    payload: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    qos: Literal[0, 1, 2] = 1
    retain: bool = False


class MqttSourceConfig(ConfigStruct, frozen=True):
    name: str
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    qos: Literal[0, 1, 2] = 1
    clean_session: bool = True
    keepalive: int = 30
    username: str = ""
    password_secret: str = ""
    tls: TlsConfig | None = None
    subscriptions: list[SubscriptionConfig] = msgspec.field(default_factory=list)
    commands: list[MqttCommandConfig] = msgspec.field(default_factory=list)
    backoff_max_s: float = 10.0
    max_batch: int = 20000
    max_payload_bytes: int = 1 << 20  # larger payloads are quarantined undecoded
    max_depth: int = 32  # JSON nesting of arrays/objects; deeper is quarantined

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError("port must be 1..65535")
        if not self.clean_session and not self.client_id:
            raise ValueError("client_id must be set when clean_session = false")
        if not self.subscriptions and not self.commands:
            raise ValueError("subscriptions must list at least one topic")
        if self.backoff_max_s <= 0 or self.keepalive < 5 or self.max_batch < 1:
            raise ValueError("backoff_max_s must be > 0, keepalive >= 5, max_batch >= 1")
        if self.max_payload_bytes < 16 or not 2 <= self.max_depth <= 256:
            raise ValueError("max_payload_bytes must be >= 16 and max_depth 2..256")

    def devices_of(self, sub: SubscriptionConfig) -> list[str]:
        if "{" in sub.device:
            return list(sub.devices)
        return [sub.device or self.name]

    def actions(self) -> frozenset[str]:
        """The commands this source publishes (its ``commands`` table), for interlock checks."""
        return frozenset(c.action for c in self.commands)

    def measurement_devices(self) -> frozenset[str] | None:
        """The devices this source can produce CMM readings for."""
        return frozenset(d for sub in self.subscriptions if sub.kind == "cmm"
                         for d in self.devices_of(sub))

    def declare_tags(self, tags: TagRegistry) -> None:
        for sub in self.subscriptions:
            for dev in self.devices_of(sub):
                for f in sub.fields:
                    tags.add(dev, f.tag, unit=f.unit, low=f.low, high=f.high)

    def build(self, ctx: BuildContext) -> MqttSource:
        from edge.sources.mqtt import MqttSource

        return MqttSource(self, ctx)
