"""Config files an operator gets wrong outside the schema: bytes that are not UTF-8,
state folders and journal paths the daemon could not use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load
from edge.errors import ConfigError


def edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_non_utf8_byte_names_file_line_and_offset(tmp_path: Path) -> None:
    """One Latin-1 byte in a comment: a ConfigError naming the file, line and byte offset."""
    cfg = tmp_path / "edge.toml"
    cfg.write_bytes(b'[gateway]\nid = "gw"\n# Temperatur in \xb0C\n')
    with pytest.raises(ConfigError) as exc:
        load(cfg)
    msg = str(exc.value)
    assert str(cfg) in msg and "line 3" in msg and "offset 36" in msg and "0xb0" in msg


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_non_utf8_config_exits_2_without_traceback(tmp_path: Path, command: str) -> None:
    """check-config and run both refuse a non-UTF-8 file with exit 2 and one clear line."""
    cfg = tmp_path / "edge.toml"
    cfg.write_bytes(b'[gateway]\nid = "gw\xff"\n')
    args = [command, str(cfg)] if command == "check-config" else [command, "--config", str(cfg)]
    proc = edge(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{cfg}" in proc.stderr and "line 2" in proc.stderr and "not UTF-8" in proc.stderr


def _config(tmp_path: Path, state_dir: Path, journal: Path | None = None) -> Path:
    cfg = tmp_path / "edge.toml"
    text = f'[gateway]\nstate_dir = "{state_dir}"\nlog_format = "json"\n'
    if journal is not None:
        text += f'[journal]\npath = "{journal}"\n'
    cfg.write_text(text)
    return cfg


def _unusable(tmp_path: Path) -> list[tuple[Path, Path | None, str]]:
    """(state_dir, journal.path, the key the error must name): cases that fail as root too."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder\n")
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "journal_dir").mkdir(exist_ok=True)
    return [
        (a_file / "state", None, "gateway.state_dir"),
        (a_file, None, "gateway.state_dir"),
        (tmp_path / "state", tmp_path / "journal_dir", "journal.path"),
        (tmp_path / "state", a_file / "journal.db", "journal.path"),
    ]


@pytest.mark.parametrize("case", range(4))
def test_unusable_state_paths_fail_check_config(tmp_path: Path, case: int) -> None:
    """A state_dir that cannot be a folder, or a journal.path that is a folder or lies
    under a file, fails check-config with exit 2 naming the key."""
    state, journal, key = _unusable(tmp_path)[case]
    cfg = _config(tmp_path, state, journal)
    proc = edge("check-config", str(cfg))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"configuration error: {cfg}: {key}" in proc.stderr


@pytest.mark.parametrize("case", range(4))
def test_unusable_state_paths_stop_run_before_anything_starts(tmp_path: Path, case: int) -> None:
    """`run` refuses the same paths with exit 2 and the key, not a traceback."""
    state, journal, key = _unusable(tmp_path)[case]
    proc = edge("run", "--config", str(_config(tmp_path, state, journal)))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"configuration error: {key}" in proc.stderr


def test_state_dir_that_does_not_exist_yet_is_fine_where_it_can_be_created(
        tmp_path: Path) -> None:
    """A state_dir run would create (its nearest existing parent is writable) passes."""
    from edge.runtime import statedir

    cfg = load(_config(tmp_path, tmp_path / "not" / "yet" / "there"))
    assert statedir.check(cfg) == ([], [])



def test_permissions_as_an_ordinary_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked by a user that is not the daemon's (uid 1000 here, seen as lacking write
    access): a state_dir it cannot create in root's folder (/var/lib on a developer
    machine) is only a note; one it owns but cannot write is an error naming the key;
    `run` (prepare) treats the note as an error, as its user is the daemon's."""
    from edge.runtime import statedir

    (tmp_path / "root_only").mkdir()
    mine = tmp_path / "mine"
    mine.mkdir()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    owner = {str(mine): 1000}
    real_stat = Path.stat

    def stat(self: Path, **kw: bool) -> os.stat_result:
        st = real_stat(self, **kw)
        fields = list(st)
        fields[4] = owner.get(str(self), 0)  # st_uid
        return os.stat_result(fields)

    monkeypatch.setattr(Path, "stat", stat)
    cfg = load(_config(tmp_path, tmp_path / "root_only" / "edge-gateway"))
    errors, notes = statedir.check(cfg)
    assert errors == []
    assert notes and notes[0].startswith("gateway.state_dir: ") and "StateDirectory=" in notes[0]
    with pytest.raises(ConfigError, match=r"gateway\.state_dir: .* is not writable by this"):
        statedir.prepare(cfg)

    errors, notes = statedir.check(load(_config(tmp_path, mine)))
    assert errors == [f"gateway.state_dir: '{mine}' is not writable by this user (uid 1000)"]
