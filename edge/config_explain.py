"""Config mistakes as messages a person can act on, at the line they are on.

Invariants:

* A message names the component and the key path (``source 'etch1': register 'a':
  scale: ...``); list items by their ``name`` where they have one.
* An enum mistake lists the valid values; an unknown key says "did you mean" when a
  known key is close (``difflib`` against the struct's own fields).
* A line number is given only when it is certain enough to be right: the key occurs on
  exactly one ``key =`` line of its table's block in the text. Otherwise none is given.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import msgspec

_PATH_RE = re.compile(r" - at `\$(.*)`$")
_SEGMENT_RE = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]")
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(.*)`")
_MISSING_RE = re.compile(r"^Object missing required field `(.*)`")
_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]\[#]+?)\s*\]\]?\s*(#.*)?$")

SINGULAR = {
    "sources": "source", "sinks": "sink", "interlocks": "interlock",
    "compensation": "compensation", "health": "health", "spc": "spc",
}


def singular(word: str) -> str:
    if word in SINGULAR:
        return SINGULAR[word]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def label(key: str, index: int, item: object) -> str:
    noun = singular(key)
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return f"{noun} '{item['name']}'"
    return f"{noun} #{index + 1}"


def did_you_mean(word: str, known: list[str] | set[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def error_path(message: str) -> list[tuple[str, str]]:
    """The ``(key, index)`` segments of the path in a msgspec message."""
    m = _PATH_RE.search(message)
    return _SEGMENT_RE.findall(m.group(1)) if m else []


def missing_key(message: str) -> str | None:
    m = _MISSING_RE.match(message)
    return m.group(1) if m else None


def explain(message: str, raw: object, where: str, cls: type[Any] | None = None) -> str:
    """``'<where>: <path>: <msg>'`` for a msgspec ValidationError message."""
    m = _PATH_RE.search(message)
    text = message[: m.start()] if m else message
    segments = error_path(message)
    parts = [where]
    node: object = raw
    key: str | None = None
    for name, index in segments:
        if name:
            if key is not None:
                parts.append(key)
            key = name
            node = node.get(name) if isinstance(node, dict) else None
        else:
            i = int(index)
            node = node[i] if isinstance(node, list) and i < len(node) else None
            parts.append(label(key or "item", i, node))
            key = None
    if key is not None:
        parts.append(key)
    return ": ".join([*parts, _humanise(text, cls, segments)])


def _humanise(text: str, cls: type[Any] | None, segments: list[tuple[str, str]]) -> str:
    text = text.strip()
    if (m := _UNKNOWN_RE.match(text)) is not None:
        t = _type_at(cls, segments)
        known = ([f.encode_name for f in t.fields]
                 if isinstance(t, msgspec.inspect.StructType) else [])
        return f"unknown key '{m.group(1)}'" + did_you_mean(m.group(1), known)
    if (m := _MISSING_RE.match(text)) is not None:
        return f"missing required key '{m.group(1)}'"
    text = text.replace("`", "")
    if text.startswith("Invalid enum value"):
        t = _type_at(cls, segments)
        if isinstance(t, msgspec.inspect.LiteralType):
            text += " (valid: " + ", ".join(repr(v) for v in t.values) + ")"
    return text[:1].lower() + text[1:] if text[:1].isupper() and text[1:2].islower() else text


def _type_at(cls: type[Any] | None, segments: list[tuple[str, str]]) -> Any:
    """The msgspec.inspect type at ``segments`` inside ``cls``; None when unknown."""
    if cls is None:
        return None
    t: Any = msgspec.inspect.type_info(cls)
    for name, index in segments:
        t = _unwrap(t)
        if name and isinstance(t, msgspec.inspect.StructType):
            t = next((f.type for f in t.fields if f.encode_name == name), None)
        elif name and isinstance(t, msgspec.inspect.DictType):
            t = t.value_type
        elif index and isinstance(t, msgspec.inspect.TupleType):
            i = int(index)
            t = t.item_types[i] if i < len(t.item_types) else None
        elif index and hasattr(t, "item_type"):
            t = t.item_type
        else:
            return None
    return _unwrap(t)


def _unwrap(t: Any) -> Any:
    if isinstance(t, msgspec.inspect.UnionType):
        inner = [x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)]
        return inner[0] if len(inner) == 1 else t
    return t


class TextIndex:
    """Where keys are in the TOML text, for line numbers on semantic errors."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        # (line index, dotted table name, is an array of tables)
        self.headers: list[tuple[int, tuple[str, ...], bool]] = []
        for i, line in enumerate(self.lines):
            m = _HEADER_RE.match(line)
            if m:
                name = tuple(p.strip().strip("\"'") for p in m.group(2).split("."))
                self.headers.append((i, name, m.group(1) == "[["))

    def line_of(self, section: str, index: int | None, key: str | None) -> int | None:
        """1-based line of ``key =`` in ``[section]`` (``index``: the n-th ``[[section]]``),
        or of the table's header when ``key`` is None (``[x]`` or a lone ``[[x]]``);
        None unless certain."""
        blocks = [(i, n) for n, (i, name, arr) in enumerate(self.headers)
                  if name == (section,) and (arr == (index is not None) or key is None)]
        if index is not None:
            blocks = blocks[index:index + 1]
        if len(blocks) != 1:
            return None
        start, n = blocks[0]
        if key is None:
            return start + 1
        end = self.headers[n + 1][0] if n + 1 < len(self.headers) else len(self.lines)
        pattern = re.compile(rf"^\s*([\"']?){re.escape(key)}\1\s*=")
        hits = [i for i in range(start + 1, end) if pattern.match(self.lines[i])]
        return hits[0] + 1 if len(hits) == 1 else None
