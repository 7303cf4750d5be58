"""A short real gateway run into a real InfluxDB 1.x, for the dashboard tests.

``gateway_run(tmp)`` starts influxd and mosquitto (``tests/peers.py``), the hw_sim plant
as ``hw-sim plant --config`` (the command ``hw-sim-plant.service`` runs) and the daemon
as ``edge-gateway run --config`` (the command ``edge-gateway.service`` runs) with file,
Modbus and MQTT sources, every stage (OEE and energy with one-minute shifts) and
InfluxDB + MES sinks. The plant settings
make every kind of data appear within seconds: a part every 2 s, a chamber excursion
above the 188 C interlock limit every 8 s, worn motors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hw_sim.motors import MOTOR_IDS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import Peer, free_port, start_influxdb1, start_mosquitto

DATABASE = "edge"
BIN = Path(sys.executable).parent
# Device names as in config/demo.toml: <station>_<component>.
DEVICES = [m.replace("/", "_") for m in MOTOR_IDS]
MOTORS = ("conveyor_belt", "hbw_horizontal", "vgr_rotate")
# One-minute shifts, so that OEE and energy reports (per shift) appear within a short run.
MINUTE_SHIFTS = "[" + ", ".join(
    f'{{ name = "m{m:04d}", start = "{m // 60:02d}:{m % 60:02d}", '
    f'end = "{(m + 1) // 60:02d}:{(m + 1) % 60:02d}" }}' for m in range(1440)) + "]"


@dataclass
class Run:
    influx: Peer
    state: Path
    gateway_log: Path

    def query(self, q: str) -> dict[str, Any]:
        return influx_query(self.influx.url, q)


def influx_query(url: str, q: str, db: str = DATABASE) -> dict[str, Any]:
    """``GET /query`` (``POST`` for statements that write); the decoded answer."""
    params = urllib.parse.urlencode({"db": db, "q": q, "epoch": "ns"})
    method = "POST" if q.lstrip().upper().startswith(("CREATE", "DROP")) else "GET"
    req = urllib.request.Request(f"{url}/query?{params}", method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def series_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """Every series of every statement; raises on an InfluxQL error."""
    out: list[dict[str, Any]] = []
    for result in answer.get("results", []):
        if "error" in result:
            raise AssertionError(result["error"])
        out += result.get("series", [])
    return out


def plant_toml(state: Path, etch: int, mqtt: int, mes: int, mes_admin: int) -> str:
    return f"""
seed = 7
speed = 1.0
truth = "{state / 'truth.jsonl'}"
[bad_data]
rate = 0.005
kinds = ["garbage"]
[cmm]
dir = "{state / 'cmm'}"
mode = "part"
part_interval_s = 2.0
hvac_period_s = 120.0
[etch]
port = {etch}
excursion_every_s = 8.0
excursion_duration_s = 2.0
[motors]
broker_port = {mqtt}
initial_health = 0.6
health_every_s = 10.0
[mes]
port = {mes}
admin_port = {mes_admin}
db = "{state / 'mes.sqlite'}"
"""


def gateway_toml(state: Path, influx_url: str, etch: int, mqtt: int, mes: int) -> str:
    registers = "\n".join(
        f'[[sources.registers]]\nname = "{n}"\naddress = {a}\ntype = "float32"\nunit = "{u}"'
        for n, a, u in (("chamber_temp", 0, "degC"), ("pressure", 2, "mTorr"),
                        ("rf_power", 4, "W"), ("gas_flow", 6, "sccm"))
    )
    motors = "\n".join(
        f'[[health.motors]]\nname = "{m}"\ncurrent_tag = "{m}/current_a"' for m in MOTORS
    )
    energy_motors = "\n".join(
        f'[[energy.motors]]\nname = "{m}"\ncurrent_tag = "{m}/current_a"' for m in MOTORS
    )
    return f"""
[gateway]
id = "gw-dash"
state_dir = "{state / 'gateway'}"
log_format = "json"
shutdown_timeout_s = 5

[[sources]]
type = "file"
name = "cmm1"
paths = ["{state / 'cmm'}"]
mode = "cmm"
debounce_ms = 50
rescan_s = 1.0

