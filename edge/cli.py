"""``edge-gateway``: run, check-config, status, journal, interlock, wafer-history, discover,
demo.

Exit status: 0 fine, 1 runtime failure, 2 configuration error (one line per mistake,
each naming the component and key), 3 the daemon is not running (for commands that need
it), 4 another daemon already runs on this state folder (``run``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.config import Config, ConfigProblems, load
from edge.errors import ConfigError

EXIT_CONFIG = 2
EXIT_NOT_RUNNING = 3
EXIT_STATE_BUSY = 4
DEFAULT_CONFIG = "/etc/edge-gateway/edge.toml"
DEMO_STATE = Path("state/demo/gateway")  # where `make demo` keeps the gateway's state


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    try:
        rc = int(args.func(args))
    except ConfigError as exc:
        for line in str(exc).splitlines() or [repr(exc)]:
            print(f"edge-gateway: configuration error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return rc


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-gateway", description=__doc__)
    sub = p.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config")
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser("demo", help="plant simulator + MES + gateway in one command")
    demo.add_argument("--state-dir", default="")
    demo.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: Ctrl-C)")
    demo.add_argument("--influx-url", default="", help="also write to this InfluxDB 1.x URL")
    demo.add_argument("--opcua-port", type=int, default=4840)
    demo.add_argument("--quiet", action="store_true", help="no live status view")
    demo.set_defaults(func=cmd_demo)

    st = sub.add_parser("status", help="live status of the running daemon")
    _target(st)
    st.add_argument("--watch", "-w", action="store_true", help="refresh every second")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    jr = sub.add_parser("journal", help="inspect the journal")
    jsub = jr.add_subparsers(dest="journal_command", required=True)
    for name, helptext in (("stats", "depth and age per sink"),
                           ("dead-letters", "list dead letters"),
                           ("export", "export dead letters as JSON lines"),
                           ("replay", "append dead letters again for delivery")):
        sp = jsub.add_parser(name, help=helptext)
        _target(sp)
        if name in ("dead-letters", "export"):
            sp.add_argument("--sink", default=None)
        if name == "export":
            sp.add_argument("--output", "-o", default="-")
        if name == "replay":
            sp.add_argument("ids", nargs="+", type=int)
        sp.set_defaults(func=cmd_journal)

    il = sub.add_parser("interlock", help="interlock commands")
    isub = il.add_subparsers(dest="interlock_command", required=True)
    reset = isub.add_parser("reset", help="reset a tripped interlock (only if clear)")
    reset.add_argument("name")
    _target(reset)
    reset.set_defaults(func=cmd_interlock_reset)

    al = sub.add_parser("alarm", help="the alarm list (the same conditions as OPC-UA and "
                                      "the web page)")
    asub = al.add_subparsers(dest="alarm_command", required=True)
    listing = asub.add_parser("list", help="conditions that are active or not yet "
                                           "acknowledged/confirmed (--all: every one)")
    listing.add_argument("--all", action="store_true")
    _target(listing)
    listing.set_defaults(func=cmd_alarm_list)
    for name, what in (("ack", "acknowledge"), ("confirm", "confirm")):
        sp = asub.add_parser(name, help=f"{what} a condition (id as 'alarm list' shows it)")
        sp.add_argument("id")
        sp.add_argument("--comment", "-m", default="")
        _target(sp)
        sp.set_defaults(func=cmd_alarm_act, cmd=what)
    wh = sub.add_parser("wafer-history",
                        help="a wafer's steps through the tools, as the MES holds them")
    wh.add_argument("wafer", help="the wafer id, e.g. 4711.03 (<lot>.<slot>)")
    wh.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                    help="read the MES URL and token from this config's MES sink")
    wh.add_argument("--mes", default="", help="the MES base URL (instead of --config)")
    wh.add_argument("--sink", default="", help="which MES sink when the config has several")
    wh.add_argument("--json", action="store_true")
    wh.set_defaults(func=cmd_wafer_history)
    dc = sub.add_parser("discover", help="browse an OPC-UA server and print a [[sources]] "
                        "config for it")
    dc.add_argument("endpoint", help="opc.tcp://host:port[/path]")
    dc.add_argument("--name", default="plc", help="the source's name (default: plc)")
    dc.add_argument("--device", default="", help="the tags' device (default: the name)")
    dc.add_argument("--user", default="", help="log in as this user (default: anonymous)")
    dc.add_argument("--password-env", default="", metavar="VAR",
                    help="the environment variable holding the password (never argv)")
    dc.add_argument("--max-tags", type=int, default=1000)
    dc.add_argument("--max-nodes", type=int, default=20_000)
    dc.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    dc.add_argument("--output", "-o", default="", help="write to this file (default: stdout)")
    dc.set_defaults(func=cmd_discover)
    return p


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    p.add_argument("--state-dir", default="",
                   help="the daemon's state folder (instead of reading --config)")


def _locate(args: argparse.Namespace) -> tuple[Path, Path]:
    """(state folder, journal file) of the daemon the command is for."""
    if args.state_dir:
        state = Path(args.state_dir)
        return state, state / "journal.db"
    if args.config == DEFAULT_CONFIG and not Path(DEFAULT_CONFIG).exists():
        # Beside `make demo` (same folder), the operator commands find the demo.
        if (DEMO_STATE / "journal.db").exists():
            print(f"edge-gateway: no {DEFAULT_CONFIG}; using the demo's state folder "
                  f"{DEMO_STATE} (--config or --state-dir choose another daemon)",
                  file=sys.stderr)
            return DEMO_STATE, DEMO_STATE / "journal.db"
        raise ConfigError(
            f"{DEFAULT_CONFIG} does not exist: give the daemon's --config FILE, or its "
            f"--state-dir DIR (the demo's is {DEMO_STATE}, in the folder make demo ran in)"
        )
    cfg = load(args.config)
    return cfg.state_dir, cfg.journal_path


def _prepare_env(cfg: Config) -> None:
    """numba reads NUMBA_CACHE_DIR at import: point it at a writable folder first."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        cache = os.environ.get("CACHE_DIRECTORY") or str(cfg.state_dir / "cache")
        os.environ["NUMBA_CACHE_DIR"] = str(Path(cache) / "numba")


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    # Checking must work for any user, without the daemon's (maybe unwritable) folders.
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(
        tempfile.gettempdir(), f"edge-gateway-numba-{os.getuid()}"))
    from edge.app import Gateway
    from edge.processing import check_compensation_devices
    from edge.runtime import statedir

    problems, notes = statedir.check(cfg)
    for note in notes:
        print(f"edge-gateway: note: {note}", file=sys.stderr)
    try:
        check_compensation_devices(cfg)
    except ConfigError as exc:
        problems.extend(str(exc).splitlines())
    n_tags = 0
    try:
        n_tags = Gateway(cfg, secrets=lambda name: "checked at start-up").check()
    except (ConfigError, ValueError) as exc:
        problems.extend(str(exc).splitlines())
    if problems:
        raise ConfigProblems([f"{args.config}: {p}" for p in problems])
    print(
        f"{args.config}: OK ({len(cfg.sources)} sources, {len(cfg.sinks)} sinks, "
        f"{len(cfg.section('interlocks'))} interlocks, {n_tags} tags)"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    from edge.processing import check_compensation_devices
    from edge.runtime import lock, statedir

    check_compensation_devices(cfg)
    statedir.prepare(cfg)
    try:
        held = lock.acquire(cfg.state_dir)
    except lock.StateDirBusy as exc:
        print(f"edge-gateway: not started: {exc}", file=sys.stderr)
        return EXIT_STATE_BUSY
    except OSError as exc:
        raise ConfigError(f"gateway.state_dir: cannot lock '{cfg.state_dir / 'lock'}': "
                          f"{exc.strerror or exc}") from None
    try:
        _prepare_env(cfg)
        from edge.runtime import logging as edge_logging

        edge_logging.setup(cfg.gateway.log_level, cfg.gateway.log_format)
        from edge.app import run_daemon
        from edge.runtime import runner

        # Not asyncio.run: its exit waits for every worker thread, even one stuck for good.
        return runner.run(run_daemon(cfg),
                          grace_s=min(2.0, cfg.gateway.shutdown_timeout_s / 4))
    finally:
        held.release()


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.demo import run_demo

    return run_demo(args)


def _ask(args: argparse.Namespace, payload: dict[str, Any]) -> dict[str, Any] | None:
    from edge.runtime import control

    state, _ = _locate(args)
    try:
        return control.request(state / "control.sock", payload)
    except control.DaemonNotRunning as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return None


def cmd_status(args: argparse.Namespace) -> int:
    from edge.runtime.view import render

    while True:
        answer = _ask(args, {"cmd": "status"})
        if answer is None:
            return EXIT_NOT_RUNNING
        doc = answer["status"]
        if args.json:
            print(json.dumps(doc, indent=2, allow_nan=False))
        else:
            if args.watch:
                sys.stdout.write("\x1b[2J\x1b[H")
            sys.stdout.write(render(doc))
            sys.stdout.flush()
        if not args.watch:
            return 0
        time.sleep(1.0)


def cmd_interlock_reset(args: argparse.Namespace) -> int:
    answer = _ask(args, {"cmd": "interlock_reset", "name": args.name})
    if answer is None:
        return EXIT_NOT_RUNNING
    if answer.get("ok"):
        print(answer.get("detail") or f"interlock '{args.name}' reset")
        return 0
    print(f"edge-gateway: {answer.get('error')}", file=sys.stderr)
    return 1


def cmd_alarm_list(args: argparse.Namespace) -> int:
    answer = _ask(args, {"cmd": "conditions"})
    if answer is None:
        return EXIT_NOT_RUNNING
    shown = [c for c in answer.get("conditions", []) if args.all or c.get("retain")]
    for c in shown:
        state = ("ACTIVE" if c["active"] else "inactive") + (" latched" if c["latched"] else "")
        state += "" if c["acked"] else " UNACKED"
        state += "" if c["confirmed"] else " unconfirmed"
        print(f"{c['id']:<32} {state:<36} sev {c['severity']:>4}  {c['message']}")
    if not shown:
        print("no alarms" if not args.all else "no conditions configured")
    return 0


def cmd_alarm_act(args: argparse.Namespace) -> int:
    answer = _ask(args, {"cmd": args.cmd, "name": args.id, "comment": args.comment})
    if answer is None:
        return EXIT_NOT_RUNNING
    if answer.get("ok"):
        print(f"{args.id}: {answer.get('detail')}")
        return 0
    print(f"edge-gateway: {answer.get('error')}", file=sys.stderr)
    return 1


def cmd_wafer_history(args: argparse.Namespace) -> int:
    from edge.wafer_history import HistoryError, MesTarget, fetch, render, target_from_config

    if args.mes:
        target = MesTarget(args.mes.rstrip("/"))
    else:
        target = target_from_config(load(args.config), args.sink)
    try:
        doc = fetch(target, args.wafer)
    except HistoryError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        sys.stdout.write(render(doc, target.url))
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    from edge.sources.opcua_discover_output import run_cli

    return run_cli(args.endpoint, name=args.name, device=args.device, user=args.user,
                   password_env=args.password_env, timeout_s=args.timeout,
                   max_tags=args.max_tags, max_nodes=args.max_nodes, output=args.output)


def cmd_journal(args: argparse.Namespace) -> int:
    what = args.journal_command
    if what == "replay":
        answer = _ask(args, {"cmd": "journal_replay", "ids": args.ids})
        if answer is None:
            return EXIT_NOT_RUNNING
        print(f"replayed {answer.get('replayed', 0)} dead letters")
        return 0 if answer.get("ok") else 1
    if what == "stats":
        answer = _ask(args, {"cmd": "status"})
        if answer is None:
            return EXIT_NOT_RUNNING
        doc = answer["status"]
        print(f"journal bytes: {doc['journal_bytes']}  pending: {doc['journal_pending_points']}")
        for sink, st in doc["journal"].items():
            print(f"  {sink:<16} depth {st['depth_points']:>10} points "
                  f"{st['depth_bytes']:>12} B  oldest unsent {st['oldest_unsent_age_s']:.1f} s")
        return 0
    letters = _dead_letters(args, items=what == "export")
    if letters is None:
        return 1
    if what == "dead-letters":
        for d in letters:
            dead = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d["dead_ts_ns"] / 1e9))
            print(f"{d['id']:>6} {d['sink']:<12} seq {d['seq']:<10} {d['kind']:<8} "
                  f"{d['count']:>6} items  {dead}  {d['reason']}")
        if not letters:
            print("no dead letters")
        return 0
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    try:
        for d in letters:
            out.write(json.dumps(d) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _dead_letters(args: argparse.Namespace, *, items: bool) -> list[dict[str, Any]] | None:
    """From the running daemon when there is one (it owns the journal); otherwise from
    the journal file directly."""
    from edge.journal import read_dead_letters
    from edge.runtime import control

    state, path = _locate(args)
    try:
        answer = control.request(state / "control.sock",
                                 {"cmd": "journal_dead_letters", "sink": args.sink,
                                  "items": items})
    except control.DaemonNotRunning:
        if not path.exists():
            print(f"edge-gateway: no journal at {path}", file=sys.stderr)
            return None
        return [d.to_doc(items=items) for d in read_dead_letters(path, args.sink)]
    letters: list[dict[str, Any]] = answer["letters"]
    return letters


if __name__ == "__main__":
    raise SystemExit(main())
