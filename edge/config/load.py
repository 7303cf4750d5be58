"""TOML text -> a checked ``Config``, every mistake in the file reported.

Invariants:

* Every error is a ``ConfigError`` whose message names the component and the key, e.g.
  ``source 'etch1': register 'chamber_temp': scale must not be 0``. ``load`` reports
  every mistake in the file, not only the first (``ConfigProblems``: one per line,
  ``<file>:<line>:`` first where the line is known; see ``edge.config_explain``), and
  raises nothing but ``ConfigError``, whatever the bytes in the file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from edge.asset import AssetConfig
from edge.config.registry import SECTION_TYPES, SINK_TYPES, SOURCE_TYPES, import_struct
from edge.config.structs import Config, GatewaySection, JournalSection
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

_T = TypeVar("_T")


class ConfigProblems(ConfigError):
    """Every mistake found in one go; ``str()`` has one per line, ``problems`` the list."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
            cls = import_struct(target, name)
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
            cls = import_struct(types[kind], where)
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
