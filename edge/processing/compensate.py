"""Thermal compensation of CMM lengths to the ISO 1 reference temperature (20 C).

    L20 = L_meas * (1 + a_scale (T_scale - 20)) / (1 + a_part (T_part - 20))

Invariants:

* Every ``CmmReading`` of a configured device is replaced by one ``Measurement``
  (raw, temperatures, L20, expanded uncertainty U = k u, verdict) and one sample of
  L20, or, when it cannot be physical (``edge.processing.plausibility``: tolerance or
  nominal not above 0, a temperature outside its sensor's range, a measured value
  absurdly far from nominal), by one ``Quarantine`` with the reason and no sample: a
  sensor fault or a typo gets no verdict. Readings of other devices and all other
  records pass through untouched.
* Decision rule (ISO 14253-1 style guard bands, symmetric tolerance): *conforming*
  only when ``|L20 - nominal| + U <= tol``; *nonconforming* only when
  ``|L20 - nominal| - U > tol``; otherwise, or when L20 or U is not finite,
  *indeterminate*. A good part is therefore rejected only if the error exceeds U.
* Where the part has no probe (NaN, or ``part_temp = "estimate"``), its temperature is
  a first-order lag of the air history (time constant ``part_tau_s``, default 600 s;
  measure it for your parts, e.g. one probed part over an HVAC cycle: in hw_sim a tau
  25 % off loses about 10 points of removed error), flagged ``part_temp_estimated`` and
  carried with the larger ``u_part_temp_estimated_c``; the L20 sample then has quality
  ``uncertain_estimated``. The air comes from the readings' ``air_temp_c`` or, with
  ``air_temp_tag``, from that tag's samples, carried to each reading's time. The lag
  sees only what the air does to the part: a part's own offset from the air (handling,
  machining heat) is invisible to it, and against hw_sim's 0.2 C per-part offset it
  removes about 92 % of the thermal error, as much as the exact air-driven part
  temperature would (99.5 % without that offset; 99.2 % with a probe).
* u combines (first order, uncorrelated) the part and scale temperatures, both CTEs and
  the probing uncertainty; see ``kernels.compensate_with_uncertainty``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

from edge.components import BuildContext, StageOutput
from edge.config import ConfigStruct
from edge.model import CmmReading, Measurement, Quality, Record, SampleBatch, TagRegistry
from edge.processing.plausibility import (
    LIMIT_KEYS,
    FeatureLimits,
    Limits,
    Plausibility,
    check_limits,
    check_range,
    quarantine,
)

Verdict = Literal["conforming", "nonconforming", "indeterminate"]


class CompensationConfig(ConfigStruct, frozen=True):
    """``[[compensation]]``: compensation and judgement of one CMM's readings."""

    name: str
    device: str = ""  # CmmReading.device this applies to; default: the name
    alpha_part: float = 23.6e-6
    u_alpha_part: float = 1.2e-6
    alpha_scale: float = 8.0e-6
    u_alpha_scale: float = 1.0e-6
    u_part_temp_c: float = 0.1
    u_scale_temp_c: float = 0.1
    u_probe_mm: float = 0.0005
    coverage_k: float = 2.0
    part_temp: Literal["auto", "probe", "estimate"] = "auto"
    part_tau_s: float = 600.0
    u_part_temp_estimated_c: float = 0.5
    air_temp_tag: str = ""
    features: tuple[str, ...] = ()
    # Plausibility (see edge.processing.plausibility): a reading outside these is
    # quarantined with a reason instead of judged. Temperatures per sensor, in C.
    part_temp_range_c: tuple[float, float] = (-40.0, 150.0)
    air_temp_range_c: tuple[float, float] = (-40.0, 150.0)
    scale_temp_range_c: tuple[float, float] = (-40.0, 150.0)
    # Every feature, unless feature_limits says otherwise for it.
    nominal_above_mm: float = 0.0
    nominal_max_mm: float = 10_000.0
    tol_above_mm: float = 0.0
    tol_max_mm: float = 10.0
    max_deviation_tol: float = 100.0
    max_deviation_mm: float = 1.0
    feature_limits: dict[str, FeatureLimits] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")
        for key in ("alpha_part", "alpha_scale"):
            if not 0 <= getattr(self, key) < 1e-3:
                raise ValueError(f"{key} must be a CTE in 1/K between 0 and 1e-3")
        for key in ("u_alpha_part", "u_alpha_scale", "u_part_temp_c", "u_scale_temp_c",
                    "u_probe_mm", "u_part_temp_estimated_c"):
            v = getattr(self, key)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{key} must be a finite number >= 0")
        if not 1 <= self.coverage_k <= 3:
            raise ValueError("coverage_k must be between 1 and 3")
        if not self.part_tau_s > 0:
            raise ValueError("part_tau_s must be > 0")
        if self.air_temp_tag and self.air_temp_tag.count("/") < 1:
            raise ValueError("air_temp_tag must be 'device/name'")
        for key in ("part_temp_range_c", "air_temp_range_c", "scale_temp_range_c"):
            check_range(getattr(self, key), key)
        check_limits(self.limits(""), "")
        for feature in self.feature_limits:
            if self.features and feature not in self.features:
                raise ValueError(f"feature_limits.{feature}: not one of features "
                                 f"{list(self.features)}")
            check_limits(self.limits(feature), f"feature_limits.{feature}.")

    def limits(self, feature: str) -> Limits:
        """The plausible values of a feature: its ``feature_limits`` over the section's."""
        own = self.feature_limits.get(feature)
        return Limits(*(getattr(self, k) if own is None or getattr(own, k) is None
                        else getattr(own, k) for k in LIMIT_KEYS))

    def plausibility(self) -> Plausibility:
        ranges = {f"{s}_temp_c": getattr(self, f"{s}_temp_range_c")
                  for s in ("part", "air", "scale")}
        return Plausibility(self.limits(""), {f: self.limits(f) for f in self.feature_limits},
                            ranges)

    @property
    def cmm(self) -> str:
        return self.device or self.name

    def tag_key(self, feature: str) -> str | None:
        """The L20 tag for a feature, or None when the feature has none."""
        if not self.features:
            return f"{self.cmm}/l20_mm"
        return f"{self.cmm}/{feature}/l20_mm" if feature in self.features else None

    def declare_tags(self, tags: TagRegistry) -> None:
        """``<device>/<feature>/l20_mm`` per listed feature, else one ``<device>/l20_mm``."""
        if not self.features:
            tags.add(self.cmm, "l20_mm", unit="mm", description="length at 20 C")
        for f in self.features:
            tags.add(self.cmm, f"{f}/l20_mm", unit="mm", description=f"{f} length at 20 C")


