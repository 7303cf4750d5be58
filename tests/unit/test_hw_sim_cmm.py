"""CMM simulator: determinism, thermal physics, file drops, bad data."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from hw_sim.baddata import BadData
from hw_sim.cmm import CSV_HEADER, CmmModel, CmmPart, CmmWriter
from hw_sim.truth import TruthLog


def _parts(seed: int, n: int, **kw: float) -> list[CmmPart]:
    m = CmmModel(seed, **kw)
    return [m.measure_part(60.0 * (k + 1)) for k in range(n)]


def test_same_seed_same_rows() -> None:
    """Two models with the same seed measure identical rows; another seed differs."""
    a, b, c = _parts(7, 50), _parts(7, 50), _parts(8, 50)
    assert [p.rows for p in a] == [p.rows for p in b]
    assert [p.rows for p in a] != [p.rows for p in c]


def test_part_at_20c_reads_true_length_within_noise() -> None:
    """At 20 C (part and scale) the reading equals the true length within probe noise."""
    parts = _parts(3, 400, fixed_part_temp_c=20.0, fixed_scale_temp_c=20.0)
    err = np.array([r.measured_mm - p.true_mm_20c[r.feature] for p in parts for r in p.rows])
    assert abs(err.mean()) < 0.0001
    assert 0.0004 < err.std() < 0.0006
    assert np.abs(err).max() < 5 * 0.0005


def test_part_at_25c_reads_longer_by_l_alpha_5() -> None:
    """A part at 25 C on a 20 C scale reads longer by L * 23.6e-6 * 5 (within noise)."""
    parts = _parts(3, 400, fixed_part_temp_c=25.0, fixed_scale_temp_c=20.0)
    for feature, nominal in (("length_120", 120.0), ("bore_50", 50.0)):
        d = np.array(
            [
                r.measured_mm - p.true_mm_20c[r.feature]
                for p in parts
                for r in p.rows
                if r.feature == feature
            ]
        )
        expected = nominal * 23.6e-6 * 5
        assert abs(d.mean() - expected) < 0.0001, (feature, d.mean(), expected)


def test_warm_scale_reads_shorter() -> None:
    """Scale and part both at 25 C: the reading grows by L * (alpha_part - alpha_scale) * 5."""
    parts = _parts(3, 400, fixed_part_temp_c=25.0, fixed_scale_temp_c=25.0)
    d = np.array(
        [
            r.measured_mm - p.true_mm_20c[r.feature]
            for p in parts
            for r in p.rows
            if r.feature == "length_120"
        ]
    )
    assert abs(d.mean() - 120 * (23.6e-6 - 8e-6) * 5) < 0.0001


def test_hvac_swing_rejects_good_parts_unless_compensated() -> None:
    """Judged on raw lengths >=5% of truly good features fail; compensated, almost none."""
    parts = _parts(11, 1500)
    temps = [p.true_part_temp_c for p in parts]
    assert min(temps) > 17.5 and max(temps) < 26.5 and max(temps) - min(temps) > 4.0
    good = raw_bad = comp_bad = 0
    for p in parts:
        for r in p.rows:
            if not p.conforms_by_feature[r.feature]:
                continue
            good += 1
            raw_bad += abs(r.measured_mm - r.nominal_mm) > r.tol_mm
            k = 1 + 23.6e-6 * (r.part_temp_c - 20) - 8e-6 * (r.scale_temp_c - 20)
            comp = r.measured_mm / k
            comp_bad += abs(comp - r.nominal_mm) > r.tol_mm
    assert raw_bad / good >= 0.05
    assert comp_bad / good < 0.02
    nonconforming = sum(not p.conforms for p in parts) / len(parts)
    assert 0.01 < nonconforming < 0.3


def test_part_lags_air() -> None:
    """The part temperature lags the air: it peaks later and swings less."""
    m = CmmModel(5)
    ts = np.arange(1, 600) * 30.0
    parts = [m.measure_part(t) for t in ts]
    air = np.array([p.true_air_temp_c for p in parts])
    part = np.array([p.true_part_temp_c for p in parts])
    assert np.ptp(part[200:]) < np.ptp(air[200:])
    a, p = air[200:] - air[200:].mean(), part[200:] - part[200:].mean()
    lag = int(np.argmax(np.correlate(p, a, "full"))) - (len(a) - 1)
    assert lag > 0


def test_per_part_file_is_atomic_and_well_formed(tmp_path: Path) -> None:
    """Per-part mode writes <part_id>.csv with the exact header, one row per feature."""
    m, w = CmmModel(1), CmmWriter(tmp_path, "part")
    for k in range(3):
        w.write(m.measure_part(60.0 * (k + 1)))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["P000001.csv", "P000002.csv", "P000003.csv"]
    lines = (tmp_path / "P000002.csv").read_text().splitlines()
    assert lines[0] == CSV_HEADER
    assert len(lines) == 4
    row = next(csv.DictReader(lines))
    assert row["timestamp"].endswith("+00:00") and row["part_id"] == "P000002"
    assert math.isfinite(float(row["measured_mm"]))


def test_daily_file_grows_with_header_once(tmp_path: Path) -> None:
    """Daily mode appends every part to cmm-YYYYMMDD.csv, header written once."""
    m, w = CmmModel(1), CmmWriter(tmp_path, "daily")
    for k in range(5):
        target = w.write(m.measure_part(60.0 * (k + 1)))
    assert target.name == "cmm-20261121.csv"
    lines = target.read_text().splitlines()
    assert lines.count(CSV_HEADER) == 1 and len(lines) == 1 + 5 * 3


def test_same_seed_same_files(tmp_path: Path) -> None:
    """Same seed, bad data included, gives byte-identical daily files and truth."""
    outs = []
    for run in ("a", "b"):
        truth = TruthLog(tmp_path / f"{run}.jsonl")
        m = CmmModel(9)
        w = CmmWriter(tmp_path / run, "daily", seed=9, bad=BadData(rate=0.2), truth=truth)
        for k in range(30):
            w.write(m.measure_part(60.0 * (k + 1)))
        truth.close()
        outs.append(
            (
                (tmp_path / run / "cmm-20261121.csv").read_bytes(),
                (tmp_path / f"{run}.jsonl").read_bytes(),
            )
        )
    assert outs[0] == outs[1]


def test_bad_data_is_spoiled_and_recorded(tmp_path: Path) -> None:
    """Each defect appears in the file and in the ground truth; physics is unchanged."""
    truth = TruthLog()
    m = CmmModel(4)
    w = CmmWriter(tmp_path, "daily", seed=4, bad=BadData(rate=0.3), truth=truth)
    parts = [m.measure_part(60.0 * (k + 1)) for k in range(60)]
    for p in parts:
        w.write(p)
    defects = {r["defect"] for r in truth.of_kind("bad_data", "cmm")}
    assert defects == {"missing", "duplicate", "naive_ts", "garbage"}
    text = (tmp_path / "cmm-20261121.csv").read_text()
    assert ",ERR," in text or ",#####," in text or ",--," in text or ",1.2.3," in text
    rows = list(csv.reader(text.splitlines()[1:]))
    assert any(r[0] and not r[0].endswith("+00:00") for r in rows)
    assert len(rows) == 60 * 3 + len(truth.of_kind("bad_data")) - sum(
        1 for r in truth.of_kind("bad_data") if r["defect"] != "duplicate"
    )
    assert [p.rows for p in parts] == [p.rows for p in _parts(4, 60)]
