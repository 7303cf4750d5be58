"""The condition board: the gateway's one list of judgements an operator acts on.

One condition per interlock, per SPC chart with alarm rules and per monitored motor, with
the state an alarm list shows (the OPC-UA Alarms & Conditions model, Part 9): enabled,
active, latched, acknowledged, confirmed, retained, severity, message, the node it is
about, and the lot and wafer in process where the trip names them. The OPC-UA server,
the web page and the CLI read it and act through it; none keeps its own copy.

Invariants:

* Fed in one place: ``observe`` takes every record of the data path (a trip, an SPC
  alarm, a health alert makes its condition active and unacknowledged), ``poll`` asks the
  stages whether each condition still holds (the gateway's 100 ms ticker). Everything
  runs on the main event loop.
* Lifecycle (Part 9, with confirm): active -> acknowledged (ConfirmedState becomes False)
  -> confirmed. An interlock also latches: it stays retained until a reset takes, and a
  reset is refused while its condition is active. ``retain`` is true while any of active,
  latched, unacknowledged, unconfirmed holds.
* Every acknowledge, confirm and reset, taken or refused, is one ``OperatorAction``
  record (origin, user, target, comment, outcome), journaled before the answer returns;
  a journal that cannot commit (a full disk) holds the answer at most ``AUDIT_WAIT_S``:
  the record stays queued in memory until the disk takes it, and an operator can still
  reset an interlock (the interlocks keep working on a full disk).
  A refusal names its reason; it never changes the condition.
* A reset that takes sends the interlock's reset command (``InterlockAction.reset``) to
  the device, so the tool restarts; a failed command is said in the answer and the record.
* Every change gives listeners a new immutable ``ConditionState`` with a higher ``seq``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import structlog

from edge.model import HealthAlert, InterlockTrip, OperatorAction, Record, SpcViolation

if TYPE_CHECKING:
    from edge.config import Config

log = structlog.get_logger("edge.conditions")
AUDIT_WAIT_S = 2.0  # the longest an answer waits for its audit record's journal commit

Kind = Literal["interlock", "spc", "health"]
# What an alarm list needs to draw it: a limit on a value (high/low), or a state that is
# not normal (Bad quality, rate, stale data, a chart out of control, a worn motor).
Shape = Literal["limit", "off_normal"]
Refusal = Literal["", "unknown", "disabled", "active", "already_acked", "already_confirmed",
                  "not_acked", "command_failed"]

SEVERITY_SPC_ALARM = 700
SEVERITY_HEALTH = {"health": 600, "time": 800}  # by the first word of HealthAlert.reason


class ConditionState(msgspec.Struct, frozen=True, kw_only=True):
    """One condition as an alarm list shows it (a snapshot; the board makes a new one on
    every change)."""

    id: str  # "<kind>:<name>"
    kind: Kind
    name: str
    shape: Shape
    source: str  # the tag or motor it is about
    enabled: bool = True
    active: bool = False
    latched: bool = False
    acked: bool = True
    confirmed: bool = True
    severity: int = 0
    message: str = ""
    lot: str = ""
    wafer: str = ""
    value: float = float("nan")
    high: float | None = None
    low: float | None = None
    time_ns: int = 0  # the last transition
    active_since_ns: int = 0
    comment: str = ""  # the last operator comment, and who gave it
    user: str = ""
    seq: int = 0
    retain: bool = False  # active, latched, unacknowledged or unconfirmed


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to an operator action: taken, or refused with a reason."""

    ok: bool
    detail: str = ""
    refusal: Refusal = ""


@dataclass(frozen=True, slots=True)
class Declared:
    """A condition the configuration declares (so a client sees it before it trips)."""

    kind: Kind
    name: str
    shape: Shape
    source: str
    severity: int
    high: float | None = None
    low: float | None = None


def declared_conditions(cfg: Config) -> tuple[list[Declared], dict[str, str]]:
    """The conditions a configuration declares, and SPC chart name by tag: an interlock
    with a high or low limit is a limit alarm, one on quality, rate or stale data alone an
    off-normal alarm; an SPC chart with alarm rules and each monitored motor off-normal."""
    out: list[Declared] = []
    for rule in cfg.section("interlocks"):
        r: Any = rule
        limit = r.high is not None or r.low is not None
        out.append(Declared("interlock", r.name, "limit" if limit else "off_normal", r.tag,
                            r.severity, high=r.high, low=r.low))
    charts: dict[str, str] = {}
    for chart in cfg.section("spc"):
        c: Any = chart
        if c.alarm_rules and set(c.alarm_rules) & set(c.rules):
            out.append(Declared("spc", c.name, "off_normal", c.tag, SEVERITY_SPC_ALARM))
            charts.setdefault(c.tag, c.name)
    for group in cfg.section("health"):
        g: Any = group
        for motor in g.motors:
            out.append(Declared("health", motor.name, "off_normal", f"{motor.name}/health",
                                SEVERITY_HEALTH["health"]))
    return out, charts


