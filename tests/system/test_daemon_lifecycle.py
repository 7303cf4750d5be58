"""The daemon as systemd runs it: notify messages in order, clean exit on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def notify_socket(tmp: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp / "notify.sock"))
    s.settimeout(0.2)
    return s


def collect(sock: socket.socket, until: str, timeout: float) -> list[str]:
    msgs: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msgs.extend(sock.recv(4096).decode().splitlines())
        except TimeoutError:
            continue
        if any(m.startswith(until) for m in msgs):
            return msgs
    raise AssertionError(f"no {until} within {timeout} s; got {msgs}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def empty_config(tmp_path: Path, metrics_port: int) -> Path:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[gateway]\nid = "gw-test"\nstate_dir = "{tmp_path / "state"}"\n'
        f'shutdown_timeout_s = 5\nlog_format = "json"\nmetrics_port = {metrics_port}\n'
    )
    return cfg


def test_empty_config_runs_notifies_and_stops_cleanly(
    tmp_path: Path, empty_config: Path, metrics_port: int
) -> None:
    """With no components the daemon sends READY, WATCHDOG and STATUS, serves /metrics on
    localhost when asked, then sends STOPPING on SIGTERM and exits 0 within the deadline."""
    sock = notify_socket(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
           "WATCHDOG_USEC": "200000"}
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(empty_config)],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        msgs = collect(sock, "READY=1", 60)
        msgs += collect(sock, "WATCHDOG=1", 5)
        assert (tmp_path / "state" / "control.sock").exists()
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert "edge_journal_bytes" in metrics and "edge_component_up" in metrics
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        msgs += collect(sock, "STOPPING=1", 5)
        rc = proc.wait(timeout=10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert rc == 0
    assert took < 5
    ready = msgs.index("READY=1")
    assert msgs.index("WATCHDOG=1") > ready
    assert msgs.index("STOPPING=1") > msgs.index("WATCHDOG=1")
    assert any(m.startswith("STATUS=") for m in msgs)
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert '"gateway ready"' in log and '"stopped"' in log


def test_commands_say_the_daemon_is_not_running(empty_config: Path) -> None:
    """Operator commands exit 3 with a clear message when no daemon runs."""
    for args in (["status"], ["interlock", "reset", "x"], ["journal", "stats"]):
        proc = subprocess.run([sys.executable, "-m", "edge", *args, "--config", str(empty_config)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 3, (args, proc.stderr)
        assert "daemon" in proc.stderr and "running" in proc.stderr
