"""Device commands (DCMD) of the Sparkplug edge node: the allow-list and its decisions.

A host may only run commands the config allows: each ``[[sinks.commands]]`` entry names
one of our devices, a source and one of that source's declared commands
(``SourceConfig.actions()``, the names interlocks use). The device's DBIRTH announces
each one as a Boolean metric ``Commands/<action>`` (value false, with an alias); a DCMD
writing ``true`` to it runs the command through the source's write-back port.

Invariants:

* ``decide`` is pure (no socket, no clock): one ``Decision`` per metric of a DCMD, in
  the order the host sent them, so every write the host attempted is audited.
* Anything that is not an allowed command with the value Boolean ``true`` is refused
  with a reason a person can act on: an unknown device, a metric not in the DBIRTH, a
  measured value (tags are never written from the fleet), a command that is not allowed,
  a value of another type or ``false``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from edge.config import ConfigStruct
from edge.protocols.sparkplug import sparkplug_b_pb2 as pb

COMMAND_PREFIX = "Commands/"


class CommandConfig(ConfigStruct, frozen=True):
    """``[[sinks.commands]]``: the host may run ``action`` of ``source`` on ``device``."""

    device: str  # the Sparkplug device id (one of our devices) the DCMD is sent to
    source: str  # the source whose write-back port carries it
    action: str  # one of that source's commands (check-config verifies it)

    def __post_init__(self) -> None:
        for key in ("device", "source", "action"):
            if not getattr(self, key):
                raise ValueError(f"{key} must not be empty")

    @property
    def metric(self) -> str:
        return f"{COMMAND_PREFIX}{self.action}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one metric of a DCMD: run ``command``, or refuse with ``refusal``."""

    device: str
    metric: str  # the metric's name (from the DBIRTH when the host sent only the alias)
    command: CommandConfig | None
    refusal: str = ""


def action_problems(commands: Sequence[CommandConfig], devices: Iterable[str],
                    actions: Mapping[str, frozenset[str]], sink: str) -> list[str]:
    """check-config: every allowed command names one of our devices, a configured source
    and an action that source declares; one line per mistake."""
    known = set(devices)
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for c in commands:
        where = f"sink '{sink}': commands: {c.device}/{c.metric}"
        if c.device not in known:
            problems.append(f"{where}: no device '{c.device}' (devices: "
                            f"{', '.join(sorted(known)) or 'none'})")
        declared = actions.get(c.source)
        if declared is None:
            problems.append(f"{where}: no source named '{c.source}' (sources: "
                            f"{', '.join(sorted(actions)) or 'none'})")
        elif c.action not in declared:
            has = f"it has: {', '.join(sorted(declared))}" if declared else \
                "it takes no commands"
            problems.append(f"{where}: source '{c.source}' has no action '{c.action}' "
                            f"({has})")
        if (c.device, c.action) in seen:
            problems.append(f"{where}: allowed twice")
        seen.add((c.device, c.action))
    return problems


def decide(device: str, payload: pb.Payload,
           allowed: Mapping[tuple[str, str], CommandConfig],
           names: Mapping[str, Mapping[int, str]]) -> list[Decision]:
    """One decision per metric of a DCMD sent to ``device``. ``allowed``: (device, metric
    name) -> command; ``names``: device -> alias -> metric name, as its DBIRTH gave them."""
    aliases = names.get(device)
    if aliases is None:
        return [Decision(device, "", None,
                         f"'{device}' is not a device of this edge node")]
    if not payload.metrics:
        return [Decision(device, "", None, "the DCMD has no metric")]
    out: list[Decision] = []
    for m in payload.metrics:
        name = m.name or (aliases.get(m.alias, "") if m.HasField("alias") else "")
        if not name:
            what = f"alias {m.alias}" if m.HasField("alias") else "a metric without a name"
            out.append(Decision(device, what, None, f"{what} is not in the DBIRTH of "
                                                    f"'{device}'"))
            continue
        cmd = allowed.get((device, name))
        if cmd is None:
            ours = sorted(c.metric for (d, _), c in allowed.items() if d == device)
            why = ("is a measured value; the fleet may only run allowed commands"
                   if name in aliases.values() and not name.startswith(COMMAND_PREFIX)
                   else "is not an allowed command")
            out.append(Decision(device, name, None, f"'{name}' {why} (allowed on "
                                                    f"'{device}': {', '.join(ours) or 'none'})"))
        elif m.WhichOneof("value") != "boolean_value":
            out.append(Decision(device, name, None, f"'{name}' takes a Boolean true, got "
                                                    f"{m.WhichOneof('value') or 'no value'}"))
        elif not m.boolean_value:
            out.append(Decision(device, name, None, f"'{name}' = false runs nothing"))
        else:
            out.append(Decision(device, name, cmd))
    return out
