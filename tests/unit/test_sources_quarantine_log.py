"""Unit tests of quarantine log aggregation and of log calls filtered out by level."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from edge.components import BuildContext
from edge.config import loads
from edge.model import Quarantine, TagRegistry
from edge.runtime import logging as edge_logging
from edge.runtime.metrics import Metrics
from edge.sources.metrics import QuarantineLog
from edge.sources.mqtt import MqttSourceConfig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeated_reason_is_one_line_then_one_summary_per_interval() -> None:
    """1,000 quarantines of one reason in 10 s log the first and one count line."""
    clock = Clock()
    with capture_logs() as logs:
        qlog = QuarantineLog(structlog.get_logger("t"), "motors", 10.0, clock)
        for i in range(1000):
            clock.now = i * 0.009
            qlog.note("mqtt message quarantined", "bad_json", topic="a", reason=f"r{i}")
        clock.now = 10.5
        qlog.flush(clock.now)
    assert [(e["count"], e.get("repeated", False)) for e in logs] == [(1, False), (999, True)]
    assert logs[0]["reason"] == "r0" and logs[1]["reason"] == "r999"
    assert all(e["source"] == "motors" for e in logs)


def test_each_reason_is_logged_at_once_and_quiet_reason_logs_again() -> None:
    """A new reason logs immediately; after a quiet interval the same reason does too."""
    clock = Clock()
    with capture_logs() as logs:
        qlog = QuarantineLog(structlog.get_logger("t"), "s", 10.0, clock)
        qlog.note("q", "bad_json")
        qlog.note("q", "missing_field")
        clock.now = 25.0
        qlog.note("q", "bad_json")
        clock.now = 40.0
        qlog.note("q", "bad_json")
    assert [e.get("repeated", False) for e in logs] == [False, False, False, False]


CONFIG = """
[[sources]]
type = "mqtt"
name = "motors"
[[sources.subscriptions]]
topic = "m/+"
device = "m"
fields = [{ path = "current_a", tag = "current_a" }]
"""


def test_mqtt_source_logs_a_flood_of_bad_messages_as_one_line(tmp_path: Path) -> None:
    """2,000 bad payloads give 2,000 Quarantine records but one log line."""
    cfg = loads(CONFIG).sources[0]
    assert isinstance(cfg, MqttSourceConfig)
    tags = TagRegistry()
    cfg.declare_tags(tags)
    src = cfg.build(BuildContext("gw", tags, Metrics(), tmp_path, lambda n: ""))
    with capture_logs() as logs:
        got = [src.handle("m/1", b"not json", i) for i in range(2000)]
    assert all(isinstance(g, Quarantine) and g.reason.startswith("not JSON") for g in got)
    assert len(logs) == 1 and logs[0]["count"] == 1


def test_call_below_the_level_runs_no_processor() -> None:
    """With level warning, a debug call never reaches the processors (costs nothing)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    calls: list[str] = []

    def count(_logger: object, method: str, event: structlog.typing.EventDict
              ) -> structlog.typing.EventDict:
        calls.append(method)
        return event

    try:
        edge_logging.setup("warning", "json", stream=io.StringIO())
        structlog.configure(processors=[count, *structlog.get_config()["processors"]])
        log = structlog.get_logger("edge.test")
        log.debug("filtered", x=1)
        log.info("filtered too")
        log.warning("kept")
        assert calls == ["warning"]
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
