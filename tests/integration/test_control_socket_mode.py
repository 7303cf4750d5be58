"""The control socket (it resets interlocks) is private whatever the umask."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from pathlib import Path
from typing import Any

from edge.runtime import control
from edge.runtime.private import private_dir


async def _answer(request: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True}


async def _socket_mode(state: Path) -> int:
    started = asyncio.Event()
    task = asyncio.create_task(control.serve(state / "control.sock", _answer, started))
    try:
        await asyncio.wait_for(started.wait(), 10)
        answer = await asyncio.to_thread(control.request, state / "control.sock", {"cmd": "x"})
        assert answer == {"ok": True}
        return stat.S_IMODE((state / "control.sock").stat().st_mode)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_control_socket_is_private_under_umask_022(tmp_path: Path) -> None:
    """Under umask 022 the socket is 0600 in a private state folder, and 0660 in a folder
    a deployment opened to the operators' group (systemd StateDirectoryMode=0750)."""
    old = os.umask(0o022)
    try:
        assert await _socket_mode(private_dir(tmp_path / "state")) == 0o600
        shared = tmp_path / "shared"
        shared.mkdir()
        os.chmod(shared, 0o750)
        assert await _socket_mode(private_dir(shared)) == 0o660
    finally:
        os.umask(old)
