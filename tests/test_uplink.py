"""Uplink end to end: the real agent Store, the real session, a real Mosquitto that dies, the real central."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from pathlib import Path

from helpers.aio import async_test, running_tasks, until
from helpers.stores import config_store, query, target_fixture  # noqa: F401 (the target fixture)

from agent.points import Reading, Stream
from agent.store import AsyncStore, Store
from agent.uplink import Uplink, session_config_for
from central.config import CentralConfig
from central.ingest import CentralWorker
from central.store import open_store
from protocols.mqtt import BrokerConfig, MqttSession
from protocols.telemetry.schema import decode_state, encode_ack, topic

SITE = "feeder-12"


def make_store(tmp_path: Path, batch_size: int = 20) -> AsyncStore:
    return AsyncStore(Store(tmp_path / "agent.db", SITE, 64 * 1024 * 1024, batch_size=batch_size, max_age_s=0.05))


def make_session(port: int, client_id: str = f"gridedge-{SITE}") -> MqttSession:
    cfg = session_config_for(site=SITE, host="127.0.0.1", port=port, client_id=client_id, keepalive_s=5)
    return MqttSession(dataclasses.replace(cfg, backoff_min_s=0.05, backoff_max_s=0.5))


def central_worker(port: int, tmp_path: Path, target: Path | str | None = None) -> CentralWorker:
    """Central's worker storing in ``target`` (a SQLite file or a PostgreSQL URL), else tmp_path/central.db."""
    cfg = CentralConfig(
        broker=BrokerConfig("127.0.0.1", port, client_id="central"),
        **config_store(target if target is not None else tmp_path / "central.db"),
        ack_interval_s=0.02,
    )
    return CentralWorker(cfg, "w1")


def readings(start: int, n: int, stream: Stream = Stream.TELEMETRY) -> list[Reading]:
    return [Reading(f"meter1.{stream.value}", 1_764_300_000.0 + (start + i) * 0.001, float(start + i), "V",
                    stream=stream) for i in range(n)]  # fmt: skip


async def outbox_empty(store: AsyncStore) -> bool:
    s = await store.stats()
    return s.outbox_messages == 0 and s.unsealed == 0


def test_session_config_for_sets_the_retained_offline_will() -> None:
    cfg = session_config_for(site=SITE, host="h", port=1883, client_id="c", clock=lambda: 42.0)
    assert cfg.will_topic == topic(SITE, "state") and cfg.will_retain is True
    state = decode_state(cfg.will_payload)
    assert (state.site, state.status, state.ts) == (SITE, "offline", 42.0)


@async_test
async def test_all_readings_reach_central_exactly_once_across_two_broker_kills(
    broker, tmp_path: Path, target: Path | str
) -> None:
    store = make_store(tmp_path)
    session = make_session(broker.port)
    uplink = Uplink(SITE, store, session, max_inflight=8, ack_timeout_s=2.0, poll_s=0.05)
    worker = central_worker(broker.port, tmp_path, target)
    total = 0

    async def produce() -> None:
        nonlocal total
        for round_ in range(60):
            stream = Stream.ENERGY if round_ % 5 == 0 else Stream.TELEMETRY
            await store.add_readings(readings(total, 25, stream))
            total += 25
            if round_ % 10 == 0:
                await store.add_event(1_764_300_000.0 + round_, "limit", "warning", "meter1.v_a", f"round {round_}")
            await asyncio.sleep(0.03)

    try:
        async with running_tasks(session.run(), uplink.run(), worker.run()):
            await asyncio.wait_for(session.connected.wait(), 10)
            producer = asyncio.create_task(produce())
            for kill in range(2):
                await asyncio.sleep(0.4)
                broker.kill()  # SIGKILL: in-flight publishes, acks and queued messages die with it
                await asyncio.sleep(0.3)
                broker.start()
                # each kill must hit a live link: on a loaded machine the agent may still be reconnecting 0.4 s on
                await until(lambda kill=kill: session.stats.connects >= kill + 2, timeout=20)
            await producer
            await until(lambda: outbox_empty(store), timeout=30)
            await until(lambda: worker.stats.stored + worker.stats.duplicates >= 1)
    finally:
        await store.aclose()
    assert session.stats.connects >= 3 and uplink.stats.publish_failures + uplink.stats.resent > 0
    central = open_store(target)
    try:
        assert central.count("readings") == total == 1500  # every reading, none twice
        ((distinct,),) = query(target, "SELECT COUNT(*) FROM (SELECT DISTINCT point, ts FROM readings) AS d")
        assert distinct == total
        assert central.count("events") == 6
        for stream in ("telemetry", "energy", "events"):
            assert central.gaps(SITE, stream) == []
        assert central.state(SITE) is not None and central.state(SITE)[0] == "online"
    finally:
        central.close()
    assert uplink.stats.acked_messages == worker.stats.stored
    assert not uplink.tracked  # every id forgotten once acked


