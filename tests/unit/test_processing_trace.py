"""The digital-thread stage: one WaferStep per wafer that leaves a tool, with its telemetry."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from edge.errors import ConfigError
from edge.model import (
    InterlockTrip,
    Quality,
    Quarantine,
    Record,
    SampleBatch,
    SpcViolation,
    TagRegistry,
    WaferStep,
    decode_records,
    encode_records,
    record_to_builtins,
)
from edge.processing.trace import Trace, WaferTraceConfig

S = 1_000_000_000
T0 = 1_800_000_000 * S
POLL = S // 10


def _tags() -> TagRegistry:
    tags = TagRegistry()
    for name in ("chamber_temp", "lot", "wafer", "wafer_elapsed"):
        tags.add("etch1", name)
    tags.add("other", "x")
    return tags


class Tool:
    """A poller of the etch tool: one batch per poll, all registers at one timestamp."""

    def __init__(self, stage: Trace, tags: TagRegistry) -> None:
        self.stage, self.tags = stage, tags
        self.ids = [tags.id_of(f"etch1/{n}") for n in ("chamber_temp", "lot", "wafer",
                                                         "wafer_elapsed")]
        self.out: list[WaferStep] = []

    def poll(self, ts: int, temp: float, lot: int, wafer: int, elapsed: float,
             quality: int = 0, records: list[Record] | None = None) -> None:
        q = [quality] * 4
        v = [temp, lot, wafer, elapsed] if quality < 0x80 else [math.nan] * 4
        out = self.stage.process(SampleBatch(self.ids, [ts] * 4, v, q), records or [], ts)
        self.out += [r for r in out.records if isinstance(r, WaferStep)]


def _stage(**kw: object) -> tuple[Trace, TagRegistry]:
    tags = _tags()
    cfg = msgspec.convert({"name": "etch1", "wafer_tag": "etch1/wafer",
                           "lot_tag": "etch1/lot", **kw}, WaferTraceConfig)
    return Trace([cfg], tags), tags


def test_a_step_record_when_the_wafer_leaves_with_its_telemetry() -> None:
    """Wafer 1 polled 10 times then wafer 2: one step for 4711.01 from its first reading to
    the next wafer's, min/mean/max/last of each tool tag, Bad samples counted apart."""
    stage, tags = _stage()
    tool = Tool(stage, tags)
    for k in range(10):
        tool.poll(T0 + k * POLL, 180.0 + k, 4711, 1, 0.0)
    tool.poll(T0 + 10 * POLL, math.nan, 0, 0, 0, quality=Quality.BAD_TIMEOUT)
    assert tool.out == []
    tool.poll(T0 + 11 * POLL, 170.0, 4711, 2, 0.0)
    [step] = tool.out
    assert (step.tool, step.lot, step.wafer) == ("etch1", "4711", "4711.01")
    assert step.start_ns == step.first_seen_ns == T0 and step.end_ns == T0 + 11 * POLL
    temp = next(s for s in step.telemetry if s.tag == "etch1/chamber_temp")
    assert (temp.n, temp.min, temp.max, temp.last, temp.bad) == (10, 180.0, 189.0, 189.0, 1)
    assert temp.mean == pytest.approx(184.5)
    assert {s.tag for s in step.telemetry} == {"etch1/chamber_temp", "etch1/lot", "etch1/wafer",
                                               "etch1/wafer_elapsed"}


def test_elapsed_register_gives_the_tools_start_after_a_restart() -> None:
    """With elapsed_tag, a stage that first sees a wafer 30 s into it dates its start 30 s
    back (the gateway restarted mid-step) and says where its own view began."""
    stage, tags = _stage(elapsed_tag="etch1/wafer_elapsed")
    tool = Tool(stage, tags)
    tool.poll(T0, 180.0, 4711, 5, 30.0)
    tool.poll(T0 + POLL, 180.0, 4711, 5, 30.1)
    tool.poll(T0 + 20 * S + 30_000_000, 180.0, 4711, 6, 0.03)
    [step] = tool.out
    assert step.wafer == "4711.05" and step.start_ns == T0 - 30 * S
    assert step.first_seen_ns == T0 and step.end_ns == T0 + 20 * S


def test_trips_quarantines_and_spc_alarms_of_the_tool_go_to_the_step_they_happened_in() -> None:
    """A trip on the tool's tag, its quarantine and an SPC alarm land in the open step; an
    SPC signal (not an alarm) and another device's quarantine do not; records older than a
    wafer change in the same batch go to the old step."""
    stage, tags = _stage()
    tool = Tool(stage, tags)
    trip = InterlockTrip(ts_ns=T0 + POLL, interlock="ot", tag="etch1/chamber_temp",
                         condition="high", value=190.0, limit=188.0, action="etch1:stop",
                         action_ok=True, reaction_ns=1000)
    quar = Quarantine(ts_ns=T0 + POLL, source="ot", reason="tripped", where="etch1/chamber_temp")
    alien = Quarantine(ts_ns=T0 + POLL, source="cmm1", reason="bad row", where="other/x")
    alarm = SpcViolation(ts_ns=T0 + POLL, tag="etch1/chamber_temp", rule="ewma", value=1.0,
                         center=0.0, sigma=1.0, alarm=True)
    signal = msgspec.structs.replace(alarm, alarm=False, rule="we2")
    tool.poll(T0, 180.0, 4711, 1, 0.0)
    tool.poll(T0 + POLL, 190.0, 4711, 1, 0.1, records=[trip, quar, alien, alarm, signal])
    late_trip = msgspec.structs.replace(trip, ts_ns=T0 + 2 * POLL)
    ids = tool.ids
    batch = SampleBatch(ids * 2, [T0 + 2 * POLL] * 4 + [T0 + 3 * POLL] * 4,
                        [181.0, 4711, 1, 0.2, 180.0, 4711, 2, 0.0])
    out = stage.process(batch, [late_trip], T0 + 3 * POLL)
    [step] = [r for r in out.records if isinstance(r, WaferStep)]
    assert step.trips == [trip, late_trip] and step.quarantines == [quar]
    assert step.spc_alarms == [alarm] and step.dropped == 0
    temp = next(s for s in step.telemetry if s.tag == "etch1/chamber_temp")
    assert (temp.n, temp.max, temp.last) == (3, 190.0, 181.0)
    assert late_trip in out.records  # the stage passes every record on


