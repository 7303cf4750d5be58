"""CPU and memory of ``edge-gateway demo``, and of the simulated motor line alone (issue 21).

``line``: the motor line in this process, no broker, no sockets: CPU seconds per
simulated minute of (a) ticking it (``step()``: physics and the 14 sample objects per
tick) and (b) ticking it with the publisher's health truth at the demo's cadence
(``time_to_failure`` every 10 s of simulated time, horizon 36,000 ticks; the first call
is reported apart). ``--baseline REV`` loads ``hw_sim`` from that git revision beside
the working tree's and measures both, interleaved, in the same process.

``demo``: for each ``--tree`` (a source tree, put first on PYTHONPATH), starts
``python -m edge demo --quiet`` on free ports, waits for the endpoints line (printed once
the gateway is READY), lets ``--settle`` seconds pass, then reads utime+stime of the
process and of each of its threads from /proc over ``--seconds``, and the RSS at the
end. Threads are named from ``py-spy dump`` when ``--py-spy`` is given. ``--profile S``
then samples the process for S s with py-spy and splits the samples between the plant
(hw_sim), the embedded broker (amqtt), the gateway (edge, asyncua) and the event loop.
Trees are run in turn, ``--runs`` times; medians are printed with the load average.
``--paired`` instead starts every tree's demo (one after the other) and measures them
all over the same ``--runs`` windows of ``--seconds``: on a shared machine each window's
load is then the same for every tree. ``--numba-cache DIR`` keeps the compiled kernels
across invocations (a first start compiles them, minutes on a loaded machine).

    .venv/bin/python bench/demo_cpu.py line --baseline a82457e --runs 3
    .venv/bin/python bench/demo_cpu.py demo --tree /tmp/base --tree . --runs 3 \\
        --py-spy /tmp/pyspy/bin/py-spy --profile 20
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TICKS_PER_MIN = 600
CLK_TCK = os.sysconf("SC_CLK_TCK")


def load_avg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# ------------------------------------------------------------------ the line alone
def hw_sim_at(rev: str, into: Path) -> ModuleType:
    """``hw_sim.motors`` as of git revision ``rev``, imported as ``hw_sim_<rev>.motors``."""
    name = "hw_sim_" + re.sub(r"\W", "_", rev)
    tar = into / f"{name}.tar"
    with tar.open("wb") as fh:
        subprocess.run(["git", "archive", rev, "hw_sim"], cwd=ROOT, stdout=fh, check=True)
    with tarfile.open(tar) as tf:
        tf.extractall(into / "x", filter="data")
    (into / "x" / "hw_sim").rename(into / name)
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{name}.motors")


def line_cpu(motors: ModuleType, minutes: float, health: bool) -> tuple[float, float]:
    """(CPU s per simulated minute, CPU s of the first time_to_failure call or 0)."""
    line = motors.MotorLine(42, 0.7)  # the demo's seed and initial health
    n = round(minutes * TICKS_PER_MIN)
    first = 0.0
    if health:
        t0 = time.process_time()
        line.time_to_failure(36_000)
        first = time.process_time() - t0
    t0 = time.process_time()
    for k in range(1, n + 1):
        line.step()
        if health and k % 100 == 1:
            line.time_to_failure(36_000)
    return (time.process_time() - t0) / minutes, first


def cmd_line(args: argparse.Namespace) -> None:
    import hw_sim.motors as current

    impls: dict[str, ModuleType] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            impls[f"baseline {args.baseline}"] = hw_sim_at(args.baseline, Path(tmp))
        impls["working tree"] = current
        res: dict[str, dict[str, list[float]]] = {
            k: collections.defaultdict(list) for k in impls}
        for run in range(args.runs):
            for name, mod in impls.items():
                step, _ = line_cpu(mod, args.minutes, health=False)
                both, first = line_cpu(mod, args.health_minutes, health=True)
                res[name]["step"].append(step)
                res[name]["health"].append(both)
                res[name]["first"].append(first)
                print(f"run {run + 1} {name}: step {step:.3f} s/min, with health "
                      f"{both:.3f} s/min, first TTF {first:.2f} s   (load {load_avg()})",
                      flush=True)
    print(f"\nmedians of {args.runs} runs (CPU s per simulated minute; 1 core = 60):")
    print("| implementation | ticking | ticking + health truth every 10 s | first TTF call |")
    print("|---|---:|---:|---:|")
    for name, r in res.items():
        print(f"| {name} | {statistics.median(r['step']):.3f} | "
              f"{statistics.median(r['health']):.3f} | {statistics.median(r['first']):.2f} s |")


# ------------------------------------------------------------------ the demo process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_ticks(path: str) -> int:
    """utime + stime (clock ticks) from a /proc stat file; 0 if it is gone."""
    try:
        with open(path, encoding="ascii") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(rest[11]) + int(rest[12])


def thread_ticks(pid: int) -> dict[int, int]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        out[int(task.name)] = proc_ticks(str(task / "stat"))
    return out


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def thread_names(py_spy: str, pid: int) -> dict[int, str]:
    """Native thread id -> Python thread name, from ``py-spy dump``."""
    if not py_spy:
        return {}
    out = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, check=False,
                         text=True, timeout=60).stdout
    names = {}
    for m in re.finditer(r'^Thread (0x[0-9A-Fa-f]+|\d+) \([^)]*\): "([^"]*)"', out, re.M):
        tid = int(m.group(1), 16) if m.group(1).startswith("0x") else int(m.group(1))
        names[tid] = m.group(2)
    return names


def thread_kind(name: str, tid: int, pid: int) -> str:
    if tid == pid or name == "MainThread":
        return "main thread (event loop: plant, broker, gateway)"
    if name.startswith("asyncio_"):
        return "asyncio worker threads (to_thread: plant's TTF, file reads)"
    if name:
        return "thread " + re.sub(r"[_-]?\d+$", "", name)
    return "other threads"


# py-spy --nonblocking cannot always tell a thread waiting in epoll_wait from a running
# one: those samples are kept apart and left out of the shares.
SELECT = "in select() (mostly waiting; not in the shares)"
OWNERS = (("hw_sim/", "plant (hw_sim)"), ("amqtt/", "broker (amqtt)"),
          ("edge/", "gateway (edge)"), ("asyncua/", "gateway (asyncua: OPC-UA server)"))
# Library frames without an app frame above them (callbacks run by the loop, or tasks
# made by gather): named by the side that does that work in the demo.
LIBS = (("Client.publish (aiomqtt", "plant (aiomqtt publish)"),
        ("loop_write (paho", "plant (paho writes the publishes)"),
        ("_packet_write (paho", "plant (paho writes the publishes)"),
        ("loop_read (paho", "gateway (paho reads the MQTT source's messages)"),
        ("_packet_read (paho", "gateway (paho reads the MQTT source's messages)"),
        ("aiomqtt/", "aiomqtt/paho, either side"), ("paho/", "aiomqtt/paho, either side"),
        ("pymodbus/server", "plant (etch tool: pymodbus server)"),
        ("pymodbus/client", "gateway (etch source: pymodbus client)"),
        ("pymodbus/", "pymodbus, either side"), ("numba/", "gateway (numba)"),
        ("httpx", "gateway (MES sink: httpx)"), ("httpcore", "gateway (MES sink: httpx)"))


def classify(frames: list[str]) -> str:
    """Owner of one sampled main-thread stack (root first): the first app frame under
    the event loop's callback, else the library, else the loop itself."""
    body: list[str] | None = None
    for i in range(len(frames) - 1, -1, -1):
        if "_run (asyncio/events.py" in frames[i]:
            body = frames[i + 1:]
            break
    if frames and frames[-1].startswith("EpollSelector.select ("):
        return SELECT
    if body is None:
        return "event loop (select, wake-ups, timers)"
    for f in body:
        for key, owner in OWNERS:
            if key in f:
                return owner
    for key, owner in LIBS:
        if any(key in f for f in body):
            return owner
    return "event loop (select, wake-ups, timers)"


