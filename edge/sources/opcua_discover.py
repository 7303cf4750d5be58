"""``edge-gateway discover opc.tcp://host:port``: browse a server, print a ``[[sources]]``.

What an engineer gets: the server's endpoints (security policy, mode, login kinds) as
comments, then a complete OPC-UA source (one subscription group) with one tag per
readable variable below ``Objects``: our data type from the node's DataType (walking up
its supertypes, so ``Duration`` is a float64 and an enumeration is a text tag), the unit
from ``EngineeringUnits``, ``low``/``high`` from ``EURange``, and the browse path as the
tag's description. Nodes the source cannot read (arrays, structures, DateTime,
``BaseDataType`` whose type may change, nodes without read access) are listed as
comments with the reason, so nothing is silently left out.

Invariants:

* The config printed from it (``edge.sources.opcua_discover_output``) is one
  ``check-config`` accepts as it is, node ids as the server gave them.
* Discovery only reads (Browse, Read, GetEndpoints); it never writes to the server.
* Bounded: at most ``max_nodes`` nodes browsed and ``max_tags`` tags written; when a limit
  stops the walk the output says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asyncua import Client, ua

from edge.sources.opcua_connect import LIB_ERRORS, POLICIES

NS0 = 0
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_HAS_SUBTYPE = ua.NodeId(ua.ObjectIds.HasSubtype)
_HIERARCHICAL = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
_CHUNK = 200  # nodes per Browse or Read request

# Built-in data types (and the abstract ones that end a supertype walk) -> our type;
# None: the source cannot read it (with the reason).
_BUILTIN: dict[int, str | None] = {
    ua.ObjectIds.Boolean: "bool", ua.ObjectIds.SByte: "int16", ua.ObjectIds.Byte: "uint16",
    ua.ObjectIds.Int16: "int16", ua.ObjectIds.UInt16: "uint16", ua.ObjectIds.Int32: "int32",
    ua.ObjectIds.UInt32: "uint32", ua.ObjectIds.Int64: "int64",
    ua.ObjectIds.UInt64: "float64", ua.ObjectIds.Float: "float32",
    ua.ObjectIds.Double: "float64", ua.ObjectIds.String: "text",
    ua.ObjectIds.LocalizedText: "text", ua.ObjectIds.Enumeration: "text",
}
_UNREADABLE: dict[int, str] = {
    ua.ObjectIds.BaseDataType: "BaseDataType: its type may change at run time",
    ua.ObjectIds.Structure: "a structure",
    ua.ObjectIds.DateTime: "a DateTime",
    ua.ObjectIds.ByteString: "a ByteString",
    ua.ObjectIds.Guid: "a Guid",
    ua.ObjectIds.NodeId: "a NodeId",
    ua.ObjectIds.Number: "an abstract Number (its concrete type may change)",
}
_ATTRS = (ua.AttributeIds.DataType, ua.AttributeIds.ValueRank, ua.AttributeIds.AccessLevel,
          ua.AttributeIds.Historizing)


class DiscoveryError(Exception):
    """The server could not be browsed; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    policy: str  # "None", "Basic256Sha256", ...
    mode: str  # "None", "Sign", "SignAndEncrypt"
    logins: tuple[str, ...]  # "anonymous", "username", "certificate"


@dataclass(slots=True)
class Tag:
    path: str  # browse path below Objects, "PLC/Temp"
    node_id: str
    type: str = ""  # our type; "" when skipped
    unit: str = ""
    low: float | None = None
    high: float | None = None
    history: bool = False
    skipped: str = ""  # why the source cannot read it


@dataclass(slots=True)
class Discovery:
    endpoint: str
    endpoints: list[Endpoint] = field(default_factory=list)
    security: tuple[str, str] = ("None", "None")  # what the browse used, and the snippet
    tags: list[Tag] = field(default_factory=list)
    truncated: str = ""  # which limit stopped the walk


async def discover(endpoint: str, *, user: str = "", password: str = "",
                   timeout_s: float = 10.0, max_tags: int = 1000,
                   max_nodes: int = 20_000) -> Discovery:
    """Browse ``endpoint``; raises ``DiscoveryError`` with the reason when it cannot."""
    found = Discovery(endpoint)
    probe = Client(endpoint, timeout=timeout_s)
    try:
        descs = await asyncio.wait_for(probe.connect_and_get_server_endpoints(), timeout_s * 2)
    except LIB_ERRORS as exc:
        raise DiscoveryError(f"cannot reach {endpoint}: {_describe(exc)}") from exc
    found.endpoints = _endpoints(descs)
    found.security = _choose(found.endpoints)
    with tempfile.TemporaryDirectory(prefix="edge-discover-") as pki:
        client = await _client(endpoint, found.security, Path(pki), user, password, timeout_s)
        try:
            await asyncio.wait_for(client.connect(), timeout_s * 2)
        except LIB_ERRORS as exc:
            policy, mode = found.security
            raise DiscoveryError(
                f"{endpoint} refused a session (security {policy}/{mode}"
                f"{', user ' + user if user else ', anonymous'}): {_describe(exc)}") from exc
        try:
            await _walk(client, found, max_tags, max_nodes)
        except LIB_ERRORS as exc:
            raise DiscoveryError(f"browsing {endpoint} failed: {_describe(exc)}") from exc
        finally:
            with contextlib.suppress(*LIB_ERRORS):
                await asyncio.wait_for(client.disconnect(), timeout_s)  # answer complete
    return found


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ua.UaStatusCodeError):
        return str(ua.StatusCode(exc.code).name)
    return str(exc) or type(exc).__name__


