"""Reading one file: its new complete lines, parsed in slices, handed over with the
checkpoint that covers them.

Invariants (the package's, for one file):

* Only complete lines are consumed: a file's offset always sits just past a newline,
  except after the last row of a file without a trailing newline, taken once the file
  has settled (``read.read_lines`` says when).
* A file whose inode or first bytes changed, or that shrank, is read again from 0.
* A turn ends after ``budget`` bytes or about ``TURN_S`` of reading, so that no file
  starves the others; rows are parsed in slices of ``SLICE_ROWS`` that yield between.
* A bad row becomes a ``Quarantine`` naming the file, the line and the reason.
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from edge.components import Emit
from edge.model import CmmReading, Quarantine, Record, SampleBatch
from edge.runtime import progress
from edge.sources.file import checkpoint, read, rows
from edge.sources.file.checkpoint import FileMark
from edge.sources.file.config import FileSourceConfig
from edge.sources.file.csv_parse import (
    CmmParser,
    ParseResult,
    RowError,
    SampleRow,
    SamplesParser,
)
from edge.sources.file.rowset import RowSet
from edge.sources.metrics import QuarantineLog, SourceMetrics

log = structlog.get_logger("edge.sources.file")

SLICE_ROWS = 250
TURN_S = 0.5  # a file gives way after this much reading too (1-byte lines parse slowly)


class Cursor:
    """Reading state of one file (its mark, its parser, the rows already seen)."""

    def __init__(self, mark: FileMark, parser: CmmParser | SamplesParser) -> None:
        self.mark = mark
        self.parser = parser
        self.seen = RowSet()
        self.head = b""  # the file's first bytes, when read from offset 0

    def prime(self, consumed: bytes) -> bool:
        """After a restart: check the fingerprint, re-read the header and the rows seen."""
        mark = self.mark
        if len(consumed) != mark.offset:
            return False
        if checkpoint.fingerprint(consumed[: mark.head_len]) != (mark.head, mark.head_len):
            return False
        lines = consumed.split(b"\n")[:-1]
        if lines:
            self.parser.set_header(lines[0])
            self.seen.update(line.rstrip(b"\r") for line in lines[1:] if line.strip())
        return True


class FileReading(abc.ABC):
    """The file source's reading of one file at a time (``FileSource`` drives it)."""

    name: str
    cfg: FileSourceConfig
    tz: dt.tzinfo | None
    metrics: SourceMetrics
    qlog: QuarantineLog
    tag_ids: npt.NDArray[np.int32]
    marks: dict[str, FileMark]
    cursors: dict[str, Cursor]
    _tails: dict[str, int]  # unterminated last row waiting: file mtime (ns)

    @abc.abstractmethod
    async def _refuse(self, path: Path, ino: int, why: str, emit: Emit) -> None:
        """Report a name that is not a regular file."""

    @abc.abstractmethod
    async def _commit(self, emit: Emit, batch: SampleBatch | None,
                      records: Sequence[Record]) -> None:
        """Hand over the rows with the checkpoint that covers them."""

    def _parser(self, file: str) -> CmmParser | SamplesParser:
        return rows.parser(self.cfg, self.tz, file)

    async def _cursor(self, path: Path, emit: Emit) -> Cursor | None:
        key = str(path)
        try:
            st = read.check(key)
        except read.Refused as exc:
            await self._refuse(path, exc.ino, exc.reason, emit)
            return None
        except OSError:
            return None
        cur = self.cursors.get(key)
        mark = cur.mark if cur is not None else self.marks.get(key)
        if mark is not None and (mark.ino, mark.dev) == (st.st_ino, st.st_dev) and (
            st.st_size >= mark.offset
        ):
            if cur is not None:
                return cur
            if st.st_size == mark.offset:
                return None  # nothing new: its reading state is not rebuilt for nothing
            cur = Cursor(mark, self._parser(path.name))
            try:
                consumed = await progress.blocking(
                    f"read {key}", read.read_prefix, key, mark.ino, mark.offset)
            except read.Refused as exc:
                await self._refuse(path, exc.ino, exc.reason, emit)
                return None
            except OSError:
                return None  # gone meanwhile; the next scan forgets it
            if consumed is not None and cur.prime(consumed):
                self.cursors[key] = cur
                return cur
        if mark is not None:
            log.warning("file replaced or truncated, reading it from the start",
                        source=self.name, file=key, offset=mark.offset)
        cur = Cursor(FileMark(st.st_dev, st.st_ino, 0, 0, "", 0), self._parser(path.name))
        self.cursors[key] = cur
        self.marks[key] = cur.mark
        return cur

    async def consume(self, path: Path, emit: Emit, budget: int = 1 << 62) -> tuple[int, bool]:
        """Read and emit the complete new lines of ``path``, about ``budget`` bytes at
        most; (bytes read, whether more may be waiting)."""
        key, used = str(path), 0
        self._tails.pop(key, None)  # set again below while an unterminated row waits
        cur = await self._cursor(path, emit)
        if cur is None:
            return 0, False
        turn_ends = time.monotonic() + TURN_S
        while used < budget and time.monotonic() < turn_ends:
            try:
                got = await progress.blocking(
                    f"read {key}", read.read_lines, key, cur.mark.ino, cur.mark.offset,
                    self.cfg.settle_s)
            except read.Refused as exc:
                await self._refuse(path, exc.ino, exc.reason, emit)
                return used, False
            except OSError:
                return used, False  # deleted mid-read: what was read is kept
            if got.tail_mtime_ns:
                self._tails[key] = got.tail_mtime_ns
            if not got.data:
                return used, got.replaced
            if got.final:
                log.info("last row without a newline taken, the file has settled",
                         source=self.name, file=key, settle_s=self.cfg.settle_s)
            await self._process(path, cur, got.data, emit, final=got.final)
            used += len(got.data)
        return used, True

    async def _process(self, path: Path, cur: Cursor, data: bytes, emit: Emit, *,
                       final: bool = False) -> None:
        """Emit ``data``'s lines; with ``final`` its last line has no newline."""
        lines = data.split(b"\n")
        if not final:
            lines.pop()
        mark = cur.mark
        if mark.offset == 0:
            header = lines.pop(0)
            problem = cur.parser.set_header(header)
            consumed = len(header) + (0 if final and not lines else 1)
            cur.head = data[: checkpoint.FINGERPRINT_BYTES]
            mark.line = 1
            if problem:
                await self._emit(path, cur, emit, [], [RowError(1, "bad_header", problem,
                                 header.decode("utf-8", "replace")[:200])], consumed)
            else:
                mark.offset += consumed
        start = 0
        while start < len(lines):
            chunk = lines[start : start + self.cfg.batch_rows]
            numbered = [(mark.line + 1 + i, line) for i, line in enumerate(chunk)]
            result: ParseResult[CmmReading] | ParseResult[SampleRow] = ParseResult()
            for s in range(0, len(numbered), SLICE_ROWS):
                part = cur.parser.parse(numbered[s : s + SLICE_ROWS], cur.seen)
                result.rows.extend(part.rows)  # type: ignore[arg-type]
                result.errors.extend(part.errors)
                await asyncio.sleep(0)
            nbytes = sum(len(line) for line in chunk) + len(chunk)
            if final and start + len(chunk) == len(lines):
                nbytes -= 1  # the last line has no newline
            await self._emit(path, cur, emit, result.rows, result.errors, nbytes)
            mark.line += len(chunk)
            start += len(chunk)

    async def _emit(
        self, path: Path, cur: Cursor, emit: Emit,
        parsed: Sequence[CmmReading] | Sequence[SampleRow], errors: Sequence[RowError],
        nbytes: int,
    ) -> None:
        now = time.time_ns()
        records: list[Record] = []
        batch: SampleBatch | None = None
        if parsed:
            if self.cfg.mode == "cmm":
                readings: Sequence[CmmReading] = parsed  # type: ignore[assignment]
                batch = rows.cmm_batch(self.tag_ids, readings)
                records.extend(readings)
            else:
                batch = rows.samples_batch(self.tag_ids, parsed)  # type: ignore[arg-type]
        for e in errors:
            records.append(Quarantine(
                now, self.name, e.reason, where=f"{path.name}:{e.line}", payload=e.text,
            ))
        mark = cur.mark
        mark.offset += nbytes
        if mark.head_len < min(mark.offset, len(cur.head)):
            mark.head, mark.head_len = checkpoint.fingerprint(cur.head[: mark.offset])
        self.marks[str(path)] = cur.mark
        if batch is None and not records:
            return  # blank lines only: the next commit carries the offset
        # Counted before the hand-off: a cancel while the checkpoint is saved (after emit
        # returned) must not leave rows delivered but uncounted.
        self.metrics.received((len(batch) if batch is not None else 0) + len(records)
                              - len(errors))
        if parsed:
            self.metrics.sampled(self.cfg.device_name)
        await self._commit(emit, batch, records)
        if errors:
            kinds: dict[str, int] = {}
            for e in errors:
                kinds[e.kind] = kinds.get(e.kind, 0) + 1
            for kind, n in kinds.items():
                self.metrics.rejected(kind, n)
                first = next(e for e in errors if e.kind == kind)
                self.qlog.note("rows quarantined", kind, n, file=str(path),
                               first_line=first.line, first_reason=first.reason)
