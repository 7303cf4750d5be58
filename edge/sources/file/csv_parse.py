"""CSV rows -> typed values or a reason (pure: no files, no clock).

Invariants, which the fuzz tests check on arbitrary bytes:

* ``parse`` never raises. Every non-blank line is either accepted or returned as a
  ``RowError`` naming its line number, a short ``kind`` (the metric label) and a
  reason a person can act on ("not a number in 'part_temp_c': 'abc'").
* A row is accepted whole or not at all: no partial rows, no default values.
* A line identical to an already accepted line of the same file (``seen``) is a
  duplicate, so a re-delivered row is never counted twice.
"""

from __future__ import annotations

import abc
import csv
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from edge.model import CmmReading
from edge.sources.aliases import loose as loose_key
from edge.sources.file.rowset import SeenRows
from edge.sources.timestamps import EpochUnit, TimestampError, parse_timestamp

_T = TypeVar("_T")

CMM_FIELDS: tuple[str, ...] = (
    "timestamp", "part_id", "lot", "feature", "nominal_mm", "tol_mm", "measured_mm",
    "part_temp_c", "air_temp_c", "scale_temp_c",
)
CMM_TEXT = ("part_id", "lot", "feature")
CMM_NUMBERS = ("nominal_mm", "tol_mm", "measured_mm", "part_temp_c", "air_temp_c",
               "scale_temp_c")
# A CMM without a part probe has no part temperature column: the reading carries NaN.
CMM_OPTIONAL = frozenset({"part_temp_c"})
MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    kind: str
    reason: str
    text: str


@dataclass(slots=True)
class ParseResult(Generic[_T]):
    rows: list[_T] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    blank: int = 0


