"""Review of the uplink and central ingest (issue 2, parts 5 and 6): the faults found, each pinned by a test.

Real parts: a Mosquitto of the test's own on a free loopback port, the agent's real Store, real SQLite files.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import signal
import threading
from pathlib import Path

import pytest
from helpers.aio import async_test, running_tasks, until
from helpers.net import free_port
from test_central import Agent, batch, doc_examples, make_config, start, workers_subscribed
from test_uplink import SITE as AGENT_SITE
from test_uplink import central_worker, make_session, make_store, outbox_empty, readings

from agent.uplink import Uplink
from central.cli import main as central_main
from central.ingest import CentralWorker, run_workers
from central.store import CentralStore, MessageRefused
from protocols.mqtt import MqttSession, SessionConfig
from protocols.telemetry.schema import DATA_STREAMS, MAX_PAYLOAD_BYTES, decode_batch, encode_ack, encode_batch, topic

pytestmark = pytest.mark.integration
SITE = "sub-07"


class RecordingRandom(random.Random):
    """Records the upper bound of every backoff draw (the exponential part); the jitter is the real one."""

    def __init__(self) -> None:
        super().__init__(3)
        self.bounds: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append(b)
        return super().uniform(a, b)


def paho_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("paho-mqtt-client-")]


# ---- the session's own reconnect loop --------------------------------------------------------------------------


@async_test
async def test_two_sessions_with_one_client_id_back_off_instead_of_storming(broker) -> None:
    """Mosquitto hands the session to the newest client with a client_id: two agents configured with the same
    id kick each other out at every connect. Each link lasts a moment; the backoff must keep growing (it was
    reset at every CONNACK, so both reconnected ~10 times a second for ever)."""
    rngs = [RecordingRandom(), RecordingRandom()]
    cfg = SessionConfig(host="127.0.0.1", port=broker.port, client_id="same-id", backoff_min_s=0.01,
                        backoff_max_s=0.16)  # fmt: skip
    sessions = [MqttSession(cfg, rng=rng) for rng in rngs]
    async with running_tasks(*(s.run() for s in sessions)):
        await until(lambda: all(len(r.bounds) >= 6 for r in rngs), timeout=30)
    assert sum(s.stats.disconnects for s in sessions) >= 6  # they really took each other's session
    for rng in rngs:
        assert rng.bounds[:6] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16, 0.16]), rng.bounds


def test_stable_s_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stable_s"):
        SessionConfig(host="127.0.0.1", stable_s=0)


@async_test
async def test_no_paho_client_thread_outlives_its_connection_attempt() -> None:
    """Our loop owns reconnection: every attempt is a fresh paho client whose thread ends with it (paho's own
    retry is off), so failed attempts never pile up live clients, and none is left after the session ends."""
    before = set(paho_threads())
    rng = RecordingRandom()
    session = MqttSession(SessionConfig(host="127.0.0.1", port=free_port(), client_id="lonely", backoff_min_s=0.01,
                                        backoff_max_s=0.02), rng=rng)  # fmt: skip
    most = 0

    def failed_enough() -> bool:
        nonlocal most
        most = max(most, len(set(paho_threads()) - before))
        return session.stats.connect_failures >= 8

    async with running_tasks(session.run()):
        await until(failed_enough, interval=0.005)
    assert most <= 1
    assert not set(paho_threads()) - before


# ---- the uplink when the broker vanishes mid-publish -----------------------------------------------------------


@async_test
async def test_publishes_lost_with_the_broker_are_never_acked_and_arrive_once_after_restart(
    broker, tmp_path: Path
) -> None:
    """The broker freezes (SIGSTOP: no PUBACK can come) while QoS 1 publishes are in flight, then dies. Nothing
    leaves the outbox; after a restart every message reaches central exactly once, from the outbox."""
    store = make_store(tmp_path, batch_size=10)
    session = make_session(broker.port)
    # ack_timeout_s: after the restart a resend may beat central's new subscription (the broker drops it)
    uplink = Uplink(AGENT_SITE, store, session, max_inflight=4, ack_timeout_s=1.0, poll_s=0.02)
    worker = central_worker(broker.port, tmp_path)
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
    central = CentralStore(tmp_path / "central.db")
    try:
        assert central.count("messages") == 8 and central.count("readings") == 80
        assert central.gaps(AGENT_SITE, "telemetry") == []
    finally:
        central.close()


@async_test
async def test_an_ack_repeated_or_for_unknown_ids_removes_each_message_once(broker, tmp_path: Path) -> None:
    store = make_store(tmp_path, batch_size=5)
    session = make_session(broker.port)
    uplink = Uplink(AGENT_SITE, store, session, poll_s=0.02, ack_timeout_s=30.0)
    central = make_session(broker.port, client_id="test-central")
    try:
        async with running_tasks(session.run(), uplink.run(), central.run()) as tasks:
            await asyncio.wait_for(session.connected.wait(), 10)
            await asyncio.wait_for(central.connected.wait(), 10)
            await store.add_readings(readings(0, 10))
            await until(lambda: uplink.stats.published >= 2)
            ids = [m.msg_id for m in await store.pending(10)]
            assert len(ids) == 2
            ack = encode_ack(AGENT_SITE, [ids[0], "never-sent", ids[0]])
            for _ in range(2):
                await central.publish(topic(AGENT_SITE, "ack"), ack)
            await until(lambda: uplink.stats.acks_received == 2)
            await until(lambda: uplink.stats.acked_messages == 1)
            assert [m.msg_id for m in await store.pending(10)] == [ids[1]]
            await central.publish(topic(AGENT_SITE, "ack"), encode_ack(AGENT_SITE, [ids[1]]))
            await until(lambda: outbox_empty(store))
            assert not tasks[1].done()
    finally:
        await store.aclose()
    assert uplink.stats.acked_messages == 2 and uplink.stats.bad_acks == 0


# ---- central: dedupe, gaps, shared subscriptions ---------------------------------------------------------------


def test_a_msg_id_reused_by_another_site_is_refused_not_taken_for_a_duplicate(tmp_path: Path) -> None:
    """Acking it as a duplicate would make the second agent delete a message central never stored."""
    store = CentralStore(tmp_path / "central.db")
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
async def test_central_does_not_ack_a_msg_id_another_site_owns(broker, tmp_path: Path) -> None:
    worker = CentralWorker(make_config(broker, tmp_path), "w1")
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


def test_a_restarted_agent_sequence_is_reported_by_gaps(tmp_path: Path, capsys) -> None:
    """A replaced agent store starts again at seq 1 with new msg_ids: stored (new data), and reported, since
    missing seqs below the earlier run's highest one can no longer be seen."""
    db = tmp_path / "central.db"
    store = CentralStore(db)
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
    conf.write_text('[broker]\nurl = "mqtt://127.0.0.1:1883"\n[store]\ndb = "central.db"\n')
    assert central_main(["gaps", "--config", str(conf)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in out] == [f"site={SITE} stream=telemetry reused_seq=1-2 count=2",
                                                     f"site={SITE} stream=telemetry reused_seq=4 count=1"]  # fmt: skip


@async_test
async def test_duplicates_spread_over_two_workers_are_stored_once_and_acked_each_time(broker, tmp_path: Path) -> None:
    """Every message is sent twice; the shared subscription hands copies to either worker, both writing the
    same SQLite file: one row per msg_id, every copy acked (the agent stops resending whichever ack it got)."""
    cfg = make_config(broker, tmp_path, status_file=tmp_path / "status.json")
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
    store = CentralStore(tmp_path / "central.db")
    try:
        assert store.count("messages") == 100 and store.count("readings") == 200
        assert store.gaps(SITE, "telemetry") == [] and store.reused_seqs(SITE, "telemetry") == []
    finally:
        store.close()


# ---- the documented schema -------------------------------------------------------------------------------------


def test_the_doc_has_an_example_and_a_topic_row_for_every_stream_the_schema_knows(repo_root: Path) -> None:
    """Tied to the code's DATA_STREAMS: a stream added to the schema without its example fails here."""
    kinds = set()
    for _heading, obj in doc_examples(repo_root):
        kinds.add(obj.get("stream") or ("ack" if "acks" in obj else obj.get("status")))
    assert kinds == {*DATA_STREAMS, "ack", "online", "offline"}
    text = (repo_root / "docs" / "telemetry.md").read_text()
    rows = set(re.findall(r"^\| `gridedge/v1/<site>/([a-z]+)` \|", text, flags=re.M))
    assert rows == {*DATA_STREAMS, "ack", "state"}


def test_fields_added_within_v1_are_ignored_by_the_receivers(tmp_path: Path) -> None:
    """The doc's versioning rule: within v1 a field may be added and receivers ignore it."""
    obj = json.loads(batch(1))
    obj["epoch"] = "a-later-field"
    obj["items"][0]["accuracy_pct"] = 0.2
    b = decode_batch(json.dumps(obj).encode())
    store = CentralStore(tmp_path / "central.db")
    try:
        assert store.store_batches([b], 1.0) == [True] and store.count("readings") == 3
    finally:
        store.close()


@async_test
async def test_an_oversized_message_through_the_broker_is_refused_logged_and_not_acked(
    broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A payload past MAX_PAYLOAD_BYTES (4 MiB) is refused before parsing, counted, logged, never stored."""
    caplog.set_level(logging.WARNING, logger="central.ingest")
    worker, agent = CentralWorker(make_config(broker, tmp_path), "w1"), Agent(broker.port)
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
    refused = [r.getMessage() for r in caplog.records if "central invalid message" in r.getMessage()]
    assert len(refused) == 1 and f"exceeds {MAX_PAYLOAD_BYTES}" in refused[0] and len(refused[0]) < 400
