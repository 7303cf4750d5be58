"""Plain-text rendering of the status document for ``edge-gateway status``.

Every line fits 80 columns (a terminal, a journalctl pager), names cut where needed."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from edge.runtime.statusdoc import StatusDoc


def render(status: StatusDoc | Mapping[str, Any]) -> str:
    """The document as text; from the daemon itself or as decoded from its JSON."""
    doc: Mapping[str, Any] = (msgspec.to_builtins(status) if isinstance(status, StatusDoc)
                              else status)
    lines = [
        f"gateway {doc.get('gateway')}  pid {doc.get('pid')}  up {doc.get('uptime_s', 0):.0f} s  "
        f"{'READY' if doc.get('ready') else 'starting'}",
        "",
        "rates",
    ]
    for key, value in sorted(doc.get("rates", {}).items()):
        lines.append(f"  {key:<34} {value:>12.1f}")
    lines += ["", "links"]
    sources = doc.get("sources") or {}
    for name, up in sorted(doc.get("links", {}).items()):
        lines.append(f"  {name:<34} {'up' if up else 'DOWN'}")
        if name.startswith("source:") and name[7:] in sources:
            lines += _source(sources[name[7:]])
    lines += ["", "journal (per durable sink)"]
    for sink, st in sorted(doc.get("journal", {}).items()):
        lines.append(
            f"  {sink[:14]:<14} backlog {int(st['depth_points']):>9} points "
            f"{int(st['depth_bytes']):>11} B  "
            f"oldest unsent {float(st['oldest_unsent_age_s']):6.1f} s"
        )
    lines.append(
        f"  pending commit {doc.get('journal_pending_points', 0)} points, "
        f"stored {doc.get('journal_bytes', 0)} B"
    )
    interlocks = doc.get("interlocks", {})
    if interlocks:
        lines += ["", "interlocks"]
        for name, st in sorted(interlocks.items()):
            lines.append(
                f"  {name:<24} {str(st.get('state', '?')).upper():<8} "
                f"tag {st.get('tag', '')}  last {st.get('last_value', '')}  "
                f"trips {st.get('trips', 0)}"
            )
    health = doc.get("health", {})
    if health:
        lines += ["", "motor health"]
        for motor, st in sorted(health.items()):
            ttf = st.get("ttf_s")
            ttf_txt = "-" if ttf is None or ttf != ttf or ttf == float("inf") else f"{ttf:.0f} s"
            health_v = st.get("health")  # null in JSON while not known yet
            health_v = float("nan") if health_v is None else float(health_v)
            lines.append(f"  {motor:<24} health {health_v:.2f}  "
                         f"ttf {ttf_txt}")
    lines += _oee(doc.get("oee") or {})
    lines += _energy(doc.get("energy") or {})
    lines += _wafer(doc.get("last_wafer"))
    bad = {n: c for n, c in doc.get("components", {}).items()
           if c.get("restarts") or not c.get("running") or c.get("stuck")}
    if bad:
        lines += ["", "components with trouble"]
        for name, c in sorted(bad.items()):
            stuck = f"  stuck in {c['stuck']}" if c.get("stuck") else ""
            lines.append(f"  {name:<24} restarts {c['restarts']}{stuck}  "
                         f"{c.get('last_error', '')}")
    return "\n".join(lines) + "\n"


def _source(st: Mapping[str, Any]) -> list[str]:
    """A source's data under its link: why its tags are Bad, the last outage, backfill."""
    lines = []
    if st.get("bad_reason"):
        since = time.strftime("%H:%M:%S", time.localtime(_num(st.get("bad_since")) or 0))
        lines.append(f"    tags Bad since {since}: {st['bad_reason']}"[:80])
    last = _num(st.get("last_outage_s"))
    if math.isfinite(last):
        fill = {"off": "backfill off", "none": "nothing to backfill"}.get(
            str(st.get("backfill")), f"backfilled {st.get('backfilled_values', 0)} values, "
                                     f"{st.get('unfilled_tags', 0)} tags without history")
        lines.append(f"    {st.get('outages', 0)} outages, last {last:.1f} s; {fill}"[:80])
    return lines


def _num(value: object) -> float:
    """A number of the document; NaN for null (JSON has no NaN) or anything else."""
    return float(value) if isinstance(value, int | float) else math.nan


def _pct(value: object) -> str:
    v = _num(value)
    return f"{100 * v:5.1f}%" if math.isfinite(v) else "    - "


def _oee(oee: Mapping[str, Any]) -> list[str]:
    if not oee:
        return []
    lines = ["", "oee (rolling window)          availability performance quality    oee"]
    tools = sorted(oee.items(), key=lambda kv: (kv[1].get("line", ""),
                                                kv[1].get("scope") == "line", kv[0]))
    for name, st in tools:
        label = f"{name[:18]} ({st.get('scope', '?')})"
        lines.append(f"  {label:<27} {_pct(st.get('availability')):>12} "
                     f"{_pct(st.get('performance')):>11} {_pct(st.get('quality')):>7} "
                     f"{_pct(st.get('oee')):>6}  {str(st.get('shift') or '-')[:8]}")
    return lines


def _energy(energy: Mapping[str, Any]) -> list[str]:
    if not energy:
        return []
    lines = ["", "energy"]
    for line, st in sorted(energy.items()):
        per_part = _num(st.get("kwh_per_good_part"))
        part = f"{per_part:.4f} kWh" if math.isfinite(per_part) else "- (no shift closed)"
        lines.append(f"  {line[:12]:<12} shift {str(st.get('shift') or '-')[:8]:<8} "
                     f"{_num(st.get('shift_kwh')):8.3f} kWh  per good part {part}")
        motors = sorted((st.get("motors_kwh") or {}).items(), key=lambda kv: -_num(kv[1]))
        top = [f"{m[:20]:<20} {_num(k):8.4f} kWh" for m, k in motors[:4]]
        if top:
            lines.append(f"    motors over the last {_num(st.get('window_s')):.0f} s "
                         f"(top {len(top)} of {len(motors)}; all in the JSON)")
        for i in range(0, len(top), 2):
            lines.append("    " + "  ".join(top[i:i + 2]))
    return lines


def _wafer(step: Mapping[str, Any] | None) -> list[str]:
    if not step:
        return []
    start, end = int(step.get("start_ns", 0)), int(step.get("end_ns", 0))
    when = time.strftime("%H:%M:%S", time.gmtime(end / 1e9))
    return ["", "last wafer",
            f"  {str(step.get('wafer'))[:24]} on {str(step.get('tool'))[:16]}  "
            f"recipe {str(step.get('recipe') or '-')[:20]}",
            f"  left {when} UTC after {(end - start) / 1e9:.0f} s  "
            f"trips {step.get('trips', 0)}  quarantines {step.get('quarantines', 0)}  "
            f"spc alarms {step.get('spc_alarms', 0)}"]
