"""The MES: an HTTP server that stores what the gateway sends, durably, once.

API port:
  POST /api/v1/records   {"gateway_id": str, "records": [{"id": str, "type": T, ..}]}
                         T in measurement|quarantine|interlock_trip|health_alert|
                         spc_violation|operator_action|text_value|oee_report|
                         energy_report|wafer_step; headers Idempotency-Key,
                         Authorization: Bearer <token> (checked only when a token
                         is set: 401)
                         -> 201 {"accepted": n, "duplicates": m} (200 on a replayed key)
                         -> 400 not JSON / 422 a bad record: the whole batch refused
  GET  /api/v1/counts    {"records", "by_type", "batches", "duplicate_records",
                          "duplicate_keys"}
  GET  /api/v1/records?type=&limit=   stored records, oldest first
  GET  /api/v1/wafers/<id>/history     {"wafer": id, "steps": [wafer_step records of that
                         wafer, by start time]}; 404 when no step of it was received
Admin port (always reachable, also serves the two GETs above):
  POST /admin/fault {"mode": ok|refuse|blackhole|error5xx|ratelimit|slow, "rate":
                     0.5, "retry_after_s": 2, "latency_s": 1.0};  GET /admin/fault

Invariants: a 2xx is sent only after the batch is committed to SQLite
(synchronous=FULL), so a counted record survives a crash of the MES; a repeated
Idempotency-Key stores nothing and replays the first answer; a record id already
stored is counted as a duplicate and not stored again. Faults: refuse closes the
API listening socket and cuts open connections (connections are refused until
the mode changes); blackhole reads requests and never answers; error5xx and
ratelimit answer 503 / 429 (with Retry-After) to a share `rate` of requests,
chosen by a seeded random stream, and store nothing; slow commits, then waits
`latency_s` before answering.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from .httpmini import HttpServer, Request, Response
from .truth import TruthLog

RECORD_TYPES = (
    "measurement", "quarantine", "interlock_trip", "health_alert", "spc_violation",
    "operator_action", "text_value", "oee_report", "energy_report", "wafer_step",
)
FAULT_MODES = ("ok", "refuse", "blackhole", "error5xx", "ratelimit", "slow")
_WAFERS, _HISTORY = "/api/v1/wafers/", "/history"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY, idem_key TEXT UNIQUE, gateway_id TEXT,
    received_ns INTEGER, accepted INTEGER, duplicates INTEGER);
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, gateway_id TEXT, batch_seq INTEGER,
    received_ns INTEGER, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class MesStore:
    """SQLite storage of batches and records (one connection, used from the loop)."""

    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def _bump(self, name: str, n: int) -> None:
        if n:
            self.db.execute(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                "SET value = value + excluded.value",
                (name, n),
            )

    def ingest(
        self, key: str | None, gateway_id: str, records: list[dict[str, Any]]
    ) -> tuple[bool, int, int]:
        """Store a batch; returns (replayed, accepted, duplicates), committed."""
        now = time.time_ns()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if key is not None:
                row = self.db.execute(
                    "SELECT accepted, duplicates FROM batches WHERE idem_key = ?", (key,)
                ).fetchone()
                if row is not None:
                    self._bump("duplicate_keys", 1)
                    self.db.execute("COMMIT")
                    return True, int(row[0]), int(row[1])
            cur = self.db.execute(
                "INSERT INTO batches (idem_key, gateway_id, received_ns) VALUES (?, ?, ?)",
                (key, gateway_id, now),
            )
            seq = cur.lastrowid
            accepted = 0
            for rec in records:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?)",
                    (rec["id"], rec["type"], gateway_id, seq, now, json.dumps(rec, sort_keys=True)),
                )
                accepted += cur.rowcount
            dups = len(records) - accepted
            self.db.execute(
                "UPDATE batches SET accepted = ?, duplicates = ? WHERE seq = ?",
                (accepted, dups, seq),
            )
            self._bump("duplicate_records", dups)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return False, accepted, dups

    def counts(self) -> dict[str, Any]:
        by_type = dict(self.db.execute("SELECT type, COUNT(*) FROM records GROUP BY type"))
        counters = dict(self.db.execute("SELECT name, value FROM counters"))
        return {
            "records": sum(by_type.values()),
            "by_type": by_type,
            "batches": self.db.execute("SELECT COUNT(*) FROM batches").fetchone()[0],
            "duplicate_records": counters.get("duplicate_records", 0),
            "duplicate_keys": counters.get("duplicate_keys", 0),
        }

    def records(self, rtype: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        sql, args = "SELECT body FROM records", []
        if rtype:
            sql, args = sql + " WHERE type = ?", [rtype]
        rows = self.db.execute(sql + " ORDER BY rowid LIMIT ?", [*args, limit])
        return [json.loads(r[0]) for r in rows]

    def wafer_history(self, wafer: str) -> list[dict[str, Any]]:
        """The wafer_step records of ``wafer`` (its ``wafer`` field), by start time."""
        rows = self.db.execute(
            "SELECT body FROM records WHERE type = 'wafer_step' "
            "AND json_extract(body, '$.wafer') = ? "
            "ORDER BY json_extract(body, '$.start_ns'), rowid", (wafer,))
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        self.db.close()


def validate(body: Any) -> tuple[str, list[dict[str, Any]]]:
    """(gateway_id, records) of a batch body, or ValueError naming what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    gw, records = body.get("gateway_id"), body.get("records")
    if not isinstance(gw, str) or not gw:
        raise ValueError("gateway_id must be a non-empty string")
    if not isinstance(records, list):
        raise ValueError("records must be a list")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"records[{i}] must be an object")
        if not isinstance(rec.get("id"), str) or not rec["id"]:
            raise ValueError(f"records[{i}]: id must be a non-empty string")
        if rec.get("type") not in RECORD_TYPES:
            raise ValueError(f"records[{i}] id={rec['id']!r}: type must be one of {RECORD_TYPES}")
    return gw, records


