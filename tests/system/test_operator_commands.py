"""Operator commands against a running daemon, and SIGTERM with data in flight."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.model import SampleBatch

ROWS = 200_000


def edge(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)


def wait_until(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def write_csv(path: Path, rows: list[tuple[float, float]]) -> None:
    """Atomic drop: temp name (ignored by the source), then rename."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("time,temp\n" + "".join(f"{t:.3f},{v}\n" for t, v in rows))
    os.replace(tmp, path)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, Path, subprocess.Popen[str]]]:
    drops = tmp_path / "drops"
    drops.mkdir()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f"""
[gateway]
id = "gw-ops"
state_dir = "{tmp_path / "state"}"
log_format = "json"
shutdown_timeout_s = 10

[[sources]]
type = "file"
name = "oven"
paths = ["{drops}"]
mode = "samples"
timestamp_column = "time"
values = [{{ column = "temp", tag = "temp", unit = "degC" }}]

[[sources]]                  # the oven's controller takes the stop; no broker listens here
type = "mqtt"
name = "oven_plc"
port = 9
commands = [{{ action = "stop", topic = "oven/command" }}]

[[interlocks]]
name = "oven_overtemp"
tag = "oven/temp"
high = 100.0
clear_hysteresis = 5.0
action = {{ source = "oven_plc", action = "stop" }}

[[sinks]]                    # nobody listens: everything stays in the journal
type = "influx"
name = "influx"
url = "http://127.0.0.1:9"
database = "edge"
timeout_s = 0.5
""")
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg)],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: edge("status", "--json", config=cfg).returncode == 0, 60,
                   "the daemon to answer")
        yield cfg, drops, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def status(cfg: Path) -> dict[str, object]:
    out = edge("status", "--json", config=cfg)
    assert out.returncode == 0, out.stderr
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


def test_status_interlock_reset_and_journal_commands(
    daemon: tuple[Path, Path, subprocess.Popen[str]],
) -> None:
    """status shows a trip; reset is refused while the value is high and takes once it is
    clear; journal stats shows the undelivered backlog; dead-letters answers."""
    cfg, drops, _ = daemon
    now = time.time()
    write_csv(drops / "a.csv", [(now, 90.0), (now + 0.1, 120.0)])

    def tripped() -> bool:
        il = status(cfg)["interlocks"]
        return il.get("oven_overtemp", {}).get("state") == "tripped"  # type: ignore[union-attr]

    wait_until(tripped, 30, "the interlock to trip")
    refused = edge("interlock", "reset", "oven_overtemp", config=cfg)
    assert refused.returncode == 1 and "still active" in refused.stderr
    assert "no interlock named" in edge("interlock", "reset", "nope", config=cfg).stderr

    write_csv(drops / "b.csv", [(now + 1, 80.0)])
    wait_until(lambda: edge("interlock", "reset", "oven_overtemp", config=cfg).returncode == 0,
               30, "the reset to take")
    assert not tripped()

    text = edge("status", config=cfg)
    assert text.returncode == 0 and "oven_overtemp" in text.stdout and "journal" in text.stdout
    stats = edge("journal", "stats", config=cfg)
    assert stats.returncode == 0 and "influx" in stats.stdout
    wait_until(lambda: status(cfg)["journal"]["influx"]["depth_points"] >= 3,  # type: ignore[index]
               30, "the backlog to show")
    letters = edge("journal", "dead-letters", config=cfg)
    assert letters.returncode == 0 and "no dead letters" in letters.stdout


def test_sigterm_with_data_in_flight_loses_nothing(
    tmp_path: Path, daemon: tuple[Path, Path, subprocess.Popen[str]],
) -> None:
    """SIGTERM while a large file is being read: exit 0 within the deadline; after a
    restart every row is in the journal exactly once (checkpoint and data agree)."""
    cfg, drops, proc = daemon
    t0 = time.time()
    write_csv(drops / "big.csv", [(t0 + i * 0.001, 20.0 + (i % 50)) for i in range(ROWS)])
    wait_until(lambda: _journal_points(tmp_path) > 0, 30, "ingest to start")
    proc.send_signal(signal.SIGTERM)
    t_stop = time.monotonic()
    assert proc.wait(timeout=15) == 0
    assert time.monotonic() - t_stop < 10
    # Restart: the source resumes at its checkpoint; the rest arrives, nothing twice.
    again = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg)],
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: edge("status", "--json", config=cfg).returncode == 0, 60,
                   "the restarted daemon to answer")
        wait_until(lambda: _journal_points(tmp_path) >= ROWS, 60, "all rows in the journal")
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=15) == 0
    finally:
        if again.poll() is None:
            again.kill()
    assert _journal_points(tmp_path) == ROWS


def _journal_points(tmp_path: Path) -> int:
    """Samples of oven/temp in the journal (tag id 0; self-metrics have other ids)."""
    path = tmp_path / "state" / "journal.db"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT payload FROM entries WHERE kind = 0").fetchall()
    finally:
        db.close()
    return sum(int((SampleBatch.from_bytes(r[0]).tag_id == 0).sum()) for r in rows)


@pytest.mark.skipif(Path("/etc/edge-gateway/edge.toml").exists(),
                    reason="an installed gateway's config is the default here")
def test_commands_beside_the_demo_find_it(
    tmp_path: Path, daemon: tuple[Path, Path, subprocess.Popen[str]],
) -> None:
    """Without --config or --state-dir, a command run where `make demo` runs finds the
    demo's state folder; elsewhere it exits 2 naming both flags."""
    beside = tmp_path / "checkout"
    (beside / "state" / "demo").mkdir(parents=True)
    (beside / "state" / "demo" / "gateway").symlink_to(tmp_path / "state")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge", "journal", "stats"], cwd=cwd,
                              capture_output=True, text=True, timeout=60, check=False)

    found = run(beside)
    assert found.returncode == 0 and "influx" in found.stdout, found.stderr
    assert "state/demo/gateway" in found.stderr
    lost = run(elsewhere)
    assert lost.returncode == 2
    assert "--config" in lost.stderr and "--state-dir" in lost.stderr
    assert "Traceback" not in lost.stderr
