"""The web page's JSON API against a running gateway (fake source, real interlock stage,
real HTTP server on loopback): status document, tag search, audited interlock reset with
the CLI's refusals, login against hashed users, and the config's loopback rule."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from structlog.testing import capture_logs

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds web_gateway.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from web_gateway import INTERLOCK, LIMIT, web_gateway

from edge.config import loads
from edge.errors import ConfigError
from edge.processing.calendar import CalendarConfig, ShiftConfig
from edge.processing.energy import EnergyConfig, EnergyMotorConfig
from edge.processing.oee import OeeConfig, OeeToolConfig
from edge.processing.trace import WaferTraceConfig
from edge.protocols.opcua.security import hash_password
from edge.runtime.statusdoc import StatusDoc, encode
from edge.web.auth import is_loopback, parse_basic
from edge.web.config import WebConfig, WebUser

RESET = f"api/interlocks/{INTERLOCK}/reset"
FROM_PAGE = {"X-Edge-Gateway": "test"}
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    """Gateway.run freezes start-up objects and tunes the collector: undo it."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.enable()


def _strict(body: bytes) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(body, parse_constant=refuse)


async def test_status_is_the_typed_status_document_in_strict_json(tmp_path: Path) -> None:
    """GET /api/status is the gateway's StatusDoc, strict JSON (NaN as null), not cached."""
    async with web_gateway(tmp_path) as g, httpx.AsyncClient(base_url=g.url) as http:
        r = await http.get("api/status")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert r.headers["cache-control"] == "no-store"
        doc = _strict(r.content)
        assert isinstance(doc, dict) and list(doc) == list(StatusDoc.__struct_fields__)
        assert doc["gateway"] == "gw-web" and doc["ready"] is True
        il = doc["interlocks"][INTERLOCK]
        assert il["state"] == "ok" and il["limit"] == LIMIT
        assert il["last_value"] is None, "NaN before any sample is null"
        assert doc["interlocks"] == msgspec.json.decode(encode(g.gw.status()))["interlocks"]


async def test_status_carries_oee_energy_and_the_last_wafer(tmp_path: Path) -> None:
    """With OEE, energy and wafer-trace stages configured, GET /api/status has their
    sections (the page's OEE, Energy and Last wafer tables) as the gateway's own document
    says, strict JSON; the last wafer appears once a wafer left the tool."""
    day = CalendarConfig(shifts=[ShiftConfig(name="am", start="00:00", end="12:00"),
                                 ShiftConfig(name="pm", start="12:00", end="00:00")])
    temp = "etch1/chamber_temp"  # the test's only tag stands in for state, current and wafer
    sections: dict[str, list[object]] = {
        # publishing at every batch: the second sample shows run time and energy
        "oee": [OeeConfig(name="fab", calendar=day, publish_interval_s=1e-6, tools=[OeeToolConfig(
            name="etch1", ideal_cycle_s=45.0, state_tag=temp, state_kind="current",
            count_tag=temp, count_kind="rising")])],
        "energy": [EnergyConfig(name="stf", calendar=day, publish_interval_s=1e-6, motors=[
            EnergyMotorConfig(name="etch1_heater", current_tag=temp)])],
        "wafer_steps": [WaferTraceConfig(name="etch1", wafer_tag=temp)],
    }
    async with web_gateway(tmp_path, sections=sections) as g, \
            httpx.AsyncClient(base_url=g.url) as http:
        doc = _strict((await http.get("api/status")).content)
        assert isinstance(doc, dict) and doc["last_wafer"] is None
        for v in (150.0, 151.0):
            await g.feed(v)
        for _ in range(400):  # the stages run after the source emitted: bounded wait
            doc = _strict((await http.get("api/status")).content)
            assert isinstance(doc, dict)
            if doc["last_wafer"] is not None and doc["oee"] and doc["energy"]:
                break
            await asyncio.sleep(0.05)
        own = msgspec.json.decode(encode(g.gw.status()))
        assert doc["oee"] == own["oee"] and doc["energy"] == own["energy"]
        assert set(doc["oee"]) == {"etch1", "fab"}
        tool = doc["oee"]["etch1"]
        assert {k: tool[k] for k in ("scope", "line", "window_s")} == {
            "scope": "tool", "line": "fab", "window_s": 3600.0}
        assert tool["shift"] in ("am", "pm") and tool["availability"] == 1.0
        stf = doc["energy"]["stf"]
        assert set(stf["motors_kwh"]) == {"etch1_heater"} and stf["motors_kwh"]["etch1_heater"] > 0
        assert stf["kwh_per_good_part"] is None, "no shift closed: null, not NaN"
        wafer = doc["last_wafer"]
        assert (wafer["tool"], wafer["wafer"], wafer["trips"]) == ("etch1", "150", 0)
        assert 0 < wafer["start_ns"] <= wafer["end_ns"]


