"""Etch tool: seeded chamber physics (`EtchModel`) and its register image.

Register map (0-based Modbus addresses; `config/etch_modbus.toml` is the same map
in the gateway's form). Holding registers (FC3; FC4 input registers mirror them):

    0-1   chamber_temp_c   float32   2-3  pressure_mtorr  float32
    4-5   rf_power_w       float32   6-7  gas_flow_sccm   float32
    8     lot_id   uint16            9    wafer           uint16
    10    step     uint16 (0 idle/stopped, 1 stabilise, 2 ignite, 3 main etch,
                           4 over-etch, 5 purge)
    11    status   uint16 bit0 running, bit1 stopped by coil, bit2 excursion
                          active, bit3 alarm (latched: temperature was > limit)
    12    heartbeat uint16, +1 per model tick (wraps)
    13-14 wafer_elapsed_s  float32: seconds since the wafer in the chamber entered it
          (the tool's clock; keeps counting while stopped)
    15    recipe   uint16 (the recipe number the tool runs, `recipe_id`)
    20    admin: write 1 = start an excursion now (reads 1 while one is active)
    21    admin: fault mode, 0 ok, 1 exception DEVICE_BUSY, 2 exception
          DEVICE_FAILURE, 3 hang (never answer)
Float32: IEEE 754, big-endian bytes in each register, high word first (ABCD,
pymodbus word_order="big"). Addresses 0-15 are read-only; 16-19 read as 0.

Coils: 0 stop (write 1 = stop; write 0 after a stop = reset and resume),
1 reset (write 1 = clear the stop and the alarm and resume; reads back 0).

Invariants: in normal operation the reading stays within setpoint +- noise_clip
(180 +- 2.5 C, never above 186); an excursion ramps the chamber above `limit_c`
(188.0) and ends after its duration (decaying back) or at a stop; after a stop the
temperature decays to ambient with `cool_tau_s` and the process holds until a
reset. The model draws the same random numbers per tick in every state, so the
same seed and the same tick sequence give the same values.

OEE truth: `timeline` holds every change between running and stopped, `parts` every
finished wafer with whether it is scrap (the chamber went above `limit_c` while it
was in it; `wafer_done` truth lines say the same), and `ideal_cycle_s` is the rated
cycle the tool is judged against (it runs at 5 x `step_s`).

A wafer leaves the chamber when its five recipe steps are done (never while stopped);
the truth gets `wafer_end` (lot, wafer, start_ns, end_ns, the stops and limit
excursions during it) and `wafer_start` for the next one, at the tick of the change.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from . import DEFAULT_START_NS
from .truth import TruthLog

STATUS_RUNNING, STATUS_STOPPED, STATUS_EXCURSION, STATUS_ALARM = 1, 2, 4, 8
REG_COUNT = 22
REG_EXCURSION, REG_FAULT = 20, 21
COIL_STOP, COIL_RESET = 0, 1
FAULT_MODES = ("ok", "busy", "fail", "hang")

# step: (pressure mTorr, rf power W, gas flow sccm)
RECIPE: dict[int, tuple[float, float, float]] = {
    1: (50.0, 0.0, 100.0),
    2: (30.0, 300.0, 80.0),
    3: (25.0, 600.0, 50.0),
    4: (25.0, 400.0, 50.0),
    5: (100.0, 0.0, 200.0),
}
IDLE_POINT = (2.0, 0.0, 0.0)


@dataclass(frozen=True)
class EtchConfig:
    setpoint_c: float = 180.0
    noise_c: float = 0.4
    noise_clip_c: float = 2.5
    ambient_c: float = 25.0
    heat_tau_s: float = 30.0
    cool_tau_s: float = 120.0
    limit_c: float = 188.0
    excursion_peak_c: float = 195.0
    excursion_ramp_c_per_s: float = 2.0
    excursion_decay_tau_s: float = 10.0
    excursion_duration_s: float = 30.0
    excursion_at_s: tuple[float, ...] = ()
    excursion_every_s: float | None = None
    step_s: float = 10.0
    wafers_per_lot: int = 25
    first_lot: int = 4711
    # the tool's rated cycle (OEE's ideal cycle time); a wafer takes 5 x step_s
    ideal_cycle_s: float = 45.0
    recipe_id: int = 1


@dataclass(frozen=True)
class EtchSnapshot:
    t_s: float
    chamber_temp_c: float
    pressure_mtorr: float
    rf_power_w: float
    gas_flow_sccm: float
    lot_id: int
    wafer: int
    step: int
    status: int
    heartbeat: int
    wafer_elapsed_s: float = 0.0


def float_regs(value: float) -> list[int]:
    """float32 as two registers, ABCD (high word first)."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def regs_float(regs: list[int]) -> float:
    """Inverse of `float_regs`."""
    return float(struct.unpack(">f", struct.pack(">HH", regs[0], regs[1]))[0])


