"""Blocking work a component hands to a worker thread, visible while it runs.

A component that awaits a worker thread looks idle to the event loop. A read that never
returns (a FIFO opened with no writer, a hung network mount) was therefore invisible:
``status`` showed the source running, the systemd watchdog was still fed, and at exit
the interpreter waited for that thread forever.

Invariants:

* Every call made through ``blocking`` is listed by ``inflight()`` from the moment its
  thread starts it until it returns, with the component that asked (``component``, set
  by the supervisor for each component's task), what it does, and since when.
* ``stuck(s)`` lists the calls running longer than ``s`` seconds; the supervisor shows
  them in ``status`` and stops feeding the watchdog while there is one.
* Cancelling the awaiting task does not stop the thread (Python cannot): the call stays
  listed until its thread returns, which is how the exit path knows which threads it
  must not wait for, and names them.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

component: ContextVar[str] = ContextVar("edge_component", default="")


@dataclass(frozen=True, slots=True)
class Call:
    component: str
    what: str
    since: float  # time.monotonic() when the thread started it

    def describe(self, now: float | None = None) -> str:
        age = (time.monotonic() if now is None else now) - self.since
        return f"{self.what} for {age:.0f} s"


_lock = threading.Lock()
_calls: dict[int, Call] = {}
_ids = itertools.count()


def _caller() -> str:
    name = component.get()
    if name:
        return name
    task = asyncio.current_task()
    return task.get_name() if task is not None else threading.current_thread().name


async def blocking(what: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``await asyncio.to_thread(fn, ...)``, listed in ``inflight()`` while it runs."""
    key, who = next(_ids), _caller()

    def run() -> T:
        with _lock:
            _calls[key] = Call(who, what, time.monotonic())
        try:
            return fn(*args, **kwargs)
        finally:
            with _lock:
                _calls.pop(key, None)

    return await asyncio.to_thread(run)


def inflight() -> list[Call]:
    with _lock:
        return sorted(_calls.values(), key=lambda c: c.since)


def stuck(older_than_s: float) -> list[Call]:
    limit = time.monotonic() - older_than_s
    return [c for c in inflight() if c.since <= limit]
