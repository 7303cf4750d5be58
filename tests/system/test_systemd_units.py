"""The systemd units in systemd/: verified, hardened, and the daemon runs as they say.

``systemd-analyze verify`` exits 0 even on a misspelled key (it only warns), so every
line it prints counts as a failure. It also checks that ExecStart's binary exists: the
units name the installed path (/opt/edge-gateway/.venv/bin/...), so each is verified as
a copy in a temporary folder whose ExecStart points at this checkout's venv -- the only
line that differs. ``systemd-analyze security --offline=true`` rates the gateway unit;
the bound is 2.5 (the hw-sim unit is verified but its exposure is not bounded).

There is no systemd as PID 1 here, so the last test plays its part: it runs the daemon
with the environment the unit gives it (Environment=, WATCHDOG_USEC from WatchdogSec=,
$CREDENTIALS_DIRECTORY holding each LoadCredential= name, the unit's folders mapped into
a temporary one) and checks the notify messages.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
BIN = Path(sys.executable).parent
INSTALLED_BIN = "/opt/edge-gateway/.venv/bin/"
MAX_EXPOSURE = 2.5


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed: apt-get install -y systemd")
    return path


def directives(unit: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order (keys may repeat)."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(unit: Path, key: str) -> list[str]:
    return [v for _, k, v in directives(unit) if k == key]


def local_copy(unit: Path, tmp: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's venv (see module docstring)."""
    text = unit.read_text(encoding="utf-8")
    assert INSTALLED_BIN in text, f"{unit.name}: ExecStart is not under {INSTALLED_BIN}"
    copy = tmp / unit.name
    copy.write_text(text.replace(INSTALLED_BIN, f"{BIN}/"), encoding="utf-8")
    return copy


def verify(unit: Path) -> str:
    proc = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False, cwd=unit.parent)
    return f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}".strip()


SERVICE_UNITS = sorted(UNITS.glob("*.service"))