async def test_tags_search_returns_latest_value_quality_and_age(tmp_path: Path) -> None:
    """GET /api/tags?q= has the latest value the live path saw, its quality and age; every
    word of q must match; a bad limit is a 400 with the allowed range."""
    async with web_gateway(tmp_path) as g, httpx.AsyncClient(base_url=g.url) as http:
        await g.feed(150.25)
        await g.feed(151.5)
        r = await http.get("api/tags", params={"q": "ETCH1 Chamber"})
        body = _strict(r.content)
        assert isinstance(body, dict) and body["matched"] == 1
        row = body["tags"][0]
        assert row["tag"] == "etch1/chamber_temp" and row["value"] == 151.5
        assert row["unit"] == "degC" and row["quality"] == "good" and row["reason"] == "good"
        assert 0 <= row["age_s"] < 60
        r = await http.get("api/tags", params={"q": "etch1 pressure"})
        assert r.json() == {"matched": 0, "tags": []}
        everything = (await http.get("api/tags")).json()
        never = [t for t in everything["tags"] if t["ts_ns"] is None]
        assert never and all(t["value"] is None and t["reason"] == "bad_missing" for t in never)
        r = await http.get("api/tags", params={"limit": "0"})
        assert r.status_code == 400 and "1 to 1000" in r.json()["error"]


async def test_reset_is_refused_while_the_condition_is_active_and_audited(
        tmp_path: Path) -> None:
    """A reset while the temperature is above the limit is 409 with the reason and leaves
    the interlock tripped; once below, the same request resets it. Both are logged."""
    async with web_gateway(tmp_path) as g, httpx.AsyncClient(base_url=g.url) as http:
        await g.feed(195.0)
        assert g.state() == "tripped" and g.chamber.commands, "the interlock tripped"
        with capture_logs() as logs:
            r = await http.post(RESET, headers=FROM_PAGE)
        assert r.status_code == 409
        error = r.json()["error"]
        assert "still active" in error and "etch1/chamber_temp = 195" in error, error
        assert g.state() == "tripped"
        assert any(e["event"].startswith("interlock reset from the web refused")
                   and e["interlock"] == INTERLOCK and e["peer"] == "127.0.0.1" for e in logs)
        await g.feed(180.0)
        with capture_logs() as logs:
            r = await http.post(RESET, headers=FROM_PAGE)
        assert r.status_code == 200
        assert r.json()["ok"] is True and r.json()["interlock"] == INTERLOCK
        assert g.state() == "ok"
        assert any(e["event"] == "interlock reset from the web" for e in logs)


async def test_reset_of_an_unknown_interlock_is_404(tmp_path: Path) -> None:
    """An unknown interlock name is a 404 naming it, as the CLI says."""
    async with web_gateway(tmp_path) as g, httpx.AsyncClient(base_url=g.url) as http:
        r = await http.post("api/interlocks/nope/reset", headers=FROM_PAGE)
        assert r.status_code == 404 and "nope" in r.json()["error"]


async def test_a_post_not_from_the_page_is_refused(tmp_path: Path) -> None:
    """Without the page's header, or from another site's Origin, a reset is 403 and the
    interlock is not touched (another web page in the browser cannot reset it)."""
    async with web_gateway(tmp_path) as g, httpx.AsyncClient(base_url=g.url) as http:
        await g.feed(195.0)
        await g.feed(150.0)  # condition clear: a reset would take
        assert (await http.post(RESET)).status_code == 403
        r = await http.post(RESET, headers={**FROM_PAGE, "Origin": "http://evil.example"})
        assert r.status_code == 403
        assert g.state() == "tripped"
        host = g.url.removeprefix("http://").rstrip("/")
        r = await http.post(RESET, headers={**FROM_PAGE, "Origin": f"http://{host}"})
        assert r.status_code == 200 and g.state() == "ok"


