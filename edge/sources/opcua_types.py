"""OPC-UA values that are not plain numbers: text tags (strings, enumerations) and values
whose type is not the tag's (an array, a string where a number was configured, a node
whose type changed at run time).

Invariants:

* A text tag (``type = "text"``) travels as ``TextValue`` records, one when its text or
  its quality changes, never one per publish. An enumeration's number becomes its name
  (from the data type's EnumStrings or EnumValues, read once per session); a number with
  no name stays the number as text.
* A value whose type does not fit its tag (an array for a numeric tag, a string for a
  numeric tag, a number or an array for a text tag) makes that value Bad (``bad_decode``,
  NaN for a sample) and gives one ``Quarantine`` record and one log line naming the node,
  what it delivered and what the tag expects; again only when what it delivers changes.
  When the tag delivers its own type again one line says so. The source is never
  restarted for it: the other tags are not affected.
* When data goes missing, every text tag gets one Bad ``TextValue`` (its last text,
  ``bad_not_connected``, the reason); the first value of the next session is then a
  change and is emitted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import structlog
from asyncua import Client, ua

from edge.model import Quality, Quarantine, Record, SampleBatch, TextValue
from edge.protocols.opcua.client import ts_ns_of
from edge.protocols.opcua.status import quality_of_status

log = structlog.get_logger("edge.sources.opcua")

_BAD_DECODE = int(Quality.BAD_DECODE)
ARRAYS = ("arrays are not read: a tag takes one scalar node (give each element a node of "
          "its own in the PLC)")
_TEXT_TYPES = (ua.VariantType.String, ua.VariantType.LocalizedText)


@dataclass(slots=True)
class TextTag:
    """One text tag of a subscription: our name, its node, its enumeration's names."""

    name: str  # device/tag
    node_id: str
    enum: dict[int, str] | None = None


def describe(variant: ua.Variant | None) -> str:
    """What a value is, for a person: ``Double``, ``Double[4]``, ``String``, ``Null``."""
    if variant is None or variant.VariantType == ua.VariantType.Null:
        return "Null"
    name = variant.VariantType.name
    if variant.is_array or isinstance(variant.Value, list):
        size = len(variant.Value) if isinstance(variant.Value, list) else 0
        return f"{name}[{size}]"
    return str(name)


def text_of(dv: ua.DataValue, enum: dict[int, str] | None) -> tuple[str, int] | None:
    """(text, quality byte) of a text tag's DataValue; None when it is no text."""
    status = dv.StatusCode
    quality = 0 if status is None else int(quality_of_status(status))
    variant = dv.Value
    raw = None if variant is None else variant.Value
    if quality & 0x80 and raw is None:
        return "", quality
    if variant is None or variant.is_array or isinstance(raw, list):
        return None
    if variant.VariantType == ua.VariantType.String:
        return (raw or ""), quality
    if variant.VariantType == ua.VariantType.LocalizedText:
        return (raw.Text or "") if raw is not None else "", quality
    if isinstance(raw, int) and not isinstance(raw, bool) and enum is not None:
        return enum.get(raw, str(raw)), quality
    return None


async def enum_names(client: Client, node_id: ua.NodeId) -> dict[int, str] | None:
    """The names of the enumeration ``node_id``'s value is of; None when it is none."""
    try:
        dtype = await client.get_node(node_id).read_data_type()
        if dtype.NamespaceIndex == 0 and dtype.Identifier in (12, 21):  # String, LocText
            return None
        dnode = client.get_node(dtype)
        for child in await dnode.get_children(refs=ua.ObjectIds.HasProperty):
            name = (await child.read_browse_name()).Name
            if name == "EnumStrings":
                texts = await child.read_value()
                return {i: t.Text or str(i) for i, t in enumerate(texts)}
            if name == "EnumValues":
                values = await child.read_value()
                return {int(v.Value): v.DisplayName.Text or str(v.Value) for v in values}
    except ua.UaStatusCodeError:
        return None
    return None


