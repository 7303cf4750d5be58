"""The delivery loop: ack after acceptance, dead letters, retry with backoff, isolation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.components import Rejection, WriteResult
from edge.errors import PermanentError, RetryableError
from edge.journal import Entry, Journal, JournalWriter, Kind
from edge.model import Quarantine, SampleBatch
from edge.sinks.delivery import Backoff, SinkState, deliver

FAST = Backoff(initial_s=0.001, max_s=0.01)


class ScriptedSink:
    """A sink whose answers are scripted per call: an exception, or seqs to reject."""

    def __init__(self, name: str, script: list[BaseException | set[int]] | None = None,
                 kinds: tuple[Kind, ...] = ("samples", "records")) -> None:
        self.name = name
        self.kinds = kinds
        self.script = list(script or [])
        self.accepted: list[int] = []
        self.calls = 0

    async def connect(self) -> None:
        return None

    async def write(self, entries: Sequence[Entry]) -> WriteResult:
        self.calls += 1
        step = self.script.pop(0) if self.script else set()
        if isinstance(step, BaseException):
            raise step
        self.accepted += [e.seq for e in entries if e.seq not in step]
        return WriteResult(tuple(Rejection(s, "bad", "body") for s in step))

    async def close(self) -> None:
        return None


def batch(n: int) -> SampleBatch:
    return SampleBatch(np.zeros(n), np.arange(n), np.ones(n))


async def run_until(writer: JournalWriter, sinks: list[ScriptedSink],
                    done: object, timeout: float = 5.0) -> list[SinkState]:
    states = [SinkState(s.name) for s in sinks]
    tasks = [asyncio.create_task(deliver(writer, s, state=st, backoff=FAST, idle_poll_s=0.005))
             for s, st in zip(sinks, states, strict=True)]
    deadline = time.monotonic() + timeout
    try:
        while not done(states):  # type: ignore[operator]
            assert time.monotonic() < deadline, "delivery did not finish"
            await asyncio.sleep(0.005)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return states


async def start(tmp_path: Path, sinks: list[str]) -> tuple[JournalWriter, asyncio.Task[None]]:
    w = JournalWriter(Journal(tmp_path / "j.db", sinks=sinks), commit_interval_s=0.001)
    return w, asyncio.create_task(w.run())


async def test_retry_then_ack_exactly_once(tmp_path: Path) -> None:
    """A retryable failure sends the same entries again; once accepted they are acked."""
    w, task = await start(tmp_path, ["s"])
    await w.append(batch(5))
    await w.append([Quarantine(1, "x", "r")])
    sink = ScriptedSink("s", [RetryableError("down"), RetryableError("down")])
    states = await run_until(w, [sink], lambda st: st[0].link_up and w.journal.cursor("s") == 2)
    assert sink.accepted == [1, 2] and sink.calls == 3
    assert w.journal.cursor("s") == 2 and w.journal.count() == 0
    assert states[0].link_up and states[0].delivered_points == 6
    await w.close()
    task.cancel()


async def test_rejected_entries_go_to_dead_letters_and_never_block(tmp_path: Path) -> None:
    """Rejected entries are dead-lettered with the peer's answer; the rest is delivered."""
    w, task = await start(tmp_path, ["s"])
    for _ in range(3):
        await w.append(batch(2))
    sink = ScriptedSink("s", [{2}])
    await run_until(w, [sink], lambda _st: w.journal.cursor("s") == 3)
    assert sink.accepted == [1, 3]
    [dl] = w.journal.dead_letters()
    assert (dl.seq, dl.reason, dl.body) == (2, "bad", "body")
    await w.close()
    task.cancel()


