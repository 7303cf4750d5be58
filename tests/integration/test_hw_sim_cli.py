"""The hw-sim command: plant from TOML, fault switching from the CLI, clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from hw_sim_peers import free_port, wait_for

from hw_sim.truth import read_truth


def _hw_sim() -> list[str]:
    exe = Path(sys.executable).parent / "hw-sim"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "hw_sim.cli"]


async def _cli(*args: str) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(*_hw_sim(), *args, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, out
    assert err == b"", err  # an admin command prints its answer, not the HTTP client's log
    return dict(json.loads(out))


async def test_plant_runs_from_toml_and_faults_switch_from_cli(tmp_path: Path) -> None:
    """hw-sim plant starts CMM, etch, MES and a link; mes-fault and link-mode switch them."""
    etch, mes, mes_admin, link, link_admin = (free_port() for _ in range(5))
    (tmp_path / "plant.toml").write_text(f"""
seed = 3
speed = 120.0
truth = "truth.jsonl"
[cmm]
dir = "cmm"
mode = "daily"
[etch]
port = {etch}
[motors]
enabled = false
[mes]
port = {mes}
admin_port = {mes_admin}
db = "mes.sqlite"
[[links]]
name = "mes"
listen = {link}
target = "127.0.0.1:{mes}"
admin = {link_admin}
""")
    proc = await asyncio.create_subprocess_exec(
        *_hw_sim(),
        "plant",
        "--config",
        str(tmp_path / "plant.toml"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 20)).decode() for _ in range(4)]
        assert [ln.split(":")[0] for ln in lines] == ["cmm", "etch", "mes", "link"]
        assert f"127.0.0.1:{etch}" in lines[1]
        await wait_for(lambda: any((tmp_path / "cmm").glob("cmm-*.csv")), 15, "a CMM file")
        body = {"gateway_id": "g", "records": [{"id": "1", "type": "measurement"}]}
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.post(f"http://127.0.0.1:{link}/api/v1/records", json=body)
            assert r.status_code == 201
            state = await _cli("link-mode", "--admin", str(link_admin), "refuse")
            assert state["mode"] == "refuse"
            try:
                await c.post(f"http://127.0.0.1:{link}/api/v1/records", json=body)
                raise AssertionError("link in refuse mode accepted a connection")
            except httpx.ConnectError:
                pass
            await _cli("link-mode", "--admin", str(link_admin), "pass")
            fault = await _cli(
                "mes-fault", "--admin", str(mes_admin), "ratelimit", "--retry-after", "3"
            )
            assert fault["mode"] == "ratelimit"
            r = await c.post(f"http://127.0.0.1:{link}/api/v1/records", json=body)
            assert r.status_code == 429 and r.headers["retry-after"] == "3"
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 20)
    assert rc == 0
    kinds = {r["kind"] for r in read_truth(tmp_path / "truth.jsonl")}
    assert {"run_start", "part", "mode", "fault"} <= kinds


async def test_cli_runs_repeat_byte_for_byte(tmp_path: Path) -> None:
    """Two `hw-sim cmm` runs with one seed and start time write identical files and truth."""
    outs = []
    for run in ("a", "b"):
        proc = await asyncio.create_subprocess_exec(
            *_hw_sim(),
            "cmm",
            "--dir",
            str(tmp_path / run),
            "--mode",
            "daily",
            "--parts",
            "8",
            "--speed",
            "2000",
            "--seed",
            "5",
            "--start",
            "2026-11-21T10:00:00+00:00",
            "--bad-rate",
            "0.2",
            "--truth",
            str(tmp_path / f"{run}.jsonl"),
            stdout=subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        outs.append(
            (
                (tmp_path / run / "cmm-20261121.csv").read_bytes(),
                (tmp_path / f"{run}.jsonl").read_bytes(),
            )
        )
    assert outs[0] == outs[1] and outs[0][0].count(b"\n") >= 1 + 8 * 3
