"""Ingest rate per source: samples/s and CPU seconds per million samples.

    .venv/bin/python bench/ingest.py [--runs 5] [--only file,mqtt,modbus]

* file:   a samples-mode CSV (10 value columns) and a CMM daily file read by
          ``FileSource`` from disk, checkpoint fsynced per 5,000-row batch.
* mqtt:   batched JSON (100-element arrays, 2 fields) through a real mosquitto,
          published by a separate process; the source's own CPU is measured, and the
          pure payload path (``MqttSource.handle``) without the broker.
* modbus: reads/s of ``ModbusSource`` (13 registers, one planned read per poll, poll
          interval 1 us: every poll is late, so the schedule never sleeps) against the
          raw pymodbus client doing the same read in a loop, both against the hw_sim
          etch tool running in its own process; and the bench process's CPU per read
          (the client side only; the simulator's CPU is the same for both).

Each figure is the median of ``--runs`` runs. Emit is a no-op: this measures the
source, not the journal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import msgspec
from pymodbus.client import AsyncModbusTcpClient

from edge.components import BuildContext
from edge.config import convert
from edge.model import Record, SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sources.file.config import FileSourceConfig
from edge.sources.file.source import FileSource
from edge.sources.modbus.config import ModbusSourceConfig
from edge.sources.modbus.source import ModbusSource
from edge.sources.mqtt import MqttSource, MqttSourceConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from peers import free_port, start_mosquitto  # noqa: E402


class Counter:
    def __init__(self) -> None:
        self.samples = 0
        self.records = 0
        self.first = 0.0
        self.last = 0.0

    async def __call__(self, batch: SampleBatch | None, records: Sequence[Record], /, *,
                       checkpoint: tuple[str, bytes] | None = None) -> None:
        now = time.perf_counter()
        if not self.first:
            self.first = now
        self.last = now
        self.samples += 0 if batch is None else len(batch)
        self.records += len(records)


def ctx_for(cfg: Any, tmp: Path) -> BuildContext:
    tags = TagRegistry()
    cfg.declare_tags(tags)
    return BuildContext("bench", tags, Metrics(), tmp, lambda n: "")


async def run_until(coro: Coroutine[Any, Any, None], done: Callable[[], bool],
                    timeout: float = 120.0) -> None:
    task = asyncio.create_task(coro)
    deadline = time.monotonic() + timeout
    try:
        while not done():
            if task.done():
                task.result()
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark did not finish")
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --------------------------------------------------------------------------- file


def write_samples_csv(path: Path, rows: int) -> None:
    cols = [f"v{i}" for i in range(10)]
    with path.open("w") as fh:
        fh.write("timestamp," + ",".join(cols) + "\n")
        t0 = 1_795_255_200.0
        for r in range(rows):
            vals = ",".join(f"{(r * 7 + i) % 1000 / 7:.4f}" for i in range(10))
            fh.write(f"{t0 + r * 0.01:.3f},{vals}\n")


def write_cmm_csv(path: Path, rows: int) -> None:
    from hw_sim.cmm import CSV_HEADER, CmmModel

    model = CmmModel(seed=1)
    with path.open("w") as fh:
        fh.write(CSV_HEADER + "\n")
        n = 0
        while n < rows:
            part = model.measure_part(60.0 * (model.parts_made + 1))
            fh.write("".join(",".join(r.fields()) + "\n" for r in part.rows))
            n += len(part.rows)


async def bench_file(mode: str, rows: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        drop = tmp / "drop"
        drop.mkdir()
        raw: dict[str, Any] = {"name": "f", "paths": [str(drop)], "mode": mode}
        if mode == "samples":
            write_samples_csv(drop / "data.csv", rows)
            raw["values"] = [{"column": f"v{i}", "tag": f"v{i}"} for i in range(10)]
            expect = rows * 10
        else:
            write_cmm_csv(drop / "cmm.csv", rows)
            expect = rows * 3
        cfg = convert(raw, FileSourceConfig, "bench")
        src = FileSource(cfg, ctx_for(cfg, tmp / "state"))
        out = Counter()
        cpu0, t0 = time.process_time(), time.perf_counter()
        await run_until(src.run(out), lambda: out.samples >= expect)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        return {"samples": out.samples, "samples_per_s": out.samples / wall,
                "rows_per_s": (out.samples / (10 if mode == "samples" else 3)) / wall,
                "cpu_s_per_M": cpu / out.samples * 1e6}


# --------------------------------------------------------------------------- mqtt

PUBLISHER = r"""
import asyncio, sys, json, aiomqtt
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
async def main():
    async with aiomqtt.Client("127.0.0.1", port, max_queued_outgoing_messages=None) as c:
        for k in range(n):
            t0 = 1795255200 + k * size * 0.001
            body = {"ts": [round(t0 + i * 0.001, 3) for i in range(size)],
                    "current_a": [1.0 + (k + i) % 7 * 0.01 for i in range(size)],
                    "speed": [1500.0 + i for i in range(size)]}
            await c.publish(f"line/m{k % 10}/batch", json.dumps(body), qos=0)
