"""Supervision: every component is a task; a crash restarts it, never its neighbours.

Invariants:

* A component that raises is logged with its traceback and restarted after a backoff
  (``edge.runtime.links.Backoff``: doubling up to ``max_backoff_s``, full jitter) that
  resets once it has run ``healthy_after_s``.
  Others keep running meanwhile. Components are meant to run until cancelled: one
  that returns is logged and started again too.
* ``stop()`` cancels the components in reverse order of ``add`` (sources were added
  first, so sinks and the journal outlive them) and waits for each within the deadline.
* Progress checks: ``healthy()`` is True only while every registered check passes and
  no component has been stuck in one worker-thread call (``edge.runtime.progress``)
  for longer than ``stall_timeout_s``; the systemd watchdog is fed only then, and
  ``states()`` shows what each stuck component is stuck in.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from edge.runtime import progress
from edge.runtime.links import Backoff
from edge.runtime.metrics import Metrics

log = structlog.get_logger("edge.supervisor")

Factory = Callable[[], Awaitable[None]]
Check = Callable[[], str | None]  # returns None when fine, else what is wrong


@dataclass(slots=True)
class Component:
    name: str
    factory: Factory
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    last_error: str = ""
    started_at: float = 0.0
    running: bool = False


class Supervisor:
    def __init__(
        self,
        *,
        metrics: Metrics | None = None,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        healthy_after_s: float = 60.0,
        stall_timeout_s: float = 30.0,
    ) -> None:
        self._components: dict[str, Component] = {}
        self._checks: dict[str, Check] = {}
        self.backoff = Backoff(initial_s=initial_backoff_s, max_s=max_backoff_s)
        self._rng = random.Random()
        self.healthy_after_s = healthy_after_s
        self.stall_timeout_s = stall_timeout_s
        m = metrics or Metrics()
        self._m_restarts = m.counter(
            "edge_component_restarts_total", "Restarts after a crash", ["component"]
        )
        self._m_up = m.gauge("edge_component_up", "1 while the component runs", ["component"])
        self._stopping = False

    def add(self, name: str, factory: Factory) -> None:
        if name in self._components:
            raise ValueError(f"component '{name}' added twice")
        comp = Component(name, factory)
        self._components[name] = comp
        comp.task = asyncio.create_task(self._keep(comp), name=f"supervise:{name}")

    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def _keep(self, comp: Component) -> None:
        progress.component.set(comp.name)  # this task's context: names its blocking calls
        attempt = 0  # crashes since the component last ran healthy_after_s
        while not self._stopping:
            comp.started_at = time.monotonic()
            comp.running = True
            self._m_up.labels(comp.name).set(1)
            try:
                await comp.factory()
            except asyncio.CancelledError:
                comp.running = False
                self._m_up.labels(comp.name).set(0)
                raise
            except Exception as exc:
                comp.running = False
                self._m_up.labels(comp.name).set(0)
                if time.monotonic() - comp.started_at >= self.healthy_after_s:
                    attempt = 0
                delay = self.backoff.delay(attempt, self._rng)
                attempt += 1
                comp.restarts += 1
                comp.last_error = f"{type(exc).__name__}: {exc}"
                self._m_restarts.labels(comp.name).inc()
                log.error(
                    "component crashed; restarting", component=comp.name,
                    error=comp.last_error, restart_in_s=round(delay, 3),
                    restarts=comp.restarts, exc_info=exc,
                )
                await asyncio.sleep(delay)
                continue
            comp.running = False
            self._m_up.labels(comp.name).set(0)
            log.warning("component returned; restarting", component=comp.name)
            await asyncio.sleep(self.backoff.delay(attempt, self._rng))

    def healthy(self) -> tuple[bool, list[str]]:
        problems = []
        for name, check in self._checks.items():
            try:
                problem = check()
            except Exception as exc:  # a broken check is itself a problem to report
                problem = f"check failed: {exc}"
            if problem:
                problems.append(f"{name}: {problem}")
        for call in progress.stuck(self.stall_timeout_s):
            problems.append(f"{call.component}: stuck in {call.describe()}")
        return not problems, problems

    def states(self) -> dict[str, dict[str, object]]:
        stuck: dict[str, str] = {}
        for call in progress.stuck(self.stall_timeout_s):
            stuck.setdefault(call.component, call.describe())
        return {
            c.name: {"running": c.running, "restarts": c.restarts, "last_error": c.last_error,
                     "stuck": stuck.get(c.name, "")}
            for c in self._components.values()
        }

    async def stop_component(self, name: str, timeout: float) -> bool:
        comp = self._components.get(name)
        if comp is None or comp.task is None:
            return True
        comp.task.cancel()
        done, _ = await asyncio.wait({comp.task}, timeout=timeout)
        if not done:
            log.error("component did not stop in time", component=name, timeout_s=timeout)
            return False
        with contextlib.suppress(asyncio.CancelledError, Exception):
            comp.task.result()
        return True

    async def stop(self, deadline: float) -> bool:
        """Cancel everything, last added first, within ``deadline`` (monotonic seconds)."""
        self._stopping = True
        ok = True
        for name in reversed(list(self._components)):
            left = max(0.05, deadline - time.monotonic())
            ok = await self.stop_component(name, left) and ok
        return ok
