"""Looking up a write-back command by its action, for every source that takes commands.

Invariant: an action the source does not have is a ``PermanentError`` (resending will
never help) that names the source and lists the actions it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from edge.errors import PermanentError

_V = TypeVar("_V")


def command_of(commands: Mapping[str, _V], source: str, action: str) -> _V:
    """The configured command for ``action``; PermanentError when there is none."""
    found = commands.get(action)
    if found is None:
        raise PermanentError(
            f"source '{source}' has no command '{action}' "
            f"(configured: {', '.join(sorted(commands)) or 'none'})")
    return found
