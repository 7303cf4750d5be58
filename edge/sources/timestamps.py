"""Timestamp parsing shared by the file and MQTT sources (pure).

Accepted: ISO 8601 with a zone (``Z`` or ``+hh:mm``); ISO 8601 without a zone only
when a default zone is configured; epoch numbers in s, ms, us or ns (``auto`` picks the
unit by magnitude: < 1e11 s, < 1e14 ms, < 1e17 us, else ns). Everything else raises
``TimestampError`` whose text is the quarantine reason.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EpochUnit = Literal["auto", "s", "ms", "us", "ns"]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)
_SCALE = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}
# 1970 .. 2200: wider than any real device clock, narrow enough to catch garbage.
_MAX_NS = 7_258_118_400 * 10**9


class TimestampError(ValueError):
    """The text is not a usable timestamp; ``str(exc)`` is the reason."""


def zone(name: str) -> dt.tzinfo | None:
    """The tzinfo for a configured zone name ('' -> None); ValueError when unknown."""
    if not name:
        return None
    if name.upper() == "UTC":
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {name!r} is not a known IANA zone") from None


def epoch_to_ns(value: float, unit: EpochUnit = "auto") -> int:
    if not math.isfinite(value):
        raise TimestampError(f"timestamp is not finite: {value!r}")
    if unit == "auto":
        mag = abs(value)
        unit = "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"
    ns = int(value) if unit == "ns" else round(value * _SCALE[unit])
    if not 0 <= ns < _MAX_NS:
        raise TimestampError(f"timestamp out of range: {value!r}")
    return ns


def parse_timestamp(text: str, tz: dt.tzinfo | None, unit: EpochUnit = "auto") -> int:
    """ns since the epoch for ``text`` (ISO 8601 or an epoch number)."""
    text = text.strip()
    if not text:
        raise TimestampError("empty timestamp")
    c = text[0]
    if (c.isdigit() or c in "+-.") and ("-" not in text[1:] and ":" not in text):
        try:
            number = float(text)
        except ValueError:
            raise TimestampError(f"not a timestamp: {text[:40]!r}") from None
        return epoch_to_ns(number, unit)
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        raise TimestampError(f"not a timestamp: {text[:40]!r}") from None
    if stamp.tzinfo is None:
        if tz is None:
            raise TimestampError("timestamp without zone")
        stamp = stamp.replace(tzinfo=tz)
    try:
        us = (stamp - _EPOCH) // _US
    except OverflowError:
        raise TimestampError(f"timestamp out of range: {text[:40]!r}") from None
    ns = us * 1000
    if not 0 <= ns < _MAX_NS:
        raise TimestampError(f"timestamp out of range: {text[:40]!r}")
    return int(ns)
