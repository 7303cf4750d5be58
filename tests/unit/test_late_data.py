"""Late and out-of-order data: kept with its own timestamps, delivered, never "too old",
and never shown as the current value in place of a newer one."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.journal import Journal
from edge.model import SampleBatch, TagRegistry
from edge.sinks.latest import newest
from edge.sinks.lineproto import SampleEncoder
from edge.web.tags import LatestTags

H = 3600 * 1_000_000_000


def test_journal_keeps_samples_older_than_its_age_limit_that_arrive_now(tmp_path: Path) -> None:
    """A burst from 8 days ago (beyond max_age 7 days) appended now is not evicted by the
    age limit: age counts from when the gateway stored it, and it is read back as sent."""
    j = Journal(tmp_path / "j.db", sinks=["influx"])
    now = time.time_ns()
    old = SampleBatch([0, 0, 0], [now - 200 * H, now - 195 * H, now - 199 * H], [1.0, 2.0, 3.0])
    j.append([old])
    assert not j.expire(now)
    [entry] = j.read("influx").entries
    assert entry.samples() == old
    j.close()


def test_line_protocol_writes_late_samples_with_their_own_timestamps() -> None:
    """Out-of-order samples from hours ago become lines stamped with their own times."""
    tags = TagRegistry()
    tags.add("smelter_1", "temp")
    now = time.time_ns()
    ts = [now - 3 * H, now - 4 * H]
    text = SampleEncoder(tags, {"gateway": "gw"}).encode(SampleBatch([0, 0], ts, [1.5, 2.5]))
    assert [int(line.rsplit(" ", 1)[1]) for line in text.splitlines()] == ts


def test_live_view_keeps_the_newest_value_when_a_late_burst_arrives() -> None:
    """The web page's (and OPC-UA's) current value stays the newest: a burst from hours
    ago, out of order, does not replace it; a value from a future clock is replaced."""
    tags = TagRegistry()
    tags.add("smelter_1", "temp")
    live = LatestTags(tags)
    now = time.time_ns()
    live.publish(SampleBatch([0], [now], [700.0]))
    live.publish(SampleBatch([0, 0, 0], [now - 2 * H, now - 3 * H, now - H], [1.0, 2.0, 3.0]))
    [row] = live.search()["tags"]
    assert row["value"] == 700.0 and row["ts_ns"] == now
    live.publish(SampleBatch([0], [now + 5 * H], [9.0]))  # a clock that jumped ahead
    live.publish(SampleBatch([0], [now + 1], [701.0]))
    assert live.search()["tags"][0]["value"] == 701.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 5), st.integers(0, 20)), max_size=40),
       st.lists(st.integers(0, 25), min_size=5, max_size=5))
def test_newest_matches_a_naive_loop(rows: list[tuple[int, int]], shown: list[int]) -> None:
    """``newest`` equals a per-row loop: the newest sample per known tag (last among
    equal timestamps), taken only if not older than the shown one."""
    batch = SampleBatch([r[0] for r in rows], [r[1] for r in rows], np.arange(len(rows)))
    shown_ts = np.array(shown, np.int64)
    want: dict[int, int] = {}
    for i, (tag, ts) in enumerate(rows):
        if 0 <= tag < 5 and (tag not in want or ts >= rows[want[tag]][1]):
            want[tag] = i
    want = {t: i for t, i in want.items() if rows[i][1] >= shown[t]}
    ids, got = newest(batch, shown_ts, now_ns=10**9)
    assert dict(zip(ids.tolist(), got.tolist(), strict=True)) == want
