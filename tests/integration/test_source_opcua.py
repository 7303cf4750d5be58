"""OPC-UA client source against an independent server: node-opcua as a simulated PLC
(tests/node/opcua_server.js), over loopback."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from asyncua import Client
from structlog.testing import capture_logs

from edge.components import Command
from edge.errors import PermanentError
from edge.model import Quarantine

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from opcua_client_peers import (
    BAD_NC,
    GOOD,
    Collector,
    asyncua_loops,
    build,
    plc_config,
    running,
    until,
)
from peers import NodeOpcUaServer, free_port, start_node_opcua_server

from hw_sim.link import LinkProxy

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NodeOpcUaServer]:
    server = await start_node_opcua_server(tmp_path_factory.mktemp("plc"), extra=20)
    try:
        yield server
    finally:
        await server.kill()


async def test_subscription_delivers_changing_values_with_source_time_and_quality(
        plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """A subscription delivers every tag's changes, batched per publish, with the server's
    source timestamps and Good quality."""
    source, tags = build(plc_config(plc.endpoint), tmp_path)
    emit = Collector()
    counter = tags.id_of("plc/counter")
    async with running(source, emit):
        await until(lambda: len({v for _, v, _ in emit.of(counter)}) >= 10, 60,
                    "10 distinct counter values")
    rows = emit.of(counter)
    values = [v for _, v, _ in rows]
    assert all(q == GOOD for _, _, q in rows)
    assert values == sorted(values) and len(set(values)) == len(values)  # each change once
    ts = [t for t, _, _ in rows]
    assert ts == sorted(ts) and abs(ts[-1] - time.time_ns()) < 30e9  # the PLC's clock
    for name in ("temp", "flag"):
        rows_of = emit.of(tags.id_of(f"plc/{name}"))
        assert any(q == GOOD and not math.isnan(v) for _, v, q in rows_of)
    # one batch carries several tags: samples come per publish, not one emit per value
    assert max(len(b) for b in emit.batches) >= 2


async def test_polling_group_reads_at_its_interval(plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """A polling group reads every tag each interval, one batch per Read, Good and changing."""
    source, tags = build(plc_config(plc.endpoint, mode="poll"), tmp_path)
    emit = Collector()
    counter = tags.id_of("plc/counter")
    async with running(source, emit):
        await until(lambda: len(emit.batches) >= 6, 60, "6 polls")
    assert all(len(b) == 3 for b in emit.batches)
    values = [v for _, v, q in emit.of(counter) if q == GOOD]
    assert len(values) == len(emit.batches) and values[-1] > values[0]


async def test_polled_unknown_node_is_bad_with_one_log_line(
        plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """In a polling group a node the server does not have is Bad in every poll with one
    log line naming the server's status; the other tags are Good."""
    raw = plc_config(plc.endpoint, mode="poll")
    group = raw["groups"][0]  # type: ignore[index]
    group["tags"].append({"name": "ghost", "node_id": "ns=1;s=PLC.DoesNotExist"})
    source, tags = build(raw, tmp_path)
    emit = Collector()
    ghost, counter = tags.id_of("plc/ghost"), tags.id_of("plc/counter")
    with capture_logs() as logs:
        async with running(source, emit):
            await until(lambda: len(emit.of(ghost)) >= 3, 60, "three polls")
    assert all(q & 0x80 and math.isnan(v) for _, v, q in emit.of(ghost))
    assert all(q == GOOD for _, _, q in emit.of(counter))
    bad = [e for e in logs if e["event"] == "opcua tag bad"]
    assert len(bad) == 1 and bad[0]["status"] == "BadNodeIdUnknown"