async def test_without_users_only_a_loopback_host_name_is_served(tmp_path: Path) -> None:
    """Without login the page answers only requests for a loopback Host: a site that
    rebinds its own DNS name to 127.0.0.1 (DNS rebinding) can neither read nor reset."""
    async with web_gateway(tmp_path) as g, httpx.AsyncClient(base_url=g.url) as http:
        await g.feed(195.0)
        await g.feed(150.0)
        port = g.url.rsplit(":", 1)[1].rstrip("/")
        evil = {"Host": f"evil.example:{port}"}
        assert (await http.get("api/status", headers=evil)).status_code == 403
        r = await http.post(RESET, headers={**FROM_PAGE, **evil,
                                            "Origin": f"http://evil.example:{port}"})
        assert r.status_code == 403 and g.state() == "tripped"
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "127.0.0.1"):
            assert (await http.get("api/status", headers={"Host": host})).status_code == 200


async def test_the_page_is_served_and_needs_nothing_from_the_internet(tmp_path: Path) -> None:
    """GET / is the page; it loads no script, style or font from another host (no CDN)."""
    async with web_gateway(tmp_path) as g, httpx.AsyncClient(base_url=g.url) as http:
        r = await http.get("")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "Interlocks" in r.text and "api/status" in r.text
        for table in ('id="oee"', 'id="energy"', 'id="wafer"', "d.last_wafer"):
            assert table in r.text
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", r.text)
        assert not re.search(r"""(fetch|import)\(\s*["'`](https?:)?//""", r.text)


async def test_with_users_every_request_needs_a_valid_login(tmp_path: Path) -> None:
    """With users configured: no or a wrong login is 401 with a Basic challenge, the right
    one is let in and named in the audit line; after a failure the client waits (the
    OPC-UA login throttle) while a login it already proved still works."""
    web = WebConfig(listen="127.0.0.1:0", login_fail_interval_s=30.0, users=[
        WebUser(name="op", password_hash=hash_password(PASSWORD)),
        WebUser(name="eng", password_hash=hash_password(PASSWORD + "!"))])
    async with web_gateway(tmp_path, web) as g, httpx.AsyncClient(base_url=g.url) as http:
        r = await http.get("api/status")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic ")
        assert (await http.get("api/status", auth=("op", PASSWORD))).status_code == 200
        assert (await http.get("", auth=("op", PASSWORD))).status_code == 200
        with capture_logs() as logs:
            assert (await http.get("api/status", auth=("op", "guess"))).status_code == 401
        assert any(e["event"].startswith("web login refused") for e in logs)
        # Inside this client's wait a password not yet proved is not even hashed...
        assert (await http.get("api/status", auth=("eng", PASSWORD + "!"))).status_code == 401
        # ...while the browser's session of a proved login goes on (constant-time HMAC).
        with capture_logs() as logs:
            r = await http.post(RESET, headers=FROM_PAGE, auth=("op", PASSWORD))
        assert r.status_code == 200
        assert any(e["event"] == "interlock reset from the web" and e["user"] == "op"
                   for e in logs)


async def test_users_come_from_the_same_secret_format_as_opcua(tmp_path: Path) -> None:
    """users_secret holds the OPC-UA server's ``user:hash`` lines; they log in here."""
    web = WebConfig(listen="127.0.0.1:0", users_secret="web_users")
    secrets = {"web_users": f"op:{hash_password(PASSWORD)}\n"}
    async with web_gateway(tmp_path, web, secrets) as g, \
            httpx.AsyncClient(base_url=g.url) as http:
        assert (await http.get("api/status")).status_code == 401
        assert (await http.get("api/status", auth=("op", PASSWORD))).status_code == 200


