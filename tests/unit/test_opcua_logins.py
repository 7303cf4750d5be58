"""The OPC-UA production profile's login checks, without sockets."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from edge import cli
from edge.protocols.opcua.security import (
    HashedUserManager,
    PasswordHash,
    hash_password,
    parse_users,
)
from edge.protocols.opcua.security import main as sec_main
from edge.protocols.opcua.throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


A, B = ("10.0.0.1", ""), ("10.0.0.2", "")


def test_throttle_waits_grow_per_client_and_a_success_forgets() -> None:
    """A client waits 0.5, 1, 2 ... s (capped) after consecutive failures; another client
    is unaffected; a success clears the client's record."""
    clock = Clock()
    t = LoginThrottle(0.5, max_s=2.0, clock=clock)
    waits = []
    for _ in range(4):
        assert t.allow(A)
        t.failed(A)
        start = clock.now
        while not t.allow(A):
            clock.now += 0.125
        waits.append(clock.now - start)
        t._tokens = 10  # the shared budget is tested below
    assert waits == [0.5, 1.0, 2.0, 2.0]
    assert t.allow(B)
    t.failed(A)
    assert not t.allow(A)
    t.succeeded(A)
    assert t.allow(A) and len(t) == 0


def test_throttle_table_is_bounded() -> None:
    """Entries expire after forget_s; beyond max_clients new clients share one overflow
    entry, so a flood of addresses cannot grow the table or escape the limit."""
    clock = Clock()
    t = LoginThrottle(1.0, forget_s=60.0, max_clients=100, clock=clock)
    for i in range(1000):
        client = (f"10.1.{i // 256}.{i % 256}", "")
        t.allow(client)
        t.failed(client)
    assert len(t) == 101  # 100 clients and the overflow entry
    assert not t.allow(("10.9.9.9", ""))  # a newcomer is in the overflow's wait
    clock.now += 61
    assert t.allow(("10.9.9.9", "")) and len(t) == 0


def test_throttle_caps_hashing_for_clients_with_failures() -> None:
    """Clients past their wait but with failures on record share suspect_rate hashes per
    second; a client with no failure on record is never held back by them."""
    clock = Clock()
    t = LoginThrottle(0.5, suspect_rate=2.0, clock=clock)  # the default is 1.0
    guessers = [(f"10.2.0.{i}", "") for i in range(50)]
    for g in guessers:
        t.failed(g)
    clock.now += 1.0
    allowed = sum(t.allow(g) for g in guessers)
    assert allowed == 4  # the burst: 2 s worth of the shared rate
    assert t.allow(B)


def test_zero_interval_turns_the_throttle_off() -> None:
    """login_fail_interval_s = 0 keeps no record at all."""
    t = LoginThrottle(0.0)
    for _ in range(10):
        t.failed(A)
        assert t.allow(A)
    assert len(t) == 0


def test_manager_refuses_a_guessing_client_but_not_another() -> None:
    """Through the user manager: a wrong password from one client leaves another
    client's correct login working, while the first is refused without hashing."""
    users = parse_users(f"op:{hash_password('s3cret', scheme='pbkdf2_sha256')}", "users")
    mgr = HashedUserManager(users, None, fail_interval_s=60.0)
    assert not mgr.check("op", "wrong", A)
    assert not mgr.check("op", "s3cret", A)
    assert mgr.check("op", "s3cret", B)


WEAK_SCRYPT = "scrypt$2$8$1$c2FsdHNhbHQ=$aGFzaGhhc2g="
WEAK_PBKDF2 = "pbkdf2_sha256$10000$c2FsdHNhbHQ=$aGFzaGhhc2g="


def test_weak_hash_parameters_are_refused_naming_the_minimum() -> None:
    """scrypt N=2 and PBKDF2 with 10,000 iterations are refused with the minimum in the
    message; a users list names the user; what the hash tool makes is accepted."""
    with pytest.raises(ValueError, match=r"N=2, r=8, p=1 are too weak.*262144"):
        PasswordHash.parse(WEAK_SCRYPT)
    with pytest.raises(ValueError, match=r"10000 iterations is too weak.*600000"):
        PasswordHash.parse(WEAK_PBKDF2)
    with pytest.raises(ValueError, match=r"line 2: user 'bob': pbkdf2_sha256 .* too weak"):
        parse_users(f"alice:{hash_password('pw')}\nbob:{WEAK_PBKDF2}\n", "users")
    for scheme in ("scrypt", "pbkdf2_sha256"):
        assert PasswordHash.parse(hash_password("pw", scheme=scheme)).verify("pw")


def test_check_config_refuses_a_weak_inline_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config exits 2 and names the user, the scheme and the minimum."""
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[[sinks]]\ntype = "opcua"\nprofile = "production"\n'
                   f'users = [{{name = "alice", password_hash = "{WEAK_SCRYPT}"}}]\n')
    assert cli.main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "sink #1: user 'alice': password_hash scrypt" in err and "262144" in err, err


def test_hash_tool_output_passes(capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """python -m edge.protocols.opcua.security hash prints a hash the gateway accepts, and
    checking it again is fast once verified (the login cache)."""
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert sec_main(["hash"]) == 0
    line = capsys.readouterr().out.strip()
    mgr = HashedUserManager(parse_users(f"op:{line}", "users"), None)
    assert mgr.check("op", "s3cret")
    derived: list[str] = []
    real = PasswordHash.derive
    monkeypatch.setattr(PasswordHash, "derive",
                        lambda self, pw: derived.append(pw) or real(self, pw))
    assert mgr.check("op", "s3cret")
    assert derived == []  # served from the login cache: no second scrypt


def test_check_config_refuses_a_weak_hash_in_the_users_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A users_file with a weak hash fails check-config (exit 2, naming the file and the
    user), not only the start-up."""
    users = tmp_path / "users"
    users.write_text(f"bob:{WEAK_PBKDF2}\n")
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[[sinks]]\ntype = "opcua"\nprofile = "production"\n'
                   f'users_file = "{users}"\n')
    assert cli.main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "users_file" in err and "bob" in err and "600000" in err.replace(",", ""), err
