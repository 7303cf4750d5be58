"""Shared harness of the system tests: the real daemon as a subprocess against the plant.

What it starts, every piece on free 127.0.0.1 ports inside one temporary folder:

* real peers from ``tests/peers.py`` (mosquitto, influxd 1.x) when a scenario asks;
* parts of the hw_sim plant as separate ``python -m hw_sim.cli plant --config <toml>``
  processes (MES, etch tool, CMM + motors, link proxies), so that one part can be
  killed and restarted while the others run on;
* the gateway as ``python -m edge run --config <generated toml>``, ready when it sends
  ``READY=1`` on our own ``NOTIFY_SOCKET``; status over its control socket.

Invariants the tests rely on:

* Every wait polls a condition against a deadline and fails with the logs attached.
* Every process started here is stopped by its own pid (``Stack.close`` in a finally),
  even when a test fails half way.
* ``Summary.line()`` has one format for every scenario; ``record()`` prints it and
  appends it to ``tests/system/.results``, from which RELIABILITY.md is filled.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from edge.runtime import control
from hw_sim.truth import read_truth

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import Peer, free_port, start_influxdb1, start_mosquitto

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / ".results"
SOAK = os.environ.get("EDGE_SOAK", "") not in ("", "0")
GATEWAY_ID = "gw-chaos"
ETCH_TAG = "etch1/chamber_temp"
INTERLOCK = "etch1_overtemp"
INTERLOCK_BUDGET_MS = 50.0  # system-level bound on one trip's reaction (5 ms p99 in process)
FEATURES = 3  # hw_sim CMM default: length_120, width_80, bore_50
MOTORS = [
    "hbw_horizontal", "hbw_vertical", "hbw_cantilever", "hbw_belt", "conveyor_belt",
    "conveyor_infeed", "conveyor_pusher1", "conveyor_pusher2", "conveyor_compressor",
    "vgr_vertical", "vgr_horizontal", "vgr_rotate", "vgr_vacuum", "vgr_valve",
]
NUMBA_CACHE = REPO / ".numba_cache"
EDGE_CACHE = REPO / ".edge_cache"  # $CACHE_DIRECTORY: the OPC-UA start-up cache, shared
SESSION_LINES: list[str] = []  # printed by conftest at the end of the run

T = TypeVar("T")


def soak(normal: T, longer: T) -> T:
    """``longer`` under ``make soak`` (EDGE_SOAK=1), else ``normal``."""
    return longer if SOAK else normal


def wait_for(what: str, check: Callable[[], T | None], timeout: float, *,
             interval: float = 0.1, logs: Callable[[], str] | None = None) -> T:
    """Poll ``check`` until it returns a truthy value; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = check()
        except (OSError, httpx.HTTPError, control.DaemonNotRunning, ValueError, KeyError) as exc:
            value, last_exc = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            tail = f"\n--- logs ---\n{logs()}" if logs else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}"
                                 f"{tail}")
        time.sleep(interval)


# --------------------------------------------------------------------------- TOML


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"TOML cannot hold {v}")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {type(v).__name__}")


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _toml_table(doc: dict[str, Any], prefix: str, out: list[str]) -> None:
    for k, v in doc.items():
        if not isinstance(v, dict) and not _is_table_list(v):
            out.append(f"{json.dumps(k)} = {_toml_value(v)}")
    for k, v in doc.items():
        path = f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k)
        if isinstance(v, dict):
            out.append(f"\n[{path}]")
            _toml_table(v, path, out)
        elif _is_table_list(v):
            for item in v:
                out.append(f"\n[[{path}]]")
                _toml_table(item, path, out)


def dump_toml(doc: dict[str, Any]) -> str:
    """A TOML document for ``doc`` (checked to read back equal)."""
    out: list[str] = []
    _toml_table(doc, "", out)
    text = "\n".join(out) + "\n"
    back = tomllib.loads(text)
    if json.loads(json.dumps(back)) != json.loads(json.dumps(doc)):
        raise AssertionError(f"TOML round trip changed the document:\n{text}")
    return text


# --------------------------------------------------------------------------- processes


