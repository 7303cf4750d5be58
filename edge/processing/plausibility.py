"""Plausibility of CMM readings: what a reading may say and still be judged.

A reading that cannot be physical (a negative tolerance, a part at 500 C, a length of
1e300 mm) says nothing about the part: judging it would turn a sensor fault or a typo in
the inspection plan into a false reject, or worse, a false accept. Such a reading is
set aside as a ``Quarantine`` naming the device, part, feature, every offending field
with its value and the rule it broke, and carrying the whole reading as its payload; it
gets no verdict and no L20 sample.

Invariants:

* The check is whole-array numpy over the readings of one batch, made before the
  compensation kernels run; the kernels only ever see plausible rows.
* A temperature that is NaN is *missing*, not implausible (no part probe, no air
  column); it is left to the compensation's own rules. Any other value outside its
  sensor's range, including +-inf, is implausible.
* Nominal, tolerance and measured value must be finite. The deviation rule is checked
  only when all three are otherwise plausible, so one reason names the real fault.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

import msgspec
import numpy as np
import numpy.typing as npt

from edge.config import ConfigStruct
from edge.model import CmmReading, Quarantine

LIMIT_KEYS = ("nominal_above_mm", "nominal_max_mm", "tol_above_mm", "tol_max_mm",
              "max_deviation_tol", "max_deviation_mm")


class FeatureLimits(ConfigStruct, frozen=True):
    """``feature_limits.<feature>``: a feature's own plausible values; an unset key
    takes the section's value."""

    nominal_above_mm: float | None = None
    nominal_max_mm: float | None = None
    tol_above_mm: float | None = None
    tol_max_mm: float | None = None
    max_deviation_tol: float | None = None
    max_deviation_mm: float | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """The resolved plausible values of one feature (see ``check_limits``)."""

    nominal_above_mm: float
    nominal_max_mm: float
    tol_above_mm: float
    tol_max_mm: float
    max_deviation_tol: float
    max_deviation_mm: float


def check_limits(lim: Limits, where: str) -> None:
    """ValueError naming ``where`` and the key when the limits cannot be applied."""
    for key in LIMIT_KEYS:
        if not math.isfinite(getattr(lim, key)):
            raise ValueError(f"{where}{key} must be a finite number")
    if not lim.nominal_above_mm < lim.nominal_max_mm:
        raise ValueError(f"{where}nominal_above_mm must be below nominal_max_mm")
    if not 0 <= lim.tol_above_mm < lim.tol_max_mm:
        raise ValueError(f"{where}tol_above_mm must be >= 0 and below tol_max_mm")
    if not lim.max_deviation_tol > 0:
        raise ValueError(f"{where}max_deviation_tol must be > 0")
    if not lim.max_deviation_mm >= 0:
        raise ValueError(f"{where}max_deviation_mm must be >= 0")


def check_range(value: tuple[float, ...], key: str) -> None:
    """ValueError naming ``key`` unless ``value`` is [low, high], finite, low < high."""
    if len(value) != 2 or not all(math.isfinite(v) for v in value) or not value[0] < value[1]:
        raise ValueError(f"{key} must be [low, high] with finite low < high")


