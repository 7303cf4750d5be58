"""The status document: one typed value, built in one place, read by everyone.

``edge-gateway status`` (over the control socket), the OPC-UA Diagnostics, Interlocks,
Health and SPC objects, and the gateway's self-metrics all read a ``StatusDoc``.

Invariants:

* Field names are a contract. The OPC-UA server mirrors the fields named in
  ``DIAGNOSTICS`` under ``Diagnostics/<field>/<key>/<field>`` and each interlock's
  ``InterlockStatus`` fields under ``Interlocks/<name>/<field>``; SCADA clients bind to
  those node names. ``tests/unit/test_statusdoc.py`` pins them: renaming a field here is
  a breaking change for every client. ``oee``, ``energy`` and ``last_wafer`` are not
  mirrored (their rolling values are OPC-UA tag variables already: ``etch1/oee``, ...).
* The stages' parts are what each stage last published (``states()`` copies, never
  recomputes): the board builds the document once a second.
* ``build_status`` is pure: every input is an argument; nothing here imports the
  gateway, a stage or the journal.
* Encoded with ``encode`` (msgspec JSON), a NaN or infinite number is ``null``: the
  document is always strict JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec
import numpy as np


class _Doc(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the document's parts; unknown keys of a stage's state are ignored."""


class JournalDepth(_Doc, frozen=True):
    """The journal backlog of one durable sink."""

    depth_points: int
    depth_entries: int
    depth_bytes: int
    oldest_unsent_age_s: float
    acked: int


class SinkStatus(_Doc, frozen=True):
    link_up: bool
    delivered_points: int
    last_error: str
    attempt: int


class ComponentStatus(_Doc, frozen=True):
    running: bool
    restarts: int
    last_error: str
    stuck: str = ""  # the blocking call it has been stuck in past stall_timeout_s, if any


# After a source's last outage: "filled" (every gap read from the server's history),
# "partial" (some tags had no history), "no_history" (none had), "off" (backfill
# disabled), "none" (no outage yet).
BackfillOutcome = Literal["none", "filled", "partial", "no_history", "off"]


class SourceStatus(_Doc, frozen=True):
    """A source that watches its own data (the OPC-UA client): whether data flows, why
    its tags are Bad, how long the last outage lasted, what the last backfill recovered."""

    link_up: bool  # data flows (a session is up and delivered values)
    bad_reason: str  # why every tag of the source is Bad now; "" while data flows
    bad_since: float  # wall-clock time (s) data went missing; 0 while it flows
    outages: int  # since the gateway started
    last_outage_s: float  # how long data was missing the last time; NaN: no outage yet
    backfill: BackfillOutcome
    backfilled_values: int  # values the last backfill read from the server's history
    unfilled_tags: int  # tags whose gap the last backfill could not fill (no history)


class InterlockStatus(_Doc, frozen=True):
    state: Literal["ok", "tripped"]
    tag: str
    last_trip_ns: int
    last_value: float
    limit: float
    trips: int
    condition: str
    trip_value: float


class HealthStatus(_Doc, frozen=True):
    health: float
    ttf_s: float
    running_level_a: float
    baseline_a: float
    rms_a: float
    spike_rate: float
    spikes: float
    micro_stoppages: float
    micro_stoppage_rate: float
    micro_stoppage_samples: float
    inrush_peak_a: float
    starts: float
    spikes_per_running_sample: float
    vibration: float
    temperature_c: float


class SpcStatus(_Doc, frozen=True):
    tag: str
    center: float
    sigma: float
    ucl: float
    lcl: float
    ewma: float
    points: float


class OeeStatus(_Doc, frozen=True):
    """A tool's or a line's OEE over the stage's rolling window (NaN: not known yet)."""

    scope: Literal["tool", "line"]
    line: str
    shift: str  # the shift now open ("" outside planned time)
    availability: float
    performance: float
    quality: float
    oee: float
    window_s: float


class EnergyStatus(_Doc, frozen=True):
    """A line's energy: this shift so far, per good part of the last closed shift (NaN
    until one closed with parts), each motor's kWh over the rolling window."""

    shift: str
    shift_kwh: float
    kwh_per_good_part: float
    window_s: float
    motors_kwh: dict[str, float]


