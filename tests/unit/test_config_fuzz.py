"""Fuzzed config files: whatever the bytes, loading says what is wrong (a ConfigError)
and check-config answers with an exit status, never a traceback."""

from __future__ import annotations

import copy
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import cli
from edge.config import (
    SECTION_TYPES,
    SINK_TYPES,
    SOURCE_TYPES,
    GatewaySection,
    JournalSection,
    import_struct,
    load,
)
from edge.errors import ConfigError

# Imported here, not while drawing: hypothesis forbids the random module in strategies
# and some component modules touch it when first imported.
_STRUCTS: dict[str, type[Any]] = {
    **{f"source:{k}": import_struct(v, k) for k, v in SOURCE_TYPES.items()},
    **{f"sink:{k}": import_struct(v, k) for k, v in SINK_TYPES.items()},
    **{k: import_struct(v, k) for k, (v, _) in SECTION_TYPES.items()},
}
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_WORDS = ["etch1", "cmm1", "127.0.0.1", "http://127.0.0.1:9", "stop", "float32", "a/b",
          "samples", "cmm", "", "*.csv", "UTC", "Europe/Berlin", "ewma", "x" * 70]


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else
                                                  ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def _typo(draw: st.DrawFn, key: str, wild: bool) -> str:
    if not wild or not key or draw(st.integers(0, 9)) != 0:
        return key
    i = draw(st.integers(0, len(key) - 1))
    how = draw(st.sampled_from(["drop", "double", "swap", "case"]))
    if how == "drop":
        return key[:i] + key[i + 1:]
    if how == "double":
        return key[:i] + key[i] + key[i:]
    if how == "swap" and i + 1 < len(key):
        return key[:i] + key[i + 1] + key[i] + key[i + 2:]
    return key.upper()


_SCALAR = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 1, -1, 65536]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(_WORDS),
    st.text(max_size=12),
)


def _for_type(draw: st.DrawFn, t: Any, depth: int, wild: bool) -> Any:
    """A value for msgspec type ``t``: of that type (plausible when not ``wild``),
    and when ``wild`` sometimes of any type."""
    ti = msgspec.inspect
    if depth > 3 or (wild and draw(st.integers(0, 7)) == 0):
        return draw(_SCALAR)
    if isinstance(t, ti.UnionType):
        return _for_type(draw, draw(st.sampled_from(t.types)), depth, wild)
    if isinstance(t, ti.LiteralType):
        return draw(st.sampled_from(t.values))
    if isinstance(t, ti.BoolType):
        return draw(st.booleans())
    if isinstance(t, ti.IntType):
        return draw(st.integers() if wild else st.integers(1, 100))
    if isinstance(t, ti.FloatType):
        return draw(st.floats() if wild else st.floats(0.5, 100))
    if isinstance(t, ti.StrType):
        return draw(st.one_of(st.sampled_from(_WORDS), st.text(max_size=20)) if wild
                    else st.sampled_from(_WORDS[:9]))
    if isinstance(t, ti.StructType):
        return _table(draw, t.cls, wild, depth + 1)
    if isinstance(t, ti.ListType | ti.VarTupleType | ti.SetType | ti.FrozenSetType):
        return [_for_type(draw, t.item_type, depth + 1, wild)
                for _ in range(draw(st.integers(0, 3)))]
    if isinstance(t, ti.DictType):
        return {draw(st.sampled_from(_WORDS[:9])): _for_type(draw, t.value_type, depth + 1, wild)
                for _ in range(draw(st.integers(0, 2)))}
    return draw(_SCALAR)


