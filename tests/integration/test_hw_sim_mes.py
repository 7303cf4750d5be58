"""MES simulator over HTTP: dedup, validation, durability, and every fault mode."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hw_sim.mes import MesServer

TOKEN = "t0ken"


def _batch(*ids: str, rtype: str = "measurement") -> dict[str, Any]:
    return {"gateway_id": "gw1", "records": [{"id": i, "type": rtype, "v": 1} for i in ids]}


@pytest.fixture
async def mes(tmp_path: Path) -> AsyncIterator[MesServer]:
    server = MesServer(tmp_path / "mes.sqlite", token=TOKEN, seed=1)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def api(mes: MesServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{mes.port}",
        timeout=5,
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as c:
        yield c


@pytest.fixture
async def admin(mes: MesServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{mes.admin_port}", timeout=5) as c:
        yield c


async def _counts(admin: httpx.AsyncClient) -> dict[str, Any]:
    r = await admin.get("/api/v1/counts")
    return dict(r.json())


async def test_repeated_key_is_stored_once(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """A batch sent twice with one Idempotency-Key is stored once and answered the same."""
    h = {"Idempotency-Key": "k1"}
    r1 = await api.post("/api/v1/records", json=_batch("a", "b"), headers=h)
    r2 = await api.post("/api/v1/records", json=_batch("a", "b"), headers=h)
    assert (r1.status_code, r2.status_code) == (201, 200)
    assert r1.json()["accepted"] == r2.json()["accepted"] == 2
    c = await _counts(admin)
    assert (c["records"], c["batches"], c["duplicate_keys"]) == (2, 1, 1)


async def test_duplicate_record_ids_are_counted_not_stored(api: httpx.AsyncClient) -> None:
    """A record id already stored, under a new key, is a duplicate and not stored again."""
    await api.post("/api/v1/records", json=_batch("a"), headers={"Idempotency-Key": "k1"})
    r = await api.post(
        "/api/v1/records",
        json=_batch("a", "c", rtype="quarantine"),
        headers={"Idempotency-Key": "k2"},
    )
    assert r.json() == {"accepted": 1, "duplicates": 1, "replayed": False}
    c = (await api.get("/api/v1/counts")).json()
    assert c["by_type"] == {"measurement": 1, "quarantine": 1} and c["duplicate_records"] == 1
    recs = (await api.get("/api/v1/records", params={"type": "quarantine"})).json()["records"]
    assert [x["id"] for x in recs] == ["c"]


async def test_bad_requests_are_refused_whole(api: httpx.AsyncClient) -> None:
    """401 for a wrong token, 400 for non-JSON, 422 naming a record without id; nothing stored."""
    r = await api.post("/api/v1/records", json=_batch("a"), headers={"Authorization": "Bearer x"})
    assert r.status_code == 401
    r = await api.post("/api/v1/records", content=b"{not json")
    assert r.status_code == 400 and "error" in r.json()
    bad = _batch("a")
    bad["records"].append({"type": "measurement"})
    r = await api.post("/api/v1/records", json=bad)
    assert r.status_code == 422 and "records[1]" in r.json()["error"]
    assert (await api.get("/api/v1/counts")).json()["records"] == 0


async def test_records_survive_a_restart(tmp_path: Path) -> None:
    """What was answered 2xx is in the SQLite file after the MES is closed and reopened."""
    server = MesServer(tmp_path / "m.sqlite")
    await server.start()
    async with httpx.AsyncClient() as c:
        r = await c.post(f"http://127.0.0.1:{server.port}/api/v1/records", json=_batch("x", "y"))
        assert r.status_code == 201
    await server.close()
    again = MesServer(tmp_path / "m.sqlite")
    assert again.store.counts()["records"] == 2
    again.store.close()


async def test_refuse_mode_refuses_connections(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """refuse: connects fail while the admin port still answers; ok: serving again."""
    assert (await admin.post("/admin/fault", json={"mode": "refuse"})).json()["mode"] == "refuse"
    with pytest.raises(httpx.ConnectError):
        await api.post("/api/v1/records", json=_batch("a"))
    await admin.post("/admin/fault", json={"mode": "ok"})
    r = await api.post("/api/v1/records", json=_batch("a"))
    assert r.status_code == 201


async def test_blackhole_accepts_and_never_answers(
    mes: MesServer, admin: httpx.AsyncClient
) -> None:
    """blackhole: the connection is accepted, the request is never answered."""
    await admin.post("/admin/fault", json={"mode": "blackhole"})
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.5, connect=2.0)) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(f"http://127.0.0.1:{mes.port}/api/v1/counts")
    assert (await _counts(admin))["records"] == 0


async def test_error5xx_at_a_rate(api: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    """error5xx at rate 0.5 answers 503 to about half the requests, storing nothing for them."""
    await admin.post("/admin/fault", json={"mode": "error5xx", "rate": 0.5})
    codes = [
        (await api.post("/api/v1/records", json=_batch(f"r{i}"))).status_code for i in range(60)
    ]
    n503 = codes.count(503)
    assert 15 < n503 < 45 and codes.count(201) == 60 - n503
    assert (await _counts(admin))["records"] == 60 - n503


async def test_ratelimit_sends_retry_after(
    api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """ratelimit answers 429 with Retry-After."""
    await admin.post("/admin/fault", json={"mode": "ratelimit", "rate": 1.0, "retry_after_s": 2})
    r = await api.post("/api/v1/records", json=_batch("a"))
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    fault = (await admin.get("/admin/fault")).json()
    assert fault["mode"] == "ratelimit" and fault["stats"]["429"] == 1


async def test_slow_mode_adds_latency(api: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    """slow: the answer comes after latency_s, the batch is already committed."""
    await admin.post("/admin/fault", json={"mode": "slow", "latency_s": 0.4})
    t0 = time.monotonic()
    r = await api.post("/api/v1/records", json=_batch("a"))
    assert r.status_code == 201 and time.monotonic() - t0 >= 0.4
    assert (await _counts(admin))["records"] == 1


async def test_blackhole_to_refuse_logs_no_traceback(
    mes: MesServer, admin: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Switching blackhole -> refuse drops the held requests without an error-level traceback."""
    await admin.post("/admin/fault", json={"mode": "blackhole"})
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.3, connect=2.0)) as c:
        for _ in range(3):
            with pytest.raises(httpx.ReadTimeout):
                await c.get(f"http://127.0.0.1:{mes.port}/api/v1/counts")
    with caplog.at_level("ERROR"):
        await admin.post("/admin/fault", json={"mode": "refuse"})
        await admin.post("/admin/fault", json={"mode": "ok"})
        await admin.get("/admin/fault")  # a few loop turns for the held handlers to end
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []
