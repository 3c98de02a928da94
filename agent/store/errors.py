"""The store's exceptions, and how an SQLite error says the file is damaged (docs/store.md)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from agent.points import Reading

_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

CORRUPT_ADVICE = (
    "Stop the agent, move the file aside (with its -wal and -shm files; keep them: `sqlite3 FILE .recover` "
    "can save the outbox and the energy readings) and start again: the agent makes a new store"
)


class StoreError(Exception):
    """The store cannot do what was asked; the message says what and why."""


class StoreFullError(StoreError):
    """No room: the disk is full, or the store is at ``max_bytes`` with nothing left that may be dropped.

    ``rejected`` holds the energy readings of the call that were not stored (the caller must keep them).
    """

    def __init__(self, message: str, rejected: Sequence[Reading] = ()) -> None:
        super().__init__(message)
        self.rejected = tuple(rejected)


class StoreCorruptError(StoreError):
    """The file at the store path is damaged, or is not a GridEdge store; the message says what to do."""


class StoreInputError(StoreError, ValueError):
    """A reading or event that cannot be stored (wrong type, non-finite number, too long)."""


def is_corrupt(err: sqlite3.Error) -> bool:
    """True if SQLite says the file is damaged or is not a database."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    text = str(err)
    return "malformed" in text or "not a database" in text
