"""build_stages wiring from a TOML config, and warm_up."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.components import BuildContext
from edge.config import loads
from edge.errors import ConfigError
from edge.model import TagRegistry
from edge.processing import build_stages, warm_up
from edge.runtime.metrics import Metrics

CONFIG = """
[[sources]]
type = "modbus"
name = "etch1"
host = "127.0.0.1"
registers = [{name = "chamber_temp_c", address = 0, type = "float32"}]
commands = [{action = "stop", function = "coil", address = 0}]

[[interlocks]]
name = "etch1_overtemp"
tag = "etch1/chamber_temp_c"
high = 188.0
action = {source = "etch1", action = "stop"}

[[compensation]]
name = "cmm1"

[[health]]
name = "line"
motors = [{name = "hbw/belt", current_tag = "hbw/belt/current_a"}]

[[spc]]
name = "chamber"
tag = "etch1/chamber_temp_c"
rules = ["ewma"]
"""


def _secret(name: str) -> str:
    raise KeyError(name)


def test_build_stages_in_order_after_declare_tags(tmp_path: Path) -> None:
    """Stages come out as compensate, interlock, health, spc once their tags are declared."""
    cfg = loads(CONFIG)
    tags = TagRegistry()
    tags.add("etch1", "chamber_temp_c", unit="C")
    tags.add("hbw/belt", "current_a", unit="A")
    for section in ("compensation", "interlocks", "health", "spc"):
        for item in cfg.section(section):
            item.declare_tags(tags)
    assert "cmm1/l20_mm" in tags and "hbw/belt/health" in tags and "hbw/belt/ttf_s" in tags
    ctx = BuildContext("gw", tags, Metrics(), tmp_path, _secret)
    stages = build_stages(cfg, ctx)
    assert [s.name for s in stages] == ["compensate", "interlock", "health", "spc"]
    assert warm_up() < 30.0


SOURCES = """
[[sources]]
type = "modbus"
name = "etch1"
host = "127.0.0.1"
registers = [{name = "chamber_temp_c", address = 0, type = "float32"}]
commands = [{action = "stop", function = "coil", address = 0},
            {action = "reset", function = "coil", address = 0, value = 0}]

[[sources]]
type = "mqtt"
name = "motors"
commands = [{action = "stop", topic = "stf/command"}]

[[sources]]
type = "file"
name = "cmm1"
paths = ["/nonexistent"]
"""


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ('{source = "etch1", action = "halt"}',
         "interlock 'chamber_overtemp': action: source 'etch1' has no action 'halt' "
         "(it has: reset, stop)"),
        ('{source = "etch9", action = "halt"}',
         "interlock 'chamber_overtemp': action: no source named 'etch9' "
         "(sources: cmm1, etch1, motors)"),
        ('{source = "motors", action = "reset"}',
         "interlock 'chamber_overtemp': action: source 'motors' has no action 'reset' "
         "(it has: stop)"),
        ('{source = "cmm1"}',
         "interlock 'chamber_overtemp': action: source 'cmm1' has no action 'stop' "
         "(it takes no commands)"),
    ],
)
def test_build_stages_refuses_an_action_no_source_declares(
    tmp_path: Path, action: str, message: str,
) -> None:
    """An interlock whose stop names a missing source or action fails when the stages are
    built (check-config and run), not when the interlock trips."""
    cfg = loads(SOURCES + f"""
[[interlocks]]
name = "chamber_overtemp"
tag = "etch1/chamber_temp_c"
high = 188.0
action = {action}
""")
    tags = TagRegistry()
    for src in cfg.sources:
        src.declare_tags(tags)
    with pytest.raises(ConfigError) as exc:
        build_stages(cfg, BuildContext("gw", tags, Metrics(), tmp_path, _secret))
    assert str(exc.value) == message


def test_sources_declare_the_actions_of_their_commands_table() -> None:
    """Modbus and MQTT sources declare their configured commands, a file source none; a
    Modbus action defined twice is refused (which of the two would a stop send?)."""
    etch, motors, cmm = loads(SOURCES).sources
    assert etch.actions() == {"stop", "reset"}
    assert motors.actions() == {"stop"}
    assert cmm.actions() == frozenset()
    twice = "source 'etch1': commands: action 'stop' is defined twice"
    with pytest.raises(ConfigError, match=twice):
        loads(SOURCES.replace('value = 0}', 'value = 0}, {action = "stop", function = "coil", '
                              'address = 1}', 1))


def test_check_reports_every_stage_mistake_at_once() -> None:
    """Gateway.check (what check-config runs) names a bad interlock action, an interlock on
    an unknown tag and an SPC chart on an unknown tag together, not only the first."""
    from edge.app import Gateway
    from edge.config import ConfigProblems

    text = CONFIG.replace('action = {source = "etch1", action = "stop"}',
                          'action = {source = "etch1", action = "halt"}')
    text = text.replace('[[spc]]\nname = "chamber"\ntag = "etch1/chamber_temp_c"',
                        '[[spc]]\nname = "chamber"\ntag = "etch1/nope"')
    text += ('\n[[interlocks]]\nname = "ghost"\ntag = "etch1/ghost"\nhigh = 1.0\n'
             'action = {source = "etch1", action = "stop"}\n')
    cfg = loads(text.replace("[[compensation]]\nname = \"cmm1\"\n", ""))
    with pytest.raises(ConfigProblems) as err:
        Gateway(cfg, secrets=_secret).check()
    text_err = str(err.value)
    assert "has no action 'halt'" in text_err
    assert "etch1/ghost" in text_err and "etch1/nope" in text_err