class MesServer:
    """The MES on `port` (API) and `admin_port` (faults, counts)."""

    def __init__(
        self,
        db_path: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_port: int = 0,
        *,
        token: str | None = None,
        seed: int = 0,
        truth: TruthLog | None = None,
    ) -> None:
        self.store = MesStore(db_path)
        self.token, self.truth = token, truth
        self.api = HttpServer(self._api, host, port)
        self.admin = HttpServer(self._admin, host, admin_port)
        self.rng = np.random.default_rng([seed, 4])
        self.fault: dict[str, Any] = {
            "mode": "ok",
            "rate": 1.0,
            "retry_after_s": 1.0,
            "latency_s": 1.0,
        }
        self.stats: dict[str, int] = {"requests": 0}

    @property
    def port(self) -> int:
        return self.api.port

    @property
    def admin_port(self) -> int:
        return self.admin.port

    async def start(self) -> None:
        await self.api.start()
        await self.admin.start()

    async def close(self) -> None:
        await self.api.close()
        await self.admin.close()
        self.store.close()

    async def set_fault(
        self,
        mode: str,
        rate: float | None = None,
        retry_after_s: float | None = None,
        latency_s: float | None = None,
    ) -> dict[str, Any]:
        """Switch the fault mode at runtime; returns the new setting."""
        if mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {FAULT_MODES}, got {mode!r}")
        for name, value in (
            ("rate", rate),
            ("retry_after_s", retry_after_s),
            ("latency_s", latency_s),
        ):
            if value is not None:
                if not float(value) >= 0 or (name == "rate" and float(value) > 1):
                    raise ValueError(f"{name} out of range: {value}")
                self.fault[name] = float(value)
        was = self.fault["mode"]
        self.fault["mode"] = mode
        if mode == "refuse" and was != "refuse":
            await self.api.stop_listening()
            self.api.cut_all()
        elif mode != "refuse" and was == "refuse":
            await self.api.start()
        if was == "blackhole" and mode != "blackhole":
            self.api.cut_all()  # held requests are never answered: drop them
        if self.truth is not None:
            self.truth.emit("fault", "mes", time.time_ns(), **self.fault)
        return dict(self.fault)

    def _count(self, status: int) -> None:
        self.stats["requests"] += 1
        self.stats[str(status)] = self.stats.get(str(status), 0) + 1

    async def _api(self, req: Request) -> Response | None:
        mode = self.fault["mode"]
        if mode == "blackhole":
            self._count(0)
            return None
        resp = self._injected(mode) or self._route(req)
        self._count(resp.status)
        if mode == "slow":
            await asyncio.sleep(self.fault["latency_s"])
        return resp

    def _injected(self, mode: str) -> Response | None:
        if mode not in ("error5xx", "ratelimit") or self.rng.random() >= self.fault["rate"]:
            return None
        if mode == "error5xx":
            return Response(503, {"error": "injected fault: service unavailable"})
        retry = self.fault["retry_after_s"]
        return Response(
            429,
            {"error": "injected fault: rate limited"},
            {"Retry-After": str(max(0, round(retry)))},
        )

    def _route(self, req: Request) -> Response:
        if req.path == "/api/v1/records" and req.method == "POST":
            return self._post_records(req)
        return self._read_api(req)

    def _read_api(self, req: Request) -> Response:
        if req.method != "GET":
            return Response(405, {"error": f"{req.method} not allowed on {req.path}"})
        if req.path == "/api/v1/counts":
            return Response(200, self.store.counts())
        if req.path == "/api/v1/records":
            try:
                limit = int(req.query.get("limit", "1000"))
            except ValueError:
                return Response(400, {"error": "limit must be an integer"})
            return Response(200, {"records": self.store.records(req.query.get("type"), limit)})
        if req.path.startswith(_WAFERS) and req.path.endswith(_HISTORY):
            return self._wafer_history(req.path[len(_WAFERS):-len(_HISTORY)])
        if req.path == "/healthz":
            return Response(200, {"ok": True})
        return Response(404, {"error": f"no route {req.path}"})

    def _wafer_history(self, quoted: str) -> Response:
        wafer = urllib.parse.unquote(quoted)
        if not wafer or "/" in wafer:
            return Response(400, {"error": f"bad wafer id {wafer!r}"})
        steps = self.store.wafer_history(wafer)
        if not steps:
            return Response(404, {"error": f"no step of wafer {wafer!r} was received"})
        return Response(200, {"wafer": wafer, "steps": steps})

    def _post_records(self, req: Request) -> Response:
        if self.token is not None and req.headers.get("authorization") != f"Bearer {self.token}":
            return Response(401, {"error": "missing or wrong bearer token"})
        try:
            body = req.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return Response(400, {"error": f"body is not JSON: {exc}"})
        try:
            gw, records = validate(body)
        except ValueError as exc:
            return Response(422, {"error": str(exc)})
        replayed, accepted, dups = self.store.ingest(
            req.headers.get("idempotency-key") or None, gw, records
        )
        return Response(
            200 if replayed else 201,
            {"accepted": accepted, "duplicates": dups, "replayed": replayed},
        )

    async def _admin(self, req: Request) -> Response | None:
        if req.path == "/admin/fault":
            if req.method == "GET":
                return Response(200, {**self.fault, "stats": dict(self.stats)})
            if req.method != "POST":
                return Response(405, {"error": "use GET or POST"})
            try:
                body = req.json()
                fault = await self.set_fault(
                    str(body["mode"]),
                    body.get("rate"),
                    body.get("retry_after_s"),
                    body.get("latency_s"),
                )
            except (ValueError, KeyError, TypeError) as exc:
                return Response(400, {"error": f"bad fault request: {exc}"})
            return Response(200, fault)
        return self._read_api(req)
