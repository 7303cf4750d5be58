"""S7 addresses, types and read planning (edge.protocols.s7): pure, exhaustive."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.protocols.s7.address import Address, parse
from edge.protocols.s7.codec import check, decode, decode_dt, encode, encode_dt, parse_type
from edge.protocols.s7.plan import TagRef, max_read_bytes, plan_reads


@pytest.mark.parametrize(("text", "want"), [
    ("DB10.DBD4", Address("DB", 10, 4, -1, 4)),
    ("db1.dbx0.3", Address("DB", 1, 0, 3, 0)),
    ("DB1.DBB7", Address("DB", 1, 7, -1, 1)),
    ("DB65535.DBW65534", Address("DB", 65535, 65534, -1, 2)),
    ("I0.1", Address("I", 0, 0, 1, 0)),
    ("E0.1", Address("I", 0, 0, 1, 0)),
    ("Q1.0", Address("Q", 0, 1, 0, 0)),
    ("A1.7", Address("Q", 0, 1, 7, 0)),
    ("M10.2", Address("M", 0, 10, 2, 0)),
    ("MW20", Address("M", 0, 20, -1, 2)),
    ("IB3", Address("I", 0, 3, -1, 1)),
    ("QD8", Address("Q", 0, 8, -1, 4)),
])
def test_parse_known_addresses(text: str, want: Address) -> None:
    """Every documented address form parses to its area, DB, byte and bit."""
    assert parse(text) == want


@pytest.mark.parametrize(("text", "why"), [
    ("DB0.DBW0", "DB number"), ("DB1.DBX0.8", "bit must be 0..7"),
    ("DB1.DBW70000", "byte offset"), ("DB1.DBQ0", "not an S7 address"),
    ("X0.1", "not an S7 address"), ("MW", "not an S7 address"), ("", "not an S7 address"),
    ("M10", "not an S7 address"), ("DB1", "not an S7 address"),
])
def test_parse_rejects_with_reason(text: str, why: str) -> None:
    """A bad address is refused with a message naming the address and the problem."""
    with pytest.raises(ValueError, match=why):
        parse(text)


addresses = st.one_of(
    st.builds(Address, st.just("DB"), st.integers(1, 65535), st.integers(0, 65535),
              st.integers(0, 7), st.just(0)),
    st.builds(Address, st.just("DB"), st.integers(1, 65535), st.integers(0, 65535),
              st.just(-1), st.sampled_from([1, 2, 4])),
    st.builds(Address, st.sampled_from(["I", "Q", "M"]), st.just(0), st.integers(0, 65535),
              st.integers(0, 7), st.just(0)),
    st.builds(Address, st.sampled_from(["I", "Q", "M"]), st.just(0), st.integers(0, 65535),
              st.just(-1), st.sampled_from([1, 2, 4])),
)


@given(addresses)
def test_address_round_trip(addr: Address) -> None:
    """The canonical spelling of any address parses back to the same address."""
    assert parse(str(addr)) == addr
    assert parse(str(addr).lower()) == addr


@pytest.mark.parametrize(("addr", "typ", "ok"), [
    ("DB1.DBX0.0", "BOOL", True), ("DB1.DBB0", "BOOL", False), ("DB1.DBX0.0", "INT", False),
    ("DB1.DBW0", "INT", True), ("DB1.DBD0", "INT", False), ("DB1.DBD0", "REAL", True),
    ("DB1.DBB0", "LREAL", True), ("DB1.DBB0", "STRING[10]", True), ("MB0", "BYTE", True),
    ("DB1.DBB65530", "LREAL", False),
])
def test_check_type_fits_address(addr: str, typ: str, ok: bool) -> None:
    """A type is accepted only on an address of its width (BOOL only on a bit)."""
    if ok:
        check(parse(addr), parse_type(typ))
    else:
        with pytest.raises(ValueError):
            check(parse(addr), parse_type(typ))


def test_parse_type_names_and_sizes() -> None:
    """Type names are case-insensitive, with the usual aliases, and have their wire sizes."""
    sizes = {"bool": 1, "BYTE": 1, "word": 2, "Int": 2, "dword": 4, "DINT": 4, "real": 4,
             "LREAL": 8, "dt": 8, "date_and_time": 8, "string": 256, "STRING[20]": 22}
    for name, size in sizes.items():
        assert parse_type(name).size == size, name
    with pytest.raises(ValueError, match="not an S7 type"):
        parse_type("FLOAT")
    with pytest.raises(ValueError, match="STRING length"):
        parse_type("STRING[255]")


def test_known_big_endian_bytes() -> None:
    """Values decode from the bytes a Siemens PLC stores (big-endian, BCD dates)."""
    assert decode(parse_type("INT"), b"\xff\xfe") == -2
    assert decode(parse_type("WORD"), b"\x12\x34") == 0x1234
    assert decode(parse_type("DINT"), b"\x00\x01\x00\x00") == 65536
    assert decode(parse_type("REAL"), b"\x42\x48\x00\x00") == 50.0
    assert decode(parse_type("LREAL"), struct.pack(">d", 1.5)) == 1.5
    assert decode(parse_type("BOOL"), b"\x08", 0, 3) is True
    assert decode(parse_type("BOOL"), b"\xf7", 0, 3) is False
    assert decode(parse_type("STRING[10]"), b"\x0a\x03abc" + bytes(7)) == "abc"
    # 2024-02-29 13:45:59.123, Thursday (5)
    assert decode_dt(bytes([0x24, 0x02, 0x29, 0x13, 0x45, 0x59, 0x12, 0x35])) == \
        1709214359.123
    assert decode_dt(bytes([0x95, 0x01, 0x01, 0, 0, 0, 0, 0])) == 788918400.0  # 1995


@pytest.mark.parametrize("raw", [
    bytes([0x24, 0x13, 0x01, 0, 0, 0, 0, 0]),  # month 13
    bytes([0x23, 0x02, 0x29, 0, 0, 0, 0, 0]),  # not a leap year
    bytes([0x2A, 0x01, 0x01, 0, 0, 0, 0, 0]),  # not BCD
    bytes([0x24, 0x01, 0x01, 0x24, 0, 0, 0, 0]),  # hour 24
])
def test_bad_date_and_time_is_refused(raw: bytes) -> None:
    """Bytes that are not a DATE_AND_TIME raise instead of giving a wrong time."""
    with pytest.raises(ValueError):
        decode_dt(raw)


def test_bad_string_is_refused() -> None:
    """A STRING whose current length exceeds its maximum raises (a corrupted DB)."""
    with pytest.raises(ValueError, match="exceeds"):
        decode(parse_type("STRING[4]"), b"\x04\x09abcd")


@pytest.mark.parametrize(("typ", "value"), [
    ("BYTE", 256), ("BYTE", -1), ("INT", 32768), ("INT", 1.5), ("WORD", -1),
    ("DINT", 2**31), ("DWORD", 2**32), ("REAL", 1e39), ("BOOL", 2), ("INT", "3"),
    ("STRING[3]", "abcd"), ("STRING[3]", "\u20ac"), ("STRING[3]", 3),
    ("DT", 0.0), ("DT", math.nan),
])
def test_encode_refuses_values_the_type_cannot_hold(typ: str, value: object) -> None:
    """A value out of a type's range is refused, never wrapped or truncated."""
    with pytest.raises(ValueError):
        encode(parse_type(typ), value)  # type: ignore[arg-type]


