"""One daemon per state folder: a second `run` on the same state_dir refuses to start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness import Gateway


def _config(tmp_path: Path) -> dict[str, object]:
    drops = tmp_path / "drops"
    drops.mkdir(exist_ok=True)
    return {
        "gateway": {"id": "gw-lock", "state_dir": str(tmp_path / "state"),
                    "log_format": "json", "shutdown_timeout_s": 5.0},
        "sources": [{"type": "file", "name": "oven", "paths": [str(drops)],
                     "mode": "samples", "timestamp_column": "time",
                     "values": [{"column": "temp", "tag": "temp"}]}],
    }


def test_second_daemon_on_one_state_dir_refuses_and_the_first_runs_on(tmp_path: Path) -> None:
    """The second daemon exits at once (status 4) naming the state_dir and the holder's
    pid; the first keeps its control socket and runs on; after a kill -9 of the first a
    new daemon starts (the kernel dropped the lock)."""
    first = Gateway(tmp_path, _config(tmp_path))
    try:
        first.start()
        second = subprocess.run(
            [sys.executable, "-m", "edge", "run", "--config", str(first.cfg_path)],
            capture_output=True, text=True, timeout=60, check=False, env=first.env)
        assert second.returncode == 4, second.stderr[-3000:]
        assert "Traceback" not in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert f"state_dir '{tmp_path / 'state'}'" in second.stderr
        assert first.alive
        assert first.status()["gateway"] == "gw-lock"
        assert not [line for line in first.log.read_text().splitlines()
                    if "UNIQUE constraint" in line]

        first.kill9()
        again = Gateway(tmp_path, _config(tmp_path))
        try:
            again.start()
            assert again.status()["gateway"] == "gw-lock"
        finally:
            again.close()
    finally:
        first.close()
