"""The clustered broker tier: central's [broker] kind = "nats", and a real three-node NATS cluster that loses a
node while an agent's uplink publishes through it and two central workers share one durable consumer."""

from __future__ import annotations

import asyncio
import dataclasses
import tomllib
from pathlib import Path

import pytest
from helpers.aio import async_test, running_tasks, until
from helpers.nats import NatsCluster, NatsNode
from helpers.stores import query

from agent.config import load_config
from agent.points import Reading
from agent.store import AsyncStore, Store
from agent.uplink import Uplink, session_config_from
from central.config import CentralConfig, CentralConfigError, parse_central_config
from central.ingest import CentralWorker
from central.source_nats import NatsConfig, NatsSource, stream_subjects, subject_of, topic_of
from central.store import open_store
from protocols.mqtt import BrokerConfig, MqttSession
from protocols.mqtt.session import SessionConfig
from protocols.telemetry.schema import decode_ack, encode_batch, topic

SITE = "feeder-7"
REPO = Path(__file__).resolve().parent.parent


def parse(tmp_path: Path, broker: dict, ingest: dict | None = None) -> CentralConfig:
    raw = {"broker": broker, "store": {"db": "central.db"}, "ingest": ingest or {}}
    return parse_central_config(raw, tmp_path / "central.toml")


def issues(tmp_path: Path, broker: dict, ingest: dict | None = None) -> dict[str, str]:
    with pytest.raises(CentralConfigError) as err:
        parse(tmp_path, broker, ingest)
    return {i.key: i.allowed for i in err.value.issues}


# ---- configuration ---------------------------------------------------------------------------------------------


def test_nats_section_gives_the_cluster_the_stream_and_the_group_as_durable_consumer(tmp_path: Path) -> None:
    cfg = parse(tmp_path, {"kind": "nats", "servers": ["nats://10.0.0.11", "nats://10.0.0.12:4223"],
                           "replicas": 5, "ack_wait_s": 10}, {"group": "ingest-a"})  # fmt: skip
    assert cfg.nats == NatsConfig(servers=("nats://10.0.0.11:4222", "nats://10.0.0.12:4223"), consumer="ingest-a",
                                  replicas=5, ack_wait_s=10.0)  # fmt: skip
    assert (cfg.broker.host, cfg.broker.port) == ("10.0.0.11", 4222)  # what logs name as central's broker


def test_mqtt_url_gives_central_s_mqtt_clients_a_node_s_listener_over_mqtt_3_1_1(tmp_path: Path) -> None:
    """`central command`, dispatch and the forecasts' publisher are MQTT clients: on the NATS tier they reach a
    node's MQTT listener, with NATS's login, over MQTT 3.1.1 (the only version nats-server 2.9 speaks)."""
    cfg = parse(tmp_path, {"kind": "nats", "servers": ["nats://10.0.0.11"], "mqtt_url": "mqtt://10.0.0.11:1884",
                           "username": "central", "password": "pw"})  # fmt: skip
    session = cfg.broker.session_config()
    assert (session.host, session.port, session.protocol, session.username) == ("10.0.0.11", 1884, 4, "central")
    assert cfg.nats is not None and cfg.nats.servers == ("nats://10.0.0.11:4222",)  # the ingest still pulls over NATS
    assert issues(tmp_path, {"kind": "nats", "servers": ["nats://h"], "mqtt_url": "nats://h:4222"}) == {
        "broker.mqtt_url": "must be a URL mqtt://host[:port] or mqtts://host[:port]"}  # fmt: skip


def test_mqtt_stays_the_default_kind(tmp_path: Path) -> None:
    cfg = parse(tmp_path, {"url": "mqtt://127.0.0.1:1883"})
    assert cfg.nats is None and cfg.broker.port == 1883
    assert parse(tmp_path, {"kind": "mqtt", "url": "mqtt://127.0.0.1:1883"}).nats is None


def test_a_bad_kind_names_the_key_and_the_allowed_values(tmp_path: Path) -> None:
    assert issues(tmp_path, {"kind": "kafka", "url": "mqtt://h"}) == {"broker.kind": "must be one of 'mqtt', 'nats'"}


