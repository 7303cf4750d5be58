"""The energy stage's state (per motor and per line) and its checkpoint: what
``edge.processing.energy`` keeps between batches, and how it is written to the journal
and read back at start (``stage_state``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.processing import stage_state
from edge.processing.calendar import MINUTE_NS, Calendar, Shift
from edge.processing.energy_config import EnergyConfig, EnergyMotorConfig

# per minute: measured Ws, estimated Ws, gap s, bridged s
_COLS = 4


@dataclass(slots=True)
class _Motor:
    cfg: EnergyMotorConfig
    tag: int
    out_tag: int
    state: npt.NDArray[np.float64]
    last_ts: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(1, np.int64))
    total: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(_COLS))
    minutes: dict[int, npt.NDArray[np.float64]] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    shift: Shift
    totals: dict[str, npt.NDArray[np.float64]]  # motor -> summed columns
    good: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Line:
    cfg: EnergyConfig
    calendar: Calendar
    params: npt.NDArray[np.float64]
    motors: list[_Motor]
    now_ns: int = -1
    next_pub_ns: int = -1
    open_shift: Shift | None = None
    reported_until_min: int = -(2**62)
    pending: list[_Pending] = field(default_factory=list)
    good_seen: dict[tuple[str, int], int] = field(default_factory=dict)
    per_part: tuple[int, int, float] | None = None  # (tag, ts, value) to publish next
    shift_ws: float = 0.0  # energy of the open shift so far (kept as samples come)
    shift_key: int = -1  # the start minute of the shift shift_ws is for
    window: dict[str, float] = field(default_factory=dict)  # motor -> kWh, last published
    last_per_part: float = math.nan  # kWh per good part of the last closed shift


def dump_line(line: _Line) -> dict[str, Any]:
    return {
        "now_ns": line.now_ns, "open_shift": stage_state.shift_dump(line.open_shift),
        "reported_until_min": line.reported_until_min,
        "pending": [{"shift": stage_state.shift_dump(p.shift),
                     "totals": {k: v.tobytes() for k, v in p.totals.items()}}
                    for p in line.pending],
        "good_seen": [[t, start, n] for (t, start), n in line.good_seen.items()],
        "per_part": list(line.per_part) if line.per_part is not None else None,
        "shift_ws": line.shift_ws, "shift_key": line.shift_key,
        "last_per_part": line.last_per_part,
        "motors": {m.cfg.name: {"state": m.state.tobytes(), "last_ts": int(m.last_ts[0]),
                                "total": m.total.tobytes(),
                                **stage_state.rows(_compact(line, m), _COLS)}
                   for m in line.motors}}


def _compact(line: _Line, motor: _Motor) -> dict[int, npt.NDArray[np.float64]]:
    """A motor's minutes for a checkpoint: the open shift's older than the rolling window
    summed into its first minute (``stage_state.compact``)."""
    sh = line.open_shift
    before = line.now_ns // MINUTE_NS - math.ceil(line.cfg.window_s / 60) - 2
    return stage_state.compact(
        motor.minutes, before, lambda m: sh is not None and sh.start_min <= m < sh.end_min,
        sh.start_min if sh is not None else None)


def load_line(line: _Line, d: dict[str, Any]) -> None:
    line.now_ns, line.shift_ws = int(d["now_ns"]), float(d["shift_ws"])
    line.open_shift = stage_state.shift_load(d["open_shift"])
    line.reported_until_min, line.shift_key = int(d["reported_until_min"]), int(d["shift_key"])
    line.pending = []
    for p in d["pending"]:
        shift = stage_state.shift_load(p["shift"])
        if shift is not None:
            line.pending.append(_Pending(shift, {
                k: np.frombuffer(v, np.float64).copy() for k, v in p["totals"].items()
                if k in {m.cfg.name for m in line.motors}}))
    line.good_seen = {(str(t), int(start)): int(n) for t, start, n in d["good_seen"]}
    pp = d["per_part"]
    line.per_part = (int(pp[0]), int(pp[1]), float(pp[2])) if pp is not None else None
    line.last_per_part = float(d["last_per_part"])
    for m in line.motors:
        md = d["motors"].get(m.cfg.name)
        if md is None:
            continue
        m.state[:] = np.frombuffer(md["state"], np.float64)
        m.last_ts[0] = int(md["last_ts"])
        m.total[:] = np.frombuffer(md["total"], np.float64)
        m.minutes = stage_state.unrows(md, _COLS)
