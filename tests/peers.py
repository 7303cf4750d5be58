"""Launchers for the real peers the integration tests talk to.

Each launcher starts its own instance on a free loopback port with all of its state in
the given temporary folder, waits until it answers, and returns a ``Peer``; ``stop()``
ends exactly that process by its pid. Nothing here touches a system service.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Peer:
    """A peer process we started: its port, process and folder."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def require(binary: str, install: str) -> str:
    """The binary's path, or skip the test with the one command that installs it."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed: {install}")
    return path


def _spawn(name: str, argv: list[str], workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    return proc, log


def wait_http(peer: Peer, path: str, *, ok: tuple[int, ...] = (200, 204),
              timeout: float = 30.0) -> None:
    """Poll ``GET <peer><path>`` until it answers one of ``ok``; fail with the peer's log."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if peer.proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(peer.url + path, timeout=1.0) as resp:
                if resp.status in ok:
                    return
                last = f"status {resp.status}"
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
            last = f"status {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    peer.stop()
    raise RuntimeError(
        f"{peer.name} did not answer {path} ({last}); exit={peer.proc.returncode}\n"
        f"{peer.log_tail()}"
    )


# ------------------------------------------------------------------ InfluxDB 1.x


def _set_key(text: str, section: str | None, key: str, value: str) -> str:
    """Set ``key = value`` inside ``[section]`` (None: the top level) of influxd's TOML."""
    lines = text.splitlines()
    current: str | None = None
    pat = re.compile(rf"^\s*#?\s*{re.escape(key)}\s*=")
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            current = stripped.strip("[]")
            continue
        if current == section and pat.match(line):
            lines[i] = f"  {key} = {value}"
            return "\n".join(lines) + "\n"
    raise KeyError(f"influxd config has no {key} in [{section}]")


def start_influxdb1(tmp: Path) -> Peer:
    """influxd 1.x on a free HTTP port (and a free RPC port), state under ``tmp``."""
    influxd = require("influxd", "apt-get install -y influxdb")
    workdir = Path(tmp) / "influxdb1"
    workdir.mkdir(parents=True, exist_ok=True)
    base = subprocess.run(
        [influxd, "config"], capture_output=True, check=True, cwd=workdir
    ).stdout.decode()
    port, rpc = free_port(), free_port()
    text = base
    text = _set_key(text, None, "bind-address", f'"127.0.0.1:{rpc}"')
    text = _set_key(text, None, "reporting-enabled", "false")
    text = _set_key(text, "meta", "dir", f'"{workdir / "meta"}"')
    text = _set_key(text, "data", "dir", f'"{workdir / "data"}"')
    text = _set_key(text, "data", "wal-dir", f'"{workdir / "wal"}"')
    text = _set_key(text, "data", "query-log-enabled", "false")
    text = _set_key(text, "monitor", "store-enabled", "false")
    text = _set_key(text, "http", "bind-address", f'"127.0.0.1:{port}"')
    text = _set_key(text, "http", "log-enabled", "false")
    text = _set_key(text, "logging", "level", '"warn"')
    conf = workdir / "influxdb.conf"
    conf.write_text(text)
    proc, log = _spawn("influxd", [influxd, "run", "-config", str(conf)], workdir)
    peer = Peer("influxd", port, proc, workdir, log)
    wait_http(peer, "/ping")
    return peer


# ------------------------------------------------------------------ VictoriaMetrics


def start_victoria_metrics(tmp: Path) -> Peer:
    """victoria-metrics on a free port, data under ``tmp``, recent points queryable."""
    vm = require("victoria-metrics", "apt-get install -y victoria-metrics")
    workdir = Path(tmp) / "victoria-metrics"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        vm,
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-storageDataPath={workdir / 'data'}",
        "-search.latencyOffset=0s",
        "-loggerLevel=WARN",
    ]
    proc, log = _spawn("victoria-metrics", argv, workdir)
    peer = Peer("victoria-metrics", port, proc, workdir, log)
    wait_http(peer, "/health")
    return peer


# ------------------------------------------------------------------ mosquitto


def wait_tcp(peer: Peer, timeout: float = 10.0) -> None:
    """Poll until ``127.0.0.1:<port>`` accepts a connection; fail with the peer's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peer.proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    peer.stop()
    raise RuntimeError(
        f"{peer.name} did not listen on {peer.port}; exit={peer.proc.returncode}\n"
        f"{peer.log_tail()}"
    )


def start_mosquitto(tmp: Path, port: int | None = None, extra: str = "") -> Peer:
    """mosquitto on a free loopback port (or ``port``: restart on the same one).

    Runs as the current user (``user root`` is harmless for non-root), logs to its
    own file, no persistence: a restart loses sessions, as a broker crash would.
    ``extra``: more config lines (e.g. ``max_inflight_messages 1000``)."""
    binary = require("mosquitto", "apt-get install -y mosquitto")
    workdir = Path(tmp) / "mosquitto"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
        "log_dest stderr\nlog_type error\nlog_type warning\npersistence false\n"
        "max_queued_messages 100000\n" + extra
    )
    proc, log = _spawn("mosquitto", [binary, "-c", str(conf)], workdir)
    peer = Peer("mosquitto", port, proc, workdir, log)
    wait_tcp(peer)
    return peer


# --------------------------------------------------------------------------- node-opcua

NODE_DIR = Path(__file__).parent / "node"


def ensure_node_opcua() -> Path:
    """tests/node with node_modules installed (``npm ci`` once, ~15 s, 33 MB)."""
    require("node", "apt-get install -y nodejs npm")
    npm = require("npm", "apt-get install -y npm")
    if not (NODE_DIR / "node_modules" / "node-opcua-client").is_dir():
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR,
            capture_output=True, timeout=300, check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"npm ci in {NODE_DIR} failed (no registry access?): "
                        f"{proc.stderr.decode(errors='replace')[-500:]}")
    return NODE_DIR


async def spawn_node_client(script: str, args: dict[str, object]) -> asyncio.subprocess.Process:
    """Start ``node tests/node/<script> '<json args>'`` without blocking the event loop
    (the OPC-UA server under test runs in the same loop)."""
    folder = ensure_node_opcua()
    return await asyncio.create_subprocess_exec(
        "node", str(folder / script), json.dumps(args), cwd=folder,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def wait_stderr_line(proc: asyncio.subprocess.Process, marker: str,
                           timeout: float) -> None:
    """Read the client's stderr until a line containing ``marker``."""
    assert proc.stderr is not None

    async def scan() -> None:
        assert proc.stderr is not None
        while True:
            line = await proc.stderr.readline()
            if not line:
                raise RuntimeError(f"node client ended before printing {marker!r}")
            if marker in line.decode(errors="replace"):
                return

    await asyncio.wait_for(scan(), timeout)


async def node_client_result(proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
    """The one JSON object the client prints; kills it (by pid) on timeout."""
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = [ln for ln in stdout.decode(errors="replace").splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(
            f"node client printed no JSON (exit {proc.returncode}): "
            f"{stderr.decode(errors='replace')[-2000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def run_node_client(script: str, args: dict[str, object],
                          timeout: float = 60.0) -> dict[str, Any]:
    """Run a node-opcua client script to its end and return the JSON it printed."""
    proc = await spawn_node_client(script, args)
    return await node_client_result(proc, timeout)
