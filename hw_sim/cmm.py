"""CMM: Al 6061 parts measured in a shop whose air drifts with an HVAC cycle.

Physics (pure, seeded, in `CmmModel`):

* air: `mean + amplitude * sin(2 pi t / period + phase)` (18-26 C by default);
* part: first-order lag of the air with time constant `part_tau_s`, plus a small
  per-part offset; the scale: a slower lag (`scale_tau_s`);
* each feature has a true length at 20 C, `nominal + N(0, spread_frac * tol)`;
  it truly conforms when `|true - nominal| <= tol`;
* the CMM reads `true20 * (1 + alpha_part (Tp - 20) - alpha_scale (Ts - 20))`
  plus probe noise `N(0, probe_sigma_mm)`; temperatures are probed with noise.

So a gateway that compensates with the reported part and scale temperatures
recovers the true length within the noise; one that judges raw lengths rejects
good parts when the shop is warm. The random stream is consumed identically for
every part: same seed and same measuring times, same rows.

I/O (`CmmWriter`): per-part files `<dir>/<part_id>.csv` appear only by atomic
rename (temp file in the same folder, fsync, os.replace, fsync of the folder);
daily files `<dir>/cmm-YYYYMMDD.csv` grow by whole parts, flushed and fsynced per
part, header once. Bad data (off by default) spoils rows as written, never the
physics, and each spoiled row is in the ground truth.
"""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import DEFAULT_START_NS
from .baddata import BadData, Defects
from .chaos import Chaos, iso_in_offset
from .clock import SimClock, ticks
from .truth import TruthLog, iso_ns

CSV_HEADER = (
    "timestamp,part_id,lot,feature,nominal_mm,tol_mm,measured_mm,"
    "part_temp_c,air_temp_c,scale_temp_c"
)
ALPHA_AL6061 = 23.6e-6


@dataclass(frozen=True)
class Feature:
    name: str
    nominal_mm: float
    tol_mm: float  # symmetric: conforming when |true - nominal| <= tol


DEFAULT_FEATURES: tuple[Feature, ...] = (
    Feature("length_120", 120.000, 0.010),
    Feature("width_80", 80.000, 0.008),
    Feature("bore_50", 50.000, 0.006),
)


@dataclass(frozen=True)
class CmmConfig:
    features: tuple[Feature, ...] = DEFAULT_FEATURES
    alpha_part: float = ALPHA_AL6061
    alpha_scale: float = 8e-6
    hvac_mean_c: float = 22.0
    hvac_amplitude_c: float = 4.0
    hvac_period_s: float = 3600.0
    part_tau_s: float = 600.0
    scale_tau_s: float = 1800.0
    part_offset_sigma_c: float = 0.2
    probe_sigma_mm: float = 0.0005
    temp_sigma_c: float = 0.02
    spread_frac: float = 0.45
    part_interval_s: float = 60.0
    parts_per_lot: int = 25
    fixed_part_temp_c: float | None = None  # part and air held at this temperature
    fixed_scale_temp_c: float | None = None


@dataclass(frozen=True)
class CmmRow:
    ts_ns: int
    part_id: str
    lot: str
    feature: str
    nominal_mm: float
    tol_mm: float
    measured_mm: float
    part_temp_c: float
    air_temp_c: float
    scale_temp_c: float

    def fields(self, ts_text: str | None = None) -> list[str]:
        """CSV fields in header order."""
        return [
            ts_text if ts_text is not None else iso_ns(self.ts_ns),
            self.part_id,
            self.lot,
            self.feature,
            f"{self.nominal_mm:.3f}",
            f"{self.tol_mm:.3f}",
            f"{self.measured_mm:.5f}",
            f"{self.part_temp_c:.3f}",
            f"{self.air_temp_c:.3f}",
            f"{self.scale_temp_c:.3f}",
        ]


@dataclass(frozen=True)
class CmmPart:
    """One measured part: its CSV rows and its ground truth."""

    part_id: str
    lot: str
    ts_ns: int
    rows: tuple[CmmRow, ...]
    true_part_temp_c: float
    true_air_temp_c: float
    true_scale_temp_c: float
    true_mm_20c: dict[str, float] = field(default_factory=dict)
    conforms_by_feature: dict[str, bool] = field(default_factory=dict)

    @property
    def conforms(self) -> bool:
        return all(self.conforms_by_feature.values())

    def truth_fields(self) -> dict[str, Any]:
        return {
            "part_id": self.part_id,
            "lot": self.lot,
            "conforms": self.conforms,
            "true_part_temp_c": round(self.true_part_temp_c, 6),
            "true_air_temp_c": round(self.true_air_temp_c, 6),
            "true_scale_temp_c": round(self.true_scale_temp_c, 6),
            "features": [
                {
                    "feature": r.feature,
                    "nominal_mm": r.nominal_mm,
                    "tol_mm": r.tol_mm,
                    "true_mm_20c": round(self.true_mm_20c[r.feature], 7),
                    "conforms": self.conforms_by_feature[r.feature],
                }
                for r in self.rows
            ],
        }


