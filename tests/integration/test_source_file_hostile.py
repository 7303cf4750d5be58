"""File source against a hostile drop folder: FIFO, device symlink, endless file, a last
row without newline, a file deleted mid-read (issue 14 items 3 and 4)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from test_source_file import Collector, build, running, until

from edge.model import Record, SampleBatch
from hw_sim.cmm import CSV_HEADER

ROW = "2026-01-05T10:00:{s:02d}+00:00,{part},L1,length_120,120.0,0.05,120.001,20.5,20.1,20.0"


def cmm_file(path: Path, parts: Sequence[str], *, newline_at_end: bool = True) -> None:
    rows = [ROW.format(s=i % 60, part=p) for i, p in enumerate(parts)]
    body = CSV_HEADER + "\n" + "\n".join(rows) + ("\n" if newline_at_end else "")
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(body)
    os.replace(tmp, path)


@contextlib.contextmanager
def fifo(path: Path) -> Iterator[Path]:
    os.mkfifo(path)
    try:
        yield path
    finally:
        # A reader stuck in open() (the old code) is released by a writer showing up.
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


async def test_fifo_is_skipped_with_a_reason_and_later_files_are_read(tmp_path: Path) -> None:
    """A FIFO named *.csv is reported once as not a regular file and never blocks the
    source: a file dropped after it is measured."""
    drop = tmp_path / "drop"
    drop.mkdir()
    src, metrics = build(drop, tmp_path / "state")
    out = Collector()
    async with running(src, out):
        await asyncio.sleep(0.3)
        with fifo(drop / "pipe.csv"):
            await asyncio.sleep(0.3)  # the FIFO is seen by a watch event and by rescans
            cmm_file(drop / "part1.csv", ["P1"])
            await until(lambda: len(out.readings()) == 1, timeout=8.0)
            await asyncio.sleep(1.2)  # two more rescans: still reported only once
    (q,) = out.quarantined()
    assert q.where == "pipe.csv" and "FIFO" in q.reason
    assert metrics.snapshot()[
        'edge_source_rejected_total{reason="not_a_regular_file",source="cmm1"}'] == 1


async def test_symlink_to_a_device_is_never_followed(tmp_path: Path) -> None:
    """A *.csv symlink to /dev/urandom is reported once and never read (it was read
    without end: 196k quarantines in 12 s); so is a symlink to a regular file."""
    drop = tmp_path / "drop"
    drop.mkdir()
    outside = tmp_path / "outside.csv"
    cmm_file(outside, ["SECRET"])
    (drop / "random.csv").symlink_to("/dev/urandom")
    (drop / "linked.csv").symlink_to(outside)
    src, _ = build(drop, tmp_path / "state")
    out = Collector()
    async with running(src, out):
        await until(lambda: len(out.quarantined()) >= 2, timeout=8.0)
        cmm_file(drop / "part1.csv", ["P1"])
        await until(lambda: len(out.readings()) == 1, timeout=8.0)
        await asyncio.sleep(1.2)
    assert sorted(q.where for q in out.quarantined()) == ["linked.csv", "random.csv"]
    assert all("symlink" in q.reason for q in out.quarantined())
    assert [r.part_id for r in out.readings()] == ["P1"]


async def test_an_endless_growing_file_does_not_starve_the_others(tmp_path: Path) -> None:
    """While another process appends to one file faster than it can be read, a file
    dropped beside it is still measured within seconds."""
    drop = tmp_path / "drop"
    drop.mkdir()
    endless = drop / "endless.csv"
    endless.write_text(CSV_HEADER + "\n")
    stop = threading.Event()

    def grow() -> None:
        block = b"\n" * (1 << 20)  # blank lines: nothing to keep, ~0.3 s to parse
        with endless.open("ab") as fh:
            for _ in range(300):  # 10 MB/s, several times what is read, 30 s at most
                if stop.wait(0.1):
                    return
                fh.write(block)
                fh.flush()

    writer = threading.Thread(target=grow, daemon=True)
    src, _ = build(drop, tmp_path / "state")  # default bounds: 4 MB a turn, 16 MB a pass
    out = Collector()
    try:
        writer.start()
        async with running(src, out):
            await asyncio.sleep(0.5)
            cmm_file(drop / "part1.csv", ["P1"])
            await until(lambda: len(out.readings()) == 1, timeout=12.0)
            assert writer.is_alive(), "the writer stopped before the test proved anything"
    finally:
        stop.set()
        writer.join(10)
    assert not out.quarantined()


async def test_last_row_without_newline_is_taken_once_the_file_settles(tmp_path: Path) -> None:
    """The last row of a file without a trailing newline is measured once the file has
    not changed for settle_s (it was silently lost), and only once."""
    drop = tmp_path / "drop"
    drop.mkdir()
    cmm_file(drop / "a.csv", ["P1", "P2"], newline_at_end=False)
    src, _ = build(drop, tmp_path / "state", settle_s=0.5)
    out = Collector()
    async with running(src, out):
        await until(lambda: len(out.readings()) == 2, timeout=8.0)
        await asyncio.sleep(1.2)  # rescans after it was taken: not read again
    assert [r.part_id for r in out.readings()] == ["P1", "P2"]
    assert not out.quarantined()
    # After a restart from the checkpoint the row is not read a second time.
    src2, _ = build(drop, tmp_path / "state", settle_s=0.5)
    out2 = Collector()
    async with running(src2, out2):
        cmm_file(drop / "b.csv", ["P3"])
        await until(lambda: len(out2.readings()) == 1, timeout=8.0)
    assert [r.part_id for r in out2.readings()] == ["P3"] and not out2.quarantined()


async def test_a_header_only_file_without_newline_is_taken_as_a_header(tmp_path: Path) -> None:
    """A file holding only a header without newline neither crashes nor is reported; rows
    appended later are read against that header."""
    drop = tmp_path / "drop"
    drop.mkdir()
    daily = drop / "daily.csv"
    daily.write_text(CSV_HEADER)
    src, _ = build(drop, tmp_path / "state", settle_s=0.3)
    out = Collector()
    async with running(src, out):
        await until(lambda: bool(src.marks.get(str(daily)))
                    and src.marks[str(daily)].offset == len(CSV_HEADER), timeout=8.0)
        with daily.open("a") as fh:
            fh.write("\n" + ROW.format(s=1, part="P1") + "\n")
        await until(lambda: len(out.readings()) == 1, timeout=8.0)
    assert not out.quarantined()


class DeleteOnFirstBatch(Collector):
    """Deletes ``victim`` when the first batch arrives, i.e. in the middle of its read."""

    def __init__(self, victim: Path) -> None:
        super().__init__()
        self.victim = victim

    async def __call__(self, batch: SampleBatch | None, records: Sequence[Record]) -> None:
        await super().__call__(batch, records)
        with contextlib.suppress(FileNotFoundError):
            self.victim.unlink()


async def test_a_file_deleted_mid_read_keeps_its_rows_and_the_source_goes_on(
        tmp_path: Path) -> None:
    """A file deleted while it is read: no crash, the rows handed over stay, and a file
    dropped afterwards is read."""
    drop = tmp_path / "drop"
    drop.mkdir()
    big = drop / "big.csv"
    cmm_file(big, [f"B{i:06d}" for i in range(50_000)])
    src, _ = build(drop, tmp_path / "state", batch_rows=1000)
    out = DeleteOnFirstBatch(big)
    async with running(src, out) as task:
        await until(lambda: not big.exists() and len(out.readings()) >= 1000, timeout=8.0)
        cmm_file(drop / "after.csv", ["P1"])
        await until(lambda: any(r.part_id == "P1" for r in out.readings()), timeout=8.0)
        assert not task.done()
    first = [r.part_id for r in out.readings() if r.part_id.startswith("B")]
    assert first == [f"B{i:06d}" for i in range(len(first))]  # in order, no gap
    assert not out.quarantined()
