"""The state folder and its files are private whatever the umask (here the usual 022)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.journal import Journal
from edge.model import HealthAlert
from edge.protocols.opcua.security import ensure_server_certificate
from edge.runtime.private import private_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _fill(journal: Journal) -> None:
    journal.append([[HealthAlert(ts_ns=1, motor="m", health=0.4, ttf_s=1.0, reason="r")]])


def test_new_state_folder_and_journal_are_private(tmp_path: Path) -> None:
    """A new state folder is 0700; journal.db, -wal and -shm are 0600."""
    state = private_dir(tmp_path / "var" / "state")
    assert mode(state) == 0o700
    journal = Journal(state / "journal.db", sinks=["mes"])
    try:
        _fill(journal)
        files = [state / f"journal.db{s}" for s in ("", "-wal", "-shm")]
        assert all(f.exists() for f in files)
        assert [mode(f) for f in files] == [0o600] * 3
    finally:
        journal.close()


def test_journal_in_a_new_folder_elsewhere_is_private(tmp_path: Path) -> None:
    """journal.path outside the state folder: the folder the journal creates is 0700."""
    journal = Journal(tmp_path / "data" / "journal.db", sinks=["mes"])
    try:
        _fill(journal)
        assert mode(tmp_path / "data") == 0o700
        assert mode(tmp_path / "data" / "journal.db") == 0o600
    finally:
        journal.close()


def test_existing_folders_and_files_are_narrowed(tmp_path: Path) -> None:
    """A state folder left 0755 by an earlier run is narrowed to 0700 and an old 0644
    journal to 0600; a folder a deployment made 0750 (systemd StateDirectoryMode) keeps
    its group, whose members get read access to the journal, never write."""
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    (old / "journal.db").touch(mode=0o644)
    private_dir(old)
    Journal(old / "journal.db", sinks=["mes"]).close()
    assert (mode(old), mode(old / "journal.db")) == (0o700, 0o600)

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o750)
    private_dir(shared)
    journal = Journal(shared / "journal.db", sinks=["mes"])
    try:
        _fill(journal)
        assert mode(shared) == 0o750
        assert mode(shared / "journal.db") == 0o640
        assert mode(shared / "journal.db-wal") == 0o640
    finally:
        journal.close()


async def test_opcua_certificate_folder_key_and_certificate_are_private(
    tmp_path: Path
) -> None:
    """The generated OPC-UA server key and certificate are 0600 in a 0700 folder."""
    private_dir(tmp_path / "state")
    cert, key = await ensure_server_certificate(tmp_path / "state" / "opcua", "urn:test")
    assert mode(tmp_path / "state" / "opcua") == 0o700
    assert (mode(key), mode(cert)) == (0o600, 0o600)
    assert cert.stat().st_size > 500 and b"PRIVATE KEY" in key.read_bytes()