class CmmModel:
    """Seeded CMM physics. `measure_next(t_s)` measures the next part at sim time t_s."""

    def __init__(
        self,
        seed: int,
        config: CmmConfig | None = None,
        start_ns: int = DEFAULT_START_NS,
        *,
        fixed_part_temp_c: float | None = None,
        fixed_scale_temp_c: float | None = None,
    ) -> None:
        cfg = config or CmmConfig()
        if fixed_part_temp_c is not None:
            cfg = replace(cfg, fixed_part_temp_c=fixed_part_temp_c)
        if fixed_scale_temp_c is not None:
            cfg = replace(cfg, fixed_scale_temp_c=fixed_scale_temp_c)
        self.cfg = cfg
        self.start_ns = start_ns
        self.rng = np.random.default_rng([seed, 1])
        self._phase = float(self.rng.uniform(0.0, 2 * math.pi))
        self._t_s = 0.0
        self._part_c = self.air_temp(0.0)
        self._scale_c = self.air_temp(0.0)
        self.parts_made = 0

    def air_temp(self, t_s: float) -> float:
        c = self.cfg
        if c.fixed_part_temp_c is not None:
            return c.fixed_part_temp_c
        return c.hvac_mean_c + c.hvac_amplitude_c * math.sin(
            2 * math.pi * t_s / c.hvac_period_s + self._phase
        )

    def _advance(self, t_s: float) -> None:
        if t_s < self._t_s:
            raise ValueError(f"time runs forward only: {t_s} < {self._t_s}")
        c = self.cfg
        h_max = min(c.part_tau_s, c.scale_tau_s, c.hvac_period_s) / 50
        n = max(1, math.ceil((t_s - self._t_s) / h_max))
        h = (t_s - self._t_s) / n
        kp, ks = 1 - math.exp(-h / c.part_tau_s), 1 - math.exp(-h / c.scale_tau_s)
        for i in range(n):
            air = self.air_temp(self._t_s + (i + 0.5) * h)
            self._part_c += (air - self._part_c) * kp
            self._scale_c += (air - self._scale_c) * ks
        self._t_s = t_s

    def measure_part(self, t_s: float) -> CmmPart:
        """Measure the next part at simulated time t_s (seconds since start)."""
        c = self.cfg
        self._advance(t_s)
        n = self.parts_made
        self.parts_made += 1
        part_id = f"P{n + 1:06d}"
        lot = f"LOT{n // c.parts_per_lot + 1:04d}"
        ts_ns = self.start_ns + round(t_s * 1e9)
        k = len(c.features)
        # fixed draw count per part keeps the stream aligned whatever the config
        z_offset, z_air, z_part, z_scale = self.rng.standard_normal(4)
        z_true = self.rng.standard_normal(k)
        z_probe = self.rng.standard_normal(k)
        air = self.air_temp(t_s)
        if c.fixed_part_temp_c is not None:
            tp = c.fixed_part_temp_c
        else:
            tp = self._part_c + c.part_offset_sigma_c * float(z_offset)
        ts = c.fixed_scale_temp_c if c.fixed_scale_temp_c is not None else self._scale_c
        s = c.temp_sigma_c
        rows, true20, ok = [], {}, {}
        for i, f in enumerate(c.features):
            t20 = f.nominal_mm + c.spread_frac * f.tol_mm * float(z_true[i])
            meas = t20 * (1 + c.alpha_part * (tp - 20) - c.alpha_scale * (ts - 20))
            meas += c.probe_sigma_mm * float(z_probe[i])
            true20[f.name] = t20
            ok[f.name] = abs(t20 - f.nominal_mm) <= f.tol_mm
            rows.append(
                CmmRow(
                    ts_ns,
                    part_id,
                    lot,
                    f.name,
                    f.nominal_mm,
                    f.tol_mm,
                    round(meas, 5),
                    round(tp + s * float(z_part), 3),
                    round(air + s * float(z_air), 3),
                    round(ts + s * float(z_scale), 3),
                )
            )
        return CmmPart(part_id, lot, ts_ns, tuple(rows), tp, air, ts, true20, ok)

    def measure_next(self, t_s: float) -> list[CmmRow]:
        """Rows of the next part measured at t_s (see `measure_part` for its truth)."""
        return list(self.measure_part(t_s).rows)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Chaos kinds of a message stream, not of a CSV row: a CMM row is never spoiled by them.
