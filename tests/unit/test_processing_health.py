"""Motor health stage against hw_sim's motor line (in process): index, time to failure."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from scipy.stats import spearmanr

from edge.model import HealthAlert, SampleBatch, TagRegistry
from edge.processing.health import Health, HealthConfig, MotorConfig
from hw_sim.motors import MOTOR_IDS, MotorLine

LIFE_MOTORS = ("hbw/horizontal", "conveyor/belt", "vgr/vertical", "vgr/horizontal")


Row = tuple[int, float, float, float]


@dataclass
class Life:
    """Per motor (ts, estimated health, estimated ttf, true health), and the alerts."""

    rows: dict[str, list[Row]] = field(default_factory=dict)
    alerts: list[HealthAlert] = field(default_factory=list)


@pytest.fixture(scope="module")
def life() -> Life:
    """A whole life of the line, 4000 s of 10 Hz currents of 14 motors, in 10 s batches."""
    tags = TagRegistry()
    for m in MOTOR_IDS:
        tags.add(m, "current_a", unit="A")
    cfg = HealthConfig(name="line", motors=[
        MotorConfig(name=m, current_tag=f"{m}/current_a") for m in MOTOR_IDS],
        alert_ttf_s=600.0)
    stage = Health([cfg], tags)
    line = MotorLine(seed=7)
    ids = np.array([tags.id_of(f"{m}/current_a") for m in MOTOR_IDS], np.int32)
    out = Life({m: [] for m in MOTOR_IDS})
    for _ in range(400):
        tr = line.run(100)
        batch = SampleBatch(np.tile(ids, 100), np.repeat(tr.ts_ns, len(ids)),
                            tr.current_a.ravel())
        res = stage.process(batch, [], 0)
        out.alerts += [r for r in res.records if isinstance(r, HealthAlert)]
        truth = line.true_health()
        for m in MOTOR_IDS:
            st = stage.states()[m]
            out.rows[m].append((int(tr.ts_ns[-1]), st["health"], st["ttf_s"], truth[m]))
    return out


def test_health_rank_correlates_with_true_health(
        life: Life) -> None:
    """Spearman(estimated health, true health) >= 0.9 for every motor of the line."""
    for m in MOTOR_IDS:
        pts = np.array([(e[1], e[3]) for e in life.rows[m] if math.isfinite(e[1])])
        rho = spearmanr(pts[:, 0], pts[:, 1]).statistic
        assert rho >= 0.9, (m, rho)


def _ttf_errors(rows: list[Row]) -> tuple[float, float]:
    t_fail = next(e[0] for e in rows if e[3] <= 0)
    lifetime = (t_fail - rows[0][0]) / 1e9
    last = [(e[2], (t_fail - e[0]) / 1e9) for e in rows
            if 0 < (t_fail - e[0]) / 1e9 <= lifetime / 4]
    err = np.array([abs(est - true) for est, true in last])
    rel = np.array([abs(est - true) / true for est, true in last])
    return float(err.mean() / (lifetime / 4)), float(np.median(rel))


def test_time_to_failure_over_last_quarter_of_life(
        life: Life) -> None:
    """Over the last quarter of life the mean TTF error is <= 20 % of that quarter and
    the median relative error <= 30 % (steadily working axes)."""
    for m in LIFE_MOTORS:
        scaled, median_rel = _ttf_errors(life.rows[m])
        assert scaled <= 0.2, (m, scaled)
        assert median_rel <= 0.3, (m, median_rel)


def test_alerts_fire_once_per_crossing(
        life: Life) -> None:
    """Each motor that wore out raised one health alert and one time-to-failure alert."""
    alerts = life.alerts
    for m in LIFE_MOTORS:
        mine = [a for a in alerts if a.motor == m]
        assert sum(a.reason.startswith("health") for a in mine) == 1
        assert sum(a.reason.startswith("time to failure") for a in mine) == 1
        first = next(a for a in mine if a.reason.startswith("health"))
        assert first.health < 0.5


def test_health_samples_are_emitted_on_declared_tags() -> None:
    """<motor>/health and <motor>/ttf_s samples appear once the baseline exists."""
    tags = TagRegistry()
    tags.add("m1", "current_a")
    cfg = HealthConfig(name="g", motors=[MotorConfig(name="m1", current_tag="m1/current_a")],
                       baseline_samples=10, health_interval_s=1.0)
    cfg.declare_tags(tags)
    stage = Health([cfg], tags)
    n = 400
    cur = np.where(np.arange(n) % 40 < 25, 1.2, 0.05)
    out = stage.process(SampleBatch(np.zeros(n), np.arange(n) * 100_000_000, cur), [], 0)
    got = set(out.batch.tag_id[n:].tolist())
    assert got == {tags.id_of("m1/health"), tags.id_of("m1/ttf_s")}
    assert stage.states()["m1"]["health"] == pytest.approx(1.0, abs=0.05)
