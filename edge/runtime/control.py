"""The control socket: how operator commands talk to the running daemon.

A Unix stream socket in the state folder (mode 0660), one JSON request per line, one
JSON answer per line: ``{"cmd": "status"}``, ``{"cmd": "interlock_reset", "name": N}``,
``{"cmd": "journal_replay", "ids": [..]}``. Only local users with access to the state
folder can reach it; nothing listens on the network. Answers are strict JSON (typed
values such as the status document encoded by msgspec; NaN and infinities as null).
The daemon puts the connecting user (from the socket's peer credentials, never from the
request) in ``request["peer_user"]``: the audit trail of an interlock reset names them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from edge.runtime.private import file_mode
from edge.runtime.statusdoc import encode

log = structlog.get_logger("edge.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
# serve(path, handler, started): what the gateway runs as its "control" component.
Server = Callable[[Path, Handler, "asyncio.Event | None"], Awaitable[None]]


class DaemonNotRunning(Exception):
    """No daemon answers on the control socket."""


async def serve(path: Path, handler: Handler, started: asyncio.Event | None = None) -> None:
    """Serve until cancelled; removes a stale socket file first; sets ``started`` once
    clients can connect."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        user = peer_user(writer.get_extra_info("socket"))
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("request must be a JSON object")
                    request["peer_user"] = user
                    answer = await handler(request)
                except (ValueError, KeyError, TypeError) as exc:
                    answer = {"ok": False, "error": str(exc)}
                writer.write(encode(answer) + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(on_client, path=str(path), limit=1 << 20)
    os.chmod(path, file_mode(path.parent, group_write=True))
    if started is not None:
        started.set()
    try:
        async with server:
            await server.serve_forever()
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def peer_user(sock: socket.socket | None) -> str:
    """The login name of the process at the other end of a Unix socket ("uid N" when it
    has none, "unknown" when the OS does not say)."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return "unknown"
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return "unknown"
    _pid, uid, _gid = struct.unpack("3i", creds)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def request(path: Path, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Blocking client for the CLI. Raises ``DaemonNotRunning`` with the reason."""
    if not path.exists():
        raise DaemonNotRunning(f"no control socket at {path}: is the daemon running?")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps(payload).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
    except (ConnectionRefusedError, FileNotFoundError) as exc:
        raise DaemonNotRunning(
            f"the daemon is not running (control socket {path}: {exc.strerror})"
        ) from None
    except TimeoutError:
        raise DaemonNotRunning(f"the daemon did not answer within {timeout} s ({path})") from None
    answer: dict[str, Any] = json.loads(buf)
    return answer
