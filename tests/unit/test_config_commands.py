"""Interlock actions are checked against the commands their source declares, before a
device is touched: check-config and run exit 2 naming the interlock, key and choices."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = (ROOT / "config" / "demo.toml").read_text()
ACTION = 'action = { source = "etch1", action = "stop" }'


def _edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ('action = { source = "etch1", action = "halt" }',
         "interlock 'etch1_overtemp': action: source 'etch1' has no action 'halt' "
         "(it has: reset, stop)"),
        ('action = { source = "etch9", action = "halt" }',
         "interlock 'etch1_overtemp': action: no source named 'etch9' "
         "(sources: cmm1, etch1, stf)"),
        ('action = { source = "cmm1", action = "stop" }',
         "interlock 'etch1_overtemp': action: source 'cmm1' has no action 'stop' "
         "(it takes no commands)"),
    ],
)
def test_check_config_refuses_an_action_no_source_declares(
    tmp_path: Path, action: str, message: str,
) -> None:
    """A stop naming a missing source or action fails check-config with exit 2, not when
    the interlock trips."""
    assert ACTION in DEMO
    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.replace(ACTION, action, 1))
    proc = _edge("check-config", str(bad))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr


def test_run_refuses_an_action_no_source_declares_before_starting(tmp_path: Path) -> None:
    """run exits 2 with the same message before it opens the journal or any device."""
    state = tmp_path / "state"
    bad = tmp_path / "bad.toml"
    text = DEMO.replace('state_dir = "state/demo/gateway"', f'state_dir = "{state}"', 1)
    bad.write_text(text.replace(ACTION, 'action = { source = "etch9", action = "halt" }', 1))
    proc = _edge("run", "--config", str(bad))
    assert proc.returncode == 2, proc.stderr
    assert "interlock 'etch1_overtemp': action: no source named 'etch9'" in proc.stderr
    assert not (state / "journal.db").exists()