def _endpoints(descs: Sequence[ua.EndpointDescription]) -> list[Endpoint]:
    logins = {ua.UserTokenType.Anonymous: "anonymous", ua.UserTokenType.UserName: "username",
              ua.UserTokenType.Certificate: "certificate"}
    out = []
    for d in descs:
        policy = d.SecurityPolicyUri.rsplit("#", 1)[-1] or "None"
        kinds = tuple(sorted({logins.get(t.TokenType, t.TokenType.name.lower())
                              for t in d.UserIdentityTokens or []}))
        out.append(Endpoint(policy, d.SecurityMode.name.rstrip("_"), kinds))  # None_
    return out


def _choose(endpoints: Sequence[Endpoint]) -> tuple[str, str]:
    """None/None when offered (a browse needs no secrets); else the strongest we speak."""
    if any(e.policy == "None" for e in endpoints):
        return ("None", "None")
    order = {"SignAndEncrypt": 2, "Sign": 1}
    ours = [e for e in endpoints if e.policy in POLICIES and e.mode in order]
    if not ours:
        offered = ", ".join(f"{e.policy}/{e.mode}" for e in endpoints) or "none"
        raise DiscoveryError(f"no security policy we speak is offered ({offered})")
    best = max(ours, key=lambda e: (order[e.mode], list(POLICIES).index(e.policy)))
    return (best.policy, best.mode)


async def _client(endpoint: str, security: tuple[str, str], pki: Path, user: str,
                  password: str, timeout_s: float) -> Client:
    client = Client(endpoint, timeout=timeout_s)
    client.name = client.description = "edge-gateway discover"
    if user:
        client.set_user(user)
        client.set_password(password)
    policy, mode = security
    if policy != "None":
        cert, key = await client.setup_self_signed_certificate(pki / "key.pem", pki / "cert.der")
        await client.set_security(POLICIES[policy], str(cert), str(key),
                                  mode=getattr(ua.MessageSecurityMode, mode))
    return client


async def _browse(client: Client, nodes: Sequence[ua.NodeId], ref: ua.NodeId,
                  direction: ua.BrowseDirection) -> list[list[ua.ReferenceDescription]]:
    """The references of each node, every continuation point followed."""
    out: list[list[ua.ReferenceDescription]] = []
    for i in range(0, len(nodes), _CHUNK):
        params = ua.BrowseParameters()
        params.RequestedMaxReferencesPerNode = 0
        for nid in nodes[i:i + _CHUNK]:
            desc = ua.BrowseDescription()
            desc.NodeId = nid
            desc.BrowseDirection = direction
            desc.ReferenceTypeId = ref
            desc.IncludeSubtypes = True
            desc.ResultMask = ua.BrowseResultMask.All
            params.NodesToBrowse.append(desc)
        for result in await client.uaclient.browse(params):
            refs = list(result.References or [])
            cp = result.ContinuationPoint
            while cp:
                nxt = ua.BrowseNextParameters()
                nxt.ContinuationPoints = [cp]
                more = (await client.uaclient.browse_next(nxt))[0]
                refs.extend(more.References or [])
                cp = more.ContinuationPoint
            out.append(refs)
    return out


async def _read(client: Client, pairs: Sequence[tuple[ua.NodeId, int]]) -> list[ua.DataValue]:
    out: list[ua.DataValue] = []
    for i in range(0, len(pairs), _CHUNK):
        params = ua.ReadParameters()
        for nid, attr in pairs[i:i + _CHUNK]:
            rv = ua.ReadValueId()
            rv.NodeId = nid
            rv.AttributeId = attr
            params.NodesToRead.append(rv)
        out.extend(await client.uaclient.read(params))
    return out