@pytest.mark.parametrize(
    ("broker", "ingest", "key", "says"),
    [
        ({}, {}, "broker.servers", "is required"),
        ({"servers": []}, {}, "broker.servers", "nats://host[:port]"),
        ({"servers": "nats://h"}, {}, "broker.servers", "a list of NATS URLs"),
        ({"servers": ["mqtt://h:1883"]}, {}, "broker.servers[0]", "nats://host[:port] or tls://host[:port]"),
        ({"servers": ["nats://h", 4222]}, {}, "broker.servers[1]", "nats://host[:port]"),
        ({"servers": ["nats://h:70000"]}, {}, "broker.servers[0]", "1..65535"),
        ({"servers": ["nats://u:pw@h"]}, {}, "broker.servers[0]", "must not carry credentials"),
        ({"servers": ["nats://a", "tls://b"]}, {}, "broker.servers", "all nats:// or all tls://"),
        ({"servers": ["nats://h"], "replicas": 2}, {}, "broker.replicas", "one of 1, 3, 5"),
        ({"servers": ["nats://h"], "stream": "grid.edge"}, {}, "broker.stream", "no '.', '*', '>'"),
        ({"servers": ["nats://h"]}, {"group": "central.a"}, "ingest.group", "names the durable consumer"),
        ({"servers": ["nats://h"], "url": "mqtt://h"}, {}, "broker.url", "unknown key; allowed:"),
        ({"servers": ["nats://h"], "ack_wait_s": 0}, {}, "broker.ack_wait_s", "must be in 1..3600"),
        ({"servers": ["nats://h"], "password": "x"}, {}, "broker.password", "needs a username"),
    ],
)
def test_every_bad_nats_key_is_named_with_what_is_allowed(tmp_path: Path, broker, ingest, key, says) -> None:
    found = issues(tmp_path, {"kind": "nats", **broker}, ingest)
    assert key in found, found
    assert says in found[key]


def test_the_template_configuration_for_a_nats_cluster_is_valid(tmp_path: Path) -> None:
    """config/broker/central-nats.toml, its store pointed at a file: what the docs tell an operator to start from."""
    raw = tomllib.loads((REPO / "config/broker/central-nats.toml").read_text())
    raw["store"] = {"db": "central.db"}
    cfg = parse_central_config(raw, tmp_path / "central.toml")
    assert cfg.nats is not None and len(cfg.nats.servers) == 3 and cfg.nats.replicas == 3


def test_topics_map_to_subjects_as_the_nats_mqtt_listener_maps_them() -> None:
    assert subject_of("gridedge/v1/feeder-7/ack") == "gridedge.v1.feeder-7.ack"
    assert topic_of("gridedge.v1.feeder-7.telemetry") == "gridedge/v1/feeder-7/telemetry"
    # nats-server 2.10+ carries a '.' inside a level as '//' (2.9 refuses such a topic: docs/scale.md)
    assert subject_of("gridedge/v1/site.a/ack") == "gridedge.v1.site//a.ack"
    assert topic_of("gridedge.v1.site//a.events") == "gridedge/v1/site.a/events"
    assert "gridedge.v1.*.telemetry" in stream_subjects()
    assert not any(s.endswith((".ack", ".cmd", ".state")) for s in stream_subjects())


# ---- a real cluster --------------------------------------------------------------------------------------------


def readings(start: int, n: int) -> list[Reading]:
    return [Reading("meter1.v_a", 1_764_300_000.0 + (start + i) * 0.001, float(start + i), "V") for i in range(n)]


MQTT_STREAMS = ("$MQTT_sess", "$MQTT_msgs", "$MQTT_rmsgs")  # the MQTT listener's own streams (nats-server 2.9)


async def victim_of(cluster: NatsCluster, entry: NatsNode) -> NatsNode:
    """The node to kill: never the agent's (its one broker URL), preferably one that leads none of the MQTT
    listener's own streams (losing that leader can lock an MQTT client out for tens of seconds on 2.9.10:
    docs/scale.md), and among those the GRIDEDGE stream's leader, else a replica of it."""
    import nats

    nc = await nats.connect(servers=cluster.urls)
    try:
        js = nc.jetstream()
        leaders = {name: (await js.stream_info(name)).cluster.leader for name in ("GRIDEDGE", *MQTT_STREAMS)}
    finally:
        await nc.close()
    candidates = [n for n in cluster.nodes if n is not entry]
    mqtt_led = {n.name: sum(leaders[s] == n.name for s in MQTT_STREAMS) for n in candidates}
    return min(candidates, key=lambda n: (mqtt_led[n.name], leaders["GRIDEDGE"] != n.name))


