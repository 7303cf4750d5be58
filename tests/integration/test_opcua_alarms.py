"""Alarms & Conditions seen by node-opcua's alarm client support (as a SCADA alarm list)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from opcua_fixtures import (
    FakeGateway,
    demo_registry,
    running_sink,
    server_mode,  # noqa: F401  (every test in both server modes)
)
from peers import ensure_node_opcua

from edge.model import HealthAlert, InterlockTrip
from edge.protocols.opcua.security import hash_password

pytestmark = pytest.mark.peer("node")
INTERLOCK = "interlock:etch_overtemp"
MOTOR = "health:stf/motor1"
OFF_NORMAL = "ns=0;i=10637"
LEVEL = "ns=0;i=9482"


class AlarmClient:
    """tests/node/opcua_alarms.js: events in, commands out, one JSON line each."""

    def __init__(self, proc: asyncio.subprocess.Process, ns: int) -> None:
        self.proc = proc
        self.ns = ns
        self.events: list[dict[str, Any]] = []

    def cid(self, condition: str) -> str:
        return f"ns={self.ns};s=_conditions/{condition}"

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        raw = b""
        while not raw.startswith(b"{"):  # node-opcua writes its warnings to stdout too
            raw = await asyncio.wait_for(self.proc.stdout.readline(),
                                         max(0.1, deadline - time.monotonic()))
            if not raw:
                assert self.proc.stderr is not None
                err = (await self.proc.stderr.read()).decode(errors="replace")[-2000:]
                raise AssertionError(f"alarm client ended: {err}")
        msg: dict[str, Any] = json.loads(raw)
        assert "fatal" not in msg, msg["fatal"]
        return msg

    async def event(self, condition: str, match: Callable[[dict[str, Any]], bool],
                    timeout: float = 30.0) -> dict[str, Any]:
        """The next event of ``condition`` that ``match``es (earlier ones are kept)."""
        cid = self.cid(condition)
        for ev in self.events:
            if ev["conditionId"] == cid and match(ev):
                self.events.remove(ev)
                return ev
        deadline = time.monotonic() + timeout
        while True:
            msg = await self._line(max(0.1, deadline - time.monotonic()))
            if "event" in msg:
                ev = msg["event"]
                if ev["conditionId"] == cid and match(ev):
                    return ev
                self.events.append(ev)

    async def ask(self, cmd: str, condition: str = "", **kw: Any) -> str:
        assert self.proc.stdin is not None
        line = {"cmd": cmd, "condition": self.cid(condition) if condition else "", **kw}
        self.proc.stdin.write(json.dumps(line).encode() + b"\n")
        await self.proc.stdin.drain()
        while True:
            msg = await self._line(30)
            if "answer" in msg:
                assert msg["answer"] == cmd
                return str(msg["status"])
            self.events.append(msg["event"])


@asynccontextmanager
async def alarm_client(endpoint: str, tmp: Path, ns: int,
                       **login: str) -> AsyncIterator[AlarmClient]:
    folder = ensure_node_opcua()
    spec = {"endpoint": endpoint, "pki": str(tmp / "client-pki"), "ns": ns, **login}
    proc = await asyncio.create_subprocess_exec(
        "node", str(folder / "opcua_alarms.js"), json.dumps(spec), cwd=folder,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        while b"READY" not in (line := await asyncio.wait_for(proc.stderr.readline(), 60)):
            assert line, "the alarm client ended before it was ready"
        yield AlarmClient(proc, ns)
    finally:
        if proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.write(b'{"cmd": "quit"}\n')
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def trip() -> InterlockTrip:
    return InterlockTrip(
        ts_ns=time.time_ns(), interlock="etch_overtemp", tag="etch1/chamber_temp",
        condition="high", value=191.25, limit=188.0, action="etch1:stop", action_ok=True,
        reaction_ns=800_000, context={"etch1/lot": "4711", "etch1/wafer": "7"})


async def test_trip_ack_clear_reset_confirm_seen_by_an_alarm_client(tmp_path: Path) -> None:
    """A client that connects after a trip gets it by ConditionRefresh (active, unacked,
    retained, lot and wafer); a reset while active is refused; acknowledge with a comment
    moves it to acked (user and comment in the event and the audit record); clearing,
    reset and confirm end it (Retain false); a health alert arrives live as an
    OffNormalAlarm through the OfType(AcknowledgeableConditionType) filter."""
    gw = FakeGateway(latched=True, active=True)
    async with running_sink(tmp_path, demo_registry(), gw) as sink:
        gw.board.observe([trip()])
        async with alarm_client(sink.endpoint, tmp_path, sink.idx) as client:
            ev = await client.event(INTERLOCK, lambda e: e["activeState.id"] is True)
            assert (ev["ackedState.id"], ev["confirmedState.id"], ev["retain"]) == \
                (False, True, True)
            assert ev["latchedState.id"] is True and ev["enabledState.id"] is True
            assert (ev["eventType"], ev["severity"], ev["conditionName"]) == \
                (LEVEL, 900, "etch_overtemp")
            assert (ev["Lot"], ev["Wafer"]) == ("4711", "7")
            assert "191.25" in ev["message"] and ev["sourceName"] == "etch1/chamber_temp"
            assert ev["sourceNode"] == f"ns={sink.idx};s=etch1/chamber_temp"

            gw.board.observe([HealthAlert(ts_ns=time.time_ns(), motor="stf/motor1",
                                          health=0.42, ttf_s=900.0,
                                          reason="health 0.42 below 0.5")])
            motor = await client.event(MOTOR, lambda e: e["activeState.id"] is True)
            assert motor["eventType"] == OFF_NORMAL and motor["ackedState.id"] is False

            assert await client.ask("reset", INTERLOCK) == "BadInvalidState"
            assert await client.ask("ack", INTERLOCK, comment="seen by test") == "Good"
            ev = await client.event(INTERLOCK, lambda e: e["ackedState.id"] is True)
            assert (ev["confirmedState.id"], ev["comment"], ev["clientUserId"]) == \
                (False, "seen by test", "anonymous")
            assert await client.ask("ack", INTERLOCK) == "BadConditionBranchAlreadyAcked"
            assert await client.ask("ack", INTERLOCK, event_id="00" * 16) == \
                "BadEventIdUnknown"

            gw.active = False
            gw.board.poll(time.time_ns())
            ev = await client.event(INTERLOCK, lambda e: e["activeState.id"] is False)
            assert ev["latchedState.id"] is True and ev["retain"] is True
            assert await client.ask("reset", INTERLOCK) == "Good"
            ev = await client.event(INTERLOCK, lambda e: e["latchedState.id"] is False)
            assert ev["retain"] is True  # acknowledged, not yet confirmed
            assert await client.ask("confirm", INTERLOCK, comment="done") == "Good"
            ev = await client.event(INTERLOCK, lambda e: e["confirmedState.id"] is True)
            assert ev["retain"] is False

        # A client that comes now sees the motor (still retained), not the interlock.
        async with alarm_client(sink.endpoint, tmp_path, sink.idx) as late:
            await late.event(MOTOR, lambda e: e["retain"] is True)
            assert await late.ask("refresh") == "Good"
            await late.event(MOTOR, lambda e: e["retain"] is True)
            assert not any(e["conditionId"] == late.cid(INTERLOCK) for e in late.events)

    audit = [(a.origin, a.user, a.action, a.target, a.ok, a.comment) for a in gw.actions]
    assert audit == [
        ("opcua", "anonymous", "reset", INTERLOCK, False, ""),
        ("opcua", "anonymous", "acknowledge", INTERLOCK, True, "seen by test"),
        ("opcua", "anonymous", "acknowledge", INTERLOCK, False, ""),
        ("opcua", "anonymous", "reset", INTERLOCK, True, ""),
        ("opcua", "anonymous", "confirm", INTERLOCK, True, "done"),
    ]


async def client_certificate(tmp: Path) -> Path:
    """The alarm client's certificate (made once in its PKI folder)."""
    folder = ensure_node_opcua()
    spec = {"pki": str(tmp / "client-pki"), "cert_only": True, "endpoint": "", "ns": 0}
    proc = await asyncio.create_subprocess_exec(
        "node", str(folder / "opcua_alarms.js"), json.dumps(spec), cwd=folder,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    assert lines, err.decode(errors="replace")[-2000:]
    return Path(json.loads(lines[-1])["certificate"])


async def test_acknowledge_names_the_logged_in_user(tmp_path: Path) -> None:
    """Under the production profile (SignAndEncrypt, user name login), the acknowledge is
    recorded with the session's user, in the event's ClientUserId and the audit record."""
    password = "correct horse battery staple"
    users = {"USERS": f"shift_lead:{hash_password(password)}\n"}
    gw = FakeGateway(latched=True, active=True)
    async with running_sink(tmp_path, demo_registry(), gw, secrets=users,
                            profile="production", users_secret="USERS",
                            login_fail_interval_s=0.0) as sink:
        cert = await client_certificate(tmp_path)
        shutil.copy(str(cert), tmp_path / "state" / "opcua" / "trusted" / "alarm-client.pem")
        gw.board.observe([trip()])
        async with alarm_client(sink.endpoint, tmp_path, sink.idx, security="sign_encrypt",
                                user="shift_lead", password=password) as client:
            await client.event(INTERLOCK, lambda e: e["ackedState.id"] is False)
            assert await client.ask("ack", INTERLOCK, comment="on it") == "Good"
            ev = await client.event(INTERLOCK, lambda e: e["ackedState.id"] is True)
            assert (ev["clientUserId"], ev["comment"]) == ("shift_lead", "on it")
    assert [(a.origin, a.user, a.action, a.ok) for a in gw.actions] == [
        ("opcua", "shift_lead", "acknowledge", True)]
