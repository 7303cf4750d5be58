"""Judgement at the edge: clock -> compensate -> interlock -> health -> spc -> oee ->
energy -> trace.

``build_stages`` builds the configured stages in that order; ``warm_up`` loads and
compiles the numba kernels of the configured stages (explicit signatures, on-disk cache
in ``NUMBA_CACHE_DIR``) so that the first batch never pays for compilation. Stage modules
import the kernels lazily, and the kernels package loads a stage's kernels only when they
are used, so importing this package is cheap and a stage that is not configured costs
nothing at start-up.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from edge.errors import ConfigError

if TYPE_CHECKING:
    from edge.components import BuildContext, Stage
    from edge.config import Config


@dataclass(frozen=True, slots=True)
class StageKind:
    """One kind of stage: its config section (a list of tables), the stage's name, where
    its config struct and its class live ("module:Name", imported only when configured),
    and the status document field that carries its ``states()`` ("" when none)."""

    section: str
    name: str
    config: str
    stage: str
    status: str = ""


# THE stage table, in data-flow order. Config sections, wiring, warm-up and the status
# document all read it; adding a stage is one line here.
STAGES: tuple[StageKind, ...] = (
    # first: later stages judge only samples whose device clock is believed
    StageKind("clock_checks", "clock", "edge.processing.clock:ClockCheckConfig",
              "edge.processing.clock:ClockCheck"),
    StageKind("compensation", "compensate", "edge.processing.compensate:CompensationConfig",
              "edge.processing.compensate:Compensate"),
    StageKind("interlocks", "interlock", "edge.processing.interlock_config:InterlockRuleConfig",
              "edge.processing.interlock:Interlock", status="interlocks"),
    StageKind("health", "health", "edge.processing.health:HealthConfig",
              "edge.processing.health:Health", status="health"),
    StageKind("spc", "spc", "edge.processing.spc:SpcConfig", "edge.processing.spc:Spc",
              status="spc"),
    StageKind("oee", "oee", "edge.processing.oee:OeeConfig", "edge.processing.oee:Oee",
              status="oee"),
    StageKind("energy", "energy", "edge.processing.energy:EnergyConfig",
              "edge.processing.energy:Energy", status="energy"),
    # last: a wafer's step record carries the trips, quarantines and alarms made above
    StageKind("wafer_steps", "trace", "edge.processing.trace:WaferTraceConfig",
              "edge.processing.trace:Trace", status="last_wafer"),
)
STAGE_SECTIONS: tuple[str, ...] = tuple(k.section for k in STAGES)
STATUS_FIELD: dict[str, str] = {k.name: k.status for k in STAGES if k.status}


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_stages(config: Config, ctx: BuildContext,
                 problems: list[str] | None = None) -> list[Stage]:
    """The configured stages, in data-flow order; absent sections give no stage.
    An interlock whose action no source declares is a ConfigError, before any is built.

    With ``problems`` (check-config), a stage that cannot be built adds its error lines
    there and is left out, so every stage is checked; without, the first error raises."""
    def failed(exc: ConfigError | ValueError) -> None:
        if problems is None:
            raise exc
        problems.extend(str(exc).splitlines())

    if config.section("interlocks"):
        from edge.processing.interlock_config import InterlockRuleConfig, check_actions

        rules = cast("list[InterlockRuleConfig]", config.section("interlocks"))
        try:
            check_actions(rules, {src.name: src.actions() for src in config.sources})
        except ConfigError as exc:
            failed(exc)
    if config.section("oee") or config.section("energy"):
        from edge.processing.energy import EnergyConfig
        from edge.processing.oee import OeeConfig, check_references

        try:
            check_references(
                cast("list[OeeConfig]", config.section("oee")),
                [c.name for c in config.section("interlocks")],
                [(e.name, e.parts_tools)
                 for e in cast("list[EnergyConfig]", config.section("energy"))])
        except ConfigError as exc:
            failed(exc)
    stages: list[Stage] = []
    for kind in STAGES:
        items: Sequence[object] = config.section(kind.section)
        if items:
            try:
                stages.append(_load(kind.stage)(items, ctx.tags, ctx))
            except (ConfigError, ValueError) as exc:
                failed(exc)
    return stages


def check_compensation_devices(config: Config) -> None:
    """ConfigError for each ``[[compensation]]`` stage whose device no source gives
    ``CmmReading``s for (it would silently judge nothing). Sources say so with
    ``measurement_devices()``; one that cannot say (None) turns the check off rather than
    risk a false error."""
    from edge.errors import ConfigError
    from edge.processing.compensate import CompensationConfig

    measured: set[str] = set()
    for src in config.sources:
        devices = src.measurement_devices()
        if devices is None:
            return
        measured |= devices
    known = ", ".join(f"'{d}'" for d in sorted(measured)) or "no source"
    problems = [
        f"compensation '{c.name}': "
        + (f"device '{c.device}'" if c.device else
           f"name (the device, as device is not set) '{c.name}'")
        + f": no source gives CMM readings for it (CMM readings come from: {known})"
        for c in cast("list[CompensationConfig]", config.section("compensation"))
        if c.cmm not in measured
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


def _warm_energy() -> None:
    import numpy as np

    from edge.processing import kernels as K

    f = np.ones(4)
    K.energy_scan(np.arange(4, dtype=np.int64), f, np.array([24.0, 1e9, 600.0]),
                  np.zeros(K.N_ENERGY_STATE), np.zeros(1, np.int64), np.empty(4), np.empty(4),
                  np.empty(4), np.empty(4))


_WARM: dict[str, Callable[[], None]] = {
    "compensate": _warm_compensate, "interlock": _warm_interlock, "health": _warm_health,
    "spc": _warm_spc, "energy": _warm_energy,
}
