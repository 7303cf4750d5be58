"""What an OPC-UA client source tells about its data: when and why it went missing, how
long the last outage lasted, what the backfill recovered; in the status document
(``SourceStatus`` on the source's link), beside the source's log lines.

Invariants:

* An outage starts at the first loss while data flows, or before the first value ever
  came (later failed reconnects are the same outage: its reason stays the one that
  turned the tags Bad), and ends at the first value of a new session. Its length is that
  span, in wall-clock seconds.
* Each transition (loss, backfill, data flowing again) replaces the link's
  ``SourceStatus`` at once: the status never lags behind the log.
"""

from __future__ import annotations

import math
import time

from edge.runtime.links import LinkState
from edge.runtime.statusdoc import BackfillOutcome, SourceStatus
from edge.sources.opcua_backfill import Filled


class Outages:
    """One source's outages and backfills, published on its link's state."""

    def __init__(self, state: LinkState, backfill: bool) -> None:
        self.state = state
        self.up = False  # data flows
        self.since: float | None = None  # wall clock of the loss; None: no outage open
        self.reason = ""
        self.count = 0
        self.last_s = math.nan
        self.backfill: BackfillOutcome = "none" if backfill else "off"
        self.backfilled = 0
        self.unfilled = 0
        self._publish()

    def lost(self, reason: str, now: float | None = None) -> bool:
        """Data is missing; True when this starts an outage."""
        if self.since is not None:
            return False
        self.up = False
        self.since = time.time() if now is None else now
        self.reason = reason
        self.count += 1
        self._publish()
        return True

    def filled(self, result: Filled) -> None:
        """The backfill after a reconnect is done (nothing to say when no tag had a gap:
        the first session, or an outage before any value came)."""
        if self.backfill == "off" or result.tags == 0:
            return
        if result.unfilled == 0:
            self.backfill = "filled"
        elif result.unfilled >= result.tags:
            self.backfill = "no_history"
        else:
            self.backfill = "partial"
        self.backfilled = result.values
        self.unfilled = result.unfilled
        self._publish()

    def flowing(self, now: float | None = None) -> float | None:
        """Data flows; the outage's length in s when this ends one, else None."""
        if self.up:
            return None
        self.up = True
        outage = None
        if self.since is not None:
            outage = self.last_s = (time.time() if now is None else now) - self.since
        self.since = None
        self.reason = ""
        self._publish()
        return outage

    def _publish(self) -> None:
        self.state.source = SourceStatus(
            link_up=self.up, bad_reason=self.reason, bad_since=self.since or 0.0,
            outages=self.count, last_outage_s=self.last_s, backfill=self.backfill,
            backfilled_values=self.backfilled, unfilled_tags=self.unfilled)
