"""An OEE report computed from the kept minutes of a line's tool tallies: the factors and
the losses by cause over the planned minutes of a period (a shift, or the rolling window).
The formulas are in ``edge.processing.oee``'s docstring."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edge.model import OeeReport
from edge.processing.calendar import MINUTE_NS
from edge.processing.oee_tally import (
    COUNT,
    DOWN_FAULT,
    DOWN_MICRO,
    DOWN_TRIP,
    GOOD,
    MICROS,
    N_COLS,
    REWORK,
    RUN,
    SCRAP,
    STOPS,
    TRIPS,
    UNSEEN,
)

if TYPE_CHECKING:
    from edge.processing.oee import _Line, _Tool


def _sums(line: _Line, tool: _Tool, a: int, b: int) -> npt.NDArray[np.float64]:
    """A tool's columns summed over the planned minutes in ``[a, b)``, its stop still
    going classified provisionally."""
    total = np.zeros(N_COLS)
    prov = tool.tally.provisional()
    for m, row in tool.tally.minutes.items():
        if a <= m < b and line.calendar.planned(m):
            total += row
            if m in prov:
                col, ns = prov[m]
                total[DOWN_FAULT] -= ns
                total[col] += ns
    return total


def reports(line: _Line, a: int, b: int, shift: str, rolling: bool = False,
             ) -> list[OeeReport]:
    cal = line.calendar
    if rolling:  # the window ends now: the rest of this minute is not planned yet
        planned_s = 60.0 * cal.planned_minutes(a, b - 1) + (
            (line.now_ns - (b - 1) * MINUTE_NS) / 1e9 if cal.planned(b - 1) else 0.0)
    else:
        planned_s = 60.0 * cal.planned_minutes(a, b)
    per_tool = [(t, _sums(line, t, a, b)) for t in line.tools]
    for t, c in per_tool:
        if t.state_tag < 0:  # no state reported: running through planned time
            c[RUN] = planned_s * 1e9
    reports = [_report(line, "tool", t.cfg.name, c, planned_s, t.cfg.ideal_cycle_s, a, b,
                       shift) for t, c in per_tool]
    pooled = sum((c for _, c in per_tool), np.zeros(N_COLS))
    ideal = sum((c[COUNT] - c[UNSEEN]) * t.cfg.ideal_cycle_s for t, c in per_tool)
    reports.append(_report(line, "line", line.cfg.name, pooled,
                           planned_s * len(line.tools), math.nan, a, b, shift,
                           ideal_s=ideal))
    return reports


def _report(line: _Line, scope: str, name: str, c: npt.NDArray[np.float64],
            planned_s: float, ideal_cycle_s: float, a: int, b: int, shift: str,
            ideal_s: float | None = None) -> OeeReport:
    run = c[RUN] / 1e9
    downs = (c[DOWN_TRIP] + c[DOWN_FAULT] + c[DOWN_MICRO]) / 1e9
    known = run + downs
    no_data = max(0.0, planned_s - known)
    count = int(c[COUNT])
    seen = count - int(c[UNSEEN])  # performance is judged over the time the state was known
    ideal = seen * ideal_cycle_s if ideal_s is None else ideal_s
    judged = c[GOOD] + c[SCRAP] + c[REWORK]
    availability = run / known if known > 0 else math.nan
    performance = ideal / run if run > 0 else math.nan
    quality = c[GOOD] / judged if judged > 0 else 1.0
    per_part = ideal / seen if seen else 0.0
    return OeeReport(
        ts_ns=b * MINUTE_NS, start_ns=a * MINUTE_NS, scope=scope,  # type: ignore[arg-type]
        name=name, line=line.cfg.name, shift=shift, planned_s=planned_s, run_s=run,
        no_data_s=no_data, down_interlock_s=c[DOWN_TRIP] / 1e9,
        down_fault_s=c[DOWN_FAULT] / 1e9, down_microstop_s=c[DOWN_MICRO] / 1e9,
        speed_loss_s=run - ideal, scrap_loss_s=per_part * c[SCRAP],
        rework_loss_s=per_part * c[REWORK], availability=availability,
        performance=performance, quality=quality,
        oee=availability * performance * quality, ideal_cycle_s=ideal_cycle_s,
        total_count=count, good_count=int(c[GOOD]), scrap_count=int(c[SCRAP]),
        rework_count=int(c[REWORK]), trips=int(c[TRIPS]), stops=int(c[STOPS]),
        micro_stoppages=int(c[MICROS]))
