"""The OPC-UA client source's groups (resolved from config) and its polling groups: one
Read of every node of a group per ``poll_interval_ms``, handed to the session as one
``Publish``, exactly as a subscription's publish answer is.

Invariants:

* A polling group reads on a drift-free schedule: a late Read skips the ticks it missed,
  it never bursts to catch up.
* Numbers become samples; text tags (strings, enumerations by name) become text values
  that ``TypeWatch`` turns into ``TextValue`` records on change, as in a subscription.
* A node the server answers Bad for (BadNodeIdUnknown, ...) is Bad in every Read, with
  one log line when it turns Bad and one when it recovers, never one per Read.
* A Read that fails or times out loses the session: the reason goes on the session's
  queue and the poll ends (the session is rebuilt).
"""

from __future__ import annotations

import asyncio
import time

import structlog
from asyncua import Client, ua

from edge.components import BuildContext
from edge.protocols.opcua.client import Columns, status_name
from edge.sources.opcua_config import OpcUaGroupConfig
from edge.sources.opcua_connect import LIB_ERRORS, describe, within
from edge.sources.opcua_subscription import Out, Publish
from edge.sources.opcua_types import TextTag, enum_names

log = structlog.get_logger("edge.sources.opcua")


class Group:
    """One configured group, resolved: node ids and our tag ids, in config order."""

    def __init__(self, cfg: OpcUaGroupConfig, device: str, ctx: BuildContext) -> None:
        self.cfg = cfg
        self.node_ids = [ua.NodeId.from_string(t.node_id) for t in cfg.tags]
        # -1 for a text tag: it has no sample tag, its values are TextValue records
        self.tag_ids = [-1 if t.type == "text" else ctx.tags.id_of(f"{device}/{t.name}")
                        for t in cfg.tags]
        self.text = {i: TextTag(f"{device}/{t.name}", t.node_id)
                     for i, t in enumerate(cfg.tags) if t.type == "text"}


class Poller:
    """The polling groups of one source; remembers which nodes are Bad across sessions."""

    def __init__(self, source: str, timeout_s: float) -> None:
        self.source = source
        self.timeout_s = timeout_s
        self.failing: dict[str, str] = {}  # node id -> the Bad status it last had

    async def poll(self, client: Client, g: Group, out: Out) -> None:
        """Read ``g`` every ``poll_interval_ms`` until cancelled or a Read fails."""
        loop = asyncio.get_running_loop()
        interval = g.cfg.poll_interval_ms / 1000.0
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        for nid in g.node_ids:
            rv = ua.ReadValueId()
            rv.NodeId = nid
            rv.AttributeId = ua.AttributeIds.Value
            params.NodesToRead.append(rv)
        try:
            for i, tt in g.text.items():  # once per session, as a subscription does
                tt.enum = await within(self.timeout_s * 2, enum_names(client, g.node_ids[i]))
        except LIB_ERRORS as exc:
            out.put_nowait(f"reading group '{g.cfg.name}' types failed: {describe(exc)}")
            return
        t0 = loop.time()
        k = 0
        while True:
            try:
                results = await within(self.timeout_s, client.uaclient.read(params))
            except LIB_ERRORS as exc:
                out.put_nowait(f"read of group '{g.cfg.name}' failed: {describe(exc)}")
                return
            out.put_nowait(self._publish(g, results))
            k = max(k + 1, int((loop.time() - t0) / interval) + 1)
            await asyncio.sleep(max(0.0, t0 + k * interval - loop.time()))

    def _publish(self, g: Group, results: list[ua.DataValue]) -> Publish:
        arrival = time.time_ns()
        cols = Columns()
        texts: list[tuple[TextTag, ua.DataValue]] = []
        for i, (tag, dv) in enumerate(zip(g.tag_ids, results, strict=True)):
            node_id = g.cfg.tags[i].node_id
            status = dv.StatusCode
            if (status is not None and status.is_bad()) or node_id in self.failing:
                self._note(node_id, status)
            if tag < 0:
                texts.append((g.text[i], dv))
            else:
                cols.add(tag, dv, arrival)
        return Publish(cols.batch(), cols.odd, texts)

    def _note(self, node_id: str, status: ua.StatusCode | None) -> None:
        """Log a polled node going Bad (with the server's reason) or recovering, once
        each."""
        name = "" if status is None or not status.is_bad() else status_name(status)
        if self.failing.get(node_id, "") == name:
            return
        if name:
            self.failing[node_id] = name
            log.warning("opcua tag bad", source=self.source, node_id=node_id, status=name)
        else:
            del self.failing[node_id]
            log.info("opcua tag recovered", source=self.source, node_id=node_id)
