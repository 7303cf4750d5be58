"""Modbus RTU: reads/s and CPU per read of the bus source against bare pymodbus.

    PYTHONPATH=. .venv/bin/python bench/modbus_rtu.py [--runs 5] [--seconds 3]

The hw_sim etch tool runs as an RTU slave (its own process) on one end of a socat pty
pair; the bench reads the documented map (holding 0..12, one planned read) on the
other end at 115200 baud, 8N1:

* raw: a bare ``AsyncModbusSerialClient`` loop doing the same read;
* source, gap 0: ``ModbusBusSource`` with ``inter_frame_s = 0`` (what the raw loop does:
  the same work on the wire, so the ratio is our overhead);
* raw, gap: the bare loop sleeping 1.75 ms between reads, the silence a real
  115200-baud line needs between frames;
* source, default gap: the source as configured for a real 115200-baud line (1.75 ms of
  silence before each request), to compare with "raw, gap".

A pty ignores the baud rate and has no line timing: a real 115200-baud line carries this
read (8 + 31 bytes of 11 bits, 3.7 ms, plus gaps and the device's turnaround) at about
150-180 reads/s, far below what either side reaches here; the CPU per read is the figure
that carries over. On a pty most of it is the kernel's pty write (system time, ~0.5-1 ms
a write under load), the same for both sides: the user CPU per read is printed beside it.
Interleaved runs, median of ``--runs``; emit is a no-op.

CPU time on a loaded machine swings by tens of percent; the instructions the process
executes do not. ``--count raw:N`` / ``--count source:N`` does N reads and nothing else,
to run under ``valgrind --tool=callgrind`` (only this process is counted, not socat or
the slave); the instructions of N reads minus those of 50 reads, over N - 50, are the
user instructions per read of each side, independent of the load:

    for w in raw source; do for n in 50 1050; do valgrind --tool=callgrind \
      --callgrind-out-file=/dev/null python bench/modbus_rtu.py --count $w:$n 2>&1 \
      | grep Collected; done; done
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

from pymodbus.client import AsyncModbusSerialClient

from edge.components import BuildContext
from edge.config import convert
from edge.model import Record, SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sources.modbus.bus import ModbusBusSource
from edge.sources.modbus.config import ModbusSourceConfig

ROOT = Path(__file__).resolve().parents[1]
BAUD = 115200


async def _noop(batch: SampleBatch | None, records: Sequence[Record], /, *,
                checkpoint: tuple[str, bytes] | None = None) -> None:
    return None


async def serve(port: str) -> None:
    """The RTU slave (run in its own process with ``--serve PORT``)."""
    from hw_sim.clock import SimClock
    from hw_sim.etch import EtchModel
    from hw_sim.etch_server import EtchServer

    server = EtchServer(EtchModel(seed=7), SimClock(speed=1.0), serial_port=port,
                        baudrate=BAUD, parity="N")
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def raw_rate(port: str, seconds: float, gap: float = 0.0) -> tuple[float, float, float]:
    """Reads/s, CPU us per read (user + system) and user CPU us per read; ``gap``: sleep
    that long between reads, as the line timing needs."""
    client = AsyncModbusSerialClient(port, baudrate=BAUD, parity="N", timeout=1.0, retries=0)
    await client.connect()
    n = 0
    t0, cpu0, user0 = time.perf_counter(), time.process_time(), os.times().user
    while time.perf_counter() - t0 < seconds:
        rr = await client.read_holding_registers(0, count=13, device_id=1)
        assert not rr.isError()
        n += 1
        if gap:
            await asyncio.sleep(gap)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    user = os.times().user - user0
    client.close()
    return n / wall, cpu / n * 1e6, user / n * 1e6


async def source_rate(cfg: ModbusSourceConfig, seconds: float
                      ) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        tags = TagRegistry()
        cfg.declare_tags(tags)
        src = cfg.build(BuildContext("bench", tags, Metrics(), Path(tmp), lambda n: ""))
        assert isinstance(src, ModbusBusSource)
        task = asyncio.create_task(src.run(_noop))
        while src.polls == 0:
            if task.done():
                task.result()
            await asyncio.sleep(0.001)
        p0, t0, cpu0, user0 = src.polls, time.perf_counter(), time.process_time(), \
            os.times().user
        await asyncio.sleep(seconds)
        n = src.polls - p0
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        user = os.times().user - user0
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return n / wall, cpu / n * 1e6, user / n * 1e6


def config(port: str, gap: float | None, timeout_s: float = 1.0) -> ModbusSourceConfig:
    doc = tomllib.loads((ROOT / "config" / "etch_modbus.toml").read_text())
    raw: dict[str, object] = {
        "name": "bench", "transport": "rtu", "serial_port": port, "baudrate": BAUD,
        "parity": "none", "poll_interval_s": 1e-9, "timeout_s": timeout_s,
        "registers": doc["registers"], "devices": [{"device_id": 1, "device": "etch1"}]}
    if gap is not None:
        raw["inter_frame_s"] = gap
    return convert(raw, ModbusSourceConfig, "bench")


async def count(port: str, which: str, n: int) -> None:
    """Exactly ``n`` reads, untimed (for callgrind): the bare loop or the source."""
    if which == "raw":
        client = AsyncModbusSerialClient(port, baudrate=BAUD, parity="N", timeout=5.0,
                                         retries=0)
        await client.connect()
        for _ in range(n):
            assert not (await client.read_holding_registers(0, count=13, device_id=1)).isError()
        client.close()
        return
    with tempfile.TemporaryDirectory() as tmp:
        tags = TagRegistry()
        cfg = config(port, 0.0, timeout_s=5.0)
        cfg.declare_tags(tags)
        src = cfg.build(BuildContext("bench", tags, Metrics(), Path(tmp), lambda n: ""))
        done = asyncio.get_running_loop().create_future()

        async def emit(batch: SampleBatch | None, records: Sequence[Record], /, *,
                       checkpoint: tuple[str, bytes] | None = None) -> None:
            if src.polls + 1 == n:
                done.set_result(None)

        task = asyncio.create_task(src.run(emit))
        await done
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def one_run(port: str, seconds: float) -> dict[str, float]:
    raw, raw_gap, ours0, ours = [], [], [], []
    gap = config(port, None).bus_gap_s()
    for _ in range(3):  # interleaved, so drift of the machine hits all alike
        raw.append(await raw_rate(port, seconds / 3))
        raw_gap.append(await raw_rate(port, seconds / 3, gap))
        ours0.append(await source_rate(config(port, 0.0), seconds / 3))
        ours.append(await source_rate(config(port, None), seconds / 3))
    out: dict[str, float] = {}
    for name, runs in (("raw", raw), ("raw_gap", raw_gap), ("source_gap0", ours0),
                       ("source_default_gap", ours)):
        out[f"{name}_reads_per_s"] = statistics.mean(r[0] for r in runs)
        out[f"{name}_cpu_us_per_read"] = statistics.mean(r[1] for r in runs)
        out[f"{name}_user_cpu_us_per_read"] = statistics.mean(r[2] for r in runs)
    out["ratio_gap0"] = out["source_gap0_reads_per_s"] / out["raw_reads_per_s"]
    out["ratio_gap"] = out["source_default_gap_reads_per_s"] / out["raw_gap_reads_per_s"]
    return out


def start_line(tmp: Path) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str]:
    """socat's pty pair and the RTU slave on one end; the master's end."""
    socat = shutil.which("socat")
    if socat is None:
        sys.exit("socat is not installed: apt-get install -y socat")
    a, b = tmp / "a0", tmp / "a1"
    pair = subprocess.Popen([socat, "-d", f"pty,raw,echo=0,link={a}",
                             f"pty,raw,echo=0,link={b}"], stderr=subprocess.DEVNULL)
    for _ in range(500):
        if a.exists() and b.exists():
            break
        time.sleep(0.01)
    slave = subprocess.Popen([sys.executable, __file__, "--serve", str(b)],
                             stdout=subprocess.PIPE, cwd=ROOT)
    assert slave.stdout is not None
    if slave.stdout.readline().strip() != b"ready":
        sys.exit("the RTU slave did not start")
    return pair, slave, str(a)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--serve", default="")
    ap.add_argument("--count", default="", metavar="raw|source:N",
                    help="only do N reads (to count instructions under callgrind)")
    args = ap.parse_args()
    if args.serve:
        await serve(args.serve)
        return
    with tempfile.TemporaryDirectory() as tmp_s:
        pair, slave, port = start_line(Path(tmp_s))
        try:
            if args.count:
                which, _, n = args.count.partition(":")
                await count(port, which, int(n))
                return
            runs = [await one_run(port, args.seconds) for _ in range(args.runs)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"modbus rtu vs raw pymodbus at {BAUD} baud on a pty (13 regs): "
                  + ", ".join(f"{k}={v:,.3f}" if v < 100 else f"{k}={v:,.0f}"
                              for k, v in med.items()) + f"  (median of {args.runs})")
        finally:
            for proc in (slave, pair):
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
