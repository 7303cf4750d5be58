"""TOML -> typed, validated configuration.

Invariants:

* Every section is decoded by msgspec into a frozen Struct that forbids unknown keys, so
  a typo is an error, never a silently ignored setting.
* Every error is a ``ConfigError`` whose message names the component and the key, e.g.
  ``source 'etch1': register 'chamber_temp': scale must not be 0``.
* Secrets are never in the file: a config holds the *name* of a secret, read at start-up
  from ``$CREDENTIALS_DIRECTORY/<name>`` (systemd ``LoadCredential=``) or the environment.
* Component types are looked up in ``SOURCE_TYPES``/``SINK_TYPES``/``SECTION_TYPES``; the
  struct for a type lives beside its component (``edge/sources/modbus.py`` holds
  ``ModbusSourceConfig``) and is imported only when a config uses it.
"""

from __future__ import annotations

import importlib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from edge.components import SinkConfig, SourceConfig, StageConfig
from edge.errors import ConfigError
from edge.processing import STAGES

_T = TypeVar("_T")


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


# type name -> "module:Struct". The struct lives beside the component it configures.
SOURCE_TYPES: dict[str, str] = {
    "file": "edge.sources.file:FileSourceConfig",
    "modbus": "edge.sources.modbus:ModbusSourceConfig",
    "mqtt": "edge.sources.mqtt:MqttSourceConfig",
}
SINK_TYPES: dict[str, str] = {
    "mes": "edge.sinks.mes:MesSinkConfig",
    "influx": "edge.sinks.influx:InfluxSinkConfig",
    "opcua": "edge.sinks.opcua:OpcUaConfig",
}
# Top-level sections owned by one component: (struct path, is a list of tables). Today
# these are the stage sections, from the one stage table.
SECTION_TYPES: dict[str, tuple[str, bool]] = {k.section: (k.config, True) for k in STAGES}
_SINGULAR = {
    "sources": "source", "sinks": "sink", "interlocks": "interlock",
    "compensation": "compensation", "health": "health", "spc": "spc",
}


@dataclass(frozen=True)
class Config:
    gateway: GatewaySection
    journal: JournalSection
    sources: list[SourceConfig] = field(default_factory=list)
    sinks: list[SinkConfig] = field(default_factory=list)
    sections: dict[str, list[StageConfig]] = field(default_factory=dict)
    path: Path | None = None

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


# ------------------------------------------------------------------------ loading


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return loads(text, path=p)


def loads(text: str, *, path: Path | None = None) -> Config:
    where = str(path) if path else "<config>"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    return from_raw(raw, path=path)


def from_raw(raw: dict[str, Any], *, path: Path | None = None) -> Config:
    """Validate an already parsed TOML document (the demo patches ports in one)."""
    known = {"gateway", "journal", "sources", "sinks", *SECTION_TYPES}
    if "opcua" in raw:
        raise ConfigError(_OPCUA_MOVED)
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"unknown section '{key}' (known: {', '.join(sorted(known))})"
            )
    gateway = convert(raw.get("gateway", {}), GatewaySection, "gateway")
    journal = convert(raw.get("journal", {}), JournalSection, "journal")
    sources = _components(raw, "sources", SOURCE_TYPES)
    sinks = _components(raw, "sinks", SINK_TYPES)
    sections: dict[str, Any] = {}
    for name, (target, is_list) in SECTION_TYPES.items():
        if name not in raw:
            continue
        cls = _import(target, name)
        if is_list:
            items = raw[name]
            if not isinstance(items, list):
                raise ConfigError(f"{name}: must be a list of tables ([[{name}]])")
            sections[name] = [
                convert(item, cls, _label(name, i, item)) for i, item in enumerate(items)
            ]
            _unique_names(name, items)
        else:
            sections[name] = convert(raw[name], cls, name)
    cfg = Config(gateway, journal, sources, sinks, sections, path)
    _unique_names("sources", raw.get("sources", []))
    _unique_names("sinks", raw.get("sinks", []))
    _unique_names("sinks", [{"name": s.name} for s in sinks])  # names left to their default
    return cfg


