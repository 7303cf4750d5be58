"""OPC-UA server: the live sink. Latest tag values, interlocks, health, SPC, diagnostics.

Invariants:

* ``publish`` runs on the server's event loop for every batch: the tag values go to the
  fast path (``opcua_writer.TagWriter``: latest value per tag, no per-point Python),
  records are queued, both are handed to the history feed. It never awaits and never
  fails on data.
* One writer task applies the queued records and the tags that are due (``TagWriter``:
  coalesced to the clients' publishing pace, in slices of at most ``slice_budget_ms``),
  at most every ``update_interval_ms``. Live values come from this fast path, never from
  the journal; the history is fed every value, whatever was coalesced.
* Profiles: ``demo`` offers only security None with anonymous login. ``production``
  offers only Basic256Sha256 SignAndEncrypt, user name login against hashed passwords,
  no anonymous and no built-in admin, and refuses client certificates that are not in
  the trust folder (see ``edge.protocols.opcua.security``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import msgspec
import structlog
from asyncua import Server, ua

from edge.components import BuildContext, LiveSink
from edge.config import ConfigStruct, check_secret_name
from edge.errors import ConfigError
from edge.history.feed import HistoryFeed
from edge.model import Record, SampleBatch
from edge.protocols.opcua import security as sec
from edge.protocols.opcua.variants import DTYPES
from edge.sinks import opcua_history, opcua_limits, opcua_notify, opcua_standard
from edge.sinks.opcua_alarms import OpcUaConditions, caller
from edge.sinks.opcua_board import Board, answer
from edge.sinks.opcua_insert import insert_nodes
from edge.sinks.opcua_objects import GatewayObjects
from edge.sinks.opcua_space import asset_folders, object_item, tag_items, tag_nodeid
from edge.sinks.opcua_thread import ThreadedOpcUaSink
from edge.sinks.opcua_writer import TagWriter

log = structlog.get_logger("edge.opcua")

_OUT_OF_RANGE = ua.StatusCode(ua.StatusCodes.BadOutOfRange)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KIND_FLOAT, _KIND_INT, _KIND_BOOL = 0, 1, 2


class OpcUaUser(ConfigStruct, frozen=True):
    name: str
    password_hash: str

    def __post_init__(self) -> None:
        try:
            sec.PasswordHash.parse(self.password_hash)
        except ValueError as exc:
            raise ValueError(f"password_hash {exc}") from None


class OpcUaConfig(ConfigStruct, frozen=True):
    """``[[sinks]]`` with ``type = "opcua"``: the OPC-UA server, a live sink."""

    name: str = "opcua"
    endpoint: str = "opc.tcp://0.0.0.0:4840/edge"
    profile: Literal["demo", "production"] = "demo"
    namespace_uri: str = "urn:edge-gateway:tags"
    application_uri: str = "urn:edge-gateway:opcua-server"
    server_name: str = "Edge Gateway"
    # users: inline hashes, a file of "user:hash" lines, or a secret holding such lines
    users: list[OpcUaUser] = msgspec.field(default_factory=list)
    users_file: str = ""
    users_secret: str = ""
    trust_dir: str = ""  # default <state_dir>/opcua/trusted
    cert_file: str = ""  # default <state_dir>/opcua/server_cert.der (generated)
    key_file: str = ""  # default <state_dir>/opcua/server_key.pem (generated)
    update_interval_ms: float = 50.0
    # a monitored tag is written at most once per its clients' pace (publishing interval /
    # queue size), at least every coalesce_max_ms; 0: every update_interval_ms
    coalesce_max_ms: float = 1000.0
    slice_budget_ms: float = 0.8
    update_slice: int = 500
    status_interval_s: float = 1.0
    login_fail_interval_s: float = 0.5
    # the server on its own thread and loop (edge.sinks.opcua_thread); its calls into the
    # condition board and the status document cross to the main loop. false: on the main loop
    threaded: bool = True
    history: opcua_history.OpcUaHistoryConfig = msgspec.field(
        default_factory=opcua_history.OpcUaHistoryConfig)
    limits: opcua_limits.OpcUaLimits = msgspec.field(default_factory=opcua_limits.OpcUaLimits)

    def __post_init__(self) -> None:
        url = urlparse(self.endpoint)
        if url.scheme != "opc.tcp" or not url.hostname or url.port is None:
            raise ValueError("endpoint must look like opc.tcp://HOST:PORT/PATH")
        if self.profile == "production" and not (
            self.users or self.users_file or self.users_secret
        ):
            raise ValueError(
                "users must be given for the production profile "
                "(users, users_file or users_secret)"
            )
        if self.users_secret:
            check_secret_name(self.users_secret, "users_secret")
        if not 1 <= self.update_slice <= 100_000:
            raise ValueError("update_slice must be between 1 and 100000")
        if not 0.05 <= self.slice_budget_ms <= 50:
            raise ValueError("slice_budget_ms must be between 0.05 and 50")
        if not 0 <= self.update_interval_ms <= 10_000:
            raise ValueError("update_interval_ms must be between 0 and 10000")
        if not 0 <= self.coalesce_max_ms <= 60_000:
            raise ValueError("coalesce_max_ms must be between 0 and 60000")
        if self.status_interval_s <= 0:
            raise ValueError("status_interval_s must be > 0")
        if self.login_fail_interval_s < 0:
            raise ValueError("login_fail_interval_s must be >= 0")

    def build(self, ctx: BuildContext) -> LiveSink:
        users: dict[str, sec.PasswordHash] = {}
        if self.profile == "production":
            users = self._load_users(ctx)
            if not users:
                raise ConfigError(
                    f"sink '{self.name}': users: no user defined for the production profile")
        if self.threaded:
            return ThreadedOpcUaSink(lambda c, b: OpcUaSink(self, c, users, board=b), ctx)
        return OpcUaSink(self, ctx, users)

    def preflight(self) -> list[str]:
        """check-config: the users file's hashes meet the minimum."""
        return sec.users_file_problems(f"sink '{self.name}'", self.users_file)

    def _load_users(self, ctx: BuildContext) -> dict[str, sec.PasswordHash]:
        return sec.load_users(f"sink '{self.name}'",
                              [(u.name, u.password_hash) for u in self.users],
                              self.users_file, self.users_secret, ctx.secrets)


