"""``edge-gateway demo``: the simulated plant, the mock MES and the gateway in one process.

Runs on embedded defaults: an in-process MQTT broker (amqtt) for the motors, the
hw_sim etch tool on Modbus TCP, CMM file drops into the state folder, the hw_sim MES,
and the gateway configured from ``config/demo.toml`` with its OPC-UA server. Ports
other than OPC-UA are picked free on 127.0.0.1; InfluxDB is used only when a URL is
given. Logs go to ``<state>/gateway.log``; the terminal shows endpoints and live status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

STARTING_NOTE_S = 30.0  # a "still starting" line this often while the gateway starts
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "demo.toml"


def free_port(preferred: int = 0) -> int:
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port")


def demo_config(state: Path, ports: dict[str, int], influx_url: str = "") -> dict[str, Any]:
    """The parsed ``config/demo.toml`` with this run's ports and folders filled in."""
    raw = tomllib.loads(DEMO_CONFIG.read_text(encoding="utf-8"))
    gateway = raw.setdefault("gateway", {})
    gateway["state_dir"] = str(state / "gateway")
    gateway["metrics_port"] = ports["metrics"]
    for src in raw.get("sources", []):
        kind = src.get("type")
        if kind == "modbus":
            src["port"] = ports["modbus"]
        elif kind == "mqtt":
            src["port"] = ports["mqtt"]
        elif kind == "file":
            src["paths"] = [str(state / "cmm")]
    sinks = []
    for sink in raw.get("sinks", []):
        if sink.get("type") == "mes":
            sink["url"] = f"http://127.0.0.1:{ports['mes']}"
            sinks.append(sink)
        elif sink.get("type") == "influx" and influx_url:
            sink["url"] = influx_url
            sinks.append(sink)
        elif sink.get("type") == "opcua":
            sink["endpoint"] = f"opc.tcp://127.0.0.1:{ports['opcua']}/edge"
            sinks.append(sink)
        elif sink.get("type") == "web":
            sink["listen"] = f"127.0.0.1:{ports.get('web', 8008)}"
            sinks.append(sink)
    raw["sinks"] = sinks
    return raw


def plant_config(state: Path, ports: dict[str, int]) -> dict[str, Any]:
    return {
        "_base": state,
        "seed": 42,
        "speed": 1.0,
        "truth": str(state / "truth.jsonl"),
        "cmm": {"dir": str(state / "cmm"), "mode": "part", "part_interval_s": 5.0,
                "hvac_period_s": 600.0},
        # A chamber that holds its heat after a stop (the default one falls below the
        # interlock's clear level a second after it), so the tour can show a reset refused.
        "etch": {"port": ports["modbus"], "excursion_every_s": 60.0,
                 "excursion_duration_s": 5.0, "cool_tau_s": 3600.0,
                 "excursion_decay_tau_s": 60.0},
        "motors": {"broker_port": ports["mqtt"], "mode": "json", "initial_health": 0.7,
                   "health_every_s": 10.0},
        "mes": {"port": ports["mes"], "admin_port": ports["mes_admin"],
                "db": str(state / "mes.sqlite")},
        "bad_data": {},
        "links": [],
    }


async def start_broker(port: int) -> Any:
    try:
        from amqtt.broker import Broker
    except ImportError as exc:
        raise SystemExit("the demo's MQTT broker needs amqtt: "
                         "pip install 'edge-gateway[demo]' (make demo does)") from exc

    broker = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    })
    await broker.start()
    return broker