class Proc:
    """A subprocess we started; output goes to ``log`` (appended across restarts)."""

    def __init__(self, name: str, argv: list[str], workdir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.workdir = name, argv, workdir
        self.env = {**os.environ, **(env or {})}
        self.log = workdir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert not self.alive, f"{self.name} is already running"
        with self.log.open("ab") as out:
            out.write(f"\n===== start #{self.starts + 1} of {self.name} =====\n".encode())
            out.flush()
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                          cwd=self.workdir, env=self.env)
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def kill9(self) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def terminate(self, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM, wait; (exit status, seconds it took). SIGKILL when over ``timeout``."""
        assert self.popen is not None
        t0 = time.monotonic()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return int(self.popen.returncode), time.monotonic() - t0

    def stop(self) -> None:
        if self.alive:
            self.terminate(10.0)

    def tail(self, n: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def restart_peer(peer: Peer) -> None:
    """Start a stopped peer again with the same command line (same port, same data)."""
    peer.stop()
    with peer.log.open("ab") as out:
        peer.proc = subprocess.Popen(peer.proc.args, stdout=out, stderr=subprocess.STDOUT,
                                     cwd=peer.workdir)


def wait_port(port: int, timeout: float = 15.0) -> None:
    def up() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    wait_for(f"127.0.0.1:{port} to accept connections", up, timeout, interval=0.05)


# --------------------------------------------------------------------------- plant parts


class PlantPart(Proc):
    """Some parts of the hw_sim plant in one process, from a generated plant TOML."""

    def __init__(self, name: str, workdir: Path, cfg: dict[str, Any],
                 ports: list[int]) -> None:
        self.cfg_path = workdir / f"plant-{name}.toml"
        self.cfg_path.write_text(dump_toml(cfg))
        super().__init__(f"plant-{name}", [sys.executable, "-m", "hw_sim.cli", "plant",
                                           "--config", str(self.cfg_path)], workdir)
        self.ports = ports
        self.truth_path = workdir / f"truth-{name}.jsonl"

    def start(self) -> None:
        super().start()
        for port in self.ports:
            wait_port(port)

    def truth(self) -> list[dict[str, Any]]:
        return read_truth(self.truth_path) if self.truth_path.exists() else []


# --------------------------------------------------------------------------- gateway


class Gateway(Proc):
    """The daemon as systemd runs it: notify socket, SIGTERM, status over control.sock."""

    def __init__(self, workdir: Path, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.cfg_path = workdir / "edge.toml"
        self.cfg_path.write_text(dump_toml(cfg))
        self.state_dir = Path(cfg["gateway"]["state_dir"])
        self.metrics_port = int(cfg["gateway"].get("metrics_port", 0))
        self.notify_path = workdir / "notify.sock"
        NUMBA_CACHE.mkdir(exist_ok=True)
        EDGE_CACHE.mkdir(exist_ok=True)
        super().__init__("gateway", [sys.executable, "-m", "edge", "run", "--config",
                                     str(self.cfg_path)], workdir,
                         env={"NOTIFY_SOCKET": str(self.notify_path),
                              "NUMBA_CACHE_DIR": str(NUMBA_CACHE),
                              "CACHE_DIRECTORY": str(EDGE_CACHE), "PYTHONUNBUFFERED": "1"})
        self._notify: socket.socket | None = None
        self.notices: list[str] = []
        self.ready_s = 0.0

    def start(self, *, ready_timeout: float = 60.0, wait_ready: bool = True) -> None:
        """Start and wait for READY=1 (fails with the log if it exits first).

        A thread keeps reading the notify socket, as systemd does: the daemon's
        datagrams must never find a full socket buffer."""
        if self._notify is None:
            with contextlib.suppress(FileNotFoundError):
                self.notify_path.unlink()
            self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify.bind(str(self.notify_path))
            self._notify.settimeout(0.2)
            threading.Thread(target=self._read_notify, args=(self._notify,), daemon=True,
                             name="notify-reader").start()
        t0 = time.monotonic()
        mark = len(self.notices)
        super().start()
        if not wait_ready:
            return
        deadline = t0 + ready_timeout
        while time.monotonic() < deadline:
            if "READY=1" in self.notices[mark:]:
                self.ready_s = time.monotonic() - t0
                # READY can come before the control task listens (no OPC-UA to wait for)
                wait_for("the control socket", self.status, 10, interval=0.02, logs=self.tail)
                return
            if not self.alive:
                code = self.popen.returncode if self.popen else None
                raise AssertionError(f"gateway exited ({code}) before READY\n{self.tail()}")
            time.sleep(0.02)
        raise AssertionError(f"gateway not READY within {ready_timeout} s\n{self.tail()}")

    def _read_notify(self, sock: socket.socket) -> None:
        while self._notify is sock:
            try:
                self.notices.extend(sock.recv(65536).decode().splitlines())
            except TimeoutError:
                continue
            except OSError:
                return

    def write_config(self, cfg: dict[str, Any]) -> None:
        """Change the config the next start reads."""
        self.cfg = cfg
        self.cfg_path.write_text(dump_toml(cfg))

    def events(self, event: str) -> list[dict[str, Any]]:
        """Log events (JSON lines) of every run so far named ``event``."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if doc.get("event") == event:
                        out.append(doc)
        return out

    def status(self) -> dict[str, Any]:
        answer = control.request(self.state_dir / "control.sock", {"cmd": "status"}, timeout=5)
        doc: dict[str, Any] = dict(answer["status"])
        return doc

    def ask(self, payload: dict[str, Any]) -> dict[str, Any]:
        return dict(control.request(self.state_dir / "control.sock", payload, timeout=5))

    def metrics(self) -> dict[str, float]:
        """The Prometheus exposition as {'name{labels}': value}."""
        text = urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    def metric_sum(self, name: str, label_filter: str = "") -> float:
        return sum(v for k, v in self.metrics().items()
                   if (k == name or k.startswith(name + "{")) and label_filter in k)

    def depth(self, sink: str) -> int:
        return int(self.status()["journal"].get(sink, {}).get("depth_points", 0))

    def close(self) -> None:
        self.stop()
        if self._notify is not None:
            self._notify.close()
            self._notify = None


# --------------------------------------------------------------------------- OPC-UA


def opcua_timestamps(endpoint: str, tag: str = ETCH_TAG, reads: int = 2,
                     gap_s: float = 0.5, timeout: float = 10.0) -> list[float]:
    """SourceTimestamps (epoch s) of ``tag`` read ``reads`` times ``gap_s`` apart."""
    import asyncio

    from asyncua import Client, ua

    async def go() -> list[float]:
        client = Client(endpoint, timeout=timeout)
        async with client:
            idx = await client.get_namespace_index("urn:edge-gateway:tags")
            node = client.get_node(ua.NodeId(tag, idx))
            out: list[float] = []
            for i in range(reads):
                if i:
                    await asyncio.sleep(gap_s)
                dv = await node.read_data_value()
                out.append(dv.SourceTimestamp.timestamp() if dv.SourceTimestamp else 0.0)
            return out

    return asyncio.run(asyncio.wait_for(go(), timeout + reads * gap_s + 5))


def opcua_live(endpoint: str, tag: str = ETCH_TAG) -> bool:
    """True when the tag's SourceTimestamp advances between two reads a second apart."""
    ts = opcua_timestamps(endpoint, tag, reads=2, gap_s=1.0)
    return ts[1] > ts[0] > 0


# --------------------------------------------------------------------------- MES


class Mes:
    """Questions to the hw_sim MES over its admin port (reachable in every fault)."""

    def __init__(self, admin_port: int) -> None:
        self.base = f"http://127.0.0.1:{admin_port}"

    def fault(self, mode: str, **opts: float) -> None:
        r = httpx.post(f"{self.base}/admin/fault", json={"mode": mode, **opts}, timeout=5)
        r.raise_for_status()

    def counts(self) -> dict[str, Any]:
        r = httpx.get(f"{self.base}/api/v1/counts", timeout=10)
        r.raise_for_status()
        doc: dict[str, Any] = r.json()
        return doc

    def records(self, rtype: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.base}/api/v1/records", params={"type": rtype, "limit": 10**7},
                      timeout=30)
        r.raise_for_status()
        recs: list[dict[str, Any]] = r.json()["records"]
        return recs

    def count(self, rtype: str) -> int:
        return int(self.counts()["by_type"].get(rtype, 0))


