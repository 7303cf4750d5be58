"""The daemon's exit path: a worker thread stuck for good cannot keep the process alive."""

from __future__ import annotations

import subprocess
import sys
import time

SCRIPT = """
import asyncio, threading
from edge.runtime import progress, runner

never = threading.Event()

async def main() -> int:
    read = asyncio.ensure_future(progress.blocking("open /drop/pipe.csv", never.wait))
    await asyncio.sleep(0.2)
    read.cancel()  # what stopping the source does: the thread stays blocked
    return {code}

raise SystemExit(runner.run(main(), grace_s=0.5))
"""


def test_exit_does_not_wait_for_a_thread_stuck_in_a_call() -> None:
    """A thread blocked for good in a worker call: the process still exits within the
    grace time, with the main coroutine's status, naming the stuck call."""
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(code=3)], capture_output=True,
                          text=True, timeout=30, check=False)
    took = time.monotonic() - t0
    out = done.stdout + done.stderr
    assert done.returncode == 3, out
    assert took < 10.0, f"exit took {took:.1f} s"
    assert "stuck in a call" in out and "open /drop/pipe.csv" in out, out


def test_a_clean_exit_returns_normally() -> None:
    """Without stuck threads the runner returns the status like asyncio.run, silently."""
    script = SCRIPT.replace("never.wait", "lambda: None").format(code=0)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0 and "stuck" not in done.stdout + done.stderr
