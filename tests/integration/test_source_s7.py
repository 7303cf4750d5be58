"""S7 source against the simulated PLC (python-snap7's server) over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from edge.components import BuildContext, Command
from edge.config import convert
from edge.errors import PermanentError, RetryableError
from edge.model import Quality, Record, SampleBatch, TagRegistry, TextValue
from edge.runtime.metrics import Metrics
from edge.sources.s7.config import S7SourceConfig
from edge.sources.s7.source import S7Source
from hw_sim.link import LinkProxy
from hw_sim.s7_plc import LAYOUT, RESET_BIT, STOP_BIT, S7Plc, values

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import free_port

WAIT_S = 30.0  # the machine is loaded: generous, and every wait stops on its condition
NUMERIC = [n for n, (_, t) in LAYOUT.items() if not t.startswith("STRING")]


class Collector:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self.texts: list[TextValue] = []
        self.changed = asyncio.Event()

    async def __call__(self, batch: SampleBatch | None, records: Sequence[Record], /, *,
                       checkpoint: tuple[str, bytes] | None = None) -> None:
        if batch is not None:
            self.batches.append(batch)
        self.texts += [r for r in records if isinstance(r, TextValue)]
        self.changed.set()

    async def until_text(self, what: str, check: Callable[[list[TextValue]], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not check(self.texts):
                self.changed.clear()
                await self.changed.wait()

    async def until(self, what: str, check: Callable[[SampleBatch], bool]) -> SampleBatch:
        """The first new batch for which ``check`` holds, within WAIT_S."""
        seen = 0
        async with asyncio.timeout(WAIT_S):
            while True:
                for b in self.batches[seen:]:
                    if check(b):
                        return b
                seen = len(self.batches)
                self.changed.clear()
                await self.changed.wait()
        raise AssertionError(what)  # pragma: no cover


def config(port: int, **over: object) -> S7SourceConfig:
    raw: dict[str, object] = {
        "name": "plc1", "host": "127.0.0.1", "port": port, "poll_interval_s": 0.05,
        "timeout_s": 1.0, "backoff_max_s": 0.5,
        "tags": [{"name": n, "address": LAYOUT[n][0], "type": LAYOUT[n][1]} for n in NUMERIC],
        "commands": [{"action": "stop", "address": "DB1.DBX52.0"},
                     {"action": "speed", "address": "MW20", "type": "INT", "value": 42}],
    }
    raw.update(over)
    return convert(raw, S7SourceConfig, "source 'plc1'")


@pytest.fixture
def plc() -> Iterator[S7Plc]:
    p = S7Plc()
    p.start()
    yield p
    p.stop()


@contextlib.asynccontextmanager
async def running(cfg: S7SourceConfig, tmp: Path) -> AsyncIterator[tuple[S7Source, Collector]]:
    tags = TagRegistry()
    cfg.declare_tags(tags)
    src = cfg.build(BuildContext("gw", tags, Metrics(), tmp, lambda n: ""))
    got = Collector()
    task = asyncio.create_task(src.run(got))
    try:
        yield src, got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def as_read(step: int) -> list[float]:
    want = values(step)
    return [float(want[n]) for n in NUMERIC]  # type: ignore[arg-type]


def is_step(step: int) -> Callable[[SampleBatch], bool]:
    want = as_read(step)
    return lambda b: bool((b.quality == 0).all()) and b.value.tolist() == want


async def test_reads_every_type_and_follows_changes(plc: S7Plc, tmp_path: Path) -> None:
    """Every S7 type in DB1 and in I/Q/M reads as the PLC holds it, and changes follow."""
    plc.tick()
    async with running(config(plc.port), tmp_path) as (src, got):
        await got.until("step 1 values", is_step(1))
        plc.tick()
        await got.until("step 2 values", is_step(2))
        # one read per area: DB1 bytes 0..51 in one request, I, Q and M one each
        assert [(r.req.area, r.req.size) for r in src.reads] == [
            ("DB", 52), ("I", 1), ("Q", 1), ("M", 2)]


async def test_connects_by_tsap(plc: S7Plc, tmp_path: Path) -> None:
    """With local_tsap/remote_tsap instead of rack/slot (LOGO!, CPs) the source connects
    and reads."""
    async with running(config(plc.port, local_tsap=0x0100, remote_tsap=0x0200),
                       tmp_path) as (_, got):
        await got.until("step 0 values", is_step(0))


async def test_error_codes_give_bad_for_the_tags_they_touch(plc: S7Plc, tmp_path: Path) -> None:
    """A missing DB and a read past a DB's end give Bad for those tags only; others Good."""
    tags = [{"name": "temperature", "address": "DB1.DBD8", "type": "REAL"},
            {"name": "ghost", "address": "DB99.DBW0", "type": "INT"},
            {"name": "past_end", "address": "DB1.DBD1000", "type": "DINT"}]
    async with running(config(plc.port, tags=tags), tmp_path) as (src, got):
        b = await got.until("one Good and two Bad", lambda b: b.quality[0] == 0)
        assert b.quality.tolist() == [0, Quality.BAD_DEVICE_EXCEPTION,
                                      Quality.BAD_DEVICE_EXCEPTION]
        assert b.value[0] == values(0)["temperature"] and np.isnan(b.value[1:]).all()
        assert src.link.state.up  # an error answer is not a lost link
        assert sorted(r.failing for r in src.reads if r.failing) == [
            "Read operation failed: Invalid address (0x05)",
            "Read operation failed: Object does not exist (0x0a)"]


