"""Client limits of the OPC-UA server: what one SCADA, or a misbehaving client, may take.

Invariants:

* Past a limit the request is refused with the OPC-UA status made for it, never by
  dropping the connection or by an exception that reaches the server:
  connections past ``max_connections`` are closed at accept (asyncua); a session past
  ``max_sessions`` is BadTooManySessions; a subscription past
  ``max_subscriptions_per_session`` (or ``max_subscriptions`` in all) is
  BadTooManySubscriptions; monitored items past ``max_monitored_items_per_session`` (or
  ``max_monitored_items`` in all) are refused one by one with BadTooManyMonitoredItems,
  the ones that fit are created.
* A subscription asking for a publishing interval below ``min_publishing_interval_ms``
  gets that minimum (the revised interval says so); a monitored item's queue is capped
  at ``max_queue_size``.
* Every refusal is counted (``edge_opcua_refused_total{limit}``) and logged, at most one
  line per limit per ``LOG_EVERY_S`` with the count since the last line: a client that
  retries in a loop cannot flood the log.
* Limits are per server (not asyncua's process-wide session counter).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from asyncua.server.subscription_service import SubscriptionService

from edge.config import ConfigStruct
from edge.runtime.metrics import Metrics

log = structlog.get_logger("edge.opcua")

LOG_EVERY_S = 10.0


class OpcUaLimits(ConfigStruct, frozen=True):
    """``[sinks.limits]`` of an OPC-UA sink."""

    max_connections: int = 64
    max_sessions: int = 32
    max_subscriptions_per_session: int = 10
    max_subscriptions: int = 100
    max_monitored_items_per_session: int = 20_000
    max_monitored_items: int = 100_000
    min_publishing_interval_ms: float = 100.0
    max_queue_size: int = 1000

    def __post_init__(self) -> None:
        for key in ("max_connections", "max_sessions", "max_subscriptions_per_session",
                    "max_subscriptions", "max_monitored_items_per_session",
                    "max_monitored_items", "max_queue_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1")
        if self.max_sessions > self.max_connections:
            raise ValueError("max_sessions must not exceed max_connections")
        if not 0 <= self.min_publishing_interval_ms <= 60_000:
            raise ValueError("min_publishing_interval_ms must be between 0 and 60000")


class _Refusals:
    """Counts refusals; logs one line per limit per LOG_EVERY_S."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics.counter("edge_opcua_refused_total",
                                  "OPC-UA client requests refused by a configured limit",
                                  ["limit"])
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def refuse(self, limit: str, value: int, n: int = 1, **detail: object) -> None:
        self._m.labels(limit).inc(n)
        self._since[limit] = self._since.get(limit, 0) + n
        now = time.monotonic()
        if now - self._last.get(limit, -LOG_EVERY_S) >= LOG_EVERY_S:
            log.warning("opcua client refused: limit reached", limit=limit, value=value,
                        refused=self._since[limit], **detail)
            self._last[limit] = now
            self._since[limit] = 0


class LimitedSubscriptionService(SubscriptionService):  # type: ignore[misc]  # asyncua untyped
    """asyncua's subscription service with per-session and total limits."""

    def __init__(self, iserver: InternalServer, limits: OpcUaLimits, refusals: _Refusals
                 ) -> None:
        super().__init__(iserver.aspace, iserver=iserver)
        self.limits = limits
        self.refusals = refusals

    async def create_subscription(self, params: ua.CreateSubscriptionParameters,
                                  callback: Callable[..., Any], session_id: ua.NodeId,
                                  request_callback: Callable[..., Any] | None = None,
                                  ) -> ua.CreateSubscriptionResult:
        lim = self.limits
        mine = sum(1 for s in self.subscriptions.values() if s.session_id == session_id)
        if mine >= lim.max_subscriptions_per_session:
            self.refusals.refuse("max_subscriptions_per_session",
                                 lim.max_subscriptions_per_session, session=str(session_id))
            raise ServiceError(ua.StatusCodes.BadTooManySubscriptions)
        if len(self.subscriptions) >= lim.max_subscriptions:
            self.refusals.refuse("max_subscriptions", lim.max_subscriptions)
            raise ServiceError(ua.StatusCodes.BadTooManySubscriptions)
        params.RequestedPublishingInterval = max(params.RequestedPublishingInterval,
                                                 lim.min_publishing_interval_ms)
        return await super().create_subscription(params, callback, session_id,
                                                 request_callback=request_callback)

    def _items(self, session_id: ua.NodeId | None = None) -> int:
        return sum(len(s.monitored_item_srv._monitored_items)
                   for s in self.subscriptions.values()
                   if session_id is None or s.session_id == session_id)

    async def create_monitored_items(self, params: ua.CreateMonitoredItemsParameters
                                     ) -> list[ua.MonitoredItemCreateResult]:
        sub = self.subscriptions.get(params.SubscriptionId)
        if sub is None:  # asyncua answers BadSubscriptionIdInvalid
            invalid: list[ua.MonitoredItemCreateResult] = await super().create_monitored_items(
                params)
            return invalid
        lim = self.limits
        room = min(lim.max_monitored_items_per_session - self._items(sub.session_id),
                   lim.max_monitored_items - self._items())
        items = list(params.ItemsToCreate)
        room = max(0, room)
        if len(items) <= room:
            created: list[ua.MonitoredItemCreateResult] = await super().create_monitored_items(
                params)
            return created
        per_session = lim.max_monitored_items_per_session - self._items(sub.session_id) < \
            lim.max_monitored_items - self._items()
        name = "max_monitored_items_per_session" if per_session else "max_monitored_items"
        self.refusals.refuse(name, getattr(lim, name), len(items) - room,
                             session=str(sub.session_id))
        params.ItemsToCreate = items[:room]
        results = await super().create_monitored_items(params) if room else []
        refused = ua.MonitoredItemCreateResult()
        refused.StatusCode = ua.StatusCode(ua.StatusCodes.BadTooManyMonitoredItems)
        return [*results, *([refused] * (len(items) - room))]


def install(server: Server, limits: OpcUaLimits, metrics: Metrics) -> None:
    """Apply ``limits`` to ``server``; call before ``server.init()`` (the condition
    methods asyncua binds in ``init`` must find this subscription service)."""
    iserver: InternalServer = server.iserver
    refusals = _Refusals(metrics)
    service = LimitedSubscriptionService(iserver, limits, refusals)
    iserver.subscription_service = service
    iserver.isession.subscription_service = service
    iserver.max_connections = limits.max_connections
    iserver.max_subscriptions = limits.max_subscriptions
    iserver.max_monitored_item_queue_size = limits.max_queue_size
    # asyncua's own session cap is a process-wide class counter: ours is per server.
    plain_create = iserver.create_session

    def create_session(name: str, *args: Any, **kwargs: Any) -> InternalSession:
        open_sessions = len(iserver._external_sessions)
        if kwargs.get("external") and open_sessions >= limits.max_sessions:
            refusals.refuse("max_sessions", limits.max_sessions)
            raise ServiceError(ua.StatusCodes.BadTooManySessions)
        return plain_create(name, *args, **kwargs)

    iserver.create_session = create_session
