"""Unit tests of the Modbus codec, the read planner, the schedule, the source config and one
poll against a fake client (no sockets)."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse
from pymodbus.pdu.bit_message import ReadCoilsResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

from edge.components import BuildContext
from edge.config import loads
from edge.errors import ConfigError
from edge.model import Quality, Record, SampleBatch, TagRegistry
from edge.protocols.modbus.codec import Decoder, Field, decode, encode
from edge.protocols.modbus.plan import Function, ReadRequest, RegisterRef, plan_reads
from edge.runtime.metrics import Metrics
from edge.sources.schedule import next_tick

LIMITS: dict[Function, int] = {"holding": 125, "input": 125, "coil": 2000, "discrete": 2000}


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
    assert list(dec.decode(words)) == [10.0]


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
    """The per-read decoder gives bit-identical values to the scalar reference on random words."""
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


_scales = st.sampled_from([(1.0, 0.0), (2.0, 1.0), (0.1, -5.0), (-3.5, 1e6)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_types, _orders, _orders, st.integers(0, 12), _scales),
                min_size=1, max_size=8), st.integers(0, 2**32 - 1))
def test_decoder_with_gaps_and_overlaps_matches_reference(
    specs: list[tuple[str, str, str, int, tuple[float, float]]], seed: int
) -> None:
    """Fields anywhere in a read (gaps, shared registers, any scale) decode as the reference."""
    fields = [Field(at, rtype, wo, bo, s, o)  # type: ignore[arg-type]
              for rtype, wo, bo, at, (s, o) in sorted(specs, key=lambda x: x[3])]
    span = max(f.offset + {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2,
                           "float64": 4}[f.rtype] for f in fields)
    words = np.random.default_rng(seed).integers(0, 65536, span + 2).tolist()
    got = Decoder(fields).decode(words)
    ref = [decode(words[f.offset:], f.rtype, f.word_order, f.byte_order, f.scale,
                  f.value_offset) for f in fields]
    np.testing.assert_array_equal(np.array(got), np.array(ref))


def test_bit_decoder_reads_coils_at_their_offsets() -> None:
    """Coils/discrete inputs decode to 0.0/1.0 at their bit offsets, scaled."""
    dec = Decoder([Field(0, "bool"), Field(3, "bool"),
                   Field(9, "bool", scale=2.0, value_offset=1.0)])
    bits = [True, False, False, False, True, False, False, False, False, True]
    assert dec.decode(bits) == [1.0, 0.0, 3.0]


def test_decoder_rejects_short_or_impossible_answers() -> None:
    """A short read or a word outside 0..65535 is a ValueError (a Bad sample), never a value."""
    dec = Decoder([Field(0, "float32"), Field(2, "uint16")])
    with pytest.raises(ValueError, match="expected 3"):
        dec.decode([0x4120, 0])
    with pytest.raises(ValueError, match="out of range"):
        dec.decode([0x4120, 0, 70000])


def test_schedule_keeps_ticks_and_skips_missed_ones() -> None:
    """On time: the next tick. Late by 2.5 intervals: the ticks passed are skipped and counted."""
    assert next_tick(0, 100.0, 0.1, 100.05) == (1, 0)
    assert next_tick(4, 100.0, 0.1, 100.72) == (8, 3)  # ticks 5, 6, 7 passed while poll 4 ran


@given(st.integers(0, 10**6), st.floats(1e-6, 10.0), st.floats(0.0, 1e3))
def test_schedule_never_drifts_nor_bursts(k: int, interval: float, late: float) -> None:
    """The next poll is on the tick grid, after the previous one, and not already past."""
    t0 = 1000.0
    now = t0 + k * interval + late
    nxt, missed = next_tick(k, t0, interval, now)
    assert nxt > k and missed == nxt - k - 1 >= 0
    assert t0 + nxt * interval >= now - 1e-9 * max(1.0, now)
    assert missed == 0 or t0 + (nxt - 1) * interval <= now + 1e-9 * max(1.0, now)


class _FakeDevice:
    """Stands in for the pymodbus client: holding 0-3 (two float32), coils 0-1, input 10."""

    def __init__(self) -> None:
        self.fail: dict[str, Exception | int] = {}  # method -> raised exception / exc. code

    async def _answer(self, method: str, pdu: Any) -> Any:
        fail = self.fail.get(method)
        if isinstance(fail, Exception):
            raise fail
        if fail is not None:
            return ExceptionResponse(3, fail)
        return pdu

    async def read_holding_registers(self, address: int, count: int, device_id: int) -> Any:
        regs = encode(21.5, "float32") + encode(-1.25, "float32", "little", "little")
        return await self._answer("read_holding_registers", ReadHoldingRegistersResponse(
            registers=regs[address : address + count], dev_id=device_id))

    async def read_coils(self, address: int, count: int, device_id: int) -> Any:
        bits = ([False, True] + [False] * 14)[address : address + count]
        return await self._answer("read_coils", ReadCoilsResponse(
            bits=bits + [False] * (-len(bits) % 8), dev_id=device_id))

    async def read_input_registers(self, address: int, count: int, device_id: int) -> Any:
        return await self._answer("read_input_registers", ReadInputRegistersResponse(
            registers=[0xFFFE], dev_id=device_id))


async def _poll_with(device: _FakeDevice, tmp_path: Path) -> tuple[SampleBatch, str, Metrics]:
    cfg = loads(_cfg(
        'name = "t"\naddress = 0\ntype = "float32"\n'
        '[[sources.registers]]\nname = "p"\naddress = 2\ntype = "float32"\n'
        'word_order = "little"\nbyte_order = "little"\n'
        '[[sources.registers]]\nname = "run"\naddress = 1\nfunction = "coil"\n'
        '[[sources.registers]]\nname = "i"\naddress = 10\nfunction = "input"\ntype = "int16"\n'
        'scale = 0.5',
    )).sources[0]
    tags, metrics = TagRegistry(), Metrics()
    cfg.declare_tags(tags)
    src = cfg.build(BuildContext("gw", tags, metrics, tmp_path, lambda n: ""))
    got: list[SampleBatch] = []

    async def emit(batch: SampleBatch | None, records: Sequence[Record]) -> None:
        assert batch is not None
        got.append(batch)

    _, lost = await src._poll_once(device, emit)  # type: ignore[arg-type]
    names = [tags[int(t)].key for t in got[0].tag_id]
    assert names == ["etch1/t", "etch1/p", "etch1/i", "etch1/run"]
    return got[0], lost, metrics


async def test_poll_decodes_every_read_of_a_device(tmp_path: Path) -> None:
    """Holding, input and coil reads of one poll land in one batch, decoded and Good."""
    batch, lost, metrics = await _poll_with(_FakeDevice(), tmp_path)
    assert lost == "" and batch.value.tolist() == [21.5, -1.25, -1.0, 1.0]
    assert batch.quality.tolist() == [0, 0, 0, 0] and len(set(batch.ts_ns.tolist())) == 1
    assert metrics.snapshot()['edge_source_received_total{source="etch1"}'] == 4


async def test_poll_marks_only_the_failed_read_bad(tmp_path: Path) -> None:
    """An exception reply makes that read's samples NaN/BAD_DEVICE_EXCEPTION; others stay Good."""
    device = _FakeDevice()
    device.fail["read_input_registers"] = 2
    batch, lost, metrics = await _poll_with(device, tmp_path)
    assert lost == "" and batch.quality.tolist() == [0, 0, Quality.BAD_DEVICE_EXCEPTION, 0]
    assert math.isnan(batch.value[2]) and batch.value[[0, 1, 3]].tolist() == [21.5, -1.25, 1.0]
    snap = metrics.snapshot()
    assert snap['edge_source_rejected_total{reason="device_exception",source="etch1"}'] == 1


async def test_poll_timeout_marks_the_rest_of_the_poll_bad(tmp_path: Path) -> None:
    """A timeout loses the link: that read and every later one are NaN/BAD_TIMEOUT."""
    device = _FakeDevice()
    device.fail["read_holding_registers"] = ModbusIOException("no answer")
    batch, lost, metrics = await _poll_with(device, tmp_path)
    assert lost == "timeout" and batch.quality.tolist() == [Quality.BAD_TIMEOUT] * 4
    assert all(math.isnan(v) for v in batch.value.tolist())
    assert metrics.snapshot()['edge_source_rejected_total{reason="timeout",source="etch1"}'] == 4