async def test_bad_bytes_give_bad_decode_for_that_tag(plc: S7Plc, tmp_path: Path) -> None:
    """A DATE_AND_TIME whose bytes are not a date is Bad (decode); its neighbours stay Good."""
    plc.db[39] = 0x13  # month 13
    tags = [{"name": "clock", "address": "DB1.DBB38", "type": "DT"},
            {"name": "status", "address": "DB1.DBW46", "type": "WORD"}]
    async with running(config(plc.port, tags=tags), tmp_path) as (_, got):
        b = await got.until("a poll", lambda b: True)
        assert b.quality.tolist() == [Quality.BAD_DECODE, 0]
        assert b.value[1] == values(0)["status"]


async def test_stop_command_sets_only_its_bit(plc: S7Plc, tmp_path: Path) -> None:
    """The stop command sets DB1.DBX52.0 and leaves the byte's other bits as they were;
    an INT command writes its word; an unknown action is refused."""
    plc.db[52] = 1 << RESET_BIT[1] | 0x80
    async with running(config(plc.port), tmp_path) as (src, got):
        await got.until("a Good poll", lambda b: bool((b.quality == 0).all()))
        await src.write(Command("plc1", "stop"))
        assert plc.bit(*STOP_BIT) and plc.bit(*RESET_BIT) and plc.db[52] & 0x80
        await src.write(Command("plc1", "speed"))
        assert int.from_bytes(plc.markers[20:22], "big", signed=True) == 42
        with pytest.raises(PermanentError, match="no command 'start'"):
            await src.write(Command("plc1", "start"))


async def test_command_to_a_stopped_plc_is_retryable(tmp_path: Path) -> None:
    """A command to a PLC that does not answer raises RetryableError (the interlock
    retries), never hangs."""
    cfg = config(free_port())
    tags = TagRegistry()
    cfg.declare_tags(tags)
    src = cfg.build(BuildContext("gw", tags, Metrics(), tmp_path, lambda n: ""))
    async with asyncio.timeout(WAIT_S):
        with pytest.raises(RetryableError, match="command 'stop' failed"):
            await src.write(Command("plc1", "stop"))


async def test_plc_restart_gives_bad_then_recovers(plc: S7Plc, tmp_path: Path) -> None:
    """A PLC that goes away gives Bad (not connected) samples, not old values; when it
    is back the source reconnects by itself and reads the new values."""
    async with running(config(plc.port), tmp_path) as (src, got):
        await got.until("step 0", is_step(0))
        plc.stop()
        bad = await got.until("Bad samples", lambda b: bool((b.quality != 0).all()))
        assert set(bad.quality.tolist()) == {Quality.BAD_NOT_CONNECTED}
        assert np.isnan(bad.value).all()
        plc.tick()
        plc.start()
        await got.until("step 1 after the restart", is_step(1))
        assert src.link.state.up
        await src.write(Command("plc1", "stop"))  # the command connection recovered too
        assert plc.bit(*STOP_BIT)


@pytest.mark.parametrize("fault", ["cut", "blackhole"])
async def test_link_faults_give_bad_then_recover(plc: S7Plc, tmp_path: Path,
                                                 fault: str) -> None:
    """A cut link (RST) and a black hole (no answer: a timeout) give Bad samples and the
    source recovers once the link passes again."""
    proxy = LinkProxy(free_port(), "127.0.0.1", plc.port)
    await proxy.start()
    try:
        async with running(config(proxy.listen_port), tmp_path) as (_, got):
            await got.until("step 0", is_step(0))
            await proxy.set_mode(fault)
            want = Quality.BAD_TIMEOUT if fault == "blackhole" else Quality.BAD_NOT_CONNECTED
            await got.until(f"{want.name}", lambda b: bool((b.quality == want).all()))
            await proxy.set_mode("pass")
            plc.tick()
            await got.until("step 1 after the fault", is_step(1))
    finally:
        await proxy.close()


