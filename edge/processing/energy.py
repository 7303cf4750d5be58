"""Energy: each motor's current integrated into kWh per motor, station and line, per
shift and over a rolling window, and kWh per good part.

Invariants:

* Power is ``voltage_v x current x power_factor`` (the motors' electrical model: a
  current sample is the only measurement; voltage and power factor come from config).
  Energy between two consecutive good samples is the trapezoid of their powers
  (``kernels.energy_scan``), so feeding a series in one batch or in many gives the same
  kWh.
* How a gap is counted: Bad samples add nothing; the interval across them, from the
  good sample before to the good sample after, is integrated as usual when it is at
  most ``max_gap_s`` long (bridged: counted in ``bridged_s``), and otherwise estimated
  at the motor's mean power before it (weighted by time, older intervals fading with
  the time constant ``gap_mean_s``: a motor that failed an hour ago is not assumed to
  run through the gap) (a gap: counted in ``gap_s`` and
  ``estimated_kwh``, and in the metrics ``edge_energy_gap_seconds_total`` and
  ``edge_energy_estimated_kwh_total``). ``kwh`` is measured + estimated; the record
  keeps both. Duplicates and samples out of order add nothing.
* Energy is kept per minute of sample time (the interval goes to the minute of the
  sample that ends it) and a shift is the sum of its minutes (``calendar``), so shift
  totals add up exactly to what was integrated. A shift's report is made once sample
  time is ``close_after_s`` past its end (a slower source's samples still count); a
  sample for a shift already reported counts only in the rolling window and in
  ``edge_energy_late_samples_total``.
* kWh per good part waits up to ``report_wait_s`` (sample time) after the close for the
  ``OeeReport``s of ``parts_tools`` for the same shift (the oee stage runs before this
  one; give both the same calendar); without them the report says ``good_parts = -1``.
* Restarts (``stage_state``): every motor's integrator (its last good sample, mean
  power), kept minutes and the open and pending shifts are a journal checkpoint,
  committed with every report and every OEE count taken and otherwise every
  ``CHECKPOINT_S``. After a crash the shift goes on from the last checkpoint: no report
  is lost or made twice; the samples since the checkpoint and the time the gateway was
  down are one gap per motor (from the checkpoint's last good sample to the first one
  after the restart), estimated at the mean power before it and counted as any gap.
  The same samples are in the journal, so the measured energy they held is not lost
  from InfluxDB or the MES, only estimated in the shift's totals.
* Publishing the rolling values looks up only the window's minutes, and the shift so
  far is kept as samples come: no per-publish pass over every kept minute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge.components import BuildContext, StageOutput
from edge.errors import ConfigError
from edge.model import EnergyReport, OeeReport, Quality, Record, SampleBatch, TagRegistry
from edge.processing import energy_state, stage_state
from edge.processing.calendar import MINUTE_NS, Calendar
from edge.processing.energy_config import EnergyConfig, EnergyMotorConfig
from edge.processing.energy_state import _COLS, _Line, _Motor, _Pending

WS_PER_KWH = 3.6e6
__all__ = ["Energy", "EnergyConfig", "EnergyMotorConfig"]


class Energy:
    """The energy stage for every configured line."""

    name = "energy"

    def __init__(self, configs: Sequence[EnergyConfig], tags: TagRegistry,
                 ctx: BuildContext | None = None) -> None:
        from edge.processing import kernels as K

        self._k = K
        self.lines: list[_Line] = []
        self._motor_of: dict[int, dict[int, _Motor]] = {}  # per line: tag id -> motor
        seen: set[str] = set()
        for cfg in configs:
            cfg.declare_tags(tags)
            motors = []
            for m in cfg.motors:
                if m.name in seen:
                    raise ConfigError(f"energy '{cfg.name}': motor '{m.name}' is counted twice")
                seen.add(m.name)
                try:
                    tag = tags.id_of(m.current_tag)
                except KeyError:
                    raise ConfigError(f"energy '{cfg.name}': tag '{m.current_tag}' is not "
                                      "declared by any source") from None
                state = np.zeros(K.N_ENERGY_STATE)
                out = tags.id_of(f"{m.name}/energy_kwh") if cfg.emit_samples else -1
                motors.append(_Motor(m, tag, out, state))
            params = np.array([cfg.voltage_v * cfg.power_factor, cfg.max_gap_s * 1e9,
                               cfg.gap_mean_s])
            self.lines.append(_Line(cfg, Calendar(cfg.calendar), params, motors))
        self._tags = tags
        self.checkpoint_key = "stage:energy"
        self._save = stage_state.SaveClock()
        self._m_gap = self._m_est = self._m_late = None
        if ctx is not None:
            met = ctx.metrics
            self._m_gap = met.counter("edge_energy_gap_seconds_total",
                                    "Seconds of motor current estimated over gaps", ["motor"])
            self._m_est = met.counter("edge_energy_estimated_kwh_total",
                                    "kWh estimated over gaps at the mean power", ["motor"])
            self._m_late = met.counter("edge_energy_late_samples_total",
                                     "Samples of a shift already reported", ["line"])

    def process(self, batch: SampleBatch, records: Sequence[Record], now_ns: int) -> StageOutput:
        out = StageOutput(batch, list(records))
        for line in self.lines:
            for rec in records:
                if (isinstance(rec, OeeReport) and rec.scope == "tool"
                        and rec.name in line.cfg.parts_tools):
                    line.good_seen[(rec.name, rec.start_ns)] = rec.good_count
                    self._save.must = True
        if len(batch):
            self._save.changed = True
            ids: list[int] = []
            ts: list[int] = []
            vals: list[float] = []
            for line in self.lines:
                self._integrate(line, batch)
                self._close(line, out)
                self._publish(line, ids, ts, vals)
            if ids:
                extra = SampleBatch(ids, ts, vals, [int(Quality.GOOD)] * len(ids))
                out.batch = SampleBatch.concat([out.batch, extra])
        made = len(out.records)
        for line in self.lines:
            self._flush(line, out)
        if len(out.records) > made or any(line.pending for line in self.lines):
            self._save.must = True
        return out

    def tick(self, now_ns: int) -> StageOutput:
        return StageOutput(SampleBatch.empty())

    def states(self) -> dict[str, dict[str, object]]:
        """Per line: the shift now open and its kWh so far, kWh per good part of the last
        closed shift, each motor's kWh over the window, as last published (no pass over
        the kept minutes: the status asks every second)."""
        out: dict[str, dict[str, object]] = {}
        for line in self.lines:
            sh = line.open_shift
            now = sh is not None and line.shift_key == sh.start_min and \
                sh.start_ns <= line.now_ns
            out[line.cfg.name] = {
                "shift": sh.name if now and sh is not None else "",
                "shift_kwh": line.shift_ws / WS_PER_KWH if now else 0.0,
                "kwh_per_good_part": line.last_per_part, "window_s": line.cfg.window_s,
                "motors_kwh": dict(line.window)}
        return out

    def totals(self, line_name: str) -> dict[str, dict[str, float]]:
        """Per motor of a line since the stage started: kwh, measured_kwh, estimated_kwh,
        gap_s, bridged_s."""
        line = next(x for x in self.lines if x.cfg.name == line_name)
        return {m.cfg.name: _as_dict(m.total) for m in line.motors}

    def snapshot(self, mono_ns: int) -> bytes | None:
        """Every motor's integrator and kept minutes and every line's open and pending
        shifts, when a checkpoint is due (``stage_state``)."""
        if not self._save.due(mono_ns):
            return None
        return stage_state.dumps({"lines": {line.cfg.name: energy_state.dump_line(line)
                                            for line in self.lines}})

    def restore(self, data: bytes) -> None:
        """Take back a snapshot; lines and motors are matched by name (ones the config no
        longer has are ignored). The first sample after it ends a gap: estimated at the
        motor's mean power like any gap longer than ``max_gap_s``."""
        saved = stage_state.loads(data, "energy")["lines"]
        for line in self.lines:
            if line.cfg.name in saved:
                energy_state.load_line(line, saved[line.cfg.name])

    # ------------------------------------------------------------------ internals

    def _integrate(self, line: _Line, batch: SampleBatch) -> None:
        tag_ids = batch.tag_id
        by_tag = self._motor_of.get(id(line))
        if by_tag is None:
            by_tag = self._motor_of[id(line)] = {m.tag: m for m in line.motors}
        # only the motors this batch holds (a batch is mostly one motor's message): one
        # pass over the tags, not a scan of the batch per configured motor
        for tag in np.unique(tag_ids).tolist():
            motor = by_tag.get(tag)
            if motor is None:
                continue
            idx = np.flatnonzero(tag_ids == tag)
            n = idx.shape[0]
            t = np.ascontiguousarray(batch.ts_ns[idx])
            cur = np.where(batch.quality[idx] & 0x80, np.nan, batch.value[idx])
            cols = np.empty((_COLS, n))
            self._k.energy_scan(t, np.ascontiguousarray(cur), line.params, motor.state,
                                motor.last_ts, cols[0], cols[1], cols[2], cols[3])
            motor.total += cols.sum(axis=1)
            minute = t // MINUTE_NS
            m0 = int(minute.min())
            rel = minute - m0
            span = int(rel.max()) + 1
            late = 0
            for k in np.flatnonzero(np.bincount(rel, minlength=span)).tolist():
                sel = rel == k
                acc = motor.minutes.get(m0 + k)
                if acc is None:
                    acc = motor.minutes[m0 + k] = np.zeros(_COLS)
                acc += cols[:, sel].sum(axis=1)
                if m0 + k < line.reported_until_min:
                    late += int(np.count_nonzero(sel))
            line.now_ns = max(line.now_ns, int(t.max()))
            sh = line.open_shift
            if sh is not None and line.shift_key == sh.start_min:
                inside = (minute >= sh.start_min) & (minute < sh.end_min)
                line.shift_ws += float((cols[0] + cols[1])[inside].sum())
            if self._m_gap is not None and self._m_est is not None:
                gap = float(cols[2].sum())
                if gap:
                    self._m_gap.labels(motor.cfg.name).inc(gap)
                    self._m_est.labels(motor.cfg.name).inc(float(cols[1].sum()) / WS_PER_KWH)
            if late and self._m_late is not None:
                self._m_late.labels(line.cfg.name).inc(late)

    def _close(self, line: _Line, out: StageOutput) -> None:
        """Report every shift whose end is ``close_after_s`` behind the newest sample."""
        cal, now = line.calendar, line.now_ns
        if now < 0:
            return
        if line.open_shift is None:
            line.open_shift = cal.next_shift(now)
        close_ns = round(line.cfg.close_after_s * 1e9)
        while line.open_shift is not None and now >= line.open_shift.end_ns + close_ns:
            sh = line.open_shift
            totals = {m.cfg.name: _sum(m.minutes, sh.start_min, sh.end_min) for m in line.motors}
            line.pending.append(_Pending(sh, totals))
            line.reported_until_min = sh.end_min
            line.open_shift = cal.next_shift(sh.end_ns)
        keep_from = min(line.reported_until_min,
                        now // MINUTE_NS - math.ceil(line.cfg.window_s / 60) - 1)
        for m in line.motors:
            for k in [k for k in m.minutes if k < keep_from]:
                del m.minutes[k]

    def _flush(self, line: _Line, out: StageOutput) -> None:
        wait_ns = round(line.cfg.report_wait_s * 1e9)
        tools = line.cfg.parts_tools
        while line.pending:
            p = line.pending[0]
            have = {t: line.good_seen[(t, p.shift.start_ns)] for t in tools
                    if (t, p.shift.start_ns) in line.good_seen}
            if len(have) < len(tools) and line.now_ns < p.shift.end_ns + wait_ns:
                return
            line.pending.pop(0)
            good = sum(have.values()) if have else -1
            out.records.extend(self._reports(line, p, good))
            for t in tools:
                line.good_seen.pop((t, p.shift.start_ns), None)

    def _reports(self, line: _Line, p: _Pending, good: int) -> list[EnergyReport]:
        cfg, sh = line.cfg, p.shift
        groups: list[tuple[str, str, list[str]]] = [
            ("motor", m.cfg.name, [m.cfg.name]) for m in line.motors]
        groups += [("station", s, [m.cfg.name for m in line.motors
                                   if m.cfg.station_name == s]) for s in cfg.stations()]
        groups.append(("line", cfg.name, [m.cfg.name for m in line.motors]))
        reports = []
        for scope, name, members in groups:
            c = sum((p.totals[x] for x in members), np.zeros(_COLS))
            kwh = (c[0] + c[1]) / WS_PER_KWH
            per_part = kwh / good if scope == "line" and good > 0 else math.nan
            reports.append(EnergyReport(
                ts_ns=sh.end_ns, start_ns=sh.start_ns, scope=scope,  # type: ignore[arg-type]
                name=name, line=cfg.name, shift=sh.name, kwh=float(kwh),
                measured_kwh=float(c[0] / WS_PER_KWH), estimated_kwh=float(c[1] / WS_PER_KWH),
                gap_s=float(c[2]), bridged_s=float(c[3]),
                good_parts=good if scope == "line" else -1, kwh_per_good_part=per_part))
        if good > 0:
            line.last_per_part = reports[-1].kwh_per_good_part
        if cfg.emit_samples and good > 0:
            line.next_pub_ns = -1  # publish the new per-part figure with the next samples
            line.per_part = (self._tags.id_of(f"{cfg.name}/kwh_per_good_part"),
                             sh.end_ns, reports[-1].kwh_per_good_part)
        return reports

    def _publish(self, line: _Line, ids: list[int], ts: list[int], vals: list[float]) -> None:
        cfg = line.cfg
        if line.now_ns < 0 or line.now_ns < line.next_pub_ns:
            return
        line.next_pub_ns = line.now_ns + round(cfg.publish_interval_s * 1e9)
        now_min = line.now_ns // MINUTE_NS
        a = now_min + 1 - round(cfg.window_s / 60)
        window = {m.cfg.name: _window_kwh(m.minutes, a, now_min + 1) for m in line.motors}
        line.window = window
        sh = line.open_shift
        if sh is not None and line.shift_key != sh.start_min:  # a new shift: sum it once
            line.shift_key = sh.start_min
            line.shift_ws = sum(float(c[0] + c[1]) for m in line.motors
                                for k, c in m.minutes.items() if k >= sh.start_min)
        if not cfg.emit_samples:
            return
        stations = {s: sum(window[m.cfg.name] for m in line.motors if m.cfg.station_name == s)
                    for s in cfg.stations()}
        for device, v in [*window.items(), *stations.items(),
                          (cfg.name, sum(window.values()))]:
            ids.append(self._tags.id_of(f"{device}/energy_kwh"))
            ts.append(line.now_ns)
            vals.append(v)
        if sh is not None:
            ids.append(self._tags.id_of(f"{cfg.name}/energy_shift_kwh"))
            ts.append(line.now_ns)
            vals.append(line.shift_ws / WS_PER_KWH)
        if line.per_part is not None:
            ids.append(line.per_part[0])
            ts.append(line.per_part[1])
            vals.append(line.per_part[2])
            line.per_part = None


def _sum(minutes: dict[int, npt.NDArray[np.float64]], a: int, b: int) -> npt.NDArray[np.float64]:
    total = np.zeros(_COLS)
    for k, v in minutes.items():
        if a <= k < b:
            total += v
    return total


def _window_kwh(minutes: dict[int, npt.NDArray[np.float64]], a: int, b: int) -> float:
    """kWh of the minutes ``[a, b)`` (a window: looks up its minutes, not all kept)."""
    ws = 0.0
    for k in range(a, b):
        c = minutes.get(k)
        if c is not None:
            ws += c[0] + c[1]
    return float(ws) / WS_PER_KWH


def _kwh(cols: npt.NDArray[np.float64]) -> float:
    return float(cols[0] + cols[1]) / WS_PER_KWH


def _as_dict(c: npt.NDArray[np.float64]) -> dict[str, float]:
    return {"kwh": _kwh(c), "measured_kwh": float(c[0]) / WS_PER_KWH,
            "estimated_kwh": float(c[1]) / WS_PER_KWH, "gap_s": float(c[2]),
            "bridged_s": float(c[3])}
