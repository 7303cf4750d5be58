"""The latest value per tag, for live sinks (OPC-UA server, web page): by timestamp.

Invariant: a live view's value of a tag only moves forward in time. Late data (a file or
a buffered MQTT burst from hours ago, out of order) is delivered with its own timestamps
by the durable sinks, but never becomes the "current" value on a SCADA screen: within a
batch the newest sample of a tag wins (the last one among equal timestamps), and it
replaces the shown value only when it is not older than it, or when the shown one is
from the future (a device clock that jumped ahead must not freeze the view until the
real time catches up with it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.model import SampleBatch


def newest(batch: SampleBatch, shown_ts: npt.NDArray[np.int64], now_ns: int
           ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.intp]]:
    """(tag ids, their rows in ``batch``) to show: per tag id inside ``shown_ts``, the
    row of its newest sample, where that is not older than ``shown_ts[id]`` (or the
    shown one is later than ``now_ns``)."""
    n = len(batch)
    order = np.lexsort((np.arange(n), batch.ts_ns, batch.tag_id))
    tags = batch.tag_id[order]
    last = np.flatnonzero(np.append(tags[1:] != tags[:-1], True)) if n else order[:0]
    ids, rows = tags[last], order[last]
    keep = (ids >= 0) & (ids < shown_ts.shape[0])
    if not keep.all():
        ids, rows = ids[keep], rows[keep]
    shown = shown_ts[ids]
    fresh = (batch.ts_ns[rows] >= shown) | (shown > now_ns)
    if not fresh.all():
        ids, rows = ids[fresh], rows[fresh]
    return ids, rows
