"""The production profile against node-opcua: Basic256Sha256 SignAndEncrypt only,
hashed passwords, a client-certificate trust list, no anonymous, no default admin."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
from opcua_fixtures import (
    NS_URI,
    FakeGateway,
    demo_registry,
    running_sink,
    server_mode,  # noqa: F401  (every test in both server modes)
)
from peers import run_node_client

from edge.protocols.opcua.security import hash_password

pytestmark = pytest.mark.peer("node")
PASSWORD = "correct horse battery staple"


def client(endpoint: str, pki: Path, **kw: object) -> dict[str, object]:
    return {"endpoint": endpoint, "pki": str(pki), "security": "sign_encrypt",
            "ns_uri": NS_URI, "steps": [{"read": ["s=etch1/chamber_temp"]}], **kw}


@pytest.fixture(scope="module")
def users_secret() -> dict[str, str]:
    return {"OPCUA_USERS": f"# operators\noperator:{hash_password(PASSWORD)}\n"}


async def test_trusted_client_with_password_reads_and_bad_logins_are_refused(
    tmp_path: Path, users_secret: dict[str, str]
) -> None:
    """A client whose certificate is in the trust folder logs in with its password; a
    wrong password, the name 'admin' and anonymous login are refused; the server
    certificate was generated into <state_dir>/opcua with a private key file."""
    async with running_sink(tmp_path, demo_registry(), FakeGateway(), secrets=users_secret,
                            profile="production", users_secret="OPCUA_USERS",
                            login_fail_interval_s=0.0) as sink:
        pki = tmp_path / "client-pki"
        made = await run_node_client("opcua_client.js", client(sink.endpoint, pki, cert_only=True))
        assert made["ok"], made
        trusted = tmp_path / "state" / "opcua" / "trusted"
        shutil.copy(str(made["certificate"]), trusted / "test-client.pem")

        good = await run_node_client("opcua_client.js", client(
            sink.endpoint, pki, user="operator", password=PASSWORD))
        assert good["ok"], good
        assert good["results"][0]["read"][0]["dataType"] == "ns=0;i=10"

        tries = await run_node_client("opcua_client.js", client(sink.endpoint, pki, attempts=[
            {"user": "operator", "password": "wrong"}, {"user": "admin", "password": "admin"},
            {"user": "admin", "password": ""}, {}, {"user": "operator", "password": PASSWORD},
        ]))
        assert tries["ok"], tries
        outcome = [(r["ok"], r.get("error", "")) for r in tries["results"]]  # type: ignore[union-attr]
        assert [ok for ok, _ in outcome] == [False, False, False, False, True], outcome
        assert all("BadUserAccessDenied" in err for _, err in outcome[:3]), outcome
        assert "ANONYMOUS" in outcome[3][1], outcome
    folder = tmp_path / "state" / "opcua"
    assert (folder / "server_cert.der").stat().st_size > 500
    assert stat.S_IMODE((folder / "server_key.pem").stat().st_mode) == 0o600


async def test_untrusted_certificate_and_no_security_are_refused(
    tmp_path: Path, users_secret: dict[str, str]
) -> None:
    """A client with a certificate that is not in the trust folder cannot open a
    session even with the right password, and security None is not offered at all."""
    async with running_sink(tmp_path, demo_registry(), FakeGateway(), secrets=users_secret,
                            profile="production", users_secret="OPCUA_USERS") as sink:
        untrusted = await run_node_client("opcua_client.js", client(
            sink.endpoint, tmp_path / "fresh-pki", user="operator", password=PASSWORD))
        assert not untrusted["ok"], untrusted
        plain = await run_node_client("opcua_client.js", {
            **client(sink.endpoint, tmp_path / "fresh-pki"), "security": "none"})
        assert not plain["ok"], plain