def _table(draw: st.DrawFn, cls: type[Any], wild: bool, depth: int = 0) -> dict[str, Any]:
    info: Any = msgspec.inspect.type_info(cls)
    out: dict[str, Any] = {}
    for f in info.fields:
        if f.required or draw(st.integers(0, 3)) == 0:
            out[_typo(draw, f.encode_name, wild)] = _for_type(draw, f.type, depth, wild)
    if wild and draw(st.integers(0, 15)) == 0:
        out[draw(st.text(min_size=1, max_size=8))] = draw(_SCALAR)
    return out


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """Half of them plausible (right types, no typos: they reach the cross checks)."""
    wild = draw(st.booleans())
    lines: list[str] = []

    def emit(header: str, table: dict[str, Any]) -> None:
        lines.append(header)
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in table.items())
        lines.append("")

    if draw(st.booleans()):
        emit("[gateway]", _table(draw, GatewaySection, wild))
    if draw(st.booleans()):
        emit("[journal]", _table(draw, JournalSection, wild))
    for section, types in (("sources", SOURCE_TYPES), ("sinks", SINK_TYPES)):
        for _ in range(draw(st.integers(0, 2))):
            kind = draw(st.sampled_from(sorted(types)))
            cls = _STRUCTS[f"{section[:-1]}:{kind}"]
            table = {"type": _typo(draw, kind, wild), **_table(draw, cls, wild)}
            emit(f"[[{_typo(draw, section, wild)}]]", table)
    for name, (_, is_list) in SECTION_TYPES.items():
        if draw(st.integers(0, 3)) == 0:
            cls = _STRUCTS[name]
            for _ in range(draw(st.integers(1, 2)) if is_list else 1):
                emit(f"[[{name}]]" if is_list else f"[{name}]", _table(draw, cls, wild))
    data = bytearray("\n".join(lines).encode())
    for _ in range(draw(st.integers(0, 3)) if wild and draw(st.integers(0, 3)) == 0 else 0):
        at = draw(st.integers(0, len(data)))
        byte = draw(st.integers(0, 255))
        if draw(st.booleans()) and at < len(data):
            data[at] = byte
        else:
            data.insert(at, byte)
    return bytes(data)


_SHIPPED = [tomllib.loads(p.read_text()) for p in sorted(
    (Path(__file__).resolve().parents[2] / "config").glob("*.toml"))
    if p.name not in ("plant.toml", "etch_modbus.toml")]


def _slots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key-or-index) in a parsed document."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for k, v in items:
        out.append((node, k))
        if isinstance(v, dict | list):
            _slots(v, out)
    return out


@st.composite
def mutated_shipped(draw: st.DrawFn) -> bytes:
    """A shipped config with a few keys dropped, renamed or given other values."""
    doc = copy.deepcopy(draw(st.sampled_from(_SHIPPED)))
    for _ in range(draw(st.integers(0, 3))):
        node, key = draw(st.sampled_from(_slots(doc, [])))
        how = draw(st.sampled_from(["drop", "value", "typo"]))
        if how == "drop":
            del node[key]
        elif how == "value" or isinstance(node, list):
            node[key] = draw(_SCALAR)
        else:
            node[_typo(draw, key, True)] = node.pop(key)
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in doc.items() if isinstance(v, list) and v
              and all(isinstance(x, dict) for x in v)}
    lines = [f"{_key(k)} = {_value(v)}" for k, v in doc.items()
             if k not in tables and k not in arrays]
    for k, v in tables.items():
        lines += [f"[{_key(k)}]", *(f"{_key(a)} = {_value(b)}" for a, b in v.items())]
    for k, items in arrays.items():
        for item in items:
            lines += [f"[[{_key(k)}]]", *(f"{_key(a)} = {_value(b)}" for a, b in item.items())]
    return "\n".join(lines).encode()


ANY_DOCUMENT = st.one_of(documents(), mutated_shipped())


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(doc=ANY_DOCUMENT)
def test_load_raises_only_config_errors(tmp_path: Path, doc: bytes) -> None:
    """Random documents of real keys, wrong values, typos and stray bytes: load() returns
    a Config or raises ConfigError with a message, never any other exception."""
    path = tmp_path / "edge.toml"
    path.write_bytes(doc)
    try:
        load(path)
    except ConfigError as exc:
        assert str(exc).strip()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(doc=ANY_DOCUMENT)
def test_check_config_never_raises(tmp_path: Path, doc: bytes,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """check-config answers every such document with exit 0 or 2 (no traceback)."""
    path = tmp_path / "edge.toml"
    path.write_bytes(doc)
    rc = cli.main(["check-config", str(path)])
    out, err = capsys.readouterr()
    assert rc in (0, 2), err
    assert ("OK (" in out) if rc == 0 else ("configuration error: " in err)
