"""OPC-UA server pieces without sockets: bulk insertion, coalescing, passwords."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from asyncua import Server, ua

from edge.components import BuildContext
from edge.config import loads
from edge.errors import ConfigError
from edge.model import SampleBatch, TagRegistry
from edge.protocols.opcua.security import (
    HashedUserManager,
    PasswordHash,
    hash_password,
    parse_users,
)
from edge.protocols.opcua.variants import DTYPES
from edge.runtime.metrics import Metrics
from edge.sinks import opcua_standard
from edge.sinks.opcua import OpcUaConfig, OpcUaSink
from edge.sinks.opcua_insert import insert_nodes
from edge.sinks.opcua_space import object_item, tag_items


def registry() -> TagRegistry:
    reg = TagRegistry()
    for i, dtype in enumerate(DTYPES):
        reg.add("dev1" if i % 2 else "dev2", f"t{i}", unit="degC", dtype=dtype,
                low=None if i % 3 else -1.0, high=None if i % 3 else 1.0)
    return reg


async def _space(bulk: bool) -> dict[str, object]:
    server = Server()
    await server.init()
    idx = await server.register_namespace("urn:t")
    root = ua.NodeId("_devices", idx)
    items = [object_item(root, "Devices", server.nodes.objects.nodeid, idx, folder=True)]
    items += tag_items(registry(), idx, root)
    if bulk:
        await insert_nodes(server.iserver.aspace, items, chunk=3)
    else:
        assert all(r.StatusCode.is_good()
                   for r in await server.iserver.isession.add_nodes(items))
    return _snapshot(server, [*(i.RequestedNewNodeId for i in items),
                              server.nodes.objects.nodeid])


def _snapshot(server: Server, nodeids: Iterable[ua.NodeId]) -> dict[str, object]:
    """Attribute values and references of the nodes, comparable between servers."""
    aspace = server.iserver.aspace
    out: dict[str, object] = {}
    for nid in nodeids:
        node = aspace[nid]
        attrs = {int(k): (v.value.Value if v.value is not None else None)
                 for k, v in node.attributes.items()}
        refs = sorted(
            (r.ReferenceTypeId.to_string(), r.NodeId.to_string(), r.IsForward, int(r.NodeClass),
             r.BrowseName.to_string(), r.DisplayName.Text, r.TypeDefinition.to_string())
            for r in node.references
        )
        out[nid.to_string()] = (attrs, refs)
    return out


async def test_bulk_insert_builds_what_add_nodes_builds() -> None:
    """insert_nodes yields the same attributes and references as asyncua's add_nodes."""
    assert await _space(bulk=True) == await _space(bulk=False)


async def test_bulk_insert_refuses_existing_node() -> None:
    """Inserting a node id twice fails with the node named, not silently."""
    server = Server()
    await server.init()
    item = object_item(ua.NodeId("x", 1), "x", server.nodes.objects.nodeid, 1)
    await insert_nodes(server.iserver.aspace, [item])
    with pytest.raises(ValueError, match="already exists"):
        await insert_nodes(server.iserver.aspace, [item])


# Values init() stamps with the time it ran (the server status and build date).
_STAMPED = {ua.NodeId(i).to_string() for i in (
    ua.ObjectIds.Server_ServerStatus, ua.ObjectIds.Server_ServerStatus_BuildInfo,
    ua.ObjectIds.Server_ServerStatus_BuildInfo_BuildDate)}


async def _standard_space(server: Server) -> dict[str, object]:
    await server.init()
    space = _snapshot(server, server.iserver.aspace.keys())
    return {k: v for k, v in space.items() if k not in _STAMPED}