_INTS = {"BYTE": (0, 255), "WORD": (0, 65535), "INT": (-32768, 32767),
         "DWORD": (0, 2**32 - 1), "DINT": (-(2**31), 2**31 - 1)}


@given(st.sampled_from(sorted(_INTS)), st.data())
def test_integer_round_trip(name: str, data: st.DataObject) -> None:
    """Every integer a type holds survives encode then decode."""
    lo, hi = _INTS[name]
    v = data.draw(st.integers(lo, hi))
    t = parse_type(name)
    raw = encode(t, v)
    assert len(raw) == t.size
    assert decode(t, raw) == v


@given(st.floats(allow_nan=False))
def test_lreal_round_trip(v: float) -> None:
    """Any float64 survives LREAL."""
    assert decode(parse_type("LREAL"), encode(parse_type("LREAL"), v)) == v


@given(st.floats(allow_nan=False, width=32))
def test_real_round_trip(v: float) -> None:
    """Any float32 survives REAL exactly."""
    assert decode(parse_type("REAL"), encode(parse_type("REAL"), v)) == v


@given(st.booleans(), st.integers(0, 7), st.integers(0, 255))
def test_bool_bit_decode(v: bool, bit: int, other: int) -> None:
    """A BOOL reads its own bit whatever the other bits of the byte hold."""
    byte = (other & ~(1 << bit)) | (v << bit)
    assert decode(parse_type("BOOL"), bytes([byte]), 0, bit) is v
    assert encode(parse_type("BOOL"), v) == (b"\x01" if v else b"\x00")


@given(st.integers(1, 254), st.data())
def test_string_round_trip(n: int, data: st.DataObject) -> None:
    """Any latin-1 text up to its declared length survives STRING[n]."""
    text = data.draw(st.text(st.characters(max_codepoint=255), max_size=n))
    t = parse_type(f"STRING[{n}]")
    raw = encode(t, text)
    assert len(raw) == t.size
    assert decode(t, raw) == text


