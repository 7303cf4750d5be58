"""A fleet: many gateway daemons publishing Sparkplug B to a 3-node NATS cluster.

Each daemon is the real ``python -m edge run`` with one light simulated source (a file
drop the test writes CSV files into: known values, no simulator process) and a
Sparkplug sink whose group and node ids come from its ``[asset]`` path (node = its
cell). Their broker lists are rotated, so a third of them sit on each node. Mid-run the
test kills -9 one node.

The primary host is up first, as in production: on a node that stays up it publishes
its STATE (online, retained, with an offline Will), and every gateway is configured
with ``primary_host_id`` so it waits for that STATE before its births, after the kill
too (the cluster may answer the STATE subscription without the retained message for a
while: the gateway subscribes again until it comes). The host decodes every message
with the independent decoder (Eclipse Tahu's JS codec) and must see every value of
every gateway; the births keep the spec's seq/bdSeq rules.

``make test``: 10 daemons, ~20 s of data. ``make soak`` (EDGE_SOAK=1): 20 daemons for
two minutes, the killed node restarted and then another one killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from harness import REPO, SOAK, soak

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from integration import sparkplug_checks as check
from peers import Peer, SparkplugCodec, sparkplug_node_path, start_nats_cluster

GROUP = "acme:fleet:a1:line1"
DAEMONS = soak(10, 20)
FEED_S = soak(20.0, 120.0)  # how long each daemon gets new data
ROWS = 10  # values per file; one file per daemon per second
DRAIN_S = soak(240.0, 480.0)  # after the feed, every value must have arrived by then

CONFIG = """\
[gateway]
id = "gw{i:02d}"
state_dir = "{dir}/state"
fast_lane = false
log_format = "json"

[journal]
commit_interval_ms = 20

[asset]
enterprise = "acme"
site = "fleet"
area = "a1"
line = "line1"
cell = "cell{i:02d}"

[[sources]]
type = "file"
name = "sim"
paths = ["{dir}/in"]
mode = "samples"
timestamp_column = "time"
epoch_unit = "ms"
debounce_ms = 50
values = [{{ column = "v", tag = "v" }}]

