"""Run the daemon's main coroutine like ``asyncio.run``, with an exit that cannot hang.

``asyncio.run`` ends by waiting for every thread of the default executor, and the
interpreter joins them once more at exit. A worker thread blocked for good (an
``open()`` of a FIFO with no writer, a read on a dead network mount) therefore kept a
daemon alive after it had logged "stopped", until systemd killed it.

Invariants:

* After the coroutine returns (or raises), the tasks left are cancelled and the
  executor's threads get ``grace_s`` to finish, as ``asyncio.run`` would do without a
  bound.
* If a thread is still busy then, one line names what is stuck (the component and the
  call, from ``edge.runtime.progress``), the log streams are flushed, and the process
  exits at once with the coroutine's status (1 if it raised). By then the gateway has
  flushed and closed the journal: nothing is lost by not waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

import structlog

from edge.runtime import progress

log = structlog.get_logger("edge.runner")


def run(main: Coroutine[Any, Any, int], *, grace_s: float) -> int:
    """``asyncio.run(main)``, but the exit waits at most about ``2 * grace_s`` for
    tasks and worker threads that do not finish."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    error: BaseException | None = None
    code = 1
    try:
        code = loop.run_until_complete(main)
    except BaseException as exc:  # re-raised below once the exit is known not to hang
        error = exc
    finished = loop.run_until_complete(_wind_down(loop, grace_s))
    if not finished:
        stuck = [f"{c.component}: {c.describe()}" for c in progress.inflight()]
        if error is not None and not isinstance(error, (KeyboardInterrupt, SystemExit)):
            log.error("daemon failed", exc_info=error)
        log.error("exiting without waiting for worker threads stuck in a call",
                  stuck=stuck or ["a worker thread not started through progress.blocking"],
                  grace_s=grace_s)
        _flush()
        os._exit(code if error is None else 1)
    asyncio.set_event_loop(None)
    loop.close()
    if error is not None:
        raise error
    return code


async def _wind_down(loop: asyncio.AbstractEventLoop, grace_s: float) -> bool:
    """Cancel what is left, shut the executor down; False when something would not end
    within ``grace_s`` (each)."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for t in tasks:
        t.cancel()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        if pending:
            log.error("tasks did not end when cancelled",
                      tasks=sorted(t.get_name() for t in pending))
            return False
    await loop.shutdown_asyncgens()
    executor = asyncio.ensure_future(loop.shutdown_default_executor())
    done, _ = await asyncio.wait({executor}, timeout=grace_s)
    return bool(done)


def _flush() -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
