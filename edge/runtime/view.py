"""Plain-text rendering of the status document for ``edge-gateway status``."""

from __future__ import annotations

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
    for name, up in sorted(doc.get("links", {}).items()):
        lines.append(f"  {name:<34} {'up' if up else 'DOWN'}")
    lines += ["", "journal (per durable sink)"]
    for sink, st in sorted(doc.get("journal", {}).items()):
        lines.append(
            f"  {sink:<16} backlog {int(st['depth_points']):>10} points "
            f"{int(st['depth_bytes']):>12} B  "
            f"oldest unsent {float(st['oldest_unsent_age_s']):7.1f} s"
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
    bad = {n: c for n, c in doc.get("components", {}).items()
           if c.get("restarts") or not c.get("running") or c.get("stuck")}
    if bad:
        lines += ["", "components with trouble"]
        for name, c in sorted(bad.items()):
            stuck = f"  stuck in {c['stuck']}" if c.get("stuck") else ""
            lines.append(f"  {name:<24} restarts {c['restarts']}{stuck}  "
                         f"{c.get('last_error', '')}")
    return "\n".join(lines) + "\n"
