"""OPC-UA client source: subscriptions and polling groups on asyncua's Client, with a
recovery of our own (asyncua's ``auto_reconnect`` brings data back 8-15 s after a server
restart, and leaves values frozen meanwhile).

Invariants:

* One emit per publish answer (or per Read of a polling group), never one per value: the
  subscription's ``publish_callback`` gathers the DataChange items of the answer into
  columns; only the session task emits.
* A session is lost, and rebuilt from scratch (connect, session, subscriptions,
  monitored items) through the link runtime's backoff, when: the transport closes
  (asyncua's ``connection_lost_callback``, ms after a server dies), a request or the
  server-state probe times out (a network cut), a subscription reports a Bad status
  (BadTimeout, BadShutdown from the server), a Read or a Publish answers
  BadSessionIdInvalid, BadNoSubscription or similar (the server dropped our session or
  subscription on a live connection), or a subscription's last publish answer (data or
  keepalive) is older than two keepalive periods (a subscription the server dropped, a
  silent black hole).
* From the moment data is missing until the first value of a new session, every tag of
  the source has one Bad sample (``BAD_NOT_CONNECTED``, value NaN) stamped at the loss:
  the journal, status and our OPC-UA server never show a frozen Good value. When data
  flows again one line says how long it was missing.
* After a reconnect, the gap is filled from the server's history before any live value
  of the new session is emitted (``opcua_backfill``: each value once, in order).
* A node the server refuses (BadNodeIdUnknown, a deadband it cannot apply, ...) makes
  that tag Bad with the server's status, one log line and one ``Quarantine`` record with
  the reason, per session; the other tags are not affected.
* A command (``write``) writes its declared value to its node on the current session, or
  fails at once when there is none: it never waits for a reconnect.
* The source never waits forever for a server: opening a session (client setup and
  connect) gets 3 x ``timeout_s``, each subscription's setup 3 x ``timeout_s``, every
  request ``timeout_s``, a close 2 s; and a stop (cancellation) ends it whatever it waits
  on (``opcua_connect.within``; Python 3.11's ``wait_for`` lost such stops). The outage
  and backfill show in the status document (``opcua_outage``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import numpy as np
import structlog
from asyncua import Client, ua

from edge.components import BuildContext, Command, Emit
from edge.errors import PermanentError, RetryableError
from edge.model import Quality, Quarantine, SampleBatch
from edge.protocols.opcua.client import (
    Columns,
    all_bad,
    deadband_filter,
    keepalive_count,
    monitored_item_request,
    silent_for,
    status_name,
)
from edge.protocols.opcua.variants import DTYPES
from edge.runtime.links import Backoff
from edge.sources.metrics import SourceMetrics, link_name
from edge.sources.opcua_backfill import Backfill
from edge.sources.opcua_call import call_method
from edge.sources.opcua_config import OpcUaSourceConfig
from edge.sources.opcua_connect import (
    HANDSHAKE_ERRORS,
    LIB_ERRORS,
    close,
    describe,
    make_client,
    security_hint,
    within,
)
from edge.sources.opcua_outage import Outages
from edge.sources.opcua_poll import Group, Poller
from edge.sources.opcua_subscription import BatchSubscription, Out, Publish, watch_publish
from edge.sources.opcua_types import TypeWatch, enum_names

log = structlog.get_logger("edge.sources.opcua")

class _Lost(Exception):
    """The session is lost; the message says why."""


class OpcUaSource:
    def __init__(self, cfg: OpcUaSourceConfig, ctx: BuildContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.device = cfg.device_name
        self.metrics = SourceMetrics(ctx.metrics, cfg.name)
        self.groups = [Group(g, self.device, ctx) for g in cfg.groups]
        numeric = [(t, n, c) for g in self.groups
                   for t, n, c in zip(g.tag_ids, g.node_ids, g.cfg.tags, strict=True) if t >= 0]
        self.tag_ids = np.array([t for t, _, _ in numeric], np.int32)
        self.types = TypeWatch(cfg.name, {t: c.node_id for t, _, c in numeric},
                               {t: c.type for t, _, c in numeric})
        self.password = ctx.secrets(cfg.password_secret) if cfg.password_secret else ""
        self.pki = Path(ctx.state_dir) / "opcua-client" / cfg.name
        self.application_uri = f"urn:{ctx.gateway_id}:edge-gateway:{cfg.name}"
        self.link = ctx.metrics.links.open(
            link_name(cfg.name, self.device),
            Backoff(initial_s=min(0.2, cfg.backoff_max_s), max_s=cfg.backoff_max_s))
        self.outages = Outages(self.link.state, cfg.backfill)
        self.sessions = 0
        self.subscriptions: list[BatchSubscription] = []  # of the current session
        self.poller = Poller(cfg.name, cfg.timeout_s)
        self.client: Client | None = None  # of the current session, for commands
        self.commands = {c.action: c for c in cfg.commands}
        self.backfill = Backfill(cfg.name, self.tag_ids, [n for _, n, _ in numeric], ctx.metrics,
                                 max_s=cfg.backfill_max_s, max_values=cfg.backfill_max_values,
                                 timeout_s=cfg.timeout_s)

    async def run(self, emit: Emit) -> None:
        await self.link.run(functools.partial(self._session, emit))

    # ------------------------------------------------------------------ session

    async def _session(self, emit: Emit) -> None:
        """One session: connect, subscribe, poll; emit until it is lost (raises)."""
        cfg = self.cfg
        out: Out = asyncio.Queue()
        client: Client | None = None
        tasks: list[asyncio.Task[None]] = []
        polite = False  # a session to close on a connection that still stands
        try:
            try:
                async with asyncio.timeout(cfg.timeout_s * 3):
                    client = await make_client(cfg, password=self.password, pki=self.pki,
                                               application_uri=self.application_uri)
                    await client.connect()
                polite = True
            except (*HANDSHAKE_ERRORS, ValueError) as exc:
                security = f"{cfg.security_policy}/{cfg.security_mode}"
                hint = "" if isinstance(exc, ua.UaStatusCodeError) and exc.code in (
                    ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadIdentityTokenInvalid,
                    ua.StatusCodes.BadIdentityTokenRejected) else security_hint(cfg, self.pki)
                why = ("the server refused the secure channel" if isinstance(exc, AssertionError)
                       else describe(exc))
                raise _Lost(f"cannot open a session on {cfg.endpoint} (security {security}): "
                            f"{why}{hint}") from exc

            async def lost(exc: Exception) -> None:
                nonlocal polite
                polite = False
                out.put_nowait(f"connection lost: {describe(exc)}")

            client.connection_lost_callback = lost
            watch_publish(client, out)
            subs: list[BatchSubscription] = []
            refused: list[tuple[int, str, ua.StatusCode]] = []
            try:
                for g in self.groups:
                    if g.cfg.mode == "subscribe":
                        subs.append(await within(cfg.timeout_s * 3,
                                                 self._subscribe(client, g, out, refused)))
            except LIB_ERRORS as exc:
                raise _Lost(f"creating subscriptions failed: {describe(exc)}") from exc
            self.sessions += 1
            self.subscriptions = subs
            self.client = client
            self.link.up(proven=False, endpoint=cfg.endpoint)
            self.metrics.link(self.device, True)
            if refused:
                await self._refused(emit, refused)
            if cfg.backfill:
                await self._backfill(client, emit)
            tasks = [asyncio.create_task(self.poller.poll(client, g, out))
                     for g in self.groups if g.cfg.mode == "poll"]
            await self._serve(emit, out, subs)
        except _Lost as exc:
            await self._missing(emit, str(exc))
            raise RetryableError(str(exc)) from None
        finally:
            self.client = None
            try:
                for task in tasks:
                    task.cancel()
                if tasks:  # a poll ends at its next await (a Read is bounded)
                    await asyncio.wait(tasks, timeout=cfg.timeout_s)
            finally:
                if client is not None:
                    await close(client, polite)

    async def _subscribe(self, client: Client, g: Group, out: Out,
                         refused: list[tuple[int, str, ua.StatusCode]]) -> BatchSubscription:
        gc = g.cfg
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = gc.publishing_interval_ms
        params.RequestedMaxKeepAliveCount = keepalive_count(self.cfg.keepalive_s,
                                                            gc.publishing_interval_ms)
        params.RequestedLifetimeCount = params.RequestedMaxKeepAliveCount * 10
        params.MaxNotificationsPerPublish = 0  # no limit
        params.PublishingEnabled = True
        sub = BatchSubscription(client, params, out)
        result = await sub.init()
        sub.keepalive_s = result.RevisedPublishingInterval * result.RevisedMaxKeepAliveCount / 1000
        sub.last_publish_at = time.monotonic()
        requests = []
        for i, t in enumerate(gc.tags):
            sampling = gc.sampling_interval_ms if t.sampling_interval_ms is None \
                else t.sampling_interval_ms
            requests.append(monitored_item_request(
                i + 1, g.node_ids[i], sampling, t.queue_size,
                deadband_filter(t.deadband, t.deadband_value)))
            if i in g.text:
                sub.text_of_handle[i + 1] = g.text[i]
                g.text[i].enum = await enum_names(client, g.node_ids[i])
            else:
                sub.tag_of_handle[i + 1] = g.tag_ids[i]
        results = await sub.create_monitored_items(requests)
        for i, r in enumerate(results):
            if isinstance(r, ua.StatusCode):
                sub.tag_of_handle.pop(requests[i].RequestedParameters.ClientHandle, None)
                sub.text_of_handle.pop(requests[i].RequestedParameters.ClientHandle, None)
                refused.append((g.tag_ids[i], gc.tags[i].node_id, r))
        return sub

    async def _serve(self, emit: Emit, out: Out,
                     subs: list[BatchSubscription]) -> None:
        """Emit what arrives; check every subscription's keepalive; raise _Lost."""
        tick = max(0.02, self.cfg.keepalive_s / 4)
        while True:
            try:
                item: Publish | str | None = await within(tick, out.get())
            except TimeoutError:
                item = None
            if isinstance(item, str):
                raise _Lost(item)
            if item is not None:
                batch = self.backfill.live(item.batch)
                records = self.types.numbers(batch, item.odd) if item.odd or \
                    self.types.mismatch else []
                if item.texts:
                    records += self.types.texts(item.texts)
                if len(batch) or records:
                    await emit(batch if len(batch) else None, records)
                self.metrics.received(len(batch) + len(records))
                self.metrics.sampled(self.device)
                self._flowing()
            now = time.monotonic()
            for sub in subs:
                silent = silent_for(sub.last_publish_at or now, now, sub.keepalive_s)
                if silent is not None:
                    raise _Lost(f"subscription {sub.subscription_id} silent for {silent:.1f} s "
                                f"(keepalive every {sub.keepalive_s:.1f} s missed)")

    async def _backfill(self, client: Client, emit: Emit) -> None:
        """Fill the gap from the server's history before any live value is emitted."""
        async def out(batch: SampleBatch, mark: tuple[str, bytes]) -> None:
            await emit(batch, [], checkpoint=mark)
            self.metrics.received(len(batch))

        try:
            self.outages.filled(await self.backfill.fill(client, out))
        except LIB_ERRORS as exc:
            raise _Lost(f"backfill failed: {describe(exc)}") from exc

    def _flowing(self) -> None:
        missing = self.outages.flowing()
        if missing is not None:
            log.info("opcua data flowing again", source=self.name, endpoint=self.cfg.endpoint,
                     missing_s=round(missing, 3), session=self.sessions)
        self.link.up()

    async def _missing(self, emit: Emit, reason: str) -> None:
        """Data stops here: every tag Bad once, one log line (not one per attempt)."""
        self.metrics.link(self.device, False)
        if not self.outages.lost(reason):
            return
        log.warning("opcua data missing", source=self.name, endpoint=self.cfg.endpoint,
                    tags=len(self.tag_ids), reason=reason)
        now = time.time_ns()
        texts = self.types.lost(reason, now)
        await emit(all_bad(self.tag_ids, Quality.BAD_NOT_CONNECTED, now), texts)
        n = len(self.tag_ids) + len(texts)
        self.metrics.received(n)
        self.metrics.rejected("not_connected", n)

    async def _refused(self, emit: Emit, refused: list[tuple[int, str, ua.StatusCode]]) -> None:
        """Tags whose node the server refused: Bad with the server's status and a reason."""
        now = time.time_ns()
        cols = Columns()
        records = []
        for tag, node_id, status in refused:
            if tag >= 0:  # a text tag has no sample
                cols.add(tag, ua.DataValue(StatusCode=status), now)
            reason = f"node {node_id} refused by the server: {status_name(status)}"
            log.warning("opcua tag refused", source=self.name, node_id=node_id,
                        status=status_name(status))
            records.append(Quarantine(ts_ns=now, source=self.name, reason=reason,
                                      where="monitored item", subject=node_id))
        await emit(cols.batch(), records)
        self.metrics.rejected("node_refused", len(refused))

    # ------------------------------------------------------------------ write-back

    async def write(self, command: Command) -> None:
        """Write a declared command's value to its node on the current session (OPC-UA
        requests run side by side on it: a stop never waits behind a slow Read)."""
        spec = self.commands.get(command.action)
        if spec is None:
            raise PermanentError(f"source '{self.name}' has no action '{command.action}'")
        client = self.client
        if client is None:
            raise RetryableError(f"source '{self.name}': no session with {self.cfg.endpoint}")
        if spec.method:
            await call_method(self.name, client, spec, command, self.cfg.timeout_s)
            return
        variant = DTYPES[spec.type].variant
        value = bool(spec.value) if spec.type == "bool" else (
            float(spec.value) if spec.type.startswith("float") else int(spec.value))
        params = ua.WriteParameters()
        params.NodesToWrite.append(ua.WriteValue(
            NodeId=ua.NodeId.from_string(spec.node_id), AttributeId=ua.AttributeIds.Value,
            Value=ua.DataValue(Value=ua.Variant(value, variant))))
        try:
            results = await within(self.cfg.timeout_s, client.uaclient.write(params))
        except LIB_ERRORS as exc:
            raise RetryableError(f"source '{self.name}': {command.action} on {spec.node_id} "
                                 f"failed: {describe(exc)}") from exc
        if not results[0].is_good():
            raise PermanentError(f"source '{self.name}': {command.action}: the server refused "
                                 f"the write to {spec.node_id}: {status_name(results[0])}")
        log.info("opcua command written", source=self.name, action=command.action,
                 node_id=spec.node_id, value=value, reason=command.reason)
