"""File source against hw_sim CMM drops: per-part atomic renames and a growing daily file."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from edge.components import BuildContext
from edge.config import convert
from edge.model import CmmReading, Quarantine, Record, SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sources.file.config import FileSourceConfig
from edge.sources.file.source import FileSource
from hw_sim.baddata import BadData
from hw_sim.cmm import CmmModel, CmmWriter
from hw_sim.truth import TruthLog


class Collector:
    """Keeps what is emitted; with ``kill_after`` it hangs on the next call without
    keeping it (a crash during the hand-off), until the test cancels the source."""

    def __init__(self, kill_after: int | None = None) -> None:
        self.batches: list[SampleBatch] = []
        self.records: list[Record] = []
        self.calls = 0
        self.kill_after = kill_after
        self.hung = asyncio.Event()

    async def __call__(self, batch: SampleBatch | None, records: Sequence[Record]) -> None:
        self.calls += 1
        if self.kill_after is not None and self.calls > self.kill_after:
            self.hung.set()
            await asyncio.Event().wait()
        if batch is not None:
            self.batches.append(batch)
        self.records.extend(records)

    def readings(self) -> list[CmmReading]:
        return [r for r in self.records if isinstance(r, CmmReading)]

    def quarantined(self) -> list[Quarantine]:
        return [r for r in self.records if isinstance(r, Quarantine)]


def build(folder: Path, state: Path, **over: object) -> tuple[FileSource, Metrics]:
    raw: dict[str, object] = {"name": "cmm1", "paths": [str(folder)], "rescan_s": 0.5,
                              "debounce_ms": 50, **over}
    cfg = convert(raw, FileSourceConfig, "source 'cmm1'")
    tags, metrics = TagRegistry(), Metrics()
    cfg.declare_tags(tags)
    return cfg.build(BuildContext("gw", tags, metrics, state, lambda n: "")), metrics


async def until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(src: FileSource, out: Collector) -> AsyncIterator[asyncio.Task[None]]:
    t = asyncio.create_task(src.run(out))
    try:
        yield t
    finally:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t


def write_parts(writer: CmmWriter, model: CmmModel, n: int) -> list[tuple[str, str]]:
    keys = []
    for _ in range(n):
        part = model.measure_part(60.0 * (model.parts_made + 1))
        writer.write(part)
        keys += [(part.part_id, r.feature) for r in part.rows]
    return keys


@pytest.mark.parametrize("poll", [False, True])
async def test_per_part_drops_by_atomic_rename(tmp_path: Path, poll: bool) -> None:
    """Per-part files (temp + rename) are each read once, with watch events or by polling."""
    drop = tmp_path / "drop"
    writer, model = CmmWriter(drop, "part"), CmmModel(seed=1)
    keys = write_parts(writer, model, 3)
    src, metrics = build(drop, tmp_path / "state", poll=poll, poll_interval_ms=50)
    out = Collector()
    async with running(src, out):
        await until(lambda: len(out.readings()) == len(keys))
        keys += write_parts(writer, model, 4)
        await until(lambda: len(out.readings()) == len(keys))
    assert sorted((r.part_id, r.feature) for r in out.readings()) == sorted(keys)
    assert not out.quarantined()
    assert sum(len(b) for b in out.batches) == 3 * len(keys)  # air, scale, part temp
    assert metrics.snapshot()['edge_source_received_total{source="cmm1"}'] == 4 * len(keys)


async def test_growing_daily_file_consumes_complete_lines_only(tmp_path: Path) -> None:
    """A half-written last line is not read until its newline arrives."""
    drop = tmp_path / "drop"
    writer, model = CmmWriter(drop, "daily"), CmmModel(seed=2)
    keys = write_parts(writer, model, 2)
    daily = next(drop.glob("cmm-*.csv"))
    src, _ = build(drop, tmp_path / "state")
    out = Collector()
    async with running(src, out):
        await until(lambda: len(out.readings()) == len(keys))
        line = daily.read_text().splitlines()[-1].replace("P000002", "P000099")
        with daily.open("a") as fh:
            fh.write(line[:30])
            fh.flush()
        await asyncio.sleep(0.6)  # several watch events and a rescan see the half line
        assert len(out.readings()) == len(keys) and not out.quarantined()
        with daily.open("a") as fh:
            fh.write(line[30:] + "\n")
        await until(lambda: len(out.readings()) == len(keys) + 1)
        keys += write_parts(writer, model, 1)
        await until(lambda: len(out.readings()) == len(keys) + 1)
    assert not out.quarantined()
    assert out.readings()[len(keys) - 3].part_id == "P000099"


async def test_killed_and_restarted_mid_file_no_duplicates_no_gaps(tmp_path: Path) -> None:
    """Cancelled after some batches and restarted: every row arrives exactly once."""
    drop, state = tmp_path / "drop", tmp_path / "state"
    writer, model = CmmWriter(drop, "daily"), CmmModel(seed=3)
    keys = write_parts(writer, model, 100)
    seen: list[tuple[str, str]] = []
    for round_no in range(3):
        src, _ = build(drop, state, batch_rows=20)
        out = Collector(kill_after=3)
        async with running(src, out):
            await until(out.hung.is_set)
            if round_no == 1:
                keys += write_parts(writer, model, 20)
        seen += [(r.part_id, r.feature) for r in out.readings()]
    src, _ = build(drop, state, batch_rows=20)
    out = Collector()
    async with running(src, out):
        await until(lambda: len(seen) + len(out.readings()) >= len(keys))
        await asyncio.sleep(0.3)
    seen += [(r.part_id, r.feature) for r in out.readings()]
    assert len(seen) == len(set(seen)), "a row was emitted twice"
    assert sorted(seen) == sorted(keys)
    ck = json.loads((state / "checkpoints" / "cmm1.json").read_text())
    (mark,) = ck["files"].values()
    assert mark["offset"] == next(drop.glob("*.csv")).stat().st_size


async def test_bad_rows_quarantined_with_file_line_and_reason(tmp_path: Path) -> None:
    """Every spoiled row of the CMM is quarantined with file:line and reason; good rows pass."""
    drop = tmp_path / "drop"
    truth = TruthLog()
    writer = CmmWriter(drop, "daily", bad=BadData(rate=0.15), truth=truth, seed=4)
    keys = write_parts(writer, CmmModel(seed=4), 60)
    defects = [r["defect"] for r in truth.of_kind("bad_data")]
    src, metrics = build(drop, tmp_path / "state")
    out = Collector()
    async with running(src, out):
        await until(lambda: len(out.readings()) + len(out.quarantined()) >= len(keys)
                    + defects.count("duplicate"))
        await asyncio.sleep(0.2)
    q = out.quarantined()
    assert len(q) == len(defects)
    assert len(out.readings()) == len(keys) - (len(defects) - defects.count("duplicate"))
    reasons = {x.reason.split(" '")[0].split(":")[0] for x in q}
    assert reasons <= {"missing field", "not a number in", "timestamp without zone",
                       "duplicate row"}
    assert all(x.where.startswith("cmm-") and int(x.where.rsplit(":", 1)[1]) > 1 for x in q)
    rejected = sum(v for k, v in metrics.snapshot().items()
                   if k.startswith("edge_source_rejected_total"))
    assert rejected == len(q)


async def test_idle_files_release_their_state_and_rebuild_it_when_they_grow(
        tmp_path: Path) -> None:
    """A file that stopped changing gives back its rows-seen state (a folder of drops
    must not keep every row ever read in memory); when it grows again the state is
    rebuilt from the file, so a repeated row is still caught and a new one still read."""
    drop = tmp_path / "drop"
    writer, model = CmmWriter(drop, "daily"), CmmModel(seed=3)
    keys = write_parts(writer, model, 2)
    daily = next(drop.glob("cmm-*.csv"))
    src, _ = build(drop, tmp_path / "state")
    src.idle_release_s = 0.0  # every rescan releases every file that is not changing
    out = Collector()
    async with running(src, out):
        await until(lambda: len(out.readings()) == len(keys))
        await until(lambda: not src.cursors)  # released at the next rescan
        rows = daily.read_text().splitlines()
        fresh = rows[-1].replace("P000002", "P000077")
        with daily.open("a") as fh:
            fh.write(rows[-1] + "\n" + fresh + "\n")
        await until(lambda: len(out.readings()) == len(keys) + 1 and bool(out.quarantined()))
    (dup,) = out.quarantined()
    assert "duplicate" in dup.reason
    assert out.readings()[-1].part_id == "P000077"
