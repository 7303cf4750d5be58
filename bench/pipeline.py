"""End-to-end pipeline benchmark: the whole daemon under plant load (issue 9).

What runs, each in its own process on 127.0.0.1 (free ports, one temporary folder):

* the gateway, ``python -m edge run --config <generated toml>`` with a notify socket
  (READY=1) and ``gateway.metrics_port``;
* mosquitto, VictoriaMetrics (or influxd 1.x with ``--influx``), the hw_sim MES and
  ``--etch-tools`` hw_sim etch tools (Modbus, each polled at 10 Hz, each with its own
  over-temperature interlock: more tools, more trips per step, a p99 worth the name);
  as root the tools run SCHED_FIFO 5 (``--device-rt``, default on): a real PLC answers
  from its own CPU, not from the two cores the bench saturates;
* load generators: ``pipeline_mqtt.py`` (batched JSON arrays, 1,000 devices, QoS 1),
  ``pipeline_files.py`` (one bulk samples CSV and one CMM CSV per second), and
  ``--opcua-clients`` node-opcua clients (default 1) each subscribed to 1,000 of the
  tags for the whole run.

The gateway's stages: compensation (CMM rows), the etch over-temperature interlocks,
health on 14 of the MQTT motors, SPC (EWMA) on the chamber temperature; sinks: the MES
(records) and the time-series database (samples and records); OPC-UA live.

Per rate step: ``--warm`` s of load, then ``--seconds`` s measured (ingest counters,
CPU time from /proc of every process, RSS), interlock trips forced every few seconds
(etch excursion via holding register 20, reset via the reset coil and the gateway's
``interlock_reset``), then the generators pause and the bench waits until the gateway
has ingested everything that was sent (zero loss is checked, not assumed). Then a MES
outage (``--outage-s``) under load and the drain of its backlog; then the time to
READY with 5,000 tags, start-up caches (numba kernels, OPC-UA standard address space)
cold and warm. ``--profile`` records py-spy
profiles of the daemon during the top rate step.

    .venv/bin/python bench/pipeline.py                      # ~6 minutes
    .venv/bin/python bench/pipeline.py --rates 50000,100000 --seconds 10 --outage-s 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
for p in (ROOT, ROOT / "tests", ROOT / "tests" / "system"):
    sys.path.insert(0, str(p))

from harness import Gateway, Mes, PlantPart, Proc, etch_write, wait_for  # noqa: E402
from peers import (  # noqa: E402
    NODE_DIR,
    Peer,
    ensure_node_opcua,
    free_port,
    start_influxdb1,
    start_mosquitto,
    start_victoria_metrics,
)
from pipeline_bounds import (  # noqa: E402
    memory_bandwidth_gbs,
    sqlite_append_rate,
    tsdb_write_rate,
)

from hw_sim.etch import STATUS_STOPPED, regs_float  # noqa: E402


def tool(k: int) -> str:
    return f"etch{k + 1}"


def interlock(k: int) -> str:
    return f"{tool(k)}_overtemp"
DEVICES = 1000
MOTORS = 14
CLK = os.sysconf("SC_CLK_TCK")
PY = sys.executable


def dev(i: int) -> str:
    return f"m{i:04d}"


# --------------------------------------------------------------------------- /proc


def cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK
    except (OSError, IndexError, ValueError):
        return math.nan


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


# --------------------------------------------------------------------------- metrics


def metric(m: dict[str, float], name: str, *labels: str) -> float:
    return sum(v for k, v in m.items()
               if (k == name or k.startswith(name + "{")) and all(lb in k for lb in labels))


def hist_quantiles(before: dict[str, float], after: dict[str, float], name: str,
                   qs: tuple[float, ...] = (0.5, 0.99)) -> tuple[list[float], int]:
    """Quantiles (upper bucket bounds, s) of what a histogram gained between snapshots."""
    buckets: dict[float, float] = {}
    for k, v in after.items():
        if k.startswith(name + "_bucket{"):
            le = k.split('le="', 1)[1].split('"', 1)[0]
            bound = math.inf if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + v - before.get(k, 0.0)
    bounds = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    out = []
    for q in qs:
        want = q * total
        out.append(next((b for b in bounds if buckets[b] >= want and total), math.nan))
    return out, int(total)


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


# --------------------------------------------------------------------------- config


def etch_source(name: str, port: int) -> dict[str, Any]:
    return {"type": "modbus", "name": name, "host": "127.0.0.1", "port": port,
            "device_id": 1, "poll_interval_s": 0.1, "timeout_s": 0.5, "backoff_max_s": 1.0,
            "registers": [
                {"name": "chamber_temp", "address": 0, "type": "float32", "unit": "degC"},
                {"name": "pressure", "address": 2, "type": "float32", "unit": "mTorr"},
                {"name": "rf_power", "address": 4, "type": "float32", "unit": "W"},
                {"name": "gas_flow", "address": 6, "type": "float32", "unit": "sccm"},
                {"name": "lot", "address": 8, "type": "uint16"},
                {"name": "wafer", "address": 9, "type": "uint16"},
                {"name": "step", "address": 10, "type": "uint16"},
                {"name": "status", "address": 11, "type": "uint16"},
            ],
            "commands": [{"action": "stop", "function": "coil", "address": 0, "value": 1}]}


def etch_interlock(name: str) -> dict[str, Any]:
    return {"name": f"{name}_overtemp", "tag": f"{name}/chamber_temp", "high": 188.0,
            "clear_hysteresis": 2.0, "trip_on_bad_quality": False,
            "action": {"source": name, "action": "stop"},
            "context_tags": [f"{name}/lot", f"{name}/wafer"], "evidence_samples": 20}


def gateway_config(tmp: Path, ports: dict[str, int], tsdb: Peer, influx_v1: bool,
                   *, opcua_interval_ms: float, tools: int,
                   opcua_threaded: bool | None = None) -> dict[str, Any]:
    devices = [dev(i) for i in range(DEVICES)]
    sink: dict[str, Any] = {"type": "influx", "name": "tsdb", "url": tsdb.url, "timeout_s": 30.0}
    if influx_v1:
        sink.update(api="v1", database="edge")
    else:
        sink.update(api="v2", org="bench", bucket="bench")
    return {
        "gateway": {"id": "gw-bench", "state_dir": str(tmp / "state"), "log_level": "info",
                    "log_format": "json", "shutdown_timeout_s": 20.0,
                    "metrics_port": ports["metrics"]},
        "journal": {"durability": "process-crash", "max_mb": 4096.0},
        "sources": [
            {"type": "mqtt", "name": "bench", "host": "127.0.0.1", "port": ports["mqtt"],
             "qos": 1, "client_id": "gw-bench", "clean_session": True,
             "subscriptions": [{
                 "topic": "bench/+/batch", "device": "{1}", "devices": devices,
                 "batched": True, "ts_field": "ts", "ts_unit": "ms",
                 "fields": [{"path": "current_a", "tag": "current_a", "unit": "A"}],
             }]},
            {"type": "file", "name": "bulk", "paths": [str(tmp / "bulk")], "mode": "samples",
             "device": "bulk", "timestamp_column": "ts", "epoch_unit": "ns",
             "debounce_ms": 50, "rescan_s": 5.0,
             "values": [{"column": c, "tag": c} for c in ("a", "b", "c")]},
            {"type": "file", "name": "cmm1", "paths": [str(tmp / "cmm")], "mode": "cmm",
             "debounce_ms": 50, "rescan_s": 5.0},
            *(etch_source(tool(k), ports[tool(k)]) for k in range(tools)),
        ],
        "compensation": [{"name": "cmm1"}],
        "interlocks": [etch_interlock(tool(k)) for k in range(tools)],
        "health": [{"name": "line", "health_interval_s": 5.0, "motors": [
            {"name": dev(i), "current_tag": f"{dev(i)}/current_a"} for i in range(MOTORS)]}],
        "spc": [{"name": "etch1_temp", "tag": "etch1/chamber_temp", "baseline_samples": 100,
                 "rules": ["ewma"]}],
        "sinks": [
            {"type": "mes", "name": "mes", "url": f"http://127.0.0.1:{ports['mes']}",
             "timeout_s": 5.0, "connect_timeout_s": 1.0},
            sink,
            {"type": "opcua", "name": "opcua", "profile": "demo",
             "endpoint": f"opc.tcp://127.0.0.1:{ports['opcua']}/edge",
             "update_interval_ms": opcua_interval_ms}
            | ({} if opcua_threaded is None else {"threaded": opcua_threaded}),
        ],
    }


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    tmp: Path
    args: argparse.Namespace
    ports: dict[str, int] = field(default_factory=dict)
    peers: list[Peer] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    gw: Gateway | None = None
    mqtt_pub: Proc | None = None
    files: Proc | None = None
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    mes: Mes | None = None
    tsdb: Peer | None = None
    broker: Peer | None = None

    def set_rate(self, samples_per_s: float, cmm_rows: float) -> None:
        mqtt = samples_per_s * (1 - self.args.file_share)
        (self.tmp / "mqtt_rate.txt").write_text(f"{mqtt:.0f}")
        bulk = samples_per_s * self.args.file_share
        (self.tmp / "file_rate.json").write_text(json.dumps({"bulk": bulk, "cmm": cmm_rows}))

    def sent(self) -> dict[str, float]:
        """Samples (rows for cmm) the generators sent; ``idle`` when both are paused
        and their counts final."""
        out: dict[str, float] = {"mqtt": 0.0, "bulk": 0.0, "cmm": 0.0, "idle": 0.0}
        idle = 0
        with contextlib.suppress(OSError, ValueError, KeyError):
            doc = json.loads((self.tmp / "mqtt_sent.json").read_text())
            out["mqtt"] = doc["sent"]
            idle += doc["rate"] == 0
        with contextlib.suppress(OSError, ValueError, KeyError):
            doc = json.loads((self.tmp / "files_sent.json").read_text())
            out["bulk"], out["cmm"] = doc["bulk_sent"], doc["cmm_sent"]
            idle += bool(doc["idle"])
        out["idle"] = float(idle == 2)
        return out

    def pids(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.gw is not None and self.gw.alive:
            out["gateway"] = self.gw.pid
        for p in self.procs:
            if p.alive:
                out[p.name] = p.pid
        for peer in self.peers:
            out[peer.name] = peer.proc.pid
        for k, node in enumerate(self.nodes):
            out[f"opcua-client-{k}"] = node.pid
        return out

    def close(self) -> None:
        for node in self.nodes:
            if node.poll() is None:
                node.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.wait(5)
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        if self.gw is not None:
            with contextlib.suppress(Exception):
                self.gw.close()
        for peer in self.peers:
            with contextlib.suppress(Exception):
                peer.stop()


def start_world(w: World) -> None:
    tmp, a = w.tmp, w.args
    for d in ("bulk", "cmm"):
        (tmp / d).mkdir(exist_ok=True)
    w.broker = start_mosquitto(tmp)
    w.peers.append(w.broker)
    if a.influx:
        w.tsdb = start_influxdb1(tmp)
        httpx.post(f"{w.tsdb.url}/query", data={"q": "CREATE DATABASE edge"},
                   timeout=10).raise_for_status()
    else:
        w.tsdb = start_victoria_metrics(tmp)
    w.peers.append(w.tsdb)
    w.ports = {"mqtt": w.broker.port, "mes": free_port(), "mes_admin": free_port(),
               "opcua": free_port(), "metrics": free_port(),
               **{tool(k): free_port() for k in range(a.etch_tools)}}
    mes = PlantPart("mes", tmp, {"seed": 7, "speed": 1.0, "truth": "truth-mes.jsonl",
                                 "mes": {"port": w.ports["mes"], "admin_port": w.ports["mes_admin"],
                                         "db": str(tmp / "mes.sqlite")},
                                 "cmm": {"enabled": False}, "etch": {"enabled": False},
                                 "motors": {"enabled": False}},
                    [w.ports["mes"], w.ports["mes_admin"]])
    tools = [PlantPart(tool(k), tmp, {
        "seed": 7 + k, "speed": 1.0, "truth": f"truth-{tool(k)}.jsonl",
        "etch": {"port": w.ports[tool(k)], "dt_s": 0.1, "excursion_ramp_c_per_s": 20.0,
                 "excursion_duration_s": 2.0, "cool_tau_s": 10.0, "heat_tau_s": 2.0,
                 "excursion_decay_tau_s": 0.5},
        "cmm": {"enabled": False}, "mes": {"enabled": False}, "motors": {"enabled": False}},
        [w.ports[tool(k)]]) for k in range(a.etch_tools)]
    for part in (mes, *tools):
        w.procs.append(part)
        part.start()
    if a.device_rt:
        for part in tools:  # the plant's model and Modbus server share its main thread
            os.sched_setscheduler(part.pid, os.SCHED_FIFO, os.sched_param(5))
    w.mes = Mes(w.ports["mes_admin"])


def start_gateway(w: World) -> float:
    cfg = gateway_config(w.tmp, w.ports, w.tsdb, w.args.influx,  # type: ignore[arg-type]
                         opcua_interval_ms=w.args.opcua_interval_ms, tools=w.args.etch_tools,
                         opcua_threaded=w.args.opcua_threaded)
    w.gw = Gateway(w.tmp, cfg)
    w.gw.start(ready_timeout=120)
    return float(w.gw.ready_s)


def start_generators(w: World) -> None:
    w.set_rate(0, 0)
    tmp = w.tmp
    w.mqtt_pub = Proc("gen-mqtt", [PY, str(BENCH / "pipeline_mqtt.py"), "--port",
                                   str(w.ports["mqtt"]), "--rate-file", str(tmp / "mqtt_rate.txt"),
                                   "--out", str(tmp / "mqtt_sent.json"), "--devices",
                                   str(DEVICES), "--per-msg", str(w.args.per_msg)], tmp)
    w.files = Proc("gen-files", [PY, str(BENCH / "pipeline_files.py"), "--bulk-dir",
                                 str(tmp / "bulk"), "--cmm-dir", str(tmp / "cmm"),
                                 "--rate-file", str(tmp / "file_rate.json"),
                                 "--out", str(tmp / "files_sent.json")], tmp)
    for p in (w.mqtt_pub, w.files):
        w.procs.append(p)
        p.start()


def start_opcua_clients(w: World, seconds: float) -> None:
    """``--opcua-clients`` node-opcua clients (own processes), each subscribed to every
    one of the 1,000 MQTT tags at ``--opcua-publishing-ms``, for the whole run."""
    ensure_node_opcua()
    for k in range(w.args.opcua_clients):
        spec = {"endpoint": f"opc.tcp://127.0.0.1:{w.ports['opcua']}/edge",
                "pki": str(w.tmp / f"pki{k}"), "security": "none",
                "ns_uri": "urn:edge-gateway:tags", "signal_ready": True,
                "steps": [{"subscribe": [f"s={dev(i)}/current_a" for i in range(DEVICES)],
                           "ms": int(seconds * 1000),
                           "publishing_ms": w.args.opcua_publishing_ms}]}
        log = w.tmp / f"opcua-client-{k}.log"
        w.nodes.append(subprocess.Popen(
            ["node", str(NODE_DIR / "opcua_client.js"), json.dumps(spec)], cwd=NODE_DIR,
            stdout=(w.tmp / f"opcua-client-{k}.json").open("wb"), stderr=log.open("wb")))
        wait_for(f"OPC-UA client {k} to subscribe",
                 lambda log=log: b"SUBSCRIBED" in log.read_bytes(), 60)  # type: ignore[misc]

# --------------------------------------------------------------------------- interlocks


class Tripper:
    """Forces an excursion of etch tool ``k`` ``every_s`` after the chamber is back at
    temperature; resets tool and interlock after the trip. Runs in a thread while a
    phase is measured."""

    def __init__(self, w: World, every_s: float, k: int = 0) -> None:
        self.w, self.every_s, self.k = w, every_s, k
        self.stop = threading.Event()
        self.trips = 0
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"tripper-{k}")

    def __enter__(self) -> Tripper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def _device(self, client: Any) -> tuple[float, int]:
        """(chamber temperature, status bits) read from the tool itself: waiting on the
        gateway's status instead would put ~60 status requests/s (4 tools) on the loop
        whose interference is being measured."""
        rr = client.read_holding_registers(0, count=12, device_id=1)
        if rr.isError():
            raise AssertionError(f"{tool(self.k)} read failed: {rr}")
        return regs_float(rr.registers[0:2]), int(rr.registers[11])

    def _run(self) -> None:
        from pymodbus.client import ModbusTcpClient

        gw, port, name = self.w.gw, self.w.ports[tool(self.k)], interlock(self.k)
        assert gw is not None
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=1)
        client.connect()  # type: ignore[no-untyped-call]
        try:
            while not self.stop.wait(self.every_s):
                try:
                    etch_write(port, coil=1, value=1)  # running, whatever the last cycle left
                    # an excursion adds ~15 C: start it once the tool is back near 180 C
                    wait_for("the chamber to heat up again",
                             lambda: self._device(client)[0] >= 178.0, 30, interval=0.1)
                    etch_write(port, register=20, value=1)
                    wait_for("the interlock to stop the tool",
                             lambda: bool(self._device(client)[1] & STATUS_STOPPED), 15,
                             interval=0.05)
                    etch_write(port, coil=1, value=1)
                    wait_for("the interlock reset", lambda: bool(
                        gw.ask({"cmd": "interlock_reset", "name": name}).get("ok")), 20,
                        interval=0.2)
                    self.trips += 1
                except AssertionError as exc:
                    self.failures.append(str(exc).splitlines()[0])
        finally:
            client.close()  # type: ignore[no-untyped-call]


class Trippers:
    """One Tripper per etch tool, started together; their trips and failures summed."""

    def __init__(self, w: World, every_s: float) -> None:
        self.all = [Tripper(w, every_s, k) for k in range(w.args.etch_tools)]

    def __enter__(self) -> Trippers:
        for t in self.all:
            t.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self.all:
            t.stop.set()
        for t in self.all:
            t.__exit__()

    @property
    def trips(self) -> int:
        return sum(t.trips for t in self.all)

    @property
    def failures(self) -> list[str]:
        return [f for t in self.all for f in t.failures]


# --------------------------------------------------------------------------- phases


@dataclass
class Snap:
    t: float
    m: dict[str, float]
    cpu: dict[str, float]
    sent: dict[str, float]


def snap(w: World) -> Snap:
    assert w.gw is not None
    return Snap(time.monotonic(), w.gw.metrics(), {n: cpu_s(p) for n, p in w.pids().items()},
                w.sent())


def ingested(m: dict[str, float], source: str) -> float:
    return metric(m, "edge_ingest_total", f'source="{source}"', 'kind="samples"')


def ingest_cmm(m: dict[str, float]) -> float:
    return metric(m, "edge_ingest_total", 'source="cmm1"', 'kind="records"')


def caught_up(w: World, timeout: float) -> tuple[dict[str, float], float]:
    """Wait until the gateway ingested all that the generators sent; what is missing."""
    assert w.gw is not None
    gw = w.gw
    t0 = time.monotonic()
    while True:
        time.sleep(0.25)
        sent = w.sent()
        if not sent["idle"] and time.monotonic() - t0 < timeout:
            continue  # the generators' last counts are not final yet
        m = gw.metrics()
        missing = {"mqtt": sent["mqtt"] - ingested(m, "bench"),
                   "bulk": sent["bulk"] - ingested(m, "bulk"),
                   "cmm": sent["cmm"] - ingest_cmm(m)}
        if all(v <= 0 for v in missing.values()) or time.monotonic() - t0 > timeout:
            return missing, time.monotonic() - t0


def step(w: World, rate: float, args: argparse.Namespace, profile: bool) -> dict[str, Any]:
    assert w.gw is not None
    w.set_rate(rate, args.cmm_rows)
    time.sleep(args.warm)
    a = snap(w)
    profs: list[tuple[subprocess.Popen[bytes], Path]] = []
    if profile:  # CPU by stack (100 Hz), and a 500 Hz timeline for pipeline_stalls.py
        for opts, name in ((["-r", "100", "--format", "raw"], f"profile-{int(rate)}.txt"),
                           (["-r", "500", "--idle", "--format", "speedscope"],
                            f"timeline-{int(rate)}.json")):
            profs.append((subprocess.Popen(
                [str(Path(PY).parent / "py-spy"), "record", "-p", str(w.gw.pid), "-d",
                 str(int(args.seconds)), *opts, "-o", str(w.tmp / name)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), w.tmp / name))
    with Trippers(w, args.trip_every) as tripper:
        time.sleep(args.seconds)
    b = snap(w)
    rss = rss_mb(w.gw.pid)
    w.set_rate(0, 0)
    missing, catch_s = caught_up(w, args.catchup_timeout)
    for prof, path in profs:
        prof.wait(60)
        with contextlib.suppress(OSError):
            shutil.copy(path, args.out / path.name)
    return summarize(f"{rate / 1000:.0f}k", a, b, rss, missing, catch_s, tripper, w)


def summarize(name: str, a: Snap, b: Snap, rss: float, missing: dict[str, float],
              catch_s: float, tripper: Trippers, w: World) -> dict[str, Any]:
    dt = b.t - a.t
    ing = {s: (ingested(b.m, s) - ingested(a.m, s)) / dt for s in ("bench", "bulk")}
    ing["etch"] = sum(ingested(b.m, tool(k)) - ingested(a.m, tool(k))
                      for k in range(w.args.etch_tools)) / dt
    total = sum(ing.values())
    sent = {k: (b.sent[k] - a.sent[k]) / dt for k in ("mqtt", "bulk", "cmm")}
    cpu = {n: (b.cpu.get(n, math.nan) - a.cpu.get(n, math.nan)) / dt for n in b.cpu}
    gw_cpu = cpu.get("gateway", math.nan)
    rq, n_r = hist_quantiles(a.m, b.m, "edge_interlock_reaction_seconds")
    lq, n_l = hist_quantiles(a.m, b.m, "edge_event_loop_lag_seconds")
    gq, n_g = hist_quantiles(a.m, b.m, "edge_gc_pause_seconds")
    delivered = {k: (metric(b.m, "edge_sink_delivered_total", f'sink="{k}"')
                     - metric(a.m, "edge_sink_delivered_total", f'sink="{k}"')) / dt
                 for k in ("tsdb", "mes")}
    return {
        "phase": name, "seconds": round(dt, 1),
        "offered_per_s": round(sent["mqtt"] + sent["bulk"]),
        "ingested_per_s": round(total), "by_source": {k: round(v) for k, v in ing.items()},
        "cmm_rows_per_s": round(sent["cmm"], 1),
        "journal_appended_per_s": round((metric(b.m, "edge_journal_appended_total")
                                         - metric(a.m, "edge_journal_appended_total")) / dt),
        "delivered_per_s": {k: round(v) for k, v in delivered.items()},
        "missing_after_pause": {k: int(v) for k, v in missing.items()},
        "caught_up_s": round(catch_s, 1),
        "gateway_cpu_cores": round(gw_cpu, 3),
        "cpu_cores_per_100k": round(gw_cpu / (total / 1e5), 3) if total else math.nan,
        "other_cpu_cores": {k: round(v, 3) for k, v in cpu.items() if k != "gateway"},
        "rss_mb": round(rss, 1),
        "interlock_trips": tripper.trips, "trip_failures": tripper.failures,
        "reaction_hist_p50_p99_ms": [round(x * 1e3, 3) for x in rq], "reaction_n": n_r,
        "loop_lag_hist_p50_p99_ms": [round(x * 1e3, 3) for x in lq], "loop_lag_n": n_l,
        "gc_pause_hist_p50_p99_ms": [round(x * 1e3, 3) for x in gq], "gc_n": n_g,
        "opcua_updates_per_s": round(
            (metric(b.m, "edge_opcua_updates_total") - metric(a.m, "edge_opcua_updates_total"))
            / dt),
        "window": [a.t, b.t],
    }


def outage(w: World, args: argparse.Namespace) -> dict[str, Any]:
    """MES refused for ``outage_s`` under load at ``outage_rate``; then the drain."""
    assert w.gw is not None and w.mes is not None
    gw, mes = w.gw, w.mes
    w.set_rate(args.outage_rate, args.cmm_rows)
    time.sleep(args.warm)
    m0 = gw.metrics()
    recs0 = metric(m0, "edge_journal_appended_total", 'kind="records"')
    mes.fault("refuse")
    t_cut = time.monotonic()
    a = snap(w)
    with Trippers(w, args.trip_every) as tr_out:
        time.sleep(args.outage_s)
    b = snap(w)
    st = gw.status()["journal"]["mes"]
    backlog_entries, backlog_points = st["depth_entries"], st["depth_points"]
    backlog_records = (metric(b.m, "edge_journal_appended_total", 'kind="records"')
                       - metric(gw.metrics(), "edge_sink_delivered_total", 'sink="mes"'))
    journal_mb = gw.metrics().get("edge_journal_bytes", math.nan) / 1e6
    rss_peak = rss_mb(gw.pid)
    prof: subprocess.Popen[bytes] | None = None
    if args.profile:
        prof = subprocess.Popen(
            [str(Path(PY).parent / "py-spy"), "record", "-p", str(gw.pid), "-d", "20",
             "-r", "500", "--idle", "--format", "speedscope",
             "-o", str(args.out / "timeline-drain.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mes.fault("ok")
    t_ok = time.monotonic()
    c = snap(w)
    with Trippers(w, args.trip_every) as tr_drain:
        # the delivery loop is still in its retry backoff (up to backoff max_s) when the
        # MES comes back: the drain proper starts with the first delivery
        mes0 = gw.status()["sinks"]["mes"]["delivered_points"]
        wait_for("the first delivery to the MES",
                 lambda: gw.status()["sinks"]["mes"]["delivered_points"] > mes0,
                 args.drain_timeout, interval=0.05)
        t_first = time.monotonic()

        def drained() -> bool:
            s = gw.status()["journal"]["mes"]
            return bool(s["oldest_unsent_age_s"] < 3.0)
        wait_for("the MES backlog to drain", drained, args.drain_timeout, interval=0.1)
        t_done = time.monotonic()
        d = snap(w)
    if prof is not None:
        prof.wait(60)
    drain_s = t_done - t_first
    m1 = d.m
    mes_delivered = (metric(m1, "edge_sink_delivered_total", 'sink="mes"')
                     - metric(c.m, "edge_sink_delivered_total", 'sink="mes"'))
    live_records = (metric(b.m, "edge_journal_appended_total", 'kind="records"') - recs0) / (
        b.t - t_cut + args.warm)
    w.set_rate(0, 0)
    missing, catch_s = caught_up(w, args.catchup_timeout)
    out = summarize("outage", a, b, rss_peak, missing, catch_s, tr_out, w)
    drain = summarize("drain", c, d, rss_mb(gw.pid), missing, catch_s, tr_drain, w)
    return {
        "outage": out, "drain": drain, "outage_s": round(b.t - t_cut, 1),
        "backlog_records": int(backlog_records), "backlog_entries": int(backlog_entries),
        "backlog_points_all_kinds": int(backlog_points), "journal_mb_at_end": round(journal_mb, 1),
        "retry_wait_s": round(t_first - t_ok, 2),
        "drain_s": round(drain_s, 2), "mes_delivered_in_drain": int(mes_delivered),
        "drain_records_per_s": round(mes_delivered / drain_s) if drain_s else math.nan,
        "live_records_per_s": round(live_records, 1),
    }


def tsdb_count(w: World) -> float:
    """Points of the MQTT series the time-series database holds."""
    assert w.tsdb is not None
    if w.args.influx:
        r = httpx.get(f"{w.tsdb.url}/query", params={
            "db": "edge", "q": 'SELECT count("current_a") FROM /^m[0-9]+$/'}, timeout=120)
        r.raise_for_status()
        total = 0.0
        for series in r.json()["results"][0].get("series", []):
            total += series["values"][0][1]
        return total
    r = httpx.get(f"{w.tsdb.url}/api/v1/query", params={
        "query": 'sum(count_over_time({__name__=~"m[0-9]+_current_a"}[1d]))'}, timeout=120)
    r.raise_for_status()
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def final_accounting(w: World, args: argparse.Namespace) -> dict[str, Any]:
    assert w.gw is not None
    gw = w.gw

    def delivered() -> bool:
        m = gw.metrics()
        return metric(m, "edge_sink_delivered_total", 'sink="tsdb"') >= metric(
            m, "edge_journal_appended_total")
    with contextlib.suppress(AssertionError):
        wait_for("the time-series sink to deliver everything", delivered, 120, interval=0.5)
    m = gw.metrics()
    sent = w.sent()
    vm_points = math.nan
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        vm_points = tsdb_count(w)
        if vm_points >= sent["mqtt"]:
            break
        time.sleep(2)
    assert w.mes is not None
    return {
        "sent": sent,
        "ingested": {"mqtt": ingested(m, "bench"), "bulk": ingested(m, "bulk"),
                     "cmm_rows": ingest_cmm(m)},
        "journal_appended": {k: metric(m, "edge_journal_appended_total", f'kind="{k}"')
                             for k in ("samples", "records")},
        "tsdb_delivered": metric(m, "edge_sink_delivered_total", 'sink="tsdb"'),
        "tsdb_mqtt_points": vm_points,
        "mes_counts": w.mes.counts(),
        "evicted": metric(m, "edge_journal_evicted_total"),
        "rss_peak_mb": rss_mb(gw.pid, "VmHWM"),
    }


def trip_reactions(w: World, windows: dict[str, list[float]], t_wall0: float,
                   t_mono0: float) -> dict[str, dict[str, float]]:
    """Exact reaction times of the trips (InterlockTrip records at the MES) per phase."""
    assert w.mes is not None
    out: dict[str, dict[str, float]] = {}
    trips = w.mes.records("interlock_trip")
    for name, (lo, hi) in windows.items():
        lo_ns = (t_wall0 + lo - t_mono0) * 1e9
        hi_ns = (t_wall0 + hi - t_mono0) * 1e9
        r = [t["reaction_ns"] / 1e6 for t in trips if lo_ns <= t["ts_ns"] <= hi_ns]
        out[name] = {"n": len(r), "p50_ms": round(pct(r, 0.5), 3),
                     "p99_ms": round(pct(r, 0.99), 3),
                     "max_ms": round(max(r), 3) if r else math.nan}
    return out


# --------------------------------------------------------------------------- READY


def ready_config(tmp: Path, tags: int) -> dict[str, Any]:
    devices = [f"t{i:05d}" for i in range(tags)]
    return {
        "gateway": {"id": "gw-ready", "state_dir": str(tmp / "state"), "log_format": "json"},
        "sources": [{"type": "mqtt", "name": "many", "host": "127.0.0.1",
                     "port": free_port(), "qos": 0,
                     "subscriptions": [{"topic": "many/+/batch", "device": "{1}",
                                        "devices": devices, "batched": True,
                                        "fields": [{"path": "v", "tag": "v", "unit": "A"}]}],
                     "commands": [{"action": "stop", "topic": "many/stop"}]}],
        "interlocks": [{"name": "il", "tag": "t00000/v", "high": 10.0,
                        "action": {"source": "many", "action": "stop"}}],
        "health": [{"name": "h", "motors": [{"name": devices[i], "current_tag":
                                             f"{devices[i]}/v"} for i in range(14)]}],
        "spc": [{"name": "s", "tag": "t00001/v", "rules": ["ewma"]}],
        "sinks": [{"type": "opcua", "name": "opcua", "profile": "demo",
                   "endpoint": f"opc.tcp://127.0.0.1:{free_port()}/edge"}],
    }


def ready_times(base: Path, tags: int, runs: int) -> dict[str, Any]:
    """Start to READY=1, as systemd runs the daemon: ``CACHE_DIRECTORY`` (the unit's
    ``CacheDirectory=``) holds the numba kernels (``NUMBA_CACHE_DIR`` below it) and the
    OPC-UA standard address space. cold: the folder empty; warm: as any restart finds it;
    numba_only: the kernels warm but the OPC-UA cache empty (the first start after an
    asyncua upgrade). Every run has a fresh state folder."""
    cache = base / "cache"
    out: dict[str, Any] = {"tags": None, "cold_s": [], "warm_s": [], "numba_only_s": []}
    for kind in ["cold"] + ["warm"] * runs + ["numba_only"] * runs:
        if kind == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        elif kind == "numba_only":
            shutil.rmtree(cache / "opcua", ignore_errors=True)
        cache.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=f"ready-{kind}-"))
        gw = Gateway(tmp, ready_config(tmp, tags))
        gw.env["CACHE_DIRECTORY"] = str(cache)
        gw.env["NUMBA_CACHE_DIR"] = str(cache / "numba")
        try:
            gw.start(ready_timeout=180)
            out[f"{kind}_s"].append(round(gw.ready_s, 3))
            ev = gw.events("gateway ready")
            if ev:
                out["tags"] = ev[-1].get("tags")
        finally:
            gw.close()
    for kind in ("cold", "warm", "numba_only"):
        out[f"{kind}_median_s"] = round(statistics.median(out[f"{kind}_s"]), 3)
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rates", default="50000,100000,200000,300000")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warm", type=float, default=5.0)
    ap.add_argument("--file-share", type=float, default=0.1)
    ap.add_argument("--cmm-rows", type=float, default=60.0)
    ap.add_argument("--per-msg", type=int, default=1000)
    ap.add_argument("--trip-every", type=float, default=1.0)
    ap.add_argument("--etch-tools", type=int, default=4)
    ap.add_argument("--device-rt", action=argparse.BooleanOptionalAction,
                    default=os.geteuid() == 0,
                    help="run the etch tools SCHED_FIFO (default: when root)")
    ap.add_argument("--catchup-timeout", type=float, default=60.0)
    ap.add_argument("--outage-s", type=float, default=60.0)
    ap.add_argument("--outage-rate", type=float, default=200_000)
    ap.add_argument("--drain-timeout", type=float, default=300.0)
    ap.add_argument("--opcua-interval-ms", type=float, default=50.0)
    ap.add_argument("--opcua-clients", type=int, default=1,
                    help="node-opcua clients, each subscribed to all 1,000 MQTT tags")
    ap.add_argument("--opcua-publishing-ms", type=float, default=100.0)
    ap.add_argument("--opcua-threaded", action=argparse.BooleanOptionalAction, default=None,
                    help="the OPC-UA sink's `threaded` option (default: the sink's default)")
    ap.add_argument("--ready-tags", type=int, default=5000)
    ap.add_argument("--ready-runs", type=int, default=3)
    ap.add_argument("--influx", action="store_true", help="influxd 1.x instead of VictoriaMetrics")
    ap.add_argument("--profile", action="store_true", help="py-spy the top rate step")
    ap.add_argument("--skip", default="", help="comma list of: bounds,steps,outage,ready")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    rates = [float(r) for r in args.rates.split(",") if r]
    results: dict[str, Any] = {"argv": sys.argv[1:], "cpus": os.cpu_count()}
    base = Path(tempfile.mkdtemp(prefix="edge-pipeline-"))
    w = World(base / "run", args)
    w.tmp.mkdir()
    t_wall0, t_mono0 = time.time(), time.monotonic()
    try:
        start_world(w)
        if "bounds" not in skip:
            assert w.tsdb is not None
            url = f"{w.tsdb.url}/write" if args.influx else f"{w.tsdb.url}/api/v2/write"
            params = ({"db": "edge", "precision": "n"} if args.influx
                      else {"org": "bench", "bucket": "bench", "precision": "ns"})
            results["bounds"] = {
                "sqlite_append_ack_samples_per_s": round(sqlite_append_rate()),
                "tsdb_write_points_per_s": round(tsdb_write_rate(url, params)),
                "memory_copy_gb_s": round(memory_bandwidth_gbs(), 2),
            }
            print(json.dumps(results["bounds"]), flush=True)
        if not ({"steps", "outage"} <= skip):
            results["ready_s_bench_config"] = round(start_gateway(w), 3)
            planned = (len(rates) * (args.seconds + args.warm + 30) + args.outage_s + 600)
            start_opcua_clients(w, planned)
            start_generators(w)
            windows: dict[str, list[float]] = {}
            results["steps"] = []
            if "steps" not in skip:
                for i, rate in enumerate(rates):
                    res = step(w, rate, args, profile=args.profile and i == len(rates) - 1)
                    windows[res["phase"]] = res.pop("window")
                    results["steps"].append(res)
                    print(json.dumps(res), flush=True)
            if "outage" not in skip:
                res = outage(w, args)
                windows["outage"] = res["outage"].pop("window")
                windows["drain"] = res["drain"].pop("window")
                results["outage"] = res
                print(json.dumps(res), flush=True)
            results["accounting"] = final_accounting(w, args)
            print(json.dumps(results["accounting"]), flush=True)
            results["trip_reactions"] = trip_reactions(w, windows, t_wall0, t_mono0)
            print(json.dumps(results["trip_reactions"]), flush=True)
            for node in w.nodes:
                node.terminate()
        w.close()
        if "ready" not in skip:
            results["ready"] = ready_times(base, args.ready_tags, args.ready_runs)
            print(json.dumps(results["ready"]), flush=True)
    finally:
        w.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (args.out / f"pipeline-{stamp}.json").write_text(json.dumps(results, indent=1))
        if w.gw is not None:
            with contextlib.suppress(OSError):
                shutil.copy(w.gw.log, args.out / f"pipeline-{stamp}-gateway.log")
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}", file=sys.stderr)


if __name__ == "__main__":
    main()
