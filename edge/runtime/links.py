"""The link runtime: one place for connect, backoff, up/down logging, the link metric and
the link board, for sources and sinks alike.

A plugin classifies its errors and says when its link is up or lost; the runtime decides
when to try again (capped exponential backoff with full jitter), logs each transition
once, keeps ``edge_link_up{link}`` and the typed ``LinkBoard`` the status reads.

Invariants:

* ``Backoff.delay(attempt)`` is uniform in ``[0, min(max_s, initial_s * factor**attempt)]``
  (full jitter): reconnecting peers spread out instead of arriving together.
* A link logs "link up" and "link down" once per transition, never once per attempt; the
  failed attempts in between go to the debug log and the attempt counter.
* ``attempt`` counts failures since the link last carried data; it picks the backoff and
  is reset by ``up()`` (``up(proven=False)``: connected, not yet known to work, so a peer
  that accepts connections and then fails every request still backs off).
* Link names are ``source:<name>`` (``source:<name>/<device>`` for a source with several
  devices) and ``sink:<name>``: the names the status document and its readers show.

Using it from a source or sink::

    link = ctx.links.open(f"source:{name}")
    await link.run(session)   # session connects, calls link.up(), serves until lost
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import structlog

from edge.errors import RetryableError
from edge.runtime.redact import redact
from edge.runtime.statusdoc import SourceStatus

if TYPE_CHECKING:
    from edge.runtime.metrics import Metrics

log = structlog.get_logger("edge.links")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry delays of one link. The default cap is short on purpose: retrying one peer
    every few seconds costs nothing, while a long cap adds its length to every recovery."""

    initial_s: float = 0.2
    max_s: float = 5.0
    factor: float = 2.0

    def cap(self, attempt: int) -> float:
        """The longest delay after ``attempt`` failures (0-based)."""
        return min(self.max_s, self.initial_s * self.factor ** min(attempt, 64))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, cap(attempt)]."""
        return rng.uniform(0.0, self.cap(attempt))


@dataclass(slots=True)
class LinkState:
    """What the status shows about one link. ``since`` is the wall-clock time (s) of the
    last transition, 0 before the first."""

    name: str
    up: bool = False
    since: float = 0.0
    last_error: str = ""
    attempt: int = 0
    source: SourceStatus | None = None  # set by a source that watches its own data


class Link:
    """One link: its state on the board, its backoff, its transitions logged once."""

    def __init__(self, board: LinkBoard, name: str, backoff: Backoff,
                 rng: random.Random | None = None) -> None:
        self.name = name
        self.state = LinkState(name)
        self.backoff = backoff
        self._board = board
        self._rng = rng or random.Random()
        self._gauge = board.gauge(name)
        self._gauge(0.0)

    def up(self, *, proven: bool = True, **context: object) -> None:
        """The link is up (connected, or a request went through); logged on transition.
        ``proven``: it carried data, so the backoff starts again from the beginning."""
        st = self.state
        if not st.up:
            st.up = True
            st.since = time.time()
            self._gauge(1.0)
            log.info("link up", link=self.name, after_attempts=st.attempt, **context)
        if proven:
            st.attempt = 0

    def down(self, error: BaseException | str, **context: object) -> None:
        """A connect or a request failed: the link is down; logged on transition only."""
        st = self.state
        text = redact(error if isinstance(error, str) else (str(error) or type(error).__name__))
        st.last_error = text  # shown in status and on OPC-UA: never a peer-echoed secret
        st.attempt += 1
        if st.up or st.attempt == 1:
            log.warning("link down", link=self.name, error=text, **context)
        else:
            log.debug("link still down", link=self.name, error=text, attempt=st.attempt,
                      **context)
        if st.up or st.since == 0.0:
            st.since = time.time()
        st.up = False
        self._gauge(0.0)

    def mark(self, up: bool) -> None:
        """Set the state without logging, for a component that logs its own transitions."""
        st = self.state
        if st.up != up:
            st.up = up
            st.since = time.time()
            self._gauge(1.0 if up else 0.0)

    def delay(self, hint_s: float | None = None, hint_max_s: float = 600.0) -> float:
        """Seconds to wait before the next attempt: the backoff, or the peer's own hint
        (``Retry-After``) when longer, up to ``hint_max_s``."""
        delay = self.backoff.delay(max(0, self.state.attempt - 1), self._rng)
        if hint_s is not None:
            delay = max(delay, min(hint_s, hint_max_s))
        return delay

    async def pause(self, hint_s: float | None = None) -> None:
        await asyncio.sleep(self.delay(hint_s))

    async def run(self, session: Callable[[], Awaitable[object]]) -> NoReturn:
        """Run ``session`` until cancelled: it connects, calls ``up()`` once connected and
        serves until the link is lost (it returns, or raises ``RetryableError`` or
        ``OSError``); between two sessions, the backoff. Any other exception is a bug: it
        propagates to the supervisor."""
        while True:
            try:
                await session()
            except (RetryableError, OSError, TimeoutError) as exc:
                self.down(exc)
            else:
                if self.state.up:
                    self.down("session ended")
            await self.pause()


class LinkBoard:
    """Every link of the gateway by name, typed; owns the ``edge_link_up`` metric."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._links: dict[str, Link] = {}
        self._metric = None if metrics is None else metrics.gauge(
            "edge_link_up", "1 while the link is up", ["link"])

    def open(self, name: str, backoff: Backoff | None = None,
             rng: random.Random | None = None) -> Link:
        """The link called ``name``, made on first use (one per name)."""
        link = self._links.get(name)
        if link is None:
            link = self._links[name] = Link(self, name, backoff or Backoff(), rng)
        elif backoff is not None:
            link.backoff = backoff
        return link

    def gauge(self, name: str) -> Callable[[float], None]:
        if self._metric is None:
            return _ignore
        return self._metric.labels(name).set

    def states(self) -> dict[str, LinkState]:
        return {name: link.state for name, link in self._links.items()}

    def __contains__(self, name: str) -> bool:
        return name in self._links


def _ignore(value: float) -> None:
    return None
