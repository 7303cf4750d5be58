"""How the running gateway serves the condition board (``edge.runtime.conditions``): the
stages it asks, the device command a reset sends, the journal an action goes to, and the
control socket's operator commands.

Invariants:

* A reset command is the interlock's ``InterlockAction.reset`` (by default the source's
  ``reset`` action when it declares one), sent on the loop that owns the source (the
  fast lane for a watched device), never from a thread.
* An operator action's record is committed to the journal (and shown live) before the
  action's answer returns.
* The control socket's user is the socket's peer (``control.peer_user``), never a name
  the request carries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edge.components import Command
from edge.config import Config
from edge.flow import Flow
from edge.model import Record, SampleBatch
from edge.runtime.conditions import ConditionBoard, Kind

OPERATOR_COMMANDS = ("interlock_reset", "acknowledge", "confirm")


def bind_board(board: ConditionBoard, cfg: Config, flow: Flow,
               stage: Callable[[str], Any]) -> None:
    """Wire ``board`` to the built stages (``stage(name)``: the stage or None) and flow."""
    probes: dict[Kind, Any] = {}
    for kind in ("interlock", "spc", "health"):
        found = stage(kind)
        if found is not None:
            probes[kind] = found.conditions
    interlock = stage("interlock")

    def why_active(name: str) -> str:
        state = interlock.states().get(name) if interlock is not None else None
        if state is None:
            return ""
        return (f"{state['condition']}: {state['tag']} = {state['last_value']:g}, "
                f"limit {state['limit']:g}")

    async def journal(records: Sequence[Record]) -> None:
        await flow.keep(SampleBatch.empty(), list(records), wait=True)

    async def send_reset(name: str) -> tuple[bool, str]:
        rule: Any = next((r for r in cfg.section("interlocks") if r.name == name), None)
        if rule is None:
            return True, ""
        act = rule.action
        src = next((s for s in cfg.sources if s.name == act.source), None)
        action = act.reset_action(src.actions() if src is not None else frozenset())
        if not action:
            return True, "no reset command configured: restart the tool at the tool"
        cmd = Command(source=act.source, action=action, target=act.target or rule.tag,
                      reason=name)
        ok, error = (await flow.send_commands([cmd]))[0]
        return ok, error or f"sent {act.source}:{action}"

    board.bind(probes=probes, reset_latch=None if interlock is None else interlock.reset,
               send_reset=send_reset, journal=journal, describe=why_active)


async def control_request(board: ConditionBoard, cmd: str,
                          req: dict[str, Any]) -> dict[str, Any]:
    """One of ``OPERATOR_COMMANDS`` from the control socket (the CLI)."""
    user = str(req.get("peer_user", "")) or "unknown"
    comment = str(req.get("comment", ""))
    target = str(req.get("name", ""))
    if cmd == "interlock_reset":
        out = await board.reset(target, origin="cli", user=user, comment=comment)
    elif cmd == "acknowledge":
        out = await board.acknowledge(target, origin="cli", user=user, comment=comment)
    else:
        out = await board.confirm(target, origin="cli", user=user, comment=comment)
    return {"ok": out.ok, "error": "" if out.ok else out.detail, "detail": out.detail,
            "refusal": out.refusal}