async def test_cached_standard_space_is_the_one_asyncua_builds(tmp_path: Path) -> None:
    """A server that loads the cached standard address space has every node, attribute and
    reference a server that builds it has; the second start reads the file, never rewrites it."""
    built = await _standard_space(Server())
    assert await _standard_space(opcua_standard.server(tmp_path)) == built
    path = opcua_standard.cache_path(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    written = path.stat().st_mtime_ns
    assert await _standard_space(opcua_standard.server(tmp_path)) == built
    assert path.stat().st_mtime_ns == written
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


async def test_torn_or_foreign_standard_space_cache_is_rebuilt(tmp_path: Path) -> None:
    """A torn cache file, or one that others may write, is not used: the space is built and
    the file written again (owner-only); an older asyncua's file is removed."""
    built = await _standard_space(Server())
    path = opcua_standard.cache_path(tmp_path)
    old = tmp_path / f"{opcua_standard.PREFIX}asyncua0.9-py3.9.pickle"
    old.write_bytes(b"old")
    path.write_bytes(b"\x80\x05torn")
    assert await _standard_space(opcua_standard.server(tmp_path)) == built
    assert path.stat().st_size > 100_000 and not old.exists()
    os.chmod(path, 0o666)
    written = path.stat().st_mtime_ns
    assert await _standard_space(opcua_standard.server(tmp_path)) == built
    assert path.stat().st_mtime_ns != written and path.stat().st_mode & 0o777 == 0o600


def test_publish_keeps_latest_value_per_tag(tmp_path: Path) -> None:
    """publish coalesces to the last sample per tag and ignores unknown tag ids."""
    ctx = BuildContext("gw", registry(), Metrics(), tmp_path, lambda n: "")
    sink = OpcUaConfig(threaded=False).build(ctx)
    assert isinstance(sink, OpcUaSink)
    sink.publish(SampleBatch([0, 1, 0, 99, -1, 1], [1, 2, 3, 4, 5, 6],
                             [1.0, 2.0, 3.0, 4.0, 5.0, np.nan], [0, 0, 0x42, 0, 0, 0x81]), [])
    tags = sink._tags
    assert tags._dirty.tolist()[:3] == [True, True, False]
    assert tags._value[0] == 3.0 and tags._quality[0] == 0x42 and tags._ts[0] == 3
    assert np.isnan(tags._value[1]) and tags._quality[1] == 0x81


def test_password_hashes_and_user_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt and PBKDF2 hashes verify; the manager refuses wrong passwords, unknown
    users and 'admin', and remembers a verified password so a re-login is fast."""
    users = parse_users(
        f"# comment\nop:{hash_password('s3cret')}\n"
        f"eng:{hash_password('pw2', scheme='pbkdf2_sha256')}\n", "users")
    mgr = HashedUserManager(users, None, fail_interval_s=0.0)
    assert mgr.get_user(None, "op", "s3cret") is not None
    derived: list[str] = []
    real = PasswordHash.derive
    monkeypatch.setattr(PasswordHash, "derive",
                        lambda self, pw: derived.append(pw) or real(self, pw))
    assert mgr.get_user(None, "op", "s3cret") is not None
    assert derived == []  # served from the login cache: no second hash
    monkeypatch.undo()
    assert mgr.get_user(None, "eng", "pw2") is not None
    assert mgr.get_user(None, "op", "wrong") is None
    assert mgr.get_user(None, "admin", "s3cret") is None
    assert mgr.get_user(None, None, None) is None
    with pytest.raises(ValueError, match=r"malformed|must be"):
        PasswordHash.parse("md5$abc")


def test_failed_logins_are_rate_limited() -> None:
    """Within the fail interval a further login is refused without hashing."""
    users = parse_users(f"op:{hash_password('s3cret', scheme='pbkdf2_sha256')}", "users")
    mgr = HashedUserManager(users, None, fail_interval_s=60.0)
    assert mgr.get_user(None, "op", "wrong") is None
    assert mgr.get_user(None, "op", "s3cret") is None


def test_config_errors_name_the_key() -> None:
    """Bad OPC-UA sink settings are config errors that name the sink and the key."""
    head = '[[sinks]]\ntype = "opcua"\n'
    with pytest.raises(ConfigError, match="sink 'opcua': endpoint must look like"):
        loads(head + 'name = "opcua"\nendpoint = "http://x"\n')
    with pytest.raises(ConfigError, match="sink #1: users must be given"):
        loads(head + 'profile = "production"\n')
    with pytest.raises(ConfigError, match="password_hash"):
        loads(head + 'profile = "production"\nusers = [{name = "a", password_hash = "x"}]\n')
    (cfg,) = loads(head + 'endpoint = "opc.tcp://127.0.0.1:4841/edge"\n').sinks
    assert isinstance(cfg, OpcUaConfig) and cfg.profile == "demo" and cfg.name == "opcua"


def test_old_opcua_section_says_how_to_move_it() -> None:
    """A top-level [opcua] (the old form) is refused with the exact edit to make."""
    with pytest.raises(ConfigError) as err:
        loads('[opcua]\nendpoint = "opc.tcp://127.0.0.1:4841/edge"\n')
    assert "replace the line '[opcua]' with '[[sinks]]'" in str(err.value)
    assert 'type = "opcua"' in str(err.value)


def test_two_opcua_sinks_need_names() -> None:
    """Two OPC-UA sinks left at the default name are refused, not merged."""
    with pytest.raises(ConfigError, match="sink 'opcua': name is used twice"):
        loads('[[sinks]]\ntype = "opcua"\n[[sinks]]\ntype = "opcua"\n'
              'endpoint = "opc.tcp://127.0.0.1:4842/edge"\n')


def test_tags_declared_after_the_sink_was_built_are_served(tmp_path: Path) -> None:
    """The gateway declares its per-sink tags once every sink is built: the OPC-UA sink
    takes values for them too, and keeps what was published before."""
    tags = TagRegistry()
    tags.add("etch1", "chamber_temp")
    ctx = BuildContext(gateway_id="gw", tags=tags, metrics=Metrics(), state_dir=tmp_path,
                       secrets=lambda name: "")
    sink = OpcUaConfig(threaded=False).build(ctx)
    assert isinstance(sink, OpcUaSink)
    sink.publish(SampleBatch(np.array([0, 1], np.int32), np.array([5, 5]),
                             np.array([1.5, 2.5])), [])
    late = tags.add("gateway", "journal_depth_mes", dtype="int32").id
    sink._tags.fit()
    sink.publish(SampleBatch(np.array([late], np.int32), np.array([6]), np.array([7.0])), [])
    w = sink._tags
    assert w._value.tolist() == [1.5, 7.0] and w._dirty.tolist() == [True, True]
    assert w._kind.tolist()[late] == 1  # an integer node