@async_test
async def test_a_node_killed_mid_stream_loses_nothing_and_stores_nothing_twice(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    entry = nats_cluster.nodes[0]  # the node the agent connects to (its one broker URL)
    # The agent's own store, uplink and session code, its session built from a site file's [uplink] with
    # mqtt_version = "3.1.1": nats-server's MQTT listener speaks nothing else (docs/scale.md, "The broker tier").
    agent_store = AsyncStore(Store(tmp_path / "agent.db", SITE, 64 * 1024 * 1024, batch_size=25, max_age_s=0.05))
    site_file = tmp_path / "site.toml"
    site_file.write_text(f'site_id = "{SITE}"\n[store]\npath = "agent.db"\n[uplink]\n'
                         f'broker = "mqtt://127.0.0.1:{entry.mqtt_port}"\nmqtt_version = "3.1.1"\n')  # fmt: skip
    cfg = session_config_from(SITE, load_config(site_file).uplink)
    assert cfg.protocol == 4 and cfg.keepalive_s == 30
    session = MqttSession(dataclasses.replace(cfg, backoff_min_s=0.05, backoff_max_s=0.5))
    uplink = Uplink(SITE, agent_store, session, max_inflight=8, ack_timeout_s=1.0, poll_s=0.05)
    nats = NatsConfig(servers=tuple(nats_cluster.urls), replicas=3, ack_wait_s=2.0, fetch_batch=16)
    central = CentralConfig(broker=BrokerConfig("127.0.0.1", entry.client_port), db_path=tmp_path / "central.db",
                            ack_interval_s=0.02, nats=nats)  # fmt: skip
    workers = [CentralWorker(central, "w1"), CentralWorker(central, "w2")]
    assert all(isinstance(w.session, NatsSource) for w in workers)
    total = 0

    async def produce() -> None:
        nonlocal total
        for _ in range(40):
            await agent_store.add_readings(readings(total, 25))
            total += 25
            await asyncio.sleep(0.04)

    try:
        async with running_tasks(session.run(), uplink.run(), *(w.run() for w in workers)):
            await until(lambda: session.connected.is_set() and all(w.session.connected.is_set() for w in workers),
                        timeout=20)  # fmt: skip
            producer = asyncio.create_task(produce())
            await until(lambda: sum(w.stats.stored for w in workers) >= 8, timeout=20)
            victim = await victim_of(nats_cluster, entry)
            nats_cluster.kill(victim)  # SIGKILL: its share of the stream, its clients' links die with it
            await producer

            async def drained() -> bool:
                s = await agent_store.stats()
                return s.outbox_messages == 0 and s.unsealed == 0

            await until(drained, timeout=45)
    finally:
        await agent_store.aclose()
    store = open_store(tmp_path / "central.db")
    try:
        assert store.count("readings") == total == 1000  # every reading, none twice
        assert store.gaps(SITE, "telemetry") == []
    finally:
        store.close()
    ((distinct,),) = query(tmp_path / "central.db", "SELECT COUNT(*) FROM (SELECT DISTINCT point, ts FROM readings)")
    assert distinct == total
    stored = [w.stats.stored for w in workers]
    assert all(n > 0 for n in stored), stored  # both workers took a share through the one durable consumer
    assert sum(stored) == uplink.stats.acked_messages == 40  # every message acked to the agent, once stored


@async_test
async def test_a_worker_dying_after_its_commit_leaves_the_messages_to_another_stored_once(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """Worker A stores every message and dies before JetStream hears of it (its settle never runs: the crash
    between COMMIT and ack). JetStream redelivers them to worker B after ack_wait_s; B finds each msg_id stored,
    stores nothing and acks it again, to the agent and to JetStream. A message that does not decode is terminated in
    JetStream by the worker that sees it, never delivered again."""
    node = nats_cluster.nodes[1]
    agent = MqttSession(SessionConfig(host="127.0.0.1", port=node.mqtt_port, client_id="gridedge-feeder-7",
                                      protocol=4, backoff_min_s=0.05, backoff_max_s=0.5))  # fmt: skip
    acks: list[str] = []
    agent.subscribe(topic(SITE, "ack"), 1, lambda _t, payload: acks.extend(decode_ack(payload).msg_ids))
    nats = NatsConfig(servers=(node.url,), replicas=3, ack_wait_s=1.0)
    central = CentralConfig(broker=BrokerConfig("127.0.0.1", node.client_port), db_path=tmp_path / "central.db",
                            ack_interval_s=0.02, nats=nats)  # fmt: skip
    a, b = CentralWorker(central, "a"), CentralWorker(central, "b")
    assert isinstance(a.session, NatsSource)
    a.session.settle = lambda receipts, verdict: None  # the crash: JetStream never hears of A's commit
    ids = [f"{SITE}-telemetry-{seq}" for seq in range(1, 6)]
    async with running_tasks(agent.run()):
        await until(agent.connected.is_set, timeout=20)
        async with running_tasks(a.run()):
            await until(a.session.connected.is_set, timeout=20)
            for seq in range(1, 6):
                items = [{"point": "meter1.v_a", "ts": 1_764_300_000.0 + seq * 10 + i, "value": 120.0 + i,
                          "unit": "V", "quality": "good"} for i in range(4)]  # fmt: skip
                await agent.publish(topic(SITE, "telemetry"), encode_batch(SITE, "telemetry", seq, ids[seq - 1],
                                                                           1_764_300_100.0, items), qos=1)  # fmt: skip
            await agent.publish(topic(SITE, "telemetry"), b"not json", qos=1)
            await until(lambda: a.stats.stored == 5 and sorted(acks) == ids and a.stats.invalid == 1, timeout=20)
        acks.clear()  # A is gone (its connection closed): its five messages are still pending in JetStream
        async with running_tasks(b.run()):
            await until(lambda: sorted(acks) == ids, timeout=20)  # acked to the agent again, by B
            # A never settled the bad one either: B sees it once more (in its own time: JetStream redelivers each
            # message as its ack wait ends) and terminates it in JetStream
            await until(lambda: b.session.stats.js_acked == 5 and b.session.stats.js_refused == 1, timeout=10)
    assert (b.stats.stored, b.stats.duplicates, b.stats.invalid, b.session.stats.redelivered) == (0, 5, 1, 6)
    assert b.session.stats.js_refused == 1
    assert query(tmp_path / "central.db", "SELECT COUNT(*) FROM readings") == [(20,)]


@async_test
async def test_a_command_from_central_reaches_the_site_and_its_result_comes_back_through_the_cluster(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """Central's command session, built from its config's mqtt_url, on one node; the site's 3.1.1 session on
    another: the command and the signed result each cross the cluster once (payloads are opaque here; their
    signatures are the commands tests' subject)."""
    central_node, site_node = nats_cluster.nodes[0], nats_cluster.nodes[1]
    cfg = parse(tmp_path, {"kind": "nats", "servers": [central_node.url], "mqtt_url": central_node.mqtt_url})
    central = MqttSession(dataclasses.replace(cfg.broker.session_config(client_id="central-cmd-1"),
                                              backoff_min_s=0.05, backoff_max_s=0.5))  # fmt: skip
    site = MqttSession(SessionConfig(host="127.0.0.1", port=site_node.mqtt_port, client_id="gridedge-feeder-7",
                                     protocol=4, backoff_min_s=0.05, backoff_max_s=0.5))  # fmt: skip
    commands: list[bytes] = []
    results: list[bytes] = []
    site.subscribe(topic(SITE, "cmd"), 1, lambda _t, payload: commands.append(payload))
    central.subscribe(topic(SITE, "results"), 1, lambda _t, payload: results.append(payload))
    async with running_tasks(site.run(), central.run()):
        await until(lambda: site.connected.is_set() and central.connected.is_set(), timeout=20)
        await central.publish(topic(SITE, "cmd"), b'{"v":1,"command":"one"}', qos=1)
        await until(lambda: commands == [b'{"v":1,"command":"one"}'], timeout=10)
        await site.publish(topic(SITE, "results"), b'{"v":1,"result":"applied"}', qos=1)
        await until(lambda: results == [b'{"v":1,"result":"applied"}'], timeout=10)