def profile(py_spy: str, pid: int, seconds: float, out: Path) -> dict[str, dict[str, int]]:
    """py-spy samples: main-thread samples by owner, other threads by their kind."""
    subprocess.run([py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                    "--rate", "100", "--nonblocking", "--threads", "--format", "raw",
                    "--output", str(out)], capture_output=True, timeout=seconds + 120,
                   check=True)
    res: dict[str, dict[str, int]] = collections.defaultdict(collections.Counter)
    for line in out.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        head, *frames = stack.split(";")
        m = re.match(r"thread \((\d+)\): (.*)", head)
        if m is None:
            continue
        tid, name = int(m.group(1)), m.group(2)
        if tid == pid:
            res["main thread"][classify(frames)] += int(count)
        else:
            res["other threads"][thread_kind(name, tid, pid)] += int(count)
    return res


class Demo:
    """One ``python -m edge demo --quiet`` of a source tree, started and waited for."""

    def __init__(self, tree: Path, args: argparse.Namespace, tmp: Path) -> None:
        self.tree = tree
        self.state = Path(tempfile.mkdtemp(prefix="demo-", dir=tmp))
        env = dict(os.environ, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1",
                   NUMBA_CACHE_DIR=args.numba_cache or str(tmp / "numba-cache"))
        cmd = [sys.executable, "-m", "edge", "demo", "--quiet", "--state-dir",
               str(self.state), "--opcua-port", str(free_port())]
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("OPC-UA server"):
                self.ready.set()

    def wait_ready(self) -> float:
        """Seconds from start to READY (the endpoints line)."""
        while not self.ready.wait(1.0):
            if self.proc.poll() is not None or time.monotonic() - self.t_start > 300:
                raise RuntimeError(f"demo did not become ready: {''.join(self.lines)[-2000:]}")
        return time.monotonic() - self.t_start

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_demo(tree: Path, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    demo = Demo(tree, args, tmp)
    try:
        to_ready = demo.wait_ready()
        time.sleep(args.settle)
        pid = demo.pid
        la0 = os.getloadavg()[0]
        p0, th0, w0 = proc_ticks(f"/proc/{pid}/stat"), thread_ticks(pid), time.monotonic()
        time.sleep(args.seconds)
        p1, th1, w1 = proc_ticks(f"/proc/{pid}/stat"), thread_ticks(pid), time.monotonic()
        la1 = os.getloadavg()[0]
        rss = rss_mb(pid)
        names = thread_names(args.py_spy, pid)
        wall = w1 - w0
        per_kind: dict[str, float] = collections.defaultdict(float)
        for tid, t1 in th1.items():
            kind = thread_kind(names.get(tid, ""), tid, pid)
            per_kind[kind] += (t1 - th0.get(tid, 0)) / CLK_TCK / wall
        raw = Path(args.keep) / f"{tree.name}-{demo.state.name}.txt" if args.keep else \
            demo.state / "profile.txt"
        prof = profile(args.py_spy, pid, args.profile, raw) if args.py_spy and args.profile \
            else {}
        return {"cores": (p1 - p0) / CLK_TCK / wall, "rss_mb": rss, "threads": per_kind,
                "profile": prof, "to_ready_s": to_ready, "load": (la0 + la1) / 2}
    finally:
        demo.stop()


def cmd_paired(args: argparse.Namespace) -> None:
    """Every tree's demo at once, measured over the same windows: on a loaded machine
    the trees share each window's load, so their ratio is steadier than that of runs
    taken one after the other (the demos add their own load, about 0.25 core each)."""
    trees = [Path(t).resolve() for t in args.tree]
    with tempfile.TemporaryDirectory(prefix="demo-cpu-") as tmp:
        demos: list[Demo] = []
        try:
            for t in trees:  # one after the other: each demo takes port 8008 if free
                demos.append(Demo(t, args, Path(tmp)))
                demos[-1].wait_ready()
            time.sleep(args.settle)
            cores: dict[Path, list[float]] = {t: [] for t in trees}
            loads = []
            for w in range(args.runs):
                t0 = {d.tree: proc_ticks(f"/proc/{d.pid}/stat") for d in demos}
                w0 = time.monotonic()
                time.sleep(args.seconds)
                wall = time.monotonic() - w0
                for d in demos:
                    cores[d.tree].append((proc_ticks(f"/proc/{d.pid}/stat") - t0[d.tree])
                                         / CLK_TCK / wall)
                loads.append(os.getloadavg()[0])
                print(f"window {w + 1}: " + ", ".join(
                    f"{d.tree.name} {cores[d.tree][-1]:.3f}" for d in demos)
                    + f" cores, load {loads[-1]:.1f}", flush=True)
            rss = {d.tree: rss_mb(d.pid) for d in demos}
        finally:
            for d in demos:
                d.stop()
    first = trees[0]
    print(f"\nmedians of {args.runs} windows of {args.seconds:.0f} s, all trees at once, "
          f"load average {statistics.median(loads):.1f}:")
    for tree in trees:
        ratio = statistics.median(a / b for a, b in zip(cores[tree], cores[first],
                                                        strict=True))
        print(f"{tree}: {statistics.median(cores[tree]):.3f} cores, RSS {rss[tree]:.0f} MB, "
              f"per-window ratio to {first.name} {ratio:.3f}")


def cmd_demo(args: argparse.Namespace) -> None:
    trees = [Path(t).resolve() for t in args.tree]
    results: dict[Path, list[dict[str, Any]]] = {t: [] for t in trees}
    with tempfile.TemporaryDirectory(prefix="demo-cpu-") as tmp:
        for run in range(args.runs):
            for tree in trees:
                r = run_demo(tree, args, Path(tmp))
                results[tree].append(r)
                print(f"run {run + 1} {tree}: {r['cores']:.3f} cores, RSS {r['rss_mb']:.0f} MB,"
                      f" READY after {r['to_ready_s']:.0f} s, load {r['load']:.1f}", flush=True)
                for kind, c in sorted(r["threads"].items(), key=lambda kv: -kv[1]):
                    print(f"    {c:6.3f} cores  {kind}")
                for thread, owners in r["profile"].items():
                    total = sum(n for o, n in owners.items() if o != SELECT) or 1
                    print(f"    py-spy, {thread}: {total} samples (+{owners.get(SELECT, 0)}"
                          " in select)")
                    for owner, n in sorted(owners.items(), key=lambda kv: -kv[1]):
                        if owner != SELECT:
                            print(f"      {100 * n / total:5.1f} %  {owner}")
    print(f"\nmedians of {args.runs} runs, {args.seconds:.0f} s each after READY + "
          f"{args.settle:.0f} s:")
    for tree, rs in results.items():
        kinds = sorted({k for r in rs for k in r["threads"]})
        print(f"{tree}: {statistics.median(r['cores'] for r in rs):.3f} cores, RSS "
              f"{statistics.median(r['rss_mb'] for r in rs):.0f} MB, load average "
              f"{statistics.median(r['load'] for r in rs):.1f}")
        for k in kinds:
            print(f"    {statistics.median(r['threads'].get(k, 0.0) for r in rs):6.3f}  {k}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    li = sub.add_parser("line", help="the motor line alone, in-process")
    li.add_argument("--baseline", default="", help="git revision to compare with")
    li.add_argument("--runs", type=int, default=3)
    li.add_argument("--minutes", type=float, default=5.0, help="simulated, ticking only")
    li.add_argument("--health-minutes", type=float, default=2.0,
                    help="simulated, with health truth")
    li.set_defaults(func=cmd_line)
    de = sub.add_parser("demo", help="the whole demo process")
    de.add_argument("--tree", action="append", default=[], help="source tree (repeatable)")
    de.add_argument("--runs", type=int, default=3)
    de.add_argument("--seconds", type=float, default=60.0)
    de.add_argument("--settle", type=float, default=5.0)
    de.add_argument("--py-spy", default="", help="path of py-spy, to name threads")
    de.add_argument("--profile", type=float, default=0.0, help="py-spy seconds after the run")
    de.add_argument("--keep", default="", help="folder to keep py-spy's raw profiles in")
    de.add_argument("--numba-cache", default="",
                    help="numba cache folder kept across invocations (default: a fresh one,"
                         " so each tree's first run compiles the kernels)")
    de.add_argument("--paired", action="store_true",
                    help="run every tree's demo at once; --runs windows of --seconds")
    de.set_defaults(func=cmd_demo)
    args = ap.parse_args()
    if args.what == "demo" and not args.tree:
        args.tree = [str(ROOT)]
    if args.what == "demo" and args.paired:
        args.func = cmd_paired
    args.func(args)


if __name__ == "__main__":
    main()
