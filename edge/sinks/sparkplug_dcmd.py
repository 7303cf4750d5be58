"""The Sparkplug edge node's DCMD handling: decide (``edge.protocols.sparkplug.commands``),
run the allowed commands through the sources' write-back ports, audit every one.

Invariants:

* Every metric of every DCMD gives exactly one log line and one ``OperatorAction``
  record (origin "sparkplug", user the primary host id or "anonymous", target
  ``<device>/<metric>``, ok, the detail: what was sent, why it failed or was refused),
  journaled before the next one is handled.
* Nothing here raises: a payload that does not decode is a refusal, a failed command or
  journal write is logged; the edge node's session goes on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import structlog

from edge.components import Command, Hooks
from edge.model import OperatorAction
from edge.protocols.sparkplug import commands as C
from edge.protocols.sparkplug import payload as P

log = structlog.get_logger("edge.sinks.sparkplug")


async def handle_dcmd(sink: str, hooks: Hooks,
                      allowed: Mapping[tuple[str, str], C.CommandConfig],
                      names: Mapping[str, Mapping[int, str]], user: str, device: str,
                      raw: bytes) -> None:
    """Run the allowed commands of one DCMD to ``device``, refuse the rest."""
    try:
        decisions = C.decide(device, P.Payload.FromString(raw), allowed, names)
    except Exception as exc:  # protobuf's DecodeError; never restart for a payload
        decisions = [C.Decision(device, "", None, f"not a Sparkplug B payload ({exc})")]
    for d in decisions:
        ok, detail, event = False, d.refusal, "sparkplug DCMD refused"
        if d.command is not None:
            c = d.command
            if hooks.send_commands is None:
                detail = "no write-back port here (outside the daemon)"
            else:
                (ok, error), = await hooks.send_commands(
                    [Command(c.source, c.action, reason=f"sparkplug DCMD from {user}")])
                detail = f"sent {c.source}:{c.action}" if ok else \
                    f"{c.source}:{c.action} failed: {error}"
                event = "sparkplug DCMD command sent" if ok else "sparkplug DCMD command failed"
        (log.warning if ok else log.error)(event, sink=sink, device=device, metric=d.metric,
                                           user=user, detail=detail)
        record = OperatorAction(ts_ns=time.time_ns(), origin="sparkplug", user=user,
                                action="command", target=f"{device}/{d.metric}", ok=ok,
                                detail=detail)
        if hooks.journal is not None:
            try:
                await hooks.journal([record])
            except Exception as exc:  # the audit must not take the edge node down
                log.error("sparkplug DCMD not journaled", sink=sink,
                          error=str(exc) or type(exc).__name__)
