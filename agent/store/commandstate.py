"""The signed downlink's persisted state and the audit log (docs/store.md, "Command state"; docs/commands.md).

- ``command_seq``: per signing key, the highest sequence taken. A command must come above it, across restarts.
- ``command_log``: every command taken for execution, by id, with its status (``executing`` until its result,
  then ``applied``, ``refused`` or ``failed``) and its signed result. A redelivered command finds its id here and
  is not executed again. A row still ``executing`` at start-up was cut short by a crash: it is finished as
  ``failed`` (``interrupted``), so central still gets an answer, and is never run again.
- ``command_keys``: keys a signed ``keys.update`` added or revoked (the site file's keys are the start).
- ``command_overrides``: what central's commands hold in force, by slot (a device's set point, a schedule, a
  function's mode), so a restarted agent keeps a schedule and drops what expired while it was down.
- ``audit``: append-only (SQLite triggers refuse UPDATE and DELETE): every command received, refused, applied
  or failed, every override set or ended and every key change. Each entry is also an event on the ``audit``
  stream, and a result an event on the ``results`` stream, written in the same transaction as the state they
  report, so the log and the state cannot part, and the outbox carries both to central exactly once.

These transactions commit with synchronous=FULL (docs/store.md, "Durability"): a command is taken before anything
is written to a device, and a power cut right after the write must not forget that it was taken (its sequence
and id would pass again).
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
from agent.store.schema import AUDIT, RESULTS

STATUSES = ("executing", "applied", "refused", "failed")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log."""

    ts: float
    what: str  # command_received, command_refused, command_applied, command_failed, override_set, ...
    outcome: str
    command_id: str = ""
    key_id: str = ""
    kind: str = ""
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    severity: str = "info"

    def text(self) -> str:
        parts = [self.what, self.kind, self.outcome, self.reason]
        return " ".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class LoggedCommand:
    """A row of ``command_log``."""

    command_id: str
    key_id: str
    seq: int
    kind: str
    target: str
    received: float
    expires_at: float
    status: str
    reason: str
    payload: str
    result: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Override:
    """A row of ``command_overrides``: what a command holds in force in ``slot`` until ``until`` (None: until
    reverted)."""

    slot: str
    command_id: str
    kind: str
    target: str
    body: dict[str, Any]
    since: float
    until: float | None


@dataclass(frozen=True, slots=True)
class KeyChange:
    key_id: str
    role: str
    public_key: str
    state: str  # added | revoked
    ts: float
    command_id: str


