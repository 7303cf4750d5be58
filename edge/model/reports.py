"""The typed records that summarise a span: OEE and energy per shift, a wafer's step
through a tool (the digital thread) with its telemetry summary.

Invariant: as every record, frozen msgspec Structs tagged by ``type``.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from edge.model.records import InterlockTrip, Quarantine, SpcViolation


class OeeReport(msgspec.Struct, frozen=True, tag="oee_report", tag_field="type"):
    """OEE of a tool (or of a line, its tools together) over one shift, and why it was
    lost. Times are seconds of planned production time (shift less planned breaks);
    ``no_data_s`` of it had no usable state (a gap) and is left out of availability.
    The losses add up: planned - no_data = run + the downtime causes, and
    run = fully productive (oee x known planned time) + speed loss + scrap and rework."""

    ts_ns: int  # the shift's end
    start_ns: int  # the shift's start
    scope: Literal["tool", "line"]
    name: str
    line: str
    shift: str
    planned_s: float
    run_s: float
    no_data_s: float
    down_interlock_s: float  # stopped by an interlock trip until reset
    down_fault_s: float  # stopped longer than a micro-stoppage, no trip
    down_microstop_s: float  # stops shorter than the tool's micro-stoppage limit
    speed_loss_s: float  # run time less the ideal time of the parts made
    scrap_loss_s: float  # ideal time of the scrapped parts
    rework_loss_s: float  # ideal time of the parts sent to rework
    availability: float
    performance: float
    quality: float
    oee: float
    ideal_cycle_s: float
    total_count: int
    good_count: int
    scrap_count: int
    rework_count: int
    trips: int = 0
    stops: int = 0
    micro_stoppages: int = 0


class EnergyReport(msgspec.Struct, frozen=True, tag="energy_report", tag_field="type"):
    """Electrical energy of a motor, a station or a line over one shift. ``kwh`` =
    ``measured_kwh`` (integrated samples, Bad ones bridged when the span around them is
    short) + ``estimated_kwh`` (gaps longer than the limit, at the motor's mean power so
    far); ``gap_s`` and ``bridged_s`` say how much time each covers."""

    ts_ns: int  # the shift's end
    start_ns: int  # the shift's start
    scope: Literal["motor", "station", "line"]
    name: str
    line: str
    shift: str
    kwh: float
    measured_kwh: float
    estimated_kwh: float
    gap_s: float
    bridged_s: float
    good_parts: int = -1  # -1: no OEE report of the line's tools was seen for the shift
    kwh_per_good_part: float = math.nan
class TagSummary(msgspec.Struct, frozen=True):
    """One tag's telemetry over a span: min/mean/max over its Good and Uncertain samples
    (NaN when it had none), the last such value, and how many samples were Bad."""

    tag: str
    n: int
    min: float
    mean: float
    max: float
    last: float
    bad: int


class WaferStep(msgspec.Struct, frozen=True, tag="wafer_step", tag_field="type"):
    """One wafer's step through one tool, made when the wafer leaves it: the digital
    thread's unit. ``start_ns``/``end_ns`` are when it entered and left (from the tool's
    own elapsed-time register where configured, else the first reading that showed it);
    ``first_seen_ns`` is the first reading the gateway saw, later than ``start_ns`` when
    the gateway (re)started mid-step: the telemetry summary covers from there. The
    trips, quarantines and SPC alarms are those of the tool during the step."""

    ts_ns: int  # = end_ns: when the wafer left
    tool: str
    lot: str
    wafer: str
    recipe: str
    start_ns: int
    end_ns: int
    first_seen_ns: int
    telemetry: list[TagSummary] = []
    trips: list[InterlockTrip] = []
    quarantines: list[Quarantine] = []
    spc_alarms: list[SpcViolation] = []
    dropped: int = 0  # trips/quarantines/alarms over the per-step cap, counted not kept