Listener = Callable[[ConditionState], None]
# name -> (latched, active) for one kind of condition, asked on every poll.
Probe = Callable[[int], Mapping[str, tuple[bool, bool]]]
ResetLatch = Callable[[str, int], bool]
SendReset = Callable[[str], Awaitable[tuple[bool, str]]]
Journal = Callable[[Sequence[Record]], Awaitable[None]]


async def _no_journal(records: Sequence[Record]) -> None:
    return None


class ConditionBoard:
    def __init__(self, declared: Sequence[Declared], *, journal: Journal = _no_journal,
                 chart_of_tag: Mapping[str, str] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self._c: dict[str, ConditionState] = {}
        for d in declared:
            cid = f"{d.kind}:{d.name}"
            self._c[cid] = ConditionState(id=cid, kind=d.kind, name=d.name, shape=d.shape,
                                          source=d.source, severity=d.severity,
                                          high=d.high, low=d.low)
        self._journal = journal
        self._chart_of_tag = dict(chart_of_tag or {})
        self._clock = clock
        self._listeners: list[Listener] = []
        self._probes: dict[Kind, Probe] = {}
        self._reset_latch: ResetLatch | None = None
        self._send_reset: SendReset | None = None
        self._describe: Callable[[str], str] | None = None
        self._seq = 0

    # ------------------------------------------------------------------ wiring

    def bind(self, *, probes: Mapping[Kind, Probe], reset_latch: ResetLatch | None,
             send_reset: SendReset | None, journal: Journal | None = None,
             describe: Callable[[str], str] | None = None) -> None:
        """``describe(interlock)``: why it is still active now, for a refused reset."""
        self._describe = describe
        self._probes = dict(probes)
        self._reset_latch = reset_latch
        self._send_reset = send_reset
        if journal is not None:
            self._journal = journal

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """``listener`` gets every changed condition; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # ------------------------------------------------------------------ reading

    def conditions(self) -> list[ConditionState]:
        return list(self._c.values())

    def get(self, cid: str) -> ConditionState | None:
        return self._c.get(cid)

    def retained(self) -> list[ConditionState]:
        return [c for c in self._c.values() if c.retain]

    # ------------------------------------------------------------------ fed by the flow

    def observe(self, records: Sequence[Record]) -> None:
        for rec in records:
            if isinstance(rec, InterlockTrip):
                self._raise(f"interlock:{rec.interlock}", rec.ts_ns, latched=True,
                            value=rec.value, message=_trip_message(rec),
                            lot=_context(rec, "lot"), wafer=_context(rec, "wafer"))
            elif isinstance(rec, SpcViolation) and rec.alarm:
                chart = self._chart_of_tag.get(rec.tag) or rec.detail.split(":", 1)[0]
                self._raise(f"spc:{chart}", rec.ts_ns, value=rec.value,
                            severity=SEVERITY_SPC_ALARM,
                            message=f"SPC chart {chart} on {rec.tag}: {rec.detail}")
            elif isinstance(rec, HealthAlert):
                word = rec.reason.split(" ", 1)[0]
                self._raise(f"health:{rec.motor}", rec.ts_ns, value=rec.health,
                            severity=SEVERITY_HEALTH.get(word, 600),
                            message=f"motor {rec.motor}: {rec.reason}")

    def poll(self, now_ns: int) -> None:
        """Ask the stages whether each condition still holds; publish what changed."""
        for kind, probe in self._probes.items():
            for name, (latched, active) in probe(now_ns).items():
                c = self._c.get(f"{kind}:{name}")
                if c is None or (c.latched, c.active) == (latched, active):
                    continue
                if active and not c.active:
                    if not c.latched:
                        continue  # it becomes active by its record, with its message
                    # latched, cleared, and out of limits again before a reset: no new
                    # trip record (the latch holds), but the alarm list must say so
                    self._change(c, now_ns, latched=latched, active=True, acked=False,
                                 confirmed=True, active_since_ns=now_ns,
                                 message=f"interlock {c.name}: condition active again "
                                         "(still latched)")
                    continue
                self._change(c, now_ns, latched=latched, active=active,
                             message=c.message if active else _cleared(c, latched))

    # ------------------------------------------------------------------ operator actions

    async def acknowledge(self, cid: str, *, origin: str, user: str,
                          comment: str = "") -> Outcome:
        c = self._c.get(cid)
        if c is None:
            out = Outcome(False, f"no condition '{cid}'", "unknown")
        elif not c.enabled:
            out = Outcome(False, f"condition '{cid}' is disabled", "disabled")
        elif c.acked:
            out = Outcome(False, f"condition '{cid}' is already acknowledged",
                          "already_acked")
        else:
            self._change(c, self._clock(), acked=True, confirmed=False, comment=comment,
                         user=user)
            out = Outcome(True, "acknowledged")
        await self._audit(origin, user, "acknowledge", cid, out, comment)
        return out

    async def confirm(self, cid: str, *, origin: str, user: str, comment: str = "") -> Outcome:
        c = self._c.get(cid)
        if c is None:
            out = Outcome(False, f"no condition '{cid}'", "unknown")
        elif not c.enabled:
            out = Outcome(False, f"condition '{cid}' is disabled", "disabled")
        elif not c.acked:
            out = Outcome(False, f"condition '{cid}' is not acknowledged yet: acknowledge "
                                 "it first", "not_acked")
        elif c.confirmed:
            out = Outcome(False, f"condition '{cid}' is already confirmed",
                          "already_confirmed")
        else:
            self._change(c, self._clock(), confirmed=True, comment=comment, user=user)
            out = Outcome(True, "confirmed")
        await self._audit(origin, user, "confirm", cid, out, comment)
        return out

    async def reset(self, interlock: str, *, origin: str, user: str,
                    comment: str = "") -> Outcome:
        """Clear a latched interlock when its condition is clear now, then send its reset
        command. ``interlock`` is its name (or its condition id)."""
        name = interlock.removeprefix("interlock:")
        cid = f"interlock:{name}"
        c = self._c.get(cid)
        now = self._clock()
        if c is None or self._reset_latch is None:
            out = Outcome(False, f"no interlock named '{name}'", "unknown")
        else:
            was_latched = self._latched(name, now)
            if not self._reset_latch(name, now):
                why = self._describe(name) if self._describe is not None else ""
                out = Outcome(False, f"interlock '{name}' not reset: its condition is still "
                                     f"active{f' ({why})' if why else ''}", "active")
            elif not was_latched:
                out = Outcome(True, f"interlock '{name}' was not tripped")
            else:
                self._change(c, now, latched=False, active=False, comment=comment, user=user,
                             message=f"interlock {name} reset by {user}")
                out = await self._restart(name)
        await self._audit(origin, user, "reset", cid, out, comment)
        log.warning("interlock reset requested", interlock=name, user=user, origin=origin,
                    took=out.ok or out.refusal == "command_failed", detail=out.detail)
        return out

    # ------------------------------------------------------------------ internals

    def _latched(self, name: str, now_ns: int) -> bool:
        probe = self._probes.get("interlock")
        return bool(probe(now_ns).get(name, (False, False))[0]) if probe is not None else True

    async def _restart(self, name: str) -> Outcome:
        if self._send_reset is None:
            return Outcome(True, f"interlock '{name}' reset")
        sent, error = await self._send_reset(name)
        if not sent:
            return Outcome(False, f"interlock '{name}' reset, but its reset command to the "
                                  f"device failed: {error}", "command_failed")
        return Outcome(True, f"interlock '{name}' reset" + (f"; {error}" if error else ""))

    async def _audit(self, origin: str, user: str, action: str, target: str, out: Outcome,
                     comment: str) -> None:
        record = OperatorAction(ts_ns=self._clock(), origin=origin, user=user or "anonymous",
                                action=action, target=target, ok=out.ok, comment=comment,
                                detail=out.detail)
        try:  # shielded: a late commit still happens, only the answer stops waiting
            await asyncio.wait_for(asyncio.shield(self._journal([record])), AUDIT_WAIT_S)
        except TimeoutError:
            log.warning("operator action answered before its record was committed; it is "
                        "kept in memory until the journal commits (disk full?)",
                        action=action, target=target, origin=origin, wait_s=AUDIT_WAIT_S)

    def _raise(self, cid: str, ts_ns: int, *, latched: bool = False, value: float,
               message: str, severity: int | None = None, lot: str = "",
               wafer: str = "") -> None:
        c = self._c.get(cid)
        if c is None:
            log.warning("record for a condition nobody declared", condition=cid)
            return
        since = c.active_since_ns if c.active else ts_ns
        self._change(c, ts_ns, active=True, latched=latched or c.latched, acked=False,
                     confirmed=True, value=value, message=message,
                     severity=c.severity if severity is None else severity,
                     lot=lot or c.lot, wafer=wafer or c.wafer, active_since_ns=since,
                     comment="", user="")

    def _change(self, c: ConditionState, ts_ns: int, **changes: object) -> None:
        self._seq += 1
        new = msgspec.structs.replace(c, time_ns=ts_ns, seq=self._seq, **changes)
        new = msgspec.structs.replace(new, retain=new.active or new.latched or not new.acked
                                      or not new.confirmed)
        self._c[c.id] = new
        for listener in list(self._listeners):
            try:
                listener(new)
            except Exception as exc:  # a listener's bug must not stop the others
                log.error("condition listener failed", condition=c.id, error=repr(exc))


def _context(trip: InterlockTrip, key: str) -> str:
    for k, v in trip.context.items():
        if k.rsplit("/", 1)[-1] == key:
            return v
    return ""


def _trip_message(trip: InterlockTrip) -> str:
    where = " ".join(f"{k.rsplit('/', 1)[-1]} {v}" for k, v in trip.context.items() if v)
    return (f"interlock {trip.interlock} tripped: {trip.tag} {trip.condition} "
            f"(value {trip.value:g}, limit {trip.limit:g}), action {trip.action}"
            + ("" if trip.action_ok else " FAILED") + (f"; {where}" if where else ""))


def _cleared(c: ConditionState, latched: bool) -> str:
    if c.kind == "interlock" and latched:
        return f"interlock {c.name}: condition clear, waiting for a reset"
    return f"{c.kind} {c.name}: back to normal"
