"""The live status document, the systemd STATUS line, and the gateway's own metrics.

Once a second the board reads the journal stats (on the journal thread) and derives
rates from the metrics counters. Every ``SELF_METRICS_S`` it appends a sample batch on
device ``gateway`` (journal depth and oldest unsent age per sink, link states, rates,
trips, CPU, RSS, each interlock's state and limit, each SPC chart's center and 3-sigma
limits once learned) so that InfluxDB and Grafana see the gateway itself. It also applies
the journal's age limits once a minute.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from edge.model import SampleBatch, TagRegistry

if TYPE_CHECKING:
    from edge.app import Gateway

log = structlog.get_logger("edge.status")

SELF_METRICS_S = 10.0
# Only what the board reads: collecting every metric (one series per device) held the
# event loop for ~10 ms a second.
_RATE_METRICS = ("edge_ingest_total", "edge_sink_delivered_total")
_SELF_METRICS = ("edge_journal_evicted_total", "edge_interlock_trips_total")
EXPIRE_S = 60.0
DEVICE = "gateway"


class StatusBoard:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.started = time.time()
        self.journal: dict[str, dict[str, float]] = {}
        self.rates: dict[str, float] = {}
        self._prev: dict[str, float] = {}
        self._prev_t = time.monotonic()
        self._cpu_prev = _cpu_seconds()
        self._tag_ids: dict[str, int] = {}
        self._snapshot: dict[str, float] = {}

    # ------------------------------------------------------------------ tags

    def declare_tags(self, tags: TagRegistry, sinks: list[str], sources: list[str]) -> None:
        names: list[tuple[str, str]] = [
            ("ingest_samples_per_s", "1/s"), ("ingest_records_per_s", "1/s"),
            ("journal_bytes", "B"), ("journal_pending_points", ""),
            ("evicted_samples_total", ""), ("interlock_trips_total", ""),
            ("cpu_percent", "%"), ("rss_mb", "MB"),
        ]
        for sink in sinks:
            names += [(f"journal_depth_{sink}", ""), (f"oldest_unsent_age_s_{sink}", "s"),
                      (f"link_up_{sink}", ""), (f"delivered_per_s_{sink}", "1/s")]
        names += [(f"link_up_{src}", "") for src in sources]
        # Interlock state and limit, SPC limits: config and learned state that Grafana
        # cannot see in the data (a limit line, a chart's UCL/LCL before any violation).
        for rule in self.gw.cfg.section("interlocks"):
            names += [(f"interlock_tripped_{rule.name}", ""), (f"interlock_limit_{rule.name}", "")]
        for chart in self.gw.cfg.section("spc"):
            names += [(f"spc_center_{chart.name}", ""), (f"spc_ucl_{chart.name}", ""),
                      (f"spc_lcl_{chart.name}", "")]
        for name, unit in names:
            self._tag_ids[name] = tags.add(DEVICE, name, unit=unit).id

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        gw = self.gw
        assert gw.writer is not None
        writer = gw.writer
        last_self = last_expire = time.monotonic()
        while True:
            stats = await writer.call(writer.journal.stats)
            self.journal = {
                name: {
                    "depth_points": s.depth_points, "depth_entries": s.depth_entries,
                    "depth_bytes": s.depth_bytes, "oldest_unsent_age_s": s.oldest_unsent_age_s,
                    "acked": s.acked,
                }
                for name, s in stats.items()
            }
            self._update_rates()
            now = time.monotonic()
            if now - last_self >= SELF_METRICS_S:
                last_self = now
                batch = self.self_metrics()
                writer.submit(batch)
                for live in gw.live:
                    live.publish(batch, [])
            if now - last_expire >= EXPIRE_S:
                last_expire = now
                await writer.call(writer.journal.expire)
            await asyncio.sleep(1.0)

    def _update_rates(self) -> None:
        snap = self.gw.metrics.snapshot(_RATE_METRICS)
        now = time.monotonic()
        dt = max(1e-3, now - self._prev_t)
        totals = {
            "ingest_samples_per_s": _sum(snap, "edge_ingest_total", 'kind="samples"'),
            "ingest_records_per_s": _sum(snap, "edge_ingest_total", 'kind="records"'),
        }
        for sink in self.gw.sink_states:
            totals[f"delivered_per_s_{sink}"] = _sum(
                snap, "edge_sink_delivered_total", f'sink="{sink}"'
            )
        for key, total in totals.items():
            prev = self._prev.get(key, total)
            self.rates[key] = max(0.0, (total - prev) / dt)
            self._prev[key] = total
        self._prev_t = now
        self._snapshot = snap

    def links(self) -> dict[str, bool]:
        return {name: st.up for name, st in self.gw.links.states().items()}

    def self_metrics(self) -> SampleBatch:
        gw = self.gw
        assert gw.writer is not None
        snap = gw.metrics.snapshot(_SELF_METRICS)
        cpu = _cpu_seconds()
        values: dict[str, float] = dict(self.rates)
        values["journal_bytes"] = float(gw.writer.journal.bytes)
        values["journal_pending_points"] = float(gw.writer.pending_points)
        values["evicted_samples_total"] = _sum(snap, "edge_journal_evicted_total",
                                               'kind="samples"')
        values["interlock_trips_total"] = _sum(snap, "edge_interlock_trips_total", "")
        values["cpu_percent"] = 100.0 * (cpu - self._cpu_prev) / SELF_METRICS_S
        self._cpu_prev = cpu
        values["rss_mb"] = _rss_mb()
        for sink, st in self.journal.items():
            values[f"journal_depth_{sink}"] = float(st["depth_points"])
            values[f"oldest_unsent_age_s_{sink}"] = float(st["oldest_unsent_age_s"])
        for label, up in self.links().items():
            name = label.split(":", 1)[1].split("/", 1)[0]
            values[f"link_up_{name}"] = 1.0 if up else 0.0
        interlock = gw.stage("interlock")
        for name, st in (interlock.states() if interlock is not None else {}).items():
            values[f"interlock_tripped_{name}"] = 1.0 if st["state"] == "tripped" else 0.0
            values[f"interlock_limit_{name}"] = float(st["limit"])
        spc = gw.stage("spc")
        for name, st in (spc.states() if spc is not None else {}).items():
            for key in ("center", "ucl", "lcl"):
                values[f"spc_{key}_{name}"] = float(st[key])
        # NaN (a limit not learned yet) would reach InfluxDB as a bare quality point.
        keys = [k for k in values if k in self._tag_ids and np.isfinite(values[k])]
        now = time.time_ns()
        return SampleBatch(
            np.array([self._tag_ids[k] for k in keys], np.int32),
            np.full(len(keys), now, np.int64),
            np.array([values[k] for k in keys], np.float64),
        )

    # ------------------------------------------------------------------ views

    def document(self) -> dict[str, Any]:
        gw = self.gw
        doc: dict[str, Any] = {
            "gateway": gw.gateway_id,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 1),
            "ready": gw.ready.is_set(),
            "journal": self.journal,
            "journal_bytes": gw.writer.journal.bytes if gw.writer else 0,
            "journal_pending_points": gw.writer.pending_points if gw.writer else 0,
            "links": self.links(),
            "rates": dict(self.rates),
            "components": gw.supervisor.states(),
            "sinks": {
                n: {"link_up": s.link_up, "delivered_points": s.delivered_points,
                    "last_error": s.last_error, "attempt": s.attempt}
                for n, s in gw.sink_states.items()
            },
            "interlocks": {}, "health": {}, "spc": {},
        }
        for name in ("interlock", "health", "spc"):
            stage = gw.stage(name)
            if stage is not None and hasattr(stage, "states"):
                doc["interlocks" if name == "interlock" else name] = stage.states()
        return doc

    def status_line(self) -> str:
        depth = sum(int(s["depth_points"]) for s in self.journal.values())
        down = [n for n, up in self.links().items() if not up]
        rate = self.rates.get("ingest_samples_per_s", 0.0)
        line = f"ingest {rate:.0f}/s; journal backlog {depth} points"
        if down:
            line += f"; down: {', '.join(down)}"
        return line


def _sum(snap: dict[str, float], name: str, label_filter: str) -> float:
    total = 0.0
    for key, value in snap.items():
        if (key == name or key.startswith(name + "{")) and label_filter in key:
            total += value
    return total


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


