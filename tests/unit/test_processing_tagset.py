"""TagSet answers membership like np.isin, for ids inside and above its members."""

from __future__ import annotations

import numpy as np

from edge.processing.tagset import TagSet


def test_membership_equals_isin_for_any_ids() -> None:
    """Members, non-members between them, ids far above every member, and no members."""
    rng = np.random.default_rng(7)
    members = np.array([3, 5, 17], np.int32)
    ids = np.concatenate([rng.integers(0, 40, 500), [0, 3, 17, 18, 10_000]]).astype(np.int32)
    assert (TagSet(members).contains(ids) == np.isin(ids, members)).all()
    assert not TagSet(np.empty(0, np.int32)).contains(ids).any()
