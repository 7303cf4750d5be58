"""The MES sink's requests and answer handling, against httpx.MockTransport (no sockets)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from edge.components import BuildContext
from edge.config import ConfigError, loads
from edge.errors import RetryableError
from edge.journal import Entry
from edge.model import (
    CmmReading,
    HealthAlert,
    InterlockTrip,
    Record,
    SampleBatch,
    SpcViolation,
    TagRegistry,
    encode_records,
)
from edge.runtime.metrics import Metrics
from edge.sinks.mes import MesSink, MesSinkConfig

Handler = Callable[[httpx.Request], httpx.Response]


def _entry(seq: int, records: list[Record]) -> Entry:
    return Entry(seq, "records", 0, len(records), encode_records(records))


def _alert(i: int) -> HealthAlert:
    return HealthAlert(ts_ns=i, motor=f"m{i}", health=0.5, ttf_s=100.0, reason="wear")


def _reading(i: int) -> CmmReading:
    return CmmReading(ts_ns=i, device="cmm1", part_id="p", lot="l", feature="f",
                      nominal_mm=1.0, tol_mm=0.1, measured_mm=1.01, part_temp_c=20.0,
                      air_temp_c=20.0, scale_temp_c=20.0)


def _sink(handler: Handler, **cfg: object) -> tuple[MesSink, Metrics]:
    metrics = Metrics()
    config = MesSinkConfig(name="mes", url="https://mes.test/base/", **cfg)  # type: ignore[arg-type]
    return MesSink(config, gateway_id="gw1", token="s3cret", metrics=metrics,
                   transport=httpx.MockTransport(handler)), metrics


async def test_request_shape() -> None:
    """One POST with the Idempotency-Key, bearer token, JSON content type and every record
    with its stable id and type, in journal order."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"accepted": 3})

    sink, _ = _sink(handler)
    await sink.connect()
    trip = InterlockTrip(ts_ns=5, interlock="hot", tag="etch1/t", condition="> 188",
                         value=190.0, limit=188.0, action="stop", action_ok=True,
                         reaction_ns=900)
    result = await sink.write([_entry(7, [_alert(1), trip]), _entry(9, [_alert(2)])])
    await sink.close()
    assert result.rejected == ()
    (req,) = seen
    assert req.method == "POST"
    assert str(req.url) == "https://mes.test/base/api/v1/records"
    assert req.headers["idempotency-key"] == "gw1-7-9"
    assert req.headers["authorization"] == "Bearer s3cret"
    assert req.headers["content-type"] == "application/json"
    body = json.loads(req.content)
    assert body["gateway_id"] == "gw1"
    assert [(r["id"], r["type"]) for r in body["records"]] == [
        ("gw1-7-0", "health_alert"), ("gw1-7-1", "interlock_trip"), ("gw1-9-0", "health_alert"),
    ]
    assert body["records"][1]["reaction_ns"] == 900 and body["records"][1]["action_ok"] is True


async def test_raw_readings_not_sent_by_default() -> None:
    """cmm_reading records are left out unless configured; an entry of only readings
    sends nothing and is not rejected; the skip is counted."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201)

    sink, metrics = _sink(handler)
    await sink.connect()
    assert (await sink.write([_entry(1, [_reading(1), _reading(2)])])).rejected == ()
    assert seen == []
    await sink.write([_entry(2, [_reading(3), _alert(4)])])
    assert [r["id"] for r in json.loads(seen[0].content)["records"]] == ["gw1-2-1"]
    snap = metrics.snapshot()
    assert snap['edge_sink_skipped_records_total{sink="mes",type="cmm_reading"}'] == 3
    await sink.close()

    seen.clear()
    sink, _ = _sink(handler, record_types=["cmm_reading"])
    await sink.connect()
    await sink.write([_entry(3, [_reading(3), _alert(4)])])
    assert [r["type"] for r in json.loads(seen[0].content)["records"]] == ["cmm_reading"]
    await sink.close()


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [(503, {"Retry-After": "3"}, 3.0), (429, {"Retry-After": "7"}, 7.0), (500, {}, None),
     (408, {}, None), (401, {}, None), (404, {}, None)],
)
async def test_retryable_answers(status: int, headers: dict[str, str],
                                 retry_after: float | None) -> None:
    """5xx, 408, 429 and held statuses raise RetryableError with Retry-After honoured."""
    sink, metrics = _sink(lambda r: httpx.Response(status, headers=headers, text="busy"))
    await sink.connect()
    with pytest.raises(RetryableError, match=str(status)) as info:
        await sink.write([_entry(1, [_alert(1)])])
    assert info.value.retry_after_s == retry_after
    assert metrics.snapshot()[
        f'edge_sink_http_responses_total{{sink="mes",status="{status}"}}'] == 1
    await sink.close()


async def test_black_hole_times_out() -> None:
    """A peer that never answers makes write fail with RetryableError (read timeout)."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    sink, _ = _sink(handler, timeout_s=1.0)
    await sink.connect()
    with pytest.raises(RetryableError, match=r"ReadTimeout after 1\.0 s"):
        await sink.write([_entry(1, [_alert(1)])])
    await sink.close()