class _Problem(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def split_fields(text: str) -> list[str]:
    """Fields of one line; quotes are honoured only when the line has any."""
    if '"' not in text:
        return text.split(",")
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise _Problem("malformed", f"malformed CSV: {exc}") from None
    if len(rows) != 1:
        raise _Problem("malformed", "malformed CSV: quoted field spans lines")
    return rows[0]


def _number(fields: list[str], index: int, name: str) -> float:
    text = fields[index]
    try:
        value = float(text)
    except ValueError:
        if not text.strip():
            raise _Problem("missing_field", f"missing field '{name}'") from None
        raise _Problem(
            "not_a_number", f"not a number in '{name}': {text[:40]!r}"
        ) from None
    if not math.isfinite(value):
        raise _Problem("not_a_number", f"not a number in '{name}': {text[:40]!r}")
    return value


def _header_fields(line: bytes) -> list[str]:
    text = line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    return [f.strip() for f in split_fields(text)]


class _Parser(abc.ABC, Generic[_T]):
    """Shared line handling; subclasses map the header and convert one row."""

    def __init__(self, tz: dt.tzinfo | None, epoch_unit: EpochUnit) -> None:
        self.tz = tz
        self.epoch_unit = epoch_unit
        self.width = 0
        self.header_error = "no header line yet"

    def set_header(self, line: bytes) -> str | None:
        """Map the columns; returns the problem, or None when the header is usable."""
        try:
            names = _header_fields(line)
        except _Problem as exc:
            self.header_error = f"unusable header: {exc.reason}"
            return self.header_error
        self.width = len(names)
        problem = self._map(names)
        self.header_error = "" if problem is None else problem
        return problem

    @abc.abstractmethod
    def _map(self, names: list[str]) -> str | None:
        """Map header names to the fields this parser needs; the problem, or None."""

    @abc.abstractmethod
    def _row(self, fields: list[str]) -> _T:
        """One parsed row; raises ``_Problem`` with the reason when it is bad."""

    def parse(self, lines: Sequence[tuple[int, bytes]], seen: SeenRows) -> ParseResult[_T]:
        out: ParseResult[_T] = ParseResult()
        for line_no, raw in lines:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                out.blank += 1
                continue
            try:
                if self.header_error:
                    raise _Problem("bad_header", self.header_error)
                if line in seen:
                    raise _Problem("duplicate", "duplicate row")
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    raise _Problem("not_utf8", "row is not UTF-8 text") from None
                fields = split_fields(text)
                if len(fields) != self.width:
                    raise _Problem(
                        "column_count",
                        f"wrong column count {len(fields)}, expected {self.width}",
                    )
                out.rows.append(self._row(fields))
                seen.add(line)
            except _Problem as exc:
                shown = line.decode("utf-8", errors="replace")[:MAX_TEXT]
                out.errors.append(RowError(line_no, exc.kind, exc.reason, shown))
        return out

    def _ts(self, fields: list[str], index: int) -> int:
        try:
            return parse_timestamp(fields[index], self.tz, self.epoch_unit)
        except TimestampError as exc:
            raise _Problem("timestamp", str(exc)) from None


class CmmParser(_Parser[CmmReading]):
    """CMM rows, each a ``CmmReading`` of ``device`` found in ``where`` (the file name);
    ``columns`` maps a logical field to its header name (default: same)."""

    def __init__(
        self, columns: Mapping[str, str], tz: dt.tzinfo | None, epoch_unit: EpochUnit = "s",
        *, device: str = "", where: str = "",
    ) -> None:
        super().__init__(tz, epoch_unit)
        self.columns = {f: columns.get(f, f) for f in CMM_FIELDS}
        self.index: dict[str, int] = {}
        self.device = device
        self.where = where

    def _map(self, names: list[str]) -> str | None:
        where = {n: i for i, n in enumerate(names)}
        self.index = {}
        for logical, header in self.columns.items():
            if header in where:
                self.index[logical] = where[header]
            elif logical not in CMM_OPTIONAL:
                return f"header lacks column '{header}'"
        return None

    def _row(self, fields: list[str]) -> CmmReading:
        ix = self.index
        texts = []
        for name in CMM_TEXT:
            value = fields[ix[name]].strip()
            if not value:
                raise _Problem("missing_field", f"missing field '{name}'")
            texts.append(value)
        nums = [
            _number(fields, ix[n], n) if n in ix else math.nan for n in CMM_NUMBERS
        ]
        return CmmReading(
            self._ts(fields, ix["timestamp"]), self.device, texts[0], texts[1], texts[2],
            nums[0], nums[1], nums[2], nums[3], nums[4], nums[5], where=self.where,
        )


@dataclass(frozen=True, slots=True)
class SampleRow:
    ts_ns: int
    values: list[float]


class SamplesParser(_Parser[SampleRow]):
    """Generic rows: a timestamp column and value columns, one sample per value cell."""

    def __init__(
        self, ts_column: str, value_columns: Sequence[str], tz: dt.tzinfo | None,
        epoch_unit: EpochUnit = "s", *, aliases: Sequence[Sequence[str]] = (),
        loose: bool = False,
    ) -> None:
        super().__init__(tz, epoch_unit)
        self.ts_column = ts_column
        self.value_columns = list(value_columns)
        self.ts_index = 0
        self.value_index: list[int] = []
        spellings = list(aliases) or [()] * len(self.value_columns)
        # a header name -> the configured column it spells (checked unambiguous at load)
        self._spells = {a: c for c, names in zip(self.value_columns, spellings, strict=True)
                        for a in (c, *names)}
        self._loose = {loose_key(a): c for a, c in self._spells.items()} if loose else {}

    def _column_of(self, name: str) -> str | None:
        hit = self._spells.get(name)
        if hit is None and self._loose:
            hit = self._loose.get(loose_key(name))
        return hit

    def _map(self, names: list[str]) -> str | None:
        where = {n: i for i, n in enumerate(names)}
        if self.ts_column not in where:
            return f"header lacks column '{self.ts_column}'"
        found: dict[str, int] = {}
        for i, name in enumerate(names):
            col = self._column_of(name) if name != self.ts_column else None
            if col is None:
                continue
            if col in found:
                return (f"header spells column '{col}' twice: '{names[found[col]]}' and "
                        f"'{name}'")
            found[col] = i
        for col in self.value_columns:
            if col not in found:
                return f"header lacks column '{col}'"
        self.ts_index = where[self.ts_column]
        self.value_index = [found[c] for c in self.value_columns]
        return None

    def _row(self, fields: list[str]) -> SampleRow:
        values = [
            _number(fields, i, c)
            for i, c in zip(self.value_index, self.value_columns, strict=True)
        ]
        return SampleRow(self._ts(fields, self.ts_index), values)
