"""The production profile's login rate limit is per client: real asyncua clients over
loopback, each from its own source address (127.0.0.0/8 is all local)."""

from __future__ import annotations

import asyncio
import contextvars
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from opcua_fixtures import (
    FakeGateway,
    demo_registry,
    running_sink,
    server_mode,  # noqa: F401  (every test in both server modes)
)

from edge.protocols.opcua.security import hash_password

PASSWORD = "correct horse battery staple"
CLIENT_URI = "urn:edge-gateway:test-client"
_SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("source", default=None)


@pytest.fixture
async def source_addresses(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Connections opened in a task with ``_SOURCE`` set leave from that address."""
    loop = asyncio.get_running_loop()
    connect = loop.create_connection

    async def create_connection(*args: Any, **kw: Any) -> Any:
        source = _SOURCE.get()
        if source is not None:
            kw.setdefault("local_addr", (source, 0))
        return await connect(*args, **kw)

    monkeypatch.setattr(loop, "create_connection", create_connection)
    yield


async def login(endpoint: str, pki: Path, server_cert: Path, user: str, password: str,
                source: str) -> str:
    """'ok', or the name of the status code the server refused the session with."""
    _SOURCE.set(source)
    client = Client(endpoint, timeout=10)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256, str(pki / "cert.der"), str(pki / "key.pem"),
        server_certificate=str(server_cert), mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    client.set_user(user)
    client.set_password(password)
    try:
        await client.connect()
    except ua.UaStatusCodeError as exc:
        return type(exc).__name__
    await client.disconnect()
    return "ok"


async def test_a_client_guessing_passwords_does_not_lock_out_another_client(
    tmp_path: Path, source_addresses: None
) -> None:
    """While 127.0.0.1 sends wrong passwords at ~16/s, a correct login from 127.0.0.2
    (same certificate) succeeds, and the guessing address stays refused even with
    another user's correct password."""
    users = {"OPCUA_USERS": f"operator:{hash_password(PASSWORD)}\n"
                            f"engineer:{hash_password(PASSWORD)}\n"}
    async with running_sink(tmp_path, demo_registry(), FakeGateway(), secrets=users,
                            profile="production", users_secret="OPCUA_USERS",
                            login_fail_interval_s=30.0) as sink:
        pki = tmp_path / "client-pki"
        probe = Client(sink.endpoint)
        probe.application_uri = CLIENT_URI
        await probe.setup_self_signed_certificate(pki / "key.pem", pki / "cert.der")
        shutil.copy(pki / "cert.der", tmp_path / "state" / "opcua" / "trusted" / "client.der")
        server_cert = tmp_path / "state" / "opcua" / "server_cert.der"

        refused_once = asyncio.Event()
        stop = asyncio.Event()
        hammer_results: list[str] = []

        async def hammer() -> None:
            for i in range(200):  # bounded: ~12 s at most
                if stop.is_set():
                    return
                hammer_results.append(await login(
                    sink.endpoint, pki, server_cert, "operator", f"guess{i}", "127.0.0.1"))
                refused_once.set()
                await asyncio.sleep(1 / 16)

        task = asyncio.create_task(hammer())
        try:
            await asyncio.wait_for(refused_once.wait(), 30)
            other = await login(sink.endpoint, pki, server_cert, "operator", PASSWORD,
                                "127.0.0.2")
            guesser = await login(sink.endpoint, pki, server_cert, "engineer", PASSWORD,
                                  "127.0.0.1")
        finally:
            stop.set()
            await task
    assert hammer_results and set(hammer_results) == {"BadUserAccessDenied"}, hammer_results
    assert other == "ok"
    assert guesser == "BadUserAccessDenied"
