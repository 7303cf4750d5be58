"""Store-and-forward journal (SQLite WAL). See ``store`` for the guarantees."""

from edge.journal.entries import (
    DeadLetter,
    Durability,
    Entry,
    Eviction,
    Kind,
    ReadResult,
    SinkStats,
    read_dead_letters,
)
from edge.journal.store import Journal
from edge.journal.writer import JournalWriter

__all__ = [
    "DeadLetter", "Durability", "Entry", "Eviction", "Journal", "JournalWriter", "Kind",
    "ReadResult", "SinkStats", "read_dead_letters",
]
