"""The MES sink: records from the journal as JSON batches over HTTP(S).

Invariants:

* One POST per ``write``: ``{"gateway_id": ..., "records": [...]}`` with every record
  of the entries given, in journal order, each with its stable id
  (``<gateway>-<seq>-<index>``) and ``type``. The ``Idempotency-Key`` is
  ``<gateway>-<first seq>-<last seq>`` of the entries in the request, so a retried
  request carries the same key, and a request over a different span still carries
  the same record ids: the MES stores each record once.
* Only the configured ``record_types`` are sent (default: all but ``cmm_reading``, the
  raw readings the MES does not want). Entries with nothing to send are acked as
  delivered; the skipped records are counted in ``edge_sink_skipped_records_total``.
* What an answer means is in ``edge.sinks.http_common``: link failures, timeouts,
  408/429/5xx retry (``Retry-After`` honoured); a 400/413/422 on several entries is
  retried entry by entry so that only the refused entries go to the dead letters, with
  the MES's answer as the body.
* Encoding yields to the event loop every ``YIELD_RECORDS`` records; the HTTP client
  (TLS context) is built in a worker thread. The loop is never held for long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import msgspec
import structlog

from edge.components import BuildContext, WriteResult
from edge.errors import RetryableError
from edge.journal import Entry, Kind
from edge.model import RECORD_TYPE_NAMES, json_dumps, record_to_builtins, record_type
from edge.runtime.metrics import Metrics
from edge.sinks.http_common import (
    HttpOptions,
    HttpSinkMetrics,
    check_url,
    make_client,
    post,
    send_entries,
)

log = structlog.get_logger("edge.sinks.mes")

YIELD_RECORDS = 100
# Raw inputs (a CMM reading before judgement, a text tag) are data, not MES events.
DEFAULT_RECORD_TYPES: list[str] = [
    t for t in RECORD_TYPE_NAMES if t not in ("cmm_reading", "text_value")
]


class MesSinkConfig(HttpOptions, frozen=True, kw_only=True):
    """``[[sinks]] type = "mes"``."""

    name: str
    url: str
    path: str = "/api/v1/records"
    token_secret: str = ""  # name of the secret holding the bearer token; "" = no auth
    record_types: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_RECORD_TYPES))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_url(self.url)
        if not self.path.startswith("/"):
            raise ValueError("path must start with '/'")
        unknown = sorted(set(self.record_types) - set(RECORD_TYPE_NAMES))
        if unknown:
            raise ValueError(
                f"record_types has unknown types {unknown} "
                f"(known: {', '.join(RECORD_TYPE_NAMES)})"
            )
        if not self.record_types:
            raise ValueError("record_types must name at least one record type")

    def build(self, ctx: BuildContext) -> MesSink:
        token = ctx.secrets(self.token_secret) if self.token_secret else ""
        return MesSink(self, gateway_id=ctx.gateway_id, token=token, metrics=ctx.metrics)


@dataclass(frozen=True, slots=True)
class _Part:
    """The JSON of one entry's records, comma-joined, ready to splice into a body."""

    seq: int
    json: bytes
    count: int


class MesSink:
    kinds: tuple[Kind, ...] = ("records",)

    def __init__(self, cfg: MesSinkConfig, *, gateway_id: str, token: str = "",
                 metrics: Metrics | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.gateway_id = gateway_id
        self._token = token
        self._transport = transport
        self._types = frozenset(cfg.record_types)
        self._hold = frozenset(cfg.hold_statuses)
        self._url = cfg.url.rstrip("/") + cfg.path
        self._peer = f"MES '{cfg.name}' at {self._url}"
        self._head = b'{"gateway_id":' + json_dumps(gateway_id) + b',"records":['
        self._client: httpx.AsyncClient | None = None
        self._m = HttpSinkMetrics(metrics or Metrics())

    async def connect(self) -> None:
        if self._client is None:
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            # Building the TLS context reads the CA bundle: tens of ms, off the loop.
            self._client = await asyncio.to_thread(
                make_client, self.cfg, headers=headers, transport=self._transport
            )

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def write(self, entries: Sequence[Entry]) -> WriteResult:
        parts: list[_Part] = []
        since_yield = 0
        for entry in entries:
            if entry.kind != "records":
                continue
            part = self._part(entry)
            if part is not None:
                parts.append(part)
            since_yield += entry.count
            if since_yield >= YIELD_RECORDS:  # about 1 ms of encoding: let the loop run
                since_yield = 0
                await asyncio.sleep(0)
        if not parts:
            return WriteResult()
        rejected = await send_entries(
            parts, self._send, peer=self._peer, hold=self._hold, on_status=self._status
        )
        return WriteResult(rejected=tuple(rejected))

    def _part(self, entry: Entry) -> _Part | None:
        records = entry.records()
        ids = entry.ids(self.gateway_id)
        out: list[dict[str, object]] = []
        for rec, rid in zip(records, ids, strict=True):
            kind = record_type(rec)
            if kind in self._types:
                out.append(record_to_builtins(rec, rid))
            else:
                self._m.skipped.labels(self.name, kind).inc()
        if not out:
            return None
        return _Part(entry.seq, json_dumps(out)[1:-1], len(out))

    def body(self, parts: Sequence[_Part]) -> bytes:
        return self._head + b",".join(p.json for p in parts) + b"]}"

    def idempotency_key(self, parts: Sequence[_Part]) -> str:
        return f"{self.gateway_id}-{parts[0].seq}-{parts[-1].seq}"

    async def _send(self, parts: Sequence[_Part]) -> httpx.Response:
        if self._client is None:
            raise RetryableError(f"{self._peer}: not connected")
        content = self.body(parts)
        self._m.sent.labels(self.name).inc(len(content))
        return await post(
            self._client, self._url, content=content, peer=self._peer,
            headers={"Idempotency-Key": self.idempotency_key(parts)},
        )

    def _status(self, status: int) -> None:
        self._m.status.labels(self.name, str(status)).inc()
