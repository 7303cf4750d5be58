"""`hw-sim`: run one part of the plant, or all of it, and switch faults.

    hw-sim cmm --dir DIR [--mode part|daily] [--parts N] ...
    hw-sim etch --port 5020 [--excursion-every S] [--excursion-at S ...] [--fault M]
    hw-sim etch --serial /dev/ttyX [--baud B] [--parity N|E|O] [--device-ids 1,2]  (RTU)
    hw-sim etch --port 5020 --rtu-over-tcp [--device-ids 1,2]  (a serial-to-Ethernet box)
    hw-sim motors --broker HOST:PORT [--mode json|batch] [--initial-health H]
    hw-sim mes --port P --admin-port P2 --db FILE [--token-env VAR] [--fault M]
    hw-sim mes-fault --admin P2 MODE|status [--rate R] [--retry-after S] [--latency S]
    hw-sim link --listen P --target HOST:PORT --admin P2
    hw-sim link-mode --admin P2 MODE|status
    hw-sim plant --config FILE

Common: --seed, --speed (simulated seconds per wall second), --truth FILE (JSON
lines), and bad data: --bad-rate R --bad-kinds missing,duplicate,... --drift-ppm X.
Each server prints one line saying where it listens, then runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path

import httpx

from .baddata import DEFECTS, BadData
from .clock import SimClock
from .cmm import CmmConfig, CmmModel, CmmWriter, run_cmm
from .etch import EtchConfig, EtchModel
from .etch_server import EtchServer
from .link import LINK_MODES, LinkProxy
from .mes import FAULT_MODES, MesServer
from .motors import MotorLine
from .motors_mqtt import MotorPublisher
from .plant import Plant, PlantConfigError, load_config
from .truth import TruthLog


def _say(text: str) -> None:
    print(text, flush=True)


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _device_ids(text: str) -> tuple[int, ...]:
    try:
        ids = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ids like 1,2, got {text!r}") from None
    if not ids or not all(1 <= i <= 247 for i in ids):
        raise argparse.ArgumentTypeError(f"device ids must be 1..247, got {text!r}")
    return ids


def _start_ns(text: str) -> int:
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    if stamp.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone: {text!r}")
    return round(stamp.timestamp() * 1e9)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", type=float, default=1.0, help="simulated s per wall s")
    p.add_argument(
        "--start",
        type=_start_ns,
        default=None,
        help="simulated start time, ISO 8601 with zone (default: now); "
        "fix it for runs that repeat byte for byte",
    )
    p.add_argument("--truth", type=Path, help="ground truth file (JSON lines)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--bad-rate", type=float, default=0.0, help="share of spoiled rows/messages")
    p.add_argument("--bad-kinds", default=",".join(DEFECTS), help="comma-separated defects")
    p.add_argument("--drift-ppm", type=float, default=0.0, help="device clock drift")


def _bad(a: argparse.Namespace) -> BadData:
    return BadData(a.bad_rate, tuple(k for k in a.bad_kinds.split(",") if k), a.drift_ppm)


async def _serve_until_signal(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await start()
        await done.wait()
    finally:
        await stop()


async def _run_task(coro: Awaitable[None], truth: TruthLog) -> None:
    task = asyncio.ensure_future(coro)

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        truth.close()

    async def start() -> None:
        task.add_done_callback(lambda _t: os.kill(os.getpid(), signal.SIGTERM))

    await _serve_until_signal(start, stop)


async def cmd_cmm(a: argparse.Namespace) -> None:
    clock, truth = SimClock(a.speed, a.start), TruthLog(a.truth, keep=False)
    cfg = CmmConfig(part_interval_s=a.interval)
    model = CmmModel(a.seed, cfg, clock.start_ns, fixed_part_temp_c=a.fixed_part_temp)
    writer = CmmWriter(
        a.dir, a.mode, seed=a.seed, bad=_bad(a), truth=truth, start_ns=clock.start_ns
    )
    _say(f"cmm: writing {a.mode} CSV files to {writer.dir} every {a.interval} simulated s")
    await _run_task(run_cmm(model, writer, clock, truth, a.parts), truth)


async def cmd_etch(a: argparse.Namespace) -> None:
    clock, truth = SimClock(a.speed, a.start), TruthLog(a.truth, keep=False)
    cfg = EtchConfig(excursion_every_s=a.excursion_every, excursion_at_s=tuple(a.excursion_at))
    if a.serial and a.rtu_over_tcp:
        raise ValueError("--serial (RTU on a serial line) and --rtu-over-tcp exclude each other")
    ids = tuple(a.device_ids) or (a.device_id,)
    server = EtchServer(
        EtchModel(a.seed, cfg, clock.start_ns, truth),
        clock,
        a.host,
        a.port,
        device_id=ids[0],
        fault=a.fault,
        truth=truth,
        serial_port=a.serial,
        baudrate=a.baud,
        parity=a.parity,
        device_ids=ids,
        rtu_over_tcp=a.rtu_over_tcp,
    )
    ids_text = ",".join(map(str, ids))

    async def start() -> None:
        await server.start()
        if a.serial:
            _say(f"etch: modbus rtu {a.serial} {a.baud} baud parity {a.parity} "
                 f"devices {ids_text}")
        elif a.rtu_over_tcp:
            _say(f"etch: modbus rtu-over-tcp {a.host}:{server.port} devices {ids_text}")
        else:
            _say(f"etch: modbus tcp {a.host}:{server.port} device {ids_text}")

    async def stop() -> None:
        await server.stop()
        truth.close()

    await _serve_until_signal(start, stop)


async def cmd_motors(a: argparse.Namespace) -> None:
    clock, truth = SimClock(a.speed, a.start), TruthLog(a.truth, keep=False)
    line = MotorLine(a.seed, a.initial_health, clock.start_ns, truth=truth)
    host, port = a.broker
    pub = MotorPublisher(
        line,
        clock,
        host,
        port,
        mode=a.mode,
        batch_ticks=a.batch_ticks,
        qos=a.qos,
        bad=_bad(a),
        seed=a.seed,
        truth=truth,
        health_every_s=a.health_every,
    )
    kind = "telemetry" if a.mode == "json" else "batch"
    _say(
        f"motors: publishing to mqtt {host}:{port} stf/<station>/<component>/{kind}, "
        "commands on stf/command"
    )
    await _run_task(pub.run(), truth)


async def cmd_mes(a: argparse.Namespace) -> None:
    truth = TruthLog(a.truth, keep=False)
    token = os.environ.get(a.token_env) if a.token_env else None
    server = MesServer(a.db, a.host, a.port, a.admin_port, token=token, seed=a.seed, truth=truth)

    async def start() -> None:
        await server.start()
        if a.fault != "ok":
            await server.set_fault(a.fault)
        _say(
            f"mes: http://{a.host}:{server.port}/api/v1 admin "
            f"http://{a.host}:{server.admin_port}/admin/fault db {a.db}"
        )

    async def stop() -> None:
        await server.close()
        truth.close()

    await _serve_until_signal(start, stop)


async def cmd_link(a: argparse.Namespace) -> None:
    truth = TruthLog(a.truth, keep=False)
    host, port = a.target
    proxy = LinkProxy(a.listen, host, port, a.admin, host=a.host, truth=truth)

    async def start() -> None:
        await proxy.start()
        if a.mode != "pass":
            await proxy.set_mode(a.mode)
        _say(
            f"link: tcp {a.host}:{proxy.listen_port} -> {host}:{port} "
            f"admin http://{a.host}:{proxy.admin_port}/mode"
        )

    async def stop() -> None:
        await proxy.close()
        truth.close()

    await _serve_until_signal(start, stop)


async def cmd_plant(a: argparse.Namespace) -> None:
    try:
        plant = Plant(load_config(a.config))
    except (OSError, PlantConfigError) as exc:
        raise SystemExit(f"hw-sim plant: {exc}") from exc

    async def start() -> None:
        for part, where in (await plant.start()).items():
            _say(f"{part}: {where}")

    await _serve_until_signal(start, plant.close)


def _admin_call(url: str, body: dict[str, object] | None) -> int:
    try:
        r = httpx.post(url, json=body, timeout=5) if body else httpx.get(url, timeout=5)
    except httpx.HTTPError as exc:
        print(f"hw-sim: {url}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(r.json()))
    return 0 if r.is_success else 1


def cmd_mes_fault(a: argparse.Namespace) -> int:
    url = f"http://{a.host}:{a.admin}/admin/fault"
    if a.mode == "status":
        return _admin_call(url, None)
    body: dict[str, object] = {"mode": a.mode}
    for key, val in (("rate", a.rate), ("retry_after_s", a.retry_after), ("latency_s", a.latency)):
        if val is not None:
            body[key] = val
    return _admin_call(url, body)


def cmd_link_mode(a: argparse.Namespace) -> int:
    url = f"http://{a.host}:{a.admin}/mode"
    return _admin_call(url, None if a.mode == "status" else {"mode": a.mode})


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hw-sim", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("cmm", help="CMM writing CSV file drops")
    _common(p)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--mode", choices=("part", "daily"), default="part")
    p.add_argument("--interval", type=float, default=60.0, help="simulated s between parts")
    p.add_argument("--parts", type=int, help="stop after this many parts")
    p.add_argument("--fixed-part-temp", type=float, help="hold part and air at this C")

    p = sub.add_parser("etch", help="etch tool on Modbus TCP, or RTU (serial or over TCP)")
    _common(p)
    p.add_argument("--port", type=int, default=5020)
    p.add_argument("--device-id", type=int, default=1)
    p.add_argument("--serial", default="", metavar="DEVICE",
                   help="serve Modbus RTU on this serial device (e.g. one end of a socat "
                   "pty pair) instead of TCP")
    p.add_argument("--baud", type=int, default=19200, help="RTU: bit/s")
    p.add_argument("--parity", choices=("N", "E", "O"), default="N", help="RTU: parity")
    p.add_argument("--device-ids", type=_device_ids, default=(), metavar="1,2",
                   help="RTU: answer these device ids (silent for others, as on a bus)")
    p.add_argument("--rtu-over-tcp", action="store_true",
                   help="RTU frames on the TCP port (a serial-to-Ethernet converter)")
    p.add_argument("--excursion-every", type=float, help="simulated s between excursions")
    p.add_argument("--excursion-at", type=float, nargs="*", default=[], help="simulated s")
    p.add_argument("--fault", choices=("ok", "busy", "fail", "hang"), default="ok")

    p = sub.add_parser("motors", help="conveyor and motors on MQTT")
    _common(p)
    p.add_argument("--broker", type=_hostport, default=("127.0.0.1", 1883))
    p.add_argument("--mode", choices=("json", "batch"), default="json")
    p.add_argument("--batch-ticks", type=int, default=10)
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=0)
    p.add_argument("--initial-health", type=float, default=1.0)
    p.add_argument("--health-every", type=float, default=600.0, help="simulated s")

    p = sub.add_parser("mes", help="MES HTTP server")
    _common(p)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--admin-port", type=int, default=8081)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--token-env", help="environment variable holding the bearer token")
    p.add_argument("--fault", choices=FAULT_MODES, default="ok")

    p = sub.add_parser("mes-fault", help="switch the MES fault mode")
    p.add_argument("mode", choices=(*FAULT_MODES, "status"))
    p.add_argument("--admin", type=int, required=True, help="MES admin port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--rate", type=float)
    p.add_argument("--retry-after", type=float)
    p.add_argument("--latency", type=float)

    p = sub.add_parser("link", help="TCP proxy with link faults")
    _common(p)
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--target", type=_hostport, required=True)
    p.add_argument("--admin", type=int, required=True)
    p.add_argument("--mode", choices=LINK_MODES, default="pass")

    p = sub.add_parser("link-mode", help="switch a link proxy")
    p.add_argument("--admin", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("mode", choices=(*LINK_MODES, "status"))

    p = sub.add_parser("plant", help="everything, from a TOML file")
    p.add_argument("--config", type=Path, required=True)
    return ap


ASYNC_COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[None, None, None]]] = {
    "cmm": cmd_cmm,
    "etch": cmd_etch,
    "motors": cmd_motors,
    "mes": cmd_mes,
    "link": cmd_link,
    "plant": cmd_plant,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.WARNING)
    # httpx logs every request at INFO: the admin commands print their answer instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.command == "mes-fault":
        return cmd_mes_fault(args)
    if args.command == "link-mode":
        return cmd_link_mode(args)
    try:
        asyncio.run(ASYNC_COMMANDS[args.command](args))
    except ValueError as exc:
        print(f"hw-sim {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
