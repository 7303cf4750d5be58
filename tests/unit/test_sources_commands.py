"""Write-back command lookup shared by the Modbus (TCP and RTU bus) and S7 sources."""

from __future__ import annotations

import pytest

from edge.errors import PermanentError
from edge.sources.commands import command_of


def test_a_configured_action_gives_its_command() -> None:
    """The action names the command the source was configured with."""
    assert command_of({"stop": 1, "reset": 2}, "etch1", "reset") == 2


def test_an_unknown_action_is_permanent_and_lists_the_actions() -> None:
    """An action the source lacks is a PermanentError naming the source and what it has
    (resending would never help), or 'none' when it takes no commands."""
    with pytest.raises(PermanentError, match=r"source 'etch1' has no command 'halt' "
                                             r"\(configured: reset, stop\)"):
        command_of({"stop": 1, "reset": 2}, "etch1", "halt")
    with pytest.raises(PermanentError, match=r"\(configured: none\)"):
        command_of({}, "etch1", "stop")
