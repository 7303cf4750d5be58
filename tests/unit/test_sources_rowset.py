"""The file source's rows-seen set: every row added is found, others are not."""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sources.file.rowset import MERGE_AT, RowSet


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=3 * MERGE_AT // 2),
       st.lists(st.binary(max_size=40), max_size=50))
def test_rows_added_are_found_and_others_are_not(added: list[bytes],
                                                 others: list[bytes]) -> None:
    """Duplicate detection misses no repeated row and flags no new one, across merges."""
    rows = RowSet()
    rows.update(added)
    assert all(line in rows for line in added)
    assert not any(line in rows for line in others if line not in set(added))
    assert len(rows) == len(set(added))


def test_at_most_merge_at_hashes_are_visible_to_the_garbage_collector() -> None:
    """A file of 100,000 rows leaves the collector fewer than MERGE_AT entries to walk."""
    rows = RowSet()
    rows.update(b"2026-11-22T00:00:%06d,20.%d" % (i, i) for i in range(100_000))
    containers = [o for o in gc.get_referents(rows) if gc.is_tracked(o) and not isinstance(o, type)]
    assert sum(len(o) for o in containers) < MERGE_AT  # what a collection walks
    assert b"2026-11-22T00:00:099999,20.99999" in rows
    assert b"2026-11-22T00:00:100000,20.100000" not in rows