class OpcUaSink:
    """The OPC-UA server as a live sink (see the module docstring)."""

    def __init__(
        self, cfg: OpcUaConfig, ctx: BuildContext, users: dict[str, sec.PasswordHash], *,
        board: Board | None = None,
    ) -> None:
        """``board``: the condition board as this server reaches it (by default the
        gateway's, ``ctx.hooks.conditions``; the threaded server's crosses threads)."""
        self.cfg = cfg
        self.board: Board | None = board if board is not None else ctx.hooks.conditions
        self.ctx = ctx
        self.name = cfg.name
        self.endpoint = cfg.endpoint
        self.started = asyncio.Event()
        self.server: Server | None = None
        self.idx = 0
        self._users = users
        self._tags = TagWriter(ctx.tags, ctx.metrics,
                               update_interval_s=cfg.update_interval_ms / 1000,
                               slice_budget_s=cfg.slice_budget_ms / 1000,
                               update_slice=cfg.update_slice,
                               coalesce_max_s=cfg.coalesce_max_ms / 1000)
        self._nodeids: list[ua.NodeId] = []
        self._records: deque[Record] = deque(maxlen=10_000)
        self._wake = asyncio.Event()
        self._refresh = asyncio.Event()
        self._objects: GatewayObjects | None = None
        self._alarms: OpcUaConditions | None = None
        self._history: HistoryFeed | None = opcua_history.feed_for(
            cfg.history, ctx.state_dir, ctx.tags, ctx.metrics, cfg.name)
        m = ctx.metrics
        self._m_events = m.counter("edge_opcua_records_total", "Records applied to OPC-UA",
                                   ["type"])
        self._m_build = m.gauge("edge_opcua_address_space_build_seconds",
                                "Time to build the OPC-UA address space at start-up")

    # ------------------------------------------------------------------ fast path

    def publish(self, batch: SampleBatch, records: Sequence[Record]) -> None:
        n = len(batch)
        if n:
            self._tags.publish(batch)
        if records:
            self._records.extend(records)
        if n or records:
            self._wake.set()
            if self._history is not None:
                self._history.publish(batch, records)

    # ------------------------------------------------------------------ serving

    async def run(self) -> None:
        self.started.clear()
        try:
            server = await self._start()
        except BaseException:
            if self._alarms is not None:  # it listens to the board: stop that
                self._alarms.close()
                self._alarms = None
            raise
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._writer(server), name="opcua-writer")
                tg.create_task(self._status_loop(), name="opcua-status")
                if self._alarms is not None:
                    tg.create_task(self._alarms.run(), name="opcua-conditions")
                if self._history is not None:
                    tg.create_task(self._history.run(), name="opcua-history")
        finally:
            if self._alarms is not None:
                self._alarms.close()
                self._alarms = None
            self.server = None
            self.started.clear()
            await server.stop()
            log.info("opcua server stopped", endpoint=self.endpoint)

    async def _start(self) -> Server:
        cfg = self.cfg
        t0 = time.perf_counter()
        self._tags.fit()
        server = opcua_standard.server(opcua_standard.cache_folder(self.ctx.state_dir))
        opcua_limits.install(server, cfg.limits, self.ctx.metrics)
        opcua_notify.install()
        await server.init()
        server.set_endpoint(cfg.endpoint)
        server.set_server_name(cfg.server_name)
        await server.set_application_uri(cfg.application_uri)
        await self._secure(server)
        self.idx = await server.register_namespace(cfg.namespace_uri)
        root = ua.NodeId("_devices", self.idx)
        items = [object_item(root, "Devices", server.nodes.objects.nodeid, self.idx, folder=True)]
        folders, places = asset_folders(
            {t.device: self.ctx.asset.path(t.device).segments for t in self.ctx.tags},
            self.idx, root)
        items += folders + tag_items(self.ctx.tags, self.idx, root, places,
                                     history=self._history is not None)
        try:
            await insert_nodes(server.iserver.aspace, items)
        except ValueError as exc:
            raise ConfigError(f"sink '{self.name}': {exc}") from None
        self._nodeids = [tag_nodeid(t, self.idx) for t in self.ctx.tags]
        await self._mark_waiting(server)
        objects = GatewayObjects(server, self.idx, self._reset, self._refresh.set)
        await objects.create()
        self._objects = objects
        if self.board is not None:
            self._alarms = OpcUaConditions(server, self.idx, self.board)
            await self._alarms.install()
        if self._history is not None:
            await opcua_history.install(server, self._history, list(self.ctx.tags),
                                        self._nodeids, self.idx, cfg.history.max_values_per_read)
        await self._apply_status()
        await server.start()
        self.server = server
        self._tags.bind(self._nodeids)
        took = time.perf_counter() - t0
        self._m_build.set(took)
        self.started.set()
        self._wake.set()
        log.info("opcua server listening", endpoint=cfg.endpoint, profile=cfg.profile,
                 tags=len(self._nodeids), nodes=len(items), seconds=round(took, 3))
        return server

    async def _secure(self, server: Server) -> None:
        cfg = self.cfg
        server.allow_remote_admin(False)
        if cfg.profile == "demo":
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            server.set_identity_tokens([ua.AnonymousIdentityToken])
            return
        folder = self.ctx.state_dir / "opcua"
        trust_dir = Path(cfg.trust_dir) if cfg.trust_dir else folder / "trusted"
        trust_dir.mkdir(parents=True, exist_ok=True)
        cert, key = await sec.ensure_server_certificate(
            folder, cfg.application_uri,
            Path(cfg.cert_file) if cfg.cert_file else None,
            Path(cfg.key_file) if cfg.key_file else None,
        )
        await server.load_certificate(cert)
        await server.load_private_key(key)
        trust = sec.TrustList(trust_dir)
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        server.set_identity_tokens([ua.UserNameIdentityToken])
        sec.HashedUserManager(
            self._users, trust, fail_interval_s=cfg.login_fail_interval_s
        ).install(server.iserver)
        server.set_certificate_validator(trust.validate)

    async def _reset(self, name: str) -> bool:
        board = self.board
        if board is None:
            return False
        code = await answer(board.reset(name, origin="opcua", user=caller()))
        return bool(code.is_good())

    async def _status_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh.wait(), self.cfg.status_interval_s)
            self._refresh.clear()
            await self._apply_status()

    async def _mark_waiting(self, server: Server) -> None:
        """Until its first sample, a tag reads BadWaitingForInitialData, never a Good 0."""
        waiting = ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)
        now = datetime.now(UTC)
        for tag, nodeid in zip(self.ctx.tags, self._nodeids, strict=True):
            t = DTYPES[tag.dtype]
            initial: object = False if t.variant == ua.VariantType.Boolean else (
                0 if t.integer else 0.0)
            await server.write_attribute_value(nodeid, ua.DataValue(
                ua.Variant(initial, t.variant), StatusCode=waiting, ServerTimestamp=now))

    async def _apply_status(self) -> None:
        if self._objects is None:
            return
        try:
            status = self.ctx.hooks.status()
            if status is not None:
                await self._objects.apply_status(status)
        except Exception as exc:  # a status bug must not take the OPC-UA server down
            log.warning("opcua status document failed", error=repr(exc))

    async def _writer(self, server: Server) -> None:
        interval = self.cfg.update_interval_ms / 1000
        while True:
            due = self._tags.next_due_s()
            if due is None or due > 0:  # new data or records wake it; due tags end the wait
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due)
            self._wake.clear()
            t0 = time.monotonic()
            while self._records and self._objects is not None:
                record = self._records.popleft()
                await self._objects.apply_record(record)
                self._m_events.labels(type(record).__name__).inc()
            await self._tags.write_due(server)
            wait = interval - (time.monotonic() - t0)
            if wait > 0:
                await asyncio.sleep(wait)
