"""Interlocks: limit, rate, quality and stale-data rules that stop a machine (the stage;
the rules' config and its checks are in ``interlock_config``).

Invariants:

* The decision is made on the batch in hand, before anything else is done with it:
  per rule, a numpy filter on the rule's tag id, then one numba scan. No I/O, no
  logging per point, no allocation beyond the filtered arrays and, on a trip, the
  records.
* A trip latches. Only ``reset`` clears it, and only when the condition is clear now:
  the last sample is of good quality, inside the limits by the clear hysteresis, not
  changing faster than the rate limit, and (where ``stale_s`` is set) recent.
* The rate of change is, with ``rate_window_s`` > 0, the slope of the least-squares line
  through the good samples of the last ``rate_window_s`` (irregular spacing, Bad and NaN
  samples and gaps handled in the kernel, see ``kernels.interlock``), judged once at
  least 3 of them cover 80 % of the window. With 0 (the default, as before) it is the
  two-point change from the last good sample, which process noise makes trip: with
  white noise sigma and poll interval dt the two-point rate has a noise of
  sigma * sqrt(2) / dt, a slope over n samples about sigma * sqrt(12 / n^3) / dt
  (measured for hw_sim's etch tool in RELIABILITY.md).
* Stale data is fail-safe: no sample of the tag *arriving* (gateway clock) within
  ``stale_s`` trips, counted from the stage's start when none ever came. Arrival time
  is used, not the device timestamp, so device clock drift cannot hide a dead link.
* Every trip yields one ``Command`` (reason = the interlock's name, which the app uses
  to attach the outcome to the trip record), one ``InterlockTrip`` and one
  ``Quarantine`` naming the lot/wafer/part in process with the last samples as evidence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.components import BuildContext, Command, StageOutput
from edge.errors import ConfigError
from edge.model import InterlockTrip, Quarantine, Record, Sample, SampleBatch, TagRegistry
from edge.processing.interlock_config import InterlockRuleConfig

CONDITIONS = ("none", "high", "low", "rate", "bad_quality", "stale")


@dataclass(slots=True)
class _Rule:
    cfg: InterlockRuleConfig
    tag_id: int
    params: npt.NDArray[np.float64]
    fstate: npt.NDArray[np.float64]
    istate: npt.NDArray[np.int64]
    context_ids: list[tuple[str, int]]
    ev_ts: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    ev_value: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    ev_quality: npt.NDArray[np.uint8] = field(default_factory=lambda: np.empty(0, np.uint8))
    last_arrival_ns: int = 0
    last_trip_ns: int = 0
    trips: int = 0
    stale_tripped: bool = False

    def reset_state(self) -> None:
        self.istate[0] = 0
        self.istate[1] = 0
        self.istate[6] = 0
        self.stale_tripped = False


def _fmt(value: float) -> str:
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return repr(value)


class Interlock:
    """The interlock stage: ``process`` judges batches, ``tick`` judges silence."""

    name = "interlock"

    def __init__(self, rules: Sequence[InterlockRuleConfig], tags: TagRegistry,
                 ctx: BuildContext | None = None, *, start_ns: int | None = None) -> None:
        from edge.processing import kernels as K

        self._k = K
        self.tags = tags
        start = time.time_ns() if start_ns is None else start_ns
        self.rules: dict[str, _Rule] = {}
        for cfg in rules:
            tag_id = _tag_id(tags, cfg.tag, cfg.name)
            fstate = np.full(K.N_IL_F, math.nan)
            istate = np.zeros(K.N_IL_I, np.int64)
            ctx_ids = [(key, _tag_id(tags, key, cfg.name)) for key in cfg.context_tags]
            self.rules[cfg.name] = _Rule(cfg, tag_id, cfg.params(), fstate, istate, ctx_ids,
                                         last_arrival_ns=start)
        self._by_tag: dict[int, list[_Rule]] = {}
        for rule in self.rules.values():
            self._by_tag.setdefault(rule.tag_id, []).append(rule)

        self._context: dict[int, float] = {}
        self._context_ids = sorted({i for r in self.rules.values() for _, i in r.context_ids})
        self._m_trips = self._m_eval = None
        if ctx is not None:
            self._m_trips = ctx.metrics.counter(
                "edge_interlock_trips_total", "Interlock trips", ["interlock", "condition"])
            self._m_eval = ctx.metrics.histogram(
                "edge_interlock_decision_seconds",
                "Time the interlock stage takes to judge one batch")

    def arm(self, now_ns: int) -> None:
        """Start the stale-data clocks now: the sources start now. Start-up (a cold
        kernel compile, the OPC-UA address space) must not count as silence."""
        for rule in self.rules.values():
            rule.last_arrival_ns = max(rule.last_arrival_ns, now_ns)

    # ------------------------------------------------------------------ fast path

    def process(self, batch: SampleBatch, records: Sequence[Record], now_ns: int) -> StageOutput:
        t0 = time.perf_counter_ns()
        out = StageOutput(batch, list(records))
        if len(batch) == 0:
            return out
        tag_ids = batch.tag_id
        for tag_id, rules in self._by_tag.items():
            idx = np.flatnonzero(tag_ids == tag_id)
            if idx.shape[0] == 0:
                continue
            value, ts, quality = batch.value[idx], batch.ts_ns[idx], batch.quality[idx]
            for rule in rules:
                rule.last_arrival_ns = now_ns
                k = self._k.interlock_scan(value, ts, quality, rule.params, rule.fstate,
                                           rule.istate)
                if k >= 0:
                    self._trip(rule, out, now_ns, int(idx[k]), batch, t0,
                               (value[: k + 1], ts[: k + 1], quality[: k + 1]))
                self._keep_evidence(rule, value, ts, quality)
        if self._context_ids:
            self._update_context(batch, len(batch))
        if self._m_eval is not None:
            self._m_eval.observe((time.perf_counter_ns() - t0) / 1e9)
        return out

    def tick(self, now_ns: int) -> StageOutput:
        out = StageOutput(SampleBatch.empty())
        for rule in self.rules.values():
            stale = rule.cfg.stale_s
            if stale is None or rule.istate[0]:
                continue
            if now_ns - rule.last_arrival_ns > stale * 1e9:
                t0 = time.perf_counter_ns()
                rule.istate[0] = 1
                rule.istate[6] = self._k.COND_STALE
                rule.fstate[2] = (now_ns - rule.last_arrival_ns) / 1e9
                rule.fstate[3] = stale
                rule.stale_tripped = True
                self._trip(rule, out, now_ns, -1, None, t0, None)
        return out

    # ------------------------------------------------------------------ operator

    def reset(self, name: str, now_ns: int) -> bool:
        """Clear a latched trip; takes only when the condition is clear. True when the
        interlock is ok afterwards. KeyError names an unknown interlock."""
        rule = self.rules.get(name)
        if rule is None:
            raise KeyError(f"no interlock named '{name}'")
        if not rule.istate[0]:
            return True
        if not self._clear(rule, now_ns):
            return False
        rule.reset_state()
        return True

    def latched(self, name: str) -> bool:
        """Whether the interlock is tripped (latched until a reset takes)."""
        rule = self.rules.get(name)
        if rule is None:
            raise KeyError(f"no interlock named '{name}'")
        return bool(rule.istate[0])

    def conditions(self, now_ns: int) -> dict[str, tuple[bool, bool]]:
        """Per interlock: (latched, active), active meaning the condition that tripped it
        still holds now (a reset would be refused)."""
        return {name: (bool(rule.istate[0]),
                       bool(rule.istate[0]) and not self._clear(rule, now_ns))
                for name, rule in self.rules.items()}

    def states(self) -> dict[str, dict[str, object]]:
        """Per interlock: state, tag, last trip, last value, limit, trips, condition."""
        out: dict[str, dict[str, object]] = {}
        for name, rule in self.rules.items():
            cfg = rule.cfg
            tripped = bool(rule.istate[0])
            limit = cfg.high if cfg.high is not None else cfg.low
            out[name] = {
                "state": "tripped" if tripped else "ok",
                "tag": cfg.tag,
                "last_trip_ns": rule.last_trip_ns,
                "last_value": float(rule.fstate[0]),
                "limit": math.nan if limit is None else float(limit),
                "trips": rule.trips,
                "condition": CONDITIONS[int(rule.istate[6])] if tripped else "none",
                "trip_value": float(rule.fstate[2]) if tripped else math.nan,
            }
        return out

    # ------------------------------------------------------------------ internals

    def _clear(self, rule: _Rule, now_ns: int) -> bool:
        stale = rule.cfg.stale_s
        if stale is not None and now_ns - rule.last_arrival_ns > stale * 1e9:
            return False
        if not rule.istate[9]:
            return False
        return bool(rule.istate[7])

    def _trip(self, rule: _Rule, out: StageOutput, now_ns: int, pos: int,
              batch: SampleBatch | None, t0: int,
              head: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64],
                          npt.NDArray[np.uint8]] | None) -> None:
        cfg = rule.cfg
        cond = CONDITIONS[int(rule.istate[6])]
        value, limit = float(rule.fstate[2]), float(rule.fstate[3])
        act = cfg.action
        out.commands.append(Command(source=act.source, action=act.action,
                                    target=act.target or cfg.tag, reason=cfg.name))
        reaction = time.perf_counter_ns() - t0
        ts = int(batch.ts_ns[pos]) if batch is not None and pos >= 0 else now_ns
        rule.trips += 1
        rule.last_trip_ns = ts
        context = self._context_at(rule, batch, pos)
        out.records.append(InterlockTrip(
            ts_ns=ts, interlock=cfg.name, tag=cfg.tag, condition=cond, value=value,
            limit=limit, action=f"{act.source}:{act.action}", action_ok=True,
            reaction_ns=reaction, context=context,
        ))
        subject = " ".join(f"{k.rsplit('/', 1)[-1]}={v}" for k, v in context.items())
        out.records.append(Quarantine(
            ts_ns=ts, source=cfg.name,
            reason=f"interlock {cfg.name} tripped: {cfg.tag} {cond} "
                   f"value={_fmt(value)} limit={_fmt(limit)}",
            where=cfg.tag, subject=subject, evidence=self._evidence(rule, head),
        ))
        if self._m_trips is not None:
            self._m_trips.labels(cfg.name, cond).inc()

    def _evidence(self, rule: _Rule, head: tuple[npt.NDArray[np.float64],
                                                 npt.NDArray[np.int64],
                                                 npt.NDArray[np.uint8]] | None) -> list[Sample]:
        n = rule.cfg.evidence_samples
        if n == 0:
            return []
        v, t, q = rule.ev_value, rule.ev_ts, rule.ev_quality
        if head is not None:
            v = np.concatenate((v, head[0]))[-n:]
            t = np.concatenate((t, head[1]))[-n:]
            q = np.concatenate((q, head[2]))[-n:]
        tag = rule.cfg.tag
        return [Sample(tag, int(a), float(b), int(c))
                for a, b, c in zip(t.tolist(), v.tolist(), q.tolist(), strict=True)]

    def _keep_evidence(self, rule: _Rule, value: npt.NDArray[np.float64],
                       ts: npt.NDArray[np.int64], quality: npt.NDArray[np.uint8]) -> None:
        n = rule.cfg.evidence_samples
        if n == 0:
            return
        if value.shape[0] >= n:
            rule.ev_value, rule.ev_ts, rule.ev_quality = value[-n:], ts[-n:], quality[-n:]
        else:
            rule.ev_value = np.concatenate((rule.ev_value, value))[-n:]
            rule.ev_ts = np.concatenate((rule.ev_ts, ts))[-n:]
            rule.ev_quality = np.concatenate((rule.ev_quality, quality))[-n:]

    def _update_context(self, batch: SampleBatch, upto: int) -> None:
        tag_ids = batch.tag_id[:upto]
        for cid in self._context_ids:
            idx = np.flatnonzero(tag_ids == cid)
            if idx.shape[0]:
                self._context[cid] = float(batch.value[idx[-1]])

    def _context_at(self, rule: _Rule, batch: SampleBatch | None, pos: int) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, cid in rule.context_ids:
            value = self._context.get(cid)
            if batch is not None and pos >= 0:
                idx = np.flatnonzero(batch.tag_id[: pos + 1] == cid)
                if idx.shape[0]:
                    value = float(batch.value[idx[-1]])
            out[key] = "" if value is None else _fmt(value)
        return out


def _tag_id(tags: TagRegistry, key: str, rule: str) -> int:
    try:
        return tags.id_of(key)
    except KeyError:
        raise ConfigError(f"interlock '{rule}': tag '{key}' is not declared by any source") \
            from None