class TypeWatch:
    """The text tags' last values and the numeric tags' type mismatches of one source."""

    def __init__(self, source: str, node_of_tag: dict[int, str],
                 type_of_tag: dict[int, str]) -> None:
        self.source = source
        self.node_of_tag = node_of_tag
        self.type_of_tag = type_of_tag
        self.last_text: dict[str, tuple[str, int]] = {}
        self.mismatch: dict[int | str, str] = {}  # tag id or text tag -> what it delivers

    def numbers(self, batch: SampleBatch, odd: Iterable[tuple[int, ua.DataValue]]
                ) -> list[Record]:
        """Quarantines for numeric tags whose value had another type; lines for the
        tags that deliver numbers again."""
        records: list[Record] = []
        for tag, dv in odd:
            what = describe(dv.Value)
            records.extend(self._mismatch(tag, self.node_of_tag.get(tag, "?"), what,
                                          self.type_of_tag.get(tag, "number"),
                                          ts_ns_of(dv, time.time_ns())))
        numeric = [k for k in self.mismatch if isinstance(k, int)]
        if numeric:
            fine = batch.tag_id[batch.quality != _BAD_DECODE]
            for tag in np.intersect1d(fine, np.array(numeric, np.int32)).tolist():
                self._restored(int(tag), self.node_of_tag.get(int(tag), "?"))
        return records

    def texts(self, items: Iterable[tuple[TextTag, ua.DataValue]]) -> list[Record]:
        """TextValue records for text tags whose text or quality changed."""
        records: list[Record] = []
        for tt, dv in items:
            ts = ts_ns_of(dv, time.time_ns())
            got = text_of(dv, tt.enum)
            if got is None:
                records.extend(self._mismatch(tt.name, tt.node_id, describe(dv.Value),
                                              "text", ts))
                got = (self.last_text.get(tt.name, ("", 0))[0], _BAD_DECODE)
            elif tt.name in self.mismatch:
                self._restored(tt.name, tt.node_id)
            if self.last_text.get(tt.name) == got:
                continue
            self.last_text[tt.name] = got
            text, quality = got
            reason = "" if quality == 0 else _reason(quality)
            records.append(TextValue(ts_ns=ts, source=self.source, tag=tt.name, value=text,
                                     quality=quality, reason=reason))
        return records

    def lost(self, reason: str, now_ns: int) -> list[Record]:
        """One Bad TextValue per text tag that was not Bad already: data is missing."""
        bad = int(Quality.BAD_NOT_CONNECTED)
        records: list[Record] = []
        for name, (text, quality) in self.last_text.items():
            if quality != bad:
                self.last_text[name] = (text, bad)
                records.append(TextValue(ts_ns=now_ns, source=self.source, tag=name,
                                         value=text, quality=bad, reason=reason))
        return records

    def _mismatch(self, key: int | str, node_id: str, what: str, expected: str,
                  ts_ns: int) -> list[Record]:
        if self.mismatch.get(key) == what:
            return []
        self.mismatch[key] = what
        reason = (f"node {node_id} delivered {what} where the tag expects {expected}: "
                  f"value set Bad (bad_decode)")
        if what.endswith("]"):
            reason += f"; {ARRAYS}"
        log.warning("opcua tag type mismatch", source=self.source, node_id=node_id,
                    delivered=what, expected=expected,
                    hint=ARRAYS if what.endswith("]") else "")
        return [Quarantine(ts_ns=ts_ns, source=self.source, reason=reason, where="data type",
                           subject=node_id, payload=what)]

    def _restored(self, key: int | str, node_id: str) -> None:
        what = self.mismatch.pop(key)
        log.info("opcua tag type restored", source=self.source, node_id=node_id,
                 was=what)


def _reason(quality: int) -> str:
    try:
        return Quality(quality).reason
    except ValueError:
        return "bad" if quality & 0x80 else "uncertain"