def link_mode(admin_port: int, mode: str) -> None:
    r = httpx.post(f"http://127.0.0.1:{admin_port}/mode", json={"mode": mode}, timeout=5)
    r.raise_for_status()


# --------------------------------------------------------------------------- etch (Modbus)


def _etch_write_once(port: int, *, register: int | None = None, coil: int | None = None,
               value: int = 1) -> None:
    """One attempt of ``etch_write``."""
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=1)
    try:
        if not client.connect():  # type: ignore[no-untyped-call]
            raise OSError(f"etch tool on port {port} does not answer")
        if register is not None:
            rr = client.write_register(register, value, device_id=1)
        else:
            assert coil is not None
            rr = client.write_coil(coil, bool(value), device_id=1)
        if rr.isError():
            raise OSError(f"etch write refused: {rr}")
    finally:
        client.close()  # type: ignore[no-untyped-call]


def etch_write(port: int, *, register: int | None = None, coil: int | None = None,
               value: int = 1, attempts: int = 3) -> None:
    """Write one admin register or coil of the etch tool directly (not through a link).

    Retried on a fresh connection (bounded): while the tool plays a hung device, its
    server can let an admin request wait out a client timeout too."""
    from pymodbus.exceptions import ModbusException

    for attempt in range(attempts):
        try:
            _etch_write_once(port, register=register, coil=coil, value=value)
            return
        except (OSError, ModbusException):
            if attempt == attempts - 1:
                raise


