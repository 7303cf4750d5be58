"""The configuration reference, generated from the config structs themselves.

``python -m edge.config_reference`` prints the Markdown tables that README.md carries
between ``<!-- config-reference:start -->`` and ``<!-- config-reference:end -->``; a test
fails when the two differ, so the reference can never drift from the code.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator

import msgspec

from edge.asset import AssetConfig
from edge.config import (
    SECTION_TYPES,
    SINK_TYPES,
    SOURCE_TYPES,
    GatewaySection,
    JournalSection,
    import_struct,
)

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def _type_name(tp: object) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(repr(a).replace("'", '"') for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        inner = _type_name(args[0]) if args else "any"
        return f"list of {inner}"
    if origin is dict:
        return f"table of {_type_name(args[1])}"
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return f"table ({tp.__name__})"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def _default(field: msgspec.structs.FieldInfo) -> str:
    if field.required:
        return "**required**"
    if field.default is not msgspec.NODEFAULT:
        value = field.default
    elif field.default_factory is not msgspec.NODEFAULT:
        value = field.default_factory()
    else:
        return ""
    if isinstance(value, str):
        return f'`"{value}"`' if value else '`""`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value is None:
        return "unset"
    if isinstance(value, msgspec.Struct):
        return "its defaults"
    if isinstance(value, list | tuple | dict):  # of plain values or of structs
        return f"`{json.dumps(msgspec.to_builtins(value), separators=(', ', ':'))}`"
    return f"`{value}`"


def _nested(tp: object) -> Iterator[type[msgspec.Struct]]:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        yield tp
    for arg in typing.get_args(tp):
        yield from _nested(arg)


def _table(title: str, cls: type[msgspec.Struct], seen: set[type]) -> list[str]:
    lines = [f"#### {title}", "", "| key | type | default |", "|---|---|---|"]
    nested: list[tuple[str, type[msgspec.Struct]]] = []
    for field in msgspec.structs.fields(cls):
        lines.append(f"| `{field.encode_name}` | {_type_name(field.type)} | {_default(field)} |")
        for sub in _nested(field.type):
            if sub not in seen:
                seen.add(sub)
                nested.append((f"{title} → `{field.encode_name}`", sub))
    lines.append("")
    for sub_title, sub in nested:
        lines += _table(sub_title, sub, seen)
    return lines


def render() -> str:
    seen: set[type] = set()
    out = [START, ""]
    out += _table("`[gateway]`", GatewaySection, seen)
    out += _table("`[journal]`", JournalSection, seen)
    out += _table("`[asset]`", AssetConfig, seen)
    for kind, path in SOURCE_TYPES.items():
        out += _table(f'`[[sources]]` with `type = "{kind}"`', import_struct(path, kind), seen)
    for kind, path in SINK_TYPES.items():
        out += _table(f'`[[sinks]]` with `type = "{kind}"`', import_struct(path, kind), seen)
    for name, (path, is_list) in SECTION_TYPES.items():
        title = f"`[[{name}]]`" if is_list else f"`[{name}]`"
        out += _table(title, import_struct(path, name), seen)
    out.append(END)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
