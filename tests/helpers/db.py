"""Reading a SQLite file that another process (the agent, central) writes."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


def query_db(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows from a SQLite file another process writes; [] while the file or the table is not there yet."""
    if not db.exists():
        return []
    with contextlib.suppress(sqlite3.OperationalError), contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return conn.execute(sql, args).fetchall()
    return []
