"""Which values the Sparkplug sink's live path sent on the current connection, so the
journal replay sends every other one (as historical) and none of those twice live.

Keys are tag ids, and -1, -2, ... for the judgement metrics (records).

Invariants:

* ``sent``: the last value published live per tag since the births (report by
  exception: an unchanged value is not sent again). Cleared by ``births``.
* ``live``: per key, the ``[first, last]`` timestamps (ns) the live path handled while
  born on this connection; a replayed value inside that span went out live and is
  skipped, any other is sent as historical.
* ``seen``: the newest timestamp the live path ever saw per key, born or not. At the
  births it becomes ``floor``, and a span's first timestamp is kept above the floor, so
  a value that never went out live (seen before the births, still in the journal) is
  never taken for one that did. This assumes a key's values reach the live path in
  timestamp order, and that the clock does not step back across a restart.
"""

from __future__ import annotations


class LiveLedger:
    """The live path's bookkeeping for one edge node; plain dicts the fast path binds."""

    __slots__ = ("floor", "live", "seen", "sent")

    def __init__(self) -> None:
        self.sent: dict[int, float] = {}
        self.live: dict[int, list[int]] = {}
        self.seen: dict[int, int] = {}
        self.floor: dict[int, int] = {}

    def births(self) -> None:
        """New births: nothing sent yet on them; what was seen so far is the floor."""
        self.sent.clear()
        seen = self.seen
        for key, (_, last) in self.live.items():
            if last > seen.get(key, -1):
                seen[key] = last
        self.floor = dict(seen)
        self.live.clear()

    def handled(self, key: int, ts: int, born: bool) -> bool:
        """Note a value the live path saw; True when it goes out live (born)."""
        if not born:
            if ts > self.seen.get(key, -1):
                self.seen[key] = ts
            return False
        span = self.live.get(key)
        if span is None:
            floor = self.floor.get(key, -1)
            self.live[key] = [ts if ts > floor else floor + 1, ts]
        elif ts > span[1]:
            span[1] = ts
        return True

    def went_live(self, key: int, ts: int) -> bool:
        """Went out live on this connection (before the mark ``write`` sends next)."""
        span = self.live.get(key)
        return span is not None and span[0] <= ts <= span[1]
