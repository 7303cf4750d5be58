"""The InfluxDB sink: samples and records from the journal as gzip'd line protocol.

Two write APIs, one wire format:

* ``api = "v1"``: ``POST /write?db=&rp=&precision=`` (InfluxDB 1.x, 1.8 on most Pis),
  Basic auth when a username is set.
* ``api = "v2"``: ``POST /api/v2/write?org=&bucket=&precision=`` with
  ``Authorization: Token`` (InfluxDB 2.x/3.x, 1.8's compatibility API,
  VictoriaMetrics), the request influxdb-client's ``write`` makes. We send it with our
  own httpx client so both APIs share TLS, timeouts and the answer policy, and no
  library layer batches or retries behind the journal's back.

Invariants:

* One POST per ``write`` holding every point of the given entries (the schema is in
  ``edge.sinks.lineproto``). Re-sending is harmless: a point with the same series and
  timestamp overwrites itself.
* Encoding runs on the event loop in slices of ``SLICE_POINTS`` with a yield between
  them, so a 50,000-point batch never holds the loop for more than about a
  millisecond at a time; gzip, too, runs in 64 KiB slices (measured: better than a
  worker thread, see ``gzip_sliced``).
* Answers follow ``edge.sinks.http_common``. InfluxDB 1.x answers a bad line with
  ``400 partial write`` after storing the good lines: the batch is re-sent entry by
  entry and only the entries refused on their own go to the dead letters, with the
  answer as the body. An entry naming a tag id the registry does not know (a journal
  written under another config) is dead-lettered without being sent.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

import httpx
import msgspec
import structlog

from edge.asset import AssetConfig
from edge.components import BuildContext, Rejection, WriteResult
from edge.errors import RetryableError
from edge.journal import Entry, Kind
from edge.model import RECORD_TYPE_NAMES, SampleBatch, TagRegistry, record_type
from edge.runtime.metrics import Metrics
from edge.sinks.http_common import (
    HttpOptions,
    HttpSinkMetrics,
    check_url,
    make_client,
    post,
    retryable,
    send_entries,
)
from edge.sinks.lineproto import (
    RecordEncoder,
    SampleEncoder,
    UnknownTagError,
    sanitise,
)

log = structlog.get_logger("edge.sinks.influx")

SLICE_POINTS = 1000
GZIP_SLICE = 64 * 1024
_V1_PRECISION = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}


class InfluxSinkConfig(HttpOptions, frozen=True, kw_only=True):
    """``[[sinks]] type = "influx"``."""

    name: str
    url: str
    api: Literal["v1", "v2"] = "v1"
    # v1
    database: str = ""
    retention_policy: str = ""
    username: str = ""
    password_secret: str = ""
    # CREATE DATABASE on connect (idempotent in 1.x); needs a user allowed to create one
    create_database: bool = False
    # v2
    org: str = ""
    bucket: str = ""
    token_secret: str = ""
    # both
    precision: Literal["ns", "us", "ms", "s"] = "ns"
    # static tags on every point, e.g. {site = "fab1", line = "stf"}
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    samples: bool = True
    records: bool = True
    record_types: list[str] = msgspec.field(default_factory=lambda: list(RECORD_TYPE_NAMES))
    gzip_level: int = 1  # 0 sends the body uncompressed

    def __post_init__(self) -> None:
        super().__post_init__()
        check_url(self.url)
        if self.api == "v1":
            if not self.database:
                raise ValueError("database is required with api = \"v1\"")
            if self.password_secret and not self.username:
                raise ValueError("password_secret needs a username")
        elif self.create_database:
            raise ValueError("create_database is for api = \"v1\" (v2 buckets are made "
                             "with the influx CLI)")
        elif not (self.org and self.bucket):
            raise ValueError("org and bucket are required with api = \"v2\"")
        for key, value in self.tags.items():
            if key == "gateway" or sanitise(key) != key or not key:
                raise ValueError(f"tags: key {key!r} is reserved or has \\ or control chars")
            if not value:
                raise ValueError(f"tags: {key} must not be empty")
        if not (self.samples or self.records):
            raise ValueError("samples and records are both false: nothing to write")
        unknown = sorted(set(self.record_types) - set(RECORD_TYPE_NAMES))
        if unknown:
            raise ValueError(
                f"record_types has unknown types {unknown} "
                f"(known: {', '.join(RECORD_TYPE_NAMES)})"
            )
        if not 0 <= self.gzip_level <= 9:
            raise ValueError("gzip_level must be 0 (off) to 9")

    def asset_problems(self, asset: AssetConfig, tags: TagRegistry) -> list[str]:
        """A static tag named like an [asset] level that is set would be overwritten
        per device: say so instead of writing one of them silently."""
        levels = set(asset.default.tags()).union(*(o.given() for o in asset.devices.values()))
        return [f"sink '{self.name}': tags.{key} is also set by [asset] per device: "
                "remove it from tags" for key in sorted(set(self.tags) & levels)]

    def build(self, ctx: BuildContext) -> InfluxSink:
        secret = ""
        if self.api == "v2" and self.token_secret:
            secret = ctx.secrets(self.token_secret)
        elif self.api == "v1" and self.password_secret:
            secret = ctx.secrets(self.password_secret)
        return InfluxSink(self, gateway_id=ctx.gateway_id, tags=ctx.tags, secret=secret,
                          metrics=ctx.metrics, asset=ctx.asset)


@dataclass(frozen=True, slots=True)
class _Part:
    seq: int
    lines: bytes
    points: int


class InfluxSink:
    def __init__(self, cfg: InfluxSinkConfig, *, gateway_id: str, tags: TagRegistry,
                 secret: str = "", metrics: Metrics | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 asset: AssetConfig | None = None) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.gateway_id = gateway_id
        kinds: list[Kind] = []
        if cfg.samples:
            kinds.append("samples")
        if cfg.records:
            kinds.append("records")
        self.kinds: tuple[Kind, ...] = tuple(kinds)
        static = {"gateway": gateway_id, **cfg.tags}
        where = asset or AssetConfig()
        known: dict[str, dict[str, str]] = {}

        def device_tags(device: str) -> dict[str, str]:
            tags = known.get(device)
            if tags is None:
                tags = known[device] = (where.path(device) if device
                                        else where.default).tags()
            return tags

        self._samples = SampleEncoder(tags, static, cfg.precision, device_tags)
        self._records = RecordEncoder(static, cfg.precision, device_tags, tags)
        self._types = frozenset(cfg.record_types)
        self._hold = frozenset(cfg.hold_statuses)
        self._secret = secret
        self._transport = transport
        base = cfg.url.rstrip("/")
        if cfg.api == "v1":
            self._url = f"{base}/write"
            params = {"db": cfg.database, "precision": _V1_PRECISION[cfg.precision]}
            if cfg.retention_policy:
                params["rp"] = cfg.retention_policy
        else:
            self._url = f"{base}/api/v2/write"
            params = {"org": cfg.org, "bucket": cfg.bucket, "precision": cfg.precision}
        self._params = params
        self._peer = f"InfluxDB '{cfg.name}' at {self._url}"
        self._client: httpx.AsyncClient | None = None
        self._m = HttpSinkMetrics(metrics or Metrics())

    async def connect(self) -> None:
        if self._client is not None:
            return
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.cfg.gzip_level:
            headers["Content-Encoding"] = "gzip"
        auth: tuple[str, str] | None = None
        if self.cfg.api == "v2" and self._secret:
            headers["Authorization"] = f"Token {self._secret}"
        elif self.cfg.api == "v1" and self.cfg.username:
            auth = (self.cfg.username, self._secret)
        # Building the TLS context reads the CA bundle: tens of ms, off the loop.
        client = await asyncio.to_thread(
            make_client, self.cfg, headers=headers, auth=auth, transport=self._transport
        )
        client.params = httpx.QueryParams(self._params)
        if self.cfg.create_database:
            try:
                await self._create_database(client)
            except BaseException:
                await client.aclose()
                raise
        self._client = client

    def _create_statement(self) -> str:
        return 'CREATE DATABASE "{}"'.format(self.cfg.database.replace('"', '\\"'))

    async def _create_database(self, client: httpx.AsyncClient) -> None:
        url = f"{self.cfg.url.rstrip('/')}/query"
        resp = await post(client, url, content=urlencode({"q": self._create_statement()}).encode(),
                          headers={"Content-Type": "application/x-www-form-urlencoded",
                                   "Content-Encoding": "identity"},
                          peer=self._peer)
        if not resp.is_success or "error" in resp.text:
            raise retryable(resp, f"{self._peer}: CREATE DATABASE {self.cfg.database!r}")
        log.info("influx database ready", sink=self.name, database=self.cfg.database)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def write(self, entries: Sequence[Entry]) -> WriteResult:
        parts: list[_Part] = []
        rejected: list[Rejection] = []
        for entry in entries:
            try:
                part = await self.encode(entry)
            except UnknownTagError as exc:
                log.warning("entry names an unknown tag; it goes to the dead letters",
                            sink=self.name, seq=entry.seq, error=str(exc))
                rejected.append(Rejection(entry.seq, f"cannot encode: {exc}"))
                continue
            if part.points:
                parts.append(part)
        rejected += await send_entries(
            parts, self._send, peer=self._peer, hold=self._hold, on_status=self._status
        )
        return WriteResult(rejected=tuple(rejected))

    async def encode(self, entry: Entry) -> _Part:
        """The entry's line protocol, encoded in slices that yield to the loop."""
        if entry.kind == "samples":
            batch = entry.samples()
            n = len(batch)
            if n <= SLICE_POINTS:
                return _Part(entry.seq, self._samples.encode(batch).encode(), n)
            chunks: list[str] = []
            for start in range(0, n, SLICE_POINTS):
                stop = min(start + SLICE_POINTS, n)
                chunks.append(self._samples.encode(SampleBatch(
                    batch.tag_id[start:stop], batch.ts_ns[start:stop],
                    batch.value[start:stop], batch.quality[start:stop],
                )))
                await asyncio.sleep(0)
            return _Part(entry.seq, "".join(chunks).encode(), n)
        records = entry.records()
        ids = entry.ids(self.gateway_id)
        keep = [(r, i) for r, i in zip(records, ids, strict=True)
                if record_type(r) in self._types]
        for r in records:
            if record_type(r) not in self._types:
                self._m.skipped.labels(self.name, record_type(r)).inc()
        text = self._records.encode([r for r, _ in keep], [i for _, i in keep])
        return _Part(entry.seq, text.encode(), len(keep))

    async def _send(self, parts: Sequence[_Part]) -> httpx.Response:
        if self._client is None:
            raise RetryableError(f"{self._peer}: not connected")
        body = b"".join(p.lines for p in parts)
        if self.cfg.gzip_level:
            body = await gzip_sliced(body, self.cfg.gzip_level)
        self._m.sent.labels(self.name).inc(len(body))
        resp = await post(self._client, self._url, content=body, peer=self._peer)
        if resp.status_code == 404 and self.cfg.api == "v1" and "database not found" in resp.text:
            base = self.cfg.url.rstrip("/")
            err = retryable(resp, self._peer)
            raise RetryableError(
                f"{err}: set create_database = true on sink '{self.name}', or create it "
                f"once with: curl -XPOST '{base}/query' "
                f"--data-urlencode 'q={self._create_statement()}'",
                retry_after_s=err.retry_after_s,
            )
        return resp

    def _status(self, status: int) -> None:
        self._m.status.labels(self.name, str(status)).inc()


async def gzip_sliced(data: bytes, level: int) -> bytes:
    """gzip framing (RFC 1952), compressed in ``GZIP_SLICE`` pieces with a yield between.

    Measured here: zlib in a worker thread held the loop for 8-16 ms at a time (the
    thread re-takes the GIL between deflate calls), slices of 64 KiB for under 1 ms.
    """
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    view = memoryview(data)
    out: list[bytes] = []
    for start in range(0, len(data), GZIP_SLICE):
        out.append(c.compress(view[start:start + GZIP_SLICE]))
        await asyncio.sleep(0)
    out.append(c.flush())
    return b"".join(out)
