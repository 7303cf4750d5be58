"""Judgement at the edge: compensate -> interlock -> health -> spc.

``build_stages`` builds the configured stages in that order; ``warm_up`` loads and
compiles every numba kernel (explicit signatures, on-disk cache in ``NUMBA_CACHE_DIR``)
so that the first batch never pays for compilation. Stage modules import the kernels
lazily, so importing this package is cheap.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.components import BuildContext, Stage
    from edge.config import Config


def build_stages(config: Config, ctx: BuildContext) -> list[Stage]:
    """The configured stages, in data-flow order; absent sections give no stage."""
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


def warm_up() -> float:
    """Compile (or load from the cache) and run every kernel once; seconds taken."""
    import math

    import numpy as np

    t0 = time.perf_counter()
    from edge.processing import kernels as K

    f = np.ones(4)
    i = np.arange(4, dtype=np.int64)
    q = np.zeros(4, np.uint8)
    out, out2 = np.empty(4), np.empty(4)
    K.compensate_l20(f, f, f, 1e-6, 1e-6, out)
    K.compensate_with_uncertainty(f, f, f, 1e-6, 1e-6, f, f, 0.0, 0.0, 0.0, out, out2)
    K.lag_estimate(i, f, 1.0, np.zeros(3), np.zeros(1, np.int64), out)
    params = np.array([math.inf, -math.inf, 1, 0, 0, math.inf, 1])
    K.interlock_scan(f, i, q, params, np.zeros(K.N_IL_F), np.zeros(K.N_IL_I, np.int64))
    K.motor_scan(f, np.zeros(K.N_MOTOR_PARAMS), np.zeros(K.N_MOTOR_STATE))
    K.level_track(f, 0.1, 1.0, np.zeros(4))
    K.theil_sen(f, f, np.empty(2))
    K.spc_scan(f, np.array([0.0, 1.0, 0.2, 3.0, 31.0]), np.zeros(K.N_SPC_STATE),
               np.empty(20, np.int64), np.empty(20, np.int64), np.empty(20))
    return time.perf_counter() - t0
