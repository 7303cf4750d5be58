"""DCMD decisions of the Sparkplug edge node: only allow-listed commands run, the rest is
refused with a reason; check-config names every allow-list mistake."""

from __future__ import annotations

from edge.protocols.sparkplug import commands as C
from edge.protocols.sparkplug import sparkplug_b_pb2 as pb

STOP = C.CommandConfig(device="etch1", source="etch1", action="stop")
ALLOWED = {("etch1", STOP.metric): STOP}
NAMES = {"etch1": {2: "chamber_temp", 9: "Commands/stop"}, "press2": {3: "force"}}


def dcmd(*metrics: dict[str, object]) -> pb.Payload:
    p = pb.Payload(timestamp=1)
    for fields in metrics:
        p.metrics.add(**fields)  # type: ignore[arg-type]
    return p


def test_allowed_command_by_name_or_by_its_birth_alias_runs() -> None:
    """tck-id-operational-behavior-data-commands-dcmd-metric-name: the DBIRTH's metric, by
    name or by the alias the birth bound to it, with Boolean true, runs its command."""
    by_name = C.decide("etch1", dcmd({"name": "Commands/stop", "datatype": pb.Boolean,
                                      "boolean_value": True}), ALLOWED, NAMES)
    by_alias = C.decide("etch1", dcmd({"alias": 9, "boolean_value": True}), ALLOWED, NAMES)
    assert by_name == by_alias == [C.Decision("etch1", "Commands/stop", STOP)]


def test_everything_else_is_refused_with_a_reason() -> None:
    """Tags, unknown metrics and devices, other value types and false are refused, one
    decision per metric so each attempt is audited."""
    got = C.decide("etch1", dcmd(
        {"name": "chamber_temp", "double_value": 20.0},
        {"name": "Commands/reset", "boolean_value": True},
        {"alias": 77, "boolean_value": True},
        {"name": "Commands/stop", "int_value": 1},
        {"name": "Commands/stop", "boolean_value": False}), ALLOWED, NAMES)
    assert [d.command for d in got] == [None] * 5
    assert [d.metric for d in got] == ["chamber_temp", "Commands/reset", "alias 77",
                                       "Commands/stop", "Commands/stop"]
    reasons = [d.refusal for d in got]
    assert "measured value" in reasons[0] and "Commands/stop" in reasons[0]
    assert "not an allowed command" in reasons[1]
    assert "not in the DBIRTH" in reasons[2]
    assert "Boolean true, got int_value" in reasons[3]
    assert "false runs nothing" in reasons[4]
    (unknown,) = C.decide("lathe9", dcmd({"name": "Commands/stop", "boolean_value": True}),
                          ALLOWED, NAMES)
    assert unknown.command is None and "not a device of this edge node" in unknown.refusal
    (empty,) = C.decide("etch1", dcmd(), ALLOWED, NAMES)
    assert empty.refusal == "the DCMD has no metric"


def test_check_config_names_each_allow_list_mistake() -> None:
    """An allow-list entry naming an unknown device, source or undeclared action, or one
    allowed twice, is a check-config error naming the sink and the entry."""
    commands = [STOP, STOP,
                C.CommandConfig(device="etch1", source="etch1", action="explode"),
                C.CommandConfig(device="lathe9", source="nope", action="stop")]
    problems = C.action_problems(commands, {"etch1", "press2"},
                                 {"etch1": frozenset({"stop", "reset"})}, "sp")
    assert problems == [
        "sink 'sp': commands: etch1/Commands/stop: allowed twice",
        "sink 'sp': commands: etch1/Commands/explode: source 'etch1' has no action "
        "'explode' (it has: reset, stop)",
        "sink 'sp': commands: lathe9/Commands/stop: no device 'lathe9' (devices: etch1, "
        "press2)",
        "sink 'sp': commands: lathe9/Commands/stop: no source named 'nope' (sources: etch1)",
    ]
    assert C.action_problems([STOP], {"etch1"}, {"etch1": frozenset({"stop"})}, "sp") == []
