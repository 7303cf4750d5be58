"""One write transaction on a SQLite connection opened with ``isolation_level=None``.

``BEGIN IMMEDIATE`` takes the write lock at the start (a busy database fails here, not
half-way), ``COMMIT`` on success, ``ROLLBACK`` on any exception: a failed write leaves
nothing behind. Used by the journal and the OPC-UA history store.
"""

from __future__ import annotations

import sqlite3


class Transaction:
    """``with Transaction(db): ...``: BEGIN IMMEDIATE .. COMMIT, rolled back on any
    exception."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