@async_test
async def test_without_central_rows_stay_and_are_resent_after_the_ack_timeout(broker, tmp_path: Path) -> None:
    store = make_store(tmp_path, batch_size=1)
    session = make_session(broker.port)
    uplink = Uplink(SITE, store, session, max_inflight=3, ack_timeout_s=0.5, poll_s=0.05)
    await store.add_readings(readings(0, 10))
    try:
        async with running_tasks(session.run(), uplink.run()):
            await asyncio.wait_for(session.connected.wait(), 10)
            peak = 0
            deadline = time.monotonic() + 20
            # watch until three acks timed out and one message went again (how long that takes depends on the load)
            while not (uplink.stats.ack_timeouts >= 3 and uplink.stats.resent >= 1):
                assert time.monotonic() < deadline, f"no ack timeouts and resends in 20 s: {uplink.stats}"
                peak = max(peak, uplink.inflight)
                await asyncio.sleep(0.01)
            assert peak == 3  # never more than max_inflight awaiting central
            assert uplink.stats.ack_timeouts >= 3 and uplink.stats.resent >= 1
            assert (await store.stats()).outbox_messages == 10  # nothing leaves without central's ack
            worker = central_worker(broker.port, tmp_path)
            async with running_tasks(worker.run()):
                await until(lambda: outbox_empty(store))
            assert worker.stats.stored == 10 and uplink.stats.acked_messages == 10
    finally:
        await store.aclose()


@async_test
async def test_malformed_and_foreign_acks_are_counted_not_fatal(broker, tmp_path: Path) -> None:
    store = make_store(tmp_path)
    session = make_session(broker.port)
    uplink = Uplink(SITE, store, session, poll_s=0.05)
    other = make_session(broker.port, client_id="test-other")
    try:
        async with running_tasks(session.run(), uplink.run(), other.run()) as tasks:
            await asyncio.wait_for(session.connected.wait(), 10)
            await asyncio.wait_for(other.connected.wait(), 10)
            await other.publish(topic(SITE, "ack"), b"{not json")
            await other.publish(topic(SITE, "ack"), b'{"v":1,"site":"%s","acks":[1,2]}' % SITE.encode())
            await other.publish(topic(SITE, "ack"), encode_ack("other-site", ["x"]))
            await until(lambda: uplink.stats.bad_acks == 3)
            assert not tasks[1].done()
            await store.add_readings(readings(0, 5))
            await until(lambda: uplink.stats.published >= 1)
            msg_ids = [m.msg_id for m in await store.pending(10)]
            await other.publish(topic(SITE, "ack"), encode_ack(SITE, msg_ids))
            await until(lambda: outbox_empty(store))
            assert uplink.stats.acked_messages == len(msg_ids) == 1
    finally:
        await store.aclose()


