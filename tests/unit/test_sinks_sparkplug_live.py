"""Unit tests of the Sparkplug live-path ledger: which journaled values the replay skips."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge.sinks.sparkplug_live import LiveLedger


def test_only_values_sent_live_on_this_connection_are_skipped() -> None:
    """A value handled while born is skipped by the replay; one seen before the births
    (it never went out) is replayed, even when the live path later sends newer ones."""
    ledger = LiveLedger()
    assert ledger.handled(7, 100, born=False) is False  # broker away: journal only
    ledger.births()
    assert ledger.handled(7, 100, born=True)  # the same timestamp again, now born
    assert ledger.handled(7, 200, born=True)
    assert not ledger.went_live(7, 100)  # at or below the floor: it never went out
    assert ledger.went_live(7, 150) and ledger.went_live(7, 200)
    assert not ledger.went_live(7, 201) and not ledger.went_live(8, 150)


def test_new_births_forget_what_went_out_on_the_last_connection() -> None:
    """After a lost connection and new births, nothing counts as sent live any more:
    whatever the last connection may have lost is replayed as historical."""
    ledger = LiveLedger()
    ledger.births()
    ledger.handled(1, 10, born=True)
    ledger.sent[1] = 3.0
    ledger.births()
    assert not ledger.went_live(1, 10) and ledger.sent == {}
    ledger.handled(1, 5, born=True)  # older than the floor: never taken for a live one
    assert not ledger.went_live(1, 5) and not ledger.went_live(1, 10)


@given(st.lists(st.tuples(st.sampled_from(["births", "lost", "-"]), st.integers(1, 50)),
                max_size=60))
def test_a_value_never_sent_live_is_never_skipped(steps: list[tuple[str, int]]) -> None:
    """Any mix of births, lost connections and values (timestamps rising): every value
    handled while not born, or sent live on an earlier connection, is still replayed."""
    ledger = LiveLedger()
    ts, born = 0, False
    replay: list[int] = []  # journaled, not sent live on the current connection
    for event, gap in steps:
        if event == "births":
            ledger.births()
            born = True
            replay = list(range(1, ts + 1))  # all earlier values may be unacknowledged
        elif event == "lost":
            born = False
        ts += gap
        if not ledger.handled(0, ts, born):
            replay.append(ts)
    assert not [t for t in replay if ledger.went_live(0, t)]
