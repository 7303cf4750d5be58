"""Clock-jump detection: jumps forward and back are quarantined with a reason, late
bursts pass with their own timestamps, and every sample leaves the stage exactly once."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from edge.errors import ConfigError
from edge.model import Quarantine, SampleBatch, TagRegistry
from edge.processing.clock import ClockCheck, ClockCheckConfig

S = 1_000_000_000
H = 3600 * S
T0 = 1_800_000_000 * S
TICK = S // 10


def _stage(**kw: object) -> tuple[ClockCheck, TagRegistry]:
    tags = TagRegistry()
    tags.add("smelter_1", "temp")
    tags.add("smelter_1", "power")
    tags.add("other", "x")
    cfg = msgspec.convert({"name": "clocks", "devices": ["smelter_1"], **kw}, ClockCheckConfig)
    return ClockCheck([cfg], tags), tags


class Run:
    """Feeds one sample per tick (arrival = true time), records what comes out."""

    def __init__(self, stage: ClockCheck) -> None:
        self.stage = stage
        self.kept: list[tuple[int, float]] = []
        self.quarantined: list[tuple[int, float, str]] = []

    def feed(self, now: int, ts: list[int], values: list[float], tag: int = 0) -> None:
        out = self.stage.process(SampleBatch([tag] * len(ts), ts, values), [], now)
        self._take(out.batch, out.records)
        self._take(*self._tick(now))

    def _tick(self, now: int) -> tuple[SampleBatch, list[object]]:
        out = self.stage.tick(now)
        return out.batch, list(out.records)

    def _take(self, batch: SampleBatch, records: list[object]) -> None:
        self.kept += list(zip(batch.ts_ns.tolist(), batch.value.tolist(), strict=True))
        for r in records:
            assert isinstance(r, Quarantine)
            self.quarantined += [(s.ts_ns, s.value, r.reason) for s in r.evidence]


def test_a_clock_that_jumps_ahead_is_quarantined_until_it_is_back() -> None:
    """Samples stamped an hour ahead are set aside with a clock_jump reason naming the
    device and the size; before and after, everything is kept."""
    stage, _ = _stage()
    run = Run(stage)
    for k in range(50):
        now = T0 + k * TICK
        shift = H if 10 <= k < 30 else 0
        run.feed(now, [now + shift], [float(k)])
    assert [v for _, v in run.kept] == [float(k) for k in range(50) if not 10 <= k < 30]
    assert [v for _, v, _ in run.quarantined] == [float(k) for k in range(10, 30)]
    assert run.quarantined[0][2].startswith(
        "clock_jump: smelter_1 clock 3600.0 s ahead of the gateway clock")


def test_a_clock_that_jumps_back_is_told_from_late_data_by_its_pace() -> None:
    """An hour back at real-time pace for 3 s: held, then quarantined (held ones too),
    reason 'behind'; after it, samples are kept again."""
    stage, _ = _stage(confirm_s=1.0)
    run = Run(stage)
    for k in range(60):
        now = T0 + k * TICK
        shift = -H if 20 <= k < 50 else 0
        run.feed(now, [now + shift], [float(k)])
    assert [v for _, v in run.kept] == [float(k) for k in range(60) if not 20 <= k < 50]
    assert sorted(v for _, v, _ in run.quarantined) == [float(k) for k in range(20, 50)]
    assert "3600.0 s behind the gateway clock" in run.quarantined[0][2]


def test_a_late_burst_out_of_order_is_kept_with_its_own_timestamps() -> None:
    """A buffered burst from 3 h ago, shuffled, between live samples: every sample kept
    exactly once, with the timestamps it came with, nothing quarantined."""
    stage, _ = _stage()
    run = Run(stage)
    rng = np.random.default_rng(1)
    burst = [T0 - 3 * H + i * TICK for i in range(40)]
    rng.shuffle(burst)
    for k in range(30):
        now = T0 + k * TICK
        run.feed(now, [now], [1.0])
        if k in (10, 11):  # the burst comes in two batches
            part = burst[:20] if k == 10 else burst[20:]
            run.feed(now, part, [2.0] * 20)
    assert run.quarantined == []
    assert sorted(ts for ts, v in run.kept if v == 2.0) == sorted(burst)
    assert len(run.kept) == 70


def test_a_single_late_sample_is_released_after_confirm_s_by_tick() -> None:
    """One message from an hour ago, alone: held, then let through as late data by the
    tick once confirm_s has passed (it did not keep pace like a clock)."""
    stage, _ = _stage(confirm_s=1.0)
    run = Run(stage)
    out = stage.process(SampleBatch([0], [T0 - H], [5.0]), [], T0)
    assert len(out.batch) == 0 and not out.records
    run._take(*run._tick(T0 + S // 2))
    assert run.kept == []
    run._take(*run._tick(T0 + 2 * S))
    assert run.kept == [(T0 - H, 5.0)]


def test_other_devices_pass_untouched_and_config_errors_name_the_check() -> None:
    """Samples of an unwatched device are not judged; unknown or doubly watched devices
    are config errors."""
    stage, tags = _stage()
    out = stage.process(SampleBatch([2], [T0 + H], [1.0]), [], T0)
    assert len(out.batch) == 1 and not out.records
    cfg = msgspec.convert({"name": "c2", "devices": ["nope"]}, ClockCheckConfig)
    with pytest.raises(ConfigError, match="clock_checks 'c2': devices: no source declares"):
        ClockCheck([cfg], tags)
    one = msgspec.convert({"name": "a", "devices": ["smelter_1"]}, ClockCheckConfig)
    two = msgspec.convert({"name": "b", "devices": ["smelter_1"]}, ClockCheckConfig)
    with pytest.raises(ConfigError, match="already watched by clock_checks 'a'"):
        ClockCheck([one, two], tags)


def test_a_late_sample_held_when_a_jump_back_starts_is_kept_and_the_jump_quarantined() -> None:
    """A sample from 3 h ago arrives just before the clock jumps an hour back: the late
    one is kept, every jumped one quarantined (the two are judged apart)."""
    stage, _ = _stage(confirm_s=1.0)
    run = Run(stage)
    for k in range(40):
        now = T0 + k * TICK
        if k == 9:
            run.feed(now, [now - 3 * H], [-1.0])
        shift = -H if 10 <= k < 30 else 0
        run.feed(now, [now + shift], [float(k)])
    assert (T0 + 9 * TICK - 3 * H, -1.0) in run.kept
    assert sorted(v for _, v, _ in run.quarantined) == [float(k) for k in range(10, 30)]
    assert len(run.kept) == 21


def test_a_jump_that_arrives_all_at_once_after_a_stall_is_still_quarantined() -> None:
    """The gateway stalled: 2 s of an hour-back clock and the samples after it (clock
    fixed) arrive in one batch; the jumped ones are quarantined, the rest kept."""
    stage, _ = _stage(confirm_s=1.0)
    run = Run(stage)
    run.feed(T0, [T0], [0.0])
    ts = [T0 + k * TICK - (H if k <= 20 else 0) for k in range(1, 26)]
    run.feed(T0 + 26 * TICK, ts, [float(k) for k in range(1, 26)])
    run._take(*run._tick(T0 + 26 * TICK + 2 * S))  # the stage's ticks go on
    assert sorted(v for _, v, _ in run.quarantined) == [float(k) for k in range(1, 21)]
    assert [v for _, v in run.kept] == [0.0, 21.0, 22.0, 23.0, 24.0, 25.0]


def test_watched_devices_in_one_batch_are_judged_each_apart() -> None:
    """In a batch that mixes two watched devices and others, only the device whose clock
    jumped is quarantined; the rest passes, unwatched samples (ids above every watched
    one too) untouched."""
    tags = TagRegistry()
    for dev, name in [("press_1", "force"), ("oven_2", "temp"), ("press_1", "speed"),
                      ("scale", "w")]:
        tags.add(dev, name)
    cfg = msgspec.convert({"name": "clocks", "devices": ["press_1", "oven_2"]},
                          ClockCheckConfig)
    stage = ClockCheck([cfg], tags)
    batch = SampleBatch([0, 1, 2, 3, 1, 0], [T0, T0 + H, T0, T0 + H, T0 + H, T0],
                        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    out = stage.process(batch, [], T0)
    assert sorted(zip(out.batch.tag_id.tolist(), out.batch.value.tolist(), strict=True)) == [
        (0, 1.0), (0, 6.0), (2, 3.0), (3, 4.0)]
    (q,) = out.records
    assert isinstance(q, Quarantine) and q.where == "oven_2"
    assert [s.value for s in q.evidence] == [2.0, 5.0]