async def test_unknown_node_is_bad_with_a_reason_for_that_tag_only(
        plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """A node id the server does not have makes that tag Bad with the server's reason in a
    Quarantine record and a log line; the other tags keep flowing Good."""
    raw = plc_config(plc.endpoint)
    group = raw["groups"][0]  # type: ignore[index]
    group["tags"].append({"name": "ghost", "node_id": "ns=1;s=PLC.DoesNotExist"})
    source, tags = build(raw, tmp_path)
    emit = Collector()
    ghost, counter = tags.id_of("plc/ghost"), tags.id_of("plc/counter")
    with capture_logs() as logs:
        async with running(source, emit):
            await until(lambda: emit.of(ghost) and len(emit.of(counter)) >= 3, 60,
                        "ghost Bad and counter values")
    assert all(q & 0x80 and math.isnan(v) for _, v, q in emit.of(ghost))
    assert all(q == GOOD for _, _, q in emit.of(counter))
    reasons = [r.reason for r in emit.records if isinstance(r, Quarantine)]
    assert reasons == ["node ns=1;s=PLC.DoesNotExist refused by the server: BadNodeIdUnknown"]
    assert any(e["event"] == "opcua tag refused" and e["status"] == "BadNodeIdUnknown"
               for e in logs)


# Two PLC starts (up to 90 s each on a loaded machine) and the bounded waits between them:
# a slow machine fails on the first wait that runs out, with its message, not on a timeout.
@pytest.mark.timeout(420)
async def test_server_restart_marks_tags_bad_then_data_flows_again(tmp_path: Path) -> None:
    """Killing the server marks every tag Bad within two keepalives; when it is back on the
    same port the source rebuilds session and subscription by itself and values flow
    again, and the log says how long data was missing."""
    server = await start_node_opcua_server(tmp_path / "srv")
    keepalive_s = 1.0
    source, tags = build(plc_config(server.endpoint, keepalive_s=keepalive_s), tmp_path)
    emit = Collector()
    counter = tags.id_of("plc/counter")
    try:
        with capture_logs() as logs:
            async with running(source, emit):
                await until(lambda: len(emit.of(counter)) >= 3, 60, "values before the kill")
                mark = len(emit.batches)
                killed = asyncio.get_running_loop().time()
                await server.kill()
                took = await until(
                    lambda: any(q == BAD_NC for _, _, q in emit.of(counter, mark)),
                    2 * keepalive_s + 3, "Bad after the kill")
                assert took <= 2 * keepalive_s + 1.0, took
                bad_at = len(emit.batches)
                # every tag of the source is Bad, with no Good value after it until restart
                last = emit.batches[-1]
                assert set(last.tag_id.tolist()) == set(source.tag_ids.tolist())
                assert (last.quality == BAD_NC).all() and np.isnan(last.value).all()
                server = await start_node_opcua_server(tmp_path / "srv", port=server.port)
                await until(lambda: any(q == GOOD for _, _, q in emit.of(counter, bad_at)), 60,
                            "Good values after the restart")
                back = asyncio.get_running_loop().time() - killed
        after = [v for _, v, q in emit.of(counter, bad_at) if q == GOOD]
        assert after  # the restarted PLC counts from 1 again: a fresh subscription
        flowing = [e for e in logs if e["event"] == "opcua data flowing again"]
        assert len(flowing) == 1 and 0 < flowing[0]["missing_s"] <= back + 1
        assert [e["event"] for e in logs].count("opcua data missing") == 1
        assert source.sessions == 2
        # no asyncua loop outlives its session (a lost one's publish loop retried every
        # second, its stale-subscription watchdog ran forever)
        await until(lambda: asyncua_loops() == 0, 10, "no asyncua loop left")
    finally:
        await server.kill()


async def test_subscription_dropped_by_the_server_is_rebuilt(
        plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """A subscription the server no longer has (deleted under the session: no more publish
    answers, not even keepalives) is declared lost within two keepalives, every tag goes
    Bad, and the source rebuilds session and subscription without being restarted."""
    keepalive_s = 1.0
    source, tags = build(plc_config(plc.endpoint, keepalive_s=keepalive_s), tmp_path)
    emit = Collector()
    counter = tags.id_of("plc/counter")
    with capture_logs() as logs:
        async with running(source, emit):
            await until(lambda: len(emit.of(counter)) >= 3, 60, "values first")
            mark = len(emit.batches)
            await source.subscriptions[0].delete()
            took = await until(lambda: any(q == BAD_NC for _, _, q in emit.of(counter, mark)),
                               2 * keepalive_s + 3, "Bad after the subscription was dropped")
            assert took <= 2 * keepalive_s + 1.0, took
            bad_at = len(emit.batches)
            await until(lambda: any(q == GOOD for _, _, q in emit.of(counter, bad_at)), 60,
                        "Good values from a new subscription")
    missing = [e for e in logs if e["event"] == "opcua data missing"]
    # asyncua's Publish after the delete answers BadNoSubscription (else: the keepalive rule)
    assert len(missing) == 1
    assert any(w in missing[0]["reason"] for w in ("BadNoSubscription", "keepalive"))
    assert source.sessions == 2


async def test_stop_command_writes_the_stop_bit(plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """A declared command writes its value to the PLC's node (the stop bit reads True
    afterwards); a write the server refuses is a PermanentError naming its status."""
    raw = plc_config(plc.endpoint, commands=[
        {"action": "stop", "node_id": "ns=1;s=PLC.Stop", "value": True},
        {"action": "bogus", "node_id": "ns=1;s=PLC.Counter", "value": 5, "type": "int32"},
    ])
    source, _ = build(raw, tmp_path)
    emit = Collector()
    async with running(source, emit):
        await until(lambda: source.client is not None, 60, "a session")
        await source.write(Command("plc", "stop", reason="test"))
        with pytest.raises(PermanentError, match=r"BadNotWritable|BadUserAccessDenied"):
            await source.write(Command("plc", "bogus"))
    async with Client(plc.endpoint) as reader:
        assert await reader.get_node("ns=1;s=PLC.Stop").read_value() is True


async def test_stop_command_calls_the_plcs_method_with_typed_arguments(
        plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """A declared command calls a method on the PLC with its arguments typed by the
    method (a config number reaches an Int16 argument): the stop bit reads True
    afterwards. A call the server refuses, or arguments the method does not take, is a
    PermanentError naming why."""
    halt = {"method": "ns=1;s=PLC.Halt"}  # on the object it belongs to: PLC
    raw = plc_config(plc.endpoint, commands=[
        {"action": "halt", **halt, "arguments": ["interlock", 7]},
        {"action": "refused", **halt, "arguments": ["interlock", -1]},
        {"action": "short", **halt, "arguments": ["interlock"]},
        {"action": "typed", **halt, "arguments": [3, 7]},
    ])
    async with Client(plc.endpoint) as writer:  # start from a running PLC
        await writer.get_node("ns=1;s=PLC.Stop").write_value(False)
    source, _ = build(raw, tmp_path)
    emit = Collector()
    async with running(source, emit):
        await until(lambda: source.client is not None, 60, "a session")
        with capture_logs() as logs:
            await source.write(Command("plc", "halt", reason="test"))
        (called,) = [e for e in logs if e["event"] == "opcua method called"]
        assert called["result"] == [7] and called["arguments"] == ["interlock", 7]
        with pytest.raises(PermanentError, match="BadInvalidArgument"):
            await source.write(Command("plc", "refused"))
        with pytest.raises(PermanentError, match="takes 2 arguments, the command gives 1"):
            await source.write(Command("plc", "short"))
        with pytest.raises(PermanentError, match="argument 1 must be text for a String"):
            await source.write(Command("plc", "typed"))
    async with Client(plc.endpoint) as reader:
        assert await reader.get_node("ns=1;s=PLC.Stop").read_value() is True


async def test_network_black_hole_marks_tags_bad_then_data_flows_again(
        plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """A link that goes silent (the hw_sim proxy swallows every byte, no connection
    closes) is noticed within two keepalives: every tag Bad; when the link passes again
    the source reconnects by itself and values are Good again."""
    proxy = LinkProxy(free_port(), "127.0.0.1", plc.port)
    await proxy.start()
    keepalive_s = 1.0
    raw = plc_config(f"opc.tcp://127.0.0.1:{proxy.listen_port}", keepalive_s=keepalive_s,
                     timeout_s=1.0)
    source, tags = build(raw, tmp_path)
    emit = Collector()
    counter = tags.id_of("plc/counter")
    try:
        async with running(source, emit):
            await until(lambda: len(emit.of(counter)) >= 3, 60, "values before the cut")
            mark = len(emit.batches)
            await proxy.set_mode("blackhole")
            took = await until(lambda: any(q == BAD_NC for _, _, q in emit.of(counter, mark)),
                               2 * keepalive_s + 3, "Bad after the black hole")
            assert took <= 2 * keepalive_s + 1.0, took
            await until(lambda: not source.link.state.up and bool(source.link.state.last_error),
                        5, "the link board shows the link down with its reason")
            bad_at = len(emit.batches)
            await proxy.set_mode("pass")
            await until(lambda: any(q == GOOD for _, _, q in emit.of(counter, bad_at)), 60,
                        "Good values after the link is back")
            assert source.link.state.up
    finally:
        await proxy.close()


async def test_sign_and_encrypt_with_a_password_and_a_clear_error_for_a_wrong_one(
        tmp_path: Path) -> None:
    """With Basic256Sha256 SignAndEncrypt and a user whose password comes from a secret the
    source reads the PLC; a wrong password keeps every tag Bad and the link's error says
    the server refused the user, naming the policy."""
    server = await start_node_opcua_server(tmp_path / "srv", user="op", password="s3cret")
    secure = {"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt",
              "user": "op", "password_secret": "PLC_PW", "timeout_s": 10.0}
    try:
        wrong, tags = build(plc_config(server.endpoint, **secure), tmp_path / "a",
                            {"PLC_PW": "guess"})
        emit = Collector()
        counter = tags.id_of("plc/counter")
        async with running(wrong, emit):
            await until(lambda: bool(wrong.link.state.last_error), 60, "a refused login")
        error = wrong.link.state.last_error
        assert "BadUserAccessDenied" in error and "Basic256Sha256/SignAndEncrypt" in error
        assert "guess" not in error
        assert emit.of(counter) and all(q == BAD_NC for _, _, q in emit.of(counter))

        right, tags = build(plc_config(server.endpoint, **secure), tmp_path / "b",
                            {"PLC_PW": "s3cret"})
        emit = Collector()
        async with running(right, emit):
            await until(lambda: any(q == GOOD for _, _, q in emit.of(counter)), 90,
                        "Good values over SignAndEncrypt")
        assert (tmp_path / "b" / "opcua-client" / "plc" / "cert.der").is_file()
    finally:
        await server.kill()


async def test_a_refused_certificate_is_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    """A server that does not trust our certificate, and a pinned server certificate that
    is not the server's: the source keeps running (tags Bad, reconnecting), and its link
    error names the security, our certificate's path and SHA-1 thumbprint, and the pinned
    certificate. (asyncua raised an AssertionError there, which ended the source.)"""
    server = await start_node_opcua_server(tmp_path / "srv", reject_unknown_certificates=True)
    other = tmp_path / "other"
    other.mkdir()
    pinned, _ = await Client("opc.tcp://127.0.0.1:1").setup_self_signed_certificate(
        other / "key.pem", other / "cert.der")
    secure = {"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt",
              "timeout_s": 5.0}
    try:
        for name, over in (("untrusted", {}), ("pinned", {"server_certificate": str(pinned)})):
            source, tags = build(plc_config(server.endpoint, **secure, **over), tmp_path / name)
            emit = Collector()
            async with running(source, emit):
                await until(lambda s=source: s.link.state.attempt >= 2, 90,  # type: ignore[misc]
                            "two refused attempts")
                error = source.link.state.last_error
                assert "Basic256Sha256/SignAndEncrypt" in error, error
                cert = tmp_path / name / "opcua-client" / "plc" / "cert.der"
                assert f"is our certificate {cert} (SHA-1 " in error, error
                assert ("server_certificate" in error) == (name == "pinned"), error
                counter = tags.id_of("plc/counter")
                assert all(q == BAD_NC for _, _, q in emit.of(counter))
    finally:
        await server.kill()


async def test_backfill_fills_a_cut_links_gap_exactly_once(
        plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """While the link is black-holed the PLC keeps historizing its counter; after the
    reconnect the source reads the gap from HistoryRead before any live value, so the
    counter's Good values are every integer once, in order; a tag without history is
    logged once as not backfillable and flows live again."""
    proxy = LinkProxy(free_port(), "127.0.0.1", plc.port)
    await proxy.start()
    raw = plc_config(f"opc.tcp://127.0.0.1:{proxy.listen_port}", keepalive_s=1.0,
                     timeout_s=1.0)
    group = raw["groups"][0]  # type: ignore[index]
    for tag in group["tags"]:
        tag.update(sampling_interval_ms=0, queue_size=100)  # live: every change too
    source, tags = build(raw, tmp_path)
    emit = Collector()
    counter, flag = tags.id_of("plc/counter"), tags.id_of("plc/flag")
    try:
        with capture_logs() as logs:
            async with running(source, emit):
                await until(lambda: len(emit.of(counter)) >= 5, 60, "values before the cut")
                mark = len(emit.batches)
                # a first connect that timed out on a loaded machine is an outage too
                assert source.link.state.source is not None
                outages = source.link.state.source.outages
                await proxy.set_mode("blackhole")
                await until(lambda: any(q == BAD_NC for _, _, q in emit.of(counter, mark)),
                            10, "Bad after the cut")
                bad_at = len(emit.batches)
                down = source.link.state.source  # what `status` shows meanwhile
                assert not down.link_up and down.outages == outages + 1
                assert "keepalive" in down.bad_reason or "lost" in down.bad_reason
                last_before = max(v for _, v, q in emit.of(counter) if q == GOOD)
                lost_ns = emit.of(counter, mark)[-1][0]
                # the PLC keeps counting and historizing: let the gap grow to 2 s
                await until(lambda: time.time_ns() - lost_ns > 2e9, 10, "a gap of 2 s")
                await proxy.set_mode("pass")
                await until(lambda: len([v for _, v, q in emit.of(counter, bad_at)
                                         if q == GOOD]) >= 40, 60, "gap and live values")
    finally:
        await proxy.close()
    good = [v for _, v, q in emit.of(counter) if q == GOOD]
    assert good == list(range(int(good[0]), int(good[0]) + len(good))), good
    after = [v for _, v, q in emit.of(counter, bad_at) if q == GOOD]
    assert after[0] == last_before + 1  # the first value after the cut came from history
    filled = [e for e in logs if e["event"] == "opcua backfill"]
    assert len(filled) == 1 and filled[0]["values"] >= 15 and filled[0]["tags"] == 2
    unavailable = [e for e in logs if e["event"] == "opcua backfill unavailable"]
    assert len(unavailable) == 1 and unavailable[0]["nodes"] == ["ns=1;s=PLC.Flag"]
    assert unavailable[0]["reason"] == "no HistoryRead access"
    assert any(q == GOOD for _, _, q in emit.of(flag, bad_at))
    # the status document's part for this source: outage length and backfill outcome
    st = source.link.state.source
    flowing = [e for e in logs if e["event"] == "opcua data flowing again"]
    assert st is not None and st.link_up and st.bad_reason == ""
    assert st.outages == outages + 1
    assert st.last_outage_s == pytest.approx(flowing[-1]["missing_s"], abs=0.01)
    assert (st.backfill, st.backfilled_values, st.unfilled_tags) == (
        "partial", filled[0]["values"], 1)
    # each backfill batch carries the journal checkpoint that marks it; the last one has
    # the totals
    marks = [(i, json.loads(v)) for i, k, v in emit.checkpoints if k == "opcua_backfill:plc"]
    assert marks and marks[-1][1]["values"] == filled[0]["values"]
    assert sum(len(emit.batches[i]) for i, _ in marks) == filled[0]["values"]
