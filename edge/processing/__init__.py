"""Judgement at the edge: compensate -> interlock -> health -> spc.

``build_stages`` builds the configured stages in that order; ``warm_up`` loads and
compiles the numba kernels of the configured stages (explicit signatures, on-disk cache
in ``NUMBA_CACHE_DIR``) so that the first batch never pays for compilation. Stage modules
import the kernels lazily, and the kernels package loads a stage's kernels only when they
are used, so importing this package is cheap and a stage that is not configured costs
nothing at start-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.components import BuildContext, Stage
    from edge.config import Config


def build_stages(config: Config, ctx: BuildContext) -> list[Stage]:
    """The configured stages, in data-flow order; absent sections give no stage.
    An interlock whose action no source declares is a ConfigError, before any is built."""
    if config.section("interlocks"):
        from edge.processing.interlock import check_actions

        check_actions(config.section("interlocks"),
                      {src.name: src.actions() for src in config.sources})
    stages: list[Stage] = []
    comp = config.section("compensation")
    if comp:
        from edge.processing.compensate import Compensate

        stages.append(Compensate(comp, ctx.tags, ctx))
    rules = config.section("interlocks")
    if rules:
        from edge.processing.interlock import Interlock

        stages.append(Interlock(rules, ctx.tags, ctx))
    health = config.section("health")
    if health:
        from edge.processing.health import Health

        stages.append(Health(health, ctx.tags, ctx))
    spc = config.section("spc")
    if spc:
        from edge.processing.spc import Spc

        stages.append(Spc(spc, ctx.tags, ctx))
    return stages


def check_compensation_devices(config: Config) -> None:
    """ConfigError for each ``[[compensation]]`` stage whose device no source gives
    ``CmmReading``s for (it would silently judge nothing). Sources say so with
    ``measurement_devices()``; one that cannot say (None, or no such method) turns the
    check off rather than risk a false error."""
    from edge.errors import ConfigError

    measured: set[str] = set()
    for src in config.sources:
        ask = getattr(src, "measurement_devices", None)
        devices = ask() if ask is not None else None
        if devices is None:
            return
        measured |= devices
    known = ", ".join(f"'{d}'" for d in sorted(measured)) or "no source"
    problems = [
        f"compensation '{c.name}': "
        + (f"device '{c.device}'" if c.device else
           f"name (the device, as device is not set) '{c.name}'")
        + f": no source gives CMM readings for it (CMM readings come from: {known})"
        for c in config.section("compensation") if c.cmm not in measured
    ]
    if problems:
        raise ConfigError("\n".join(problems))


def warm_up(stages: Iterable[str] | None = None) -> float:
    """Load (compile, or read from the cache) and run once the kernels of ``stages``
    (stage names; every stage when None); seconds taken."""
    t0 = time.perf_counter()
    for name in _WARM if stages is None else stages:
        run = _WARM.get(name)
        if run is not None:
            run()
    return time.perf_counter() - t0


def _warm_compensate() -> None:
    import numpy as np

    from edge.processing import kernels as K

    f = np.ones(4)
    i = np.arange(4, dtype=np.int64)
    out, out2 = np.empty(4), np.empty(4)
    K.compensate_l20(f, f, f, 1e-6, 1e-6, out)
    K.compensate_with_uncertainty(f, f, f, 1e-6, 1e-6, f, f, 0.0, 0.0, 0.0, out, out2)
    K.lag_estimate(i, f, 1.0, np.zeros(3), np.zeros(1, np.int64), out)


def _warm_interlock() -> None:
    import math

    import numpy as np

    from edge.processing import kernels as K

    f = np.ones(4)
    params = np.array([math.inf, -math.inf, 1, 0, 0, 1.0, 1, 1e9])  # windowed rate
    K.interlock_scan(f, np.arange(4, dtype=np.int64), np.zeros(4, np.uint8), params,
                     np.zeros(K.N_IL_F), np.zeros(K.N_IL_I, np.int64))


def _warm_health() -> None:
    import numpy as np

    from edge.processing import kernels as K

    f = np.ones(4)
    K.motor_scan(f, np.zeros(K.N_MOTOR_PARAMS), np.zeros(K.N_MOTOR_STATE))
    K.level_track(f, 0.1, 1.0, np.zeros(4))
    K.theil_sen(f, f, np.empty(2))


def _warm_spc() -> None:
    import numpy as np

    from edge.processing import kernels as K

    K.spc_scan(np.ones(4), np.array([0.0, 1.0, 0.2, 3.0, 31.0]), np.zeros(K.N_SPC_STATE),
               np.empty(20, np.int64), np.empty(20, np.int64), np.empty(20))


_WARM: dict[str, Callable[[], None]] = {
    "compensate": _warm_compensate, "interlock": _warm_interlock, "health": _warm_health,
    "spc": _warm_spc,
}
