"""The state folder and the files the gateway keeps in it are private, whatever the umask.

The journal holds every measurement and the dead letters, the control socket resets
interlocks, the OPC-UA key signs the server's sessions. Started by hand under the usual
umask 022 they would be created 0644 / 0755, readable by every user of the machine.

Invariants:

* A folder the gateway creates (the state folder, the journal's folder, the OPC-UA
  certificate folder) is 0700. An existing folder that grants anything to others (as a
  umask left it) is narrowed to 0700 and the log says so. An existing folder that grants
  nothing to others is a deployment's decision and is kept: the systemd unit's
  ``StateDirectoryMode=0750`` lets the operators' group run ``edge-gateway status``.
* A file the gateway creates there is 0600, plus group read (group read-write for the
  control socket) only when its folder lets the group in (g+x). Never anything for
  others. An existing file with more than that is narrowed.
* SQLite creates ``journal.db-wal`` and ``-shm`` with the mode of ``journal.db``: the
  database file is created with its mode before SQLite first opens it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import structlog

log = structlog.get_logger("edge.private")


def private_dir(path: Path, *, ours: bool = True) -> Path:
    """Create ``path`` (and missing parents) with the folder itself 0700. An existing
    folder open to others is narrowed when it is ``ours`` (the state folder), left alone
    otherwise (a folder the journal was put in may be a home directory)."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        st = path.stat()
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(f"{path} exists and is not a folder") from None
        mode = stat.S_IMODE(st.st_mode)
        if ours and mode & 0o007:
            os.chmod(path, 0o700)
            log.warning("folder was open to other users; now private to the service",
                        folder=str(path), mode_was=oct(mode), mode=oct(0o700))
        return path
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask; this is not
    return path


def file_mode(folder: Path, *, group_write: bool = False) -> int:
    """The mode of a file in ``folder``: 0600, plus the group's share when the folder
    lets the group in."""
    try:
        group_in = bool(folder.stat().st_mode & stat.S_IXGRP)
    except FileNotFoundError:
        group_in = False
    if not group_in:
        return 0o600
    return 0o660 if group_write else 0o640


def private_file(path: Path, *, group_write: bool = False) -> None:
    """Create ``path`` empty with ``file_mode`` if missing; narrow it if it grants more."""
    mode = file_mode(path.parent, group_write=group_write)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode))
    narrow(path, mode)


def narrow(path: Path, mode: int) -> None:
    """Take away from ``path`` every permission bit that ``mode`` does not grant."""
    with contextlib.suppress(FileNotFoundError):
        current = stat.S_IMODE(path.stat().st_mode)
        if current & ~mode:
            os.chmod(path, current & mode)


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically, created with ``file_mode`` (never readable by others,
    not even while it is being written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                 file_mode(path.parent))
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