@async_test
async def test_online_state_is_retained_on_connect(broker, tmp_path: Path) -> None:
    store = make_store(tmp_path)
    session = make_session(broker.port)
    uplink = Uplink(SITE, store, session, poll_s=0.05)
    seen: list[bytes] = []
    try:
        async with running_tasks(session.run(), uplink.run()):
            await asyncio.wait_for(session.connected.wait(), 10)
            await asyncio.sleep(0.3)
            watcher = make_session(broker.port, client_id="test-watcher")  # arrives later: gets the retained state
            watcher.subscribe(topic(SITE, "state"), 1, lambda _t, p: seen.append(p))
            async with running_tasks(watcher.run()):
                await until(lambda: len(seen) == 1)
        assert decode_state(seen[0]).status == "online"
    finally:
        await store.aclose()


@async_test
async def test_a_failing_seal_does_not_hold_back_what_is_already_sealed(
    broker, tmp_path: Path, target: Path | str
) -> None:
    """A full disk (SQLite's max_page_count answers SQLITE_FULL, as ENOSPC does) fails every seal; the
    messages sealed before it still reach central and are acked."""
    raw = Store(tmp_path / "agent.db", SITE, 64 * 1024 * 1024, batch_size=20, max_age_s=0.05)
    raw.add_readings(readings(0, 100))
    assert raw.seal(force=True) == 5
    raw.add_readings(readings(100, 500))  # unsealed: sealing these needs room
    raw.conn.execute("PRAGMA incremental_vacuum")  # no free pages left to reuse
    raw.conn.execute(f"PRAGMA max_page_count={raw.conn.execute('PRAGMA page_count').fetchone()[0]}")
    sealed = {m.msg_id for m in raw.pending(100)}
    store = AsyncStore(raw)
    session = make_session(broker.port)
    # ack_timeout_s: a publish that beats central's subscription is sent again
    uplink = Uplink(SITE, store, session, max_inflight=8, ack_timeout_s=1.0, poll_s=0.05)
    worker = central_worker(broker.port, tmp_path, target)
    try:
        async with running_tasks(worker.run(), session.run(), uplink.run()):
            await asyncio.wait_for(session.connected.wait(), 10)
            await until(lambda: uplink.stats.acked_messages == 5)
            assert uplink.stats.seal_errors >= 1 and uplink.stats.store_errors >= uplink.stats.seal_errors
            stats = await store.stats()
            assert stats.outbox_messages == 0 and stats.unsealed == 500  # the failed seals kept nothing half done
            assert worker.stats.stored == 5
            raw.conn.execute("PRAGMA max_page_count=1073741823")  # room again: the rest follows
            await until(lambda: outbox_empty(store))
    finally:
        await store.aclose()
    central = open_store(target)
    try:
        assert central.count("readings") == 600
        assert central.gaps(SITE, "telemetry") == []
    finally:
        central.close()
    assert not sealed & uplink.tracked


@async_test
async def test_bookkeeping_forgets_messages_the_full_policy_dropped(broker, tmp_path: Path) -> None:
    """Broker up, central down: the oldest telemetry is published and resent until the store's full policy
    drops it; the uplink then holds no msg_id that is no longer in the outbox."""
    raw = Store(tmp_path / "agent.db", SITE, 256 * 1024, batch_size=50, max_age_s=0.05)
    store = AsyncStore(raw)
    session = make_session(broker.port)
    uplink = Uplink(SITE, store, session, max_inflight=4, ack_timeout_s=0.1, poll_s=0.02)

    async def outbox_ids() -> set[str]:
        return {m.msg_id for m in await store.pending(1_000_000)}

    async def only_outbox_ids_tracked() -> bool:
        tracked = uplink.tracked
        return bool(tracked) and tracked <= await outbox_ids()

    try:
        async with running_tasks(session.run(), uplink.run()):
            await asyncio.wait_for(session.connected.wait(), 10)
            await store.add_readings(readings(0, 200))
            await until(lambda: uplink.stats.resent >= 4)  # the oldest, published again and again
            first_sent = set(uplink.tracked)
            n = 200
            while raw._db.meta("dropped_messages") == 0:  # fill the store until the policy drops telemetry
                await store.add_readings(readings(n, 500))
                n += 500
                await asyncio.sleep(0.01)
                assert n < 200_000, "the full policy never dropped a message"
            assert not first_sent & await outbox_ids()  # the messages it was resending are gone
            await until(only_outbox_ids_tracked)
            assert len(uplink.tracked) <= uplink.max_inflight
    finally:
        await store.aclose()


