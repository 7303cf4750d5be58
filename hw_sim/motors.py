"""The tabletop line's motors: seeded, vectorised physics stepped at 10 Hz.

Stations and components (motor ids are "<station>/<component>"):

    hbw       horizontal, vertical, cantilever, belt           (high-bay warehouse)
    conveyor  belt, infeed, pusher1, pusher2, compressor
    vgr       vertical, horizontal, rotate, vacuum, valve       (vacuum gripper robot)

Each motor cycles idle -> inrush (3 ticks) -> running -> idle. Current by phase:
idle 0.05 A, inrush 2.5 A, running 1.2 A (+0.1 A x wear), stopped 0 A, with noise.
Hidden health starts at `initial_health` and loses 0.0001 per active (inrush or
running) tick. Below 0.8 a running motor's current spikes now and then; below 0.5
it has micro-stoppages (state "stopped" for 3-10 ticks, no wear); at 0 it fails
and stays stopped until a "replace" command. Commands: stop, reset (after a
stop), replace (health back to 1.0).

The conveyor belt carries a workpiece 0..1000 mm per run; light barriers L1-L4
at 100/400/700/950 mm are interrupted (True) while the piece is within 15 mm.

Invariants: each tick draws the same amount of randomness (one normal and four
uniforms per motor) whatever the states, so the same seed gives the same samples,
and a copy of the line taken at any tick replays the line exactly until a command
is given. `time_to_failure()` is exact under that condition: it runs such a copy
ahead (a `FailureForecast`), kept between calls and dropped on any command, so
asking every few seconds costs about one extra tick per tick, not the horizon.
Commands are the only way to change a line other than ticking it; writing its
arrays directly would leave a kept forecast stale.

True energy: each tick's current is taken as held over that tick, so a motor's energy
is the sum of its currents times `tick_s`, `voltage_v` and `power_factor`
(`true_energy_kwh`, `motor_energy` truth lines written with the health truth).

Cost: one tick is a fixed number of numpy operations over the 14 motors (plus a
Python step for the few motors changing phase), with no per-motor Python loop.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import DEFAULT_START_NS
from .truth import TruthLog

STATIONS: dict[str, tuple[str, ...]] = {
    "hbw": ("horizontal", "vertical", "cantilever", "belt"),
    "conveyor": ("belt", "infeed", "pusher1", "pusher2", "compressor"),
    "vgr": ("vertical", "horizontal", "rotate", "vacuum", "valve"),
}
MOTOR_IDS: tuple[str, ...] = tuple(f"{s}/{c}" for s, cs in STATIONS.items() for c in cs)
BARRIERS_MM: dict[str, float] = {"L1": 100.0, "L2": 400.0, "L3": 700.0, "L4": 950.0}
BELT_ID = "conveyor/belt"
BELT_MM, PIECE_HALF_MM = 1000.0, 15.0

IDLE, INRUSH, RUNNING, STOPPED, MICROSTOP, FAILED = range(6)
STATE_NAMES = ("idle", "inrush", "running", "stopped", "stopped", "stopped")
WEAR_PER_TICK = 0.0001
I_IDLE, I_INRUSH, I_RUN = 0.05, 2.5, 1.2
INRUSH_TICKS = 3
_I_BASE = np.array([I_IDLE, I_INRUSH, I_RUN, 0.0, 0.0, 0.0])
_I_NOISE = np.array([0.005, 0.05, 0.02, 0.0, 0.0, 0.0])
SPIKE_BELOW, MICROSTOP_BELOW = 0.8, 0.5

# per motor: (idle min, idle max, run min, run max) ticks, speed mm/tick, travel mm
_AXIS = (20, 60, 10, 40, 20.0, 800.0)
_AUX = (30, 90, 10, 30, 0.0, 0.0)
_PROFILE: dict[str, tuple[int, int, int, int, float, float]] = {
    "hbw/horizontal": _AXIS,
    "hbw/vertical": _AXIS,
    "hbw/cantilever": (20, 60, 8, 20, 15.0, 200.0),
    "hbw/belt": _AUX,
    "conveyor/belt": (20, 60, 40, 40, 25.0, BELT_MM),
    "conveyor/infeed": _AUX,
    "conveyor/pusher1": (40, 120, 8, 15, 0.0, 0.0),
    "conveyor/pusher2": (40, 120, 8, 15, 0.0, 0.0),
    "conveyor/compressor": _AUX,
    "vgr/vertical": _AXIS,
    "vgr/horizontal": _AXIS,
    "vgr/rotate": _AUX,
    "vgr/vacuum": _AUX,
    "vgr/valve": (40, 120, 5, 10, 0.0, 0.0),
}


@dataclass(frozen=True)
class MotorSample:
    tick: int
    ts_ns: int
    station: str
    component: str
    current_a: float
    state: str
    position_mm: float | None
    barriers: dict[str, bool] | None


@dataclass(frozen=True)
class MotorTrace:
    """`run(n)` output: arrays of shape (n, motors), columns in `MOTOR_IDS` order."""

    ts_ns: npt.NDArray[np.int64]
    current_a: npt.NDArray[np.float64]
    state: npt.NDArray[np.int8]
    position_mm: npt.NDArray[np.float64]


def barriers_at(position_mm: float) -> dict[str, bool]:
    return {k: abs(position_mm - v) <= PIECE_HALF_MM for k, v in BARRIERS_MM.items()}


class MotorLine:
    """All 14 motors of the line, stepped together."""

    def __init__(
        self,
        seed: int,
        initial_health: float | Mapping[str, float] = 1.0,
        start_ns: int = DEFAULT_START_NS,
        tick_s: float = 0.1,
        truth: TruthLog | None = None,
        voltage_v: float = 24.0,
        power_factor: float = 1.0,
    ) -> None:
        n = len(MOTOR_IDS)
        self.start_ns, self.tick_s, self.truth = start_ns, tick_s, truth
        self.voltage_v, self.power_factor = voltage_v, power_factor
        # true charge per motor (A s): each tick's current held over that tick
        self.charge_as = np.zeros(n)
        self.rng = np.random.default_rng([seed, 3])
        if isinstance(initial_health, Mapping):
            unknown = set(initial_health) - set(MOTOR_IDS)
            if unknown:
                raise ValueError(f"initial_health: unknown motors {sorted(unknown)}")
            self.health = np.array([float(initial_health.get(m, 1.0)) for m in MOTOR_IDS])
        else:
            self.health = np.full(n, float(initial_health))
        prof = np.array([_PROFILE[m] for m in MOTOR_IDS], dtype=np.float64)
        self._idle_lo, self._idle_hi = prof[:, 0], prof[:, 1]
        self._run_lo, self._run_hi = prof[:, 2], prof[:, 3]
        self._speed, self._travel = prof[:, 4], prof[:, 5]
        self._neg_speed = -self._speed
        self.has_position = self._travel > 0
        self._names = [(m.split("/")[0], m.split("/")[1]) for m in MOTOR_IDS]
        self._positioned = self.has_position.tolist()
        self._belt = MOTOR_IDS.index(BELT_ID)
        self.tick = 0
        self.state = np.full(n, IDLE, dtype=np.int8)
        self.state[self.health <= 0] = FAILED
        self._left = np.ceil(self._idle_lo * (1 + np.arange(n) % 3)).astype(np.int64)
        self._ms_left = np.zeros(n, dtype=np.int64)
        self._target = np.zeros(n)
        self.position = np.zeros(n)
        self.current = np.full(n, I_IDLE)
        self._commands = 0  # bumped by every command: a kept forecast is stale after one
        self._forecast: FailureForecast | None = None

    # -- commands ---------------------------------------------------------
    def _select(self, target: str) -> list[int]:
        if target == "all":
            return list(range(len(MOTOR_IDS)))
        if target in STATIONS:
            return [i for i, m in enumerate(MOTOR_IDS) if m.startswith(target + "/")]
        if target in MOTOR_IDS:
            return [MOTOR_IDS.index(target)]
        raise ValueError(f"unknown motor target {target!r}")

    def command(self, cmd: str, target: str = "all") -> list[str]:
        """Apply stop / reset / replace to a motor, a station or "all"; returns motors hit."""
        if cmd not in ("stop", "reset", "replace"):
            raise ValueError(f"unknown motor command {cmd!r}")
        hit: list[str] = []
        for i in self._select(target):
            s = int(self.state[i])
            if cmd == "stop" and s not in (FAILED, STOPPED):
                self.state[i], self._ms_left[i] = STOPPED, 0
            elif cmd == "reset" and s == STOPPED:
                self.state[i], self._left[i] = IDLE, int(self._idle_lo[i])
            elif cmd == "replace":
                self.health[i] = 1.0
                self.state[i], self._left[i], self._ms_left[i] = IDLE, int(self._idle_lo[i]), 0
            else:
                continue
            hit.append(MOTOR_IDS[i])
        self._commands += 1
        if self.truth is not None:
            self.truth.emit("command", "motors", self.ts_ns(), cmd=cmd, target=target, motors=hit)
        return hit

    # -- physics ----------------------------------------------------------
    def ts_ns(self, tick: int | None = None) -> int:
        return self.start_ns + round((self.tick if tick is None else tick) * self.tick_s * 1e9)

    def _advance(self, emit: bool, currents: bool = True) -> bool:
        """One tick; True if a motor failed in it. `currents=False` (a forecast's copy)
        skips the currents but draws the same randomness, so states stay exact."""
        n = len(MOTOR_IDS)
        z = self.rng.standard_normal(n)
        u = self.rng.random((4, n))
        self.tick += 1
        st, h, left = self.state, self.health, self._left
        # phase transitions (few per tick)
        counting = st <= RUNNING
        left -= counting
        due = counting & (left <= 0)
        if np.count_nonzero(due):
            for i in due.nonzero()[0].tolist():
                self._transition(i, float(u[2, i]), float(u[3, i]))
        # micro-stoppages come and go
        in_ms = st == MICROSTOP
        if np.count_nonzero(in_ms):
            self._ms_left[in_ms] -= 1
            st[in_ms & (self._ms_left <= 0)] = RUNNING
        weak = h < MICROSTOP_BELOW
        if np.count_nonzero(weak):
            p_ms = np.where(weak, 0.005 + 0.03 * (MICROSTOP_BELOW - h), 0.0)
            start_ms = (st == RUNNING) & (u[1] < p_ms)
            if np.count_nonzero(start_ms):
                st[start_ms] = MICROSTOP
                self._ms_left[start_ms] = 3 + (u[2, start_ms] * 8).astype(np.int64)
                if emit and self.truth is not None:
                    for i in np.flatnonzero(start_ms).tolist():
                        self.truth.emit(
                            "micro_stoppage",
                            "motors",
                            self.ts_ns(),
                            motor=MOTOR_IDS[i],
                            ticks=int(self._ms_left[i]),
                            health=round(float(h[i]), 6),
                        )
        # wear and failure
        running = st == RUNNING
        active = running | (st == INRUSH)
        np.subtract(h, WEAR_PER_TICK, out=h, where=active)
        failed = active & (h <= 1e-12)
        any_failed = bool(np.count_nonzero(failed))
        if any_failed:
            h[failed] = 0.0
            st[failed] = FAILED
            running &= ~failed
            if emit and self.truth is not None:
                for i in np.flatnonzero(failed).tolist():
                    self.truth.emit("motor_failed", "motors", self.ts_ns(), motor=MOTOR_IDS[i])
        # motion (clip as min(max()): the same numbers, without np.clip's Python layer)
        moving = running & self.has_position
        if np.count_nonzero(moving):
            step = np.minimum(np.maximum(self._target - self.position, self._neg_speed),
                              self._speed)
            np.add(self.position, step, out=self.position, where=moving)
        if not currents:
            return any_failed
        # current
        cur = _I_BASE[st] + _I_NOISE[st] * z + running * (0.1 * (1 - h))
        spike = running & (h < SPIKE_BELOW)
        if np.count_nonzero(spike):
            spike &= u[0] < 0.02 + 0.2 * (SPIKE_BELOW - h)
            cur[spike] += (0.5 + u[2, spike]) * (1 + SPIKE_BELOW - h[spike])
        self.current = np.maximum(cur, 0.0)
        self.charge_as += self.current * self.tick_s
        return any_failed

    def _transition(self, i: int, u_len: float, u_target: float) -> None:
        s = self.state[i]
        if s == IDLE:
            self.state[i], self._left[i] = INRUSH, INRUSH_TICKS
            if i == self._belt:
                self.position[i], self._target[i] = 0.0, BELT_MM
            elif self.has_position[i]:
                self._target[i] = round(u_target * self._travel[i], 1)
        elif s == INRUSH:
            lo, hi = self._run_lo[i], self._run_hi[i]
            run = lo + math.floor(u_len * (hi - lo + 1))
            if self.has_position[i] and i != self._belt:
                need = math.ceil(abs(self._target[i] - self.position[i]) / self._speed[i])
                run = max(run, need)
            self.state[i], self._left[i] = RUNNING, int(run)
        else:
            lo, hi = self._idle_lo[i], self._idle_hi[i]
            self.state[i], self._left[i] = IDLE, int(lo + math.floor(u_len * (hi - lo + 1)))

    def samples(self) -> list[MotorSample]:
        """The current tick as one sample per motor."""
        ts, tick = self.ts_ns(), self.tick
        cur, st, pos = self.current.tolist(), self.state.tolist(), self.position.tolist()
        belt = barriers_at(pos[self._belt])
        return [
            MotorSample(
                tick,
                ts,
                station,
                comp,
                round(cur[i], 4),
                STATE_NAMES[st[i]],
                round(pos[i], 1) if self._positioned[i] else None,
                dict(belt) if station == "conveyor" else None,
            )
            for i, (station, comp) in enumerate(self._names)
        ]

    def step(self) -> list[MotorSample]:
        """Advance one tick and return its samples."""
        self._advance(emit=True)
        return self.samples()

    def run(self, n: int) -> MotorTrace:
        """Advance n ticks quickly (no sample objects) and return the arrays."""
        m = len(MOTOR_IDS)
        ts = np.empty(n, dtype=np.int64)
        cur, pos = np.empty((n, m)), np.empty((n, m))
        st = np.empty((n, m), dtype=np.int8)
        for k in range(n):
            self._advance(emit=True)
            ts[k], cur[k], st[k], pos[k] = self.ts_ns(), self.current, self.state, self.position
        return MotorTrace(ts, cur, st, pos)

    # -- ground truth -------------------------------------------------------
    def true_health(self) -> dict[str, float]:
        return {m: float(h) for m, h in zip(MOTOR_IDS, self.health, strict=True)}

    def true_energy_kwh(self) -> dict[str, float]:
        """Energy each motor drew since the line started: its current at every tick held
        over that tick (``tick_s``), times ``voltage_v`` and ``power_factor``."""
        k = self.voltage_v * self.power_factor / 3.6e6
        return {m: float(q) * k for m, q in zip(MOTOR_IDS, self.charge_as, strict=True)}

    def emit_energy(self) -> None:
        """Write one `motor_energy` truth line per motor: the energy since the start."""
        if self.truth is None:
            return
        for m, kwh in self.true_energy_kwh().items():
            self.truth.emit("motor_energy", "motors", self.ts_ns(), motor=m, tick=self.tick,
                            kwh=kwh, voltage_v=self.voltage_v,
                            power_factor=self.power_factor)

    def twin(self) -> MotorLine:
        """An independent copy (same random state) that writes no ground truth."""
        truth, forecast, self.truth, self._forecast = self.truth, self._forecast, None, None
        try:
            return copy.deepcopy(self)
        finally:
            self.truth, self._forecast = truth, forecast

    def forecast(self) -> FailureForecast:
        """The kept forecast, or a new one if there is none or a command came since."""
        fc = self._forecast
        if fc is None or fc.commands != self._commands:
            fc = self._forecast = FailureForecast(self)
        return fc

    def time_to_failure(self, horizon_ticks: int = 50_000) -> dict[str, int | None]:
        """Ticks until each motor fails if no command is given (None: beyond horizon)."""
        return self.forecast().ttf(self.tick, horizon_ticks)

    def emit_health(
        self, ttf: Mapping[str, int | None] | None = None, horizon_ticks: int = 50_000
    ) -> None:
        """Write one `motor_health` truth line per motor (health, time to failure).

        `ttf` may be computed beforehand (e.g. on a copy, in a worker thread).
        """
        if self.truth is None:
            return
        if ttf is None:
            ttf = self.time_to_failure(horizon_ticks)
        for i, m in enumerate(MOTOR_IDS):
            t = ttf[m]
            self.truth.emit(
                "motor_health",
                "motors",
                self.ts_ns(),
                motor=m,
                tick=self.tick,
                health=round(float(self.health[i]), 6),
                state=STATE_NAMES[int(self.state[i])],
                ttf_ticks=t,
                ttf_s=None if t is None else round(t * self.tick_s, 3),
                horizon_ticks=horizon_ticks,
            )


class FailureForecast:
    """When each motor of a line fails if no command is given, from a copy run ahead.

    Made from a copy of the line at its tick t0. `ttf(tick, horizon)` for any tick
    >= t0 of the same line (no command in between) runs the copy on only as far as
    `tick + horizon`, or until every motor that can fail has failed, and remembers
    each motor's failing tick; asking again later runs only the new ticks. A motor
    stopped at t0 never wears (nothing resets it without a command): never fails.
    Safe to call from a worker thread while the line goes on ticking.
    """

    def __init__(self, line: MotorLine) -> None:
        self.commands = line._commands
        self.start_tick = line.tick
        self._twin = line.twin()
        state = self._twin.state
        self._failed_at: list[int | None] = [
            line.tick if s == FAILED else None for s in state.tolist()
        ]
        self._open = int(np.count_nonzero((state != FAILED) & (state != STOPPED)))
        self._lock = threading.Lock()

    def ttf(self, tick: int, horizon_ticks: int) -> dict[str, int | None]:
        """Ticks from `tick` until each motor fails (0: failed; None: beyond horizon)."""
        if tick < self.start_tick:
            raise ValueError(f"forecast starts at tick {self.start_tick}, asked for {tick}")
        end = tick + horizon_ticks
        with self._lock:
            twin, failed_at = self._twin, self._failed_at
            while self._open and twin.tick < end:
                if twin._advance(emit=False, currents=False):
                    for i in np.flatnonzero(twin.state == FAILED).tolist():
                        if failed_at[i] is None:
                            failed_at[i] = twin.tick
                            self._open -= 1
            return {
                m: None if f is None or f - tick > horizon_ticks else max(0, f - tick)
                for m, f in zip(MOTOR_IDS, failed_at, strict=True)
            }