_OPCUA_MOVED = (
    "[opcua]: the OPC-UA server is a sink now: replace the line '[opcua]' with "
    "'[[sinks]]' followed by 'type = \"opcua\"' (its keys stay as they are)"
)


def _components(raw: Mapping[str, Any], key: str, types: Mapping[str, str]) -> list[Any]:
    items = raw.get(key, [])
    if not isinstance(items, list):
        raise ConfigError(f"{key}: must be a list of tables ([[{key}]])")
    out = []
    for i, item in enumerate(items):
        label = _label(key, i, item)
        if not isinstance(item, dict):
            raise ConfigError(f"{label}: must be a table")
        kind = item.get("type")
        if not isinstance(kind, str) or kind not in types:
            raise ConfigError(
                f"{label}: type must be one of {', '.join(sorted(types))} (got {kind!r})"
            )
        cls = _import(types[kind], label)
        body = {k: v for k, v in item.items() if k != "type"}
        out.append(convert(body, cls, label))
    return out


def _label(key: str, index: int, item: object) -> str:
    noun = _singular(key)
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return f"{noun} '{item['name']}'"
    return f"{noun} #{index + 1}"


def _unique_names(key: str, items: list[Any]) -> None:
    seen: set[str] = set()
    for item in items:
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in seen:
                raise ConfigError(f"{_SINGULAR.get(key, key)} '{name}': name is used twice")
            seen.add(name)


def _import(target: str, label: str) -> type[Any]:
    module, _, attr = target.partition(":")
    try:
        cls: type[Any] = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{label}: this build has no {target} ({exc})") from None
    return cls


_PATH_RE = re.compile(r" - at `\$(.*)`$")
_SEGMENT_RE = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]")


def convert(raw: object, cls: type[_T], label: str) -> _T:
    """Decode ``raw`` into ``cls``; errors become ``ConfigError('<label>: <path>: <msg>')``
    with list items named by their ``name`` key where they have one."""
    try:
        return msgspec.convert(raw, cls, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), raw, label)) from None


def _explain(message: str, raw: object, label: str) -> str:
    m = _PATH_RE.search(message)
    text = message[: m.start()] if m else message
    parts = [label]
    node: object = raw
    key: str | None = None
    for name, index in _SEGMENT_RE.findall(m.group(1)) if m else ():
        if name:
            if key is not None:
                parts.append(key)
            key = name
            node = node.get(name) if isinstance(node, dict) else None
        else:
            i = int(index)
            node = node[i] if isinstance(node, list) and i < len(node) else None
            parts.append(_label(key or "item", i, node))
            key = None
    if key is not None:
        parts.append(key)
    return ": ".join([*parts, _humanise(text)])


def _singular(word: str) -> str:
    if word in _SINGULAR:
        return _SINGULAR[word]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def _humanise(text: str) -> str:
    text = text.replace("`", "")
    if text.startswith("Object contains unknown field "):
        return "unknown key " + repr(text.removeprefix("Object contains unknown field "))
    if text.startswith("Object missing required field "):
        return "missing required key " + repr(text.removeprefix("Object missing required field "))
    return text[:1].lower() + text[1:] if text[:1].isupper() and text[1:2].islower() else text


# ------------------------------------------------------------------------ secrets


def secret_reader(environ: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """Returns ``read(name)``: ``$CREDENTIALS_DIRECTORY/<name>`` first, then ``$<name>``."""
    env = os.environ if environ is None else environ

    def read(name: str) -> str:
        cred_dir = env.get("CREDENTIALS_DIRECTORY")
        where = f"environment variable {name}"
        value: str | None = None
        if cred_dir and (Path(cred_dir) / name).is_file():
            value = (Path(cred_dir) / name).read_text(encoding="utf-8").strip()
            where = f"credential {Path(cred_dir) / name}"
        else:
            value = env.get(name)
        if value is None:
            raise ConfigError(
                f"secret '{name}' not found: set the environment variable {name} or give "
                f"it as a systemd credential (LoadCredential={name}:...)"
            )
        if not value.strip():
            raise ConfigError(f"secret '{name}' is empty ({where})")
        return value

    return read