async def _demo(args: argparse.Namespace) -> int:
    from edge.app import Gateway
    from edge.config import from_raw
    from edge.runtime.aio import wait_event
    from edge.runtime.view import render
    from hw_sim.plant import Plant

    state = Path(args.state_dir or "state/demo").resolve()
    (state / "cmm").mkdir(parents=True, exist_ok=True)
    ports = {
        "opcua": free_port(args.opcua_port), "modbus": free_port(), "mqtt": free_port(),
        "mes": free_port(), "mes_admin": free_port(), "metrics": free_port(),
        "web": free_port(8008),
    }
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    broker = await start_broker(ports["mqtt"])
    plant = Plant(plant_config(state, ports))
    where = await plant.start()
    cfg = from_raw(demo_config(state, ports, args.influx_url), path=DEMO_CONFIG)
    gw = Gateway(cfg)
    run = asyncio.create_task(gw.run(stop), name="gateway")
    try:
        # No give-up timer: a first start on a Pi (kernels compiled, no cache yet) or on a
        # busy machine can take minutes, and a slow start is not a failure. A start that
        # fails ends ``run``; one that hangs is the user's to stop (Ctrl-C), told here.
        ready = asyncio.create_task(gw.ready.wait())
        t_start = time.monotonic()
        while not ready.done() and not run.done():
            await asyncio.wait({ready, run}, timeout=STARTING_NOTE_S,
                               return_when=asyncio.FIRST_COMPLETED)
            if not ready.done() and not run.done():
                print(f"edge-gateway demo: still starting after "
                      f"{time.monotonic() - t_start:.0f} s (the first start compiles the "
                      f"kernels); Ctrl-C stops it; log: {state / 'gateway.log'}",
                      file=sys.stderr)
        if not gw.ready.is_set():
            ready.cancel()
            return run.result()
        _print_endpoints(ports, where, state, args.influx_url)
        t_end = time.monotonic() + args.seconds if args.seconds else float("inf")
        screen = sys.stdout.isatty()
        while not stop.is_set() and time.monotonic() < t_end:
            if args.quiet:
                pass
            elif screen:  # redraw the whole view in place
                sys.stdout.write("\x1b[2J\x1b[H")
                _print_endpoints(ports, where, state, args.influx_url)
                sys.stdout.write(render(gw.status()))
            else:  # piped or logged: one line per refresh, not a 50-line block
                sys.stdout.write(time.strftime("%H:%M:%S ") + gw.board.status_line() + "\n")
            sys.stdout.flush()
            refresh = 2.0 if screen else 10.0
            await wait_event(stop, min(refresh, max(0.0, t_end - time.monotonic())))
        stop.set()
        rc = await run
        print(f"demo stopped (exit {rc}); state kept in {state}")
        return rc
    finally:
        stop.set()
        if not run.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(run, 15)
        await plant.close()
        with contextlib.suppress(Exception):
            await broker.shutdown()


def _print_endpoints(ports: dict[str, int], where: dict[str, str], state: Path,
                     influx_url: str) -> None:
    print(f"web status page  http://127.0.0.1:{ports['web']}/  (JSON API: docs/web.md)")
    print(f"OPC-UA server    opc.tcp://127.0.0.1:{ports['opcua']}/edge  (security None)")
    print(f"MES (mock)       http://127.0.0.1:{ports['mes']}/api/v1/counts")
    print(f"MES fault admin  hw-sim mes-fault --admin {ports['mes_admin']} "
          "refuse|blackhole|error5xx|ratelimit|slow|ok")
    print(f"etch tool        modbus tcp 127.0.0.1:{ports['modbus']}  (mbpoll -0 -r 0 -c 12 "
          f"-p {ports['modbus']} 127.0.0.1)")
    print(f"motors           mqtt 127.0.0.1:{ports['mqtt']}  stf/+/+/telemetry")
    print(f"CMM drops        {where.get('cmm', state / 'cmm')}")
    print(f"metrics          http://127.0.0.1:{ports['metrics']}/metrics  "
          "(edge_interlock_reaction_seconds: trip to stop answered)")
    if influx_url:
        print(f"InfluxDB         {influx_url}")
    print(f"gateway log      {state / 'gateway.log'}   status: Ctrl-C stops the demo")
    print()


def run_demo(args: argparse.Namespace) -> int:
    state = Path(args.state_dir or "state/demo").resolve()
    state.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(state / "cache" / "numba"))
    from edge.runtime import logging as edge_logging

    log_file = (state / "gateway.log").open("a", encoding="utf-8")
    edge_logging.setup("info", "json", stream=log_file)
    try:
        return asyncio.run(_demo(args))
    finally:
        log_file.close()
