"""Sparkplug chaos, one fault after the other against the same edge node (its own process,
journal and state folder) and mosquitto, with Eclipse Tahu's JS codec as primary host:
the link cut and refused (hw_sim link proxy), the primary host offline and back, kill -9
of the gateway and a restart, a clean restart from a stale (restored) bdSeq file. After
each fault every committed value reached the host; at the end the named checks after the
specification's assertion ids (tests/integration/sparkplug_checks.py) hold for the whole
run, the bdSeq of every CONNECT's Will among them: a tap in front of the broker records
each CONNECT, as the TCK's broker-side monitor does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import sparkplug_checks as check
from mqtt_tap import ConnectTap
from test_sparkplug_sink import Host, host

from hw_sim.link import LinkProxy

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import Peer, SparkplugCodec, free_port

EDGE = Path(__file__).with_name("sparkplug_chaos_edge.py")
ALIAS = "2"  # etch1/chamber_temp
WAIT_S = 60.0


class Edge:
    """The edge node process; stopped by its own pid."""

    def __init__(self, port: int, state: Path) -> None:
        self.argv = [sys.executable, str(EDGE), str(port), str(state)]
        self.state = state
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = (state / "edge.log").open("ab")

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=os.environ.copy())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def committed(self) -> list[float]:
        path = self.state / "committed.log"
        return [float(x) for x in path.read_text().split()] if path.exists() else []

    def bdseq(self) -> int:
        return int((self.state / "sparkplug" / "sp.bdseq").read_text())


async def caught_up(h: Host, edge: Edge, what: str, at_least: int = 20) -> None:
    """Wait (bounded) until the values committed so far, and at least ``at_least`` more
    than before, reached the host."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    target = len(edge.committed()) + at_least
    while True:
        committed = edge.committed()
        got = {v for v, _ in check.values(h.seen, ALIAS)}
        if len(committed) >= target and set(committed[:target]) <= got:
            return
        assert loop.time() < deadline, (
            f"after {what}: {len(set(committed) - got)} committed values missing, "
            f"{len(committed)} committed\n{(edge.state / 'edge.log').read_text()[-3000:]}")
        await asyncio.sleep(0.05)


async def death(h: Host, edge: Edge, after: int) -> None:
    """Wait (bounded) for the NDEATH of the edge node's current connection among the
    host's messages from index ``after`` on (older Wills may carry the same bdSeq)."""
    bd = str(edge.bdseq())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not any(m.kind == "NDEATH" and m.payload["metrics"][0]["value"] == bd
                  for m in h.seen[after:]):
        assert loop.time() < deadline, f"no NDEATH with bdSeq {bd}"
        await asyncio.sleep(0.05)


def births(h: Host) -> int:
    return sum(1 for m in h.seen if m.kind == "NBIRTH")


async def test_chaos_every_value_arrives_and_the_spec_rules_hold(
        broker: Peer, codec: SparkplugCodec, tmp_path: Path) -> None:
    """Link cut, link refused 2 s, host offline and back, kill -9 and restart, restart
    from a stale bdSeq file: after each the host has every committed value, and the
    seq/bdSeq, at-least-once, exactly-once-live and order checks hold for the run."""
    tap = ConnectTap(broker.port)  # records each CONNECT that reaches the broker
    await tap.start()
    proxy = LinkProxy(free_port(), "127.0.0.1", tap.port)
    await proxy.start()
    state = tmp_path / "edge"
    state.mkdir()
    edge = Edge(proxy.listen_port, state)
    stale_birth: list[int] = []
    stale_connect: list[int] = []
    try:
        async with host(broker.port, codec) as h:
            await h.state(True, 1)
            edge.start()
            await h.next("NBIRTH")
            await caught_up(h, edge, "the first births")

            await proxy.set_mode("cut")  # RST on the edge node's connection
            await caught_up(h, edge, "a link cut")

            await proxy.set_mode("refuse")  # the broker unreachable for 2 s: a backlog
            await asyncio.sleep(2.0)
            await proxy.set_mode("pass")
            await caught_up(h, edge, "2 s of refused connections", at_least=50)

            mark = len(h.seen)
            await h.state(False, 2)  # the primary host goes offline: NDEATH, wait
            await death(h, edge, mark)
            await asyncio.sleep(1.0)
            await h.state(True, 3)
            await caught_up(h, edge, "the host offline and back")

            edge.stop(signal.SIGKILL)
            edge.start()
            await caught_up(h, edge, "kill -9 and a restart")

            mark = len(h.seen)
            edge.stop()  # clean: NDEATH, then a restart from a restored older bdSeq file
            await death(h, edge, mark)
            (state / "sparkplug" / "sp.bdseq").write_text(f"{(edge.bdseq() - 3) % 256}\n")
            stale_birth.append(births(h))
            stale_connect.append(len(tap.connects))
            edge.start()
            await caught_up(h, edge, "a restart with a stale bdSeq file")
            mark = len(h.seen)
            edge.stop()
            await death(h, edge, mark)
            committed = edge.committed()
            seen = list(h.seen)
            wills = [int(codec.decode(c.will_payload)["metrics"][0]["value"])
                     for c in tap.connects]
    finally:
        edge.stop(signal.SIGKILL)
        await proxy.close()
        await tap.close()
    check.all_checks(seen, ALIAS, committed, stale=stale_birth, wills=wills,
                     stale_connects=stale_connect)
    assert births(h) >= 6  # every fault was a new session
    assert any(hist for _, hist in check.values(seen, ALIAS))  # backlogs came historical
