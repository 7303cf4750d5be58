"""The fast lane: sources run on a second loop as if they ran under the supervisor."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from edge.components import StageOutput
from edge.model import Record, SampleBatch
from edge.runtime.fastlane import FastLane, LockedStage


@pytest.fixture
def lane() -> Iterator[FastLane]:
    lane = FastLane("test-lane")
    lane.start()
    yield lane
    lane.stop()


async def test_call_runs_on_the_lane_thread_and_returns(lane: FastLane) -> None:
    """A source run through the lane runs on the lane's thread, not the caller's."""
    seen: list[str] = []

    async def source() -> None:
        seen.append(threading.current_thread().name)

    await asyncio.wait_for(lane.call(source), 5)
    assert seen == ["test-lane"]


async def test_call_raises_the_sources_crash_here(lane: FastLane) -> None:
    """A source that crashes on the lane raises in the supervisor's task, so it restarts."""
    async def source() -> None:
        raise RuntimeError("device map broken")

    with pytest.raises(RuntimeError, match="device map broken"):
        await asyncio.wait_for(lane.call(source), 5)


async def test_cancel_waits_until_the_source_has_cleaned_up(lane: FastLane) -> None:
    """Cancelling returns only after the source's finally ran: shutdown flushes the
    journal after the last batch a lane source handed over, never before."""
    started = threading.Event()
    cleaned = threading.Event()

    async def source() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.05)  # e.g. closing a device connection
            cleaned.set()

    task = asyncio.ensure_future(lane.call(source))
    assert await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert cleaned.is_set()


class _Counting:
    name = "interlock"
    rules: ClassVar[dict[str, int]] = {"a": 1}

    def __init__(self) -> None:
        self.inside = 0
        self.overlaps = 0

    def process(self, batch: SampleBatch, records: list[Record], now_ns: int) -> StageOutput:
        self.inside += 1
        if self.inside > 1:
            self.overlaps += 1
        for _ in range(2000):  # long enough for the other thread to try to enter
            pass
        self.inside -= 1
        return StageOutput(batch, list(records))

    def reset(self, name: str, now_ns: int) -> bool:
        return name == "a"


def test_locked_stage_never_runs_two_calls_at_once() -> None:
    """The interlock stage shared by both loops is entered by one thread at a time; its
    other methods and attributes pass through."""
    inner = _Counting()
    stage = LockedStage(inner)

    def hammer() -> None:
        for _ in range(300):
            stage.process(SampleBatch.empty(), [], 0)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inner.overlaps == 0
    assert stage.reset("a", 0) is True
    assert stage.rules == {"a": 1}


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="Linux scheduling only")
async def test_lane_thread_runs_real_time_when_allowed() -> None:
    """With the right (root here, LimitRTPRIO= under systemd) the lane's thread is
    SCHED_FIFO at the configured priority, and only that thread."""
    if os.geteuid() != 0 and _rtprio_limit() < 7:
        pytest.skip("no RLIMIT_RTPRIO and not root")
    lane = FastLane("rt-lane", rt_priority=7)
    lane.start()
    try:
        seen: list[tuple[int, int]] = []

        async def source() -> None:
            seen.append((os.sched_getscheduler(0), os.sched_getparam(0).sched_priority))

        await asyncio.wait_for(lane.call(source), 5)
        assert lane.rt
        assert seen == [(os.SCHED_FIFO, 7)]
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this thread: unchanged
    finally:
        lane.stop()


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="Linux scheduling only")
async def test_lane_runs_at_normal_priority_when_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused (no capability, no rlimit): the lane still runs, and says why and how."""
    def refuse(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    lane = FastLane("plain-lane", rt_priority=10)
    lane.start()
    try:
        ran: list[bool] = []

        async def source() -> None:
            ran.append(True)

        await asyncio.wait_for(lane.call(source), 5)
        assert ran == [True]
        assert not lane.rt
    finally:
        lane.stop()


def _rtprio_limit() -> int:
    import resource

    return int(resource.getrlimit(resource.RLIMIT_RTPRIO)[0])
