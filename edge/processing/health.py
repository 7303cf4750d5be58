"""Motor health: current features, an online baseline, a 0-1 index, time to failure.

Invariants:

* Features come from numba scans over each motor's samples with state carried between
  batches (``kernels.motor_scan``, ``kernels.level_track``): running level (EWMA of
  running current, inrush and spikes excluded), RMS, spike rate, micro-stoppages,
  inrush peak; vibration and temperature levels where their tags are configured.
* The baseline is learned online: the mean of the first ``baseline_samples`` running
  samples (and of the first samples of vibration/temperature). No health is reported
  before the current baseline exists.
* Health = 1 - the weighted mean of the degradation fractions (rise over baseline /
  rise at failure) of the features present, clipped to 0..1. It is computed once per
  ``health_interval_s`` of sample time.
* Time to failure assumes what the current feature's physics says: wear, and so the
  rise of the running current, grows linearly with *operating* time (running samples),
  not wall time; idle time and micro-stoppages wear nothing. The trend is the
  Theil-Sen line of health against operating time over the motor's whole history
  since its baseline (a point joins only if the motor ran since the previous one),
  kept to at most ``trend_window`` points by merging neighbours into their mean (the
  stride doubled), so the fit always spans the life seen so far and uses every point
  seen. Failure is one full failure rise below the line's health at operating time
  zero: the healthy level as the whole history estimates it, far less noisy than the
  baseline mean of the first samples, whose error would otherwise shift every estimate
  by a constant. Near the end the relative error of the remaining operating time is
  the line's relative error times life / remaining, so the line must be unbiased to a
  fraction of a percent.
* Operating time of a point is the running-sample count less the level EWMA's lag,
  (1 - ``level_alpha``) / ``level_alpha`` level updates; spikes do not update the level,
  so that lag is divided by the fraction of running samples that are not spikes (from
  the spike rate then). Without that the line flattens as spikes grow with wear.
* Remaining operating time becomes wall time in two parts. The production cycle (idle
  and run lengths) does not depend on wear: its seconds per operating sample, net of
  micro-stoppage time, come from the whole history. Micro-stoppages do depend on wear
  (a worn motor stalls more often): their time per operating sample is taken as
  proportional to the wear (1 - health along the line), its factor measured over the
  newer half of the history, and integrated from now to failure. Micro-stoppage time
  is its stopped samples times the motor's mean sample interval.
* Time to failure is 0 past the failure point, infinite (reported as ``ttf_horizon_s``)
  while the line is not falling, the motor has not run over the newer half of the
  history, or fewer than ``min_trend_points`` points exist.
* A motor replaced while the gateway runs keeps its history: restart the gateway (or
  the stage) after a replacement, as for any change of the baseline.
* Each alert (health below ``alert_health``, time to failure below ``alert_ttf_s``)
  fires once per crossing and re-arms only past its hysteresis. The health alert
  judges the trend line's value now (less noisy than a single point) once a trend
  exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.components import BuildContext, StageOutput
from edge.config import ConfigStruct
from edge.errors import ConfigError
from edge.model import HealthAlert, Quality, Record, SampleBatch, TagRegistry


class MotorConfig(ConfigStruct, frozen=True):
    """One motor: its name (tag device of ``<name>/health``) and its signal tags."""

    name: str
    current_tag: str
    vibration_tag: str = ""
    temperature_tag: str = ""

    def __post_init__(self) -> None:
        for key in ("current_tag", "vibration_tag", "temperature_tag"):
            v = getattr(self, key)
            if (v or key == "current_tag") and v.count("/") < 1:
                raise ValueError(f"{key} must be 'device/name', got {v!r}")


class HealthConfig(ConfigStruct, frozen=True):
    """``[[health]]``: a group of motors judged with the same model settings."""

    name: str
    motors: list[MotorConfig]
    running_above_a: float = 0.6
    stopped_below_a: float = 0.025
    spike_delta_a: float = 0.3
    inrush_samples: int = 3
    microstop_max_samples: int = 12
    level_alpha: float = 0.02
    rate_alpha: float = 0.01
    baseline_samples: int = 100
    wear_current_rise_a: float = 0.1
    vibration_rise_at_failure: float = 1.0
    temperature_rise_at_failure_c: float = 20.0
    weight_current: float = 1.0
    weight_vibration: float = 1.0
    weight_temperature: float = 0.5
    health_interval_s: float = 10.0
    trend_window: int = 120
    min_trend_points: int = 10
    ttf_horizon_s: float = 2_592_000.0
    alert_health: float = 0.5
    rearm_health: float = 0.1
    alert_ttf_s: float = 3600.0
    rearm_ttf_fraction: float = 0.2
    emit_samples: bool = True

    def __post_init__(self) -> None:
        if not self.motors:
            raise ValueError("motors must list at least one motor")
        names = [m.name for m in self.motors]
        if len(set(names)) != len(names):
            raise ValueError("motors: a motor name is used twice")
        if not 0 <= self.stopped_below_a < self.running_above_a:
            raise ValueError("stopped_below_a must be >= 0 and below running_above_a")
        for key in ("spike_delta_a", "wear_current_rise_a", "vibration_rise_at_failure",
                    "temperature_rise_at_failure_c", "health_interval_s", "ttf_horizon_s",
                    "alert_ttf_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0")
        for key in ("level_alpha", "rate_alpha"):
            if not 0 < getattr(self, key) <= 1:
                raise ValueError(f"{key} must be in (0, 1]")
        for key in ("weight_current", "weight_vibration", "weight_temperature"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0")
        if self.baseline_samples < 1:
            raise ValueError("baseline_samples must be >= 1")
        if self.inrush_samples < 0 or self.microstop_max_samples < 1:
            raise ValueError("inrush_samples must be >= 0 and microstop_max_samples >= 1")
        if not 3 <= self.min_trend_points <= self.trend_window <= 500:
            raise ValueError("trend_window must be between min_trend_points (>= 3) and 500")
        if not 0 < self.alert_health < 1:
            raise ValueError("alert_health must be between 0 and 1")

    def declare_tags(self, tags: TagRegistry) -> None:
        """``<motor>/health`` (0-1) and ``<motor>/ttf_s`` for every motor."""
        if not self.emit_samples:
            return
        for m in self.motors:
            tags.add(m.name, "health", low=0.0, high=1.0, description="health index 0-1")
            tags.add(m.name, "ttf_s", unit="s", description="estimated time to failure")

    def scan_params(self) -> npt.NDArray[np.float64]:
        from edge.processing import kernels as K

        p = np.empty(K.N_MOTOR_PARAMS)
        p[:] = (self.running_above_a, self.stopped_below_a, self.spike_delta_a,
                self.level_alpha, self.rate_alpha, self.inrush_samples,
                self.baseline_samples, self.microstop_max_samples)
        return p


def _level_state() -> npt.NDArray[np.float64]:
    return np.array([math.nan, 0.0, 0.0, math.nan])


@dataclass(slots=True)
class _Motor:
    cfg: MotorConfig
    group: HealthConfig
    current: int
    vibration: int
    temperature: int
    health_tag: int
    ttf_tag: int
    scan: npt.NDArray[np.float64]
    vib: npt.NDArray[np.float64] = field(default_factory=_level_state)
    temp: npt.NDArray[np.float64] = field(default_factory=_level_state)
    # trend history, one row per point: [time s, operating samples, operating samples
    # less the level lag, health, micro-stoppage samples]; acc sums the rows of the
    # point being merged (acc_n of them)
    hist: list[list[float]] = field(default_factory=list)
    acc: list[float] = field(default_factory=lambda: [0.0] * 5)
    acc_n: int = 0
    stride: int = 1
    points: int = 0
    last_op: float = -1.0
    next_point_ns: int = -1
    t0_ns: int = -1
    first_ns: int = -1
    samples: int = 0
    health: float = math.nan
    ttf_s: float = math.nan
    trend_health: float = math.nan
    health_armed: bool = True
    ttf_armed: bool = True


class Health:
    """The motor-health stage for every configured motor."""

    name = "health"

    def __init__(self, configs: Sequence[HealthConfig], tags: TagRegistry,
                 ctx: BuildContext | None = None) -> None:
        from edge.processing import kernels as K

        self._k = K
        self.motors: dict[str, _Motor] = {}
        self._params: dict[str, npt.NDArray[np.float64]] = {}
        for group in configs:
            group.declare_tags(tags)
            self._params[group.name] = group.scan_params()
            for m in group.motors:
                if m.name in self.motors:
                    raise ConfigError(f"health '{group.name}': motor '{m.name}' is judged twice")
                scan = np.zeros(K.N_MOTOR_STATE)
                scan[[0, 4, 12, 15]] = math.nan
                scan[9] = 1.0
                self.motors[m.name] = _Motor(
                    m, group, _id(tags, m.current_tag, group.name),
                    _id(tags, m.vibration_tag, group.name) if m.vibration_tag else -1,
                    _id(tags, m.temperature_tag, group.name) if m.temperature_tag else -1,
                    tags.id_of(f"{m.name}/health") if group.emit_samples else -1,
                    tags.id_of(f"{m.name}/ttf_s") if group.emit_samples else -1,
                    scan,
                )
        self._m_alerts = None
        if ctx is not None:
            self._m_alerts = ctx.metrics.counter(
                "edge_health_alerts_total", "Motor health alerts", ["motor", "reason"])

    def process(self, batch: SampleBatch, records: Sequence[Record], now_ns: int) -> StageOutput:
        out = StageOutput(batch, list(records))
        if len(batch) == 0:
            return out
        tag_ids = batch.tag_id
        ids: list[int] = []
        ts: list[int] = []
        vals: list[float] = []
        quals: list[int] = []
        for motor in self.motors.values():
            g = motor.group
            idx = np.flatnonzero(tag_ids == motor.current)
            last_ts = -1
            if idx.shape[0]:
                cur = np.where(batch.quality[idx] & 0x80, np.nan, batch.value[idx])
                self._k.motor_scan(cur, self._params[g.name], motor.scan)
                last_ts = int(batch.ts_ns[idx[-1]])
                if motor.first_ns < 0:
                    motor.first_ns = int(batch.ts_ns[idx[0]])
                motor.samples += int(idx.shape[0])
            for tag, state in ((motor.vibration, motor.vib), (motor.temperature, motor.temp)):
                if tag >= 0:
                    j = np.flatnonzero(tag_ids == tag)
                    if j.shape[0]:
                        v = np.where(batch.quality[j] & 0x80, np.nan, batch.value[j])
                        self._k.level_track(v, g.level_alpha, float(g.baseline_samples), state)
            due = last_ts >= 0 and motor.next_point_ns <= last_ts
            if due and self._point(motor, last_ts, out) and g.emit_samples:
                ids += [motor.health_tag, motor.ttf_tag]
                ts += [last_ts, last_ts]
                q_ttf = (Quality.GOOD if motor.ttf_s < g.ttf_horizon_s
                         else Quality.UNCERTAIN_OUT_OF_RANGE)
                vals += [motor.health, min(motor.ttf_s, g.ttf_horizon_s)]
                quals += [int(Quality.GOOD), int(q_ttf)]
        if ids:
            out.batch = SampleBatch.concat([batch, SampleBatch(ids, ts, vals, quals)])
        return out

    def tick(self, now_ns: int) -> StageOutput:
        return StageOutput(SampleBatch.empty())

    def conditions(self, now_ns: int) -> dict[str, tuple[bool, bool]]:
        """Per motor: (latched, active) for the condition board. An alert is active until
        it re-arms (health or time to failure back past its hysteresis); none latches."""
        return {name: (False, not (m.health_armed and m.ttf_armed))
                for name, m in self.motors.items()}

    def states(self) -> dict[str, dict[str, float]]:
        """Per motor: health, ttf_s and the features behind them."""
        out: dict[str, dict[str, float]] = {}
        for name, m in self.motors.items():
            s = m.scan
            run = max(float(s[1]), 1.0)
            out[name] = {
                "health": float(m.health), "ttf_s": float(m.ttf_s),
                "running_level_a": float(s[0]), "baseline_a": float(s[4]),
                "rms_a": math.sqrt(s[15]) if s[15] == s[15] else math.nan,
                "spike_rate": float(s[5]), "spikes": float(s[7]),
                "micro_stoppages": float(s[8]), "micro_stoppage_rate": float(s[6]),
                "micro_stoppage_samples": float(s[17]),
                "inrush_peak_a": float(s[12]), "starts": float(s[16]),
                "spikes_per_running_sample": float(s[7]) / run,
                "vibration": float(m.vib[0]), "temperature_c": float(m.temp[0]),
            }
        return out

    # ------------------------------------------------------------------ internals

    def _index(self, motor: _Motor) -> float:
        """1 - the weighted degradation, not clipped (the trend needs its noise whole)."""
        g, s = motor.group, motor.scan
        if not math.isfinite(s[4]):
            return math.nan
        parts = [(g.weight_current, (s[0] - s[4]) / g.wear_current_rise_a)]
        if motor.vibration >= 0 and math.isfinite(motor.vib[3]):
            parts.append((g.weight_vibration,
                          (motor.vib[0] - motor.vib[3]) / g.vibration_rise_at_failure))
        if motor.temperature >= 0 and math.isfinite(motor.temp[3]):
            parts.append((g.weight_temperature,
                          (motor.temp[0] - motor.temp[3]) / g.temperature_rise_at_failure_c))
        weight = sum(w for w, _ in parts)
        if weight <= 0:
            return math.nan
        return float(1.0 - sum(w * x for w, x in parts) / weight)

    def _point(self, motor: _Motor, ts_ns: int, out: StageOutput) -> bool:
        g = motor.group
        h = self._index(motor)
        if not math.isfinite(h):
            return False
        if motor.t0_ns < 0:
            motor.t0_ns = ts_ns
        motor.next_point_ns = ts_ns + round(g.health_interval_s * 1e9)
        now_s, op = (ts_ns - motor.t0_ns) / 1e9, float(motor.scan[1])
        ran = op > motor.last_op  # idle time says nothing about wear
        if ran:
            motor.last_op = op
            lag = (1.0 - g.level_alpha) / g.level_alpha / max(1.0 - float(motor.scan[5]), 0.5)
            row = (now_s, op, op - lag, h, float(motor.scan[17]))
            motor.acc = [a + v for a, v in zip(motor.acc, row, strict=True)]
            motor.acc_n += 1
            if motor.acc_n >= motor.stride:
                motor.hist.append([a / motor.acc_n for a in motor.acc])
                motor.acc, motor.acc_n = [0.0] * 5, 0
                if len(motor.hist) > g.trend_window:
                    old, n = motor.hist, len(motor.hist) // 2 * 2
                    motor.hist = [[(a + b) / 2 for a, b in zip(old[i], old[i + 1], strict=True)]
                                  for i in range(0, n, 2)] + old[n:]
                    motor.stride *= 2
        motor.points += ran
        motor.health = min(1.0, max(0.0, h))
        motor.ttf_s = self._ttf(motor, now_s, op, ts_ns)
        self._alerts(motor, ts_ns, out)
        return True

    def _ttf(self, motor: _Motor, now_s: float, op: float, ts_ns: int) -> float:
        g = motor.group
        if motor.points < g.min_trend_points or len(motor.hist) < 2:
            return math.inf  # thinning may leave fewer in the buffer than points seen
        hist = np.array(motor.hist)
        line = np.empty(2)
        self._k.theil_sen(np.ascontiguousarray(hist[:, 2]), np.ascontiguousarray(hist[:, 3]),
                          line)
        slope, healthy = float(line[0]), float(line[1])
        motor.trend_health = healthy + slope * op
        if not slope < 0:
            return math.inf
        remaining_op = (motor.trend_health - (healthy - 1.0)) / -slope
        if remaining_op <= 0:
            return 0.0
        (t0, op0, _, _, ms0), (t1, op1, _, _, ms1) = motor.hist[0], motor.hist[len(hist) // 2]
        if not now_s > t1 or not op > op1:
            return math.inf  # not running lately: a stopped motor does not wear
        ms_now = float(motor.scan[17])
        period = (ts_ns - motor.first_ns) / 1e9 / max(motor.samples - 1, 1)
        cycle = (now_s - t0 - period * (ms_now - ms0)) / (op - op0)
        # micro-stoppage samples per operating sample = k x wear, wear = -slope x op
        wear_half = -slope * (op1 + op) / 2
        k = (ms_now - ms1) / (op - op1) / wear_half if wear_half > 0 else 0.0
        ms_left = k * remaining_op * (-slope * op + 1.0) / 2  # the wear is 1 at failure
        return max(cycle, 0.0) * remaining_op + period * max(ms_left, 0.0)

    def _alerts(self, motor: _Motor, ts_ns: int, out: StageOutput) -> None:
        g, ttf = motor.group, motor.ttf_s
        h = motor.trend_health if math.isfinite(motor.trend_health) else motor.health
        name = motor.cfg.name
        if motor.health_armed and h < g.alert_health:
            motor.health_armed = False
            self._alert(out, ts_ns, name, h, ttf, f"health {h:.2f} below {g.alert_health}")
        elif not motor.health_armed and h > g.alert_health + g.rearm_health:
            motor.health_armed = True
        if motor.ttf_armed and ttf < g.alert_ttf_s:
            motor.ttf_armed = False
            self._alert(out, ts_ns, name, h, ttf,
                        f"time to failure {ttf:.0f} s below {g.alert_ttf_s:.0f} s")
        elif not motor.ttf_armed and ttf > g.alert_ttf_s * (1 + g.rearm_ttf_fraction):
            motor.ttf_armed = True

    def _alert(self, out: StageOutput, ts_ns: int, motor: str, h: float, ttf: float,
               reason: str) -> None:
        out.records.append(HealthAlert(ts_ns=ts_ns, motor=motor, health=h,
                                       ttf_s=ttf if math.isfinite(ttf) else -1.0,
                                       reason=reason))
        if self._m_alerts is not None:
            self._m_alerts.labels(motor, reason.split(" ", 1)[0]).inc()


def _id(tags: TagRegistry, key: str, group: str) -> int:
    try:
        return tags.id_of(key)
    except KeyError:
        raise ConfigError(f"health '{group}': tag '{key}' is not declared by any source") \
            from None
