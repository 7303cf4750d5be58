"""The condition board: lifecycle of an interlock, SPC and health condition, refusals with
reasons, and one OperatorAction per operator action. No gateway, no I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from edge.config import loads
from edge.errors import ConfigError
from edge.model import HealthAlert, InterlockTrip, OperatorAction, Record, SpcViolation
from edge.processing.interlock_config import InterlockAction, InterlockRuleConfig, check_actions
from edge.runtime.conditions import ConditionBoard, ConditionState, Declared, declared_conditions


class Plant:
    """The interlock stage's latch and condition, and the device's reset command."""

    def __init__(self) -> None:
        self.latched = False
        self.active = False
        self.sent: list[str] = []
        self.records: list[Record] = []
        self.changes: list[ConditionState] = []

    def probe(self, now_ns: int) -> dict[str, tuple[bool, bool]]:
        return {"overtemp": (self.latched, self.active)}

    def reset_latch(self, name: str, now_ns: int) -> bool:
        if self.active:
            return False
        self.latched = False
        return True

    async def send_reset(self, name: str) -> tuple[bool, str]:
        self.sent.append(name)
        return True, ""

    async def journal(self, records: Sequence[Record]) -> None:
        self.records += records


def board(plant: Plant) -> ConditionBoard:
    b = ConditionBoard([
        Declared("interlock", "overtemp", "limit", "etch1/chamber_temp", 900, high=188.0),
        Declared("spc", "temp_chart", "off_normal", "etch1/chamber_temp", 700),
        Declared("health", "belt", "off_normal", "belt/health", 600),
    ], journal=plant.journal, chart_of_tag={"etch1/chamber_temp": "temp_chart"},
        clock=lambda: 5)
    b.bind(probes={"interlock": plant.probe}, reset_latch=plant.reset_latch,
           send_reset=plant.send_reset, describe=lambda name: "high: 195")
    b.subscribe(plant.changes.append)
    return b


def trip(value: float = 195.0) -> InterlockTrip:
    return InterlockTrip(ts_ns=1, interlock="overtemp", tag="etch1/chamber_temp",
                         condition="high", value=value, limit=188.0, action="etch1:stop",
                         action_ok=True, reaction_ns=1,
                         context={"etch1/lot": "4711", "etch1/wafer": "7"})


def actions(plant: Plant) -> list[tuple[str, str, bool, str]]:
    return [(r.action, r.user, r.ok, r.detail) for r in plant.records
            if isinstance(r, OperatorAction)]


async def test_interlock_lifecycle_trip_ack_clear_reset_confirm() -> None:
    """A trip is active, latched, unacked and retained with lot and wafer; ack moves it to
    acked-unconfirmed; clearing leaves it latched; a reset ends the latch and sends the
    reset command; confirm ends it (Retain false). Each step is one notification."""
    plant = Plant()
    b = board(plant)
    assert not b.get("interlock:overtemp").retain  # type: ignore[union-attr]
    plant.latched = plant.active = True
    b.observe([trip()])
    c = b.get("interlock:overtemp")
    assert c is not None and (c.active, c.latched, c.acked, c.confirmed, c.retain) == \
        (True, True, False, True, True)
    assert (c.lot, c.wafer, c.severity) == ("4711", "7", 900)
    assert "195" in c.message and "lot 4711" in c.message
    out = await b.acknowledge("interlock:overtemp", origin="opcua", user="op", comment="seen")
    assert out.ok
    c = b.get("interlock:overtemp")
    assert c is not None and (c.acked, c.confirmed, c.comment, c.user) == \
        (True, False, "seen", "op")
    refused = await b.reset("overtemp", origin="web", user="op")
    assert not refused.ok and refused.refusal == "active" and "high: 195" in refused.detail
    assert plant.sent == []
    plant.active = False
    b.poll(10)
    c = b.get("interlock:overtemp")
    assert c is not None and (c.active, c.latched, c.retain) == (False, True, True)
    assert (await b.reset("overtemp", origin="cli", user="root")).ok
    assert plant.sent == ["overtemp"]
    c = b.get("interlock:overtemp")
    assert c is not None and not c.latched and c.retain  # still unconfirmed
    assert (await b.confirm("interlock:overtemp", origin="opcua", user="op")).ok
    c = b.get("interlock:overtemp")
    assert c is not None and not c.retain
    seqs = [x.seq for x in plant.changes]
    assert seqs == sorted(seqs) and len(seqs) == 5
    assert actions(plant) == [
        ("acknowledge", "op", True, "acknowledged"),
        ("reset", "op", False, refused.detail),
        ("reset", "root", True, "interlock 'overtemp' reset"),
        ("confirm", "op", True, "confirmed")]


async def test_a_latched_interlock_out_of_limits_again_is_active_again() -> None:
    """Cleared but not reset, the value goes out again: no new trip record comes (the
    latch holds), yet the condition is active and unacknowledged again."""
    plant = Plant()
    b = board(plant)
    plant.latched = plant.active = True
    b.observe([trip()])
    await b.acknowledge("interlock:overtemp", origin="web", user="op")
    plant.active = False
    b.poll(10)
    plant.active = True
    b.poll(20)
    c = b.get("interlock:overtemp")
    assert c is not None and (c.active, c.latched, c.acked) == (True, True, False)
    assert "active again" in c.message


async def test_a_journal_that_cannot_commit_does_not_block_a_reset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a full disk the journal commit never comes: a reset still takes (the interlocks
    must keep working there) after at most AUDIT_WAIT_S, and its record is still handed to
    the journal, which commits it once the disk takes it."""
    monkeypatch.setattr("edge.runtime.conditions.AUDIT_WAIT_S", 0.05)
    plant = Plant()
    stuck = asyncio.Event()
    handed: list[Record] = []

    async def full_disk(records: Sequence[Record]) -> None:
        handed.extend(records)
        await stuck.wait()  # the writer keeps it in memory, retrying the commit

    b = board(plant)
    b.bind(probes={"interlock": plant.probe}, reset_latch=plant.reset_latch,
           send_reset=plant.send_reset, journal=full_disk)
    plant.latched = True
    b.observe([trip()])
    out = await asyncio.wait_for(b.reset("overtemp", origin="cli", user="root"), 5)
    assert out.ok and plant.sent == ["overtemp"] and not plant.latched
    assert [r.action for r in handed if isinstance(r, OperatorAction)] == ["reset"]
    stuck.set()


