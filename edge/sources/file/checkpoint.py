"""What the file source has consumed, kept across restarts.

In the daemon the checkpoint is stored in the journal, in the same transaction as the
rows read up to it (``dumps``/``loads`` give its bytes): a kill -9 at any moment can
neither re-read nor skip a row. Outside the daemon (no journal) it is a JSON file
written as below; an old file is also read once when the journal has none yet.

Invariants of the file form:

* The checkpoint holds, per file path, the identity of the file (device, inode and a
  fingerprint of its first bytes) and the byte offset just past the last complete
  line whose data was handed to ``emit``. It is saved only after ``emit`` returned,
  so a crash re-reads at most the rows of one batch, never skips any.
* It is written whole, to a temp file that is fsynced and then renamed over the old
  one, and the folder is fsynced: a crash leaves the old or the new checkpoint, never
  a torn one. An unreadable checkpoint is set aside (``.bad``) and the files are read
  from the start, which the duplicate check of each file makes harmless only within
  that file; the event is logged loudly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("edge.sources.file")

FINGERPRINT_BYTES = 4096


@dataclass(slots=True)
class FileMark:
    dev: int
    ino: int
    offset: int
    line: int
    head: str  # sha1 of the first min(offset, FINGERPRINT_BYTES) bytes
    head_len: int


def fingerprint(data: bytes) -> tuple[str, int]:
    head = data[:FINGERPRINT_BYTES]
    return hashlib.sha1(head, usedforsecurity=False).hexdigest(), len(head)


def dumps(marks: dict[str, FileMark]) -> bytes:
    return json.dumps(
        {"version": 1, "files": {p: asdict(m) for p, m in marks.items()}},
        separators=(",", ":"),
    ).encode()


def loads(data: bytes) -> dict[str, FileMark]:
    raw = json.loads(data)
    return {p: FileMark(**m) for p, m in raw["files"].items()}


def load(path: Path) -> dict[str, FileMark]:
    try:
        return loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        bad = path.with_suffix(".bad")
        with contextlib.suppress(OSError):
            os.replace(path, bad)
        log.error("file checkpoint unreadable, files are read from the start",
                  path=str(path), moved_to=str(bad), error=str(exc))
        return {}


def save(path: Path, marks: dict[str, FileMark]) -> None:
    """Atomically replace the checkpoint (blocking: call it from a worker thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = dumps(marks)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
