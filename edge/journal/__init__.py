"""Store-and-forward journal (SQLite WAL). See ``store`` for the guarantees."""

from edge.journal.store import (
    DeadLetter,
    Durability,
    Entry,
    Eviction,
    Journal,
    Kind,
    ReadResult,
    SinkStats,
    read_dead_letters,
)
from edge.journal.writer import JournalWriter

__all__ = [
    "DeadLetter", "Durability", "Entry", "Eviction", "Journal", "JournalWriter", "Kind",
    "ReadResult", "SinkStats", "read_dead_letters",
]
