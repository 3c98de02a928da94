"""Central against a real Mosquitto and a real store: store then ack, dedupe, gaps, bad input, two workers, the
documented wire schema. Tests taking the ``target`` fixture run on both backends: a SQLite file and a fresh
PostgreSQL database (tests/helpers/stores.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers.aio import async_test, running_tasks, until
from helpers.stores import config_store, pg_database, store_toml, target_fixture  # noqa: F401 (the target fixture)
from helpers.telemetry import doc_examples

from central.cli import main as central_main
from central.config import CentralConfig, CentralConfigError, load_central_config, parse_central_config
from central.ingest import CentralWorker, run_workers
from central.store import CentralStore, CentralStoreError, MessageRefused, open_store
from central.store_pg import SCHEMA_VERSION, PgCentralStore
from protocols.mqtt import BrokerConfig, MqttSession, SessionConfig
from protocols.telemetry.commands import (
    canonical,
    parse_public_key,
    read_command,
    read_result,
    read_signed,
    verify_signed,
)
from protocols.telemetry.schema import (
    DATA_STREAMS,
    MAX_PAYLOAD_BYTES,
    Batch,
    decode_ack,
    decode_batch,
    decode_state,
    encode_ack,
    encode_batch,
    encode_state,
    topic,
)

REPO = Path(__file__).resolve().parent.parent
SITE = "sub-07"


def reading(point: str = "meter1.v_a", ts: float = 1_764_300_000.0, value: float = 120.1) -> dict:
    return {"point": point, "ts": ts, "value": value, "unit": "V", "quality": "good"}


def batch(seq: int, site: str = SITE, stream: str = "telemetry", n: int = 3) -> bytes:
    if stream == "events":
        items = [{"ts": 1_764_300_000.0 + i, "kind": "limit", "severity": "warning", "source": "meter1.v_a",
                  "text": "overvoltage", "data": {"v": 127.0}} for i in range(n)]  # fmt: skip
    else:
        items = [reading(ts=1_764_300_000.0 + i, value=120.0 + i) for i in range(n)]
    return encode_batch(site, stream, seq, f"{site}-{stream}-{seq}", 1_764_300_100.0, items)


def make_config(broker, target: Path | str, **kw: object) -> CentralConfig:
    """Central's config on ``broker`` storing in ``target``: a SQLite file, a folder (central.db in it) or a
    PostgreSQL URL."""
    if isinstance(target, Path) and target.is_dir():
        target = target / "central.db"
    base = {"broker": BrokerConfig("127.0.0.1", broker.port, client_id="central"), **config_store(target),
            "ack_interval_s": 0.02}  # fmt: skip
    return CentralConfig(**{**base, **kw})  # type: ignore[arg-type]


class Agent:
    """The agent's side of the wire, built on the session only: publishes batches, collects acks."""

    def __init__(self, port: int, site: str = SITE) -> None:
        self.site = site
        self.acks: list[str] = []
        self.ack_messages: list[tuple[str, ...]] = []  # one entry per ack received: ids acked together
        self.session = MqttSession(SessionConfig(host="127.0.0.1", port=port, backoff_min_s=0.05, backoff_max_s=0.5))
        self.session.subscribe(topic(site, "ack"), 1, self._on_ack)

    def _on_ack(self, _t: str, payload: bytes) -> None:
        ids = decode_ack(payload).msg_ids
        self.ack_messages.append(ids)
        self.acks.extend(ids)

    async def send(self, payload: bytes, stream: str = "telemetry") -> None:
        await self.session.publish(topic(self.site, stream), payload, qos=1)


def workers_subscribed(status_file: Path, names: tuple[str, ...]) -> bool:
    """True once the status file shows every named worker's session up (connects counts after the SUBACKs)."""
    try:
        workers = json.loads(status_file.read_text())["workers"]
    except (OSError, ValueError):
        return False
    return all(workers.get(w, {}).get("connects", 0) >= 1 for w in names)


async def start(worker: CentralWorker, agent: Agent) -> None:
    await asyncio.wait_for(worker.session.connected.wait(), 10)
    await asyncio.wait_for(agent.session.connected.wait(), 10)


# ---- store ---------------------------------------------------------------------------------------------------