async def test_bad_entry_is_isolated() -> None:
    """A 422 on a batch is retried entry by entry: the good entries are delivered and
    only the refused one is rejected, with the MES's answer."""
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["idempotency-key"])
        ids = [r["id"] for r in json.loads(request.content)["records"]]
        if "gw1-2-0" in ids:
            return httpx.Response(422, json={"error": "record gw1-2-0: bad"})
        return httpx.Response(201)

    sink, _ = _sink(handler)
    await sink.connect()
    result = await sink.write([_entry(1, [_alert(1)]), _entry(2, [_alert(2)]),
                               _entry(3, [_alert(3)])])
    assert keys == ["gw1-1-3", "gw1-1-1", "gw1-2-2", "gw1-3-3"]
    (rej,) = result.rejected
    assert rej.seq == 2 and "422" in rej.reason and "gw1-2-0: bad" in rej.body
    await sink.close()


async def test_samples_entries_ignored() -> None:
    """The MES sink takes records only and never sends samples."""
    sink, _ = _sink(lambda r: httpx.Response(500))
    assert sink.kinds == ("records",)
    await sink.connect()
    batch = SampleBatch([0], [1], [1.0])
    assert (await sink.write([Entry(1, "samples", 0, 1, batch.to_bytes())])).rejected == ()
    await sink.close()


def test_config_from_toml_and_build(tmp_path: Path) -> None:
    """The TOML section builds a sink reading its token from the named secret."""
    cfg = loads(
        '[[sinks]]\ntype = "mes"\nname = "mes"\nurl = "http://127.0.0.1:9"\n'
        'token_secret = "MES_TOKEN"\ntimeout_s = 2.5\n'
    )
    (mes,) = cfg.sinks
    assert isinstance(mes, MesSinkConfig)
    asked: list[str] = []

    def secrets(name: str) -> str:
        asked.append(name)
        return "tok"

    ctx = BuildContext("gw9", TagRegistry(), Metrics(), tmp_path, secrets)
    sink = mes.build(ctx)
    assert asked == ["MES_TOKEN"] and sink.name == "mes" and sink.gateway_id == "gw9"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('url = "mes.local"', "sink 'mes': url must be an http"),
        ('url = "http://x"\npath = "api"', "sink 'mes': path must start with '/'"),
        ('url = "http://x"\nrecord_types = ["bogus"]', "sink 'mes': record_types has unknown"),
        ('url = "http://x"\ntimeout_s = -1', "sink 'mes': timeout_s must be > 0"),
        ('url = "http://x"\ntoken = "abc"', "sink 'mes': unknown key 'token'"),
    ],
)
def test_config_errors(body: str, message: str) -> None:
    """Config mistakes name the sink and the key."""
    with pytest.raises(ConfigError) as info:
        loads(f'[[sinks]]\ntype = "mes"\nname = "mes"\n{body}\n')
    assert str(info.value).startswith(message), str(info.value)


async def test_spc_json_is_plain_numbers() -> None:
    """Floats reach the MES as JSON numbers with their exact value."""
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(201)

    sink, _ = _sink(handler)
    await sink.connect()
    v = SpcViolation(ts_ns=1, tag="t", rule="r", value=0.1 + 0.2, center=1.0, sigma=0.5)
    await sink.write([_entry(1, [v])])
    assert json.loads(seen[0])["records"][0]["value"] == 0.1 + 0.2
    await sink.close()
