"""HTTP plumbing shared by the durable sinks that speak HTTP (MES, InfluxDB).

What an answer means, in one place:

* 2xx: delivered.
* Connect errors, timeouts, 408, 429 and 5xx: ``RetryableError``, with the peer's
  ``Retry-After`` (seconds or an HTTP date, capped at ``MAX_RETRY_AFTER_S``) as
  ``retry_after_s``. The delivery loop backs off and sends the same entries again.
* ``hold_statuses`` (default 401, 403, 404): the peer refuses *us* (credentials, URL,
  missing database), not the payload. Retryable as well, so a rotated token or a
  database not yet created never sends a whole backlog to the dead letters.
* 3xx: a wrong URL (http -> https, a moved path): retryable, for the same reason.
* Any other 4xx: the payload is refused. ``send_entries`` sends a batch of several
  journal entries once and, when a 400/413/422 refuses it, again entry by entry, so
  only the entries the peer refuses themselves become ``Rejection``s (with the
  response body) and the good ones are delivered.

A peer's answer may echo our request, credentials included: its text is passed
through ``edge.runtime.redact`` before it goes into a log line, an error or a rejection.

Re-sending an entry is harmless by construction: MES records carry stable ids and an
Idempotency-Key, and InfluxDB overwrites a point with the same series and timestamp.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, Protocol, TypeVar

import httpx
import msgspec
import structlog

from edge.components import Rejection
from edge.config import ConfigStruct, check_secret_name
from edge.errors import RetryableError
from edge.runtime.metrics import Metrics
from edge.runtime.redact import redact

log = structlog.get_logger("edge.sinks")

MAX_RETRY_AFTER_S = 3600.0
BODY_EXCERPT = 500
SPLIT_STATUSES = frozenset({400, 413, 422})

Verdict = Literal["ok", "retry", "reject"]


class HttpOptions(ConfigStruct, frozen=True, kw_only=True):
    """Connection settings every HTTP sink takes."""

    timeout_s: float = 10.0  # read/write: a black-holed peer fails after this long
    connect_timeout_s: float = 3.0
    verify_tls: bool = True
    ca_file: str = ""  # PEM bundle to trust instead of the default CAs
    max_connections: int = 4
    # 4xx that mean "fix the setup" rather than "bad payload": retried, never dead-lettered
    hold_statuses: list[int] = msgspec.field(default_factory=lambda: [401, 403, 404])

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= 600:
            raise ValueError("timeout_s must be > 0 and <= 600")
        if not 0 < self.connect_timeout_s <= 600:
            raise ValueError("connect_timeout_s must be > 0 and <= 600")
        if self.max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        for status in self.hold_statuses:
            if not 400 <= status <= 499:
                raise ValueError(f"hold_statuses must hold 4xx codes only (got {status})")
        for key in self.__struct_fields__:  # token_secret, password_secret of the sinks
            value = getattr(self, key)
            if key.endswith("_secret") and value:
                check_secret_name(value, key)


class HttpSinkMetrics:
    """The counters every HTTP sink keeps, labelled by sink."""

    def __init__(self, m: Metrics) -> None:
        self.status = m.counter(
            "edge_sink_http_responses_total", "HTTP answers from sink peers", ["sink", "status"]
        )
        self.skipped = m.counter(
            "edge_sink_skipped_records_total",
            "Records not sent because the sink is not configured for their type",
            ["sink", "type"],
        )
        self.sent = m.counter(
            "edge_sink_sent_bytes_total", "Request body bytes sent to sink peers", ["sink"]
        )


def check_url(url: str, key: str = "url") -> None:
    """ValueError('<key> ...') unless ``url`` is an absolute http(s) URL."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"{key} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{key} must be an http:// or https:// URL (got {url!r})")