[[sources]]
type = "modbus"
name = "etch1"
host = "127.0.0.1"
port = {etch}
poll_interval_s = 0.1
{registers}
[[sources.registers]]
name = "wafer"
address = 9
type = "uint16"
[[sources.registers]]
name = "status"
address = 11
type = "uint16"
[[sources.commands]]
action = "stop"
function = "coil"
address = 0

[[sources]]
type = "mqtt"
name = "motors"
port = {mqtt}
qos = 0
[[sources.subscriptions]]
topic = "stf/+/+/telemetry"
device = "{{1}}_{{2}}"
devices = {json.dumps(DEVICES)}
ts_field = "ts"
[[sources.subscriptions.fields]]
path = "current_a"
tag = "current_a"
unit = "A"
[[sources.commands]]
action = "stop"
topic = "stf/command"
payload = {{cmd = "stop", target = "{{target}}"}}

[[compensation]]
name = "cmm1"

[[interlocks]]
name = "etch1_overtemp"
tag = "etch1/chamber_temp"
high = 188.0
clear_hysteresis = 2.0
action = {{source = "etch1", action = "stop"}}

[[health]]
name = "stf"
baseline_samples = 20
health_interval_s = 1.0
trend_window = 10
min_trend_points = 3
{motors}

[[spc]]
name = "etch1_temp"
tag = "etch1/chamber_temp"
baseline_samples = 30

[[oee]]
name = "fab"
close_after_s = 1.0
publish_interval_s = 1.0
calendar = {{ shifts = {MINUTE_SHIFTS} }}
[[oee.tools]]
name = "etch1"
state_tag = "etch1/status"
trip_mask = 8
count_tag = "etch1/wafer"
count_wrap = 25
ideal_cycle_s = 45.0
scrap_on_trip = true
interlocks = ["etch1_overtemp"]
[[oee.tools]]
name = "cmm_cell"
quality_device = "cmm1"
ideal_cycle_s = 1.5

[[energy]]
name = "stf"
close_after_s = 1.0
report_wait_s = 5.0
publish_interval_s = 1.0
parts_tools = ["cmm_cell"]
calendar = {{ shifts = {MINUTE_SHIFTS} }}
{energy_motors}

[[sinks]]
type = "influx"
name = "influx"
url = "{influx_url}"
database = "{DATABASE}"

[[sinks]]
type = "mes"
name = "mes"
url = "http://127.0.0.1:{mes}"
"""


def _spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_until(cond: Callable[[], bool], timeout: float, what: str,
               alive: Callable[[], str | None] = lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = alive()
        if dead:
            raise AssertionError(f"while waiting for {what}: {dead}")
        if cond():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def gateway_run(tmp: Path, ready: Callable[[Run], bool], timeout: float = 45.0,
                extra_toml: str = "") -> Iterator[Run]:
    """Everything running until ``ready(run)`` holds (polled), then yields the run.
    ``extra_toml`` is appended to the gateway's config (another sink, say)."""
    state = tmp / "run"
    (state / "cmm").mkdir(parents=True)
    with ExitStack() as stack:
        influx = start_influxdb1(tmp)
        stack.callback(influx.stop)
        series_of(influx_query(influx.url, f"CREATE DATABASE {DATABASE}"))
        broker = start_mosquitto(tmp)
        stack.callback(broker.stop)
        etch, mes, mes_admin = free_port(), free_port(), free_port()
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp / "numba")}
        plant_cfg = state / "plant.toml"
        plant_cfg.write_text(plant_toml(state, etch, broker.port, mes, mes_admin))
        plant = _spawn([str(BIN / "hw-sim"), "plant", "--config", str(plant_cfg)],
                       state / "plant.log", env)
        stack.callback(_stop, plant)
        gw_cfg = state / "edge.toml"
        gw_cfg.write_text(gateway_toml(state, influx.url, etch, broker.port, mes) + extra_toml)
        log = state / "gateway.log"
        gateway = _spawn([str(BIN / "edge-gateway"), "run", "--config", str(gw_cfg)], log, env)
        stack.callback(_stop, gateway)
        run = Run(influx, state, log)

        def alive() -> str | None:
            for name, proc, plog in (("gateway", gateway, log),
                                     ("plant", plant, state / "plant.log")):
                if proc.poll() is not None:
                    return f"{name} exited {proc.returncode}:\n{plog.read_text()[-3000:]}"
            return None

        wait_until(lambda: ready(run), timeout, "the gateway's data in InfluxDB", alive)
        yield run
