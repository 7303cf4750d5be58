"""OPC-UA client source with values that are not plain numbers, against the node-opcua
simulated PLC: strings and enumerations as TextValue records, an array refused with a
reason, a node whose type changes at run time."""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua
from structlog.testing import capture_logs

from edge.model import Quality, Quarantine, TextValue

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from opcua_client_peers import GOOD, Collector, build, plc_config, running, until
from peers import NodeOpcUaServer, start_node_opcua_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

BAD_DECODE = int(Quality.BAD_DECODE)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NodeOpcUaServer]:
    server = await start_node_opcua_server(tmp_path_factory.mktemp("plc"))
    try:
        yield server
    finally:
        await server.kill()


def with_tags(endpoint: str, *tags: dict[str, object], mode: str = "subscribe"
              ) -> dict[str, object]:
    raw = plc_config(endpoint, mode=mode)
    raw["groups"][0]["tags"].extend(tags)  # type: ignore[index]
    return raw


def texts(emit: Collector, tag: str) -> list[TextValue]:
    return [r for r in emit.records if isinstance(r, TextValue) and r.tag == tag]


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
async def test_strings_and_enumerations_are_text_records_on_change(
        plc: NodeOpcUaServer, tmp_path: Path, mode: str) -> None:
    """A String node and an enumeration node configured as text tags arrive as TextValue
    records, one per change (never the same text twice in a row), the enumeration by its
    names, in a subscription and in a polling group alike; no sample tag is declared for
    them."""
    source, tags = build(with_tags(
        plc.endpoint, {"name": "batch", "node_id": "ns=1;s=PLC.Text", "type": "text"},
        {"name": "mode", "node_id": "ns=1;s=PLC.Mode", "type": "text"}, mode=mode), tmp_path)
    emit = Collector()
    async with running(source, emit):
        await until(lambda: len(texts(emit, "plc/mode")) >= 3
                    and len(texts(emit, "plc/batch")) >= 3, 90, "three changes of each")
    for name in ("plc/batch", "plc/mode"):
        values = [t.value for t in texts(emit, name)]
        assert all(a != b for a, b in itertools.pairwise(values)), values
        assert all(t.quality == GOOD and t.source == "plc" for t in texts(emit, name))
    assert all(v.startswith("batch-") for v in (t.value for t in texts(emit, "plc/batch")))
    assert {t.value for t in texts(emit, "plc/mode")} <= {"Idle", "Running", "Stopped"}
    assert "plc/batch" not in tags and "plc/mode" not in tags


async def test_a_polled_text_tag_on_an_unknown_node_is_bad_once_with_the_reason(
        plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """In a polling group, a text tag whose node the server does not have gives one Bad
    TextValue and one log line naming the server's status, however many Reads follow;
    the group's other tags keep flowing."""
    source, tags = build(with_tags(
        plc.endpoint, {"name": "ghost", "node_id": "ns=1;s=PLC.NoText", "type": "text"},
        {"name": "batch", "node_id": "ns=1;s=PLC.Text", "type": "text"}, mode="poll"),
        tmp_path)
    emit = Collector()
    counter = tags.id_of("plc/counter")
    with capture_logs() as logs:
        async with running(source, emit):
            await until(lambda: len(emit.batches) >= 8 and texts(emit, "plc/batch"), 60,
                        "eight polls")
    ghost = texts(emit, "plc/ghost")
    assert len(ghost) == 1 and ghost[0].quality & 0x80 and ghost[0].reason
    assert [t.quality for t in texts(emit, "plc/batch")] == [GOOD] * len(texts(emit, "plc/batch"))
    assert all(q == GOOD for _, _, q in emit.of(counter))
    bad = [e for e in logs if e["event"] == "opcua tag bad"]
    assert [(e["node_id"], e["status"]) for e in bad] == [("ns=1;s=PLC.NoText",
                                                           "BadNodeIdUnknown")]


async def test_an_array_node_is_refused_with_a_reason_at_its_first_value(
        plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """A numeric tag on an array node is Bad (bad_decode, NaN) with one Quarantine record
    and one log line naming the node, what it delivered and that arrays are not read (what
    to do instead), however many values come; the other tags flow."""
    source, tags = build(with_tags(
        plc.endpoint, {"name": "arr", "node_id": "ns=1;s=PLC.Array"}), tmp_path)
    emit = Collector()
    arr, counter = tags.id_of("plc/arr"), tags.id_of("plc/counter")
    with capture_logs() as logs:
        async with running(source, emit):
            await until(lambda: len(emit.of(arr)) >= 5, 60, "five array values")
    assert all(q == BAD_DECODE and math.isnan(v) for _, v, q in emit.of(arr))
    assert any(q == GOOD for _, _, q in emit.of(counter))
    quarantines = [r for r in emit.records if isinstance(r, Quarantine)]
    assert len(quarantines) == 1
    assert quarantines[0].reason == (
        "node ns=1;s=PLC.Array delivered Double[4] where the tag expects float64: value set "
        "Bad (bad_decode); arrays are not read: a tag takes one scalar node (give each "
        "element a node of its own in the PLC)")
    lines = [e for e in logs if e["event"] == "opcua tag type mismatch"]
    assert len(lines) == 1 and lines[0]["delivered"] == "Double[4]"
    assert lines[0]["hint"].startswith("arrays are not read")


async def test_a_type_change_at_run_time_is_a_quarantine_not_a_restart(
        plc: NodeOpcUaServer, tmp_path: Path) -> None:
    """When a numeric node starts delivering strings, its values go Bad with one
    Quarantine record and one log line, the session is kept (no reconnect, no restart);
    when it delivers numbers again they are Good and one line says so."""
    source, tags = build(with_tags(
        plc.endpoint, {"name": "morph", "node_id": "ns=1;s=PLC.Morph"}), tmp_path)
    emit = Collector()
    morph = tags.id_of("plc/morph")

    async def toggle() -> None:
        async with Client(plc.endpoint, timeout=30) as admin:
            obj = await admin.nodes.objects.get_child(["1:PLC"])
            await obj.call_method(ua.NodeId.from_string("ns=1;s=PLC.ToggleMorph"))

    with capture_logs() as logs:
        async with running(source, emit):
            await until(lambda: any(q == GOOD for _, _, q in emit.of(morph)), 60, "numbers")
            await toggle()
            await until(lambda: any(q == BAD_DECODE for _, _, q in emit.of(morph)), 60,
                        "Bad values once it delivers strings")
            mark = len(emit.batches)
            await until(lambda: len(emit.of(morph, mark)) >= 3, 60, "more strings")
            await toggle()
            await until(lambda: emit.of(morph)[-1][2] == GOOD, 60, "numbers again")
    quarantines = [r for r in emit.records if isinstance(r, Quarantine)]
    assert [q.reason for q in quarantines] == [
        "node ns=1;s=PLC.Morph delivered String where the tag expects float64: value set "
        "Bad (bad_decode)"]
    events = [e["event"] for e in logs]
    assert events.count("opcua tag type mismatch") == 1
    assert events.count("opcua tag type restored") == 1
    assert "opcua data missing" not in events and source.sessions == 1