def test_config_refuses_a_non_loopback_address_without_users() -> None:
    """Off unless a [[sinks]] web entry exists; loopback by default; on any other address
    the config is refused without users, with the reason."""
    cfg = loads('[[sinks]]\ntype = "web"\n')
    assert isinstance(cfg.sinks[0], WebConfig) and cfg.sinks[0].listen == "127.0.0.1:8008"
    for listen in ("0.0.0.0:8008", "[::]:8008", "192.168.1.10:80", "gateway.local:8008"):
        with pytest.raises(ConfigError, match="not a loopback address: users must be given"):
            loads(f'[[sinks]]\ntype = "web"\nlisten = "{listen}"\n')
    ok = loads('[[sinks]]\ntype = "web"\nlisten = "0.0.0.0:8008"\nusers_file = "/etc/u"\n')
    assert ok.sinks[0].listen == "0.0.0.0:8008"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="HOST:PORT"):
        loads('[[sinks]]\ntype = "web"\nlisten = "8008"\n')


def test_loopback_and_basic_header_parsing() -> None:
    """Only 127.0.0.0/8, ::1 and localhost count as loopback; a malformed Basic header is
    no login rather than an error."""
    assert all(map(is_loopback, ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com"]))
    assert parse_basic("Basic b3A6cGE6c3M=") == ("op", "pa:ss")
    for bad in ("", "Basic", "Bearer b3A6cHc=", "Basic !!!", "Basic b3A=", "Basic OnB3"):
        assert parse_basic(bad) is None, bad


def test_latest_tags_keep_the_last_sample_per_tag_and_grow_with_the_registry() -> None:
    """Per tag the last sample of a batch wins; unknown ids are ignored; tags declared
    after the store was built are served too."""
    import numpy as np

    from edge.model import Quality, SampleBatch, TagRegistry
    from edge.web.tags import LatestTags

    tags = TagRegistry()
    tags.add("m1", "current_a", unit="A")
    latest = LatestTags(tags)
    latest.publish(SampleBatch(np.array([0, 0, 7, 0]), np.array([1, 2, 3, 4]) * 10**9,
                               np.array([1.0, 2.0, 9.0, 3.0]),
                               np.array([0, 0, 0, int(Quality.UNCERTAIN_STALE)])))
    row = latest.search("current", now_ns=6 * 10**9)["tags"][0]  # type: ignore[index]
    assert row == {"tag": "m1/current_a", "unit": "A", "value": 3.0, "quality": "uncertain",
                   "reason": "uncertain_stale", "ts_ns": 4 * 10**9, "age_s": 2.0}
    tags.add("m2", "current_a")
    latest.publish(SampleBatch(np.array([1]), np.array([5 * 10**9]), np.array([4.0])))
    found = latest.search("CURRENT", limit=1)
    assert found["matched"] == 2 and len(found["tags"]) == 1  # type: ignore[arg-type]


async def test_a_taken_port_is_one_link_down_line_and_a_retry(tmp_path: Path) -> None:
    """A port in use is logged once as the page's link down (no traceback) and retried;
    the page serves as soon as the port is free."""
    import asyncio
    import socket

    from edge.components import BuildContext
    from edge.model import TagRegistry
    from edge.runtime.metrics import Metrics
    from edge.web.server import WebSink

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    ctx = BuildContext(gateway_id="gw", tags=TagRegistry(), metrics=Metrics(),
                       state_dir=tmp_path, secrets=lambda name: "")
    sink = WebConfig(listen=f"127.0.0.1:{port}").build(ctx)
    assert isinstance(sink, WebSink)
    with capture_logs() as logs:
        task = asyncio.create_task(sink.run())
        try:
            deadline = asyncio.get_running_loop().time() + 20
            while not any(e["event"] == "link down" for e in logs):
                assert asyncio.get_running_loop().time() < deadline, logs
                await asyncio.sleep(0.01)
            blocker.close()
            await asyncio.wait_for(sink.started.wait(), 30)
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{sink.url}api/tags")).status_code == 200
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    down = [e for e in logs if e["event"] == "link down"]
    assert len(down) == 1 and down[0]["link"] == "sink:web" and "exc_info" not in down[0]
    assert "address" in down[0]["error"].lower() or "in use" in down[0]["error"], down