def verdict(l20: float, u_expanded: float, nominal: float, tol: float) -> Verdict:
    """The guard-banded decision rule of this module's docstring."""
    if not (math.isfinite(l20) and math.isfinite(u_expanded)):
        return "indeterminate"
    dev = abs(l20 - nominal)
    if dev + u_expanded <= tol:
        return "conforming"
    if dev - u_expanded > tol:
        return "nonconforming"
    return "indeterminate"


@dataclass(slots=True)
class _Cmm:
    cfg: CompensationConfig
    lag: npt.NDArray[np.float64]
    lag_ts: npt.NDArray[np.int64]
    air_tag: int
    tag_ids: dict[str, int]
    plausible: Plausibility


class Compensate:
    """The compensation stage for every configured CMM."""

    name = "compensate"

    def __init__(self, configs: Sequence[CompensationConfig], tags: TagRegistry,
                 ctx: BuildContext | None = None) -> None:
        from edge.processing import kernels as K

        self._k = K
        self.cmms: dict[str, _Cmm] = {}
        for cfg in configs:
            cfg.declare_tags(tags)
            ids = {f: tags.id_of(k) for f in cfg.features
                   if (k := cfg.tag_key(f)) is not None}
            if not cfg.features:
                ids[""] = tags.id_of(f"{cfg.cmm}/l20_mm")
            air = tags.id_of(cfg.air_temp_tag) if cfg.air_temp_tag else -1
            self.cmms[cfg.cmm] = _Cmm(cfg, np.zeros(3), np.zeros(1, np.int64), air, ids,
                                      cfg.plausibility())
        self._m_verdict = None
        if ctx is not None:
            self._m_verdict = ctx.metrics.counter(
                "edge_compensation_measurements_total", "Compensated CMM measurements",
                ["device", "verdict"])

    def process(self, batch: SampleBatch, records: Sequence[Record], now_ns: int) -> StageOutput:
        for cmm in self.cmms.values():
            if cmm.air_tag >= 0 and len(batch):
                idx = np.flatnonzero(batch.tag_id == cmm.air_tag)
                if idx.shape[0]:
                    ts = batch.ts_ns[idx]
                    air = np.where(batch.quality[idx] & 0x80, np.nan, batch.value[idx])
                    lo, hi = cmm.cfg.air_temp_range_c
                    air[(air < lo) | (air > hi)] = np.nan  # a sensor fault must not steer the lag
                    order = np.argsort(ts, kind="stable")
                    self._k.lag_estimate(ts[order], np.ascontiguousarray(air[order]),
                                         cmm.cfg.part_tau_s, cmm.lag, cmm.lag_ts,
                                         np.empty(idx.shape[0]))
        readings: dict[str, list[int]] = {}
        for i, rec in enumerate(records):
            if isinstance(rec, CmmReading) and rec.device in self.cmms:
                readings.setdefault(rec.device, []).append(i)
        if not readings:
            return StageOutput(batch, list(records))
        out_records: list[Record] = list(records)
        new_tags: list[int] = []
        new_ts: list[int] = []
        new_val: list[float] = []
        new_q: list[int] = []
        for device, at in readings.items():
            cmm = self.cmms[device]
            rows: list[CmmReading] = [records[i] for i in at]  # type: ignore[misc]
            good, implausible = cmm.plausible.split(rows)
            for k, reason in implausible:
                out_records[at[k]] = quarantine(rows[k], reason)
                if self._m_verdict is not None:
                    self._m_verdict.labels(device, "quarantined").inc()
            positions = [at[k] for k in good]
            if not positions:
                continue
            measurements = self._judge(cmm, [rows[k] for k in good] if implausible else rows)
            for pos, m in zip(positions, measurements, strict=True):
                out_records[pos] = m
                tag = cmm.tag_ids.get(m.feature, -1) if cmm.cfg.features else cmm.tag_ids[""]
                if tag >= 0:
                    new_tags.append(tag)
                    new_ts.append(m.ts_ns)
                    new_val.append(m.l20_mm)
                    new_q.append(_quality(m))
        if new_tags:
            extra = SampleBatch(new_tags, new_ts, new_val, new_q)
            batch = SampleBatch.concat([batch, extra]) if len(batch) else extra
        return StageOutput(batch, out_records)

    def tick(self, now_ns: int) -> StageOutput:
        return StageOutput(SampleBatch.empty())

    def _judge(self, cmm: _Cmm, rows: Sequence[CmmReading]) -> list[Measurement]:
        cfg, K = cmm.cfg, self._k
        n = len(rows)
        ts = np.fromiter((r.ts_ns for r in rows), np.int64, n)
        meas = np.fromiter((r.measured_mm for r in rows), np.float64, n)
        probe = np.fromiter((r.part_temp_c for r in rows), np.float64, n)
        scale = np.fromiter((r.scale_temp_c for r in rows), np.float64, n)
        est = np.empty(n)
        if cmm.air_tag >= 0:
            est[:] = _held_air_estimate(cmm, ts)
        else:
            air = np.fromiter((r.air_temp_c for r in rows), np.float64, n)
            order = np.argsort(ts, kind="stable")
            sorted_est = np.empty(n)
            K.lag_estimate(ts[order], np.ascontiguousarray(air[order]), cfg.part_tau_s,
                           cmm.lag, cmm.lag_ts, sorted_est)
            est[order] = sorted_est
        if cfg.part_temp == "probe":
            use_est = np.zeros(n, bool)
        elif cfg.part_temp == "estimate":
            use_est = np.ones(n, bool)
        else:
            use_est = ~np.isfinite(probe)
        tp = np.where(use_est, est, probe)
        u_tp = np.where(use_est, cfg.u_part_temp_estimated_c, cfg.u_part_temp_c)
        u_ts = np.full(n, cfg.u_scale_temp_c)
        l20, u = np.empty(n), np.empty(n)
        K.compensate_with_uncertainty(meas, tp, scale, cfg.alpha_part, cfg.alpha_scale,
                                      u_tp, u_ts, cfg.u_alpha_part, cfg.u_alpha_scale,
                                      cfg.u_probe_mm, l20, u)
        big_u = cfg.coverage_k * u
        out = []
        for i, r in enumerate(rows):
            v = verdict(float(l20[i]), float(big_u[i]), r.nominal_mm, r.tol_mm)
            out.append(Measurement(
                ts_ns=r.ts_ns, device=r.device, part_id=r.part_id, lot=r.lot,
                feature=r.feature, nominal_mm=r.nominal_mm, tol_mm=r.tol_mm,
                raw_mm=r.measured_mm, part_temp_c=float(tp[i]), air_temp_c=r.air_temp_c,
                scale_temp_c=r.scale_temp_c, l20_mm=float(l20[i]), u_mm=float(big_u[i]),
                verdict=v, part_temp_estimated=bool(use_est[i]), source=r.where,
            ))
            if self._m_verdict is not None:
                self._m_verdict.labels(r.device, v).inc()
        return out


def _held_air_estimate(cmm: _Cmm, ts: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """The lag state carried from the last air sample to each reading's time, the air held
    at that sample meanwhile (the part keeps relaxing towards it); NaN before any air."""
    x, air, ok = cmm.lag
    if not ok:
        return np.full(ts.shape[0], np.nan)
    dt_s = np.maximum(ts - cmm.lag_ts[0], 0) / 1e9
    return air + (x - air) * np.exp(-dt_s / cmm.cfg.part_tau_s)  # type: ignore[no-any-return]


def _quality(m: Measurement) -> int:
    if not math.isfinite(m.l20_mm):
        return int(Quality.BAD_MISSING)
    if m.part_temp_estimated:
        return int(Quality.UNCERTAIN_ESTIMATED)
    return int(Quality.GOOD_COMPENSATED)
