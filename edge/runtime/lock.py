"""One daemon per state folder: an exclusive ``flock`` on ``<state_dir>/lock``.

Invariants:

* ``run`` takes it before it opens the journal, the control socket or any device, and
  holds it (the descriptor stays open) for the life of the process. The kernel drops it
  when the process ends, however it ends (kill -9 included): a lock file left behind
  never blocks a start, only a live holder does.
* The file holds the holder's pid, for the refusal message only; the lock is the
  ``flock``, never the file's presence or content.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError


class StateDirBusy(EdgeError):
    """Another process holds the state folder's lock."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid else "another process (pid unknown)"
        super().__init__(
            f"another edge-gateway ({holder}) already runs on state_dir '{state_dir}' "
            f"(it holds {state_dir / 'lock'}): stop it first, or give this one its own "
            f"gateway.state_dir"
        )
        self.state_dir, self.pid = state_dir, pid


@dataclass
class StateLock:
    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1


def acquire(state_dir: Path) -> StateLock:
    """Take the lock of ``state_dir`` (which must exist) without waiting; StateDirBusy
    when a live process holds it, OSError when the file cannot be opened."""
    path = state_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise StateDirBusy(state_dir, pid) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return StateLock(path, fd)


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    return None
