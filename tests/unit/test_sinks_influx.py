"""The InfluxDB sink's requests (v1 and v2) and answer handling, against httpx.MockTransport."""

from __future__ import annotations

import base64
import gzip
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from edge.components import BuildContext
from edge.config import ConfigError, loads
from edge.errors import RetryableError
from edge.journal import Entry
from edge.model import CmmReading, HealthAlert, SampleBatch, TagRegistry, encode_records
from edge.runtime.metrics import Metrics
from edge.sinks.influx import GZIP_SLICE, SLICE_POINTS, InfluxSink, InfluxSinkConfig, gzip_sliced

Handler = Callable[[httpx.Request], httpx.Response]


def _registry() -> TagRegistry:
    reg = TagRegistry()
    reg.add("etch1", "chamber_temp")
    reg.add("etch1", "pressure")
    return reg


def _samples(seq: int, n: int = 2, tag: int = 0) -> Entry:
    batch = SampleBatch(np.full(n, tag), np.arange(n) + 1_000 * seq, np.arange(n) * 0.5)
    return Entry(seq, "samples", 0, n, batch.to_bytes())


def _sink(handler: Handler, secret: str = "", **cfg: object) -> InfluxSink:
    opts: dict[str, object] = {"name": "influx", "url": "http://influx.test:8086",
                               "database": "edge"}
    opts.update(cfg)
    config = InfluxSinkConfig(**opts)  # type: ignore[arg-type]
    return InfluxSink(config, gateway_id="gw1", tags=_registry(), secret=secret,
                      metrics=Metrics(), transport=httpx.MockTransport(handler))


def _lines(request: httpx.Request) -> list[str]:
    body = request.content
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return body.decode().splitlines()


async def test_v1_request() -> None:
    """v1: POST /write?db=&rp=&precision=n, gzip'd, Basic auth when a user is set."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    sink = _sink(handler, secret="pw", retention_policy="autogen", username="edge",
                 tags={"site": "fab1"})
    await sink.connect()
    assert (await sink.write([_samples(1), _samples(2, tag=1)])).rejected == ()
    await sink.close()
    (req,) = seen
    assert req.url.path == "/write"
    assert dict(req.url.params) == {"db": "edge", "rp": "autogen", "precision": "n"}
    assert req.headers["content-encoding"] == "gzip"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"edge:pw").decode()
    assert _lines(req) == [
        "etch1,gateway=gw1,site=fab1 chamber_temp=0.0 1000",
        "etch1,gateway=gw1,site=fab1 chamber_temp=0.5 1001",
        "etch1,gateway=gw1,site=fab1 pressure=0.0 2000",
        "etch1,gateway=gw1,site=fab1 pressure=0.5 2001",
    ]


async def test_v2_request() -> None:
    """v2: POST /api/v2/write?org=&bucket=&precision= with a Token header."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    sink = _sink(handler, secret="tok", api="v2", database="", org="plant", bucket="edge",
                 precision="ms", gzip_level=0)
    await sink.connect()
    await sink.write([_samples(1_000_000)])
    await sink.close()
    (req,) = seen
    assert req.url.path == "/api/v2/write"
    assert dict(req.url.params) == {"org": "plant", "bucket": "edge", "precision": "ms"}
    assert req.headers["authorization"] == "Token tok"
    assert "content-encoding" not in req.headers
    assert _lines(req)[0] == "etch1,gateway=gw1 chamber_temp=0.0 1000"