asyncio.run(main())
"""


def mqtt_config(port: int) -> dict[str, Any]:
    return {
        "name": "m", "port": port, "qos": 0,
        "subscriptions": [{
            "topic": "line/+/batch", "device": "{1}", "devices": [f"m{i}" for i in range(10)],
            "batched": True, "ts_field": "ts",
            "fields": [{"path": "current_a", "tag": "current_a"},
                       {"path": "speed", "tag": "speed"}],
        }],
    }


async def bench_mqtt_broker(messages: int, size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        broker = start_mosquitto(tmp)
        try:
            cfg = convert(mqtt_config(broker.port), MqttSourceConfig, "bench")
            src = MqttSource(cfg, ctx_for(cfg, tmp))
            out = Counter()
            task = asyncio.create_task(src.run(out))
            while not src.link.state.up:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            cpu0 = time.process_time()
            argv = [sys.executable, "-c", PUBLISHER, str(broker.port), str(messages), str(size)]
            pub = subprocess.Popen(argv)  # noqa: ASYNC220
            expect = messages * size * 2
            deadline = time.monotonic() + 120
            last_change, last_seen = time.monotonic(), -1
            while out.samples < expect and time.monotonic() < deadline:
                if out.samples != last_seen:
                    last_seen, last_change = out.samples, time.monotonic()
                elif pub.poll() is not None and time.monotonic() - last_change > 2.0:
                    break  # the broker dropped some (QoS 0): measure what arrived
                await asyncio.sleep(0.01)
            cpu = time.process_time() - cpu0
            pub.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            wall = out.last - out.first
            return {"samples": out.samples, "delivered": out.samples / expect,
                    "samples_per_s": out.samples / wall, "cpu_s_per_M": cpu / out.samples * 1e6}
        finally:
            broker.stop()


def bench_mqtt_handle(messages: int, size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp_s:
        cfg = convert(mqtt_config(1883), MqttSourceConfig, "bench")
        src = MqttSource(cfg, ctx_for(cfg, Path(tmp_s)))
        payloads = []
        for k in range(messages):
            t0 = 1795255200 + k * size * 0.001
            payloads.append((f"line/m{k % 10}/batch", msgspec.json.encode({
                "ts": [round(t0 + i * 0.001, 3) for i in range(size)],
                "current_a": [1.0 + (k + i) % 7 * 0.01 for i in range(size)],
                "speed": [1500.0 + i for i in range(size)]})))
        n = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        for topic, p in payloads:
            got = src.handle(topic, p, 0)
            n += len(got[1]) if isinstance(got, tuple) else 0
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        return {"samples": n, "samples_per_s": n / wall, "cpu_s_per_M": cpu / n * 1e6}


# --------------------------------------------------------------------------- modbus


def start_etch() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hw_sim.cli", "etch", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return proc, port


async def wait_modbus(port: int) -> None:
    for _ in range(200):
        client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0)
        ok = await client.connect()
        client.close()
        if ok:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("etch simulator did not start")


async def _raw_rate(port: int, seconds: float) -> tuple[float, float]:
    """Reads/s of a bare pymodbus loop, and this process's CPU us per read."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)
    await client.connect()
    n = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        rr = await client.read_holding_registers(0, count=13, device_id=1)
        assert not rr.isError()
        n += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    client.close()
    return n / wall, cpu / n * 1e6


async def _source_rate(cfg: ModbusSourceConfig, seconds: float) -> tuple[float, float]:
    """Polls/s of the source (interval 1 us: always late, it never sleeps), CPU us per poll."""
    with tempfile.TemporaryDirectory() as tmp_s:
        src = ModbusSource(cfg, ctx_for(cfg, Path(tmp_s)))
        task = asyncio.create_task(src.run(Counter()))
        while src.polls == 0:
            if task.done():  # the source died before its first poll: say why
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


async def bench_modbus(seconds: float) -> dict[str, float]:
    proc, port = start_etch()
    try:
        await wait_modbus(port)
        import tomllib

        doc = tomllib.loads((ROOT / "config" / "etch_modbus.toml").read_text())
        raw_cfg = {**doc["device"], "port": port, "poll_interval_s": 1e-6,
                   "registers": doc["registers"]}
        cfg = convert(raw_cfg, ModbusSourceConfig, "bench")
        raw_runs, our_runs = [], []
        for _ in range(3):  # interleaved, so drift of the machine hits both alike
            raw_runs.append(await _raw_rate(port, seconds / 3))
            our_runs.append(await _source_rate(cfg, seconds / 3))
        raw = statistics.mean(r for r, _ in raw_runs)
        ours = statistics.mean(r for r, _ in our_runs)
        return {"raw_reads_per_s": raw, "source_reads_per_s": ours, "ratio": ours / raw,
                "raw_cpu_us_per_read": statistics.mean(c for _, c in raw_runs),
                "source_cpu_us_per_read": statistics.mean(c for _, c in our_runs)}
    finally:
        proc.terminate()
        proc.wait(10)


# --------------------------------------------------------------------------- main


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default="file,mqtt,modbus")
    args = ap.parse_args()
    only = set(args.only.split(","))
    cases: list[tuple[str, Callable[[], Any]]] = []
    if "file" in only:
        cases += [("file samples-mode (10 values/row)", lambda: bench_file("samples", 100_000)),
                  ("file cmm-mode (3 samples + 1 record/row)", lambda: bench_file("cmm", 60_000))]
    if "mqtt" in only:
        cases += [("mqtt batched, payload path only", lambda: bench_mqtt_handle(5000, 100)),
                  ("mqtt batched via mosquitto", lambda: bench_mqtt_broker(5000, 100))]
    if "modbus" in only:
        cases += [("modbus vs raw pymodbus (13 regs)", lambda: bench_modbus(3.0))]
    for name, fn in cases:
        runs = []
        for _ in range(args.runs):
            res = fn()
            runs.append(await res if asyncio.iscoroutine(res) else res)
        med = median_of(runs)
        shown = ", ".join(f"{k}={v:,.3f}" if v < 100 else f"{k}={v:,.0f}" for k, v in med.items())
        print(f"{name}: {shown}  (median of {args.runs})", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