async def _walk(client: Client, found: Discovery, max_tags: int, max_nodes: int) -> None:
    """Breadth first from Objects: objects and variables are browsed, a variable in a
    server namespace (not ns=0) is a tag, its properties give the unit and the range."""
    level: list[tuple[ua.NodeId, str]] = [(ua.NodeId(ua.ObjectIds.ObjectsFolder), "")]
    props: dict[int, dict[str, ua.NodeId]] = {}  # tag index -> property name -> node
    seen: set[ua.NodeId] = {level[0][0]}
    index_of: dict[str, int] = {}  # browse path -> index of its tag
    browsed = 0
    while level and not found.truncated:
        refs_of = await _browse(client, [n for n, _ in level], _HIERARCHICAL,
                                ua.BrowseDirection.Forward)
        browsed += len(level)
        nxt: list[tuple[ua.NodeId, str]] = []
        for (_, path), refs in zip(level, refs_of, strict=True):
            owner = index_of.get(path)  # the tag whose properties these are, if any
            for r in refs:
                nid = r.NodeId
                if not isinstance(nid, ua.NodeId):  # an ExpandedNodeId of another server
                    continue
                name = r.BrowseName.Name or str(nid)
                if r.ReferenceTypeId == _HAS_PROPERTY:
                    if owner is not None:
                        props.setdefault(owner, {})[name] = nid
                    continue
                if nid in seen or nid.NamespaceIndex == NS0:
                    continue  # the standard nodes (Server, ...) are no PLC tags
                seen.add(nid)
                child = f"{path}/{name}" if path else name
                if r.NodeClass == ua.NodeClass.Variable:
                    if len(found.tags) >= max_tags:
                        found.truncated = f"stopped at {max_tags} variables (--max-tags)"
                        break
                    index_of[child] = len(found.tags)
                    found.tags.append(Tag(child, nid.to_string()))
                if r.NodeClass in (ua.NodeClass.Object, ua.NodeClass.Variable):
                    if browsed + len(nxt) >= max_nodes:
                        found.truncated = f"stopped after browsing {max_nodes} nodes (--max-nodes)"
                        break
                    nxt.append((nid, child))
            if found.truncated:
                break
        level = nxt
    await _describe_tags(client, found.tags, props)


async def _describe_tags(client: Client, tags: list[Tag],
                         props: dict[int, dict[str, ua.NodeId]]) -> None:
    nids = [ua.NodeId.from_string(t.node_id) for t in tags]
    values = await _read(client, [(n, a) for n in nids for a in _ATTRS])
    types: dict[ua.NodeId, str | None] = {}
    reasons: dict[ua.NodeId, str] = {}
    for i, tag in enumerate(tags):
        dt, rank, access, hist = values[i * len(_ATTRS):(i + 1) * len(_ATTRS)]
        if not dt.StatusCode.is_good() or dt.Value is None:
            tag.skipped = "its DataType cannot be read"
            continue
        access_bits = int(access.Value.Value or 0) if access.Value is not None else 0
        if not access_bits & ua.AccessLevel.CurrentRead.mask:
            tag.skipped = "no read access"
            continue
        value_rank = int(rank.Value.Value) if rank.Value is not None else -1
        if value_rank not in (-1, -3):
            tag.skipped = (f"an array (ValueRank {value_rank}): the source reads scalars; "
                           "read its elements as their own nodes")
            continue
        data_type: ua.NodeId = dt.Value.Value
        if data_type not in types:
            types[data_type], why = await _our_type(client, data_type)
            reasons[data_type] = why
        ours = types[data_type]
        if ours is None:
            tag.skipped = reasons[data_type]
            continue
        tag.type = ours
        tag.history = bool(hist.Value is not None and hist.Value.Value)
    wanted = [(i, name, nid) for i, p in props.items() for name, nid in p.items()
              if name in ("EngineeringUnits", "EURange") and not tags[i].skipped]
    read = await _read(client, [(nid, ua.AttributeIds.Value) for _, _, nid in wanted])
    for (i, name, _), dv in zip(wanted, read, strict=True):
        value = dv.Value.Value if dv.Value is not None else None
        tag = tags[i]
        if tag.type == "text":
            continue  # a text tag takes no unit or range
        if name == "EngineeringUnits" and isinstance(value, ua.EUInformation):
            tag.unit = value.DisplayName.Text or ""
        elif name == "EURange" and isinstance(value, ua.Range) and value.Low < value.High:
            tag.low, tag.high = float(value.Low), float(value.High)


async def _our_type(client: Client, data_type: ua.NodeId) -> tuple[str | None, str]:
    """Our type for a DataType node, walking up HasSubtype; (None, why) when none."""
    current, name = data_type, ""
    for _ in range(8):
        if current.NamespaceIndex == NS0 and isinstance(current.Identifier, int):
            ident = current.Identifier
            if ident in _BUILTIN:
                return _BUILTIN[ident], ""
            if ident in _UNREADABLE:
                return None, _UNREADABLE[ident] if not name else f"{name}: {_UNREADABLE[ident]}"
        parents = (await _browse(client, [current], _HAS_SUBTYPE, ua.BrowseDirection.Inverse))[0]
        if not name:
            name = await _name(client, current)
        if not parents or not isinstance(parents[0].NodeId, ua.NodeId):
            break
        current = parents[0].NodeId
    return None, f"data type {name or data_type.to_string()} has no data type here"


async def _name(client: Client, nid: ua.NodeId) -> str:
    dv = (await _read(client, [(nid, ua.AttributeIds.BrowseName)]))[0]
    value = dv.Value.Value if dv.Value is not None else None
    return str(value.Name) if isinstance(value, ua.QualifiedName) else str(nid.to_string())
