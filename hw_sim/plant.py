"""The whole plant from one TOML file (`hw-sim plant --config FILE`).

Every part shares one `SimClock` and one ground-truth file, and gets the run's
seed; each `[section]` may be switched off with `enabled = false`. See
`config/plant.toml` for the annotated keys. Unknown keys are errors naming the
section and key. `Plant.start()` returns where each part listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from .baddata import BadData
from .clock import SimClock
from .cmm import CmmConfig, CmmModel, CmmWriter, run_cmm
from .etch import EtchConfig, EtchModel
from .etch_server import EtchServer
from .link import LinkProxy
from .mes import MesServer
from .motors import MotorLine
from .motors_mqtt import MotorPublisher
from .truth import TruthLog

_TOP = {
    "seed",
    "speed",
    "start_ns",
    "truth",
    "host",
    "bad_data",
    "cmm",
    "etch",
    "motors",
    "mes",
    "links",
}
_SECTIONS: dict[str, set[str]] = {
    "cmm": {"enabled", "dir", "mode", "max_parts"}
    | ({f.name for f in fields(CmmConfig)} - {"features"}),
    "etch": {"enabled", "port", "device_id", "dt_s", "fault"}
    | {f.name for f in fields(EtchConfig)},
    "motors": {
        "enabled",
        "broker_host",
        "broker_port",
        "mode",
        "batch_ticks",
        "qos",
        "initial_health",
        "health_every_s",
        "horizon_ticks",
        "voltage_v",
        "power_factor",
    },
    "mes": {"enabled", "port", "admin_port", "db", "token_env", "fault"},
    "bad_data": {f.name for f in fields(BadData)},
    "links": {"name", "listen", "target", "admin", "mode"},
}


class PlantConfigError(ValueError):
    pass


def _check(section: str, table: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise PlantConfigError(f"[{section}] must be a table")
    unknown = set(table) - _SECTIONS[section]
    if unknown:
        raise PlantConfigError(f"[{section}]: unknown keys {sorted(unknown)}")
    return table


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and check a plant TOML file; relative paths are taken from its folder."""
    path = Path(path)
    with path.open("rb") as fh:
        cfg = tomllib.load(fh)
    unknown = set(cfg) - _TOP
    if unknown:
        raise PlantConfigError(f"{path}: unknown top-level keys {sorted(unknown)}")
    for sec in ("cmm", "etch", "motors", "mes", "bad_data"):
        _check(sec, cfg.setdefault(sec, {}))
    for i, link in enumerate(cfg.setdefault("links", [])):
        _check("links", link)
        if not {"listen", "target"} <= set(link):
            raise PlantConfigError(f"[[links]] #{i}: needs listen and target")
    cfg["_base"] = path.parent
    return cfg


