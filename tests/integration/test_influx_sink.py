"""The InfluxDB sink through the journal and the delivery loop, against a real InfluxDB
1.x (v1 write API, read back with InfluxQL) and VictoriaMetrics (v2 write API, read back
with /api/v1/export): what was written reads back equal to what the gateway produced."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest

from edge.journal import Journal, JournalWriter
from edge.model import (
    HealthAlert,
    InterlockTrip,
    Measurement,
    Quality,
    Quarantine,
    Record,
    SampleBatch,
    SpcViolation,
    TagRegistry,
    record_type,
)
from edge.runtime.metrics import Metrics
from edge.sinks.delivery import Backoff, SinkState, deliver
from edge.sinks.influx import InfluxSink, InfluxSinkConfig
from edge.sinks.lineproto import RECORD_TAGS

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import Peer, start_influxdb1, start_victoria_metrics

GATEWAY = "gw-it"
# Recent timestamps: VictoriaMetrics refuses points outside its retention (1 month).
BASE_NS = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000


@pytest.fixture(scope="module")
def influxdb1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    peer = start_influxdb1(tmp_path_factory.mktemp("influx"))
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    peer = start_victoria_metrics(tmp_path_factory.mktemp("vm"))
    try:
        yield peer
    finally:
        peer.stop()


def _registry() -> TagRegistry:
    reg = TagRegistry()
    for name in ("chamber_temp", "pressure", "rf_power"):
        reg.add("etch1", name)
    for m in range(3):
        reg.add("stf", f"m{m}_current")
    reg.add("gateway", "journal_depth_points")  # the gateway's self-metrics are samples too
    return reg


def _batches(reg: TagRegistry, n_batches: int, per_tag: int, seed: int) -> list[SampleBatch]:
    """Unique (tag, ms) per point; a few Bad (NaN) and Uncertain samples."""
    rng = np.random.default_rng(seed)
    out = []
    k = len(reg)
    for b in range(n_batches):
        i = np.arange(per_tag * k)
        tag = (i % k).astype(np.int32)
        step = b * per_tag + i // k
        ts = BASE_NS + step * 1_000_000 + tag * 17  # ns offsets vanish at ms precision
        raw = rng.normal(100, 20, i.size)  # full-precision and short decimals, mixed
        value = np.where(rng.random(i.size) < 0.5, np.round(raw, 2), raw)
        quality = np.zeros(i.size, np.uint8)
        bad = rng.random(i.size) < 0.02
        unc = ~bad & (rng.random(i.size) < 0.02)
        quality[bad] = Quality.BAD_TIMEOUT
        quality[unc] = Quality.UNCERTAIN_STALE
        value[bad] = math.nan
        out.append(SampleBatch(tag, ts, value, quality))
    return out


def _records(n: int) -> list[Record]:
    out: list[Record] = []
    for i in range(n):
        ts = BASE_NS + 10_000_000 * i + 123
        out += [
            Measurement(ts_ns=ts, device="cmm1", part_id=f"P-{i}", lot="L 7", feature="bore d",
                        nominal_mm=20.0, tol_mm=0.01, raw_mm=20.0 + i * 1e-4,
                        part_temp_c=math.nan if i % 2 else 21.25, air_temp_c=21.5,
                        scale_temp_c=21.0, l20_mm=19.9999 + i * 1e-4, u_mm=0.0012,
                        verdict="conforming", part_temp_estimated=bool(i % 2),
                        source="drop,1.csv"),
            InterlockTrip(ts_ns=ts + 1, interlock="over temp", tag="etch1/chamber_temp",
                          condition="> 188", value=188.5 + i, limit=188.0, action="stop",
                          action_ok=i % 3 != 0, reaction_ns=750_000 + i,
                          context={"lot": "L7", "why": 'a "quote"'}),
            Quarantine(ts_ns=ts + 2, source="cmm1", reason="bad row", where=f"x.csv:{i}",
                       payload='1,"2",\\x\nnext'),
            HealthAlert(ts_ns=ts + 3, motor=f"stf/m{i}", health=0.41, ttf_s=7200.5,
                        reason="health below 0.5"),
            SpcViolation(ts_ns=ts + 4, tag="etch1/pressure", rule="rule_1", value=3.5,
                         center=1.0, sigma=0.5, detail="beyond 3 sigma"),
        ]
    return out


async def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def delivered(tmp: Path, sink: InfluxSink, items: Sequence[SampleBatch | list[Record]]
                    ) -> AsyncIterator[tuple[Journal, list[int]]]:
    """Append ``items`` to a fresh journal and run the delivery loop until it drained;
    yields the journal and the items' seqs."""
    metrics = Metrics()
    journal = Journal(tmp / "journal.db", sinks=[sink.name], metrics=metrics)
    writer = JournalWriter(journal, commit_interval_s=0.001, metrics=metrics)
    writer_task = asyncio.create_task(writer.run())
    seqs = list(await asyncio.gather(*(writer.submit(item) for item in items)))
    task = asyncio.create_task(deliver(writer, sink, metrics=metrics, max_entries=4,
                                       backoff=Backoff(0.05, 0.5), idle_poll_s=0.01))
    try:
        await wait_for(lambda: journal.cursor(sink.name) >= journal.head, 30.0,
                       "journal drained to InfluxDB")
        yield journal, seqs
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sink.close()
        await writer.close()
        writer_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer_task