async def test_refusals_name_their_reason_and_change_nothing() -> None:
    """Unknown, already acknowledged, confirm before acknowledge and already confirmed are
    refused with a reason; each refusal is audited and leaves the condition as it was."""
    plant = Plant()
    b = board(plant)
    assert (await b.acknowledge("spc:nope", origin="web", user="u")).refusal == "unknown"
    assert (await b.acknowledge("spc:temp_chart", origin="web", user="u")).refusal == \
        "already_acked"
    b.observe([SpcViolation(ts_ns=3, tag="etch1/chamber_temp", rule="we1", value=9.0,
                            center=1.0, sigma=1.0, detail="temp_chart: alarm", alarm=True)])
    before = b.get("spc:temp_chart")
    assert before is not None and before.active and before.severity == 700
    assert (await b.confirm("spc:temp_chart", origin="web", user="u")).refusal == "not_acked"
    assert b.get("spc:temp_chart") == before
    assert (await b.acknowledge("spc:temp_chart", origin="web", user="u")).ok
    assert (await b.confirm("spc:temp_chart", origin="web", user="u")).ok
    assert (await b.confirm("spc:temp_chart", origin="web", user="u")).refusal == \
        "already_confirmed"
    assert (await b.reset("nope", origin="cli", user="u")).refusal == "unknown"
    assert [ok for _, _, ok, _ in actions(plant)] == [False, False, False, True, True,
                                                      False, False]


async def test_spc_signals_are_not_alarms_and_health_alerts_are() -> None:
    """An SPC signal (not an alarm rule) raises nothing; a health alert raises the motor's
    condition with the severity of its kind, and an empty user is audited as anonymous."""
    plant = Plant()
    b = board(plant)
    b.observe([SpcViolation(ts_ns=3, tag="etch1/chamber_temp", rule="we2", value=3.0,
                            center=1.0, sigma=1.0, detail="temp_chart: signal")])
    assert not b.get("spc:temp_chart").active  # type: ignore[union-attr]
    b.observe([HealthAlert(ts_ns=4, motor="belt", health=0.4, ttf_s=100.0,
                           reason="time to failure 100 s below 3600 s")])
    c = b.get("health:belt")
    assert c is not None and c.active and not c.acked and c.severity == 800
    await b.acknowledge("health:belt", origin="web", user="")
    assert actions(plant)[0][1] == "anonymous"


def test_declared_conditions_follow_the_config() -> None:
    """A limit interlock is a limit condition, a quality/stale-only one off-normal; SPC
    charts with alarm rules and every monitored motor have a condition."""
    cfg = loads('''
[gateway]
id = "gw"
state_dir = "/tmp/x"
[journal]
[[sources]]
type = "modbus"
name = "etch1"
host = "127.0.0.1"
registers = [{ name = "t", address = 0, type = "float32" }]
commands = [{ action = "stop", function = "coil", address = 0, value = 1 }]
[[interlocks]]
name = "hot"
tag = "etch1/t"
high = 10.0
action = { source = "etch1", action = "stop" }
[[interlocks]]
name = "dead"
tag = "etch1/t"
stale_s = 2.0
action = { source = "etch1", action = "stop" }
severity = 500
[[spc]]
name = "chart"
tag = "etch1/t"
[[health]]
name = "line"
motors = [{ name = "m1", current_tag = "etch1/t" }]
''')
    declared, charts = declared_conditions(cfg)
    got = {(d.kind, d.name): (d.shape, d.severity) for d in declared}
    assert got == {("interlock", "hot"): ("limit", 900), ("interlock", "dead"):
                   ("off_normal", 500), ("spc", "chart"): ("off_normal", 700),
                   ("health", "m1"): ("off_normal", 600)}
    assert charts == {"etch1/t": "chart"}


def test_a_reset_action_the_source_lacks_is_a_config_error() -> None:
    """``reset = "restart"`` on a source without that action fails check-config, naming
    the interlock and the key; unset, a source without ``reset`` sends nothing."""
    rule = InterlockRuleConfig(name="hot", tag="etch1/t", high=1.0,
                               action=InterlockAction(source="etch1", reset="restart"))
    with pytest.raises(ConfigError, match=r"interlock .hot.: action\.reset: .*.restart."):
        check_actions([rule], {"etch1": frozenset({"stop"})})
    assert InterlockAction(source="etch1").reset_action(frozenset({"stop"})) == ""
    assert InterlockAction(source="etch1").reset_action(frozenset({"stop", "reset"})) == \
        "reset"
