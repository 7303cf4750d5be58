"""System tests: print every chaos scenario's summary line at the end of the run,
whether or not pytest captures output (``-s`` not needed)."""

from __future__ import annotations

import pytest
from harness import SESSION_LINES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SESSION_LINES:
        terminalreporter.section("chaos scenarios")
        for line in SESSION_LINES:
            terminalreporter.write_line(line)
