"""structlog set-up: JSON lines when stdout is not a terminal, readable text otherwise.

Library loggers (asyncua, pymodbus, aiomqtt) go through the stdlib bridge so that every
line has the same shape. Their chatter is capped at WARNING unless we debug.

Every rendered line, ours and the libraries', passes through ``edge.runtime.redact``
last: no configured secret and no Authorization credential reaches the log.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

from edge.runtime.redact import redact

_NOISY = ("asyncua", "pymodbus", "aiomqtt", "amqtt", "httpx", "httpcore", "watchfiles",
          "numba", "transitions")


def setup(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
) -> None:
    out = stream or sys.stderr
    json_out = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_out
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # A call below the level returns at once: no processor runs, nothing is formatted.
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper())),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json_out else _identity,
            renderer,
            redact_line,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    lvl = getattr(logging, level.upper())
    root.setLevel(lvl)
    for name in _NOISY:
        logging.getLogger(name).setLevel(lvl if lvl <= logging.DEBUG else logging.WARNING)


def _identity(
    logger: object, name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    return event


def redact_line(logger: object, name: str, line: Any) -> Any:
    """The last processor: the rendered line with every secret replaced."""
    return redact(line) if isinstance(line, str) else line
