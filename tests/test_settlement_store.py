"""Central keeps every version of an interval, once: a replay stores nothing, a changed copy of a version is refused
and recorded, the latest version is what settlement reads (on both stores, SQLite and PostgreSQL); through the real
broker too. A PostgreSQL store made before settlement gains its tables by a migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from helpers.aio import async_test, running_tasks, until
from helpers.intervals import DAY0, QH, item
from helpers.stores import ADMIN_URL, admin_connect, pg_database, query, target_fixture  # noqa: F401 (target)
from test_central import Agent, make_config, start

from central.ingest import CentralWorker
from central.settlement.data import load_grids
from central.settlement.db import open_settlement_db
from central.store import CentralStore, open_store, register_at
from protocols.telemetry.schema import decode_batch, encode_batch

SITE = "sub-07"


def msg(seq: int, items: list[dict], msg_id: str | None = None) -> bytes:
    return encode_batch(SITE, "intervals", seq, msg_id or f"iv-{seq}", DAY0 + 10_000.0, items)


def test_register_at_interpolates_between_the_reads_around_it() -> None:
    reads = [(100.0, 10.0), (200.0, 30.0), (300.0, 50.0)]
    assert register_at(reads, 150.0) == 20.0
    assert register_at(reads, 200.0) == 30.0
    assert register_at(reads, 99.0) is None and register_at(reads, 301.0) is None


def test_versions_are_kept_a_replay_stores_nothing_and_a_changed_copy_is_refused(target: Path | str) -> None:
    store = open_store(target)
    try:
        v1 = item(DAY0, 1.5, reg0=1000.0)
        assert store.store_batches([decode_batch(msg(1, [v1]))], 1.0) == [True]
        # the same interval version again in another message: a replay, nothing new
        assert store.store_batches([decode_batch(msg(2, [v1]))], 2.0) == [True]
        assert store.count("intervals") == 1 and store.take_conflicts() == []
        # the same key with other content: refused alone, recorded; the rest of the message is stored
        changed = {**v1, "value": 1.7}
        other = item(DAY0 + QH, 2.0, reg0=2500.0)
        assert store.store_batches([decode_batch(msg(3, [changed, other]))], 3.0) == [True]
        (conflict,) = store.take_conflicts()
        assert (conflict.start, conflict.version, conflict.differs) == (DAY0, 1, ("value",))
        assert store.count("intervals") == 2 and store.count("interval_conflicts") == 1
        # a correction is a new version; both are kept
        v2 = item(DAY0, 1.6, version=2, quality="S", method=11)
        assert store.store_batches([decode_batch(msg(4, [v2]))], 4.0) == [True]
        assert store.count("intervals") == 3
    finally:
        store.close()
    rows = query(target, "SELECT version, value, quality FROM intervals WHERE start = ? ORDER BY version", (DAY0,))
    assert rows == [(1, 1.5, "A"), (2, 1.6, "S")]
    db = open_settlement_db(target)
    grids = load_grids(db, DAY0, DAY0 + 86_400)
    g = grids[(SITE, "meter1", "energy_delivered_wh")]
    assert g.value[0, 0] == 1.6 and g.quality[0, 0] == "S" and g.method[0, 0] == 11 and g.version[0, 0] == 2
    assert g.value[0, 1] == 2.0 and g.quality[0, 2] == "N"
    db.close()


def test_an_older_central_db_gains_the_intervals_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE messages (msg_id TEXT PRIMARY KEY, site TEXT NOT NULL, stream TEXT NOT NULL, "
               "seq INTEGER NOT NULL, count INTEGER NOT NULL, received REAL NOT NULL)")  # fmt: skip
    db.execute("INSERT INTO messages VALUES ('old-1', 'sub-07', 'telemetry', 1, 3, 1.0)")
    db.commit()
    db.close()
    store = CentralStore(path)
    try:
        assert store.count("messages") == 1 and store.count("intervals") == 0
        assert store.store_batches([decode_batch(msg(1, [item(DAY0, 1.0)]))], 1.0) == [True]
        assert store.count("intervals") == 1
    finally:
        store.close()


@pytest.mark.integration
def test_a_postgresql_store_made_before_settlement_gains_its_tables_by_migration(monkeypatch) -> None:
    from central import store_pg

    with pg_database() as url:
        with monkeypatch.context() as m:
            m.setattr(store_pg, "MIGRATIONS", store_pg.MIGRATIONS[:1])
            m.setattr(store_pg, "SCHEMA_VERSION", 1)
            old = open_store(url)
            assert old.store_batches([decode_batch(msg(1, [item(DAY0, 1.5, reg0=1000.0)]))], 1.0) == [True]
            old.close()
        assert query(url, "SELECT to_regclass('settlement_runs')") == [(None,)]
        db = open_settlement_db(url)  # the store at schema 1 is migrated on open
        try:
            # every later migration too (2: settlement's tables; 3: the forecasts table)
            versions = query(url, "SELECT version FROM schema_version ORDER BY version")
            assert versions == [(v,) for v in range(1, store_pg.SCHEMA_VERSION + 1)] and store_pg.SCHEMA_VERSION >= 2
            keys = query(
                url,
                "SELECT t.relname, string_agg(a.attname, ',' ORDER BY k.n) FROM pg_index i "
                "JOIN pg_class t ON t.oid = i.indrelid JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(att, n) "
                "ON true JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.att WHERE i.indisprimary "
                "AND t.relname IN ('settlement_runs', 'settlement_values', 'settlement_imbalance', 'schedules') "
                "GROUP BY t.relname ORDER BY t.relname",
            )
            assert keys == [
                ("schedules", "site,meter,channel,start,version"),
                ("settlement_imbalance", "run_id,site,meter,register,start"),
                ("settlement_runs", "run_id"),
                ("settlement_values", "run_id,site,meter,register,start"),
            ]
            g = load_grids(db, DAY0, DAY0 + 86_400)[(SITE, "meter1", "energy_delivered_wh")]
            assert g.value[0, 0] == 1.5 and g.version[0, 0] == 1
        finally:
            db.close()


@pytest.mark.integration
def test_the_latest_intervals_come_in_sqlites_order_whatever_the_databases_collation(tmp_path: Path) -> None:
    """An ICU en-US database sorts "a" before "B"; SQLite sorts bytes ("B" first). Settlement reads in bytes order
    on both, so its registers, CSV rows and NEM12 records come out in one order."""
    items = [item(DAY0, 1.0, meter=m) for m in ("a", "B", "b-2", "b1")]
    name = "gridedge_test_icu_" + tmp_path.name[-8:].replace("-", "_").lower()
    with admin_connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE \'en-US\' '
                      "LOCALE 'C.UTF-8'")  # fmt: skip
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        orders = []
        for target in (tmp_path / "c.db", url):
            store = open_store(target)
            assert store.store_batches([decode_batch(msg(1, items))], 1.0) == [True]
            store.close()
            db = open_settlement_db(target)
            orders.append([r[1] for r in db.latest_intervals(DAY0, DAY0 + QH)])
            db.close()
        assert query(url, "SELECT meter FROM intervals ORDER BY meter") == [("a",), ("B",), ("b-2",), ("b1",)]
        assert orders == [["B", "a", "b-2", "b1"]] * 2
    finally:
        with admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@async_test
async def test_intervals_through_the_broker_are_stored_acked_and_a_replay_is_acked_again(
    broker, tmp_path: Path
) -> None:
    worker, agent = CentralWorker(make_config(broker, tmp_path), "w1"), Agent(broker.port)
    items = [item(DAY0 + i * QH, 1.0 + i, reg0=1000.0 * (i + 1)) for i in range(4)]
    async with running_tasks(worker.run(), agent.session.run()):
        await start(worker, agent)
        await agent.send(msg(1, items), stream="intervals")
        await until(lambda: len(agent.acks) == 1)
        await agent.send(msg(1, items), stream="intervals")  # the ack was "lost": same msg_id, dropped
        await until(lambda: len(agent.acks) == 2)
        changed = [{**items[0], "value": 9.0}, item(DAY0 + 4 * QH, 5.0)]
        await agent.send(msg(2, changed), stream="intervals")  # a changed copy of a version: refused alone
        await until(lambda: len(agent.acks) == 3)
    assert agent.acks == ["iv-1", "iv-1", "iv-2"]
    assert worker.stats.stored == 2 and worker.stats.duplicates == 1 and worker.stats.interval_conflicts == 1
    store = CentralStore(tmp_path / "central.db")
    try:
        assert store.count("intervals") == 5 and store.count("interval_conflicts") == 1
    finally:
        store.close()
