"""Serial lines without hardware: socat pty pairs and a noisy line between two of them.

`pty_pair(tmp, "a")` starts `socat` with two linked ptys at `tmp/a0` and `tmp/a1` (the
`/dev/pts/N` names change, the links do not) and stops exactly that process. Baud rate
and parity are ignored on a pty and there is no line timing.

`NoisyLine(end1, end2)` copies bytes both ways between two pty ends (the far ends of two
pairs; the master on end1's pair, the slave on end2's), and garbles the chunks it carries
(one bit flipped, or the tail cut) while `noise` is "answers" (slave to master only: the
master sees CRC errors and short frames) or "both" (requests too: the slave sees bad CRCs
and stays silent, the master sees timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import termios
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def pty_pair(tmp: Path, name: str) -> Iterator[tuple[str, str]]:
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat is not installed: apt-get install -y socat")
    a, b = tmp / f"{name}0", tmp / f"{name}1"
    log = (tmp / f"socat-{name}.log").open("wb")
    proc = subprocess.Popen(
        [socat, "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (a.exists() and b.exists()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"socat did not make {a} and {b}")
            time.sleep(0.02)
        yield str(a), str(b)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _open_raw(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd, termios.TCSANOW)
    return fd


class NoisyLine:
    """Copies bytes between two pty ends; garbles them while ``noise`` is set."""

    def __init__(self, end1: str, end2: str, seed: int = 1) -> None:
        self.paths = (end1, end2)
        self.noise = ""  # "", "answers" or "both"
        self.garbled = 0
        self._rng = random.Random(seed)
        self._fds: tuple[int, int] = (-1, -1)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._fds = (_open_raw(self.paths[0]), _open_raw(self.paths[1]))
        a, b = self._fds
        loop.add_reader(a, self._copy, a, b)
        loop.add_reader(b, self._copy, b, a)

    def _copy(self, src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except BlockingIOError:
            return
        if data and (self.noise == "both" or (self.noise == "answers" and src == self._fds[1])):
            self.garbled += 1
            buf = bytearray(data)
            if self._rng.random() < 0.5:
                i = self._rng.randrange(len(buf))
                buf[i] ^= 1 << self._rng.randrange(8)  # a flipped bit: CRC error
            else:
                del buf[self._rng.randrange(len(buf)):]  # a lost tail: short frame
            data = bytes(buf)
        if data:
            os.write(dst, data)

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._fds:
            if fd >= 0:
                loop.remove_reader(fd)
                os.close(fd)
        self._fds = (-1, -1)
