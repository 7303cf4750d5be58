"""The link runtime: full-jitter backoff, transitions logged once, the typed link board."""

from __future__ import annotations

import asyncio
import random

import pytest
import structlog

from edge.errors import RetryableError
from edge.runtime.links import Backoff, LinkBoard
from edge.runtime.metrics import Metrics


def test_backoff_is_full_jitter_over_zero_to_cap() -> None:
    """Delays spread over the whole [0, cap] (full jitter), not only its upper half."""
    rng = random.Random(7)
    b = Backoff(initial_s=1.0, max_s=4.0)
    for attempt, cap in ((0, 1.0), (1, 2.0), (2, 4.0), (9, 4.0)):
        delays = [b.delay(attempt, rng) for _ in range(2000)]
        assert all(0.0 <= d <= cap for d in delays)
        assert min(delays) < cap * 0.05, "no short delays: not full jitter"
        assert max(delays) > cap * 0.95
        assert sum(d < cap / 2 for d in delays) > 800  # about half below the middle


def test_backoff_cap_is_capped_for_huge_attempts() -> None:
    """A link down for days never overflows the exponent; the cap holds."""
    assert Backoff(initial_s=0.2, max_s=5.0).cap(10_000) == 5.0


def test_transitions_logged_once_and_board_is_typed() -> None:
    """Up and down are each logged once per transition; the board holds state, since,
    last error and attempts; the one link metric follows."""
    metrics = Metrics()
    board = LinkBoard(metrics)
    link = board.open("sink:mes")
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            link.down(RetryableError("refused"))
        link.up()
        link.up()
        link.down("timeout")
    events = [e["event"] for e in logs if e["log_level"] in ("info", "warning")]
    assert events == ["link down", "link up", "link down"]
    st = board.states()["sink:mes"]
    assert (st.up, st.last_error, st.attempt) == (False, "timeout", 1)
    assert st.since > 0
    assert metrics.snapshot(["edge_link_up"])['edge_link_up{link="sink:mes"}'] == 0.0
    link.up()
    assert metrics.snapshot(["edge_link_up"])['edge_link_up{link="sink:mes"}'] == 1.0


def test_unproven_up_keeps_backing_off() -> None:
    """A link that connects but carries nothing keeps its attempt count (so its backoff
    grows); one that carried data starts over."""
    link = LinkBoard().open("source:etch1")
    link.down("refused")
    link.down("refused")
    link.up(proven=False)
    assert link.state.up and link.state.attempt == 2
    link.up()
    assert link.state.attempt == 0


def test_retry_after_hint_is_honoured_within_reason() -> None:
    """The peer's Retry-After lengthens the wait, capped."""
    link = LinkBoard().open("sink:mes", Backoff(initial_s=0.01, max_s=0.01))
    link.down("429")
    assert 7.0 <= link.delay(7.0) <= 7.0
    assert link.delay(1e9) == 600.0


async def test_run_reconnects_after_a_lost_session() -> None:
    """``run`` calls the session again after it raised or returned, with backoff between,
    and lets a bug (another exception) reach the supervisor."""
    link = LinkBoard().open("source:x", Backoff(initial_s=0.001, max_s=0.002))
    calls = 0

    async def session() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("refused")
        link.up()
        if calls == 2:
            return  # the peer closed the session
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await asyncio.wait_for(link.run(session), 5)
    assert calls == 3
    assert link.state.last_error == "session ended"
