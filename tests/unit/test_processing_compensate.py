"""Compensation stage against hw_sim's CMM ground truth (in process, no files)."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from edge.config import loads
from edge.errors import ConfigError
from edge.model import (
    CmmReading,
    Measurement,
    Quality,
    Quarantine,
    SampleBatch,
    SpcViolation,
    TagRegistry,
)
from edge.processing.compensate import Compensate, CompensationConfig, verdict
from hw_sim.cmm import CmmConfig, CmmModel, CmmPart


def _readings(part: CmmPart, *, probe: bool = True) -> list[CmmReading]:
    return [CmmReading(
        ts_ns=r.ts_ns, device="cmm1", part_id=r.part_id, lot=r.lot, feature=r.feature,
        nominal_mm=r.nominal_mm, tol_mm=r.tol_mm, measured_mm=r.measured_mm,
        part_temp_c=r.part_temp_c if probe else math.nan, air_temp_c=r.air_temp_c,
        scale_temp_c=r.scale_temp_c) for r in part.rows]


def _run(n_parts: int, *, probe: bool, seed: int = 11, part_offset_sigma_c: float = 0.2
         ) -> tuple[list[CmmPart], list[Measurement], CmmConfig]:
    model = CmmModel(seed, CmmConfig(hvac_mean_c=23.0, part_offset_sigma_c=part_offset_sigma_c))
    stage = Compensate([CompensationConfig(name="cmm1")], TagRegistry())
    parts, meas = [], []
    for k in range(1, n_parts + 1):
        part = model.measure_part(k * model.cfg.part_interval_s)
        parts.append(part)
        out = stage.process(SampleBatch.empty(), _readings(part, probe=probe), 0)
        meas += [m for m in out.records if isinstance(m, Measurement)]
        assert len(out.batch) == len(part.rows)
    return parts, meas, model.cfg


def _errors(parts: list[CmmPart], meas: list[Measurement], cfg: CmmConfig
            ) -> tuple[np.ndarray, np.ndarray]:
    """(thermal error of the raw reading, thermal error left in L20), probe noise removed."""
    raw_err, left = [], []
    it = iter(meas)
    for part in parts:
        for row in part.rows:
            m = next(it)
            t20 = part.true_mm_20c[row.feature]
            clean = t20 * (1 + cfg.alpha_part * (part.true_part_temp_c - 20)
                           - cfg.alpha_scale * (part.true_scale_temp_c - 20))
            noise = row.measured_mm - clean
            raw_err.append(clean - t20)
            left.append(m.l20_mm - t20 - noise)
    return np.array(raw_err), np.array(left)


def test_compensation_removes_95_percent_and_rejects_no_good_part() -> None:
    """hw_sim truth: >= 95 % of the thermal error removed; raw judgement rejects >= 5 % of
    good parts, compensated judgement none."""
    parts, meas, cfg = _run(600, probe=True)
    raw_err, left = _errors(parts, meas, cfg)
    removed = 1 - np.sqrt(np.mean(left**2)) / np.sqrt(np.mean(raw_err**2))
    assert removed >= 0.95, removed
    good = [(p, r, m) for p, r, m in zip(
        (p for p in parts for _ in p.rows), (r for p in parts for r in p.rows), meas,
        strict=True) if p.conforms_by_feature[r.feature]]
    raw_rejects = sum(abs(r.measured_mm - r.nominal_mm) > r.tol_mm for _, r, _ in good)
    assert raw_rejects / len(good) >= 0.05
    assert sum(m.verdict == "nonconforming" for _, _, m in good) == 0
    bad = [m for p, m in zip((p for p in parts for _ in p.rows), meas, strict=True)
           if not p.conforms_by_feature[m.feature]]
    assert all(m.verdict != "conforming" for m in bad)
    assert sum(m.verdict == "conforming" for m in meas) / len(meas) > 0.8


def _removed(raw_err: np.ndarray, left: np.ndarray, skip: int = 30) -> float:
    """Share of the RMS thermal error removed, after the first 10 parts (lag warm-up)."""
    return float(1 - np.sqrt(np.mean(left[skip:] ** 2)) / np.sqrt(np.mean(raw_err[skip:] ** 2)))


def test_estimated_part_temperature_without_probe() -> None:
    """With no part probe the lag model estimates the part temperature: rows flagged as
    estimated, no good part rejected, and everything the air explains removed (>= 99 %
    when hw_sim's parts follow the air; ~92 % with its 0.2 C per-part offset on top)."""
    parts, meas, cfg = _run(400, probe=False)
    assert all(m.part_temp_estimated for m in meas)
    removed = _removed(*_errors(parts, meas, cfg))
    assert removed >= 0.9, removed
    good_bad = [m for p, m in zip((p for p in parts for _ in p.rows), meas, strict=True)
                if p.conforms_by_feature[m.feature] and m.verdict == "nonconforming"]
    assert good_bad == []
    parts, meas, cfg = _run(400, probe=False, part_offset_sigma_c=0.0)
    removed = _removed(*_errors(parts, meas, cfg))
    assert removed >= 0.99, removed


@pytest.mark.xfail(strict=True, reason=(
    "not met without a probe: hw_sim gives each part an offset N(0, 0.2 C) from the "
    "air-driven temperature that no air history can reveal; even the simulator's exact "
    "air-driven part temperature removes only ~92 %"))
def test_estimated_part_temperature_removes_95_percent() -> None:
    """The issue's goal applied to the no-probe case: >= 95 % of the thermal error removed."""
    parts, meas, cfg = _run(400, probe=False)
    removed = _removed(*_errors(parts, meas, cfg))
    assert removed >= 0.95, removed


def test_air_temperature_from_a_tag() -> None:
    """With ``air_temp_tag`` the lag runs on that tag's samples, carried to each reading's
    time: air sampled once a minute, the last sample a minute before the part, and still
    >= 99 % of the air-driven error removed (reading the lag at the last air sample: ~92 %)."""
    tags = TagRegistry()
    air_id = tags.add("cmm1", "air_c").id
    stage = Compensate([CompensationConfig(name="cmm1", air_temp_tag="cmm1/air_c")], tags)
    model = CmmModel(11, CmmConfig(hvac_mean_c=23.0, part_offset_sigma_c=0.0))
    interval = model.cfg.part_interval_s
    parts, meas = [], []
    for k in range(1, 301):
        t_air = (k - 1) * interval
        air = SampleBatch([air_id], [model.start_ns + round(t_air * 1e9)],
                          [model.air_temp(t_air)])
        part = model.measure_part(k * interval)
        parts.append(part)
        out = stage.process(air, _readings(part, probe=False), 0)
        meas += [m for m in out.records if isinstance(m, Measurement)]
    assert all(m.part_temp_estimated for m in meas)
    removed = _removed(*_errors(parts, meas, model.cfg))
    assert removed >= 0.99, removed


def test_verdict_decision_rule_with_guard_bands() -> None:
    """Conforming only inside tol - U, nonconforming only outside tol + U, else indeterminate."""
    assert verdict(100.004, 0.002, 100.0, 0.010) == "conforming"
    assert verdict(100.009, 0.002, 100.0, 0.010) == "indeterminate"
    assert verdict(100.0125, 0.002, 100.0, 0.010) == "nonconforming"
    assert verdict(math.nan, 0.002, 100.0, 0.010) == "indeterminate"


def test_stage_outputs_samples_and_passes_other_records() -> None:
    """Readings become Measurements plus L20 samples on per-feature tags; others pass."""
    cfg = loads('[[compensation]]\nname = "cmm1"\nfeatures = ["length_120"]\n'
                ).section("compensation")[0]
    tags = TagRegistry()
    cfg.declare_tags(tags)
    stage = Compensate([cfg], tags)
    part = CmmModel(3).measure_part(60.0)
    other = SpcViolation(ts_ns=1, tag="a/b", rule="we1", value=1.0, center=0.0, sigma=1.0)
    foreign = CmmReading(ts_ns=1, device="cmm9", part_id="x", lot="l", feature="f",
                         nominal_mm=1, tol_mm=1, measured_mm=1, part_temp_c=20,
                         air_temp_c=20, scale_temp_c=20)
    out = stage.process(SampleBatch.empty(), [other, *_readings(part), foreign], 0)
    assert out.records[0] is other and out.records[-1] is foreign
    ms = [r for r in out.records if isinstance(r, Measurement)]
    assert len(ms) == 3
    assert len(out.batch) == 1  # only the listed feature has a tag
    assert out.batch.tag_id[0] == tags.id_of("cmm1/length_120/l20_mm")
    assert out.batch.quality[0] == Quality.GOOD_COMPENSATED
    assert out.batch.value[0] == pytest.approx(ms[0].l20_mm)


def _reading(**over: float | str) -> CmmReading:
    base: dict[str, float | str] = dict(
        ts_ns=1, device="cmm1", part_id="P-7", lot="L1", feature="length_120",
        nominal_mm=120.0, tol_mm=0.01, measured_mm=120.002, part_temp_c=20.5,
        air_temp_c=20.4, scale_temp_c=20.2, where="parts_0001.csv:3")
    base.update(over)
    return CmmReading(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value", "why"), [
    ("tol_mm", -0.01, "must be above 0"),
    ("tol_mm", 0.0, "must be above 0"),
    ("part_temp_c", 500.0, "outside the plausible -40..150 C"),
    ("part_temp_c", -273.5, "outside the plausible -40..150 C"),
    ("scale_temp_c", math.inf, "outside the plausible -40..150 C"),
    ("air_temp_c", -999.0, "outside the plausible -40..150 C"),
    ("nominal_mm", -120.0, "must be above 0"),
    ("measured_mm", 1e300, "from nominal"),
    ("measured_mm", math.nan, "must be a finite number"),
])
def test_implausible_reading_is_quarantined_not_judged(
        field: str, value: float, why: str) -> None:
    """A reading that cannot be physical gets a Quarantine naming device, part, feature,
    field and value, and no verdict and no L20 sample (each of these got a verdict before)."""
    stage = Compensate([CompensationConfig(name="cmm1")], TagRegistry())
    good = _reading(ts_ns=2, part_id="P-8")
    bad = _reading(**{field: value})
    out = stage.process(SampleBatch.empty(), [bad, good], 0)
    q, m = out.records
    assert isinstance(q, Quarantine) and isinstance(m, Measurement)
    assert m.part_id == "P-8" and m.verdict == "conforming"
    assert len(out.batch) == 1 and out.batch.ts_ns[0] == 2
    assert q.source == "cmm1" and q.where == "parts_0001.csv:3"
    assert q.subject == "part=P-7 lot=L1 feature=length_120"
    assert q.reason.startswith(f"implausible CMM reading: {field}=")
    assert why in q.reason, q.reason
    kept = msgspec.json.decode(q.payload)  # nothing lost
    assert kept["part_id"] == "P-7" and str(kept[field]) == str(value)


