"""systemd notify: never blocks the daemon, even when nobody reads the socket."""

from __future__ import annotations

import socket
from pathlib import Path

from edge.runtime.systemd import Notifier


def test_notify_never_blocks_when_the_reader_stalls(tmp_path: Path) -> None:
    """With a receiver that never reads, notify drops messages instead of blocking."""
    path = tmp_path / "notify.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(path))
    try:
        n = Notifier({"NOTIFY_SOCKET": str(path)})
        results = [n.watchdog() for _ in range(5000)]  # far more than the queue holds
        assert results[0] is True and results[-1] is False
        n.close()
    finally:
        rx.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    """Outside systemd (no NOTIFY_SOCKET) the calls do nothing and say so."""
    n = Notifier({})
    assert not n.enabled and n.ready() is False and n.stopping() is False
    assert n.watchdog_interval_s is None


def test_watchdog_interval_is_half_the_usec() -> None:
    """WATCHDOG_USEC sets the ping interval to half of it, as sd_notify advises."""
    n = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"})
    assert n.watchdog_interval_s == 15.0