async def test_hung_plc_is_listed_as_a_blocking_call(plc: S7Plc, tmp_path: Path) -> None:
    """While the PLC does not answer, the pending read is listed by progress.inflight
    (what status shows as stuck), and the event loop keeps running."""
    from edge.runtime.progress import inflight

    proxy = LinkProxy(free_port(), "127.0.0.1", plc.port)
    await proxy.start()
    try:
        async with running(config(proxy.listen_port, timeout_s=3.0), tmp_path) as (_, got):
            await got.until("step 0", is_step(0))
            await proxy.set_mode("blackhole")
            listed = asyncio.Event()
            loop = asyncio.get_running_loop()

            def check() -> None:  # runs on the loop: it is free while the thread waits
                if any(c.what.startswith("s7 read") for c in inflight()):
                    listed.set()
                else:
                    loop.call_later(0.01, check)

            check()
            async with asyncio.timeout(WAIT_S):
                await listed.wait()
    finally:
        await proxy.close()


async def test_interlock_on_an_s7_tag_writes_the_stop_bit(plc: S7Plc, tmp_path: Path) -> None:
    """The whole gateway: an interlock on an S7 tag trips when the PLC's value crosses its
    limit and sets the PLC's stop bit through the S7 source's write-back port."""
    from edge.app import Gateway
    from edge.config import loads

    high = (values(1)["temperature"] + values(2)["temperature"]) / 2  # type: ignore[operator]
    cfg = loads(f"""
[gateway]
id = "gw-s7"
state_dir = "{tmp_path / 'state'}"

[[sources]]
type = "s7"
name = "plc1"
host = "127.0.0.1"
port = {plc.port}
poll_interval_s = 0.05
tags = [{{ name = "temperature", address = "DB1.DBD8", type = "REAL", unit = "C" }}]
commands = [{{ action = "stop", address = "DB1.DBX52.0" }}]

[[interlocks]]
name = "plc1_overtemp"
tag = "plc1/temperature"
high = {high}
action = {{ source = "plc1", action = "stop" }}
""")
    gw = Gateway(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        async with asyncio.timeout(WAIT_S * 4):  # kernels compile before READY
            await gw.ready.wait()
        plc.tick()  # step 1: below the limit
        assert not plc.bit(*STOP_BIT)
        plc.tick()  # step 2: above
        tripped = asyncio.Event()
        loop = asyncio.get_running_loop()

        def check() -> None:
            if plc.bit(*STOP_BIT):
                tripped.set()
            else:
                loop.call_later(0.01, check)

        check()
        async with asyncio.timeout(WAIT_S):
            await tripped.wait()
    finally:
        stop.set()
        async with asyncio.timeout(WAIT_S):
            await task


async def test_simulated_plc_as_a_process(tmp_path: Path) -> None:
    """``python -m hw_sim.s7_plc`` serves the documented map on the port it prints, and its
    values change by themselves."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hw_sim.s7_plc", "--interval", "0.05",
        cwd=Path(__file__).resolve().parents[2], stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), WAIT_S)).decode()
        assert line.startswith("READY port="), line
        async with running(config(int(line.split("=")[1])), tmp_path) as (_, got):
            first = await got.until("a Good poll", lambda b: not b.quality.any())
            k = NUMERIC.index("cycles")
            await got.until("cycles to move on", lambda b: b.value[k] > first.value[k])
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), WAIT_S)


async def test_string_tag_is_a_text_record_on_change(plc: S7Plc, tmp_path: Path) -> None:
    """A STRING tag travels as TextValue records, one per change of its text (not per
    poll), Good; a STRING whose bytes are no STRING is Bad (decode) with the reason, and
    a stopped PLC makes it Bad (not connected); its numeric neighbour stays a sample."""
    tags = [{"name": "recipe", "address": "DB1.DBB20", "type": "STRING[16]"},
            {"name": "status", "address": "DB1.DBW46", "type": "WORD"}]
    async with running(config(plc.port, tags=tags), tmp_path) as (src, got):
        await got.until("a Good sample", lambda b: b.quality.tolist() == [0])
        await got.until_text("recipe-0", lambda t: len(t) >= 1)
        polls = src.polls
        plc.tick()
        await got.until_text("recipe-1", lambda t: t[-1].value == "recipe-1")
        plc.tick()
        await got.until_text("recipe-2", lambda t: t[-1].value == "recipe-2")
        assert src.polls - polls >= 2
        at = src.polls
        await got.until("three more polls", lambda b: src.polls >= at + 3)
        # on change only, not once per poll
        assert [(t.value, t.quality, t.tag, t.source) for t in got.texts] == [
            (f"recipe-{k}", Quality.GOOD, "plc1/recipe", "plc1") for k in range(3)]
        plc.db[21] = 40  # current length 40 > its maximum 16: not a STRING
        await got.until_text("bad decode", lambda t: t[-1].quality == Quality.BAD_DECODE)
        assert "exceeds its maximum" in got.texts[-1].reason
        plc.tick()
        await got.until_text("good again", lambda t: t[-1].value == "recipe-3")
        plc.stop()
        await got.until_text("not connected",
                             lambda t: t[-1].quality == Quality.BAD_NOT_CONNECTED)
        assert got.texts[-1].value == "" and got.texts[-1].reason
        assert got.batches[-1].quality.tolist() == [Quality.BAD_NOT_CONNECTED]