def test_plausible_ranges_are_configurable_per_feature_and_sensor() -> None:
    """feature_limits narrows one feature (others keep the section's), a sensor range can
    be narrowed, and a NaN part temperature (no probe) is missing, not implausible."""
    cfg = loads('[[compensation]]\nname = "cmm1"\nfeatures = ["length_120", "bore_50"]\n'
                'part_temp_range_c = [10.0, 40.0]\nmax_deviation_mm = 0.0\n'
                'feature_limits = { bore_50 = { tol_max_mm = 0.05, max_deviation_tol = 5 } }\n'
                ).section("compensation")[0]
    stage = Compensate([cfg], TagRegistry())
    rows = [
        _reading(feature="bore_50", nominal_mm=50.0, tol_mm=0.1, measured_mm=50.0),
        _reading(feature="length_120", tol_mm=0.1),
        _reading(feature="bore_50", nominal_mm=50.0, tol_mm=0.01, measured_mm=50.06),
        _reading(feature="length_120", tol_mm=0.01, measured_mm=120.06),
        _reading(part_temp_c=45.0),
        _reading(part_temp_c=math.nan),
    ]
    out = stage.process(SampleBatch.empty(), rows, 0)
    kinds = [type(r).__name__ for r in out.records]
    assert kinds == ["Quarantine", "Measurement", "Quarantine", "Measurement", "Quarantine",
                     "Measurement"], [getattr(r, "reason", "") for r in out.records]
    reasons = [r.reason for r in out.records if isinstance(r, Quarantine)]
    assert "tol_mm=0.1 must be at most 0.05" in reasons[0]
    assert "beyond 5 x tol and 0 mm" in reasons[1]
    assert "part_temp_c=45 outside the plausible 10..40 C" in reasons[2]


