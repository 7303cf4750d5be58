"""Unit tests of the Modbus codec, the read planner and the source config (no sockets)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config import loads
from edge.errors import ConfigError
from edge.sources.modbus_codec import Decoder, Field, decode, encode
from edge.sources.modbus_plan import ReadRequest, RegisterRef, plan_reads

LIMITS = {"holding": 125, "input": 125, "coil": 2000, "discrete": 2000}


@pytest.mark.parametrize(
    ("words", "word_order", "byte_order"),
    [
        ([0x4120, 0x0000], "big", "big"),       # ABCD
        ([0x0000, 0x4120], "little", "big"),    # CDAB
        ([0x2041, 0x0000], "big", "little"),    # BADC
        ([0x0000, 0x2041], "little", "little"),  # DCBA
    ],
)
def test_float32_in_all_four_orders(words: list[int], word_order: str, byte_order: str) -> None:
    """10.0 (0x41200000) decodes from each of the four word/byte orders."""
    assert decode(words, "float32", word_order, byte_order) == 10.0  # type: ignore[arg-type]
    dec = Decoder([Field(0, "float32", word_order, byte_order)])  # type: ignore[arg-type]
    assert dec.decode(words).tolist() == [10.0]


def test_known_integer_and_double_values() -> None:
    """int16 -2, uint32 0x12345678 (CDAB) and float64 pi decode to the known values."""
    assert decode([0xFFFE], "int16") == -2
    assert decode([0x5678, 0x1234], "uint32", "little") == 0x12345678
    pi = struct.unpack(">4H", struct.pack(">d", 3.141592653589793))
    assert decode(list(pi), "float64") == 3.141592653589793
    assert decode([0x00C8], "uint16", scale=0.1, offset=-5.0) == pytest.approx(15.0)


_types = st.sampled_from(["int16", "uint16", "int32", "uint32", "float32", "float64"])
_orders = st.sampled_from(["big", "little"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_types, _orders, _orders, st.integers(0, 2**32 - 1)),
                min_size=1, max_size=8))
def test_vector_decoder_matches_scalar_reference(specs: list[tuple[str, str, str, int]]) -> None:
    """The numpy decoder gives bit-identical values to the scalar reference on random words."""
    words: list[int] = []
    fields = []
    rng = np.random.default_rng(len(specs))
    for rtype, wo, bo, _ in specs:
        width = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}
        n = width[rtype]
        fields.append(Field(len(words), rtype, wo, bo, 2.0, 1.0))  # type: ignore[arg-type]
        words += rng.integers(0, 65536, n).tolist()
    got = Decoder(fields).decode(words)
    ref = [decode(words[f.offset:], f.rtype, f.word_order, f.byte_order, 2.0, 1.0)
           for f in fields]
    np.testing.assert_array_equal(got, np.array(ref))


@given(st.floats(-1e6, 1e6, allow_nan=False), _orders, _orders)
def test_encode_decode_round_trip(value: float, wo: str, bo: str) -> None:
    """encode then decode gives the value back (float64, any order)."""
    words = encode(value, "float64", wo, bo)  # type: ignore[arg-type]
    assert decode(words, "float64", wo, bo) == value  # type: ignore[arg-type]


def refs(*spans: tuple[int, int], function: str = "holding") -> list[RegisterRef]:
    return [RegisterRef(i, function, a, c) for i, (a, c) in enumerate(spans)]  # type: ignore[arg-type]


def test_planner_merges_neighbours_and_gaps() -> None:
    """Registers 0-12 and a far one at 40 are two reads; small gaps are read across."""
    plan = plan_reads(refs((0, 2), (2, 2), (8, 1), (12, 1), (40, 2)), {**LIMITS, "holding": 20})
    assert plan == [ReadRequest("holding", 0, 13, (0, 1, 2, 3)),
                    ReadRequest("holding", 40, 2, (4,))]


def test_planner_respects_max_per_read() -> None:
    """No read is longer than the per-device maximum; a float is never split."""
    plan = plan_reads(refs(*[(2 * i, 2) for i in range(10)]), {**LIMITS, "holding": 5})
    assert [(r.address, r.count) for r in plan] == [(0, 4), (4, 4), (8, 4), (12, 4), (16, 4)]


def test_planner_never_reads_across_a_hole() -> None:
    """A declared hole splits the read even though the span would fit."""
    plan = plan_reads(refs((0, 2), (20, 2)), LIMITS, holes=[(13, 19)])
    assert [(r.address, r.count) for r in plan] == [(0, 2), (20, 2)]


def test_planner_keeps_functions_apart() -> None:
    """Holding registers and coils at the same addresses are separate reads."""
    plan = plan_reads([*refs((0, 1)), RegisterRef(1, "coil", 0, 1)], LIMITS)
    assert [(r.function, r.members) for r in plan] == [("holding", (0,)), ("coil", (1,))]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.sampled_from([1, 2, 4])), min_size=1,
                max_size=40), st.integers(4, 125))
def test_planner_invariants(spans: list[tuple[int, int]], limit: int) -> None:
    """Every register is in exactly one read, inside it, and no read exceeds the limit."""
    plan = plan_reads(refs(*spans), {**LIMITS, "holding": limit})
    seen = sorted(i for r in plan for i in r.members)
    assert seen == list(range(len(spans)))
    for r in plan:
        assert r.count <= limit
        for i in r.members:
            a, c = spans[i]
            assert r.address <= a and a + c <= r.address + r.count


def _cfg(register: str, extra: str = "") -> str:
    return f"""
[[sources]]
type = "modbus"
name = "etch1"
host = "127.0.0.1"
{extra}
[[sources.registers]]
{register}
"""


def test_config_error_names_source_and_register() -> None:
    """A zero scale is reported as source 'etch1': register 'chamber_temp': scale must not be 0."""
    with pytest.raises(ConfigError, match=r"source 'etch1': .*scale must not be 0"):
        loads(_cfg('name = "chamber_temp"\naddress = 0\ntype = "float32"\nscale = 0.0'))


def test_config_one_based_addresses_and_holes() -> None:
    """address_base = 1 shifts to wire addresses; a register inside a hole is an error."""
    cfg = loads(_cfg('name = "a"\naddress = 1', "address_base = 1")).sources[0]
    assert [(r.address, r.count) for r in cfg.plan()] == [(0, 1)]
    with pytest.raises(ConfigError, match="lies in a hole"):
        loads(_cfg('name = "a"\naddress = 5', "holes = [[4, 6]]"))
