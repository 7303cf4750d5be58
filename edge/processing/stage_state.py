"""A stage's state kept across restarts: a journal checkpoint committed with the data it
summarises.

Invariants:

* The runtime (``edge.flow``) asks every checkpointed stage for a snapshot each time it
  hands data to the journal writer, and submits the snapshot in the same synchronous step
  as that data: both land in one transaction (the writer commits everything pending at
  once). No await separates a stage's ``process`` from that hand-off, so a snapshot never
  covers records that are not committed with it or before it.
* A stage returns a snapshot when ``SaveClock.due``: at once when it made or consumed a
  record since the last one (a report, a step record, a trip, a verdict: losing it in a
  crash would lose or repeat a record), else every ``CHECKPOINT_S`` of wall time. A crash
  therefore loses at most ``CHECKPOINT_S`` of samples' effect on the state, plus the time
  the gateway was down; each stage's docstring says how that time is counted.
* A snapshot stays small (an SD card takes every byte): per-minute sums older than the
  rolling window are summed into one minute of the open shift (``compact``), exact for
  the shift's report; a minute a stop still going has time in is kept as it is.
* A snapshot is versioned msgpack. One that does not decode (a torn disk, another
  version) is logged and the stage starts empty: the data is in the journal either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from edge.processing.calendar import Shift

CHECKPOINT_S = 5.0
VERSION = 1

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict[str, Any])


class SaveClock:
    """When a stage's snapshot is due (see the module docstring)."""

    def __init__(self, interval_s: float = CHECKPOINT_S) -> None:
        self.interval_ns = round(interval_s * 1e9)
        self.last_ns = -(2**62)
        self.changed = False  # samples taken since the last snapshot
        self.must = False  # a record made or consumed since the last snapshot

    def due(self, mono_ns: int) -> bool:
        """Whether to snapshot now; if so, the clock restarts."""
        if self.must or (self.changed and mono_ns - self.last_ns >= self.interval_ns):
            self.last_ns, self.must, self.changed = mono_ns, False, False
            return True
        return False


def dumps(state: dict[str, Any]) -> bytes:
    return _encoder.encode({"v": VERSION, **state})


def loads(data: bytes, what: str) -> dict[str, Any]:
    """The state in ``data``; ValueError naming ``what`` when it cannot be used."""
    try:
        state = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{what}: checkpoint unreadable: {exc}") from None
    if state.get("v") != VERSION:
        raise ValueError(f"{what}: checkpoint version {state.get('v')!r}, expected {VERSION}")
    return state


def shift_dump(sh: Shift | None) -> list[Any] | None:
    return None if sh is None else [sh.name, sh.start_min, sh.end_min]


def shift_load(d: list[Any] | None) -> Shift | None:
    return None if d is None else Shift(str(d[0]), int(d[1]), int(d[2]))


def compact(minutes: dict[int, npt.NDArray[np.float64]], before: int,
            counted: Callable[[int], bool], bucket: int | None,
            exact: Iterable[int] = ()) -> dict[int, npt.NDArray[np.float64]]:
    """Per-minute sums made small for a checkpoint: minutes from ``before`` on (a rolling
    window reaches back to there) and those in ``exact`` as they are; the older ones that
    ``counted`` accepts (the open shift's) summed into the one minute ``bucket``, the rest
    left out. Exact for whatever sums them over a period holding ``bucket`` and them."""
    keep = set(exact)
    out: dict[int, npt.NDArray[np.float64]] = {}
    for k, row in minutes.items():
        if k >= before or k in keep:
            out[k] = out[k] + row if k in out else row.copy()
        elif bucket is not None and counted(k):
            out[bucket] = out[bucket] + row if bucket in out else row.copy()
    return out


def rows(minutes: dict[int, npt.NDArray[np.float64]], width: int) -> dict[str, Any]:
    keys = sorted(minutes)
    table = np.stack([minutes[k] for k in keys]) if keys else np.zeros((0, width))
    return {"minutes": keys, "rows": table.astype(np.float64).tobytes()}


def unrows(d: dict[str, Any], width: int) -> dict[int, npt.NDArray[np.float64]]:
    table = np.frombuffer(d["rows"], np.float64).reshape(-1, width)
    return {int(k): table[i].copy() for i, k in enumerate(d["minutes"])}