def test_plausibility_config_errors_name_the_key() -> None:
    """Unusable ranges and a feature_limits entry for an unknown feature fail at check-config."""
    for text, key in (
        ("part_temp_range_c = [150.0, -40.0]", "part_temp_range_c"),
        ("tol_above_mm = -1.0", "tol_above_mm"),
        ('features = ["a"]\nfeature_limits = { b = { tol_max_mm = 1.0 } }', "feature_limits.b"),
        ("feature_limits = { a = { max_deviation_tol = 0.0 } }",
         "feature_limits.a.max_deviation_tol"),
    ):
        with pytest.raises(ConfigError, match=key):
            loads(f'[[compensation]]\nname = "cmm1"\n{text}\n')


def test_implausible_air_sample_does_not_steer_the_lag() -> None:
    """An air-tag sample of 500 C (sensor fault) is ignored by the part-temperature lag."""
    tags = TagRegistry()
    air_id = tags.add("cmm1", "air_c").id
    stage = Compensate([CompensationConfig(name="cmm1", air_temp_tag="cmm1/air_c")], tags)
    s = 1_000_000_000
    stage.process(SampleBatch([air_id, air_id], [0, 60 * s], [21.0, 500.0]), [], 0)
    out = stage.process(SampleBatch.empty(), [_reading(ts_ns=61 * s, part_temp_c=math.nan)], 0)
    (m,) = out.records
    assert isinstance(m, Measurement) and m.part_temp_c == pytest.approx(21.0)
