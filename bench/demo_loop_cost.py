"""Where the demo's event loop spends its CPU: thread CPU time per callback, by owner.

Runs ``edge-gateway demo`` in this process with ``asyncio.Handle._run`` wrapped: each
callback is timed with ``time.thread_time_ns`` and booked to its task's name and the
chain of coroutines it resumes in (edge, hw_sim, amqtt, aiomqtt, asyncua, pymodbus
frames), or to the callback's own name. The stages' ``process``/``tick`` and the
condition board's poll are timed the same way. Measures ``SECONDS`` after READY plus
10 s, prints the process's and the main thread's CPU, the loop's iterations and the
heaviest owners, then stops the demo. The wrapping costs: the process reads ~40% more
CPU than unwrapped; compare owners within one run, not with ``demo_cpu.py``'s figures.

    NUMBA_CACHE_DIR=/tmp/numba PYTHONPATH=$PWD .venv/bin/python bench/demo_loop_cost.py \\
        30 /tmp/demo-state 60
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.base_events
import asyncio.events
import collections
import functools
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

cpu: collections.Counter[str] = collections.Counter()
calls: collections.Counter[str] = collections.Counter()
active = [False]
APP = ("/edge/", "/hw_sim/", "amqtt", "aiomqtt", "asyncua", "pymodbus")


def chain(coro: Any) -> str:
    """The application coroutines a task is suspended in, outermost first (up to 4)."""
    names: list[str] = []
    c = coro
    while c is not None and len(names) < 12:
        code = getattr(c, "cr_code", None) or getattr(c, "gi_code", None)
        if code is not None and any(k in code.co_filename for k in APP):
            names.append(getattr(c, "__qualname__", type(c).__name__))
        c = getattr(c, "cr_await", None) or getattr(c, "gi_yieldfrom", None)
    return " > ".join(names[:4])


def owner(cb: Any) -> str:
    task = getattr(cb, "__self__", None)
    if isinstance(task, asyncio.Task):
        return f"task {task.get_name().split('-')[0]}: {chain(task.get_coro())}"
    if isinstance(cb, functools.partial):
        return "partial " + getattr(cb.func, "__qualname__", repr(cb.func))
    name = getattr(cb, "__qualname__", None) or type(cb).__name__
    return f"{name} [{getattr(cb, '__module__', '') or ''}]"


def timed(key: Callable[..., str], f: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*a: Any, **kw: Any) -> Any:
        if not active[0]:
            return f(*a, **kw)
        k = key(*a)
        t0 = time.thread_time_ns()
        try:
            return f(*a, **kw)
        finally:
            cpu[k] += time.thread_time_ns() - t0
            calls[k] += 1
    return wrapper


loop_cpu = [0, 0]


def patch() -> None:
    handle: Any = asyncio.events.Handle
    handle._run = timed(lambda h: owner(h._callback), handle._run)
    base: Any = asyncio.base_events.BaseEventLoop
    once = base._run_once

    def run_once(self: Any) -> Any:
        if not active[0] or threading.current_thread() is not threading.main_thread():
            return once(self)
        t0 = time.thread_time_ns()
        try:
            return once(self)
        finally:
            loop_cpu[0] += time.thread_time_ns() - t0
            loop_cpu[1] += 1
    base._run_once = run_once
    stages = [("clock", "ClockCheck"), ("compensate", "Compensate"), ("energy", "Energy"),
              ("health", "Health"), ("interlock", "Interlock"), ("oee", "Oee"),
              ("spc", "Spc"), ("trace", "Trace")]
    for mod, cls in stages:
        c = getattr(importlib.import_module(f"edge.processing.{mod}"), cls)
        for meth in ("process", "tick"):
            setattr(c, meth, timed(lambda *a, _k=f"stage {cls}.{meth}": _k, getattr(c, meth)))
    from edge.runtime.conditions import ConditionBoard
    from edge.runtime.status import StatusBoard
    for c, meth in ((ConditionBoard, "poll"), (StatusBoard, "document")):
        setattr(c, meth, timed(lambda *a, _k=f"stage {c.__name__}.{meth}": _k,
                               getattr(c, meth)))


def thread_ticks(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def measure(seconds: float, state: str, top: int) -> None:
    log = Path(state) / "gateway.log"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if log.exists() and "gateway ready" in log.read_text(encoding="utf-8"):
            break
        time.sleep(1)
    time.sleep(10)
    main = threading.main_thread().native_id
    assert main is not None
    c0, m0, w0 = time.process_time(), thread_ticks(main), time.monotonic()
    active[0] = True
    time.sleep(seconds)
    active[0] = False
    wall = time.monotonic() - w0
    proc = (time.process_time() - c0) / wall
    main_cores = (thread_ticks(main) - m0) / os.sysconf("SC_CLK_TCK") / wall
    stage_keys = [k for k in cpu if k.startswith("stage ")]
    in_callbacks = sum(v for k, v in cpu.items() if k not in stage_keys)
    print(f"load {os.getloadavg()[0]:.1f}; process {proc:.3f} cores, main thread "
          f"{main_cores:.3f}; loop iterations {loop_cpu[1] / wall:.0f}/s, their CPU "
          f"{loop_cpu[0] / 1e9 / wall:.3f} cores; callbacks {in_callbacks / 1e9 / wall:.3f}")
    rows = sorted(cpu.items(), key=lambda kv: -kv[1])
    for k, v in [r for r in rows if r[0] not in stage_keys][:top] + \
            [r for r in rows if r[0] in stage_keys]:
        print(f"{v / 1e6 / wall:7.2f} mcores {calls[k] / wall:7.1f}/s "
              f"{v / 1e3 / calls[k]:8.1f} us/call  {k}")
    os.kill(os.getpid(), signal.SIGINT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seconds", type=float)
    ap.add_argument("state_dir")
    ap.add_argument("top", type=int, nargs="?", default=50)
    args = ap.parse_args()
    patch()
    from edge.demo import run_demo
    threading.Thread(target=measure, args=(args.seconds, args.state_dir, args.top),
                     daemon=True).start()
    sys.exit(run_demo(argparse.Namespace(state_dir=args.state_dir, opcua_port=0,
                                         influx_url="", quiet=True, seconds=0)))


if __name__ == "__main__":
    main()
