"""Reads of the history store: raw points of one tag and records, in pages, with gaps.

Invariants (``edge.history.store`` says what is stored):

* The order of points is total and stable: ``(ts_ns, chunk id, index in chunk)``, gap
  markers as ``(start, 0, gap number)``; a page resumes exactly after a ``Position``.
* A page reads only the chunks it needs: in read order from the position, stopping once
  no further chunk can hold one of its points.
* A gap is a stretch of the requested time no recording span covers (the current span
  is open up to now; the future is no gap), or that the limits evicted.
"""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import numpy.typing as npt

from edge.history.types import Gap, Position, RawRead, RecordRead, decode_chunk
from edge.model import Record, decode_records


class HistoryReads:
    """The read half of ``HistoryStore`` (same connection, same thread)."""

    _db: sqlite3.Connection
    _tags: dict[str, int]
    _span: int

    def read_raw(self, key: str, start_ns: int, end_ns: int, *, limit: int,
                 reverse: bool = False, after: Position | None = None,
                 now_ns: int | None = None) -> RawRead:
        """Points of tag ``key`` between ``start_ns`` and ``end_ns`` (inclusive, either
        order), oldest first (newest
        first with ``reverse``), at most ``limit`` of them (gap markers included), starting
        after ``after``. ``more`` is where the next read resumes, None at the end."""
        tag = self._tags.get(key)
        start_ns, end_ns = min(start_ns, end_ns), max(start_ns, end_ns)
        gaps = self._gaps("samples_from", start_ns, end_ns, now_ns)
        parts_ts: list[npt.NDArray[np.int64]] = []
        parts_v: list[npt.NDArray[np.float64]] = []
        parts_q: list[npt.NDArray[np.uint8]] = []
        parts_row: list[npt.NDArray[np.int64]] = []
        parts_idx: list[npt.NDArray[np.int64]] = []
        if tag is not None:
            # Only the chunks a page needs: walk them in read order from where the last
            # page stopped, and stop once no further chunk can hold one of the page's
            # limit + 1 points (``bound``: the (limit + 1)-th point's time so far).
            lo, hi = start_ns, end_ns
            if after is not None:
                lo, hi = (lo, min(hi, after.ts_ns)) if reverse else (max(lo, after.ts_ns), hi)
            cursor = self._db.execute(
                "SELECT id, n, t_first, t_last, payload FROM chunks INDEXED BY "
                "chunks_tag_last WHERE tag = ? AND t_last >= ? AND t_first <= ? "
                "ORDER BY t_last DESC", (tag, lo, hi)) if reverse else self._db.execute(
                "SELECT id, n, t_first, t_last, payload FROM chunks INDEXED BY "
                "chunks_tag_first WHERE tag = ? AND t_first <= ? AND t_last >= ? "
                "ORDER BY t_first", (tag, hi, lo))
            beyond = 0  # points strictly past ``after``: certainly in a page
            bound: int | None = None
            for row, n, t_first, t_last, payload in cursor:
                if bound is not None and (t_last < bound if reverse else t_first > bound):
                    break
                ts, v, q = decode_chunk(payload, n)
                sel = (ts >= lo) & (ts <= hi)
                if not sel.all():
                    idx = np.flatnonzero(sel)
                    ts, v, q = ts[idx], v[idx], q[idx]
                else:
                    idx = np.arange(n)
                parts_ts.append(ts)
                parts_v.append(v)
                parts_q.append(q)
                parts_row.append(np.full(ts.shape[0], row, np.int64))
                parts_idx.append(idx.astype(np.int64))
                edge = hi if reverse else lo
                beyond += int(np.count_nonzero(ts != edge)) if after is not None else ts.shape[0]
                if beyond > limit:
                    every = np.concatenate(parts_ts)
                    if after is not None:  # the strictly-past points: a conservative bound
                        every = every[every != edge]
                    bound = int(-np.partition(-every, limit)[limit] if reverse
                                else np.partition(every, limit)[limit])
        # Gap markers take part in the order as (start, row 0, gap number).
        g_ts = np.array([max(g.start_ns, start_ns) for g in gaps], np.int64)
        ts = np.concatenate([*parts_ts, g_ts]) if parts_ts else g_ts
        value = np.concatenate([*parts_v, np.full(len(gaps), np.nan)]) if parts_v else \
            np.full(len(gaps), np.nan)
        quality = np.concatenate([*parts_q, np.zeros(len(gaps), np.uint8)]) if parts_q else \
            np.zeros(len(gaps), np.uint8)
        rows = np.concatenate([*parts_row, np.zeros(len(gaps), np.int64)]) if parts_row else \
            np.zeros(len(gaps), np.int64)
        index = np.concatenate([*parts_idx, np.arange(len(gaps), dtype=np.int64)]) \
            if parts_idx else np.arange(len(gaps), dtype=np.int64)
        order = np.lexsort((index, rows, ts))
        if reverse:
            order = order[::-1]
        ts, value, quality, rows, index = (ts[order], value[order], quality[order],
                                           rows[order], index[order])
        if after is not None:
            keep = _after(ts, rows, index, after, reverse)
            ts, value, quality, rows, index = (ts[keep], value[keep], quality[keep],
                                               rows[keep], index[keep])
        more = None
        if ts.shape[0] > limit:
            last = limit - 1
            more = Position(int(ts[last]), int(rows[last]), int(index[last]))
            ts, value, quality, rows, index = (ts[:limit], value[:limit], quality[:limit],
                                               rows[:limit], index[:limit])
        marks = np.flatnonzero(rows == 0).tolist()
        out_gaps = [(k - j, gaps[int(index[k])]) for j, k in enumerate(marks)]
        data = rows != 0
        return RawRead(ts[data], value[data], quality[data], out_gaps, more)

    def read_records(self, start_ns: int, end_ns: int, *, limit: int, reverse: bool = False,
                     after: Position | None = None, now_ns: int | None = None) -> RecordRead:
        """Records with ``start_ns <= ts <= end_ns`` in order, at most ``limit`` entries
        (gaps included), after ``after``."""
        start_ns, end_ns = min(start_ns, end_ns), max(start_ns, end_ns)
        gaps = self._gaps("records_from", start_ns, end_ns, now_ns)
        items: list[tuple[tuple[int, int, int], Record | Gap]] = [
            ((max(g.start_ns, start_ns), 0, i), g) for i, g in enumerate(gaps)]
        cmp = "<" if reverse else ">"
        q = "SELECT id, ts_ns, payload FROM records WHERE ts_ns >= ? AND ts_ns <= ?"
        args: list[int] = [start_ns, end_ns]
        if after is not None:
            q += f" AND (ts_ns, id) {cmp}= (?, ?)"
            args += [after.ts_ns, after.row]
        q += f" ORDER BY ts_ns {'DESC' if reverse else ''}, id {'DESC' if reverse else ''} " \
             "LIMIT ?"
        args.append(limit + 1)
        for row, ts, payload in self._db.execute(q, args):
            items.append(((ts, row, 0), decode_records(payload)[0]))
        items.sort(key=lambda it: it[0], reverse=reverse)
        if after is not None:
            pos = (after.ts_ns, after.row, after.index)
            items = [it for it in items if (it[0] < pos if reverse else it[0] > pos)]
        more = None
        if len(items) > limit:
            k = items[limit - 1][0]
            more = Position(*k)
            items = items[:limit]
        records: list[tuple[int, Record]] = []
        out_gaps: list[tuple[int, Gap]] = []
        for key, item in items:
            if isinstance(item, Gap):
                out_gaps.append((len(records), item))
            else:
                records.append((key[1], item))
        return RecordRead(records, out_gaps, more)

    def _gaps(self, from_key: str, start_ns: int, end_ns: int, now_ns: int | None
              ) -> list[Gap]:
        """Where ``[start_ns, end_ns]`` is not covered by a recording span (or was
        evicted). The current span is open: it covers up to now."""
        lo, hi = min(start_ns, end_ns), max(start_ns, end_ns)
        now = time.time_ns() if now_ns is None else now_ns
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (from_key,)).fetchone()
        covered_from = int(row[0]) if row else 0
        spans = self._db.execute(
            "SELECT t_start, CASE WHEN id = ? THEN MAX(t_end, ?) ELSE t_end END FROM spans "
            "ORDER BY t_start", (self._span, now)).fetchall()
        top = min(hi, now)  # the future is not a gap: nothing happened there yet
        gaps: list[Gap] = []
        # A read with no lower bound (0) starts where the kept history starts.
        cursor = lo if lo > 0 else max(covered_from, spans[0][0] if spans else 0)
        for span_start, e in spans:
            s = max(span_start, covered_from)
            if e < s or e <= cursor:
                continue
            if s >= top:
                break
            if s > cursor:
                gaps.append(Gap(cursor, s))
            cursor = e
            if cursor >= top:
                break
        if cursor < top:
            gaps.append(Gap(cursor, top))
        return [g for g in gaps if g.end_ns > g.start_ns]


def _after(ts: npt.NDArray[np.int64], rows: npt.NDArray[np.int64],
           index: npt.NDArray[np.int64], pos: Position, reverse: bool) -> npt.NDArray[np.bool_]:
    """Which points come after ``pos`` in read order."""
    gt = (ts > pos.ts_ns) | ((ts == pos.ts_ns) & (
        (rows > pos.row) | ((rows == pos.row) & (index > pos.index))))
    eq = (ts == pos.ts_ns) & (rows == pos.row) & (index == pos.index)
    keep: npt.NDArray[np.bool_] = ~(gt | eq) if reverse else gt
    return keep