[[sinks]]
type = "sparkplug"
name = "sp"
brokers = [{brokers}]
primary_host_id = "{host}"
ack_timeout_s = 15.0
"""
HOST_ID = "scada"


class Daemon:
    """One gateway process in its own folder; ``feed`` drops a CSV of the next values."""

    def __init__(self, i: int, root: Path, ports: list[int]) -> None:
        self.i = i
        self.node = f"cell{i:02d}"
        self.dir = root / f"gw{i:02d}"
        (self.dir / "in").mkdir(parents=True)
        turn = ports[i % len(ports):] + ports[:i % len(ports)]
        brokers = ", ".join(f'"mqtt://127.0.0.1:{p}"' for p in turn)
        self.config = self.dir / "gw.toml"
        self.config.write_text(CONFIG.format(i=i, dir=self.dir, brokers=brokers,
                                             host=HOST_ID))
        self.sent = 0
        self.log = (self.dir / "daemon.log").open("wb")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH", "")])])}
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(self.config)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.dir)

    def feed(self) -> None:
        now = time.time_ns() // 1_000_000
        rows = "".join(f"{now + k},{self.sent + k}\n" for k in range(ROWS))
        tmp = self.dir / "in" / f"{self.sent:08d}.tmp"
        tmp.write_text("time,v\n" + rows)
        tmp.rename(tmp.with_suffix(".csv"))
        self.sent += ROWS

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def connected(self) -> bool:
        """The daemon's Sparkplug link came up (its log says so)."""
        text = (self.dir / "daemon.log").read_text(errors="replace")
        return any('"link up"' in line and "sink:sp/broker" in line
                   for line in text.splitlines())

    def tail(self) -> str:
        text = (self.dir / "daemon.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-15:])


@dataclass
class Msg:
    kind: str
    payload: dict[str, Any]


class Counter:
    """The primary host: every message per edge node decoded by the independent codec;
    every DDATA value per node, the births and deaths per node."""

    def __init__(self, codec: SparkplugCodec) -> None:
        self.codec = codec
        self.values: dict[str, set[float]] = defaultdict(set)
        self.births: dict[str, int] = defaultdict(int)
        self.seen: dict[str, list[Msg]] = defaultdict(list)  # NBIRTH/NDEATH per node
        self.messages = 0

    async def pump(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            parts = m.topic.value.split("/")
            if parts[1] == "STATE":
                continue
            raw = m.payload if isinstance(m.payload, bytes) else b""
            self.messages += 1
            payload = self.codec.decode(raw)
            if parts[2] in ("NBIRTH", "NDEATH"):
                self.seen[parts[3]].append(Msg(parts[2], payload))
                self.births[parts[3]] += parts[2] == "NBIRTH"
            elif parts[2] == "DDATA":
                self.values[parts[3]].update(float(mt["value"]) for mt in payload["metrics"])


def state(online: bool, ts: int) -> bytes:
    return json.dumps({"online": online, "timestamp": ts}).encode()


STATE_TOPIC = f"spBv1.0/STATE/{HOST_ID}"


async def host_client(stack: contextlib.AsyncExitStack, port: int,
                      ts: int) -> aiomqtt.Client:
    """The primary host's client, subscribed to the group, its Will the offline STATE
    with ``ts``, once the cluster answers a QoS 1 round trip (JetStream makes its
    $MQTT_* streams on first use: seconds on a loaded machine)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while True:
        inner = contextlib.AsyncExitStack()
        try:
            client = await inner.enter_async_context(aiomqtt.Client(
                "127.0.0.1", port, identifier="fleet-host", timeout=10,
                will=aiomqtt.Will(STATE_TOPIC, state(False, ts), qos=1, retain=True)))
            await client.subscribe(f"spBv1.0/{GROUP}/#", qos=1)
            await client.publish("probe/ready", b"1", qos=1)
        except aiomqtt.MqttError:
            with contextlib.suppress(Exception):
                await inner.aclose()
            assert loop.time() < deadline, "NATS cluster's MQTT never became ready"
            await asyncio.sleep(0.5)
            continue
        stack.push_async_exit(inner)
        return client


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
        await task


def restart(node: Peer) -> Peer:
    """The same node again, same ports and store (its config file is unchanged)."""
    proc = subprocess.Popen(node.proc.args, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=node.workdir)
    return Peer(node.name, node.port, proc, node.workdir, node.log)


@pytest.mark.timeout(soak(600, 1200))
async def test_fleet_on_a_nats_cluster_loses_nothing_when_a_node_dies(tmp_path: Path) -> None:
    """Every gateway of a fleet on a 3-node NATS cluster, each waiting for the primary
    host's STATE, delivers every value to the host (live or replayed from its journal as
    historical) though a broker node is killed -9 mid-run; each gateway is born (again)
    on a node that is up, and the births keep the seq/bdSeq rules."""
    sparkplug_node_path()  # skip early when the codec is not installed
    nodes = start_nats_cluster(tmp_path)
    daemons: list[Daemon] = []
    codec = SparkplugCodec()
    counter = Counter(codec)
    t_start = time.monotonic()
    try:
        async with contextlib.AsyncExitStack() as stack:
            host_ts = time.time_ns() // 1_000_000
            client = await host_client(stack, nodes[2].port, host_ts)
            pump = asyncio.create_task(counter.pump(client))
            stack.push_async_callback(_cancel, pump)
            daemons = [Daemon(i, tmp_path, [n.port for n in nodes]) for i in range(DAEMONS)]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 180
            while not all(d.connected() for d in daemons):  # on the broker, no host yet
                assert loop.time() < deadline, "not connected:\n" + daemons[0].tail()
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # a birth sent without waiting would be here by now
            assert not counter.births, f"born before the primary host's STATE: {counter.births}"
            await client.publish(STATE_TOPIC, state(True, host_ts), qos=1, retain=True)
            while len(counter.births) < DAEMONS:  # every gateway born once
                assert loop.time() < deadline, (
                    f"born: {sorted(counter.births)}\n" + daemons[0].tail())
                await asyncio.sleep(0.2)
            born_s = time.monotonic() - t_start
            kills = [FEED_S * 0.4] + ([FEED_S * 0.8] if SOAK else [])
            t0 = loop.time()
            killed: list[int] = []
            while (elapsed := loop.time() - t0) < FEED_S:
                for d in daemons:
                    d.feed()
                if kills and elapsed >= kills[0]:
                    kills.pop(0)
                    victim = 0 if not killed else 1
                    if killed:  # soak: bring the first one back, then kill another
                        nodes[killed[-1]] = restart(nodes[killed[-1]])
                    nodes[victim].proc.kill()
                    nodes[victim].proc.wait()
                    killed.append(victim)
                await asyncio.sleep(1.0)
            deadline = loop.time() + DRAIN_S
            missing: dict[str, int] = {}
            while True:
                missing = {d.node: d.sent - len(counter.values[d.node] & set(
                    map(float, range(d.sent)))) for d in daemons}
                if not any(missing.values()):
                    break
                assert not pump.done(), "the host lost its own connection"
                dead = [d.node for d in daemons if d.proc.poll() is not None]
                assert not dead, f"daemons exited: {dead}\n" + daemons[0].tail()
                assert loop.time() < deadline, (
                    f"values missing per node after {DRAIN_S:.0f} s: "
                    f"{ {k: v for k, v in missing.items() if v} }")
                await asyncio.sleep(0.5)
            took = loop.time() - t0
        total = sum(d.sent for d in daemons)
        for seen in counter.seen.values():
            check.tck_id_payloads_nbirth_seq(seen)
            check.tck_id_payloads_nbirth_bdseq(seen)
            check.tck_id_payloads_ndeath_seq(seen)
            check.tck_id_topics_nbirth_bdseq_increment(seen)
        reborn = sum(1 for n in counter.births.values() if n >= 2)
        print(f"fleet: {DAEMONS} daemons, {total} values, all delivered {took:.1f} s after "
              f"the feed started ({FEED_S:.0f} s feed), births took {born_s:.1f} s, "
              f"{reborn} gateways born again after the node kill, "
              f"{counter.messages} messages, load {os.getloadavg()[0]:.1f}")
        assert reborn >= 1  # the gateways on the killed node walked to another one
    finally:
        for d in daemons:
            d.stop()
        for n in nodes:
            n.stop()
        codec.close()
