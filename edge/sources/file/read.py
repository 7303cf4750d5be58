"""Reading one drop file: regular files only, no blocking open, bounded reads (blocking
calls: run them in a worker thread).

Invariants:

* Only a regular file is read. Its type is checked with ``lstat`` (a symlink is never
  followed), it is opened with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO or symlink swapped in
  after the check can neither block the open nor redirect it) and checked again with
  ``fstat``. Anything else (FIFO, socket, device, directory, symlink) is refused with a
  reason a person can act on.
* One ``read_lines`` returns at most ``CHUNK`` bytes, or one line of up to ``MAX_LINE``;
  a longer line is cut there so that it is quarantined and reading goes on.
* Only complete lines are returned, except the last line of a file that has no trailing
  newline: it is returned (``final``) once the file has not changed for ``settle_s``,
  and never before.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

CHUNK = 1 << 20
MAX_LINE = 4 << 20

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(Exception):
    """The name is not a regular file; ``reason`` says what it is and what to do."""

    def __init__(self, reason: str, ino: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ino = ino


def refusal(st: os.stat_result) -> str | None:
    """Why a file of this (``lstat``) type is not read, or None for a regular file."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return ("is a symlink; symlinks are never followed: put the file itself in the "
                "folder, or watch the folder that holds it")
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe); only regular files are read"
    if stat.S_ISSOCK(mode):
        return "is a socket; only regular files are read"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device; only regular files are read"
    if stat.S_ISDIR(mode):
        return "is a directory; folders inside a watched folder are not read"
    return "is not a regular file; only regular files are read"


def check(path: str) -> os.stat_result:
    """``lstat`` of a regular file; raises ``Refused`` for anything else, OSError if gone."""
    st = os.lstat(path)
    why = refusal(st)
    if why is not None:
        raise Refused(why, st.st_ino)
    return st


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """An fd for reading a regular file, and its ``fstat``; never blocks, never follows."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the name became a symlink since the lstat
            raise Refused(refusal(os.lstat(path)) or "is a symlink", 0) from None
        raise
    st = os.fstat(fd)
    why = refusal(st)
    if why is not None:
        os.close(fd)
        raise Refused(why, st.st_ino)
    return fd, st


def read_prefix(path: str, ino: int, length: int) -> bytes | None:
    """The first ``length`` bytes of the file, or None when it is another file now."""
    fd, st = open_regular(path)
    try:
        if st.st_ino != ino:
            return None
        return _pread_all(fd, length, 0)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Lines:
    data: bytes = b""  # complete lines from the offset; with ``final`` the last has no \n
    final: bool = False  # the last line is the settled, unterminated end of the file
    replaced: bool = False  # the name now holds another file (other inode)
    tail_mtime_ns: int = 0  # an unterminated end is waiting: the file's mtime, else 0


def read_lines(path: str, ino: int, offset: int, settle_s: float) -> Lines:
    """Complete lines from ``offset`` (see the module invariants). OSError if it is gone."""
    fd, st = open_regular(path)
    try:
        if st.st_ino != ino:
            return Lines(replaced=True)
        size = CHUNK
        while True:
            data = _pread_all(fd, size, offset)
            end = data.rfind(b"\n")
            if end >= 0:
                return Lines(data[: end + 1])
            if len(data) < size:  # the end of the file, without a newline
                if not data:
                    return Lines()
                if offset + len(data) >= st.st_size and (
                    time.time_ns() - st.st_mtime_ns >= settle_s * 1e9
                ):
                    return Lines(data, final=True)
                return Lines(tail_mtime_ns=st.st_mtime_ns)
            if size >= MAX_LINE:
                return Lines(data[: MAX_LINE - 1] + b"\n")
            size *= 2
    finally:
        os.close(fd)


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < length:
        part = os.pread(fd, length - got, offset + got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)
