"""Statistical process control: individuals / X-bar charts, Western Electric rules, EWMA.

Invariants:

* Limits come from a baseline window (the first ``baseline_samples`` points) unless
  ``center`` and ``sigma`` are given. Individuals: sigma = mean moving range / 1.128.
  X-bar (``subgroup_size`` n > 1): points are means of n consecutive samples and
  sigma_xbar = mean subgroup standard deviation / c4(n) / sqrt(n).
* Only good or uncertain, finite samples count; Bad samples are skipped, never judged.
* Rules (``kernels.spc_scan``): 1 beyond 3 sigma; 2 two of three beyond 2 sigma on one
  side; 3 four of five beyond 1 sigma on one side; 4 eight in a row on one side;
  EWMA(lambda, L) with exact time-varying limits, firing once per excursion.
* Every violation of an enabled rule (``rules``) is recorded; ``SpcViolation.alarm``
  says whether it is an *alarm* (act on it: the run-length figures below hold for
  alarms) or a *signal* (supporting evidence for the engineer reading the chart). An
  alarm is a violation of a rule in ``alarm_rules``; a rule-1 point is an alarm only
  beyond ``we1_alarm_sigma``. False-alarm rates add up across rules: the four Western
  Electric rules together have an in-control ARL of about 92 (Champ & Woodall), which
  is why they are signals by default.
* The default alarm scheme, EWMA(0.15, 2.86) plus single points beyond 4 sigma,
  measured by ``run_lengths`` (tests/unit/test_processing_spc.py, bench/kernels.py):
  in-control ARL about 420; a 1-sigma shift found in about 8.5 points when present
  from the start of the chart and about 9.8 when it appears after 100 in-control
  points. That is near the best any scheme does for a 1-sigma shift at ARL0 370 (a
  CUSUM with k 0.5 needs about 9.9), so retune ``ewma_lambda`` / ``ewma_l`` with
  ``run_lengths``, not by feel. Limits learned from a short baseline lower ARL0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge.components import BuildContext, StageOutput
from edge.config import ConfigStruct
from edge.errors import ConfigError
from edge.model import Record, SampleBatch, SpcViolation, TagRegistry

RuleName = Literal["we1", "we2", "we3", "we4", "ewma"]
_BITS: dict[str, int] = {"we1": 1, "we2": 2, "we3": 4, "we4": 8, "ewma": 16}
_NAMES = {v: k for k, v in _BITS.items()}
CLEAR_POINTS = 10  # points without an alarm after which a chart's alarm condition clears
_DETAIL = {
    "we1": "beyond 3 sigma", "we2": "2 of 3 beyond 2 sigma, same side",
    "we3": "4 of 5 beyond 1 sigma, same side", "we4": "8 in a row on one side",
    "ewma": "EWMA beyond its control limit",
}


class SpcConfig(ConfigStruct, frozen=True):
    """``[[spc]]``: one control chart on one tag."""

    name: str
    tag: str
    subgroup_size: int = 1
    baseline_samples: int = 100
    center: float | None = None
    sigma: float | None = None
    rules: tuple[RuleName, ...] = ("we1", "we2", "we3", "we4", "ewma")
    alarm_rules: tuple[RuleName, ...] = ("we1", "ewma")  # the rest of ``rules``: signals
    we1_alarm_sigma: float = 4.0  # a rule-1 point is an alarm only beyond this
    ewma_lambda: float = 0.15
    ewma_l: float = 2.86

    def __post_init__(self) -> None:
        if self.tag.count("/") < 1:
            raise ValueError(f"tag must be 'device/name', got {self.tag!r}")
        if not 1 <= self.subgroup_size <= 25:
            raise ValueError("subgroup_size must be between 1 and 25")
        if self.baseline_samples < 10:
            raise ValueError("baseline_samples must be >= 10")
        if (self.center is None) != (self.sigma is None):
            raise ValueError("center and sigma must be given together (or both learned)")
        if self.sigma is not None and not self.sigma > 0:
            raise ValueError("sigma must be > 0")
        if not self.rules:
            raise ValueError("rules must name at least one rule")
        if not 0 < self.ewma_lambda <= 1:
            raise ValueError("ewma_lambda must be in (0, 1]")
        if not self.ewma_l > 0:
            raise ValueError("ewma_l must be > 0")
        if not (math.isfinite(self.we1_alarm_sigma) and self.we1_alarm_sigma >= 3):
            raise ValueError("we1_alarm_sigma must be a finite number >= 3")

    def declare_tags(self, tags: TagRegistry) -> None:
        """SPC emits records only, no samples."""

    def mask(self) -> int:
        return sum(_BITS[r] for r in set(self.rules))

    def alarm_mask(self) -> int:
        """Rules whose violations are alarms (only those also in ``rules`` ever fire)."""
        return sum(_BITS[r] for r in set(self.alarm_rules)) & self.mask()

    def params(self, center: float = math.nan, sigma: float = math.nan
               ) -> npt.NDArray[np.float64]:
        """The ``kernels.spc_scan`` parameter vector of this chart."""
        return np.array([center, sigma, self.ewma_lambda, self.ewma_l, float(self.mask())])


def alarm_flags(cfg: SpcConfig, rule: npt.NDArray[np.int64], stat: npt.NDArray[np.float64]
                ) -> npt.NDArray[np.bool_]:
    """Which ``spc_scan`` violations (rule bit, statistic) are alarms under ``cfg``."""
    alarm: npt.NDArray[np.bool_] = (rule & cfg.alarm_mask()) != 0
    alarm &= (rule != _BITS["we1"]) | (np.abs(stat) > cfg.we1_alarm_sigma)
    return alarm


def run_lengths(cfg: SpcConfig, shift: float, runs: int, seed: int, *, onset: int = 0,
                cap: int = 5000) -> npt.NDArray[np.float64]:
    """Simulated run lengths to the first alarm of ``cfg``'s alarm scheme, in sigma units.

    Each run is a fresh chart (known center 0, sigma 1) on N(0, 1) points with ``shift``
    added from point ``onset`` on; its run length counts points from the onset to the
    first alarm inclusive (``cap`` if none). With ``onset`` > 0 this is the conditional
    steady-state ARL: a run with an alarm before the onset is discarded and drawn again.
    """
    from edge.processing import kernels as K

    rng = np.random.default_rng(seed)
    params = cfg.params(0.0, 1.0)
    n, step = onset + cap, 256  # scanned in steps with the state carried: stop at the alarm
    idx, rule, stat = np.empty(5 * step, np.int64), np.empty(5 * step, np.int64), \
        np.empty(5 * step)
    out = np.empty(runs)
    r = discarded = 0
    while r < runs:
        state = np.zeros(K.N_SPC_STATE)
        first = n
        for start in range(0, n, step):
            x = rng.standard_normal(min(step, n - start))
            x[max(onset - start, 0):] += shift
            k = K.spc_scan(x, params, state, idx, rule, stat)
            hits = idx[:k][alarm_flags(cfg, rule[:k], stat[:k])]
            if hits.shape[0]:
                first = start + int(hits[0])
                break
        if first < onset:
            discarded += 1
            if discarded > 100 * runs + 1000:
                raise ValueError(f"onset {onset}: the chart nearly always alarms before it")
            continue
        out[r] = min(first - onset + 1, cap)
        r += 1
    return out


def c4(n: int) -> float:
    return math.sqrt(2 / (n - 1)) * math.gamma(n / 2) / math.gamma((n - 1) / 2)


@dataclass(slots=True)
class _Chart:
    cfg: SpcConfig
    tag_id: int
    params: npt.NDArray[np.float64]
    state: npt.NDArray[np.float64]
    pending: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    base_x: list[float] = field(default_factory=list)
    base_s: list[float] = field(default_factory=list)
    ready: bool = False
    last_alarm_point: float = -math.inf  # points judged when the last alarm came


class Spc:
    """The SPC stage for every configured chart."""

    name = "spc"

    def __init__(self, configs: Sequence[SpcConfig], tags: TagRegistry,
                 ctx: BuildContext | None = None) -> None:
        from edge.processing import kernels as K

        self._k = K
        self.charts: dict[str, _Chart] = {}
        for cfg in configs:
            try:
                tag_id = tags.id_of(cfg.tag)
            except KeyError:
                raise ConfigError(f"spc '{cfg.name}': tag '{cfg.tag}' is not declared") \
                    from None
            chart = _Chart(cfg, tag_id, cfg.params(), np.zeros(K.N_SPC_STATE))
            if cfg.center is not None and cfg.sigma is not None:
                chart.params[0], chart.params[1] = cfg.center, cfg.sigma
                chart.ready = True
            self.charts[cfg.name] = chart
        self._m = None
        if ctx is not None:
            self._m = ctx.metrics.counter("edge_spc_violations_total", "SPC rule violations",
                                          ["chart", "rule", "kind"])

    def process(self, batch: SampleBatch, records: Sequence[Record], now_ns: int) -> StageOutput:
        out = StageOutput(batch, list(records))
        if len(batch) == 0:
            return out
        for chart in self.charts.values():
            idx = np.flatnonzero(batch.tag_id == chart.tag_id)
            if idx.shape[0] == 0:
                continue
            keep = ((batch.quality[idx] & 0x80) == 0) & np.isfinite(batch.value[idx])
            idx = idx[keep]
            if idx.shape[0]:
                self._feed(chart, batch.value[idx], batch.ts_ns[idx], out)
        return out

    def tick(self, now_ns: int) -> StageOutput:
        return StageOutput(SampleBatch.empty())

    def conditions(self, now_ns: int) -> dict[str, tuple[bool, bool]]:
        """Per chart: (latched, active) for the condition board. A chart's alarm is active
        until ``CLEAR_POINTS`` further points were judged without one; none latches."""
        return {name: (False, float(ch.state[1]) - ch.last_alarm_point < CLEAR_POINTS)
                for name, ch in self.charts.items()}

    def states(self) -> dict[str, dict[str, float | str]]:
        """Per chart: tag, center, sigma, ucl, lcl (3 sigma), ewma, points judged."""
        out: dict[str, dict[str, float | str]] = {}
        for name, ch in self.charts.items():
            c, s = float(ch.params[0]), float(ch.params[1])
            out[name] = {
                "tag": ch.cfg.tag, "center": c, "sigma": s, "ucl": c + 3 * s,
                "lcl": c - 3 * s, "ewma": float(ch.state[0]) if ch.state[1] else math.nan,
                "points": float(ch.state[1]),
            }
        return out

    def _feed(self, chart: _Chart, values: npt.NDArray[np.float64],
              ts: npt.NDArray[np.int64], out: StageOutput) -> None:
        n = chart.cfg.subgroup_size
        if n == 1:
            points, spreads, point_ts = values, None, ts
        else:
            allv = np.concatenate((chart.pending, values))
            whole = allv.shape[0] // n * n
            chart.pending = allv[whole:]
            if whole == 0:
                return
            groups = allv[:whole].reshape(-1, n)
            points = np.ascontiguousarray(groups.mean(axis=1))
            spreads = groups.std(axis=1, ddof=1)
            ends = np.arange(n - 1, whole, n) - (allv.shape[0] - values.shape[0])
            point_ts = ts[np.clip(ends, 0, ts.shape[0] - 1)]
        if not chart.ready:
            need = chart.cfg.baseline_samples - len(chart.base_x)
            chart.base_x += points[:need].tolist()
            if spreads is not None:
                chart.base_s += spreads[:need].tolist()
            points, point_ts = points[need:], point_ts[need:]
            if len(chart.base_x) < chart.cfg.baseline_samples:
                return
            self._limits(chart)
        if points.shape[0] == 0:
            return
        m = points.shape[0]
        o_idx, o_rule, o_stat = np.empty(5 * m, np.int64), np.empty(5 * m, np.int64), \
            np.empty(5 * m)
        k = self._k.spc_scan(np.ascontiguousarray(points), chart.params, chart.state,
                             o_idx, o_rule, o_stat)
        center, sigma = float(chart.params[0]), float(chart.params[1])
        alarms = alarm_flags(chart.cfg, o_rule[:k], o_stat[:k])
        for j in range(k):
            rule = _NAMES[int(o_rule[j])]
            i = int(o_idx[j])
            out.records.append(SpcViolation(
                ts_ns=int(point_ts[i]), tag=chart.cfg.tag, rule=rule, value=float(points[i]),
                center=center, sigma=sigma, alarm=bool(alarms[j]),
                detail=f"{chart.cfg.name}: {'alarm' if alarms[j] else 'signal'}, "
                       f"{_DETAIL[rule]} (statistic {float(o_stat[j]):.4g})",
            ))
            if alarms[j]:
                chart.last_alarm_point = max(chart.last_alarm_point,
                                             float(chart.state[1]) - m + i + 1)
            if self._m is not None:
                self._m.labels(chart.cfg.name, rule, "alarm" if alarms[j] else "signal").inc()

    def _limits(self, chart: _Chart) -> None:
        x = np.array(chart.base_x)
        n = chart.cfg.subgroup_size
        if n == 1:
            sigma = float(np.mean(np.abs(np.diff(x)))) / 1.128
        else:
            sigma = float(np.mean(chart.base_s)) / c4(n) / math.sqrt(n)
        chart.params[0] = float(np.mean(x))
        chart.params[1] = sigma if sigma > 0 else math.ulp(abs(float(np.mean(x))) or 1.0)
        chart.ready = True
