"""TOML -> typed, validated configuration.

Invariants:

* Every section is decoded by msgspec into a frozen Struct that forbids unknown keys, so
  a typo is an error, never a silently ignored setting.
* Every error is a ``ConfigError`` whose message names the component and the key, e.g.
  ``source 'etch1': register 'chamber_temp': scale must not be 0``. ``load`` reports
  every mistake in the file, not only the first (``ConfigProblems``: one per line,
  ``<file>:<line>:`` first where the line is known; see ``edge.config_explain``), and
  raises nothing but ``ConfigError``, whatever the bytes in the file.
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

from edge.asset import AssetConfig
from edge.components import SinkConfig, SourceConfig, StageConfig
from edge.config_explain import (
    TextIndex,
    did_you_mean,
    error_path,
    explain,
    label,
    missing_key,
    singular,
)
from edge.errors import ConfigError
from edge.processing import STAGES
from edge.runtime import redact

_T = TypeVar("_T")


class ConfigProblems(ConfigError):
    """Every mistake found in one go; ``str()`` has one per line, ``problems`` the list."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
    "file": "edge.sources.file.config:FileSourceConfig",
    "modbus": "edge.sources.modbus.config:ModbusSourceConfig",
    "s7": "edge.sources.s7.config:S7SourceConfig",
    "mqtt": "edge.sources.mqtt:MqttSourceConfig",
    "opcua": "edge.sources.opcua_config:OpcUaSourceConfig",
}
SINK_TYPES: dict[str, str] = {
    "mes": "edge.sinks.mes:MesSinkConfig",
    "influx": "edge.sinks.influx:InfluxSinkConfig",
    "opcua": "edge.sinks.opcua:OpcUaConfig",
    "sparkplug": "edge.sinks.sparkplug:SparkplugSinkConfig",
    "uns": "edge.sinks.uns:UnsSinkConfig",
    "web": "edge.web.config:WebConfig",
}
# Top-level sections owned by one component: (struct path, is a list of tables). Today
# these are the stage sections, from the one stage table.
SECTION_TYPES: dict[str, tuple[str, bool]] = {k.section: (k.config, True) for k in STAGES}


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


# ------------------------------------------------------------------------ loading


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return loads(_decode(data, p), path=p)