# --------------------------------------------------------------------------- the stack


@dataclass
class Ports:
    mes: int = field(default_factory=free_port)
    mes_admin: int = field(default_factory=free_port)
    mes_link: int = field(default_factory=free_port)
    mes_link_admin: int = field(default_factory=free_port)
    etch: int = field(default_factory=free_port)
    etch_link: int = field(default_factory=free_port)
    etch_link_admin: int = field(default_factory=free_port)
    broker_link: int = field(default_factory=free_port)
    broker_link_admin: int = field(default_factory=free_port)
    opcua: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)


class Stack:
    """One scenario's world: peers, plant parts, link proxies and the gateway."""

    def __init__(self, tmp: Path, *, mqtt: bool = True, influx: bool = False,
                 etch: bool = True, cmm: dict[str, Any] | None = None,
                 motors: dict[str, Any] | None = None, etch_opts: dict[str, Any] | None = None,
                 bad_data: dict[str, Any] | None = None, start_ns: int | None = None) -> None:
        self.tmp = tmp
        self.ports = Ports()
        self.procs: list[Proc] = []
        self.peers: list[Peer] = []
        self.broker: Peer | None = None
        self.influx: Peer | None = None
        self.gateway: Gateway | None = None
        self.want_mqtt, self.want_influx, self.want_etch = mqtt, influx, etch
        self.cmm_opts = cmm
        self.motor_opts = motors
        self.etch_opts = etch_opts or {}
        self.bad_data = bad_data or {}
        self.start_ns = start_ns
        self.cmm_dir = tmp / "cmm"
        self.bulk_dir = tmp / "bulk"
        self.cmm_dir.mkdir(parents=True, exist_ok=True)
        self.bulk_dir.mkdir(parents=True, exist_ok=True)
        self.mes = Mes(self.ports.mes_admin)
        self.parts: dict[str, PlantPart] = {}

    # ----------------------------------------------------------------- start

    def _plant(self, name: str, sections: dict[str, Any], ports: list[int],
               speed: float = 1.0) -> PlantPart:
        cfg: dict[str, Any] = {
            "seed": 7, "speed": speed, "truth": f"truth-{name}.jsonl",
            "bad_data": dict(self.bad_data),
        }
        if self.start_ns is not None:
            cfg["start_ns"] = self.start_ns
        for sec in ("cmm", "etch", "motors", "mes"):
            cfg[sec] = sections.get(sec, {"enabled": False})
        if "links" in sections:
            cfg["links"] = sections["links"]
        part = PlantPart(name, self.tmp, cfg, ports)
        self.parts[name] = part
        self.procs.append(part)
        return part

    def start_world(self) -> None:
        p = self.ports
        if self.want_mqtt:
            self.broker = start_mosquitto(self.tmp)
            self.peers.append(self.broker)
        if self.want_influx:
            self.influx = start_influxdb1(self.tmp)
            self.peers.append(self.influx)
            httpx.post(f"{self.influx.url}/query", data={"q": "CREATE DATABASE edge"},
                       timeout=10).raise_for_status()
        self._plant("mes", {"mes": {"port": p.mes, "admin_port": p.mes_admin,
                                    "db": str(self.tmp / "mes.sqlite")}},
                    [p.mes, p.mes_admin]).start()
        if self.want_etch:
            etch = {"port": p.etch, "dt_s": 0.1, "excursion_ramp_c_per_s": 20.0,
                    "excursion_duration_s": 2.0, "cool_tau_s": 10.0, "heat_tau_s": 2.0,
                    "excursion_decay_tau_s": 0.5,
                    **self.etch_opts}
            self._plant("etch", {"etch": etch}, [p.etch]).start()
        links = [{"name": "mes", "listen": p.mes_link, "target": f"127.0.0.1:{p.mes}",
                  "admin": p.mes_link_admin}]
        ports = [p.mes_link, p.mes_link_admin]
        if self.want_etch:
            links.append({"name": "etch", "listen": p.etch_link,
                          "target": f"127.0.0.1:{p.etch}", "admin": p.etch_link_admin})
            ports += [p.etch_link, p.etch_link_admin]
        if self.broker is not None:
            links.append({"name": "broker", "listen": p.broker_link,
                          "target": f"127.0.0.1:{self.broker.port}",
                          "admin": p.broker_link_admin})
            ports += [p.broker_link, p.broker_link_admin]
        self._plant("links", {"links": links}, ports).start()
        line: dict[str, Any] = {}
        if self.cmm_opts is not None:
            line["cmm"] = {"dir": str(self.cmm_dir), "mode": "part", "part_interval_s": 0.5,
                           **self.cmm_opts}
        if self.motor_opts is not None and self.broker is not None:
            line["motors"] = {"broker_host": "127.0.0.1", "broker_port": self.broker.port,
                              "mode": "json", "qos": 0, "health_every_s": 3600.0,
                              **self.motor_opts}
        if line:
            self._plant("line", line, [])

    def start_line(self) -> None:
        """Start the CMM and motors (after the gateway, so nothing waits unread)."""
        if "line" in self.parts:
            self.parts["line"].start()

    def gateway_config(self, *, sources: tuple[str, ...] = ("cmm", "etch", "motors"),
                       interlock: bool = True, influx: bool | str = False,
                       journal: dict[str, Any] | None = None,
                       state_dir: Path | None = None, bulk: bool = False,
                       mes_opts: dict[str, Any] | None = None,
                       shutdown_timeout_s: float = 8.0, opcua: bool = True,
                       stale_s: float | None = None) -> dict[str, Any]:
        p = self.ports
        cfg: dict[str, Any] = {
            "gateway": {"id": GATEWAY_ID, "state_dir": str(state_dir or self.tmp / "state"),
                        "log_level": "info", "log_format": "json",
                        "shutdown_timeout_s": shutdown_timeout_s,
                        "metrics_port": p.metrics},
            "journal": {"durability": "process-crash", "max_mb": 256.0,
                        **(journal or {})},
            "sources": [],
        }
        srcs: list[dict[str, Any]] = cfg["sources"]
        if "cmm" in sources:
            srcs.append({"type": "file", "name": "cmm1", "paths": [str(self.cmm_dir)],
                         "mode": "cmm", "debounce_ms": 50, "rescan_s": 2.0})
        if bulk:
            srcs.append({"type": "file", "name": "bulk", "paths": [str(self.bulk_dir)],
                         "mode": "samples", "device": "bulk", "debounce_ms": 50,
                         "rescan_s": 2.0, "timestamp_column": "ts", "epoch_unit": "ns",
                         "values": [{"column": c, "tag": c} for c in ("a", "b", "c")]})
        if "etch" in sources and self.want_etch:
            srcs.append({
                "type": "modbus", "name": "etch1", "host": "127.0.0.1", "port": p.etch_link,
                "device_id": 1, "poll_interval_s": 0.1, "timeout_s": 0.5, "backoff_max_s": 1.0,
                "registers": [
                    {"name": "chamber_temp", "address": 0, "type": "float32", "unit": "degC"},
                    {"name": "lot", "address": 8, "type": "uint16"},
                    {"name": "wafer", "address": 9, "type": "uint16"},
                    {"name": "status", "address": 11, "type": "uint16"},
                ],
                "commands": [{"action": "stop", "function": "coil", "address": 0, "value": 1}],
            })
        if "motors" in sources and self.broker is not None:
            srcs.append({
                "type": "mqtt", "name": "stf", "host": "127.0.0.1", "port": p.broker_link,
                "qos": 0, "backoff_max_s": 1.0,
                "subscriptions": [{
                    "topic": "stf/+/+/telemetry", "device": "{1}_{2}", "devices": MOTORS,
                    "ts_field": "ts", "fields": [{"path": "current_a", "tag": "current_a",
                                                  "unit": "A"}],
                }],
            })
        if "cmm" in sources:
            cfg["compensation"] = [{"name": "cmm1"}]
        if interlock and "etch" in sources and self.want_etch:
            cfg["interlocks"] = [{
                "name": INTERLOCK, "tag": ETCH_TAG, "high": 188.0, "clear_hysteresis": 2.0,
                "trip_on_bad_quality": False,
                "action": {"source": "etch1", "action": "stop"},
                "context_tags": ["etch1/lot", "etch1/wafer"], "evidence_samples": 5,
            }]
            if stale_s is not None:
                cfg["interlocks"][0]["stale_s"] = stale_s
        cfg["sinks"] = [{"type": "mes", "name": "mes", "url": f"http://127.0.0.1:{p.mes_link}",
                         "timeout_s": 2.0, "connect_timeout_s": 1.0, **(mes_opts or {})}]
        influx_url = influx if isinstance(influx, str) else (
            self.influx.url if influx and self.influx is not None else "")
        if influx_url:
            cfg["sinks"].append({"type": "influx", "name": "influx", "url": influx_url,
                                 "api": "v1", "database": "edge", "timeout_s": 5.0})
        if opcua:
            cfg["sinks"].append({"type": "opcua", "name": "opcua", "profile": "demo",
                                 "endpoint": f"opc.tcp://127.0.0.1:{p.opcua}/edge"})
        return cfg

    def make_gateway(self, cfg: dict[str, Any]) -> Gateway:
        gw = Gateway(self.tmp, cfg)
        self.gateway = gw
        self.procs.append(gw)
        return gw

    @property
    def opcua_endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.ports.opcua}/edge"

    # ----------------------------------------------------------------- faults

    def written_records(self) -> int:
        """CMM rows written so far (3 per part)."""
        return FEATURES * len(written_parts(self))

    def drop_bulk(self, rows: int) -> int:
        """Drop a CSV of ``rows`` x 3 samples into the bulk folder (atomic rename);
        returns the number of samples in it."""
        n = len(list(self.bulk_dir.glob("bulk-*.csv")))
        t0 = time.time_ns() - rows * 1_000_000
        body = "ts,a,b,c\n" + "".join(
            f"{t0 + i * 1_000_000},{i % 97}.5,{i % 13}.25,{i % 7}.125\n" for i in range(rows))
        tmp = self.bulk_dir / f".bulk-{n}.csv.tmp"
        tmp.write_text(body)
        os.replace(tmp, self.bulk_dir / f"bulk-{n}.csv")
        return rows * 3

    def restart_etch(self, down_s: float) -> None:
        part = self.parts["etch"]
        part.kill9()
        time.sleep(down_s)  # the outage itself
        part.start()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(3000)}" for p in self.procs)

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                if isinstance(proc, Gateway):
                    proc.close()
                else:
                    proc.stop()
        for peer in self.peers:
            with contextlib.suppress(Exception):
                peer.stop()


