"""Config files an operator gets wrong outside the schema: bytes that are not UTF-8,
state folders and journal paths the daemon could not use."""

from __future__ import annotations

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