def expected_points(reg: TagRegistry, batches: Sequence[SampleBatch], div: int = 1
                    ) -> dict[tuple[str, str, int], float | int]:
    """(measurement, field, ts) -> value, independent of the encoder."""
    out: dict[tuple[str, str, int], float | int] = {}
    for b in batches:
        for tid, ts, v, q in zip(b.tag_id.tolist(), b.ts_ns.tolist(), b.value.tolist(),
                                 b.quality.tolist(), strict=True):
            spec = reg[tid]
            if math.isfinite(v):
                out[(spec.device, spec.name, ts // div)] = v
            if q or not math.isfinite(v):
                out[(spec.device, spec.name + "_quality", ts // div)] = q
    return out


async def influxql(peer: Peer, db: str, q: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{peer.url}/query", params={"db": db, "q": q, "epoch": "ns"})
    r.raise_for_status()
    rows: list[dict[str, object]] = []
    for result in r.json()["results"]:
        assert "error" not in result, result
        for series in result.get("series", []):
            for values in series["values"]:
                rows.append({"_measurement": series["name"],
                             **dict(zip(series["columns"], values, strict=True))})
    return rows


async def create_db(peer: Peer, db: str) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{peer.url}/query", data={"q": f'CREATE DATABASE "{db}"'})
    r.raise_for_status()


async def test_influxdb1_samples_and_records(influxdb1: Peer, tmp_path: Path) -> None:
    """v1 at ns precision: every sample value, quality and timestamp, and every record
    field, reads back exactly through InfluxQL."""
    await create_db(influxdb1, "edge")
    reg = _registry()
    batches = _batches(reg, 5, 300, seed=1)
    records = _records(20)
    cfg = InfluxSinkConfig(name="influx", url=influxdb1.url, database="edge",
                           tags={"site": "fab 1", "line": "A,1"})
    sink = InfluxSink(cfg, gateway_id=GATEWAY, tags=reg)
    items: list[SampleBatch | list[Record]] = [*batches[:3], records[:50], *batches[3:],
                                               records[50:]]
    async with delivered(tmp_path, sink, items) as (journal, seqs):
        assert journal.dead_letters() == []

    got: dict[tuple[str, str, int], float | int] = {}
    for device in reg.devices():
        for row in await influxql(influxdb1, "edge", f'SELECT * FROM "{device}"'):
            assert (row["gateway"], row["site"], row["line"]) == (GATEWAY, "fab 1", "A,1")
            for key, value in row.items():
                if key not in ("_measurement", "time", "gateway", "site", "line") and \
                        value is not None:
                    assert isinstance(value, int | float)
                    got[(str(row["_measurement"]), key, int(str(row["time"])))] = value
    assert got == expected_points(reg, batches)

    by_id: dict[str, dict[str, object]] = {}
    for kind in RECORD_TAGS:
        for row in await influxql(influxdb1, "edge", f'SELECT * FROM "{kind}"'):
            by_id[str(row["id"])] = row
    ids = [f"{GATEWAY}-{seqs[3]}-{i}" for i in range(50)] + [
        f"{GATEWAY}-{seqs[6]}-{i}" for i in range(50)]
    assert sorted(by_id) == sorted(ids)
    for rid, rec in zip(ids, records, strict=True):
        row = by_id[rid]
        assert row["_measurement"] == record_type(rec)
        assert row["time"] == rec.ts_ns
        for name, value in msgspec.structs.asdict(rec).items():
            if name == "ts_ns":
                continue
            if isinstance(value, float) and not math.isfinite(value):
                expected: object = None
            elif isinstance(value, dict | list):
                expected = json.dumps(msgspec.to_builtins(value), separators=(",", ":"))
            elif isinstance(value, str):
                expected = value.replace("\n", "\\n")
            else:
                expected = value
            assert row[name] == expected, (rid, name)


async def test_influxdb1_partial_write_dead_letters_only_bad_entry(
        influxdb1: Peer, tmp_path: Path) -> None:
    """A real 400 partial write (field type conflict) dead-letters only the entry that
    conflicts, with InfluxDB's answer; the other entries are stored."""
    await create_db(influxdb1, "conflict")
    reg = _registry()
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{influxdb1.url}/write", params={"db": "conflict"},
                              content=f"etch1,gateway={GATEWAY} pressure=1i {BASE_NS}")
        assert r.status_code == 204
    good1 = SampleBatch([0, 0], [BASE_NS + 1, BASE_NS + 2], [1.0, 2.0])
    bad = SampleBatch([0, 1], [BASE_NS + 3, BASE_NS + 4], [3.0, 4.0])  # pressure is float
    good2 = SampleBatch([3], [BASE_NS + 5], [5.0])
    cfg = InfluxSinkConfig(name="influx", url=influxdb1.url, database="conflict")
    sink = InfluxSink(cfg, gateway_id=GATEWAY, tags=reg)
    async with delivered(tmp_path, sink, [good1, bad, good2]) as (journal, seqs):
        (dl,) = journal.dead_letters("influx")
    assert dl.seq == seqs[1] and "400" in dl.reason
    assert "partial write" in dl.body and "field type conflict" in dl.body
    rows = await influxql(influxdb1, "conflict", 'SELECT chamber_temp FROM "etch1"')
    assert [r["chamber_temp"] for r in rows] == [1.0, 2.0, 3.0]  # influx kept the good line
    rows = await influxql(influxdb1, "conflict", 'SELECT m0_current FROM "stf"')
    assert [r["m0_current"] for r in rows] == [5.0]


async def test_victoria_metrics_v2(victoria: Peer, tmp_path: Path) -> None:
    """v2 write API at ms precision: every sample reads back from VictoriaMetrics' export
    at its millisecond timestamp, with its value to VictoriaMetrics' storage precision
    (it keeps about 12 significant decimal digits: short decimals are exact)."""
    reg = _registry()
    batches = _batches(reg, 4, 250, seed=2)
    cfg = InfluxSinkConfig(name="vm", url=victoria.url, api="v2", org="plant",
                           bucket="edge", precision="ms", token_secret="VM_TOKEN",
                           tags={"site": "fab1"})
    sink = InfluxSink(cfg, gateway_id=GATEWAY, tags=reg, secret="unused-by-vm")
    async with delivered(tmp_path, sink, batches) as (journal, _):
        assert journal.dead_letters() == []
    want = {(f"{m}_{f}", ts): v for (m, f, ts), v in
            expected_points(reg, batches, div=1_000_000).items()}

    got: dict[tuple[str, int], float] = {}

    async def export() -> None:
        got.clear()
        async with httpx.AsyncClient() as client:
            r = await client.get(f"{victoria.url}/api/v1/export",
                                 params={"match[]": f'{{gateway="{GATEWAY}"}}'})
        r.raise_for_status()
        for line in r.text.splitlines():
            series = json.loads(line)
            assert series["metric"]["site"] == "fab1"
            name = series["metric"]["__name__"]
            for v, ts in zip(series["values"], series["timestamps"], strict=True):
                got[(name, ts)] = v

    async with httpx.AsyncClient() as client:  # make the new points searchable now
        (await client.get(f"{victoria.url}/internal/force_flush")).raise_for_status()
    deadline = time.monotonic() + 20
    while True:
        await export()
        if len(got) >= len(want) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert got.keys() == want.keys()
    for key, v in want.items():
        assert got[key] == pytest.approx(v, rel=1e-11, abs=0), key
        if v == round(v, 2):
            assert got[key] == v, key


async def test_influxdb1_create_database(influxdb1: Peer, tmp_path: Path) -> None:
    """v1 with create_database: a database that does not exist yet is created on connect,
    and the data lands in it."""
    reg = _registry()
    batches = _batches(reg, 1, 10, seed=3)
    cfg = InfluxSinkConfig(name="influx", url=influxdb1.url, database="made_by_edge",
                           create_database=True)
    sink = InfluxSink(cfg, gateway_id=GATEWAY, tags=reg)
    async with delivered(tmp_path, sink, batches) as (journal, _):
        assert journal.dead_letters() == []
    rows = [r for d in reg.devices()
            for r in await influxql(influxdb1, "made_by_edge", f'SELECT * FROM "{d}"')]
    assert len(rows) == len({int(str(t)) for b in batches for t in b.ts_ns.tolist()})


async def test_influxdb1_missing_database_says_the_fix(influxdb1: Peer, tmp_path: Path) -> None:
    """v1 without create_database: a missing database keeps the sink down with an error
    that gives the one command (or the key) that fixes it; nothing is dead-lettered."""
    reg = _registry()
    cfg = InfluxSinkConfig(name="influx", url=influxdb1.url, database="nobody_made_it")
    sink = InfluxSink(cfg, gateway_id=GATEWAY, tags=reg)
    metrics = Metrics()
    journal = Journal(tmp_path / "journal.db", sinks=[sink.name], metrics=metrics)
    writer = JournalWriter(journal, commit_interval_s=0.001, metrics=metrics)
    writer_task = asyncio.create_task(writer.run())
    await writer.submit(_batches(reg, 1, 5, seed=4)[0])
    state = SinkState(sink.name)
    task = asyncio.create_task(deliver(writer, sink, state=state, metrics=metrics,
                                       backoff=Backoff(0.05, 0.2), idle_poll_s=0.01))
    try:
        await wait_for(lambda: state.attempt >= 2, 30.0, "two failed writes")
        assert "CREATE DATABASE" in state.last_error and "create_database" in state.last_error
        assert journal.dead_letters() == []
        assert journal.cursor(sink.name) < journal.head
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sink.close()
        await writer.close()
        writer_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer_task