@contextlib.contextmanager
def stack(tmp: Path, **kw: Any) -> Iterator[Stack]:
    st = Stack(tmp, **kw)
    try:
        st.start_world()
        yield st
    finally:
        st.close()


# --------------------------------------------------------------------------- interlocks


def trip_once(st: Stack, timeout: float = 10.0) -> int:
    """Start an excursion on the etch tool, wait for the interlock to trip and the
    tool to stop, then reset tool and interlock. Returns the trips count after it."""
    gw = st.gateway
    assert gw is not None

    def il() -> dict[str, Any]:
        state: dict[str, Any] = gw.status()["interlocks"][INTERLOCK]
        return state

    before = int(il()["trips"])
    etch_write(st.ports.etch, register=20, value=1)
    wait_for("the interlock to trip", lambda: il()["trips"] > before, timeout,
             interval=0.05, logs=st.logs)
    etch_write(st.ports.etch, coil=1, value=1)  # reset the tool: resume heating

    def reset() -> bool:
        return bool(gw.ask({"cmd": "interlock_reset", "name": INTERLOCK}).get("ok"))

    wait_for("the interlock reset to take", reset, timeout, interval=0.2, logs=st.logs)
    return int(il()["trips"])


# --------------------------------------------------------------------------- accounting


def written_parts(st: Stack) -> set[str]:
    """Part ids in the CSV files the CMM wrote (per-part or daily files)."""
    parts: set[str] = set()
    for path in st.cmm_dir.glob("*.csv"):
        for line in path.read_text(errors="replace").splitlines()[1:]:
            cols = line.split(",")
            if len(cols) > 1 and cols[1].startswith("P"):
                parts.add(cols[1])
    return parts


