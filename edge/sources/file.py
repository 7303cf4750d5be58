"""File-drop source: CSV files in watched folders, per-part drops or growing daily files.

Invariants:

* Only complete lines are consumed: the offset kept per file always sits just past a
  newline, so a half-written row of a growing file is read once it is whole. The one
  exception is the last row of a file without a trailing newline: it is taken once the
  file has not changed for ``settle_s``, never silently left behind.
* The checkpoint (``file_checkpoint``) travels with the rows it covers: in the daemon
  it is committed to the journal in the same transaction as those rows, so after a
  crash, even kill -9, nothing is read twice and nothing is skipped. Without a journal
  (``ctx.checkpoints`` is None) it is saved to a file after ``emit`` returned, which
  can re-read at most one batch after a hard kill.
  A file whose inode or first bytes changed, or that shrank, is read again from 0.
* A bad row never stops the source: it becomes a ``Quarantine`` record naming the file,
  the line and the reason, and is counted in ``edge_source_rejected_total``.
* Only regular files are read (``file_read``). A FIFO, socket, device or directory whose
  name matches the pattern is skipped and reported once, as a ``Quarantine`` record and
  a log line with the reason. Symlinks are never followed: a drop folder receives files,
  and a link could point at a device, at a file outside the folder (whose lines would be
  shipped to the MES as quarantines), or at a file already read under its own name.
* No file can starve the others: a file gives way after ``max_file_read_mb`` or about
  ``TURN_S`` of reading per turn (files with more to read take turns), and one pass
  reads at most ``max_pass_read_mb`` before watch events and rescans are looked at again.
* The event loop is never held for long: reads run in a worker thread (listed by
  ``edge.runtime.progress`` while they run, so a read that hangs shows in ``status``
  and stops the watchdog) and rows are parsed in slices that yield between them.
* A file deleted while it is read ends its reading; the rows already read are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import structlog
import watchfiles

from edge.components import BuildContext, Emit
from edge.config import ConfigStruct
from edge.model import CmmReading, Quarantine, Record, SampleBatch, TagRegistry
from edge.runtime import progress
from edge.sources import file_checkpoint, file_read
from edge.sources.aliases import problems
from edge.sources.csv_parse import (
    CMM_FIELDS,
    CmmParser,
    CmmRow,
    ParseResult,
    RowError,
    SampleRow,
    SamplesParser,
)
from edge.sources.file_checkpoint import FileMark
from edge.sources.metrics import QuarantineLog, SourceMetrics
from edge.sources.rowset import RowSet
from edge.sources.timestamps import EpochUnit, zone

log = structlog.get_logger("edge.sources.file")

SLICE_ROWS = 250
MB = 1 << 20
TURN_S = 0.5  # a file gives way after this much reading too (1-byte lines parse slowly)
CMM_TEMPS = ("air_temp_c", "scale_temp_c", "part_temp_c")


class ValueColumnConfig(ConfigStruct, frozen=True):
    column: str
    tag: str
    aliases: list[str] = msgspec.field(default_factory=list)  # other spellings of the header
    unit: str = ""
    low: float | None = None
    high: float | None = None


class FileSourceConfig(ConfigStruct, frozen=True):
    name: str
    paths: list[str]
    pattern: str = "*.csv"
    ignore: list[str] = msgspec.field(default_factory=lambda: ["*.tmp", ".*"])
    mode: Literal["cmm", "samples"] = "cmm"
    device: str = ""
    spelling: Literal["exact", "loose"] = "exact"  # loose: headers match ignoring case/punctuation
    columns: dict[str, str] = msgspec.field(default_factory=dict)
    timestamp_column: str = "timestamp"
    values: list[ValueColumnConfig] = msgspec.field(default_factory=list)
    timezone: str = ""
    epoch_unit: EpochUnit = "s"
    poll: bool = False
    poll_interval_ms: int = 500
    debounce_ms: int = 300
    rescan_s: float = 10.0
    batch_rows: int = 5000
    settle_s: float = 30.0
    max_file_read_mb: float = 4.0
    max_pass_read_mb: float = 16.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")
        if not self.paths:
            raise ValueError("paths must name at least one folder")
        zone(self.timezone)
        if self.mode == "cmm":
            unknown = set(self.columns) - set(CMM_FIELDS)
            if unknown:
                raise ValueError(
                    f"columns has unknown fields {sorted(unknown)}; known: {', '.join(CMM_FIELDS)}"
                )
            if self.values:
                raise ValueError("values is for mode = 'samples'; use columns in mode 'cmm'")
        else:
            if not self.values:
                raise ValueError("values must list at least one column in mode 'samples'")
            if self.columns:
                raise ValueError("columns is for mode = 'cmm'; use values in mode 'samples'")
            if len({v.column for v in self.values}) != len(self.values):
                raise ValueError("values names a column twice")
            wrong = problems([v.column for v in self.values],
                             {a: v.column for v in self.values for a in v.aliases},
                             loose_match=self.spelling == "loose", what="column")
            twice = sorted({a for v in self.values for a in v.aliases
                            if sum(a in w.aliases for w in self.values) > 1})
            wrong += [f"aliases: '{a}' is listed for two columns" for a in twice]
            if wrong:
                raise ValueError("values: " + "\nvalues: ".join(wrong))
        if self.batch_rows < 1:
            raise ValueError("batch_rows must be >= 1")
        if self.poll_interval_ms < 10 or self.debounce_ms < 0 or self.rescan_s <= 0:
            raise ValueError("poll_interval_ms must be >= 10, debounce_ms >= 0, rescan_s > 0")
        if self.settle_s <= 0:
            raise ValueError("settle_s must be > 0")
        if not 0 < self.max_file_read_mb <= self.max_pass_read_mb:
            raise ValueError("max_file_read_mb must be > 0 and <= max_pass_read_mb")

    @property
    def device_name(self) -> str:
        return self.device or self.name

    def measurement_devices(self) -> frozenset[str] | None:
        """The devices this source gives ``CmmReading``s for."""
        return frozenset({self.device_name}) if self.mode == "cmm" else frozenset()

    def declare_tags(self, tags: TagRegistry) -> None:
        if self.mode == "cmm":
            for t in CMM_TEMPS:
                tags.add(self.device_name, t, unit="degC", description=f"CMM {t}")
        else:
            for v in self.values:
                tags.add(self.device_name, v.tag, unit=v.unit, low=v.low, high=v.high)

    def build(self, ctx: BuildContext) -> FileSource:
        return FileSource(self, ctx)

    def actions(self) -> frozenset[str]:
        """A drop folder takes no commands."""
        return frozenset()


class _Cursor:
    """Reading state of one file (its mark, its parser, the rows already seen)."""

    def __init__(self, mark: FileMark, parser: CmmParser | SamplesParser) -> None:
        self.mark = mark
        self.parser = parser
        self.seen = RowSet()
        self.head = b""  # the file's first bytes, when read from offset 0


class FileSource:
    # emit returns only after the journal commit that also stores the checkpoint.
    wait_durable = True
    # A file unchanged this long gives back its reading state (parser, rows seen); only
    # its mark stays. If it grows again its state is rebuilt from the file, as after a
    # restart. Without this a folder of per-part drops kept every row of every file ever
    # read in memory (40 MB after 80 bulk files, and 50 ms garbage collections).
    idle_release_s = 120.0

    def __init__(self, cfg: FileSourceConfig, ctx: BuildContext) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.tz = zone(cfg.timezone)
        self.metrics = SourceMetrics(ctx.metrics, cfg.name)
        self.qlog = QuarantineLog(log, cfg.name)
        self.checkpoint_path = ctx.state_dir / "checkpoints" / f"{cfg.name}.json"
        self.checkpoint_key = f"file:{cfg.name}"
        self._store = ctx.checkpoints
        dev = cfg.device_name
        if cfg.mode == "cmm":
            self.tag_ids = np.array([ctx.tags.id_of(f"{dev}/{t}") for t in CMM_TEMPS], np.int32)
        else:
            self.tag_ids = np.array(
                [ctx.tags.id_of(f"{dev}/{v.tag}") for v in cfg.values], np.int32
            )
        self.marks: dict[str, FileMark] = {}
        self.cursors: dict[str, _Cursor] = {}
        self._pending: dict[str, Path] = {}  # files to read, in turn order
        self._refused: dict[str, tuple[int, str]] = {}  # reported once: inode, reason
        self._tails: dict[str, int] = {}  # unterminated last row waiting: file mtime (ns)

    # ------------------------------------------------------------------ driving

    async def run(self, emit: Emit) -> None:
        self.marks = await self._load_marks()
        self.cursors.clear()
        self._pending.clear()
        self._refused.clear()
        self._tails.clear()
        folders = [Path(p) for p in self.cfg.paths]
        for folder in folders:
            if not folder.is_dir():
                log.error("watched folder missing", source=self.name, folder=str(folder))
        watched = [str(f) for f in folders if f.is_dir()]  # others: rescans only
        wake = asyncio.Event()
        watcher = asyncio.create_task(self._watch(watched, wake)) if watched else None
        next_rescan = 0.0
        try:
            while True:
                if time.monotonic() >= next_rescan:
                    next_rescan = time.monotonic() + self.cfg.rescan_s
                    await self.scan(emit)
                self._queue_settled()
                await self.drain(emit)
                if watcher is not None and watcher.done():
                    watcher.result()  # the watch failed: the supervisor restarts us
                    raise RuntimeError("the folder watch ended")
                wake.clear()
                if self._pending:
                    continue
                wait = next_rescan - time.monotonic()
                if self._tails:
                    due = min(self._tails.values()) + self.cfg.settle_s * 1e9
                    wait = min(wait, (due - time.time_ns()) / 1e9 + 0.05)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), max(0.0, wait))
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher

    async def _watch(self, watched: list[str], wake: asyncio.Event) -> None:
        """Queue the files that watch events name (the main loop reads them)."""
        async for changes in watchfiles.awatch(
            *watched, watch_filter=None, force_polling=self.cfg.poll,
            poll_delay_ms=self.cfg.poll_interval_ms, debounce=self.cfg.debounce_ms,
            rust_timeout=int(self.cfg.rescan_s * 1000), yield_on_timeout=True,
            recursive=False,
        ):
            for p in sorted({p for change, p in changes if change != watchfiles.Change.deleted}):
                if self._wanted(Path(p)):
                    self._pending.setdefault(p, Path(p))
                    wake.set()

    def _wanted(self, path: Path) -> bool:
        name = path.name
        if not fnmatch.fnmatchcase(name, self.cfg.pattern):
            return False
        return not any(fnmatch.fnmatchcase(name, g) for g in self.cfg.ignore)

    def _queue_settled(self) -> None:
        """Files whose unterminated last row may be taken now."""
        due = time.time_ns() - int(self.cfg.settle_s * 1e9)
        for key, mtime_ns in list(self._tails.items()):
            if mtime_ns <= due:
                self._pending.setdefault(key, Path(key))

    async def scan(self, emit: Emit) -> None:
        """Queue every matching file, oldest first; report what is not a regular file;
        forget vanished files. Call ``drain`` to read what is queued."""
        found: list[tuple[int, str, Path]] = []
        present: set[str] = set()
        for folder in self.cfg.paths:
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    p = Path(entry.path)
                    if not self._wanted(p):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    present.add(entry.path)
                    why = file_read.refusal(st)
                    if why is not None:
                        await self._refuse(p, st.st_ino, why, emit)
                    else:
                        found.append((st.st_mtime_ns, entry.name, p))
        for _, _, p in sorted(found):
            self._pending.setdefault(str(p), p)
        idle_before = time.time_ns() - int(self.idle_release_s * 1e9)
        for mtime_ns, _, p in found:
            if mtime_ns < idle_before:
                self.cursors.pop(str(p), None)
        for k in [k for k in self._refused if k not in present]:
            del self._refused[k]
        for k in [k for k in self._tails if k not in present]:
            del self._tails[k]
        gone = [k for k in self.marks if k not in present]
        if gone:
            for k in gone:
                self.marks.pop(k, None)
                self.cursors.pop(k, None)
            await self._commit(emit, None, [])

    async def drain(self, emit: Emit) -> None:
        """One pass over the queued files, in turns of at most ``max_file_read_mb`` each,
        ``max_pass_read_mb`` in all; a file with more to read queues up again."""
        budget = int(self.cfg.max_pass_read_mb * MB)
        per_file = int(self.cfg.max_file_read_mb * MB)
        while self._pending and budget > 0:
            key = next(iter(self._pending))
            path = self._pending.pop(key)
            used, more = await self.consume(path, emit, min(per_file, budget))
            budget -= used
            if more:
                self._pending.setdefault(key, path)

    async def _refuse(self, path: Path, ino: int, why: str, emit: Emit) -> None:
        """Report a name that is not a regular file, once per file it names."""
        key = str(path)
        self.marks.pop(key, None)
        self.cursors.pop(key, None)
        if self._refused.get(key) == (ino, why):
            return
        self._refused[key] = (ino, why)
        reason = f"{path.name} {why}"
        log.warning("file skipped", source=self.name, file=key, reason=why)
        self.metrics.rejected("not_a_regular_file", 1)
        await self._commit(emit, None, [Quarantine(
            time.time_ns(), self.name, reason, where=path.name, payload="")])

    # ------------------------------------------------------------------ one file

    def _parser(self) -> CmmParser | SamplesParser:
        if self.cfg.mode == "cmm":
            return CmmParser(self.cfg.columns, self.tz, self.cfg.epoch_unit)
        return SamplesParser(
            self.cfg.timestamp_column, [v.column for v in self.cfg.values], self.tz,
            self.cfg.epoch_unit, aliases=[v.aliases for v in self.cfg.values],
            loose=self.cfg.spelling == "loose",
        )

    async def _cursor(self, path: Path, emit: Emit) -> _Cursor | None:
        key = str(path)
        try:
            st = file_read.check(key)
        except file_read.Refused as exc:
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
            cur = _Cursor(mark, self._parser())
            try:
                consumed = await progress.blocking(
                    f"read {key}", file_read.read_prefix, key, mark.ino, mark.offset)
            except file_read.Refused as exc:
                await self._refuse(path, exc.ino, exc.reason, emit)
                return None
            except OSError:
                return None  # gone meanwhile; the next scan forgets it
            if consumed is not None and self._prime(consumed, cur):
                self.cursors[key] = cur
                return cur
        if mark is not None:
            log.warning("file replaced or truncated, reading it from the start",
                        source=self.name, file=key, offset=mark.offset)
        cur = _Cursor(FileMark(st.st_dev, st.st_ino, 0, 0, "", 0), self._parser())
        self.cursors[key] = cur
        self.marks[key] = cur.mark
        return cur

    @staticmethod
    def _prime(consumed: bytes, cur: _Cursor) -> bool:
        """After a restart: check the fingerprint, re-read the header and the rows seen."""
        mark = cur.mark
        if len(consumed) != mark.offset:
            return False
        if file_checkpoint.fingerprint(consumed[: mark.head_len]) != (mark.head, mark.head_len):
            return False
        lines = consumed.split(b"\n")[:-1]
        if lines:
            cur.parser.set_header(lines[0])
            cur.seen.update(line.rstrip(b"\r") for line in lines[1:] if line.strip())
        return True

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
                    f"read {key}", file_read.read_lines, key, cur.mark.ino, cur.mark.offset,
                    self.cfg.settle_s)
            except file_read.Refused as exc:
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

    async def _process(self, path: Path, cur: _Cursor, data: bytes, emit: Emit, *,
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
            cur.head = data[: file_checkpoint.FINGERPRINT_BYTES]
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
            result: ParseResult[CmmRow] | ParseResult[SampleRow] = ParseResult()
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
        self, path: Path, cur: _Cursor, emit: Emit,
        rows: Sequence[CmmRow] | Sequence[SampleRow], errors: Sequence[RowError],
        nbytes: int,
    ) -> None:
        now = time.time_ns()
        records: list[Record] = []
        batch: SampleBatch | None = None
        if rows:
            if self.cfg.mode == "cmm":
                batch, readings = self._cmm(path.name, rows)  # type: ignore[arg-type]
                records.extend(readings)
            else:
                batch = self._samples(rows)  # type: ignore[arg-type]
        for e in errors:
            records.append(Quarantine(
                now, self.name, e.reason, where=f"{path.name}:{e.line}", payload=e.text,
            ))
        mark = cur.mark
        mark.offset += nbytes
        if mark.head_len < min(mark.offset, len(cur.head)):
            mark.head, mark.head_len = file_checkpoint.fingerprint(cur.head[: mark.offset])
        self.marks[str(path)] = cur.mark
        if batch is None and not records:
            return  # blank lines only: the next commit carries the offset
        # Counted before the hand-off: a cancel while the checkpoint is saved (after emit
        # returned) must not leave rows delivered but uncounted.
        self.metrics.received((len(batch) if batch is not None else 0) + len(records)
                              - len(errors))
        if rows:
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

    async def _load_marks(self) -> dict[str, FileMark]:
        if self._store is not None:
            data = await self._store(self.checkpoint_key)
            if data is not None:
                try:
                    return file_checkpoint.loads(data)
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("file checkpoint in the journal unreadable; reading from the start",
                              source=self.name, error=str(exc))
                    return {}
        return await progress.blocking(f"load {self.checkpoint_path}", file_checkpoint.load,
                                       self.checkpoint_path)

    async def _commit(self, emit: Emit, batch: SampleBatch | None,
                      records: Sequence[Record]) -> None:
        """Hand over the rows with the checkpoint that covers them."""
        if self._store is not None:
            await emit(batch, records,
                       checkpoint=(self.checkpoint_key, file_checkpoint.dumps(self.marks)))
            return
        if batch is not None or records:
            await emit(batch, records)
        await progress.blocking(f"save {self.checkpoint_path}", file_checkpoint.save,
                                self.checkpoint_path, dict(self.marks))

    def _cmm(self, file: str, rows: Sequence[CmmRow]) -> tuple[SampleBatch, list[Record]]:
        dev = self.cfg.device_name
        readings: list[Record] = [
            CmmReading(
                r.ts_ns, dev, r.part_id, r.lot, r.feature, r.nominal_mm, r.tol_mm,
                r.measured_mm, r.part_temp_c, r.air_temp_c, r.scale_temp_c, where=file,
            )
            for r in rows
        ]
        ts = np.fromiter((r.ts_ns for r in rows), np.int64, len(rows))
        vals = np.array([(r.air_temp_c, r.scale_temp_c, r.part_temp_c) for r in rows], np.float64)
        keep = ~np.isnan(vals)  # no part probe: no part temperature sample, not a NaN one
        tag = np.broadcast_to(self.tag_ids, vals.shape)
        tsm = np.broadcast_to(ts[:, None], vals.shape)
        return SampleBatch(tag[keep], tsm[keep], vals[keep]), readings

    def _samples(self, rows: Sequence[SampleRow]) -> SampleBatch:
        n, k = len(rows), len(self.tag_ids)
        ts = np.fromiter((r.ts_ns for r in rows), np.int64, n)
        vals = np.array([r.values for r in rows], np.float64).reshape(n * k)
        return SampleBatch(np.tile(self.tag_ids, n), np.repeat(ts, k), vals)

