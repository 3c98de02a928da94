"""The safety envelope's persisted state (docs/store.md, "Control state"; docs/control.md, "The envelope").

Two tables, so that a restarted agent knows what it did and what it may still do:

- ``control_ops``: every operation the envelope carried out on a device, with its time, the function, the
  action, its direction (+1 raise/close, -1 lower/open, 0 neither) and its wear costs (``{"cap_ops": 1}``).
  Wear budgets per day or hour, the minimum dwell and the hunting detector are all judged from these rows, so a
  spent budget stays spent across a restart. Rows older than what any window needs are deleted as new ones
  are added (``keep_s``).
- ``control_flags``: per (kind, function, device), since when, why, and details: ``suspended`` (a readback
  mismatch or hunting froze that function on that device until an operator clears it) and ``taken`` (the
  envelope holds the device out of its autonomous mode; on stop or at the next start it hands it back).

A flag written or cleared with an ``event`` stores the event in the same transaction, so the record of an
alarm and the state it set cannot part.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from agent.store.db import StoreDb
from agent.store.disk import Disk
from agent.store.errors import StoreInputError

FLAG_KINDS = ("suspended", "taken")

# (ts, kind, severity, source, text, data): an event stored with a flag change, on the events stream
FlagEvent = tuple[float, str, str, str, str, dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class ControlOp:
    """One operation the envelope carried out (a row of ``control_ops``)."""

    id: int
    ts: float
    device: str
    function: str
    action: str
    direction: int
    costs: dict[str, int] = field(default_factory=dict)
    decision_id: str = ""


@dataclass(frozen=True, slots=True)
class ControlFlag:
    """A suspension, or a device the envelope holds (a row of ``control_flags``)."""

    kind: str
    function: str
    device: str
    since: float
    reason: str
    data: dict[str, Any] = field(default_factory=dict)


def _json(what: str, value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise StoreInputError(f"{what}: not JSON ({err})") from err


class ControlState:
    """Reads and writes of the two control tables, each write one transaction (full-disk recovery included)."""

    def __init__(self, db: StoreDb, disk: Disk) -> None:
        self._db = db
        self._disk = disk

    def record_op(
        self,
        ts: float,
        device: str,
        function: str,
        action: str,
        direction: int,
        costs: dict[str, int],
        decision_id: str,
        keep_s: float,
    ) -> int:
        """Add one operation; forget this device's operations older than ``keep_s`` before it. Returns its id."""
        if direction not in (-1, 0, 1):
            raise StoreInputError(f"control op direction={direction!r}: -1, 0 or 1")
        costs_json = _json("control op costs", costs)
        return self._disk.write(
            "control_op",
            functools.partial(self._insert_op, (ts, device, function, action, direction, costs_json, decision_id),
                              ts - keep_s),
        )  # fmt: skip

    @staticmethod
    def _insert_op(row: tuple[Any, ...], horizon: float, conn: sqlite3.Connection) -> int:
        conn.execute("DELETE FROM control_ops WHERE device=? AND ts<?", (row[1], horizon))
        cur = conn.execute(
            "INSERT INTO control_ops(ts, device, function, action, direction, costs, decision_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        return int(cur.lastrowid or 0)

    def ops(self, since: float, device: str | None = None) -> list[ControlOp]:
        """Operations at or after ``since`` [s UTC], oldest first; of one device when ``device`` is given."""
        sql = "SELECT id, ts, device, function, action, direction, costs, decision_id FROM control_ops WHERE ts>=?"
        params: tuple[Any, ...] = (since,)
        if device is not None:
            sql += " AND device=?"
            params = (since, device)
        rows = self._db.read(sql + " ORDER BY ts, id", params)
        return [ControlOp(i, ts, d, f, a, dr, json.loads(c), di) for i, ts, d, f, a, dr, c, di in rows]

    def set_flag(self, flag: ControlFlag, event: FlagEvent | None = None) -> None:
        """Write (or replace) a flag, with its event in the same transaction."""
        if flag.kind not in FLAG_KINDS:
            raise StoreInputError(f"control flag kind={flag.kind!r}: one of {', '.join(FLAG_KINDS)}")
        row = (flag.kind, flag.function, flag.device, flag.since, flag.reason, _json("control flag data", flag.data))
        self._disk.write("control_flag", functools.partial(self._set, row, event))

    def _set(self, row: tuple[Any, ...], event: FlagEvent | None, conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO control_flags(kind, function, device, since, reason, data) VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )
        if event is not None:
            self._db.insert_event(conn, *event)

    def clear_flag(self, kind: str, function: str, device: str, event: FlagEvent | None = None) -> bool:
        """Remove a flag (with its event, stored only when there was a flag); True if there was one."""
        return self._disk.write("control_flag", functools.partial(self._clear, (kind, function, device), event))

    def _clear(self, key: tuple[str, str, str], event: FlagEvent | None, conn: sqlite3.Connection) -> bool:
        cur = conn.execute("DELETE FROM control_flags WHERE kind=? AND function=? AND device=?", key)
        if cur.rowcount and event is not None:
            self._db.insert_event(conn, *event)
        return bool(cur.rowcount)

    def flags(self, kind: str | None = None) -> list[ControlFlag]:
        sql = "SELECT kind, function, device, since, reason, data FROM control_flags"
        params: tuple[Any, ...] = ()
        if kind is not None:
            sql += " WHERE kind=?"
            params = (kind,)
        rows = self._db.read(sql + " ORDER BY since, kind, function, device", params)
        return [ControlFlag(k, f, d, s, r, json.loads(x) if x else {}) for k, f, d, s, r, x in rows]


__all__ = ["FLAG_KINDS", "ControlFlag", "ControlOp", "ControlState", "FlagEvent"]
