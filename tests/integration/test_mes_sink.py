"""The MES sink through the journal and the delivery loop, against the hw_sim MES in
every fault mode: after recovery the MES holds every record exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from edge.journal import Journal, JournalWriter
from edge.model import CmmReading, HealthAlert, InterlockTrip, Quarantine, Record, record_type
from edge.runtime.metrics import Metrics
from edge.sinks.delivery import Backoff, SinkState, deliver
from edge.sinks.mes import MesSink, MesSinkConfig
from hw_sim.mes import MesServer

GATEWAY = "gw-it"
TOKEN = "it-token"


@dataclass
class Rig:
    server: MesServer
    journal: Journal
    writer: JournalWriter
    sink: MesSink
    state: SinkState
    metrics: Metrics
    sent: dict[str, str]  # id -> type of every record the MES should hold

    async def append(self, records: list[Record]) -> None:
        seq = await self.writer.append(records)
        for i, rec in enumerate(records):
            if record_type(rec) in self.sink.cfg.record_types:
                self.sent[f"{GATEWAY}-{seq}-{i}"] = record_type(rec)

    async def drained(self, timeout: float = 20.0) -> None:
        await wait_for(lambda: self.journal.cursor("mes") >= self.journal.head, timeout,
                       "journal drained to the MES")

    async def mes_ids(self) -> dict[str, str]:
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{self.server.admin_port}/api/v1/records",
                                 params={"limit": "100000"})
        return {rec["id"]: rec["type"] for rec in r.json()["records"]}


async def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(0.02)


def _records(start: int, n: int) -> list[Record]:
    out: list[Record] = []
    for i in range(start, start + n):
        ts = 1_700_000_000_000_000_000 + i * 1_000_000
        kind = i % 4
        if kind == 0:
            out.append(HealthAlert(ts_ns=ts, motor=f"stf/m{i % 14}", health=0.5 - i * 1e-4,
                                   ttf_s=3600.0, reason="health below 0.5"))
        elif kind == 1:
            out.append(InterlockTrip(ts_ns=ts, interlock="overtemp", tag="etch1/chamber_temp",
                                     condition="> 188", value=188.5 + i, limit=188.0,
                                     action="stop", action_ok=True, reaction_ns=800_000,
                                     context={"lot": f"L{i}"}))
        elif kind == 2:
            out.append(Quarantine(ts_ns=ts, source="cmm1", reason="unparsable row",
                                  where=f"drop.csv:{i}", payload="1,2,x\n"))
        else:
            out.append(CmmReading(ts_ns=ts, device="cmm1", part_id=f"P{i}", lot="L1",
                                  feature="bore", nominal_mm=20.0, tol_mm=0.02,
                                  measured_mm=20.001, part_temp_c=float("nan"),
                                  air_temp_c=21.0, scale_temp_c=20.5))
    return out


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    server = MesServer(tmp_path / "mes.db", token=TOKEN, seed=7)
    await server.start()
    metrics = Metrics()
    journal = Journal(tmp_path / "journal.db", sinks=["mes"], metrics=metrics)
    writer = JournalWriter(journal, commit_interval_s=0.001, metrics=metrics)
    cfg = MesSinkConfig(name="mes", url=f"http://127.0.0.1:{server.port}", timeout_s=1.0,
                        connect_timeout_s=1.0, token_secret="MES_TOKEN")
    sink = MesSink(cfg, gateway_id=GATEWAY, token=TOKEN, metrics=metrics)
    state = SinkState("mes")
    writer_task = asyncio.create_task(writer.run())
    loop_task = asyncio.create_task(deliver(
        writer, sink, state=state, metrics=metrics, max_entries=8,
        backoff=Backoff(initial_s=0.05, max_s=0.4), idle_poll_s=0.01,
    ))
    try:
        yield Rig(server, journal, writer, sink, state, metrics, {})
    finally:
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
        await sink.close()
        await writer.close()
        writer_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer_task
        await server.close()


FAULTS = {
    "refuse": {},
    "blackhole": {},
    "error5xx": {"rate": 1.0},
    "ratelimit": {"rate": 1.0, "retry_after_s": 1.0},
    "slow": {"latency_s": 1.5},  # commits, then answers after our 1 s read timeout
}


@pytest.mark.parametrize("mode", list(FAULTS))
async def test_fault_then_recovery_exactly_once(rig: Rig, mode: str) -> None:
    """Records written before, during and after a fault all reach the MES exactly once,
    nothing is dead-lettered, and the raw CMM readings are never sent."""
    await rig.append(_records(0, 12))
    await rig.drained()
    errors_before = rig.state.attempt

    t_fault = time.monotonic()
    await rig.server.set_fault(mode, **FAULTS[mode])
    for k in range(6):
        await rig.append(_records(100 + 10 * k, 10))
    await wait_for(lambda: rig.state.attempt >= errors_before + 2, 15.0,
                   f"two failed deliveries in mode {mode}")
    assert not rig.state.link_up
    if mode == "ratelimit":  # Retry-After: 1 held the retry back, not the 0.05 s backoff
        assert time.monotonic() - t_fault >= 0.9
    assert rig.journal.cursor("mes") < rig.journal.head

    await rig.server.set_fault("ok")
    await rig.append(_records(1000, 7))
    await rig.drained()

    held = await rig.mes_ids()
    assert held == rig.sent
    counts = rig.server.store.counts()
    assert counts["records"] == len(rig.sent)
    assert "cmm_reading" not in counts["by_type"]
    assert rig.journal.dead_letters("mes") == []
    if mode == "slow":
        # the timed-out requests had been committed: the retries were recognised
        assert counts["duplicate_keys"] + counts["duplicate_records"] > 0


async def test_refused_record_type_is_dead_lettered(tmp_path: Path) -> None:
    """A record the MES refuses (422) goes to the dead letters with the MES's answer,
    while the entries around it are delivered."""
    server = MesServer(tmp_path / "mes.db", seed=1)
    await server.start()
    metrics = Metrics()
    journal = Journal(tmp_path / "journal.db", sinks=["mes"], metrics=metrics)
    writer = JournalWriter(journal, commit_interval_s=0.001, metrics=metrics)
    writer_task = asyncio.create_task(writer.run())
    cfg = MesSinkConfig(name="mes", url=f"http://127.0.0.1:{server.port}", timeout_s=2.0,
                        record_types=["cmm_reading", "health_alert"])
    sink = MesSink(cfg, gateway_id=GATEWAY, metrics=metrics)
    good1 = _records(0, 1)
    bad = _records(3, 1)  # a cmm_reading: this MES does not take them
    good2 = _records(4, 1)
    seqs = [writer.submit(item) for item in (good1, bad, good2)]
    bad_seq = (await asyncio.gather(*seqs))[1]
    task = asyncio.create_task(deliver(writer, sink, metrics=metrics, max_entries=8,
                                       idle_poll_s=0.01))
    try:
        await wait_for(lambda: journal.cursor("mes") >= journal.head, 10.0, "drained")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    (dl,) = journal.dead_letters("mes")
    assert dl.seq == bad_seq
    assert "422" in dl.reason and "type must be one of" in dl.body
    assert server.store.counts()["by_type"] == {"health_alert": 2}
    await sink.close()
    await writer.close()
    writer_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writer_task
    await server.close()
