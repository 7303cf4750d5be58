"""The edge node's bdSeq on disk: ``<state_dir>/sparkplug/<sink>.bdseq``, one decimal line.

Invariants:

* The file holds the last bdSeq that may have reached a broker: the session persists a
  new one before the first CONNECT that carries it (``session.PersistBdSeq``), written
  atomically and fsynced (``write_private``), so kill -9 or a power cut after the
  CONNECT still finds it, and a restart continues from it plus one.
* A file that does not parse is logged and read as absent (bdSeq starts again at 0):
  the gateway keeps working; a host may then see a bdSeq it held before.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from edge.runtime.private import private_dir, write_private

log = structlog.get_logger("edge.sinks.sparkplug")


def path_for(state_dir: Path, sink: str) -> Path:
    return state_dir / "sparkplug" / f"{sink}.bdseq"


def load(path: Path) -> int | None:
    """The persisted bdSeq (0..255), or None when there is none."""
    try:
        return int(path.read_text().strip()) % 256
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("sparkplug bdSeq file unreadable; starting again from 0", file=str(path))
        return None


def save(path: Path, bd_seq: int) -> None:
    """Persist ``bd_seq`` durably (OSError when the disk refuses)."""
    private_dir(path.parent)
    write_private(path, f"{bd_seq}\n".encode())
