"""Failed-login throttling per client for the OPC-UA server (``HashedUserManager``).

A pure object with an injected clock: ``allow(client)`` before hashing a password,
``failed(client)`` / ``succeeded(client)`` after. A client is ``(peer host, certificate
thumbprint)``.

Invariants:

* One client's failures never refuse another client's attempt, except when the table is
  full (newcomers then share one overflow entry) or under the shared budget below.
* Memory is bounded: at most ``max_clients`` entries plus the overflow entry; an entry is
  forgotten ``forget_s`` after its last failure.
* Key derivations spent on clients with failures on record are capped at
  ``suspect_rate`` per second (burst twice that) across all of them, so many guessing
  clients together cannot hold the event loop; a client with no failure on record is
  never held back by that budget.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class LoginThrottle:
    """Failed logins per client. After its k-th failure in a row a client waits
    ``base_s * 2**(k-1)`` (at most ``max_s``) before its next password is hashed; a
    success forgets it. A client with failures on record that is past its wait also
    needs one of ``suspect_rate`` tokens per second shared by all such clients, so many
    guessing clients together cannot hold the loop either. A client not in the table
    (no failure on record) is always let through, unless the table is full: then it
    shares one overflow entry. Entries are forgotten ``forget_s`` after their last
    failure. ``base_s == 0`` turns the throttle off."""

    OVERFLOW = ("*", "")

    def __init__(
        self, base_s: float, *, max_s: float = 30.0, forget_s: float = 600.0,
        max_clients: int = 1024, suspect_rate: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_s, self.max_s, self.forget_s = base_s, max(max_s, base_s), forget_s
        self.max_clients = max_clients
        self.suspect_rate = suspect_rate
        self._clock = clock
        self._failures: OrderedDict[tuple[str, str], tuple[int, float, float]] = OrderedDict()
        self._tokens = 2 * suspect_rate
        self._refilled = clock()

    def __len__(self) -> int:
        return len(self._failures)

    def _key(self, client: tuple[str, str]) -> tuple[str, str]:
        if client in self._failures or len(self._failures) < self.max_clients:
            return client
        return self.OVERFLOW

    def _expire(self, now: float) -> None:
        while self._failures:
            key, (_, _, last) = next(iter(self._failures.items()))
            if now - last < self.forget_s:
                return
            del self._failures[key]

    def allow(self, client: tuple[str, str]) -> bool:
        """May this client's password be hashed now?"""
        if self.base_s <= 0:
            return True
        now = self._clock()
        self._expire(now)
        entry = self._failures.get(self._key(client))
        if entry is None:
            return True
        if now < entry[1]:
            return False
        self._tokens = min(2 * self.suspect_rate,
                           self._tokens + (now - self._refilled) * self.suspect_rate)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def failed(self, client: tuple[str, str]) -> None:
        if self.base_s <= 0:
            return
        now = self._clock()
        self._expire(now)
        key = self._key(client)
        fails = self._failures.pop(key, (0, 0.0, 0.0))[0] + 1
        wait = min(self.base_s * 2 ** min(fails - 1, 30), self.max_s)
        self._failures[key] = (fails, now + wait, now)

    def succeeded(self, client: tuple[str, str]) -> None:
        self._failures.pop(client, None)
