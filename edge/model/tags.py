"""Tags: one signal of one device (``device/name``) and the registry of all of them.

Invariant: ids are dense int32 from 0 in the order tags are added (the config file's),
so they are stable for a given config.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

DataType = Literal["float64", "float32", "int16", "uint16", "int32", "uint32", "int64", "bool"]


@dataclass(frozen=True, slots=True)
class TagSpec:
    """One signal of one device, e.g. ``etch1/chamber_temp``."""

    id: int
    device: str
    name: str
    unit: str = ""
    dtype: DataType = "float64"
    low: float | None = None
    high: float | None = None
    description: str = ""

    @property
    def key(self) -> str:
        return f"{self.device}/{self.name}"


@dataclass(slots=True)
class TagRegistry:
    """All tags known to this gateway, with dense int32 ids starting at 0.

    Ids are assigned in the order tags are added, which follows the config file, so
    they are stable for a given config. Lookups by key are O(1).
    """

    _tags: list[TagSpec] = field(default_factory=list)
    _by_key: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        device: str,
        name: str,
        *,
        unit: str = "",
        dtype: DataType = "float64",
        low: float | None = None,
        high: float | None = None,
        description: str = "",
    ) -> TagSpec:
        key = f"{device}/{name}"
        if key in self._by_key:
            existing = self._tags[self._by_key[key]]
            if (existing.unit, existing.dtype) != (unit, dtype):
                raise ValueError(f"tag '{key}' declared twice with different unit or type")
            return existing
        spec = TagSpec(len(self._tags), device, name, unit, dtype, low, high, description)
        self._tags.append(spec)
        self._by_key[key] = spec.id
        return spec

    def id_of(self, key: str) -> int:
        """The id of ``device/name``; KeyError names the tag when it is unknown."""
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"unknown tag '{key}'") from None

    def get(self, key: str) -> TagSpec | None:
        i = self._by_key.get(key)
        return None if i is None else self._tags[i]

    def __getitem__(self, tag_id: int) -> TagSpec:
        return self._tags[tag_id]

    def __len__(self) -> int:
        return len(self._tags)

    def __iter__(self) -> Iterator[TagSpec]:
        return iter(self._tags)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def devices(self) -> list[str]:
        return list(dict.fromkeys(t.device for t in self._tags))
