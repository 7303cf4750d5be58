"""The condition board as the OPC-UA server reaches it, and the status codes of its answers.

Invariants:

* The server uses only ``Board``: the gateway's ``ConditionBoard`` (server on the main
  loop) or ``opcua_crossing.BoardAcrossThreads`` (threaded server) behind it.
* ``answer`` gives every operator action's outcome as the standard status code of its
  reason (BadConditionBranchAlreadyAcked, ...); a board that does not answer in time is
  BadTimeout, one that is gone (the daemon stopping) BadShutdown. It never raises those.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from asyncua import ua

from edge.runtime.conditions import ConditionState, Outcome

_STATUS = {
    "unknown": ua.StatusCodes.BadNodeIdUnknown,
    "disabled": ua.StatusCodes.BadConditionDisabled,
    "already_acked": ua.StatusCodes.BadConditionBranchAlreadyAcked,
    "already_confirmed": ua.StatusCodes.BadConditionBranchAlreadyConfirmed,
    "not_acked": ua.StatusCodes.BadInvalidState,
    "active": ua.StatusCodes.BadInvalidState,
    "command_failed": ua.StatusCodes.BadCommunicationError,
}


class BoardUnavailable(RuntimeError):
    """The gateway's main loop is gone (the daemon is stopping)."""


class Board(Protocol):
    """What the server uses of the condition board (``ConditionBoard``, or
    ``BoardAcrossThreads`` for the threaded server)."""

    def subscribe(self, listener: Callable[[ConditionState], None]) -> Callable[[], None]: ...

    def conditions(self) -> list[ConditionState]: ...

    async def acknowledge(self, cid: str, *, origin: str, user: str,
                          comment: str = "") -> Outcome: ...

    async def confirm(self, cid: str, *, origin: str, user: str,
                      comment: str = "") -> Outcome: ...

    async def reset(self, interlock: str, *, origin: str, user: str,
                    comment: str = "") -> Outcome: ...


async def answer(action: Awaitable[Outcome]) -> ua.StatusCode:
    """The status code of an operator action's outcome; the board not answering in time
    is BadTimeout, the daemon stopping BadShutdown."""
    try:
        return _status(await action)
    except TimeoutError:
        return ua.StatusCode(ua.StatusCodes.BadTimeout)
    except BoardUnavailable:
        return ua.StatusCode(ua.StatusCodes.BadShutdown)


def _status(out: Outcome) -> ua.StatusCode:
    if out.ok:
        return ua.StatusCode(ua.StatusCodes.Good)
    return ua.StatusCode(_STATUS.get(out.refusal, ua.StatusCodes.BadInvalidState))