@given(st.integers(631152000000, 3786911999999))  # 1990-01-01 .. 2089-12-31, in ms
def test_date_and_time_round_trip(ms: int) -> None:
    """Any millisecond in 1990..2089 survives DATE_AND_TIME."""
    raw = encode_dt(ms / 1000)
    assert decode_dt(raw) == pytest.approx(ms / 1000, abs=1e-6)


# ---------------------------------------------------------------------- planning

def test_plan_merges_neighbours_and_splits_areas() -> None:
    """Neighbouring tags of one DB share one read; other DBs and areas get their own."""
    tags = [TagRef(0, "DB", 1, 0, 4), TagRef(1, "DB", 1, 4, 2), TagRef(2, "DB", 1, 10, 8),
            TagRef(3, "DB", 2, 0, 2), TagRef(4, "M", 0, 0, 1), TagRef(5, "I", 0, 0, 1)]
    reqs = plan_reads(tags, max_bytes=462, max_gap=32)
    assert [(r.area, r.db, r.start, r.size, r.members) for r in reqs] == [
        ("DB", 1, 0, 18, (0, 1, 2)), ("DB", 2, 0, 2, (3,)), ("I", 0, 0, 1, (5,)),
        ("M", 0, 0, 1, (4,))]


def test_plan_gap_and_pdu_limits() -> None:
    """A gap wider than max_gap, or a read past the PDU, starts a new read."""
    tags = [TagRef(0, "DB", 1, 0, 4), TagRef(1, "DB", 1, 40, 4)]
    assert len(plan_reads(tags, 462, max_gap=32)) == 2
    assert len(plan_reads(tags, 462, max_gap=36)) == 1
    assert len(plan_reads(tags, 43, max_gap=100)) == 2
    with pytest.raises(ValueError, match="spans 300 bytes"):
        plan_reads([TagRef(0, "DB", 1, 0, 300)], max_read_bytes(240))
    with pytest.raises(ValueError, match="PDU size"):
        max_read_bytes(20)


tag_refs = st.lists(st.builds(TagRef, st.just(0), st.sampled_from(["DB", "M", "I"]),
                              st.integers(1, 3), st.integers(0, 2000),
                              st.sampled_from([1, 2, 4, 8, 22])), max_size=60)


@given(tag_refs, st.integers(40, 960), st.integers(0, 64))
def test_plan_invariants(raw: list[TagRef], pdu: int, gap: int) -> None:
    """Every tag lies in exactly one read of its area; no read exceeds the PDU; sorted."""
    tags = [TagRef(i, t.area, t.db if t.area == "DB" else 0, t.start, t.size)
            for i, t in enumerate(raw)]
    limit = max_read_bytes(pdu)
    reqs = plan_reads(tags, limit, gap)
    seen = sorted(i for r in reqs for i in r.members)
    assert seen == list(range(len(tags)))
    for r in reqs:
        assert r.size <= limit
        for i in r.members:
            t = tags[i]
            assert (t.area, t.db) == (r.area, r.db)
            assert r.start <= t.start and t.start + t.size <= r.start + r.size
    keys = [("DB", "I", "Q", "M").index(r.area) * 10**6 + r.db * 10**5 + r.start for r in reqs]
    assert keys == sorted(keys)


# ---------------------------------------------------------------------- block decoding

_BLOCK_TYPES = ["BOOL", "BYTE", "WORD", "INT", "DWORD", "DINT", "REAL", "LREAL", "DT"]


@given(st.lists(st.tuples(st.sampled_from(_BLOCK_TYPES), st.integers(0, 40), st.integers(0, 7),
                          st.sampled_from([1.0, 0.1, -2.0]), st.sampled_from([0.0, 5.0])),
                min_size=1, max_size=25),
       st.binary(min_size=48, max_size=48))
def test_block_decoder_matches_tag_by_tag(specs: list[tuple[str, int, int, float, float]],
                                          buf: bytes) -> None:
    """One read decoded as a block gives, for every tag (overlapping or not), what the
    tag-by-tag codec gives, scaled; a tag whose bytes are no value is NaN and listed."""
    from edge.protocols.s7.block import BlockDecoder, Field

    fields = [Field(off, parse_type(name), bit if name == "BOOL" else -1, scale, add)
              for name, off, bit, scale, add in specs]
    values, bad = BlockDecoder(fields).decode(buf)
    bad_k = dict(bad)
    for k, f in enumerate(fields):
        try:
            want = float(decode(f.type, buf, f.offset, f.bit)) * f.scale + f.add
        except ValueError:
            assert k in bad_k and math.isnan(values[k])
            continue
        assert k not in bad_k
        assert values[k] == want or (math.isnan(want) and math.isnan(values[k]))
