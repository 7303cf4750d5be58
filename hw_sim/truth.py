"""Ground truth of a run, as JSON lines.

One object per line, keys sorted, always with `kind` (what happened), `source`
(which part of the plant) and `t_ns` (simulated time, ns since the epoch). A line
is flushed when written, so a test may read the file while the run goes on; the
file is fsynced on close. The same events are kept in memory (`records`) when
`keep` is true, for in-process tests.

Kinds written by the parts: `run_start`; cmm `part`; etch `excursion_start`,
`excursion_end`, `limit_exceeded`, `limit_cleared`, `stop`, `reset`, `fault`,
`wafer_done` (OEE: lot, wafer, scrap), `wafer_start`, `wafer_end` (lot, wafer,
start_ns, end_ns, stops, limits_exceeded); motors `motor_health`, `motor_energy`,
`micro_stoppage`, `motor_failed`, `command`; mes `fault`;
link `mode`; and `bad_data` from any part (with `defect` naming the kind; the chaos
kinds of `baddata.CHAOS` add `good`, whether a right gateway keeps the value, and
`sent_ts_ns`, the timestamp the data went out with).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import IO, Any


def iso_ns(t_ns: int) -> str:
    """ISO 8601 UTC with milliseconds and zone, e.g. 2026-11-21T10:00:00.123+00:00."""
    stamp = dt.datetime.fromtimestamp(t_ns // 1_000_000_000, dt.UTC)
    stamp = stamp.replace(microsecond=(t_ns % 1_000_000_000) // 1000)
    return stamp.isoformat(timespec="milliseconds")


class TruthLog:
    """Append-only JSON-lines ground-truth writer (in memory only when path is None)."""

    def __init__(self, path: str | Path | None = None, keep: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.keep = keep
        self.records: list[dict[str, Any]] = []
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")

    def emit(self, kind: str, source: str, t_ns: int, **fields: Any) -> None:
        """Record one event."""
        rec: dict[str, Any] = {"kind": kind, "source": source, "t_ns": int(t_ns)}
        rec["t"] = iso_ns(int(t_ns))
        rec.update(fields)
        line = json.dumps(rec, sort_keys=True, allow_nan=False) + "\n"
        with self._lock:  # parts emit from the loop and from writer threads
            if self.keep:
                self.records.append(rec)
            if self._fh is not None:
                self._fh.write(line)
                self._fh.flush()

    def of_kind(self, kind: str, source: str | None = None) -> list[dict[str, Any]]:
        """In-memory events of one kind (and source)."""
        return [
            r
            for r in self.records
            if r["kind"] == kind and (source is None or r["source"] == source)
        ]

    def close(self) -> None:
        """Flush and fsync the file."""
        with self._lock:
            if self._fh is None:
                return
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None


def read_truth(path: str | Path) -> list[dict[str, Any]]:
    """All events of a truth file, in order (a torn last line is ignored)."""
    out: list[dict[str, Any]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out