class LastWafer(_Doc, frozen=True):
    """The last ``WaferStep`` the trace stage made (any tool)."""

    tool: str
    lot: str
    wafer: str
    recipe: str
    start_ns: int
    end_ns: int
    trips: int
    quarantines: int
    spc_alarms: int


class StatusDoc(_Doc, frozen=True):
    gateway: str
    pid: int
    uptime_s: float
    ready: bool
    journal: dict[str, JournalDepth]
    journal_bytes: int
    journal_pending_points: int
    links: dict[str, bool]
    rates: dict[str, float]
    components: dict[str, ComponentStatus]
    sinks: dict[str, SinkStatus]
    interlocks: dict[str, InterlockStatus]
    health: dict[str, HealthStatus]
    spc: dict[str, SpcStatus]
    oee: dict[str, OeeStatus] = {}
    energy: dict[str, EnergyStatus] = {}
    last_wafer: LastWafer | None = None
    sources: dict[str, SourceStatus] = {}  # by source name: those that report one


# The fields of StatusDoc that the OPC-UA Diagnostics object mirrors, in this order.
DIAGNOSTICS: tuple[str, ...] = (
    "journal", "links", "rates", "sinks", "journal_pending_points", "sources",
)

_STAGE_TYPES: dict[str, type] = {
    "interlocks": dict[str, InterlockStatus], "health": dict[str, HealthStatus],
    "spc": dict[str, SpcStatus], "oee": dict[str, OeeStatus],
    "energy": dict[str, EnergyStatus], "last_wafer": dict[str, LastWafer],
}


def _plain(value: object) -> object:
    """Stage states hold numpy scalars where a kernel computed them; msgspec takes only
    Python numbers, and a status that cannot be built crashes the board every second."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def build_status(
    *, gateway: str, pid: int, uptime_s: float, ready: bool,
    journal: Mapping[str, JournalDepth], journal_bytes: int, journal_pending_points: int,
    links: Mapping[str, bool], rates: Mapping[str, float],
    components: Mapping[str, Mapping[str, object]], sinks: Mapping[str, SinkStatus],
    stage_states: Mapping[str, Mapping[str, Mapping[str, object]]],
    sources: Mapping[str, SourceStatus] | None = None,
) -> StatusDoc:
    """The document from its inputs. ``stage_states``: document field (``interlocks``,
    ``health``, ``spc``, ...: ``edge.processing.STAGES`` says which stage fills which) ->
    that stage's ``states()``. ``last_wafer`` takes the trace stage's per-tool last steps
    and keeps the one that ended last."""
    parts: dict[str, object] = {field: {} for field in _STAGE_TYPES}
    for field, states in stage_states.items():
        parts[field] = msgspec.convert(_plain(states), _STAGE_TYPES[field], strict=False)
    return StatusDoc(
        gateway=gateway, pid=pid, uptime_s=round(uptime_s, 1), ready=ready,
        journal=dict(journal), journal_bytes=journal_bytes,
        journal_pending_points=journal_pending_points, links=dict(links), rates=dict(rates),
        components=msgspec.convert(components, dict[str, ComponentStatus]),
        sinks=dict(sinks),
        interlocks=parts["interlocks"],  # type: ignore[arg-type]
        health=parts["health"],  # type: ignore[arg-type]
        spc=parts["spc"],  # type: ignore[arg-type]
        oee=parts["oee"],  # type: ignore[arg-type]
        energy=parts["energy"],  # type: ignore[arg-type]
        last_wafer=max(parts["last_wafer"].values(),  # type: ignore[attr-defined]
                       key=lambda w: w.end_ns, default=None),
        sources=dict(sources or {}),
    )


def diagnostics(doc: StatusDoc) -> dict[str, object]:
    """What the OPC-UA Diagnostics object mirrors: ``DIAGNOSTICS`` fields as plain values."""
    return {name: msgspec.to_builtins(getattr(doc, name)) for name in DIAGNOSTICS}


def as_tree(part: object) -> object:
    """A part of the document as plain dicts, lists and scalars (NaN kept: OPC-UA has it)."""
    return msgspec.to_builtins(part)


_ENCODER = msgspec.json.Encoder(enc_hook=str)


def encode(value: object) -> bytes:
    """Strict JSON (NaN and infinities as null), Structs included."""
    return _ENCODER.encode(value)