class EtchModel:
    """Seeded etch chamber; `step(dt)` advances it, commands change its course."""

    def __init__(
        self,
        seed: int,
        config: EtchConfig | None = None,
        start_ns: int = DEFAULT_START_NS,
        truth: TruthLog | None = None,
    ) -> None:
        self.cfg = config or EtchConfig()
        self.start_ns = start_ns
        self.truth = truth
        self.rng = np.random.default_rng([seed, 2])
        self.t_s = 0.0
        self.base_c = self.cfg.setpoint_c
        self.offset_c = 0.0
        self.excursion_until: float | None = None
        self.stopped = False
        self.alarm = False
        self.over_limit = False
        self.lot_id = self.cfg.first_lot
        self.wafer = 1
        self.wafer_t0 = 0.0
        self.wafer_stops = self.wafer_limits = 0
        self._step_t = 0.0
        self.heartbeat = 0
        self._due = sorted(self.cfg.excursion_at_s)
        self._next_periodic = self.cfg.excursion_every_s
        # OEE truth: (t_ns, stopped) at every change, and (t_ns, scrap) per finished wafer
        self.timeline: list[tuple[int, bool]] = [(start_ns, False)]
        self.parts: list[tuple[int, bool]] = []
        self._scrap = False
        self.snap = self._snapshot(0.0, 0.0, 0.0, 0.0)
        self._emit("wafer_start", lot=self.lot_id, wafer=self.wafer)

    # -- commands ---------------------------------------------------------
    def _emit(self, kind: str, **fields: object) -> None:
        if self.truth is not None:
            self.truth.emit(kind, "etch", self.start_ns + round(self.t_s * 1e9), **fields)

    def trigger_excursion(self, duration_s: float | None = None, cause: str = "command") -> bool:
        """Start an excursion now; refused (False) while stopped or already in one."""
        if self.stopped or self.excursion_until is not None:
            return False
        dur = self.cfg.excursion_duration_s if duration_s is None else duration_s
        self.excursion_until = self.t_s + dur
        self._emit("excursion_start", cause=cause, duration_s=dur)
        return True

    def stop(self, cause: str = "coil") -> None:
        """Halt the process (RF and gas off); ends any excursion."""
        if self.stopped:
            return
        self.stopped = True
        self.timeline.append((self.start_ns + round(self.t_s * 1e9), True))
        self.wafer_stops += 1
        self._emit("stop", cause=cause, chamber_temp_c=round(self.base_c + self.offset_c, 4))
        if self.excursion_until is not None:
            self.excursion_until = None
            self._emit("excursion_end", cause="stop")

    def reset(self, cause: str = "coil") -> None:
        """Clear the stop and the alarm and resume the recipe."""
        if not self.stopped and not self.alarm:
            return
        self.stopped = False
        self.alarm = self.over_limit
        self.timeline.append((self.start_ns + round(self.t_s * 1e9), False))
        self._emit("reset", cause=cause)

    # -- physics ----------------------------------------------------------
    def step(self, dt: float) -> EtchSnapshot:
        """Advance by dt simulated seconds and return the new readings."""
        c = self.cfg
        noise, z_p, z_rf, z_gas = self.rng.standard_normal(4)
        self.t_s += dt
        self.heartbeat = (self.heartbeat + 1) & 0xFFFF
        self._schedule()
        if self.excursion_until is not None and self.t_s >= self.excursion_until:
            self.excursion_until = None
            self._emit("excursion_end", cause="duration")
        target = c.ambient_c if self.stopped else c.setpoint_c
        tau = c.cool_tau_s if self.stopped else c.heat_tau_s
        self.base_c += (target - self.base_c) * (1 - math.exp(-dt / tau))
        if self.excursion_until is not None:
            peak = c.excursion_peak_c - c.setpoint_c
            self.offset_c = min(peak, self.offset_c + c.excursion_ramp_c_per_s * dt)
        else:
            self.offset_c *= math.exp(-dt / c.excursion_decay_tau_s)
        true_c = self.base_c + self.offset_c
        if true_c > c.limit_c and not self.over_limit:
            self.over_limit = self.alarm = True
            self._scrap = True  # the wafer in the chamber is lost
            self.wafer_limits += 1
            self._emit("limit_exceeded", chamber_temp_c=round(true_c, 4))
        elif true_c <= c.limit_c and self.over_limit:
            self.over_limit = False
            self._emit("limit_cleared", chamber_temp_c=round(true_c, 4))
        if not self.stopped:
            self._advance_recipe(dt)
        step = 0 if self.stopped else self.recipe_step
        p, rf, gas = RECIPE.get(step, IDLE_POINT)
        temp = true_c + float(np.clip(noise * c.noise_c, -c.noise_clip_c, c.noise_clip_c))
        self.snap = self._snapshot(
            temp,
            max(0.0, p * (1 + 0.01 * float(z_p))),
            max(0.0, rf * (1 + 0.005 * float(z_rf))),
            max(0.0, gas * (1 + 0.01 * float(z_gas))),
        )
        return self.snap

    def _schedule(self) -> None:
        while self._due and self.t_s >= self._due[0]:
            self._due.pop(0)
            self.trigger_excursion(cause="schedule")
        every = self.cfg.excursion_every_s
        if every and self._next_periodic is not None and self.t_s >= self._next_periodic:
            self._next_periodic += every
            self.trigger_excursion(cause="schedule")

    @property
    def recipe_step(self) -> int:
        return 1 + int(self._step_t // self.cfg.step_s) % len(RECIPE)

    def _advance_recipe(self, dt: float) -> None:
        before = int(self._step_t // (self.cfg.step_s * len(RECIPE)))
        self._step_t += dt
        if int(self._step_t // (self.cfg.step_s * len(RECIPE))) > before:
            t_ns = self.start_ns + round(self.t_s * 1e9)
            self.parts.append((t_ns, self._scrap))
            self._emit("wafer_done", lot=self.lot_id, wafer=self.wafer, scrap=self._scrap,
                       ideal_cycle_s=self.cfg.ideal_cycle_s)
            self._scrap = False
            self._emit("wafer_end", lot=self.lot_id, wafer=self.wafer,
                       start_ns=self.start_ns + round(self.wafer_t0 * 1e9),
                       end_ns=self.start_ns + round(self.t_s * 1e9),
                       stops=self.wafer_stops, limits_exceeded=self.wafer_limits)
            self.wafer += 1
            if self.wafer > self.cfg.wafers_per_lot:
                self.wafer = 1
                self.lot_id = (self.lot_id + 1) & 0xFFFF
            self.wafer_t0, self.wafer_stops, self.wafer_limits = self.t_s, 0, 0
            self._emit("wafer_start", lot=self.lot_id, wafer=self.wafer)

    @property
    def status(self) -> int:
        s = STATUS_STOPPED if self.stopped else STATUS_RUNNING
        if self.excursion_until is not None:
            s |= STATUS_EXCURSION
        if self.alarm:
            s |= STATUS_ALARM
        return s

    def _snapshot(self, temp: float, p: float, rf: float, gas: float) -> EtchSnapshot:
        return EtchSnapshot(
            self.t_s,
            temp,
            p,
            rf,
            gas,
            self.lot_id,
            self.wafer,
            0 if self.stopped else self.recipe_step,
            self.status,
            self.heartbeat,
            self.t_s - self.wafer_t0,
        )

    def registers(self) -> list[int]:
        """Holding registers 0..21 for the current snapshot."""
        s = self.snap
        regs = [
            *float_regs(s.chamber_temp_c),
            *float_regs(s.pressure_mtorr),
            *float_regs(s.rf_power_w),
            *float_regs(s.gas_flow_sccm),
            s.lot_id,
            s.wafer,
            s.step,
            self.status,
            s.heartbeat,
            *float_regs(s.wafer_elapsed_s),
            self.cfg.recipe_id,
        ]
        regs += [0] * (REG_COUNT - len(regs))
        regs[REG_EXCURSION] = 1 if self.excursion_until is not None else 0
        return regs

    def coils(self) -> list[bool]:
        return [self.stopped, False]


@dataclass(frozen=True)
class ChamberRun:
    """`n` readings of an undisturbed run: times (s), chamber temperatures (C) and the
    excursions as (start, end) times (s) of the offset ramp."""

    t_s: np.ndarray
    temp_c: np.ndarray
    excursions: list[tuple[float, float]]


def chamber_series(seed: int, n: int, dt: float = 0.1,
                   config: EtchConfig | None = None) -> ChamberRun:
    """The chamber temperatures `EtchModel(seed, config).step(dt)` gives over `n` steps
    when nobody commands the tool (scheduled excursions only, never stopped), computed
    whole-array: a day of 0.1 s readings in well under a second. Same random numbers,
    same schedule rules; equal to the stepped model within float rounding (1e-9 C)."""
    c = config or EtchConfig()
    noise = np.random.default_rng([seed, 2]).standard_normal((n, 4))[:, 0]
    t_s = np.cumsum(np.full(n, dt))
    due = sorted(c.excursion_at_s)
    every = c.excursion_every_s
    periodic = []
    if every:
        periodic = list(np.arange(every, t_s[-1] + every, every)) if n else []
    # (step of each trigger attempt) due triggers come before periodic ones in a step
    attempts = sorted([(int(np.searchsorted(t_s, d)), 0) for d in due]
                      + [(int(np.searchsorted(t_s, p)), 1) for p in periodic])
    segments: list[tuple[int, int]] = []
    busy_until = -1
    for k, _ in attempts:
        if k >= n or k < busy_until:
            continue
        end = int(np.searchsorted(t_s, t_s[k] + c.excursion_duration_s))
        segments.append((k, end))
        busy_until = end
    offset = np.zeros(n)
    q = math.exp(-dt / c.excursion_decay_tau_s)
    peak, rise = c.excursion_peak_c - c.setpoint_c, c.excursion_ramp_c_per_s * dt
    o, k = 0.0, 0
    for ks, seg_end in [*segments, (n, n)]:
        offset[k:ks] = o * q ** np.arange(1, ks - k + 1)
        o = offset[ks - 1] if ks > k else o
        ke = min(seg_end, n)
        offset[ks:ke] = np.minimum(peak, o + rise * np.arange(1, ke - ks + 1))
        o = offset[ke - 1] if ke > ks else o
        k = ke
    temp = c.setpoint_c + offset + np.clip(noise * c.noise_c, -c.noise_clip_c, c.noise_clip_c)
    ex = [(float(t_s[a]), float(t_s[min(b, n - 1)])) for a, b in segments]
    return ChamberRun(t_s, temp, ex)