@pytest.mark.parametrize("unit", SERVICE_UNITS, ids=lambda p: p.name)
def test_unit_verifies_without_any_warning(unit: Path, tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit and prints nothing at all."""
    assert verify(local_copy(unit, tmp_path)) == "exit 0"


def test_verify_check_catches_a_misspelled_key(tmp_path: Path) -> None:
    """A misspelled key exits 0 but prints a warning, which the check above fails on."""
    copy = local_copy(UNITS / "edge-gateway.service", tmp_path)
    copy.write_text(copy.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    out = verify(copy)
    assert out.startswith("exit 0") and "Unknown key 'NoNewPrivilege'" in out


@pytest.mark.parametrize("unit", SERVICE_UNITS, ids=lambda p: p.name)
def test_exec_start_is_a_command_line_the_cli_accepts(unit: Path) -> None:
    """ExecStart's program and subcommand exist: `<cmd> <sub> --help` works here."""
    (exec_start,) = values(unit, "ExecStart")
    program, sub, *_ = exec_start.split()
    local = BIN / Path(program).name
    proc = subprocess.run([str(local), sub, "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_gateway_exposure_is_at_most_2_5() -> None:
    """`systemd-analyze security` rates the gateway unit at most 2.5 (it reads ~1.3)."""
    proc = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", "edge-gateway.service"],
        capture_output=True, text=True, timeout=60, check=False, cwd=UNITS,
    )
    m = re.search(r"Overall exposure level for edge-gateway\.service: (\d+\.\d+)",
                  proc.stdout)
    assert m is not None, proc.stdout[-2000:] + proc.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, proc.stdout


def test_gateway_unit_contract() -> None:
    """The gateway unit keeps the settings the daemon relies on (notify, watchdog, dirs,
    credentials for the secret names, a network, and JIT-able memory for numba)."""
    unit = UNITS / "edge-gateway.service"
    one = {k: v for _, k, v in directives(unit)}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["Restart"] == "on-failure"
    assert int(one["WatchdogSec"].removesuffix("s")) >= 10  # the daemon pings every <= 5 s
    assert one["StateDirectory"] == "edge-gateway"  # = gateway.state_dir /var/lib/edge-gateway
    assert one["CacheDirectory"] == "edge-gateway"
    assert one["ConfigurationDirectory"] == "edge-gateway"
    assert one["User"] == "edge-gateway" and one["ProtectSystem"] == "strict"
    env = dict(e.split("=", 1) for e in values(unit, "Environment"))
    assert env["NUMBA_CACHE_DIR"].startswith("/var/cache/edge-gateway/")
    creds = [c.split(":", 1)[0] for c in values(unit, "LoadCredential")]
    assert {"MES_TOKEN", "INFLUX_TOKEN", "OPCUA_USERS"} <= set(creds)
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # numba's LLVM JIT needs writable+executable memory.
    assert one.get("MemoryDenyWriteExecute", "no") == "no"
    assert "--config /etc/edge-gateway/edge.toml" in one["ExecStart"]


def test_sysusers_file_creates_the_service_users(tmp_path: Path) -> None:
    """systemd-sysusers (into a scratch root) creates the users the units run as."""
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed: apt-get install -y systemd")
    (tmp_path / "etc").mkdir()
    conf = UNITS / "edge-gateway.sysusers.conf"
    subprocess.run([sysusers, f"--root={tmp_path}", str(conf)], check=True,
                   capture_output=True, timeout=60)
    users = {line.split(":")[0] for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    wanted = {values(u, "User")[0] for u in SERVICE_UNITS}
    assert wanted <= users


def test_hw_sim_plant_config_loads() -> None:
    """The plant config the hw-sim unit reads is valid and uses absolute folders only."""
    from hw_sim.plant import load_config

    cfg = load_config(UNITS / "hw-sim-plant.toml")
    for path in (cfg["truth"], cfg["cmm"]["dir"], cfg["mes"]["db"]):
        assert Path(path).is_absolute() and path.startswith("/var/lib/hw-sim/")


def _unit_environment(unit: Path, tmp: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """What systemd would hand the daemon, with the unit's folders moved under ``tmp``."""
    one = {k: v for _, k, v in directives(unit)}
    dirs = {
        f"/var/lib/{one['StateDirectory']}": tmp / "state",
        f"/var/cache/{one['CacheDirectory']}": tmp / "cache",
        f"/etc/{one['ConfigurationDirectory']}": tmp / "etc",
    }
    creds = tmp / "credentials"
    for d in (*dirs.values(), creds):
        d.mkdir(parents=True)

    def moved(value: str) -> str:
        for src, dst in dirs.items():
            value = value.replace(src, str(dst))
        return value

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    env |= {k: moved(v) for k, v in (e.split("=", 1) for e in values(unit, "Environment"))}
    for cred in values(unit, "LoadCredential"):
        (creds / cred.split(":", 1)[0]).write_text("secret-from-credential\n")
    env |= {
        "STATE_DIRECTORY": str(dirs[f"/var/lib/{one['StateDirectory']}"]),
        "CACHE_DIRECTORY": str(dirs[f"/var/cache/{one['CacheDirectory']}"]),
        "CONFIGURATION_DIRECTORY": str(dirs[f"/etc/{one['ConfigurationDirectory']}"]),
        "CREDENTIALS_DIRECTORY": str(creds),
        "WATCHDOG_USEC": str(int(one["WatchdogSec"].removesuffix("s")) * 1_000_000),
    }
    return env, {"state": tmp / "state", "cache": tmp / "cache", "etc": tmp / "etc"}


def _collect(sock: socket.socket, until: str, timeout: float, got: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got += sock.recv(65536).decode().splitlines()
        except TimeoutError:
            continue
        if any(m.startswith(until) for m in got):
            return
    raise AssertionError(f"no {until} within {timeout} s; got {got}")


def test_daemon_under_the_units_environment_notifies(tmp_path: Path) -> None:
    """With only what the unit provides (its Environment=, credentials, folders), the
    daemon compiles its kernels into NUMBA_CACHE_DIR, reads a secret from
    $CREDENTIALS_DIRECTORY, and sends READY, WATCHDOG and STOPPING."""
    unit = UNITS / "edge-gateway.service"
    env, where = _unit_environment(unit, tmp_path)
    config = where["etc"] / "edge.toml"
    config.write_text(
        f'[gateway]\nid = "gw-unit"\nstate_dir = "{where["state"]}"\n'
        'log_format = "json"\nshutdown_timeout_s = 5\n'
        f'[[sources]]\ntype = "file"\nname = "cmm1"\npaths = ["{tmp_path / "drops"}"]\n'
        '[[compensation]]\nname = "cmm1"\n'
        '[[sinks]]\ntype = "mes"\nname = "mes"\nurl = "http://127.0.0.1:9"\n'
        'token_secret = "MES_TOKEN"\n'
    )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.2)
    env["NOTIFY_SOCKET"] = str(tmp_path / "notify.sock")
    (exec_start,) = values(unit, "ExecStart")
    argv = [str(BIN / "edge-gateway"), *exec_start.split()[1:]]
    argv[argv.index("/etc/edge-gateway/edge.toml")] = str(config)
    (tmp_path / "drops").mkdir()
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    got: list[str] = []
    try:
        _collect(sock, "READY=1", 90, got)
        _collect(sock, "WATCHDOG=1", 10, got)
        proc.send_signal(signal.SIGTERM)
        _collect(sock, "STOPPING=1", 10, got)
        rc = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert rc == 0, log[-3000:]
    assert got.index("READY=1") < got.index("WATCHDOG=1") < got.index("STOPPING=1")
    assert any(where["cache"].joinpath("numba").rglob("*.nbi")), "no numba cache written"
    assert (where["state"] / "journal.db").exists()
    assert "secret 'MES_TOKEN' not found" not in log


def test_deploy_guide_config_step_gives_a_valid_config(tmp_path: Path) -> None:
    """The sed of docs/deploy-pi.md step 4, run on config/demo.toml, changes every line it
    means to and gives a config that check-config accepts."""
    doc = (ROOT / "docs" / "deploy-pi.md").read_text(encoding="utf-8")
    marker = doc.index("<!-- tested by tests/system/test_systemd_units.py")
    block = doc[marker:].split("```sh\n", 1)[1].split("```", 1)[0]
    out = tmp_path / "edge.toml"
    script = (block.replace("/opt/edge-gateway/config/demo.toml", str(ROOT / "config/demo.toml"))
              .replace("/etc/edge-gateway/edge.toml", str(out)))
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], check=True, timeout=30)
    text = out.read_text(encoding="utf-8")
    for line in ('state_dir = "/var/lib/edge-gateway"', 'paths = ["/var/lib/hw-sim/cmm"]',
                 "port = 15020", "http://127.0.0.1:18080", "opc.tcp://0.0.0.0:4840/edge"):
        assert line in text, f"the guide's sed no longer changes: {line}"
    proc = subprocess.run([str(BIN / "edge-gateway"), "check-config", str(out)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