def expected_parts(st: Stack) -> set[str]:
    """Parts written to disk by the stopped CMM, checked against its ground truth."""
    truth = {e["part_id"] for e in st.parts["line"].truth() if e["kind"] == "part"}
    written = written_parts(st)
    assert written <= truth, f"parts on disk but not in the truth: {sorted(written - truth)[:5]}"
    return written


@dataclass
class Tally:
    """What the MES holds against what the gateway was given."""

    expected: int
    delivered: int
    duplicates: int
    lost: int
    id_replays: int
    missing: list[tuple[str, str]]


def tally_measurements(st: Stack, parts: set[str] | None = None) -> Tally:
    """Measurement records at the MES by (part_id, feature) against the CMM truth."""
    parts = expected_parts(st) if parts is None else parts
    expected = {(p, f) for p in parts for f in ("length_120", "width_80", "bore_50")}
    by_key = Counter((r["part_id"], r["feature"]) for r in st.mes.records("measurement"))
    held = set(by_key) & expected
    dups = sum(n - 1 for n in by_key.values() if n > 1)
    counts = st.mes.counts()
    return Tally(len(expected), len(held), dups, len(expected - held),
                 int(counts.get("duplicate_records", 0)), sorted(expected - held)[:10])


def worst_interlock_ms(st: Stack) -> float:
    trips = st.mes.records("interlock_trip")
    worst = max((int(t.get("reaction_ns", 0)) for t in trips), default=0)
    return worst / 1e6


