"""The store's control state (operations, suspensions, devices held) and the control stream, on real SQLite files.

The envelope's budgets and suspensions must survive a restart, and its decisions must leave the box on their own
stream, numbered apart from the events; a store written by the previous schema must open with nothing lost.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from agent.store import SCHEMA_VERSION, ControlFlag, Store, StoreInputError
from protocols.telemetry import decode_batch

SITE = "sub-1"
SMALL = 8 << 20


def make(path: Path) -> Store:
    return Store(path, SITE, SMALL, max_age_s=0.0)


def decision_data(i: int) -> dict:
    return {"id": f"d{i}", "ts": 1_781_913_600.0 + i, "function": "capbank", "device": "cap675-ctl",
            "mode": "advise", "inputs": [], "rule": "var_lagging", "command": None, "verdict": "advise",
            "readback": None, "outcome": "advised", "budgets_left": {}, "detail": {}}  # fmt: skip


def test_decisions_seal_on_the_control_stream_with_their_own_sequence(tmp_path: Path) -> None:
    store = make(tmp_path / "agent.db")
    store.add_event(1_781_913_600.0, "limit", "warning", "meter1.v_a", "high", None)
    for i in range(3):
        store.add_event(1_781_913_600.0 + i, "control_decision", "info", "cap675-ctl", f"decision {i}",
                        decision_data(i), stream="control")  # fmt: skip
    store.add_event(1_781_913_603.0, "limit", "warning", "meter1.v_a", "high again", None)
    assert store.seal(force=True) == 2
    by_stream = {m.stream: decode_batch(m.payload) for m in store.pending(10)}
    assert set(by_stream) == {"events", "control"}
    assert by_stream["control"].seq == 1 and by_stream["events"].seq == 1
    assert [i["data"]["id"] for i in by_stream["control"].items] == ["d0", "d1", "d2"]
    assert [i["text"] for i in by_stream["events"].items] == ["high", "high again"]
    store.add_event(1_781_913_610.0, "control_decision", "info", "cap675-ctl", "next", decision_data(9),
                    stream="control")  # fmt: skip
    store.seal(force=True)
    (nxt,) = [decode_batch(m.payload) for m in store.pending(10) if decode_batch(m.payload).seq == 2]
    assert nxt.stream == "control" and [i["data"]["id"] for i in nxt.items] == ["d9"]
    store.close()


def test_an_event_on_an_unknown_stream_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    store = make(tmp_path / "agent.db")
    with pytest.raises(StoreInputError, match="stream='telemetry'"):
        store.add_event(1.0, "x", "info", "s", "t", None, stream="telemetry")
    assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    store.close()


def test_a_spent_budget_and_a_suspension_survive_reopening_the_store(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    store = make(path)
    for k in range(4):
        store.control_record_op(1000.0 + k, "cap675-ctl", "capbank", "capbank.close", 1 - 2 * (k % 2),
                                {"cap_ops": 1}, f"d{k}", keep_s=86_400.0)  # fmt: skip
    event = (1004.0, "control_suspended", "error", "cap675-ctl", "readback failed", {"function": "capbank"})
    store.control_set_flag(ControlFlag("suspended", "capbank", "cap675-ctl", 1004.0, "readback_failed",
                                       {"decision_id": "d3"}), event)  # fmt: skip
    store.control_set_flag(ControlFlag("taken", "capbank", "cap675-ctl", 1000.0, "remote", {"mode": 1}))
    store.close()

    store = make(path)
    ops = store.control_ops(0.0, "cap675-ctl")
    assert [(o.ts, o.direction, o.costs, o.decision_id) for o in ops] == [
        (1000.0, 1, {"cap_ops": 1}, "d0"), (1001.0, -1, {"cap_ops": 1}, "d1"),
        (1002.0, 1, {"cap_ops": 1}, "d2"), (1003.0, -1, {"cap_ops": 1}, "d3"),
    ]  # fmt: skip
    (susp,) = store.control_flags("suspended")
    assert (susp.function, susp.device, susp.reason, susp.data) == ("capbank", "cap675-ctl", "readback_failed",
                                                                     {"decision_id": "d3"})  # fmt: skip
    assert [f.kind for f in store.control_flags()] == ["taken", "suspended"]
    kinds = [r[0] for r in store.conn.execute("SELECT kind FROM events WHERE stream='events'")]
    assert kinds == ["control_suspended"], "the alarm was stored with the flag"
    store.close()


def test_operations_older_than_what_any_window_needs_are_forgotten(tmp_path: Path) -> None:
    store = make(tmp_path / "agent.db")
    store.control_record_op(0.0, "cap", "capbank", "capbank.close", 1, {"cap_ops": 1}, "a", keep_s=100.0)
    store.control_record_op(50.0, "reg", "regulator", "regulator.taps", 1, {"taps": 2}, "b", keep_s=100.0)
    store.control_record_op(150.0, "cap", "capbank", "capbank.open", -1, {"cap_ops": 1}, "c", keep_s=100.0)
    assert [o.decision_id for o in store.control_ops(0.0)] == ["b", "c"]  # the other device's row is its own
    assert [o.decision_id for o in store.control_ops(100.0)] == ["c"]
    store.close()


def test_clearing_a_flag_stores_its_event_only_when_there_was_one(tmp_path: Path) -> None:
    store = make(tmp_path / "agent.db")
    ev = (5.0, "control_suspension_cleared", "info", "cap", "cleared by operator", None)
    assert store.control_clear_flag("suspended", "capbank", "cap", ev) is False
    store.control_set_flag(ControlFlag("suspended", "capbank", "cap", 1.0, "hunting", {}))
    assert store.control_clear_flag("suspended", "capbank", "cap", ev) is True
    assert store.control_flags() == []
    assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    with pytest.raises(StoreInputError):
        store.control_set_flag(ControlFlag("frozen", "capbank", "cap", 1.0, "x", {}))
    store.close()


def _version_1_file(path: Path) -> None:
    """A store as schema version 1 wrote it, with one sealed event and one waiting."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT, point TEXT, ts REAL, "
                 "value BLOB, unit TEXT, quality TEXT)")  # fmt: skip
    conn.execute("CREATE INDEX readings_stream_id ON readings (stream, id)")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL, kind TEXT, severity TEXT, "
                 "source TEXT, text TEXT, data TEXT)")  # fmt: skip
    conn.execute("CREATE TABLE outbox (msg_id TEXT PRIMARY KEY, stream TEXT, seq INTEGER, count INTEGER, "
                 "first_id INTEGER, last_id INTEGER, created FLOAT, payload BLOB)")  # fmt: skip
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB)")
    meta = {"readings_taken": 0, "acked_messages": 0, "acked_readings": 0, "dropped_readings": 0,
            "dropped_messages": 0, "full_alarm": 0, "seq:telemetry": 1, "sealed:telemetry": 0, "seq:energy": 1,
            "sealed:energy": 0, "seq:events": 8, "sealed:events": 1}  # fmt: skip
    conn.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
    conn.execute("INSERT INTO events(ts, kind, severity, source, text, data) VALUES (1, 'limit', 'warning', "
                 "'m.v', 'sealed before', NULL)")  # fmt: skip
    conn.execute("INSERT INTO events(ts, kind, severity, source, text, data) VALUES (2, 'limit', 'warning', "
                 "'m.v', 'waiting', NULL)")  # fmt: skip
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()


def test_a_version_1_store_migrates_keeping_its_events_and_their_sequence(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    _version_1_file(path)
    store = make(path)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert store.seal(force=True) == 1
    (msg,) = store.pending(10)
    batch = decode_batch(msg.payload)
    assert (batch.stream, batch.seq, [i["text"] for i in batch.items]) == ("events", 8, ["waiting"])
    store.add_event(3.0, "control_decision", "info", "cap", "d", decision_data(1), stream="control")
    store.seal(force=True)
    control = [decode_batch(m.payload) for m in store.pending(10) if m.stream == "control"]
    assert [(b.seq, len(b.items)) for b in control] == [(1, 1)]
    store.control_record_op(1.0, "cap", "capbank", "capbank.close", 1, {}, "x", keep_s=10.0)
    store.close()
    conn = sqlite3.connect(path)
    assert json.loads(conn.execute("SELECT costs FROM control_ops").fetchone()[0]) == {}
    conn.close()
