"""A peer that echoes our request (credentials included) in its error bodies: the MES
token never reaches the log, the dead letters or the sink's last error."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from structlog.testing import capture_logs

from edge.config import secret_reader
from edge.journal import Journal, JournalWriter
from edge.model import HealthAlert
from edge.runtime import redact
from edge.runtime.metrics import Metrics
from edge.sinks.delivery import Backoff, SinkState, deliver
from edge.sinks.mes import MesSink, MesSinkConfig
from hw_sim.httpmini import HttpServer, Request, Response

TOKEN = "mes-Tok3n-that-must-stay-secret"


async def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(0.02)


async def test_echoed_token_is_redacted_everywhere(tmp_path: Path) -> None:
    """400 and 503 answers that echo the request headers and the token in free text:
    the dead letter's reason and body, the sink's last_error and every log event hold
    no token, while the peer's other words are kept."""
    status = [400]

    async def echo(req: Request) -> Response:
        return Response(status[0], {"error": "refused", "request_headers": req.headers,
                                    "note": f"you sent token={TOKEN} in plain text"})

    server = HttpServer(echo)
    await server.start()
    token = secret_reader({"MES_TOKEN": TOKEN})("MES_TOKEN")  # remembered for redaction
    metrics = Metrics()
    journal = Journal(tmp_path / "journal.db", sinks=["mes"], metrics=metrics)
    writer = JournalWriter(journal, commit_interval_s=0.001, metrics=metrics)
    writer_task = asyncio.create_task(writer.run())
    cfg = MesSinkConfig(name="mes", url=f"http://127.0.0.1:{server.port}", timeout_s=2.0,
                        token_secret="MES_TOKEN")
    sink = MesSink(cfg, gateway_id="gw", token=token, metrics=metrics)
    state = SinkState("mes")
    alert = HealthAlert(ts_ns=1, motor="stf/m1", health=0.4, ttf_s=60.0, reason="low")
    try:
        with capture_logs() as logs:
            await writer.append([alert])
            task = asyncio.create_task(deliver(
                writer, sink, state=state, metrics=metrics, idle_poll_s=0.01,
                backoff=Backoff(initial_s=0.02, max_s=0.05)))
            try:
                await wait_for(lambda: bool(journal.dead_letters("mes")), 10, "a dead letter")
                status[0] = 503
                await writer.append([alert])
                await wait_for(lambda: state.attempt >= 2, 10, "two failed deliveries")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        (dl,) = journal.dead_letters("mes")
    finally:
        await sink.close()
        await writer.close()
        writer_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer_task
        await server.close()
        redact.SECRETS.forget_all()
    assert "400" in dl.reason and "refused" in dl.body and "request_headers" in dl.body
    assert "503" in state.last_error and "refused" in state.last_error
    assert any(ev.get("body") for ev in logs), logs  # the peer's answer was logged
    for text in (dl.reason, dl.body, state.last_error, repr(logs)):
        assert TOKEN not in text, text
    assert redact.REDACTED in dl.body and redact.REDACTED in state.last_error