def wait_all_delivered(st: Stack, parts: set[str], timeout: float) -> Tally:
    def done() -> Tally | None:
        t = tally_measurements(st, parts)
        return t if t.lost == 0 else None
    try:
        return wait_for("the MES to hold every measurement", done, timeout, interval=0.5)
    except AssertionError:
        t = tally_measurements(st, parts)
        raise AssertionError(f"MES holds {t.delivered}/{t.expected}; missing e.g. {t.missing}"
                             f"\n{st.logs()}") from None


@dataclass
class Summary:
    name: str
    sent: int
    delivered: int
    duplicates: int
    lost: int
    worst_interlock_ms: float
    id_replays: int = 0
    note: str = ""

    def line(self) -> str:
        text = (f"SCENARIO {self.name}: sent={self.sent} delivered={self.delivered} "
                f"duplicates={self.duplicates} lost={self.lost} "
                f"worst_interlock_ms={self.worst_interlock_ms:.2f} "
                f"mes_id_replays={self.id_replays}")
        return text + (f" note={json.dumps(self.note)}" if self.note else "")


def account(st: Stack, name: str, parts: set[str], trips: int, note: str = "") -> Summary:
    """Sent = measurements the CMM wrote + interlock trips the gateway reported; the
    MES's holdings are matched by business key, (part_id, feature) and (interlock, ts)."""
    m = tally_measurements(st, parts)
    trip_keys = Counter((r["interlock"], r["ts_ns"]) for r in st.mes.records("interlock_trip"))
    trip_dups = sum(n - 1 for n in trip_keys.values() if n > 1)
    held_trips = min(len(trip_keys), trips)
    sent = m.expected + trips
    delivered = m.delivered + held_trips
    return Summary(name, sent, delivered, m.duplicates + trip_dups, sent - delivered,
                   worst_interlock_ms(st), m.id_replays, note)


def record(summary: Summary) -> None:
    """Print the scenario's line (also under pytest without -s) and keep it in .results."""
    line = summary.line()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    with RESULTS.open("a", encoding="utf-8") as fh:
        fh.write(f"{stamp} soak={int(SOAK)} {line}\n")
    SESSION_LINES.append(line)
    print(line, flush=True)


def jitter(rng: random.Random, lo: float, hi: float) -> float:
    return rng.uniform(lo, hi)
