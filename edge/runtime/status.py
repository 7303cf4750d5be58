"""The status board: gathers the status document's inputs, the systemd STATUS line and
the gateway's own metrics.

Once a second the board reads the journal stats (on the journal thread) and derives
rates from the metrics counters; ``document()`` builds the typed ``StatusDoc``
(``edge.runtime.statusdoc``) from them, the link board, the supervisor and the stages'
states. Every ``SELF_METRICS_S`` it appends a sample batch on device ``gateway``, read
from that same document (journal depth and oldest unsent age per sink, link states,
rates, trips, CPU, RSS, each interlock's state and limit, each SPC chart's center and
3-sigma limits once learned), so that InfluxDB and Grafana see the gateway itself.

Every input is given explicitly (``StatusBoard(...)`` and ``bind(...)``): this module
never imports the gateway.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import structlog

from edge.journal import JournalWriter
from edge.model import Record, SampleBatch, TagRegistry
from edge.processing import STATUS_FIELD
from edge.runtime.links import LinkBoard
from edge.runtime.metrics import Metrics
from edge.runtime.statusdoc import (
    JournalDepth,
    SinkStatus,
    StatusDoc,
    build_status,
)
from edge.runtime.supervisor import Supervisor

log = structlog.get_logger("edge.status")

SELF_METRICS_S = 10.0
# Only what the board reads: collecting every metric (one series per device) held the
# event loop for ~10 ms a second.
_RATE_METRICS = ("edge_ingest_total", "edge_sink_delivered_total")
_SELF_METRICS = ("edge_journal_evicted_total", "edge_interlock_trips_total")
DEVICE = "gateway"


class SinkView(Protocol):
    """What the board reads of a durable sink's delivery state (``delivery.SinkState``)."""

    @property
    def link_up(self) -> bool: ...
    @property
    def delivered_points(self) -> int: ...
    @property
    def last_error(self) -> str: ...
    @property
    def attempt(self) -> int: ...


@runtime_checkable
class StatefulStage(Protocol):
    """A stage that reports its state for the status (``edge.processing.STAGES``)."""

    name: str

    def states(self) -> Mapping[str, Mapping[str, object]]: ...