def make_client(opts: HttpOptions, *, base_url: str = "",
                headers: dict[str, str] | None = None,
                auth: tuple[str, str] | None = None,
                transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with no transport-level retries (the journal retries),
    TLS verification and the configured timeouts. ``transport`` is for tests."""
    verify: ssl.SSLContext | bool
    if not opts.verify_tls:
        verify = False
    elif opts.ca_file:
        verify = ssl.create_default_context(cafile=opts.ca_file)
    else:
        verify = True
    if transport is None:
        limits = httpx.Limits(max_connections=opts.max_connections,
                              max_keepalive_connections=opts.max_connections)
        transport = httpx.AsyncHTTPTransport(retries=0, verify=verify, limits=limits)
    timeout = httpx.Timeout(opts.timeout_s, connect=opts.connect_timeout_s)
    return httpx.AsyncClient(
        base_url=base_url, headers=headers, auth=auth, timeout=timeout, transport=transport,
        follow_redirects=False,
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def verdict(status: int, hold: frozenset[int] | set[int] = frozenset()) -> Verdict:
    if 200 <= status < 300:
        return "ok"
    if status in (408, 429) or status >= 500 or status in hold or status < 400:
        return "retry"  # < 400: a redirect means a wrong URL, not a wrong payload
    return "reject"


def excerpt(text: str, n: int = BODY_EXCERPT) -> str:
    text = " ".join(redact(text).split())
    return text if len(text) <= n else text[:n] + "..."


def retryable(resp: httpx.Response, peer: str) -> RetryableError:
    return RetryableError(
        f"{peer} answered {resp.status_code} {redact(resp.reason_phrase)}: "
        f"{excerpt(resp.text)}",
        retry_after_s=parse_retry_after(resp.headers.get("retry-after")),
    )


async def post(client: httpx.AsyncClient, url: str, *, content: bytes,
               headers: dict[str, str] | None = None, peer: str) -> httpx.Response:
    """POST, with every transport failure (refused, reset, timeout, TLS) wrapped in
    ``RetryableError`` naming the peer."""
    try:
        return await client.post(url, content=content, headers=headers)
    except httpx.TimeoutException as exc:
        raise RetryableError(f"{peer}: {type(exc).__name__} after {_timeout_of(client, exc)}"
                             ) from exc
    except httpx.TransportError as exc:
        raise RetryableError(
            f"{peer}: {type(exc).__name__}: {redact(str(exc)) or 'connection failed'}"
        ) from exc


def _timeout_of(client: httpx.AsyncClient, exc: httpx.TimeoutException) -> str:
    t = client.timeout
    if isinstance(exc, httpx.ConnectTimeout):
        return f"{t.connect} s (connect)"
    return f"{t.read} s (no answer)"


class HasSeq(Protocol):
    @property
    def seq(self) -> int: ...


P = TypeVar("P", bound=HasSeq)


async def send_entries(
    parts: Sequence[P],
    send: Callable[[Sequence[P]], Awaitable[httpx.Response]],
    *,
    peer: str,
    hold: frozenset[int],
    on_status: Callable[[int], None] | None = None,
) -> list[Rejection]:
    """Send ``parts`` (one per journal entry) in one request; split on a refusal.

    Returns the rejections; raises ``RetryableError`` when the peer is unavailable.
    """
    if not parts:
        return []
    resp = await send(parts)
    if on_status is not None:
        on_status(resp.status_code)
    v = verdict(resp.status_code, hold)
    if v == "ok":
        return []
    if v == "retry":
        raise retryable(resp, peer)
    if len(parts) == 1 or resp.status_code not in SPLIT_STATUSES:
        return [_reject(p, resp, peer) for p in parts]
    log.warning(
        "peer refused a batch; sending its entries one by one",
        peer=peer, status=resp.status_code, entries=len(parts),
        first_seq=parts[0].seq, last_seq=parts[-1].seq, body=excerpt(resp.text),
    )
    rejected: list[Rejection] = []
    for part in parts:
        one = await send([part])
        if on_status is not None:
            on_status(one.status_code)
        v = verdict(one.status_code, hold)
        if v == "retry":
            raise retryable(one, peer)
        if v == "reject":
            rejected.append(_reject(part, one, peer))
    return rejected


def _reject(part: HasSeq, resp: httpx.Response, peer: str) -> Rejection:
    log.warning(
        "peer refused an entry; it goes to the dead letters",
        peer=peer, seq=part.seq, status=resp.status_code, body=excerpt(resp.text),
    )
    return Rejection(part.seq, f"{peer} refused it: HTTP {resp.status_code} "
                               f"{redact(resp.reason_phrase)}", redact(resp.text))