# ---- the broker vanishing mid-publish, acks repeated or unknown --------------------------------------------------


@async_test
async def test_publishes_lost_with_the_broker_are_never_acked_and_arrive_once_after_restart(
    broker, tmp_path: Path, target: Path | str
) -> None:
    """The broker freezes (SIGSTOP: no PUBACK can come) while QoS 1 publishes are in flight, then dies. Nothing
    leaves the outbox; after a restart every message reaches central exactly once, from the outbox."""
    store = make_store(tmp_path, batch_size=10)
    session = make_session(broker.port)
    # ack_timeout_s: after the restart a resend may beat central's new subscription (the broker drops it)
    uplink = Uplink(SITE, store, session, max_inflight=4, ack_timeout_s=1.0, poll_s=0.02)
    worker = central_worker(broker.port, tmp_path, target)
    try:
        async with running_tasks(session.run(), uplink.run(), worker.run()):
            await asyncio.wait_for(session.connected.wait(), 10)
            await asyncio.wait_for(worker.session.connected.wait(), 10)
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGSTOP)
            await store.add_readings(readings(0, 80))
            await until(lambda: uplink.inflight == 4)  # in flight to a broker that cannot answer
            broker.kill()
            await until(lambda: uplink.stats.publish_failures >= 4)
            assert uplink.stats.acked_messages == 0 and uplink.stats.published == 0
            assert (await store.stats()).outbox_messages == 8  # PUBACK or not, nothing leaves without central
            broker.start()
            await until(lambda: outbox_empty(store), timeout=30)
    finally:
        await store.aclose()
    assert uplink.stats.acked_messages == 8
    central = open_store(target)
    try:
        assert central.count("messages") == 8 and central.count("readings") == 80
        assert central.gaps(SITE, "telemetry") == []
    finally:
        central.close()


@async_test
async def test_an_ack_repeated_or_for_unknown_ids_removes_each_message_once(broker, tmp_path: Path) -> None:
    store = make_store(tmp_path, batch_size=5)
    session = make_session(broker.port)
    uplink = Uplink(SITE, store, session, poll_s=0.02, ack_timeout_s=30.0)
    central = make_session(broker.port, client_id="test-central")
    try:
        async with running_tasks(session.run(), uplink.run(), central.run()) as tasks:
            await asyncio.wait_for(session.connected.wait(), 10)
            await asyncio.wait_for(central.connected.wait(), 10)
            await store.add_readings(readings(0, 10))
            await until(lambda: uplink.stats.published >= 2)
            ids = [m.msg_id for m in await store.pending(10)]
            assert len(ids) == 2
            ack = encode_ack(SITE, [ids[0], "never-sent", ids[0]])
            for _ in range(2):
                await central.publish(topic(SITE, "ack"), ack)
            await until(lambda: uplink.stats.acks_received == 2)
            await until(lambda: uplink.stats.acked_messages == 1)
            assert [m.msg_id for m in await store.pending(10)] == [ids[1]]
            await central.publish(topic(SITE, "ack"), encode_ack(SITE, [ids[1]]))
            await until(lambda: outbox_empty(store))
            assert not tasks[1].done()
    finally:
        await store.aclose()
    assert uplink.stats.acked_messages == 2 and uplink.stats.bad_acks == 0