def _json(what: str, value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as err:
        raise StoreInputError(f"{what}: not JSON ({err})") from err


class CommandState:
    """Reads and writes of the command tables; each write is one transaction with its audit entries."""

    def __init__(self, db: StoreDb, disk: Disk) -> None:
        self._db = db
        self._disk = disk

    # ---- reads ---------------------------------------------------------------------------------------------------
    def last_taken(self, key_id: str) -> tuple[int, str | None]:
        """The highest sequence taken from ``key_id`` and that command's id ((0, None): none yet)."""
        rows = self._db.read("SELECT seq, command_id FROM command_seq WHERE key_id=?", (key_id,))
        return (int(rows[0][0]), rows[0][1]) if rows else (0, None)

    def logged(self, command_id: str) -> LoggedCommand | None:
        rows = self._db.read(
            "SELECT command_id, key_id, seq, kind, target, received, expires_at, status, reason, payload, result "
            "FROM command_log WHERE command_id=?",
            (command_id,),
        )
        return self._logged(rows[0]) if rows else None

    def log_rows(self, status: str | None = None, limit: int = 100) -> list[LoggedCommand]:
        sql = ("SELECT command_id, key_id, seq, kind, target, received, expires_at, status, reason, payload, result "
               "FROM command_log")  # fmt: skip
        params: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE status=?"
            params = (status,)
        rows = self._db.read(sql + " ORDER BY received DESC LIMIT ?", (*params, limit))
        return [self._logged(r) for r in rows]

    @staticmethod
    def _logged(r: tuple[Any, ...]) -> LoggedCommand:
        return LoggedCommand(*r[:10], json.loads(r[10]) if r[10] else None)

    def overrides(self) -> list[Override]:
        rows = self._db.read(
            "SELECT slot, command_id, kind, target, body, since, until FROM command_overrides ORDER BY since, slot"
        )
        return [Override(s, c, k, t, json.loads(b), since, until) for s, c, k, t, b, since, until in rows]

    def key_changes(self) -> list[KeyChange]:
        rows = self._db.read("SELECT key_id, role, public_key, state, ts, command_id FROM command_keys ORDER BY ts")
        return [KeyChange(*r) for r in rows]

    def audit(self, since_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._db.read(
            "SELECT id, ts, what, command_id, key_id, kind, outcome, reason, data FROM audit WHERE id>? "
            "ORDER BY id LIMIT ?",
            (since_id, limit),
        )
        names = ("id", "ts", "what", "command_id", "key_id", "kind", "outcome", "reason", "data")
        return [dict(zip(names, (*r[:8], json.loads(r[8]) if r[8] else {}), strict=True)) for r in rows]

    # ---- writes ----------------------------------------------------------------------------------------------------
    def append_audit(self, entries: list[AuditEntry]) -> None:
        self._disk.write("audit", functools.partial(self._audit_rows, entries))

    def refuse(self, result: dict[str, Any], result_ts: float, entries: list[AuditEntry]) -> None:
        """A signed refusal of a command not taken (no state changes): its result and audit entries."""
        self._disk.write("command_refuse", functools.partial(self._refuse, result, result_ts, entries), full_sync=True)

    def _refuse(self, result: dict[str, Any], ts: float, entries: list[AuditEntry], conn: sqlite3.Connection) -> None:
        self._db.insert_event(conn, ts, "command_result", "info", "commands", "refused", result, stream=RESULTS)
        self._audit_rows(entries, conn)

    def take(self, row: LoggedCommand, entries: list[AuditEntry]) -> bool:
        """Take a verified command for execution: its key's sequence moves up to it and its id is logged
        ``executing``, with its audit entries, in one transaction. False (nothing written) if the sequence is no
        longer above the key's or the id is logged already."""
        return self._disk.write("command_take", functools.partial(self._take, row, entries), full_sync=True)

    def _take(self, row: LoggedCommand, entries: list[AuditEntry], conn: sqlite3.Connection) -> bool:
        last = conn.execute("SELECT seq FROM command_seq WHERE key_id=?", (row.key_id,)).fetchone()
        if last is not None and row.seq <= last[0]:
            return False
        if conn.execute("SELECT 1 FROM command_log WHERE command_id=?", (row.command_id,)).fetchone():
            return False
        conn.execute("INSERT OR REPLACE INTO command_seq(key_id, seq, command_id, ts) VALUES (?, ?, ?, ?)",
                     (row.key_id, row.seq, row.command_id, row.received))  # fmt: skip
        conn.execute(
            "INSERT INTO command_log(command_id, key_id, seq, kind, target, received, expires_at, status, reason, "
            "payload) VALUES (?, ?, ?, ?, ?, ?, ?, 'executing', '', ?)",
            (row.command_id, row.key_id, row.seq, row.kind, row.target, row.received, row.expires_at, row.payload),
        )
        self._audit_rows(entries, conn)
        return True

    def finish(
        self,
        command_id: str,
        status: str,
        reason: str,
        result: dict[str, Any],
        result_ts: float,
        entries: list[AuditEntry],
        *,
        set_overrides: list[Override] = (),  # type: ignore[assignment]
        clear_slots: list[str] = (),  # type: ignore[assignment]
        keys: list[KeyChange] = (),  # type: ignore[assignment]
    ) -> None:
        """The command's status and signed result (``result``: the ``command_result`` event's data, on the results
        stream), the state it changed and its audit entries: one transaction."""
        if status not in STATUSES[1:]:
            raise StoreInputError(f"command status={status!r}: one of {', '.join(STATUSES[1:])}")
        result_json = _json("command result", result)
        ov_rows = [(o.slot, o.command_id, o.kind, o.target, _json("override body", o.body), o.since, o.until)
                   for o in set_overrides]  # fmt: skip
        self._disk.write(
            "command_finish",
            functools.partial(self._finish, (command_id, status, reason, result_json), result, result_ts, entries,
                              ov_rows, list(clear_slots), list(keys)),
            full_sync=True,
        )  # fmt: skip

    def _finish(self, row: tuple[str, str, str, str], result: dict[str, Any], ts: float, entries: list[AuditEntry],
                ov_rows: list[tuple[Any, ...]], clear: list[str], keys: list[KeyChange],
                conn: sqlite3.Connection) -> None:  # fmt: skip
        command_id, status, reason, result_json = row
        cur = conn.execute("UPDATE command_log SET status=?, reason=?, result=? WHERE command_id=?",
                           (status, reason, result_json, command_id))  # fmt: skip
        if cur.rowcount != 1:
            raise StoreInputError(f"command {command_id}: not taken for execution, cannot be finished")
        self._apply(conn, ov_rows, clear, keys)
        self._db.insert_event(conn, ts, "command_result", "info", "commands", f"{status} {reason}".strip(), result,
                              stream=RESULTS)  # fmt: skip
        self._audit_rows(entries, conn)

    def change(self, entries: list[AuditEntry], *, set_overrides: list[Override] = (),  # type: ignore[assignment]
               clear_slots: list[str] = (), keys: list[KeyChange] = ()) -> None:  # type: ignore[assignment]  # fmt: skip
        """Overrides set or ended (a schedule's step, an expiry, a link-loss fallback) with their audit entries."""
        ov_rows = [(o.slot, o.command_id, o.kind, o.target, _json("override body", o.body), o.since, o.until)
                   for o in set_overrides]  # fmt: skip
        self._disk.write("command_change", functools.partial(self._change, ov_rows, list(clear_slots), list(keys),
                                                               entries), full_sync=True)  # fmt: skip

    def _change(self, ov_rows: list[tuple[Any, ...]], clear: list[str], keys: list[KeyChange],
                entries: list[AuditEntry], conn: sqlite3.Connection) -> None:  # fmt: skip
        self._apply(conn, ov_rows, clear, keys)
        self._audit_rows(entries, conn)

    @staticmethod
    def _apply(conn: sqlite3.Connection, ov_rows: list[tuple[Any, ...]], clear: list[str],
               keys: list[KeyChange]) -> None:  # fmt: skip
        for slot in clear:
            conn.execute("DELETE FROM command_overrides WHERE slot=?", (slot,))
        for r in ov_rows:
            conn.execute("INSERT OR REPLACE INTO command_overrides(slot, command_id, kind, target, body, since, until) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", r)  # fmt: skip
        for k in keys:
            conn.execute("INSERT OR REPLACE INTO command_keys(key_id, role, public_key, state, ts, command_id) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (k.key_id, k.role, k.public_key, k.state, k.ts, k.command_id))  # fmt: skip

    def prune_log(self, before: float) -> int:
        """Forget logged commands that expired before ``before`` (their window closed: no replay can pass it)."""
        return self._disk.write("command_prune", functools.partial(self._prune, before))

    @staticmethod
    def _prune(before: float, conn: sqlite3.Connection) -> int:
        cur = conn.execute("DELETE FROM command_log WHERE expires_at<? AND status!='executing'", (before,))
        return cur.rowcount

    def _audit_rows(self, entries: list[AuditEntry], conn: sqlite3.Connection) -> None:
        for e in entries:
            data = _json("audit data", e.data)
            cur = conn.execute(
                "INSERT INTO audit(ts, what, command_id, key_id, kind, outcome, reason, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (e.ts, e.what, e.command_id, e.key_id, e.kind, e.outcome, e.reason, data),
            )
            record = {"audit_id": cur.lastrowid, "what": e.what, "outcome": e.outcome, "command_id": e.command_id,
                      "key_id": e.key_id, "kind": e.kind, "reason": e.reason, **({"detail": e.data} if e.data else {})}  # fmt: skip
            self._db.insert_event(conn, e.ts, e.what, e.severity, "commands", e.text(), record, stream=AUDIT)


__all__ = ["STATUSES", "AuditEntry", "CommandState", "KeyChange", "LoggedCommand", "Override"]