class Plant:
    """Starts the configured parts; `close()` stops them all."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        base: Path = cfg.get("_base", Path.cwd())
        self.base = base
        self.seed = int(cfg.get("seed", 0))
        self.host = str(cfg.get("host", "127.0.0.1"))
        self.clock = SimClock(float(cfg.get("speed", 1.0)), cfg.get("start_ns"))
        truth_path = cfg.get("truth")
        self.truth = TruthLog(base / truth_path if truth_path else None, keep=False)
        bd: dict[str, Any] = dict(cfg.get("bad_data", {}))
        if "kinds" in bd:
            bd["kinds"] = tuple(bd["kinds"])
        try:
            self.bad = BadData(**bd)
        except ValueError as exc:
            raise PlantConfigError(f"[bad_data]: {exc}") from exc
        self.tasks: list[asyncio.Task[None]] = []
        self.etch: EtchServer | None = None
        self.mes: MesServer | None = None
        self.motors: MotorPublisher | None = None
        self.links: list[LinkProxy] = []

    def _on(self, section: str) -> dict[str, Any] | None:
        sec: dict[str, Any] = self.cfg.get(section, {})
        return sec if sec.get("enabled", True) else None

    async def start(self) -> dict[str, str]:
        """Start every enabled part; returns {part: where it listens or writes}."""
        where: dict[str, str] = {}
        self.truth.emit(
            "run_start", "plant", self.clock.start_ns, seed=self.seed, speed=self.clock.speed
        )
        if (c := self._on("cmm")) is not None:
            opts = {k: v for k, v in c.items() if k in {f.name for f in fields(CmmConfig)}}
            model = CmmModel(self.seed, CmmConfig(**opts), self.clock.start_ns)
            writer = CmmWriter(
                self.base / c.get("dir", "cmm"),
                c.get("mode", "part"),
                seed=self.seed,
                bad=self.bad,
                truth=self.truth,
                start_ns=self.clock.start_ns,
            )
            self.tasks.append(
                asyncio.create_task(
                    run_cmm(model, writer, self.clock, self.truth, c.get("max_parts")), name="cmm"
                )
            )
            where["cmm"] = f"files in {writer.dir} ({writer.mode} mode)"
        if (c := self._on("etch")) is not None:
            opts = {
                k: (tuple(v) if isinstance(v, list) else v)
                for k, v in c.items()
                if k in {f.name for f in fields(EtchConfig)}
            }
            model_e = EtchModel(self.seed, EtchConfig(**opts), self.clock.start_ns, self.truth)
            self.etch = EtchServer(
                model_e,
                self.clock,
                self.host,
                int(c.get("port", 5020)),
                device_id=int(c.get("device_id", 1)),
                dt_s=float(c.get("dt_s", 0.1)),
                fault=c.get("fault", "ok"),
                truth=self.truth,
            )
            await self.etch.start()
            where["etch"] = f"modbus tcp {self.host}:{self.etch.port} device {self.etch.device_id}"
        if (c := self._on("mes")) is not None:
            token_env = c.get("token_env")
            self.mes = MesServer(
                self.base / c.get("db", "mes.sqlite"),
                self.host,
                int(c.get("port", 8080)),
                int(c.get("admin_port", 8081)),
                token=os.environ.get(token_env) if token_env else None,
                seed=self.seed,
                truth=self.truth,
            )
            await self.mes.start()
            if c.get("fault", "ok") != "ok":
                await self.mes.set_fault(c["fault"])
            where["mes"] = (
                f"http://{self.host}:{self.mes.port}/api/v1 "
                f"(admin http://{self.host}:{self.mes.admin_port}/admin/fault)"
            )
        if (c := self._on("motors")) is not None:
            line = MotorLine(
                self.seed, c.get("initial_health", 1.0), self.clock.start_ns, truth=self.truth,
                voltage_v=float(c.get("voltage_v", 24.0)),
                power_factor=float(c.get("power_factor", 1.0)),
            )
            self.motors = MotorPublisher(
                line,
                self.clock,
                c.get("broker_host", "127.0.0.1"),
                int(c.get("broker_port", 1883)),
                mode=c.get("mode", "json"),
                batch_ticks=int(c.get("batch_ticks", 10)),
                qos=int(c.get("qos", 0)),
                bad=self.bad,
                seed=self.seed,
                truth=self.truth,
                health_every_s=float(c.get("health_every_s", 600.0)),
                horizon_ticks=int(c.get("horizon_ticks", 36_000)),
            )
            self.tasks.append(asyncio.create_task(self.motors.run(), name="motors"))
            kind = "telemetry" if self.motors.mode == "json" else "batch"
            where["motors"] = (
                f"mqtt {self.motors.host}:{self.motors.port} stf/<station>/<component>/{kind}"
            )
        for i, lk in enumerate(self.cfg.get("links", [])):
            thost, _, tport = str(lk["target"]).rpartition(":")
            proxy = LinkProxy(
                int(lk["listen"]),
                thost,
                int(tport),
                lk.get("admin"),
                host=self.host,
                truth=self.truth,
            )
            await proxy.start()
            if lk.get("mode", "pass") != "pass":
                await proxy.set_mode(lk["mode"])
            self.links.append(proxy)
            name = lk.get("name", f"link{i}")
            where[f"link:{name}"] = (
                f"tcp {self.host}:{proxy.listen_port} -> {lk['target']}"
                f" (admin http://{self.host}:{proxy.admin_port}/mode)"
            )
        return where

    async def wait(self) -> None:
        """Wait until a part's task ends (it raised, or the CMM made max_parts)."""
        if self.tasks:
            done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        else:
            await asyncio.Event().wait()

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for proxy in self.links:
            await proxy.close()
        if self.etch is not None:
            await self.etch.stop()
        if self.mes is not None:
            await self.mes.close()
        self.truth.close()
