"""Unit tests of the pure CSV parser and timestamp parsing (no files, no sockets)."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sources.file.csv_parse import CmmParser, SamplesParser
from edge.sources.timestamps import TimestampError, parse_timestamp, zone

HEADER = (b"timestamp,part_id,lot,feature,nominal_mm,tol_mm,measured_mm,"
          b"part_temp_c,air_temp_c,scale_temp_c")
GOOD = (b"2026-11-21T10:01:00.000+00:00,P000001,LOT0001,length_120,120.000,0.010,"
        b"120.00512,21.500,21.700,21.100")


def cmm(tz: dt.tzinfo | None = None) -> CmmParser:
    p = CmmParser({}, tz)
    assert p.set_header(HEADER) is None
    return p


def test_good_row_is_accepted_with_values() -> None:
    """A well-formed CMM row becomes a CmmReading with the numbers of the file."""
    r = cmm().parse([(2, GOOD)], set())
    assert not r.errors
    row = r.rows[0]
    assert row.part_id == "P000001" and row.measured_mm == 120.00512
    assert row.ts_ns == 1_795_255_260_000_000_000


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (GOOD.replace(b"21.500", b""), "missing field 'part_temp_c'"),
        (GOOD.replace(b"21.500", b"abc"), "not a number in 'part_temp_c': 'abc'"),
        (GOOD.replace(b",21.100", b""), "wrong column count 9, expected 10"),
        (GOOD.replace(b"+00:00", b""), "timestamp without zone"),
        (GOOD.replace(b"120.00512", b"nan"), "not a number in 'measured_mm': 'nan'"),
        (GOOD.replace(b"P000001", b""), "missing field 'part_id'"),
    ],
)
def test_malformed_rows_are_quarantined_with_reason(line: bytes, reason: str) -> None:
    """Each kind of malformed row is rejected with its line number and a readable reason."""
    r = cmm().parse([(7, line)], set())
    assert not r.rows
    assert [(e.line, e.reason) for e in r.errors] == [(7, reason)]


def test_duplicate_row_is_quarantined() -> None:
    """A row identical to one already accepted in the same file is a duplicate."""
    seen: set[bytes] = set()
    p = cmm()
    r = p.parse([(2, GOOD), (3, GOOD + b"\r")], seen)
    assert len(r.rows) == 1 and [e.reason for e in r.errors] == ["duplicate row"]


def test_naive_timestamp_accepted_with_configured_zone() -> None:
    """A naive timestamp is read in the configured zone (Berlin is UTC+1 in November)."""
    r = cmm(zone("Europe/Berlin")).parse([(2, GOOD.replace(b"+00:00", b""))], set())
    assert r.rows[0].ts_ns == 1_795_255_260_000_000_000 - 3600 * 10**9


def test_missing_part_temp_column_gives_nan() -> None:
    """A CMM without a part probe (no part_temp_c column) gives NaN, not a rejection."""
    p = CmmParser({}, None)
    assert p.set_header(HEADER.replace(b"part_temp_c,", b"")) is None
    r = p.parse([(2, GOOD.replace(b"21.500,", b""))], set())
    assert math.isnan(r.rows[0].part_temp_c)


def test_header_missing_column_quarantines_rows() -> None:
    """A header without a required column makes every row a 'bad_header' rejection."""
    p = CmmParser({"measured_mm": "meas"}, None)
    assert p.set_header(HEADER) == "header lacks column 'meas'"
    r = p.parse([(2, GOOD)], set())
    assert r.errors[0].kind == "bad_header"


def test_samples_parser_and_epoch() -> None:
    """Generic rows give one value per mapped column; epoch seconds are accepted."""
    p = SamplesParser("t", ["b", "a"], None)
    assert p.set_header(b"t,a,b") is None
    r = p.parse([(2, b"1795255200.5,1.5,2.5")], set())
    assert r.rows[0].values == [2.5, 1.5]
    assert r.rows[0].ts_ns == 1_795_255_200_500_000_000


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2026-11-21T10:00:00Z", 1_795_255_200 * 10**9),
        ("2026-11-21T11:00:00+01:00", 1_795_255_200 * 10**9),
        ("1795255200000", 1_795_255_200 * 10**9),
        ("1795255200000000000", 1_795_255_200 * 10**9),
    ],
)
def test_timestamp_forms(text: str, ns: int) -> None:
    """ISO with Z or offset, and epoch ms/ns (auto unit) all give the same instant."""
    assert parse_timestamp(text, None) == ns


@pytest.mark.parametrize("text", ["", "abc", "2026-13-01T00:00:00Z", "inf", "-5", "1e30"])
def test_bad_timestamps_raise_timestamp_error(text: str) -> None:
    """Garbage, impossible dates and out-of-range epochs are TimestampErrors."""
    with pytest.raises(TimestampError):
        parse_timestamp(text, None)


_line = st.one_of(
    st.binary(max_size=120),
    st.lists(
        st.one_of(st.text(max_size=12), st.sampled_from(["", "1.5", "nan", '"a,b"', "P1",
                                                          "2026-11-21T10:00:00Z"])),
        min_size=8, max_size=12,
    ).map(lambda fs: ",".join(fs).encode("utf-8", "surrogatepass")),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_line, max_size=20), st.sampled_from(["cmm", "samples"]))
def test_fuzz_every_line_accepted_or_quarantined(lines: list[bytes], mode: str) -> None:
    """On arbitrary bytes the parser never raises and accounts for every line."""
    p: CmmParser | SamplesParser
    if mode == "cmm":
        p = CmmParser({}, None)
        p.set_header(HEADER)
    else:
        p = SamplesParser("timestamp", ["nominal_mm", "tol_mm"], dt.UTC)
        p.set_header(HEADER)
    numbered = [(i + 2, line.replace(b"\n", b"")) for i, line in enumerate(lines)]
    r = p.parse(numbered, set())
    assert len(r.rows) + len(r.errors) + r.blank == len(numbered)
    assert all(e.reason for e in r.errors)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_header_never_raises(header: bytes) -> None:
    """Any header line gives a usable mapping or a reason, never an exception."""
    p = CmmParser({}, None)
    result = p.set_header(header)
    assert result is None or isinstance(result, str)
