"""Load generator for bench/pipeline.py: batched MQTT JSON at a fixed samples/s rate.

Publishes ``{"ts": [ms...], "current_a": [float...]}`` on ``bench/<device>/batch``,
``per_msg`` samples per message, devices in turn, QoS 1 with a bounded number of
publishes in flight (so the broker queues rather than drops when the gateway lags).
Per device the timestamps are integer milliseconds that never repeat (the same series
and timestamp would overwrite itself in InfluxDB/VictoriaMetrics).

Per message the timestamps end near the wall clock, so they never run ahead of it.

The rate can be changed while running: the target is re-read from ``--rate-file``
(one number, samples/s; 0 pauses) every 0.2 s. ``--out`` gets
``{"sent": samples, "messages": n, "late_s": s, "rate": r}`` every second and on
SIGTERM; a count written with ``rate`` 0 is final until the rate changes again.

    python bench/pipeline_mqtt.py --port 1883 --rate-file r.txt --out sent.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path

import aiomqtt
import msgspec
import numpy as np


def device_name(i: int) -> str:
    return f"m{i:04d}"


async def publish(args: argparse.Namespace) -> None:
    rate_file = Path(args.rate_file)
    out = Path(args.out)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    rng = np.random.default_rng(args.seed)
    n_dev, per = args.devices, args.per_msg
    level = 1.2 + 0.05 * rng.standard_normal(n_dev)
    next_ms = np.full(n_dev, int(time.time() * 1000), np.int64)
    enc = msgspec.json.Encoder()
    sent = messages = 0
    late = 0.0
    inflight = asyncio.Semaphore(args.inflight)
    errors: list[str] = []
    rate = 0.0

    def save() -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sent": sent, "messages": messages, "late_s": late,
                                   "rate": rate, "errors": errors[-3:]}))
        tmp.replace(out)

    async with aiomqtt.Client(args.host, args.port, identifier=f"bench-pub-{args.seed}",
                              max_inflight_messages=args.inflight, timeout=30) as client:

        async def one(topic: str, body: bytes) -> None:
            try:
                await client.publish(topic, body, qos=args.qos)
            except aiomqtt.MqttError as exc:
                errors.append(str(exc))
            finally:
                inflight.release()

        t_rate = 0.0
        t_save = time.monotonic()
        due = time.monotonic()
        dev = 0
        tasks: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            now = time.monotonic()
            if now - t_rate >= 0.2:
                t_rate = now
                try:
                    new = float(rate_file.read_text().strip() or 0)
                except (OSError, ValueError):
                    new = rate
                if new != rate:
                    rate = new
                    due = now
            if now - t_save >= 1.0:
                t_save = now
                save()
            if rate <= 0:
                await asyncio.sleep(0.05)
                continue
            if due > now:
                await asyncio.sleep(min(due - now, 0.05))
                continue
            late = max(late, now - due)
            step_ms = max(1, int(1000 * n_dev / rate))
            start = max(int(next_ms[dev]), int(time.time() * 1000) - per * step_ms)
            ts = start + step_ms * np.arange(per, dtype=np.int64)
            next_ms[dev] = ts[-1] + step_ms
            level[dev] += 0.001 * rng.standard_normal()
            vals = np.round(level[dev] + 0.02 * rng.standard_normal(per), 4)
            body = enc.encode({"ts": ts.tolist(), "current_a": vals.tolist()})
            await inflight.acquire()
            task = asyncio.create_task(one(f"bench/{device_name(dev)}/batch", body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += per
            messages += 1
            dev = (dev + 1) % n_dev
            due += per / rate
        if tasks:
            await asyncio.wait(tasks, timeout=30)
    save()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--per-msg", type=int, default=1000)
    ap.add_argument("--qos", type=int, default=1)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    asyncio.run(publish(ap.parse_args()))


if __name__ == "__main__":
    main()
