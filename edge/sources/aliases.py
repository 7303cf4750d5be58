"""Spellings: the same device or column under several names (``Smelter #1``,
``smelter_1``, ``SMELTER-1``) mapped to the one canonical name its tags are declared
under (MQTT topic devices, CSV value column headers).

Invariants:

* A name resolves to a canonical device only through the configured table: an exact
  canonical name, an explicit alias, or (``spelling = "loose"``) a name equal to one of
  those once case and every character but letters and digits are ignored. Anything
  else stays unknown (the source quarantines it): a guess never merges two devices.
* The table is checked at load time (``problems``): an alias of an undeclared device,
  a canonical name used as an alias of another, and names that loose matching would
  merge although they point at different devices are configuration errors, so a
  spelling can never resolve two ways.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping


def loose(name: str) -> str:
    """The loose key of a name: lower case, letters and digits only."""
    return "".join(c for c in name.lower() if c.isalnum())


def problems(canonical: Iterable[str], aliases: Mapping[str, str], *,
             loose_match: bool, what: str = "device") -> list[str]:
    """Every way the table is ambiguous or points nowhere, one line each."""
    known = list(dict.fromkeys(canonical))
    out: list[str] = []
    for alias, target in aliases.items():
        if target not in known:
            out.append(f"aliases: '{alias}' maps to '{target}', which is not one of the "
                       f"{what}s ({', '.join(known) or 'none'})")
        elif alias in known and alias != target:
            out.append(f"aliases: '{alias}' is a {what} itself and cannot also be a "
                       f"spelling of '{target}'")
    if loose_match:
        owner: dict[str, tuple[str, str]] = {}  # loose key -> (name, canonical)
        for name, target in [*((c, c) for c in known), *aliases.items()]:
            key = loose(name)
            seen = owner.setdefault(key, (name, target))
            if seen[1] != target:
                out.append(f"spelling = \"loose\": '{seen[0]}' (-> '{seen[1]}') and "
                           f"'{name}' (-> '{target}') are the same name once case and "
                           f"punctuation are ignored: rename one or use spelling = \"exact\"")
    return out


class Spellings:
    """Resolves a device name as the input spells it to its canonical name."""

    def __init__(self, canonical: Iterable[str], aliases: Mapping[str, str], *,
                 loose_match: bool) -> None:
        self._exact = {c: c for c in canonical} | dict(aliases)
        self._loose = {loose(k): v for k, v in self._exact.items()} if loose_match else {}

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one table per subscription, for life
    def resolve(self, name: str) -> str | None:
        """The canonical device of ``name``; None when no configured spelling fits."""
        hit = self._exact.get(name)
        if hit is None and self._loose:
            hit = self._loose.get(loose(name))
        return hit