async def test_permanent_error_dead_letters_the_whole_call(tmp_path: Path) -> None:
    """PermanentError dead-letters every entry of that write and moves on."""
    w, task = await start(tmp_path, ["s"])
    await w.append(batch(2))
    sink = ScriptedSink("s", [PermanentError("422", body="no")])
    await run_until(w, [sink], lambda _st: w.journal.cursor("s") == 1)
    assert [d.seq for d in w.journal.dead_letters()] == [1]
    await w.close()
    task.cancel()


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    """A peer's Retry-After holds the retry back at least that long."""
    w, task = await start(tmp_path, ["s"])
    await w.append(batch(1))
    sink = ScriptedSink("s", [RetryableError("429", retry_after_s=0.3)])
    t0 = time.monotonic()
    await run_until(w, [sink], lambda _st: sink.accepted)
    assert time.monotonic() - t0 >= 0.3
    await w.close()
    task.cancel()


async def test_a_dead_sink_does_not_block_another(tmp_path: Path) -> None:
    """One sink failing forever does not stop the other from delivering everything."""
    w, task = await start(tmp_path, ["dead", "live"])
    for _ in range(20):
        await w.append(batch(3))
    dead = ScriptedSink("dead", [RetryableError("down")] * 10_000)
    live = ScriptedSink("live")
    states = await run_until(w, [dead, live],
                             lambda st: w.journal.cursor("live") == 20 and st[0].attempt > 0)
    assert len(live.accepted) == 20 and not dead.accepted
    assert not states[0].link_up and states[0].last_error == "down"
    assert w.journal.count() == 20, "entries stay until the dead sink acks them"
    await w.close()
    task.cancel()


class DroppingSink(ScriptedSink):
    """A session-oriented sink: connect opens a session; a write on a session the peer
    dropped fails, and only a new connect gives a working one."""

    def __init__(self, name: str, drop_after: int) -> None:
        super().__init__(name)
        self.events: list[str] = []
        self.session = 0
        self.alive = False
        self.drop_after = drop_after
        self.by_session: dict[int, list[int]] = {}

    async def connect(self) -> None:
        self.session += 1
        self.alive = True
        self.events.append(f"connect {self.session}")

    async def write(self, entries: Sequence[Entry]) -> WriteResult:
        if not self.alive:
            self.events.append("write on a dead session")
            raise RetryableError("session lost")
        if len(self.accepted) == self.drop_after and self.session == 1:
            self.alive = False  # the peer dropped us in the middle of this write
            self.events.append("dropped")
            raise RetryableError("connection reset")
        self.accepted += [e.seq for e in entries]
        self.by_session.setdefault(self.session, []).extend(e.seq for e in entries)
        return WriteResult()

    async def close(self) -> None:
        self.alive = False
        self.events.append("close")


async def test_lost_link_closes_and_reconnects_the_sink(tmp_path: Path) -> None:
    """A write that fails with RetryableError closes the sink, backs off, connects again
    and re-sends the same entries on the new session: nothing lost, nothing twice."""
    w, task = await start(tmp_path, ["s"])
    await w.append(batch(2))
    sink = DroppingSink("s", drop_after=0)
    states = await run_until(w, [sink], lambda _st: w.journal.cursor("s") == 1)
    await w.append(batch(2))
    await run_until(w, [sink], lambda _st: w.journal.cursor("s") == 2)
    assert sink.events[:4] == ["connect 1", "dropped", "close", "connect 2"]
    assert "write on a dead session" not in sink.events
    assert sink.accepted == [1, 2] and sink.by_session[2][0] == 1
    assert states[0].link.name == "sink:s" and states[0].link_up
    await w.close()
    task.cancel()


async def test_a_records_sink_is_woken_by_the_commit_not_the_poll(tmp_path: Path) -> None:
    """An idle records-only sink gets a committed record at once, not after its poll."""
    w, task = await start(tmp_path, ["mes"])
    sink = ScriptedSink("mes", kinds=("records",))
    state = SinkState("mes")
    loop = asyncio.create_task(deliver(w, sink, state=state, backoff=FAST, idle_poll_s=30.0))
    try:
        for _ in range(100):  # until the loop is idle, waiting (bounded)
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        await w.append([Quarantine(1, "x", "r")])
        while not sink.accepted:
            assert time.monotonic() - t0 < 10.0, "the sink waited for its poll"
            await asyncio.sleep(0.005)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await w.close()
        task.cancel()
    assert sink.accepted == [1]
