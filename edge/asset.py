"""The asset path of each device (ISA-95: enterprise/site/area/line/cell), from ``[asset]``.

One place says where a device sits in the plant; the Sparkplug group and node ids, the
OPC-UA browse tree, the InfluxDB tags and the UNS topics all follow from it::

    [asset]                      # the gateway's own place: every device's default
    enterprise = "acme"
    site = "dresden"
    area = "etch"
    line = "line1"
    cell = "cell3"

    [asset.devices.cmm1]         # a device elsewhere: only the levels that differ
    area = "metrology"
    line = "qa"
    cell = "cmm"

Invariants:

* Every level that is set is one segment that every northbound protocol carries
  unchanged: 1-64 letters (Unicode), digits, ``_``, ``-`` or ``.``, starting with a letter
  or digit. So no ``/`` ``+`` ``#`` (MQTT topic levels and wildcards, Sparkplug ids),
  no space (NATS refuses it in a topic), no ``,`` ``=`` (InfluxDB tag syntax), no ``:``
  (it joins the Sparkplug group id) and no control characters.
* A path has no gaps: the levels set are the first ones (``enterprise``, then ``site``,
  ...). A device override replaces only the levels it names, and the merged path must
  still have no gap. Both are checked when the config is loaded (check-config, exit 2).
* An override for a device no source declares is a config error (a typo would
  otherwise silently put the device at the default place): ``unknown_devices``.
* With no ``[asset]`` section every path is empty and nothing downstream changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from edge.model import TagRegistry

LEVELS: tuple[str, ...] = ("enterprise", "site", "area", "line", "cell")
_SEGMENT = re.compile(r"[^\W_][\w.\-]{0,63}")


def check_segment(key: str, value: str) -> None:
    """ValueError naming ``key`` unless ``value`` is one segment every protocol carries."""
    if not _SEGMENT.fullmatch(value):
        raise ValueError(
            f"{key} {value!r} cannot be an asset path segment: use 1-64 letters, digits, "
            "'_', '-' or '.', starting with a letter or digit (no '/', '+', '#', ':', "
            "',', '=', spaces or control characters: MQTT, Sparkplug, NATS, OPC-UA and "
            "InfluxDB must all carry it unchanged)")


@dataclass(frozen=True, slots=True)
class AssetPath:
    """A device's place: ``(level, segment)`` pairs from the top, without gaps."""

    levels: tuple[tuple[str, str], ...] = ()

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(v for _, v in self.levels)

    @property
    def topic(self) -> str:
        """``acme/dresden/etch/line1/cell3`` ("" when empty)."""
        return "/".join(self.segments)

    def tags(self) -> dict[str, str]:
        """``{"enterprise": "acme", "site": "dresden", ...}``: the levels that are set."""
        return dict(self.levels)

    def __bool__(self) -> bool:
        return bool(self.levels)


def _path(where: str, values: dict[str, str]) -> AssetPath:
    levels: list[tuple[str, str]] = []
    gap = ""
    for level in LEVELS:
        value = values.get(level, "")
        if not value:
            gap = gap or level
            continue
        if gap:
            raise ValueError(f"{where}{level} is set but {gap} is not: an asset path has "
                             f"no gaps ({' / '.join(LEVELS)})")
        check_segment(f"{where}{level}", value)
        levels.append((level, value))
    return AssetPath(tuple(levels))


class AssetLevels(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One device's override in ``[asset.devices.<device>]``: the levels that differ."""

    enterprise: str = ""
    site: str = ""
    area: str = ""
    line: str = ""
    cell: str = ""

    def __post_init__(self) -> None:
        for level in LEVELS:
            if getattr(self, level):
                check_segment(level, getattr(self, level))

    def given(self) -> dict[str, str]:
        return {lv: getattr(self, lv) for lv in LEVELS if getattr(self, lv)}


class AssetConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[asset]``: the gateway's place in the plant (every device's default) and the
    devices that sit elsewhere (``[asset.devices.<device>]``)."""

    enterprise: str = ""
    site: str = ""
    area: str = ""
    line: str = ""
    cell: str = ""
    devices: dict[str, AssetLevels] = {}

    def __post_init__(self) -> None:
        base = _path("", self._own())
        for device, override in self.devices.items():
            if not device:
                raise ValueError("devices: a device name must not be empty")
            _path(f"devices.{device}: ", {**base.tags(), **override.given()})

    def _own(self) -> dict[str, str]:
        return {lv: getattr(self, lv) for lv in LEVELS}

    @property
    def default(self) -> AssetPath:
        """The gateway's own path (a device without an override is here)."""
        return _path("", self._own())

    def path(self, device: str) -> AssetPath:
        """Where ``device`` sits: the default merged with its override."""
        override = self.devices.get(device)
        if override is None:
            return self.default
        return _path("", {**self.default.tags(), **override.given()})

    def unknown_devices(self, devices: Iterable[str]) -> list[str]:
        """One problem per override naming a device no source declares."""
        known = sorted(set(devices))
        return [f"asset: devices.{d}: no source declares a device {d!r} "
                f"(known: {', '.join(known) or 'none'})"
                for d in sorted(self.devices) if d not in known]

    def sparkplug_ids(self) -> tuple[str, str] | None:
        """``(group_id, edge_node_id)`` from the default path: the node is the lowest
        level set, the group the levels above it joined by ``:`` (``acme:dresden:etch:
        line1``, ``cell3``). None with fewer than two levels."""
        segments = self.default.segments
        if len(segments) < 2:
            return None
        return ":".join(segments[:-1]), segments[-1]


def record_device(record: object, tags: TagRegistry | None = None) -> str:
    """The device a record is about: its ``device`` field, else the device of the tag its
    ``tag`` key names (looked up in ``tags``: a device name may hold ``/``, as
    ``stf/motor1`` does; without it, the part before the first ``/``); "" for a record
    about the gateway itself."""
    device = getattr(record, "device", None)
    if isinstance(device, str) and device:
        return device
    tag = getattr(record, "tag", None)
    if isinstance(tag, str) and "/" in tag:
        spec = tags.get(tag) if tags is not None else None
        return spec.device if spec is not None else tag.split("/", 1)[0]
    return ""
