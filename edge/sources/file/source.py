"""File-drop source: CSV files in watched folders, per-part drops or growing daily files.

Invariants:

* Only complete lines are consumed: the offset kept per file always sits just past a
  newline, so a half-written row of a growing file is read once it is whole. The one
  exception is the last row of a file without a trailing newline: it is taken once the
  file has not changed for ``settle_s``, never silently left behind.
* The checkpoint (``checkpoint``) travels with the rows it covers: in the daemon
  it is committed to the journal in the same transaction as those rows, so after a
  crash, even kill -9, nothing is read twice and nothing is skipped. Without a journal
  (``ctx.checkpoints`` is None) it is saved to a file after ``emit`` returned, which
  can re-read at most one batch after a hard kill.
  A file whose inode or first bytes changed, or that shrank, is read again from 0.
* A bad row never stops the source: it becomes a ``Quarantine`` record naming the file,
  the line and the reason, and is counted in ``edge_source_rejected_total``.
* Only regular files are read (``read``). A FIFO, socket, device or directory whose
  name matches the pattern is skipped and reported once, as a ``Quarantine`` record and
  a log line with the reason. Symlinks are never followed: a drop folder receives files,
  and a link could point at a device, at a file outside the folder (whose lines would be
  shipped to the MES as quarantines), or at a file already read under its own name.
* No file can starve the others: a file gives way after ``max_file_read_mb`` or about
  ``reading.TURN_S`` of reading per turn (files with more to read take turns), and one pass
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

import structlog
import watchfiles

from edge.components import BuildContext, Emit
from edge.model import Quarantine, Record, SampleBatch
from edge.runtime import progress
from edge.runtime.aio import wait_event
from edge.sources.file import checkpoint, read, rows
from edge.sources.file.checkpoint import FileMark
from edge.sources.file.config import FileSourceConfig
from edge.sources.file.reading import Cursor, FileReading
from edge.sources.metrics import QuarantineLog, SourceMetrics
from edge.sources.timestamps import zone

log = structlog.get_logger("edge.sources.file")

MB = 1 << 20


class FileSource(FileReading):
    """Watches the folders and gives each queued file its turn (``FileReading`` reads it)."""

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
        self.tag_ids = rows.tag_ids(cfg, ctx.tags)
        self.marks: dict[str, FileMark] = {}
        self.cursors: dict[str, Cursor] = {}
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
                await wait_event(wake, wait)
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
                    why = read.refusal(st)
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

    # ------------------------------------------------------------------ checkpoint

    async def _load_marks(self) -> dict[str, FileMark]:
        if self._store is not None:
            data = await self._store(self.checkpoint_key)
            if data is not None:
                try:
                    return checkpoint.loads(data)
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("file checkpoint in the journal unreadable; reading from the start",
                              source=self.name, error=str(exc))
                    return {}
        return await progress.blocking(f"load {self.checkpoint_path}", checkpoint.load,
                                       self.checkpoint_path)

    async def _commit(self, emit: Emit, batch: SampleBatch | None,
                      records: Sequence[Record]) -> None:
        """Hand over the rows with the checkpoint that covers them."""
        if self._store is not None:
            await emit(batch, records,
                       checkpoint=(self.checkpoint_key, checkpoint.dumps(self.marks)))
            return
        if batch is not None or records:
            await emit(batch, records)
        await progress.blocking(f"save {self.checkpoint_path}", checkpoint.save,
                                self.checkpoint_path, dict(self.marks))
