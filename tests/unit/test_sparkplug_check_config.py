"""The Sparkplug DCMD allow-list is checked against the sources' declared commands by
check-config (exit 2 naming the sink, the entry and the choices), not when a DCMD comes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (ROOT / "config" / "sparkplug.toml").read_text()
ALLOW = '{ device = "etch1", source = "etch1", action = "stop" },'


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "edge", "check-config", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_allow_list_of_declared_commands_passes_and_an_undeclared_one_fails(
        tmp_path: Path) -> None:
    """The shipped example passes; an action the source does not declare, or a device
    the node does not have, fails check-config with one line each."""
    assert ALLOW in CONFIG
    ok = check(tmp_path, CONFIG)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = check(tmp_path, CONFIG.replace(ALLOW, ALLOW.replace('"stop"', '"explode"')
                                         + '\n  { device = "lathe9", source = "etch1", '
                                           'action = "stop" },'))
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert ("sink 'sparkplug': commands: etch1/Commands/explode: source 'etch1' has no "
            "action 'explode' (it has: reset, stop)") in bad.stderr
    assert "sink 'sparkplug': commands: lathe9/Commands/stop: no device 'lathe9' " \
           "(devices: etch1, gateway)" in bad.stderr
