"""The MQTT source's receive path alone: CPU per message, without journal or MES.

N QoS 1 CMM results (``tests/system/mqtt_records.py``) are queued at a mosquitto for
the source's persistent session while it is away; then ``MqttSource`` drains them with
an emit that returns at once (acks after emit, as with the journal). Prints this
process's CPU time per message and the wall time of the drain. CPU per message is
what a loaded machine distorts least, so compare it between trees in one session:

    PYTHONPATH=$PWD python bench/mqtt_records_receive.py --messages 10000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "system")]
from harness import dump_toml  # noqa: E402
from mqtt_records import TOPICS, result, source_config  # noqa: E402
from peers import start_mosquitto  # noqa: E402

from edge.components import BuildContext  # noqa: E402
from edge.config import loads  # noqa: E402
from edge.model import Record, SampleBatch, TagRegistry  # noqa: E402
from edge.runtime.metrics import Metrics  # noqa: E402
from edge.sources.mqtt import MqttSource, MqttSourceConfig  # noqa: E402

CLIENT_ID = "edge-quality"


def build(port: int) -> MqttSource:
    cfg = loads(dump_toml({"sources": [source_config(port, client_id=CLIENT_ID)]})).sources[0]
    assert isinstance(cfg, MqttSourceConfig)
    tags = TagRegistry()
    cfg.declare_tags(tags)
    return cfg.build(BuildContext("gw", tags, Metrics(), Path("/nonexistent"), lambda n: ""))


def open_session(port: int) -> None:
    """Subscribe once with the source's client id, then leave: the broker queues."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=CLIENT_ID, clean_session=False)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.subscribe("quality/+/result", qos=1)
        time.sleep(0.5)  # the SUBACK (a bench, not a test)
    finally:
        c.disconnect()
        c.loop_stop()


def publish(port: int, n: int, prefix: str) -> None:
    lines = b"".join(result(f"{prefix}-{i:08d}", time.time()) + b"\n" for i in range(n))
    pub = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1",
                          "-l", "-M", "1000", "-t", TOPICS[0]], input=lines, check=False)
    if pub.returncode != 0:
        raise SystemExit("mosquitto_pub failed")


async def drain(port: int, n: int) -> tuple[float, float]:
    """(CPU us per message, wall seconds) to take n queued messages."""
    src = build(port)
    got = 0
    done = asyncio.Event()

    async def emit(batch: SampleBatch | None, records: Sequence[Record], /, *,
                   checkpoint: tuple[str, bytes] | None = None) -> None:
        nonlocal got
        got += len(records)
        if got >= n:
            done.set()

    task = asyncio.create_task(src.run(emit))
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.wait_for(done.wait(), 300)
    r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    return 1e6 * cpu / n, w1 - w0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_mosquitto(Path(tmp), extra="max_inflight_messages 1000\n")
        try:
            for k in range(args.rounds):
                open_session(broker.port)
                publish(broker.port, args.messages, f"R{k}")
                us, wall = asyncio.run(drain(broker.port, args.messages))
                print(f"{args.messages} messages: {us:.1f} us CPU per message, drain "
                      f"{wall:.2f} s, load {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