def test_bad_readings_never_change_the_wafer_and_a_lot_change_ends_a_step() -> None:
    """A Bad wafer reading (NaN) is no wafer change; the same slot in a new lot is."""
    stage, tags = _stage()
    tool = Tool(stage, tags)
    tool.poll(T0, 180.0, 4711, 25, 0.0)
    tool.poll(T0 + POLL, 0, 0, 0, 0, quality=Quality.BAD_NOT_CONNECTED)
    tool.poll(T0 + 2 * POLL, 180.0, 4711, 25, 0.0)
    assert tool.out == []
    tool.poll(T0 + 3 * POLL, 180.0, 4712, 25, 0.0)
    assert [s.wafer for s in tool.out] == ["4711.25"]


def test_a_step_record_travels_to_the_journal_and_the_mes_as_json() -> None:
    """WaferStep round-trips through msgpack (the journal), and its JSON has the nested
    trips with their own type and NaN summaries as null."""
    stage, tags = _stage()
    tool = Tool(stage, tags)
    tool.poll(T0, 180.0, 4711, 1, 0.0, quality=Quality.BAD_TIMEOUT)
    tool.poll(T0 + POLL, 180.0, 4711, 1, 0.0)
    tool.poll(T0 + 2 * POLL, 180.0, 4711, 2, 0.0)
    [step] = tool.out
    assert decode_records(encode_records([step])) == [step]
    doc = msgspec.json.decode(msgspec.json.encode(record_to_builtins(step, "gw-1-0")))
    assert doc["type"] == "wafer_step" and doc["wafer"] == "4711.01"


def test_config_errors_name_the_tool_and_the_key() -> None:
    """An undeclared tag and a tool configured twice are errors naming the tool."""
    tags = _tags()
    cfg = msgspec.convert({"name": "etch9", "wafer_tag": "etch9/wafer"}, WaferTraceConfig)
    with pytest.raises(ConfigError, match="wafer_steps 'etch9': wafer_tag: tag 'etch9/wafer'"):
        Trace([cfg], tags)
    ok = msgspec.convert({"name": "etch1", "wafer_tag": "etch1/wafer"}, WaferTraceConfig)
    with pytest.raises(ConfigError, match="'etch1' configured twice"):
        Trace([ok, ok], tags)
    with pytest.raises(msgspec.ValidationError, match="lot_tag must be 'device/name'"):
        msgspec.convert({"name": "e", "wafer_tag": "e/w", "lot_tag": "lot"}, WaferTraceConfig)


def test_summary_tags_default_to_the_wafer_tags_device() -> None:
    """Without ``tags`` the summary covers every tag of the tool's device, no other."""
    stage, tags = _stage()
    assert stage.tools[0].keys == ["etch1/chamber_temp", "etch1/lot", "etch1/wafer",
                                   "etch1/wafer_elapsed"]
    assert np.all(stage.tools[0].sum_ids < tags.id_of("other/x"))


def test_a_batch_of_many_readings_per_tag_is_summarised_like_each_reading_alone() -> None:
    """A file-sized batch (many readings per tag, out of order, Bad and NaN among them, a
    tag listed twice in ``tags``) gives the same step summary, to the bit, as a direct
    count over its Good finite readings."""
    tags = _tags()
    cfg = msgspec.convert({"name": "etch1", "wafer_tag": "etch1/wafer",
                           "tags": ["etch1/chamber_temp", "other/x", "etch1/chamber_temp"]},
                          WaferTraceConfig)
    stage = Trace([cfg], tags)
    temp, wafer, x = (tags.id_of(k) for k in ("etch1/chamber_temp", "etch1/wafer", "other/x"))
    rng = np.random.default_rng(7)
    n = 200
    ts = T0 + rng.permutation(n).astype(np.int64) * POLL
    tid = rng.choice([temp, x], n).astype(np.int32)
    val = rng.normal(180.0, 30.0, n)
    val[::17] = math.nan
    q = np.where(np.arange(n) % 13 == 0, int(Quality.BAD_TIMEOUT), 0).astype(np.uint8)
    start = SampleBatch([wafer], [T0 - POLL], [1.0])
    stage.process(start, [], T0)
    stage.process(SampleBatch(tid, ts, val, q), [], T0)
    out = stage.process(SampleBatch([wafer], [T0 + n * POLL], [2.0]), [], T0)
    [step] = [r for r in out.records if isinstance(r, WaferStep)]
    order = np.argsort(ts, kind="stable")
    for key, tag in [("etch1/chamber_temp", temp), ("other/x", x)]:
        rows = order[tid[order] == tag]
        good = val[rows][(q[rows] < 0x80) & np.isfinite(val[rows])]
        want = (good.shape[0], float(good.sum()) / good.shape[0], float(good.min()),
                float(good.max()), float(good[-1]), int(np.count_nonzero(q[rows] >= 0x80)))
        got = [(s.n, s.mean, s.min, s.max, s.last, s.bad) for s in step.telemetry
               if s.tag == key]
        assert got == [want] * (2 if key == "etch1/chamber_temp" else 1)
