"""S7 source vs the bare python-snap7 client: reads/s and CPU per read, 1,000 tags.

The simulated PLC (``hw_sim.s7_plc``) runs in its own process with DB2 holding 1,000
tags of mixed types (REAL, INT, DINT, BOOL, LREAL, in turn: 3,800 bytes, filled with
values). One "read" is one poll of all 1,000 tags:

* bare: ``client.db_read(2, 0, 3800)`` (snap7 splits it into PDU-sized requests) and
  each tag decoded with ``struct.unpack_from`` into a list, in a loop;
* source: the S7 source with the same 1,000 tags (poll interval 1 us: always late, it
  never sleeps), its planned reads in a worker thread, decode, scale and the batch.

Runs alternate (bare, source, x3) so the machine's drift hits both alike; CPU is this
process's (both sides), per read.

    .venv/bin/python bench/s7.py             # about 40 s
    .venv/bin/python bench/s7.py --seconds 6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snap7.client import Client  # noqa: E402

from edge.components import BuildContext  # noqa: E402
from edge.config import convert  # noqa: E402
from edge.model import Record, SampleBatch, TagRegistry  # noqa: E402
from edge.runtime.metrics import Metrics  # noqa: E402
from edge.sources.s7.config import S7SourceConfig  # noqa: E402
from edge.sources.s7.source import S7Source  # noqa: E402

TAGS = 1000
KINDS = [("REAL", 4, ">f"), ("INT", 2, ">h"), ("DINT", 4, ">i"), ("BOOL", 1, ""),
         ("LREAL", 8, ">d")]


def layout() -> tuple[list[dict[str, Any]], list[tuple[int, str, int]], int]:
    """The source's tag tables, the bare loop's (offset, format, bit), the DB size."""
    tags, bare, off = [], [], 0
    for i in range(TAGS):
        name, size, fmt = KINDS[i % len(KINDS)]
        if name == "BOOL":
            tags.append({"name": f"t{i:04d}", "address": f"DB2.DBX{off}.{i % 8}", "type": name})
            bare.append((off, "", i % 8))
        else:
            letter = {2: "W", 4: "D", 8: "B"}[size]
            tags.append({"name": f"t{i:04d}", "address": f"DB2.DB{letter}{off}", "type": name})
            bare.append((off, fmt, -1))
        off += size
    return tags, bare, off


def start_plc(db_size: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hw_sim.s7_plc", "--interval", "3600", "--db", f"2:{db_size}"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY port="):
        proc.kill()
        raise RuntimeError(f"simulated PLC did not start: {line!r}")
    return proc, int(line.split("=")[1])


def fill(port: int, db_size: int) -> None:
    c = Client()
    c.connect("127.0.0.1", 0, 1, tcp_port=port)
    c.db_write(2, 0, bytearray(bytes(range(256)) * (db_size // 256) + bytes(db_size % 256)))
    c.disconnect()


def bare_rate(port: int, bare: list[tuple[int, str, int]], db_size: int,
              seconds: float) -> tuple[float, float]:
    """Reads/s of a bare snap7 loop (read + decode 1,000 tags), CPU us per read."""
    c = Client()
    c.connect("127.0.0.1", 0, 1, tcp_port=port)
    structs = [(off, struct.Struct(fmt).unpack_from if fmt else None, bit)
               for off, fmt, bit in bare]
    n = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        buf = c.db_read(2, 0, db_size)
        values = [float(u(buf, off)[0]) if u else float(buf[off] >> bit & 1)
                  for off, u, bit in structs]
        assert len(values) == TAGS
        n += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    c.disconnect()
    return n / wall, cpu / n * 1e6


class Counter:
    async def __call__(self, batch: SampleBatch | None, records: Sequence[Record], /, *,
                       checkpoint: tuple[str, bytes] | None = None) -> None:
        assert batch is not None and len(batch) == TAGS and not batch.quality.any()


async def source_rate(cfg: S7SourceConfig, seconds: float) -> tuple[float, float]:
    """Polls/s of the S7 source, CPU us per poll."""
    with tempfile.TemporaryDirectory() as tmp:
        tags = TagRegistry()
        cfg.declare_tags(tags)
        src = S7Source(cfg, BuildContext("bench", tags, Metrics(), Path(tmp), lambda n: ""))
        task = asyncio.create_task(src.run(Counter()))
        while src.polls == 0:
            if task.done():
                task.result()
            await asyncio.sleep(0.001)
        p0, t0, cpu0 = src.polls, time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        n = src.polls - p0
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return n / wall, cpu / n * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=36.0, help="total measuring time")
    args = ap.parse_args()
    tags, bare, db_size = layout()
    proc, port = start_plc(db_size)
    try:
        fill(port, db_size)
        cfg = convert({"name": "plc", "host": "127.0.0.1", "port": port,
                       "poll_interval_s": 1e-6, "tags": tags}, S7SourceConfig, "bench")
        each = args.seconds / 6
        bare_runs, ours = [], []
        for _ in range(3):
            bare_runs.append(await asyncio.to_thread(bare_rate, port, bare, db_size, each))
            ours.append(await source_rate(cfg, each))
        raw = statistics.median(r for r, _ in bare_runs)
        src = statistics.median(r for r, _ in ours)
        print(json.dumps({
            "tags": TAGS, "db_bytes": db_size,
            "requests_per_read": len(cfg.plan(cfg.pdu_size)),
            "bare_reads_per_s": round(raw, 1), "source_reads_per_s": round(src, 1),
            "ratio": round(src / raw, 3),
            "bare_cpu_us_per_read": round(statistics.median(c for _, c in bare_runs)),
            "source_cpu_us_per_read": round(statistics.median(c for _, c in ours)),
            "runs": {"bare": [round(r, 1) for r, _ in bare_runs],
                     "source": [round(r, 1) for r, _ in ours]},
        }, indent=1))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