class Plausibility:
    """The check for one CMM: per-feature limits and per-sensor temperature ranges."""

    def __init__(self, default: Limits, per_feature: dict[str, Limits],
                 temp_ranges: dict[str, tuple[float, float]]) -> None:
        self.default = default
        self.per_feature = per_feature
        self.temp_ranges = temp_ranges

    def split(self, rows: Sequence[CmmReading]) -> tuple[list[int], list[tuple[int, str]]]:
        """(positions of plausible rows, [(position, reason)] of the others)."""
        n = len(rows)
        nominal = np.fromiter((r.nominal_mm for r in rows), np.float64, n)
        tol = np.fromiter((r.tol_mm for r in rows), np.float64, n)
        meas = np.fromiter((r.measured_mm for r in rows), np.float64, n)
        lim = self._limit_arrays(rows)
        with np.errstate(invalid="ignore", over="ignore"):
            bad = ~((nominal > lim[0]) & (nominal <= lim[1]) & (tol > lim[2])
                    & (tol <= lim[3]) & np.isfinite(meas))
            bad |= ~(np.abs(meas - nominal) <= np.maximum(lim[4] * tol, lim[5]))
            for field, (lo, hi) in self.temp_ranges.items():
                t = np.fromiter(map(attrgetter(field), rows), np.float64, n)
                bad |= ~np.isnan(t) & ~((t >= lo) & (t <= hi))
        if not bad.any():
            return list(range(n)), []
        good = np.flatnonzero(~bad).tolist()
        return good, [(i, self.reason(rows[i])) for i in np.flatnonzero(bad).tolist()]

    def reason(self, r: CmmReading) -> str:
        """Every rule the reading breaks, with the field and its value ("" if none)."""
        lm = self.per_feature.get(r.feature, self.default)
        out = []
        if not r.nominal_mm > lm.nominal_above_mm:
            out.append(f"nominal_mm={_g(r.nominal_mm)} must be above {_g(lm.nominal_above_mm)}")
        elif not r.nominal_mm <= lm.nominal_max_mm:
            out.append(f"nominal_mm={_g(r.nominal_mm)} must be at most {_g(lm.nominal_max_mm)}")
        if not r.tol_mm > lm.tol_above_mm:
            out.append(f"tol_mm={_g(r.tol_mm)} must be above {_g(lm.tol_above_mm)}")
        elif not r.tol_mm <= lm.tol_max_mm:
            out.append(f"tol_mm={_g(r.tol_mm)} must be at most {_g(lm.tol_max_mm)}")
        if not math.isfinite(r.measured_mm):
            out.append(f"measured_mm={_g(r.measured_mm)} must be a finite number")
        if not out:
            dev = abs(r.measured_mm - r.nominal_mm)
            if not dev <= max(lm.max_deviation_tol * r.tol_mm, lm.max_deviation_mm):
                out.append(f"measured_mm={_g(r.measured_mm)} is {_g(dev)} mm from nominal, "
                           f"beyond {_g(lm.max_deviation_tol)} x tol and "
                           f"{_g(lm.max_deviation_mm)} mm (wrong part or program? probe fault?)")
        for field, (lo, hi) in self.temp_ranges.items():
            t = getattr(r, field)
            if not math.isnan(t) and not lo <= t <= hi:
                out.append(f"{field}={_g(t)} outside the plausible {_g(lo)}..{_g(hi)} C"
                           " (sensor fault?)")
        return "; ".join(out)

    def _limit_arrays(self, rows: Sequence[CmmReading]) -> list[npt.NDArray[np.float64]]:
        d = self.default
        if not self.per_feature:
            return [np.full(len(rows), getattr(d, k)) for k in LIMIT_KEYS]
        table = np.array([[getattr(self.per_feature.get(r.feature, d), k) for k in LIMIT_KEYS]
                          for r in rows], np.float64).reshape(len(rows), len(LIMIT_KEYS))
        return [table[:, j] for j in range(len(LIMIT_KEYS))]


def quarantine(row: CmmReading, reason: str) -> Quarantine:
    """The record that takes an implausible reading's place: the whole reading kept as
    JSON, a non-finite number as the string "nan", "inf" or "-inf" (JSON has none)."""
    fields = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))
              for k, v in msgspec.structs.asdict(row).items()}
    return Quarantine(
        ts_ns=row.ts_ns, source=row.device, reason=f"implausible CMM reading: {reason}",
        where=row.where, subject=f"part={row.part_id} lot={row.lot} feature={row.feature}",
        payload=msgspec.json.encode(fields).decode(),
    )


def _g(v: float) -> str:
    return f"{v:g}"