class StatusBoard:
    def __init__(self, *, gateway_id: str, metrics: Metrics, links: LinkBoard,
                 supervisor: Supervisor, ready: asyncio.Event) -> None:
        self.gateway_id = gateway_id
        self.metrics = metrics
        self.link_board = links
        self.supervisor = supervisor
        self.ready = ready
        self.started = time.time()
        self.writer: JournalWriter | None = None
        self.sink_states: Mapping[str, SinkView] = {}
        self.stages: Sequence[StatefulStage] = ()
        self.publish: Sequence[Callable[[SampleBatch, Sequence[Record]], None]] = ()
        self.journal: dict[str, JournalDepth] = {}
        self.rates: dict[str, float] = {}
        self._prev: dict[str, float] = {}
        self._prev_t = time.monotonic()
        self._cpu_prev = _cpu_seconds()
        self._tag_ids: dict[str, int] = {}

    def bind(self, *, writer: JournalWriter, sink_states: Mapping[str, SinkView],
             stages: Sequence[StatefulStage],
             publish: Sequence[Callable[[SampleBatch, Sequence[Record]], None]]) -> None:
        """What exists once the gateway is built: the journal writer, the durable sinks'
        states, the stages that report state, where self-metrics go live."""
        self.writer = writer
        self.sink_states = sink_states
        self.stages = stages
        self.publish = publish

    # ------------------------------------------------------------------ tags

    def declare_tags(self, tags: TagRegistry, sources: Sequence[str],
                     interlocks: Sequence[str] = (), charts: Sequence[str] = ()) -> None:
        """The gateway's own tags known from the config (before anything is built)."""
        names: list[tuple[str, str]] = [
            ("ingest_samples_per_s", "1/s"), ("ingest_records_per_s", "1/s"),
            ("journal_bytes", "B"), ("journal_pending_points", ""),
            ("evicted_samples_total", ""), ("interlock_trips_total", ""),
            ("cpu_percent", "%"), ("rss_mb", "MB"),
        ]
        names += [(f"link_up_{src}", "") for src in sources]
        # Interlock state and limit, SPC limits: config and learned state that Grafana
        # cannot see in the data (a limit line, a chart's UCL/LCL before any violation).
        for rule in interlocks:
            names += [(f"interlock_tripped_{rule}", ""), (f"interlock_limit_{rule}", "")]
        for chart in charts:
            names += [(f"spc_center_{chart}", ""), (f"spc_ucl_{chart}", ""),
                      (f"spc_lcl_{chart}", "")]
        self._add(tags, names)

    def declare_sinks(self, tags: TagRegistry, durable: Sequence[str]) -> None:
        """Per durable sink (known once the sinks are built): backlog, age, link, rate. A
        live-only sink has no journal cursor and no link, so no such tags."""
        names: list[tuple[str, str]] = []
        for sink in durable:
            names += [(f"journal_depth_{sink}", ""), (f"oldest_unsent_age_s_{sink}", "s"),
                      (f"link_up_{sink}", ""), (f"delivered_per_s_{sink}", "1/s")]
        self._add(tags, names)

    def _add(self, tags: TagRegistry, names: list[tuple[str, str]]) -> None:
        for name, unit in names:
            self._tag_ids[name] = tags.add(DEVICE, name, unit=unit).id

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        assert self.writer is not None, "bind() before run()"
        writer = self.writer
        last_self = time.monotonic()
        while True:
            stats = await writer.call(writer.journal.stats)
            self.journal = {
                name: JournalDepth(
                    depth_points=s.depth_points, depth_entries=s.depth_entries,
                    depth_bytes=s.depth_bytes, oldest_unsent_age_s=s.oldest_unsent_age_s,
                    acked=s.acked)
                for name, s in stats.items()
            }
            self._update_rates()
            now = time.monotonic()
            if now - last_self >= SELF_METRICS_S:
                last_self = now
                batch = self.self_metrics()
                writer.submit(batch)
                for publish in self.publish:
                    publish(batch, [])
            await asyncio.sleep(1.0)

    def _update_rates(self) -> None:
        snap = self.metrics.snapshot(_RATE_METRICS)
        now = time.monotonic()
        dt = max(1e-3, now - self._prev_t)
        totals = {
            "ingest_samples_per_s": _sum(snap, "edge_ingest_total", 'kind="samples"'),
            "ingest_records_per_s": _sum(snap, "edge_ingest_total", 'kind="records"'),
        }
        for sink in self.sink_states:
            totals[f"delivered_per_s_{sink}"] = _sum(
                snap, "edge_sink_delivered_total", f'sink="{sink}"'
            )
        for key, total in totals.items():
            prev = self._prev.get(key, total)
            self.rates[key] = max(0.0, (total - prev) / dt)
            self._prev[key] = total
        self._prev_t = now

    def links(self) -> dict[str, bool]:
        return {name: st.up for name, st in self.link_board.states().items()}

    def self_metrics(self) -> SampleBatch:
        """The gateway's own samples, read from the status document."""
        assert self.writer is not None
        doc = self.document()
        snap = self.metrics.snapshot(_SELF_METRICS)
        cpu = _cpu_seconds()
        values: dict[str, float] = dict(doc.rates)
        values["journal_bytes"] = float(doc.journal_bytes)
        values["journal_pending_points"] = float(doc.journal_pending_points)
        values["evicted_samples_total"] = _sum(snap, "edge_journal_evicted_total",
                                               'kind="samples"')
        values["interlock_trips_total"] = _sum(snap, "edge_interlock_trips_total", "")
        values["cpu_percent"] = 100.0 * (cpu - self._cpu_prev) / SELF_METRICS_S
        self._cpu_prev = cpu
        values["rss_mb"] = _rss_mb()
        for sink, st in doc.journal.items():
            values[f"journal_depth_{sink}"] = float(st.depth_points)
            values[f"oldest_unsent_age_s_{sink}"] = float(st.oldest_unsent_age_s)
        for label, up in doc.links.items():
            name = label.split(":", 1)[-1].split("/", 1)[0]
            values[f"link_up_{name}"] = 1.0 if up else 0.0
        for name, il in doc.interlocks.items():
            values[f"interlock_tripped_{name}"] = 1.0 if il.state == "tripped" else 0.0
            values[f"interlock_limit_{name}"] = il.limit
        for name, chart in doc.spc.items():
            values[f"spc_center_{name}"] = chart.center
            values[f"spc_ucl_{name}"] = chart.ucl
            values[f"spc_lcl_{name}"] = chart.lcl
        # NaN (a limit not learned yet) would reach InfluxDB as a bare quality point.
        keys = [k for k in values if k in self._tag_ids and math.isfinite(values[k])]
        now = time.time_ns()
        return SampleBatch(
            np.array([self._tag_ids[k] for k in keys], np.int32),
            np.full(len(keys), now, np.int64),
            np.array([values[k] for k in keys], np.float64),
        )

    # ------------------------------------------------------------------ views

    def document(self) -> StatusDoc:
        w = self.writer
        return build_status(
            gateway=self.gateway_id, pid=os.getpid(), uptime_s=time.time() - self.started,
            ready=self.ready.is_set(), journal=self.journal,
            journal_bytes=w.journal.bytes if w else 0,
            journal_pending_points=w.pending_points if w else 0,
            links=self.links(), rates=self.rates, components=self.supervisor.states(),
            sinks={n: SinkStatus(link_up=s.link_up, delivered_points=s.delivered_points,
                                 last_error=s.last_error, attempt=s.attempt)
                   for n, s in self.sink_states.items()},
            stage_states={STATUS_FIELD[s.name]: s.states() for s in self.stages
                          if s.name in STATUS_FIELD},
            sources={name.removeprefix("source:"): st.source
                     for name, st in self.link_board.states().items()
                     if st.source is not None},
        )

    def status_line(self) -> str:
        depth = sum(s.depth_points for s in self.journal.values())
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


