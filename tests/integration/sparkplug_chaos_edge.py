"""The edge node of the Sparkplug chaos test as its own process (so it can be killed -9):
journal, delivery loop and sink as the daemon runs them, fed one value a tick.

    python sparkplug_chaos_edge.py PORT STATE_DIR

Feeds tag 0 (etch1/chamber_temp) with 0, 1, 2, ... every 10 ms, continuing after the last
value of an earlier run. A value is appended to STATE_DIR/committed.log once its journal
commit returned: what the gateway has taken responsibility for. SIGTERM stops it cleanly
(NDEATH, then DISCONNECT).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).parent)]

from test_sparkplug_sink import make_sink  # noqa: E402

from edge.journal import Journal, JournalWriter  # noqa: E402
from edge.model import SampleBatch  # noqa: E402
from edge.runtime.links import Backoff  # noqa: E402
from edge.runtime.metrics import Metrics  # noqa: E402
from edge.sinks.delivery import deliver  # noqa: E402


async def main(port: int, state: Path) -> None:
    log = state / "committed.log"
    done = log.read_text().split() if log.exists() else []
    n = int(float(done[-1])) + 1 if done else 0
    metrics = Metrics()
    writer = JournalWriter(Journal(state / "journal.db", sinks=["sp"], metrics=metrics),
                           commit_interval_s=0.002, metrics=metrics)
    sink = make_sink(port, state, primary_host_id="scada", ack_timeout_s=3.0,
                     keepalive_s=5)
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(sink.run()),
             asyncio.create_task(deliver(writer, sink, metrics=metrics, idle_poll_s=0.01,
                                         backoff=Backoff(initial_s=0.05, max_s=0.5)))]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with log.open("a") as out:
        while not stop.is_set():
            batch = SampleBatch([0], [time.time_ns()], [float(n)])
            fut = writer.submit(batch)  # as the flow does: submit, publish live, then wait
            sink.publish(batch, [])
            await fut
            out.write(f"{n}\n")
            out.flush()
            n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.01)
    for t in tasks[1:][::-1]:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    await writer.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