def test_workers_opening_a_new_store_at_the_same_instant_both_open_it(tmp_path: Path) -> None:
    # Two workers share one db file; switching a new file to WAL needs it to itself, and SQLite says
    # "database is locked" at once there (busy_timeout does not apply): without a retry about 10 % of such
    # pairs fail, and one worker failing stops central.
    failures: list[str] = []
    for i in range(100):
        path = tmp_path / f"c{i}.db"
        barrier = threading.Barrier(2)

        def open_it(path: Path = path, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                CentralStore(path).close()
            except CentralStoreError as err:
                failures.append(str(err))

        threads = [threading.Thread(target=open_it) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


def test_store_keeps_a_duplicate_once_and_reports_it(tmp_path: Path, target: Path | str) -> None:
    store = open_store(target)
    b1, b2 = decode_batch(batch(1)), decode_batch(batch(2, stream="events", n=2))
    assert store.store_batches([b1, b2, b1], 1.0) == [True, True, False]
    assert store.store_batch(b1, 2.0) is False
    assert store.count("messages") == 2 and store.count("readings") == 3 and store.count("events") == 2
    store.close()


def test_store_gaps_are_missing_ranges_up_to_the_highest_seq(tmp_path: Path, target: Path | str) -> None:
    store = open_store(target)
    store.store_batches([decode_batch(batch(s)) for s in (2, 3, 6, 7, 10)], 1.0)
    store.store_batches([decode_batch(batch(s, stream="energy")) for s in (1, 2, 3)], 1.0)
    assert store.gaps(SITE, "telemetry") == [(1, 1), (4, 5), (8, 9)]
    assert store.gaps(SITE, "energy") == []
    assert store.gaps("other", "telemetry") == []
    assert store.streams() == [(SITE, "energy"), (SITE, "telemetry")]
    store.close()


def test_store_keeps_the_last_state_received(tmp_path: Path, target: Path | str) -> None:
    store = open_store(target)
    store.set_states([decode_state(encode_state(SITE, "online", 10.0))])
    assert store.state(SITE) == ("online", 10.0)
    store.set_states([decode_state(encode_state(SITE, "offline", 5.0))])  # the will: built before "online"
    assert store.state(SITE) == ("offline", 5.0)
    store.close()


def test_store_is_shared_by_two_connections(tmp_path: Path, target: Path | str) -> None:
    a, b = open_store(target), open_store(target)
    assert a.store_batch(decode_batch(batch(1)), 1.0) is True
    assert b.store_batch(decode_batch(batch(1)), 1.0) is False  # the other connection sees the commit
    a.close()
    b.close()


def event(ts: object = 1_764_300_000.0, data: object = None) -> dict:
    return {"ts": ts, "kind": "limit", "severity": "warning", "source": "meter1.v_a", "text": "t", "data": data}


def past_the_schema(msg_id: str, stream: str, items: list[dict]) -> Batch:
    """A Batch the decoder would refuse, built directly: the store must guard itself too (defence in depth)."""
    return Batch(site=SITE, stream=stream, seq=90, msg_id=msg_id, sent=1.0, items=tuple(items))


def test_store_refuses_one_bad_message_alone_and_stores_the_rest_of_the_flush(
    tmp_path: Path, target: Path | str
) -> None:
    store = open_store(target)
    # the lone surrogate passes the schema (JSON allows the escape) but has no UTF-8 form for SQLite
    surrogate = decode_batch(encode_batch(SITE, "telemetry", 4, "surrogate", 1.0, [reading(point="m.\ud800")]))
    bad = [
        # the first reading is inserted, the second cannot be bound: the savepoint takes the first back too
        past_the_schema("int-2**64", "telemetry", [reading(), {**reading(), "value": 2**64}]),
        past_the_schema("ts-10**400", "events", [event(), event(ts=10**400)]),
        past_the_schema("data-nan", "events", [event(data={"x": float("nan")})]),
        surrogate,
    ]
    results = store.store_batches([decode_batch(batch(1)), *bad, decode_batch(batch(2, stream="events", n=2))], 1.0)
    assert results[0] is True and results[-1] is True
    refused = results[1:-1]
    assert all(isinstance(r, MessageRefused) for r in refused), refused
    assert [r.msg_id for r in refused] == [b.msg_id for b in bad]  # type: ignore[union-attr]
    # the same causes on both backends: each is found in Python, before the database sees the row
    assert [type(r.__cause__) for r in refused] == [OverflowError, OverflowError, ValueError, UnicodeEncodeError]
    assert store.msg_ids() == [f"{SITE}-events-2", f"{SITE}-telemetry-1"]
    assert store.count("readings") == 3 and store.count("events") == 2  # nothing of the refused ones
    # no transaction left open: the next flush stores as usual, and a refused message can be refused again
    assert store.store_batches([decode_batch(batch(3)), surrogate], 2.0)[0] is True
    store.close()


def test_store_answers_each_copy_of_a_flush_in_order_duplicates_and_reused_ids_alike(target: Path | str) -> None:
    """One flush of readings messages with every kind of answer: PostgreSQL takes them set-wise, SQLite one by
    one; the answers are the same, message by message."""
    store = open_store(target)
    try:
        item = [reading()]
        stored = decode_batch(encode_batch(SITE, "telemetry", 1, "b", 1.0, item))
        assert store.store_batches([stored], 1.0) == [True]
        a = decode_batch(encode_batch(SITE, "telemetry", 2, "a", 1.0, item))
        a_other_site = decode_batch(encode_batch("site-x", "telemetry", 2, "a", 1.0, item))
        b_other_seq = decode_batch(encode_batch(SITE, "telemetry", 9, "b", 1.0, item))
        too_big = past_the_schema("c", "telemetry", [{**reading(), "value": 2**64}])
        flush = [a, a_other_site, stored, b_other_seq, too_big, a, decode_batch(batch(3, n=2))]
        results = store.store_batches(flush, 2.0)
        assert results[0] is True and results[2] is False and results[5] is False and results[6] is True
        for i in (1, 3):
            assert isinstance(results[i], MessageRefused) and "already stored for" in str(results[i].__cause__)
        assert isinstance(results[4], MessageRefused) and isinstance(results[4].__cause__, OverflowError)
        assert sorted(store.msg_ids()) == sorted(["a", "b", f"{SITE}-telemetry-3"])
        assert store.count("readings") == 4  # b and a one each, message 3 two
    finally:
        store.close()


def test_store_failing_as_a_whole_rolls_back_everything_and_the_next_call_works(tmp_path: Path) -> None:
    store = CentralStore(tmp_path / "c.db")
    store.store_batch(decode_batch(batch(1)), 1.0)
    # a real disk-full (SQLITE_FULL) in the middle of the transaction: the file may not grow past its size,
    # so the small first message fits in free page space and the large second one does not
    (pages,) = store._db.execute("PRAGMA page_count").fetchone()
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    flush = [decode_batch(batch(2, n=1)), decode_batch(batch(3, n=2000))]
    with pytest.raises(CentralStoreError, match="full") as info:
        store.store_batches(flush, 2.0)
    assert not isinstance(info.value, MessageRefused) and info.value.__cause__ is not None
    assert store.msg_ids() == [f"{SITE}-telemetry-1"] and store.count("readings") == 3  # message 2 rolled back
    store._db.execute("PRAGMA max_page_count = 1073741823")
    assert store.store_batches(flush, 3.0) == [True, True]
    store.close()


def test_store_locked_by_another_writer_fails_whole_and_stores_nothing(tmp_path: Path) -> None:
    store = CentralStore(tmp_path / "c.db", busy_timeout_ms=50)
    other = CentralStore(tmp_path / "c.db")
    other._db.execute("BEGIN IMMEDIATE")  # another worker holding the write lock past our busy timeout
    with pytest.raises(CentralStoreError, match="locked"):
        store.store_batches([decode_batch(batch(1))], 1.0)
    other._db.execute("ROLLBACK")
    assert store.store_batches([decode_batch(batch(1))], 1.0) == [True]
    store.close()
    other.close()


# ---- PostgreSQL only: what SQLite has no counterpart for ------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new PostgreSQL database, dropped after the test."""
    with pg_database() as url:
        yield url


pg = pytest.mark.integration


@pg
def test_postgresql_refuses_a_nul_in_text_alone(pg_url: str) -> None:
    """SQLite keeps a NUL inside text; PostgreSQL cannot: that message is refused by the server, alone."""
    store = PgCentralStore(pg_url)
    try:
        nul = past_the_schema("nul", "telemetry", [reading(), reading(point="m.\x00v")])
        nul_event = past_the_schema("nul-event", "events", [event(), {**event(), "text": "a\x00b"}])
        results = store.store_batches([decode_batch(batch(1)), nul, nul_event, decode_batch(batch(2))], 1.0)
        assert results[0] is True and results[3] is True
        for refused in results[1:3]:
            assert isinstance(refused, MessageRefused) and isinstance(refused.__cause__, psycopg.DataError), refused
        assert store.msg_ids() == [f"{SITE}-telemetry-1", f"{SITE}-telemetry-2"]
        assert store.count("readings") == 6 and store.count("events") == 0
    finally:
        store.close()


@pg
def test_postgresql_store_locked_by_another_session_fails_whole_and_stores_nothing(pg_url: str) -> None:
    store = PgCentralStore(pg_url, lock_timeout_ms=50)
    other = psycopg.connect(pg_url)
    try:
        other.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")  # held until other's transaction ends
        with pytest.raises(CentralStoreError, match="lock timeout") as info:
            store.store_batches([decode_batch(batch(1)), decode_batch(batch(2))], 1.0)
        assert not isinstance(info.value, MessageRefused)
        other.rollback()
        assert store.count("messages") == 0
        assert store.store_batches([decode_batch(batch(1)), decode_batch(batch(2))], 2.0) == [True, True]
    finally:
        other.close()
        store.close()


@pg
def test_postgresql_two_workers_storing_the_same_messages_at_once_store_each_once(pg_url: str) -> None:
    """Two workers (two connections, as on two machines) each get a copy of every message, in opposite orders,
    at the same instant: each msg_id is new to exactly one of them, stored once, and no flush deadlocks."""
    stores = [PgCentralStore(pg_url), PgCentralStore(pg_url)]
    results: dict[int, list] = {0: [], 1: []}
    errors: list[BaseException] = []
    rounds = 20

    def work(k: int, barrier: threading.Barrier) -> None:
        for r in range(rounds):
            flush = [decode_batch(batch(r * 10 + s, n=5)) for s in range(1, 11)]
            barrier.wait()
            try:
                results[k].append(stores[k].store_batches(flush if k == 0 else flush[::-1], 1.0))
            except BaseException as err:
                errors.append(err)

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=work, args=(k, barrier)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        for r in range(rounds):
            first, second = results[0][r], results[1][r][::-1]
            assert all(isinstance(x, bool) for x in first + second)
            assert [a + b for a, b in zip(first, second, strict=True)] == [1] * 10  # new to exactly one worker
        assert stores[0].count("messages") == rounds * 10 and stores[0].count("readings") == rounds * 10 * 5
        assert stores[1].gaps(SITE, "telemetry") == []
    finally:
        for st in stores:
            st.close()


@pg
def test_postgresql_migrations_apply_once_and_readings_go_to_monthly_partitions(pg_url: str) -> None:
    opened: list = []
    barrier = threading.Barrier(3)

    def open_it() -> None:
        barrier.wait()
        opened.append(PgCentralStore(pg_url))

    threads = [threading.Thread(target=open_it) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 3  # three workers starting together on an empty database
    store = opened[0]
    try:
        assert store.schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        assert store.layout == {"readings": "declarative", "intervals": "declarative"}  # no TimescaleDB here
        nov, dec = 1_764_300_000.0, 1_764_600_000.0  # 2025-11-28 and 2025-12-01 (UTC)
        beyond = 2.0**34  # past the wire's range: the DEFAULT partition
        items = [reading(ts=nov), reading(ts=dec), reading(ts=beyond)]
        # a clock gone wrong puts one reading in 1970: that month's partition, not 670 between
        assert store.store_batches([past_the_schema("1970", "telemetry", [reading(ts=nov), reading(ts=5.0)])], 1.0)
        assert store.partitions("readings") == ["readings_y1970m01", "readings_y2025m11"]
        assert store.store_batches([past_the_schema("months", "telemetry", items)], 1.0) == [True]
        assert opened[1].partitions("readings") == ["readings_y1970m01", "readings_y2025m11", "readings_y2025m12"]
        where = store.query("SELECT tableoid::regclass::text, count(*) FROM readings GROUP BY 1 ORDER BY 1")
        assert where == [("readings_default", 1), ("readings_y1970m01", 1), ("readings_y2025m11", 2),
                         ("readings_y2025m12", 1)]  # fmt: skip
        brin = store.query(
            "SELECT tablename FROM pg_indexes WHERE indexdef LIKE %s ORDER BY tablename", ("%USING brin (ts)%",)
        )
        assert [r[0] for r in brin] == ["readings", "readings_default", "readings_y1970m01", "readings_y2025m11",
                                        "readings_y2025m12"]  # fmt: skip
        # a replay into the same partitions stores nothing
        assert store.store_batches([past_the_schema("months", "telemetry", items)], 2.0) == [False]
        assert store.count("readings") == 5
    finally:
        for st in opened:
            st.close()


@pg
def test_postgresql_offering_timescaledb_that_cannot_be_created_falls_back_to_monthly_partitions(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that lists TimescaleDB but cannot create it (not preloaded, here: not installed at all) still gets
    a working store: the attempt is rolled back to its savepoint and the tables are partitioned by month."""
    from central import store_pg

    monkeypatch.setattr(store_pg, "timescale_available", lambda conn: True)
    store = PgCentralStore(pg_url)
    try:
        assert store.layout == {"readings": "declarative", "intervals": "declarative"}
        assert store.store_batches([decode_batch(batch(1))], 1.0) == [True]
        assert store.partitions("readings") == ["readings_y2025m11"] and store.count("readings") == 3
        assert store.query("SELECT count(*) FROM pg_proc WHERE proname = 'gridedge_ts_us'") == [(0,)]
    finally:
        store.close()


@pg
def test_two_central_processes_sharing_one_postgresql_database_store_each_message_once(
    broker, tmp_path: Path, pg_url: str
) -> None:
    """Two `central run` processes (as on two machines) in one shared-subscription group, one database; the agent
    sends every message twice, so copies of one message reach either process: each is stored once, every copy
    acked."""
    procs = []
    for name in ("a", "b"):
        conf = tmp_path / f"central-{name}.toml"
        conf.write_text(f'[broker]\nurl = "mqtt://127.0.0.1:{broker.port}"\nclient_id = "central-{name}"\n'
                        + store_toml(pg_url) + f'[ingest]\nstatus_file = "status-{name}.json"\n')  # fmt: skip
        code = f"import sys; from central.cli import main; sys.exit(main(['run', '--config', {str(conf)!r}]))"
        with (tmp_path / f"central-{name}.log").open("wb") as log:  # a file: a pipe nobody reads could fill up
            procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                                          env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=log))  # fmt: skip

    async def exercise() -> Agent:
        agent = Agent(broker.port)
        async with running_tasks(agent.session.run()):
            await asyncio.wait_for(agent.session.connected.wait(), 10)
            for name in ("a", "b"):
                await until(lambda name=name: workers_subscribed(tmp_path / f"status-{name}.json", ("w1",)), timeout=30)
            for _ in range(2):
                await asyncio.gather(*(agent.send(batch(seq, n=2)) for seq in range(1, 101)))
            await until(lambda: len(agent.acks) == 200, timeout=30)
        return agent

    try:
        agent = asyncio.run(exercise())
        for p in procs:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(15) for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    totals = [json.loads((tmp_path / f"status-{n}.json").read_text())["total"] for n in ("a", "b")]
    assert all(t["received"] > 0 for t in totals)  # the broker shared the copies between the processes
    assert sum(t["received"] for t in totals) == 200
    assert sum(t["stored"] for t in totals) == 100 and sum(t["duplicates"] for t in totals) == 100
    assert sorted(agent.acks) == sorted(f"{SITE}-telemetry-{s}" for s in range(1, 101) for _ in range(2))
    store = PgCentralStore(pg_url)
    try:
        assert store.count("messages") == 100 and store.count("readings") == 200
        assert store.gaps(SITE, "telemetry") == [] and store.reused_seqs(SITE, "telemetry") == []
    finally:
        store.close()


@pg
@async_test
async def test_postgresql_connection_lost_acks_nothing_and_the_flush_is_retried_on_a_new_one(
    broker, pg_url: str
) -> None:
    """The server ends the worker's session (a restart, a failover): the flush fails whole, nothing is acked, and
    the next attempt reconnects and stores it."""
    worker, agent = CentralWorker(make_config(broker, pg_url), "w1"), Agent(broker.port)
    async with running_tasks(worker.run(), agent.session.run()) as (task, _agent_task):
        await start(worker, agent)
        await until(lambda: worker._store is not None)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            (killed,) = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'gridedge-central' AND datname = current_database()"
            ).fetchone()
        assert killed == 1
        await agent.send(batch(1, n=50))
        await until(lambda: agent.acks == [f"{SITE}-telemetry-1"])
        assert worker.stats.store_errors == 1 and worker.stats.stored == 1 and not task.done()
    check = PgCentralStore(pg_url)
    assert check.count("readings") == 50
    check.close()


# ---- config ----------------------------------------------------------------------------------------------------


def test_example_config_loads(repo_root: Path) -> None:
    cfg = load_central_config(repo_root / "config" / "central.toml")
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.tls, cfg.group) == ("127.0.0.1", 1883, False, "central")
    assert cfg.db_path == repo_root / "run" / "central.db"
    assert cfg.backoff_max_s == 5.0 and cfg.status_file == repo_root / "run" / "central-status.json"


@pytest.mark.parametrize(
    ("raw", "key", "text"),
    [
        ({"broker": {"url": "http://x"}, "store": {"db": "c.db"}}, "broker.url", "mqtt://"),
        ({"broker": {"url": "mqtt://x:99999"}, "store": {"db": "c.db"}}, "broker.url", "1..65535"),
        ({"broker": {"url": "mqtt://x"}}, "store.db", "required"),
        ({"broker": {"url": "mqtt://x"}, "store": {"db": "c.db"}, "ingest": {"group": "a/b"}}, "ingest.group", "'/'"),
        (
            {"broker": {"url": "mqtt://x"}, "store": {"db": "c.db"}, "ingest": {"max_queue": 0}},
            "ingest.max_queue",
            "..",
        ),
        ({"broker": {"url": "mqtt://x", "backoff_max_s": 0}, "store": {"db": "c.db"}}, "broker.backoff_max_s", ".."),
        ({"broker": {"url": "mqtt://x", "colour": 1}, "store": {"db": "c.db"}}, "broker.colour", "unknown key"),
        ({"broker": {"url": "mqtt://x"}, "store": {"url": "mysql://h/db"}}, "store.url", "postgresql://"),
        ({"broker": {"url": "mqtt://x"}, "store": {"url": "postgresql://h:5432"}}, "store.url", "database"),
        ({"broker": {"url": "mqtt://x"}, "store": {"url": "postgresql://h:port/db"}}, "store.url", "1..65535"),
        ({"broker": {"url": "mqtt://x"}, "store": {"url": "postgresql://h/db", "db": "c.db"}}, "store", "not both"),
        ({"broker": {"url": "mqtt://x"}, "store": {"path": "c.db"}}, "store.path", "unknown key"),
        (
            {"broker": {"url": "mqtt://x", "cert_file": "/nope.pem"}, "store": {"db": "c.db"}},
            "broker.cert_file",
            "no such",
        ),
    ],
)
def test_bad_config_names_key_value_and_allowed(tmp_path: Path, raw: dict, key: str, text: str) -> None:
    with pytest.raises(CentralConfigError) as info:
        parse_central_config(raw, tmp_path / "central.toml")
    assert any(i.key == key and text in i.allowed for i in info.value.issues), str(info.value)


def test_store_url_selects_postgresql_and_its_password_is_never_shown(tmp_path: Path) -> None:
    cfg = parse_central_config({"broker": {"url": "mqtt://x"}, "store": {"url": "postgresql://c:s3cret@db:5433/g"}},
                               tmp_path / "central.toml")  # fmt: skip
    assert cfg.db_path is None and cfg.store_target == "postgresql://c:s3cret@db:5433/g"
    assert cfg.store_name == "postgresql://c:***@db:5433/g" and "s3cret" not in repr(cfg)
    with pytest.raises(CentralConfigError) as info:
        parse_central_config({"broker": {"url": "mqtt://x"}, "store": {"url": "postgresql://c:s3cret@db:x/g"}},
                             tmp_path / "central.toml")  # fmt: skip
    assert "s3cret" not in str(info.value) and "store.url" in str(info.value)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CentralConfigError, match="no such file"):
        load_central_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[broker\n")
    with pytest.raises(CentralConfigError, match="not valid TOML"):
        load_central_config(tmp_path / "bad.toml")


# ---- ingest over the real broker -----------------------------------------------------------------------------


@async_test
async def test_valid_batch_is_stored_then_acked(broker, tmp_path: Path, target: Path | str) -> None:
    worker, agent = CentralWorker(make_config(broker, target), "w1"), Agent(broker.port)
    async with running_tasks(worker.run(), agent.session.run()):
        await start(worker, agent)
        await agent.send(batch(1))
        await agent.send(batch(1, stream="events", n=2), stream="events")
        await until(lambda: len(agent.acks) == 2)
        # the ack came after the commit: a fresh connection already sees the rows
        store = open_store(target)
        assert store.count("messages") == 2 and store.count("readings") == 3 and store.count("events") == 2
        store.close()
    assert sorted(agent.acks) == [f"{SITE}-events-1", f"{SITE}-telemetry-1"]
    assert worker.stats.stored == 2 and worker.stats.invalid == 0 and worker.stats.acks_sent >= 1


@async_test
async def test_duplicate_is_stored_once_and_acked_again(broker, tmp_path: Path, target: Path | str) -> None:
    worker, agent = CentralWorker(make_config(broker, target), "w1"), Agent(broker.port)
    async with running_tasks(worker.run(), agent.session.run()):
        await start(worker, agent)
        await agent.send(batch(1))
        await until(lambda: len(agent.acks) == 1)
        await agent.send(batch(1))  # our ack was "lost": the agent resends
        await until(lambda: len(agent.acks) == 2)
    assert agent.acks == [f"{SITE}-telemetry-1"] * 2
    assert worker.stats.stored == 1 and worker.stats.duplicates == 1
    store = open_store(target)
    assert store.count("messages") == 1 and store.count("readings") == 3
    store.close()


def stored_state(target: Path | str) -> tuple[str, float] | None:
    store = open_store(target)
    try:
        return store.state(SITE)
    finally:
        store.close()


@async_test
async def test_state_messages_are_recorded(broker, tmp_path: Path, target: Path | str) -> None:
    worker, agent = CentralWorker(make_config(broker, target), "w1"), Agent(broker.port)
    async with running_tasks(worker.run(), agent.session.run()):
        await start(worker, agent)
        await agent.session.publish(topic(SITE, "state"), encode_state(SITE, "online", 100.0), retain=True)
        await until(lambda: worker.stats.states == 1)
        await until(lambda: stored_state(target) is not None)  # received first, stored by the next flush
    assert stored_state(target) == ("online", 100.0)


@async_test
async def test_malformed_messages_are_counted_not_stored_not_acked(broker, tmp_path: Path, target: Path | str) -> None:
    worker, agent = CentralWorker(make_config(broker, target), "w1"), Agent(broker.port)
    good = json.loads(batch(5))
    bad_version = {**good, "v": 2, "msg_id": "v2"}
    bad_field = {**good, "msg_id": "badq", "items": [{**reading(), "quality": "superb"}]}
    other_site = {**good, "msg_id": "wrong-site", "site": "elsewhere"}  # topic says SITE
    async with running_tasks(worker.run(), agent.session.run()):
        await start(worker, agent)
        for payload in (b"not json {", b"\xff\xfe", json.dumps(bad_version).encode(), json.dumps(bad_field).encode(),
                        json.dumps(other_site).encode()):  # fmt: skip
            await agent.send(payload)
        await agent.session.publish(topic(SITE, "state"), b'{"v":1,"site":"sub-07","status":"dozing","ts":1}')
        await until(lambda: worker.stats.invalid == 6)
        await agent.send(batch(6))  # still alive and acking after the garbage
        await until(lambda: len(agent.acks) == 1)
    assert agent.acks == [f"{SITE}-telemetry-6"]
    assert worker.stats.received == 6 and worker.stats.stored == 1
    store = open_store(target)
    assert store.msg_ids() == [f"{SITE}-telemetry-6"] and store.state(SITE) is None
    store.close()


def hostile(n: int, stream: str, item: dict, **envelope: object) -> tuple[str, bytes]:
    """(stream, a batch with raw JSON literals): "@NAN@", "@INF@", "@1e999@" become NaN, Infinity, 1e999."""
    obj = {"v": 1, "site": SITE, "stream": stream, "seq": n, "msg_id": f"bad-{n}", "sent": 1_764_300_100.0,
           "items": [item], **envelope}  # fmt: skip
    text = json.dumps(obj)
    for mark, literal in (("@NAN@", "NaN"), ("@INF@", "Infinity"), ("@1e999@", "1e999")):
        text = text.replace(f'"{mark}"', literal)
    return stream, text.encode()


HOSTILE = [
    ("value 2**64", hostile(101, "telemetry", {**reading(), "value": 2**64})),
    ("event ts 10**400", hostile(102, "events", event(ts=10**400))),
    ("reading ts NaN", hostile(103, "telemetry", {**reading(), "ts": "@NAN@"})),
    ("value Infinity", hostile(104, "telemetry", {**reading(), "value": "@INF@"})),
    ("event data 1e999", hostile(105, "events", event(data={"x": "@1e999@"}))),
    ("sent NaN", hostile(106, "telemetry", reading(), sent="@NAN@")),
    ("seq 2**64", hostile(107, "telemetry", reading(), seq=2**64)),
    # valid JSON and schema, refused by the store (no UTF-8 form): the path through the per-message savepoint
    (
        "lone surrogate",
        ("telemetry", encode_batch(SITE, "telemetry", 108, "bad-108", 1.0, [reading(point="m.\ud800")])),
    ),
]


@async_test
async def test_hostile_messages_in_one_flush_with_good_ones_only_the_good_are_stored_and_acked(
    broker, tmp_path: Path, target: Path | str
) -> None:
    worker, agent = CentralWorker(make_config(broker, target, ack_interval_s=0.5), "w1"), Agent(broker.port)
    async with running_tasks(worker.run(), agent.session.run()) as (task, _agent_task):
        await start(worker, agent)
        # one burst: the worker sleeps ack_interval_s after the first message, so all land in one flush. Handed to
        # the client at once, in order (not one PUBACK after another, which a loaded machine can stretch past it)
        burst = [("telemetry", batch(1)), *(bad for _name, bad in HOSTILE), ("telemetry", batch(2))]
        await asyncio.gather(*(agent.send(payload, stream=stream) for stream, payload in burst))
        await until(lambda: len(agent.acks) == 2 and worker.stats.invalid == len(HOSTILE))
        assert agent.ack_messages == [(f"{SITE}-telemetry-1", f"{SITE}-telemetry-2")]  # one flush, one ack
        assert not task.done()
        await agent.send(batch(3))  # still storing and acking
        await until(lambda: len(agent.acks) == 3)
        assert not task.done()
    assert agent.acks == [f"{SITE}-telemetry-{s}" for s in (1, 2, 3)]
    assert worker.stats.stored == 3 and worker.stats.invalid == len(HOSTILE) and worker.stats.flush_errors == 0
    store = open_store(target)
    assert store.msg_ids() == [f"{SITE}-telemetry-{s}" for s in (1, 2, 3)] and store.count("readings") == 9
    store.close()


@async_test
async def test_central_keeps_storing_after_each_hostile_message(broker, tmp_path: Path, target: Path | str) -> None:
    """No such message ends a worker: run_workers runs them in one TaskGroup, where one worker's exception would
    end them all."""
    agent = Agent(broker.port)
    status = tmp_path / "status.json"
    central = asyncio.create_task(run_workers(make_config(broker, target, status_file=status), 2))
    async with running_tasks(agent.session.run()):
        await asyncio.wait_for(agent.session.connected.wait(), 10)
        # a batch published before its shared subscription exists is dropped by the broker: wait for both SUBACKs
        await until(lambda: workers_subscribed(status, ("w1", "w2")), timeout=20)
        for n, (name, (stream, payload)) in enumerate(HOSTILE, start=1):
            await agent.send(payload, stream=stream)
            await agent.send(batch(n))
            await until(lambda n=n: len(agent.acks) == n)
            assert not central.done(), f"central ended after {name}: {central}"
        central.cancel()
        with pytest.raises(asyncio.CancelledError):
            await central
    assert agent.acks == [f"{SITE}-telemetry-{n}" for n in range(1, len(HOSTILE) + 1)]
    store = open_store(target)
    assert store.count("messages") == len(HOSTILE)
    store.close()


@async_test
async def test_store_failure_acks_nothing_and_the_flush_is_retried_until_stored(broker, tmp_path: Path) -> None:
    worker, agent = CentralWorker(make_config(broker, tmp_path / "central.db"), "w1"), Agent(broker.port)
    async with running_tasks(worker.run(), agent.session.run()) as (task, _agent_task):
        await start(worker, agent)
        store = worker._store
        assert store is not None
        with store._lock:  # a real SQLITE_FULL on the worker's own connection: the file may not grow
            (pages,) = store._db.execute("PRAGMA page_count").fetchone()
            store._db.execute(f"PRAGMA max_page_count = {pages}")
        await agent.send(batch(1, n=2000))
        await until(lambda: worker.stats.store_errors >= 2)  # failed, queued again, failed again
        assert agent.acks == [] and not task.done()
        with store._lock:  # space again: the queued flush goes in without the agent resending anything
            store._db.execute("PRAGMA max_page_count = 1073741823")
        await until(lambda: agent.acks == [f"{SITE}-telemetry-1"])
        assert worker.stats.stored == 1 and worker.stats.dropped == 0
    check = CentralStore(tmp_path / "central.db")
    assert check.count("readings") == 2000
    check.close()


@async_test
async def test_an_unexpected_error_in_a_flush_does_not_end_the_worker(
    broker, tmp_path: Path, target: Path | str, mocker
) -> None:
    """A bug (here: the ack encoder raising once) is logged and counted; the loop goes on; nothing is lost."""
    from central import ingest

    real = ingest.encode_ack
    calls = {"n": 0}

    def flaky(site: str, ids: object) -> bytes:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug")
        return real(site, ids)  # type: ignore[arg-type]

    mocker.patch.object(ingest, "encode_ack", flaky)
    worker, agent = CentralWorker(make_config(broker, target), "w1"), Agent(broker.port)
    async with running_tasks(worker.run(), agent.session.run()) as (task, _agent_task):
        await start(worker, agent)
        await agent.send(batch(1))
        await until(lambda: worker.stats.flush_errors == 1)  # stored, but its ack was lost to the bug
        await agent.send(batch(2))
        await until(lambda: agent.acks == [f"{SITE}-telemetry-2"])
        await agent.send(batch(1))  # the agent resends what was never acked: a duplicate, acked now
        await until(lambda: len(agent.acks) == 2)
        assert not task.done()
    assert agent.acks == [f"{SITE}-telemetry-2", f"{SITE}-telemetry-1"]
    assert worker.stats.stored == 2 and worker.stats.duplicates == 1


@async_test
async def test_gaps_after_ingest_and_from_the_cli(broker, tmp_path: Path, target: Path | str, capsys) -> None:
    worker, agent = CentralWorker(make_config(broker, target), "w1"), Agent(broker.port)
    async with running_tasks(worker.run(), agent.session.run()):
        await start(worker, agent)
        for seq in (1, 2, 5, 9):
            await agent.send(batch(seq))
        await until(lambda: len(agent.acks) == 4)
    conf = tmp_path / "central.toml"
    conf.write_text(f'[broker]\nurl = "mqtt://127.0.0.1:{broker.port}"\n' + store_toml(target))
    assert central_main(["gaps", "--config", str(conf)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [f"site={SITE} stream=telemetry missing_seq=3-4 count=2",
                   f"site={SITE} stream=telemetry missing_seq=6-8 count=3"]  # fmt: skip


@async_test
async def test_two_workers_share_the_subscription_and_store_each_message_once(
    broker, tmp_path: Path, target: Path | str
) -> None:
    cfg = make_config(broker, target, status_file=tmp_path / "status.json")
    agent = Agent(broker.port)
    task = asyncio.create_task(run_workers(cfg, 2))
    async with running_tasks(agent.session.run()):
        await asyncio.wait_for(agent.session.connected.wait(), 10)

        await until(lambda: workers_subscribed(tmp_path / "status.json", ("w1", "w2")), timeout=20)
        await asyncio.gather(*(agent.send(batch(seq, n=2)) for seq in range(1, 201)))
        await until(lambda: len(set(agent.acks)) == 200, timeout=20)
        await asyncio.sleep(1.2)  # one more status write
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    status = json.loads((tmp_path / "status.json").read_text())
    w1, w2 = status["workers"]["w1"], status["workers"]["w2"]
    assert w1["received"] > 0 and w2["received"] > 0  # the broker shared the load
    assert w1["received"] + w2["received"] == 200 and status["total"]["stored"] == 200
    store = open_store(target)
    assert sorted(store.msg_ids()) == sorted(f"{SITE}-telemetry-{s}" for s in range(1, 201))
    assert store.count("readings") == 400 and store.gaps(SITE, "telemetry") == []
    store.close()


def all_subscribed(status: Path, workers: int) -> bool:
    """Every worker's session is up with the SUBACK of every filter (a message published now reaches one)."""
    try:
        doc = json.loads(status.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return len(doc["workers"]) == workers and all(w["connects"] >= 1 for w in doc["workers"].values())


def test_cli_run_in_a_process_stores_acks_and_stops_on_sigterm(broker, tmp_path: Path, target: Path | str) -> None:
    conf = tmp_path / "central.toml"
    conf.write_text(
        f'[broker]\nurl = "mqtt://127.0.0.1:{broker.port}"\n'
        + store_toml(target)
        + '[ingest]\nstatus_file = "status.json"\n'
    )
    code = f"import sys; from central.cli import main; sys.exit(main(['run', '--config', {str(conf)!r}, '--workers', '2']))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stderr=subprocess.PIPE)  # fmt: skip

    async def exercise() -> None:
        agent = Agent(broker.port)
        async with running_tasks(agent.session.run()):
            await asyncio.wait_for(agent.session.connected.wait(), 10)
            await until(lambda: all_subscribed(tmp_path / "status.json", 2), timeout=30)
            await agent.send(batch(1))
            await until(lambda: agent.acks == [f"{SITE}-telemetry-1"])

    try:
        asyncio.run(exercise())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        proc.stderr.close()
    assert "gridedge.central event=central_stopped" in log
    assert json.loads((tmp_path / "status.json").read_text())["total"]["stored"] == 1


def test_cli_usage_and_config_errors(tmp_path: Path, capsys) -> None:
    assert central_main([]) == 2
    assert central_main(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
    conf = tmp_path / "c.toml"
    conf.write_text('[broker]\nurl = "mqtt://127.0.0.1"\n[store]\ndb = "c.db"\n')
    assert central_main(["run", "--config", str(conf), "--workers", "0"]) == 2
    assert central_main(["gaps", "--config", str(conf)]) == 0
    assert capsys.readouterr().out.strip() == "no gaps"


# ---- the documented wire schema --------------------------------------------------------------------------------


def doc_public_keys(repo_root: Path, heading: str) -> list:
    """The throwaway public keys the doc names under ``heading`` ("public key is `...`")."""
    text = (repo_root / "docs" / "telemetry.md").read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return [parse_public_key(k) for k in re.findall(r"public key is\s+`([A-Za-z0-9+/=]{44})`", section)]


def test_every_json_example_in_the_doc_decodes_with_the_schema(repo_root: Path) -> None:
    examples = doc_examples(repo_root)
    kinds: set[str] = set()
    for heading, obj in examples:
        raw = json.dumps(obj).encode()
        # decode, then encode again: the example must hold exactly the fields the encoders write
        if "payload" in obj:  # a signed command: it verifies with the key the doc names, and reads back
            (key,) = doc_public_keys(repo_root, heading)
            signed = read_signed(raw)
            assert verify_signed(signed, key), heading
            read_command(signed)
            again = canonical({"v": 1, "key_id": signed.key_id, "payload": signed.payload.decode(), "sig": signed.sig})
            kinds.add("cmd")
        elif "items" in obj:
            b = decode_batch(raw)
            again = encode_batch(b.site, b.stream, b.seq, b.msg_id, b.sent, b.items)
            kinds.add(b.stream)
            if b.stream == "results":
                (key,) = doc_public_keys(repo_root, heading)
                assert all(read_result(i["data"], key).site == b.site for i in b.items), heading
        elif "acks" in obj:
            a = decode_ack(raw)
            assert a.msg_ids
            again = encode_ack(a.site, a.msg_ids)
            kinds.add("ack")
        elif "status" in obj:
            st = decode_state(raw)
            again = encode_state(st.site, st.status, st.ts, st.version)
            kinds.add(st.status)
        else:
            raise AssertionError(f"example under {heading!r} is none of batch, ack, state: {obj}")
        assert json.loads(again) == obj, heading
    assert kinds == {*DATA_STREAMS, "cmd", "ack", "online", "offline"}  # one example of each


def test_the_doc_has_an_example_and_a_topic_row_for_every_stream_the_schema_knows(repo_root: Path) -> None:
    """Tied to the code's DATA_STREAMS: a stream added to the schema without its example fails here."""
    kinds = set()
    for _heading, obj in doc_examples(repo_root):
        kinds.add(obj.get("stream") or ("ack" if "acks" in obj else "cmd" if "payload" in obj else obj.get("status")))
    assert kinds == {*DATA_STREAMS, "cmd", "ack", "online", "offline"}
    text = (repo_root / "docs" / "telemetry.md").read_text()
    rows = set(re.findall(r"^\| `gridedge/v1/<site>/([a-z]+)` \|", text, flags=re.M))
    assert rows == {*DATA_STREAMS, "ack", "state", "cmd"}


def test_fields_added_within_v1_are_ignored_by_the_receivers(tmp_path: Path, target: Path | str) -> None:
    """The doc's versioning rule: within v1 a field may be added and receivers ignore it."""
    obj = json.loads(batch(1))
    obj["epoch"] = "a-later-field"
    obj["items"][0]["accuracy_pct"] = 0.2
    b = decode_batch(json.dumps(obj).encode())
    store = open_store(target)
    try:
        assert store.store_batches([b], 1.0) == [True] and store.count("readings") == 3
    finally:
        store.close()


# ---- one msg_id per site, reused sequences, duplicates over two workers, oversized messages ------------------


def test_a_msg_id_reused_by_another_site_is_refused_not_taken_for_a_duplicate(
    tmp_path: Path, target: Path | str
) -> None:
    """Acking it as a duplicate would make the second agent delete a message central never stored."""
    store = open_store(target)
    try:
        item = [{"point": "m.v_a", "ts": 1.0, "value": 1.0, "unit": "V", "quality": "good"}]
        first = decode_batch(encode_batch("site-a", "telemetry", 1, "same-id", 2.0, item))
        other_site = decode_batch(encode_batch("site-b", "telemetry", 1, "same-id", 2.0, item))
        other_seq = decode_batch(encode_batch("site-a", "telemetry", 2, "same-id", 2.0, item))
        resent = decode_batch(encode_batch("site-a", "telemetry", 1, "same-id", 9.0, item))
        results = store.store_batches([first, other_site, other_seq, resent], 10.0)
        assert results[0] is True and results[3] is False  # the real resend is still a duplicate
        for refused in results[1:3]:
            assert isinstance(refused, MessageRefused) and "already stored for site=site-a" in str(refused.__cause__)
        assert store.count("messages") == 1 and store.count("readings") == 1
    finally:
        store.close()


@async_test
async def test_central_does_not_ack_a_msg_id_another_site_owns(broker, tmp_path: Path, target: Path | str) -> None:
    worker = CentralWorker(make_config(broker, target), "w1")
    a, b = Agent(broker.port, "site-a"), Agent(broker.port, "site-b")
    async with running_tasks(worker.run(), a.session.run(), b.session.run()):
        await start(worker, a)
        await asyncio.wait_for(b.session.connected.wait(), 10)
        await a.send(encode_batch("site-a", "telemetry", 1, "m-1", 2.0, []))
        await until(lambda: a.acks == ["m-1"])
        await b.send(encode_batch("site-b", "telemetry", 1, "m-1", 2.0, []))
        await until(lambda: worker.stats.invalid == 1)
        await b.send(encode_batch("site-b", "telemetry", 2, "m-2", 2.0, []))  # b's next message goes through
        await until(lambda: b.acks == ["m-2"])
    assert worker.stats.duplicates == 0 and worker.stats.stored == 2


def test_a_restarted_agent_sequence_is_reported_by_gaps(tmp_path: Path, target: Path | str, capsys) -> None:
    """A replaced agent store starts again at seq 1 with new msg_ids: stored (new data), and reported, since
    missing seqs below the earlier run's highest one can no longer be seen."""
    store = open_store(target)
    try:
        first_run = [decode_batch(batch(seq)) for seq in range(1, 6)]
        second_run = [
            decode_batch(encode_batch(SITE, "telemetry", seq, f"new-store-{seq}", 3.0, [])) for seq in (1, 2, 4)
        ]
        store.store_batches([*first_run, *second_run], 10.0)
        assert store.gaps(SITE, "telemetry") == []  # blind to the new run's missing 3
        assert store.reused_seqs(SITE, "telemetry") == [(1, 2), (4, 4)]
    finally:
        store.close()
    conf = tmp_path / "central.toml"
    conf.write_text('[broker]\nurl = "mqtt://127.0.0.1:1883"\n' + store_toml(target))
    assert central_main(["gaps", "--config", str(conf)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in out] == [f"site={SITE} stream=telemetry reused_seq=1-2 count=2",
                                                     f"site={SITE} stream=telemetry reused_seq=4 count=1"]  # fmt: skip


@async_test
async def test_duplicates_spread_over_two_workers_are_stored_once_and_acked_each_time(
    broker, tmp_path: Path, target: Path | str
) -> None:
    """Every message is sent twice; the shared subscription hands copies to either worker, both writing the
    same SQLite file: one row per msg_id, every copy acked (the agent stops resending whichever ack it got)."""
    cfg = make_config(broker, target, status_file=tmp_path / "status.json")
    agent = Agent(broker.port)
    task = asyncio.create_task(run_workers(cfg, 2))
    try:
        async with running_tasks(agent.session.run()):
            await asyncio.wait_for(agent.session.connected.wait(), 10)
            await until(lambda: workers_subscribed(tmp_path / "status.json", ("w1", "w2")), timeout=20)
            for _ in range(2):
                await asyncio.gather(*(agent.send(batch(seq, n=2)) for seq in range(1, 101)))
            await until(lambda: len(agent.acks) == 200, timeout=30)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    status = json.loads((tmp_path / "status.json").read_text())
    w1, w2 = status["workers"]["w1"], status["workers"]["w2"]
    assert w1["received"] > 0 and w2["received"] > 0
    assert status["total"]["stored"] == 100 and status["total"]["duplicates"] == 100
    assert sorted(agent.acks) == sorted(f"{SITE}-telemetry-{s}" for s in range(1, 101) for _ in range(2))
    store = open_store(target)
    try:
        assert store.count("messages") == 100 and store.count("readings") == 200
        assert store.gaps(SITE, "telemetry") == [] and store.reused_seqs(SITE, "telemetry") == []
    finally:
        store.close()


@async_test
async def test_an_oversized_message_through_the_broker_is_refused_logged_and_not_acked(
    broker, tmp_path: Path, target: Path | str, caplog: pytest.LogCaptureFixture
) -> None:
    """A payload past MAX_PAYLOAD_BYTES (4 MiB) is refused before parsing, counted, logged, never stored."""
    caplog.set_level(logging.WARNING, logger="gridedge.central.ingest")
    worker, agent = CentralWorker(make_config(broker, target), "w1"), Agent(broker.port)
    good = json.loads(batch(1))
    huge = {**good, "msg_id": "huge", "items": [{**good["items"][0], "point": "p" * MAX_PAYLOAD_BYTES}]}
    async with running_tasks(worker.run(), agent.session.run()) as (task, _):
        await start(worker, agent)
        await agent.send(json.dumps(huge).encode())
        await until(lambda: worker.stats.invalid == 1)
        await agent.send(batch(2))
        await until(lambda: agent.acks == [f"{SITE}-telemetry-2"])
        assert not task.done()
    assert worker.stats.stored == 1 and worker.stats.received == 2
    refused = [r.getMessage() for r in caplog.records if "event=central_invalid_message" in r.getMessage()]
    assert len(refused) == 1 and f"exceeds {MAX_PAYLOAD_BYTES}" in refused[0] and len(refused[0]) < 400