def _decode(data: bytes, path: Path) -> str:
    """UTF-8 (a leading BOM, as some Windows editors write, is dropped); a ConfigError
    naming the line, column and byte offset of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        at = exc.start
        line = data.count(b"\n", 0, at) + 1
        column = at - (data.rfind(b"\n", 0, at) + 1) + 1
        raise ConfigError(
            f"{path}:{line}: byte 0x{data[at]:02x} at line {line}, column {column} "
            f"(byte offset {at}) is not UTF-8: save the file as UTF-8"
        ) from None


def loads(text: str, *, path: Path | None = None) -> Config:
    where = str(path) if path else "<config>"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid TOML: arrays or tables nested too deeply") from None
    return from_raw(raw, path=path, text=text)


class _Problems:
    """Every mistake found; from a file, each starts with ``<file>:`` or, where the line
    is known, ``<file>:<line>:`` (what editors and terminals jump to)."""

    def __init__(self, path: Path | None, text: str | None) -> None:
        self.prefix = str(path) if path else ""
        self.index = TextIndex(text) if text is not None and path else None
        self.items: list[str] = []

    def add(self, message: str, section: str | None = None, index: int | None = None,
            key: str | None = None) -> None:
        line = (self.index.line_of(section, index, key)
                if self.index is not None and section is not None else None)
        where = f"{self.prefix}:{line}" if line is not None else self.prefix
        self.items.append(f"{where}: {message}" if where else message)


def from_raw(raw: dict[str, Any], *, path: Path | None = None,
             text: str | None = None) -> Config:
    """Validate an already parsed TOML document (the demo patches ports in one).

    Every mistake is reported, not only the first: ConfigProblems, one per line."""
    probs = _Problems(path, text)
    known = ["gateway", "journal", "asset", "sources", "sinks", *SECTION_TYPES]
    if "opcua" in raw:
        probs.add(_OPCUA_MOVED, "opcua")
    for key in raw:
        if key not in known and key != "opcua":
            probs.add(f"unknown section '{key}'{did_you_mean(key, known)} "
                      f"(known: {', '.join(sorted(known))})", key)
    gateway = _convert_all(raw.get("gateway", {}), GatewaySection, "gateway", probs, "gateway")
    journal = _convert_all(raw.get("journal", {}), JournalSection, "journal", probs, "journal")
    asset = _convert_all(raw.get("asset", {}), AssetConfig, "asset", probs, "asset")
    sources = _components(raw, "sources", SOURCE_TYPES, probs)
    sinks = _components(raw, "sinks", SINK_TYPES, probs)
    sections: dict[str, Any] = {}
    for name, (target, is_list) in SECTION_TYPES.items():
        if name not in raw:
            continue
        try:
            cls = _import(target, name)
        except ConfigError as exc:
            probs.add(str(exc), name)
            continue
        if not is_list:
            sections[name] = _convert_all(raw[name], cls, name, probs, name)
            continue
        items = raw[name]
        if not isinstance(items, list):
            probs.add(f"{name}: must be a list of tables ([[{name}]])", name)
            continue
        sections[name] = [
            _convert_all(item, cls, label(name, i, item), probs, name, i)
            for i, item in enumerate(items)
        ]
        _unique_names(name, items, probs)
    _unique_names("sources", raw.get("sources", []), probs)
    _unique_names("sinks", raw.get("sinks", []), probs)
    _default_names_unique(raw.get("sinks", []), sinks, probs)
    if probs.items or gateway is None or journal is None or asset is None:
        raise ConfigProblems(probs.items)
    return Config(gateway, journal, sources, sinks, sections, path, asset)


_OPCUA_MOVED = (
    "[opcua]: the OPC-UA server is a sink now: replace the line '[opcua]' with "
    "'[[sinks]]' followed by 'type = \"opcua\"' (its keys stay as they are)"
)


def _components(raw: Mapping[str, Any], key: str, types: Mapping[str, str],
                probs: _Problems) -> list[Any]:
    items = raw.get(key, [])
    if not isinstance(items, list):
        probs.add(f"{key}: must be a list of tables ([[{key}]])", key)
        return []
    out = []
    for i, item in enumerate(items):
        where = label(key, i, item)
        if not isinstance(item, dict):
            probs.add(f"{where}: must be a table")
            continue
        kind = item.get("type")
        if not isinstance(kind, str) or kind not in types:
            hint = did_you_mean(kind, list(types)) if isinstance(kind, str) else ""
            probs.add(f"{where}: type must be one of {', '.join(sorted(types))} "
                      f"(got {kind!r}){hint}", key, i, "type" if "type" in item else None)
            continue
        try:
            cls = _import(types[kind], where)
        except ConfigError as exc:
            probs.add(str(exc), key, i, "type")
            continue
        body = {k: v for k, v in item.items() if k != "type"}
        value = _convert_all(body, cls, where, probs, key, i)
        if value is not None:
            out.append(value)
    return out


def _default_names_unique(items: object, sinks: list[Any], probs: _Problems) -> None:
    """Two sinks left at the same default name (``opcua``) would share one cursor."""
    written = [i.get("name") for i in items if isinstance(i, dict)] if isinstance(
        items, list) else []
    names = [s.name for s in sinks]
    for name in sorted({n for n in names if names.count(n) > 1}):
        if written.count(name) < 2:  # twice by hand is reported with its line already
            probs.add(f"sink '{name}': name is used twice (give each sink a name)", "sinks")


def _unique_names(key: str, items: object, probs: _Problems) -> None:
    if not isinstance(items, list):
        return
    seen: set[str] = set()
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in seen:
                probs.add(f"{singular(key)} '{name}': name is used twice", key, i, "name")
            seen.add(name)


def _import(target: str, label: str) -> type[Any]:
    module, _, attr = target.partition(":")
    try:
        cls: type[Any] = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{label}: this build has no {target} ({exc})") from None
    return cls


def convert(raw: object, cls: type[_T], label: str) -> _T:
    """Decode ``raw`` into ``cls``; the first error becomes ``ConfigError('<label>:
    <path>: <msg>')`` with list items named by their ``name`` key where they have one."""
    try:
        return _decode_struct(raw, cls)
    except msgspec.ValidationError as exc:
        raise ConfigError(explain(str(exc), raw, label, cls)) from None


def _decode_struct(raw: object, cls: type[_T]) -> _T:
    try:
        return msgspec.convert(raw, cls, strict=True)
    except RecursionError:
        raise msgspec.ValidationError("nested too deeply") from None


def _about_set_aside(message: str, set_aside: set[str]) -> bool:
    missing = missing_key(message)
    if missing is not None:
        return missing in set_aside
    return any(re.search(rf"(?<![\w.]){re.escape(k)}(?![\w])", message) for k in set_aside)


def _convert_all(raw: object, cls: type[_T], where: str, probs: _Problems, section: str,
                 index: int | None = None) -> _T | None:
    """Decode ``raw`` into ``cls``, reporting every mistake msgspec can be made to find:
    unknown keys first, then one error per key (the key is set aside and the rest
    decoded again). A struct-level error (a missing key, a ``__post_init__`` check) that
    names a key set aside is not reported: it would judge a default the user did not
    write."""
    if not isinstance(raw, dict):
        try:
            return _decode_struct(raw, cls)
        except msgspec.ValidationError as exc:
            probs.add(explain(str(exc), raw, where, cls), section, index)
            return None
    if not issubclass(cls, msgspec.Struct):
        raise TypeError(f"{cls!r} is not a config struct")
    names = [f.encode_name for f in msgspec.structs.fields(cls)]
    body = dict(raw)
    ok = True
    for key in list(body):
        if key not in names:
            probs.add(f"{where}: unknown key '{key}'{did_you_mean(key, names)}",
                      section, index, key)
            del body[key]
            ok = False
    set_aside: set[str] = set()
    for _ in range(len(body) + 1):
        try:
            value = _decode_struct(body, cls)
        except msgspec.ValidationError as exc:
            message = str(exc)
            segments = error_path(message)
            top = segments[0][0] if segments else ""
            if not top:
                if not _about_set_aside(message, set_aside):
                    # "max_mb must be > 0": a check that starts with a key is about it
                    first = message.split(" ", 1)[0]
                    probs.add(explain(message, body, where, cls), section, index,
                              first if first in names else None)
                return None
            probs.add(explain(message, body, where, cls), section, index, top)
            if top not in body:
                return None
            del body[top]
            set_aside.add(top)
            ok = False
        else:
            return value if ok else None
    return None


# ------------------------------------------------------------------------ secrets


_SECRET_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")


def check_secret_name(name: str, key: str = "secret") -> None:
    """ValueError unless ``name`` can only name a file inside the credentials folder."""
    if not _SECRET_NAME.fullmatch(name):
        raise ValueError(
            f"{key} {name!r} is not a secret name: use letters, digits, '_', '-' and '.', "
            "not starting with '.' (it names a file in $CREDENTIALS_DIRECTORY)"
        )


def secret_reader(environ: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """Returns ``read(name)``: ``$CREDENTIALS_DIRECTORY/<name>`` first, then ``$<name>``."""
    env = os.environ if environ is None else environ

    def read(name: str) -> str:
        try:
            check_secret_name(name)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
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
        redact.remember(value)
        return value

    return read