_NOT_HERE = frozenset({"spelling", "clock_jump"})

class CmmWriter:
    """Writes measured parts as CSV file drops, per part or into a daily file."""

    def __init__(
        self,
        directory: str | Path,
        mode: Literal["part", "daily"] = "part",
        *,
        seed: int = 0,
        bad: BadData | None = None,
        truth: TruthLog | None = None,
        start_ns: int = DEFAULT_START_NS,
    ) -> None:
        if mode not in ("part", "daily"):
            raise ValueError(f"cmm mode must be 'part' or 'daily', got {mode!r}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self.bad = bad or BadData()
        self.defects = Defects(seed, 1, self.bad)
        self.chaos = Chaos(seed, 1, self.bad)
        self._late: list[str] = []  # rows held for a late file
        self.truth = truth
        self.start_ns = start_ns

    def render(self, part: CmmPart) -> list[str]:
        """CSV lines (without header) for a part, bad data applied."""
        lines: list[str] = []
        for row in part.rows:
            ts = self.defects.drifted(row.ts_ns, self.start_ns)
            defect = self.defects.pick()
            if defect in _NOT_HERE:
                defect = None
            if defect == "late":  # measured late_s earlier, in a file that comes later
                ts -= round(self.bad.late_s * 1e9)
            fields = row.fields(iso_ns(ts))
            if defect == "missing":
                fields[int(self.defects.rng.integers(6, 10))] = ""
            elif defect == "naive_ts":
                fields[0] = fields[0].removesuffix("+00:00")
            elif defect == "mixed_tz":  # the same instant, in another offset, same file
                fields[0] = iso_in_offset(ts, self.chaos.offset_min())
            elif defect == "garbage":
                fields[6] = str(self.defects.rng.choice(["ERR", "#####", "1.2.3", "--"]))
            if defect == "late":
                self._late.append(",".join(fields))
            else:
                lines.append(",".join(fields))
            if defect == "duplicate":
                lines.append(lines[-1])
            if defect is not None and self.truth is not None:
                extra = {"good": True, "sent_ts_ns": ts} if defect in ("late", "mixed_tz") \
                    else {}
                self.truth.emit("bad_data", "cmm", part.ts_ns, defect=defect,
                                part_id=part.part_id, feature=row.feature, **extra)
        return lines

    def _late_file(self, part: CmmPart) -> None:
        """Once `late_burst` rows are held: one file of them, shuffled (out of order)."""
        if len(self._late) < self.bad.late_burst:
            return
        rows, self._late = self._late, []
        order = self.chaos.rng.permutation(len(rows))
        body = CSV_HEADER + "\n" + "".join(rows[int(i)] + "\n" for i in order)
        target = self.dir / f"late-{part.part_id}.csv"
        tmp = self.dir / f".late-{part.part_id}.csv.tmp"
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    def write(self, part: CmmPart) -> Path:
        """Write one part; returns the file written or appended to."""
        lines = self.render(part)
        if self.mode == "part":
            target = self.dir / f"{part.part_id}.csv"
            tmp = self.dir / f".{part.part_id}.csv.tmp"
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                fh.write(CSV_HEADER + "\n" + "".join(line + "\n" for line in lines))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        else:
            day = iso_ns(part.ts_ns)[:10].replace("-", "")
            target = self.dir / f"cmm-{day}.csv"
            with target.open("a", encoding="utf-8", newline="") as fh:
                if fh.tell() == 0:
                    fh.write(CSV_HEADER + "\n")
                fh.write("".join(line + "\n" for line in lines))
                fh.flush()
                os.fsync(fh.fileno())
        self._late_file(part)
        _fsync_dir(self.dir)
        return target


async def run_cmm(
    model: CmmModel,
    writer: CmmWriter,
    clock: SimClock,
    truth: TruthLog | None = None,
    max_parts: int | None = None,
) -> None:
    """Measure a part every `part_interval_s` of simulated time and write it out."""
    interval = model.cfg.part_interval_s
    async for k, _ts in ticks(clock, interval):
        if k == 0:
            continue  # the first part comes one interval after the start
        if max_parts is not None and model.parts_made >= max_parts:
            return
        part = model.measure_part(k * interval)
        if truth is not None:
            truth.emit("part", "cmm", part.ts_ns, **part.truth_fields())
        await asyncio.to_thread(writer.write, part)