async def test_records_and_kinds() -> None:
    """Records go out as their own measurements; record_types filters; kinds follow config."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    sink = _sink(handler, samples=False, record_types=["health_alert"])
    assert sink.kinds == ("records",)
    await sink.connect()
    reading = CmmReading(ts_ns=1, device="c", part_id="p", lot="l", feature="f",
                         nominal_mm=1.0, tol_mm=0.1, measured_mm=1.0, part_temp_c=20.0,
                         air_temp_c=20.0, scale_temp_c=20.0)
    alert = HealthAlert(ts_ns=2, motor="m1", health=0.3, ttf_s=10.0, reason="wear")
    recs = [reading, alert]
    await sink.write([Entry(4, "records", 0, 2, encode_records(recs))])
    await sink.write([Entry(5, "records", 0, 1, encode_records([reading]))])
    await sink.close()
    (req,) = seen
    assert _lines(req) == [
        'health_alert,gateway=gw1,motor=m1 health=0.3,ttf_s=10.0,reason="wear",id="gw1-4-1" 2'
    ]


async def test_large_entry_sliced_equals_whole() -> None:
    """An entry larger than one slice encodes to the same text as in one piece."""
    n = SLICE_POINTS * 3 + 17
    sink = _sink(lambda r: httpx.Response(204))
    entry = _samples(3, n)
    part = await sink.encode(entry)
    assert part.points == n
    assert part.lines.decode() == sink._samples.encode(entry.samples())


async def test_partial_write_isolated() -> None:
    """A 400 partial write on a batch is retried entry by entry and only the entry that
    is refused on its own goes to the dead letters, with InfluxDB's answer."""
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        lines = _lines(request)
        calls.append(len(lines))
        if any("pressure" in line for line in lines):
            return httpx.Response(400, json={
                "error": 'partial write: field type conflict: input field "pressure" '
                         'on measurement "etch1" is type float, already exists as type '
                         "integer dropped=2"})
        return httpx.Response(204)

    sink = _sink(handler)
    await sink.connect()
    result = await sink.write([_samples(1), _samples(2, tag=1), _samples(3)])
    await sink.close()
    assert calls == [6, 2, 2, 2]
    (rej,) = result.rejected
    assert rej.seq == 2 and "partial write" in rej.body and "400" in rej.reason


async def test_unknown_tag_rejected_without_sending() -> None:
    """An entry naming a tag id outside the registry is dead-lettered; the rest is sent."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    sink = _sink(handler)
    await sink.connect()
    result = await sink.write([_samples(1), _samples(2, tag=9)])
    await sink.close()
    assert [r.seq for r in result.rejected] == [2]
    assert "tag id 9" in result.rejected[0].reason
    assert len(_lines(seen[0])) == 2


@pytest.mark.parametrize("status", [500, 503, 429, 408, 404, 401])
async def test_retryable(status: int) -> None:
    """5xx, 408, 429 and the held 401/404 (wrong credentials, no database) retry."""
    sink = _sink(lambda r: httpx.Response(status, headers={"Retry-After": "2"},
                                          json={"error": "database not found: edge"}))
    await sink.connect()
    with pytest.raises(RetryableError, match=str(status)) as info:
        await sink.write([_samples(1)])
    assert info.value.retry_after_s == 2.0
    await sink.close()


def test_config_from_toml_and_build(tmp_path: Path) -> None:
    """The TOML section builds a v2 sink reading its token from the named secret."""
    cfg = loads(
        '[[sinks]]\ntype = "influx"\nname = "tsdb"\nurl = "http://127.0.0.1:8428"\n'
        'api = "v2"\norg = "plant"\nbucket = "edge"\ntoken_secret = "INFLUX_TOKEN"\n'
        'tags = { site = "fab1" }\n'
    )
    (influx,) = cfg.sinks
    assert isinstance(influx, InfluxSinkConfig)
    ctx = BuildContext("gw9", _registry(), Metrics(), tmp_path, lambda name: name.lower())
    sink = influx.build(ctx)
    assert sink.name == "tsdb" and sink.kinds == ("samples", "records")
    assert sink._secret == "influx_token"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('url = "http://x"', "sink 'tsdb': database is required"),
        ('url = "http://x"\napi = "v2"\norg = "o"', "sink 'tsdb': org and bucket"),
        ('url = "http://x"\ndatabase = "d"\ntags = { gateway = "x" }', "sink 'tsdb': tags:"),
        ('url = "http://x"\ndatabase = "d"\nsamples = false\nrecords = false',
         "sink 'tsdb': samples and records"),
        ('url = "http://x"\ndatabase = "d"\nprecision = "m"', "sink 'tsdb': precision"),
        ('url = "http://x"\ndatabase = "d"\npassword_secret = "P"',
         "sink 'tsdb': password_secret needs a username"),
    ],
)
def test_config_errors(body: str, message: str) -> None:
    """Config mistakes name the sink and the key."""
    with pytest.raises(ConfigError) as info:
        loads(f'[[sinks]]\ntype = "influx"\nname = "tsdb"\n{body}\n')
    assert str(info.value).startswith(message), str(info.value)


async def test_gzip_sliced_round_trip() -> None:
    """The sliced gzip body is one valid gzip stream of the whole input."""
    data = b"".join(b"etch1,gateway=gw1 chamber_temp=%d.5 %d\n" % (i, i) for i in range(20_000))
    assert len(data) > 3 * GZIP_SLICE
    assert gzip.decompress(await gzip_sliced(data, 1)) == data
    assert gzip.decompress(await gzip_sliced(b"", 1)) == b""
