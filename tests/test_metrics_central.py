"""Central's /metrics, scraped over HTTP from a real `gridedge central run` process: messages published as an
agent would (with a gap, a duplicate and a malformed one) on a real Mosquitto, the figures checked against
central's status file, its store and `gridedge central gaps`."""

from __future__ import annotations

import json
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from helpers.broker import Broker
from helpers.db import query_db
from helpers.metrics import Scrape, scrape, scrape_or_none, scrape_when
from helpers.net import free_port
from helpers.processes import Processes, run_gridedge
from helpers.stores import target_fixture  # noqa: F401 (the target fixture)
from helpers.wait import wait_for

from central.metrics import SPECS, IngestTally, StoreFigures
from central.store import open_store
from protocols.telemetry.schema import Batch, decode_batch, encode_batch, topic

AGE_S = 100.0  # the items' time, this long before they are sent: the lag central must show at least


@dataclass
class CentralSite(Processes):
    workdir: Path
    broker: Broker
    metrics_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self) -> subprocess.Popen:
        (self.workdir / "central.toml").write_text(
            textwrap.dedent(
                f"""
                [broker]
                url = "{self.broker.url}"
                [store]
                db = "central.db"
                [ingest]
                status_file = "status.json"
                ack_interval_s = 0.02
                [metrics]
                listen = "127.0.0.1:{self.metrics_port}"
                """
            )
        )
        return self.start_gridedge("central", "central", "run", "--config", "central.toml")

    def status(self) -> dict:
        try:
            return json.loads((self.workdir / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}


@pytest.fixture
def central(tmp_path: Path, broker: Broker) -> Iterator[CentralSite]:
    site = CentralSite(tmp_path, broker)
    try:
        yield site
    finally:
        site.kill_all()


def _readings(n: int, ts: float) -> list[dict]:
    return [{"point": f"m.v{i}", "ts": ts - i, "value": 120.0 + i, "unit": "V", "quality": "good"} for i in range(n)]


def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish each (topic, payload) at QoS 1 and wait for the broker's PUBACK, as the agent's uplink does."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="metrics-test-agent")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for t, payload in messages:
            client.publish(t, payload, qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.integration
def test_central_serves_ingest_figures_per_stream_and_lag_and_gaps_per_site(central: CentralSite) -> None:
    proc = central.start()
    wait_for(lambda: central.status().get("total", {}).get("connects", 0) >= 1 or proc.poll() is not None, 60,
             "central subscribed")  # fmt: skip
    assert proc.poll() is None, central.logs("central")
    now = time.time()
    alpha1 = encode_batch("alpha", "telemetry", 1, "alpha-t-1", now, _readings(3, now - AGE_S))
    alpha3 = encode_batch("alpha", "telemetry", 3, "alpha-t-3", now, _readings(2, now - AGE_S))  # seq 2 missing
    beta = encode_batch("beta", "events", 1, "beta-e-1", now, [
        {"ts": now - 5, "kind": "limit", "severity": "warning", "source": "m.v0", "text": "high", "data": None}])  # fmt: skip
    _publish(central.broker.port, [
        (topic("alpha", "telemetry"), alpha1),
        (topic("alpha", "telemetry"), alpha3),
        (topic("beta", "events"), beta),
        (topic("alpha", "telemetry"), alpha1),  # resent: a duplicate
        (topic("alpha", "telemetry"), b'{"v": 1, "site": "alpha"}'),  # malformed: refused
    ])  # fmt: skip
    wait_for(lambda: central.status().get("total", {}).get("received", 0) == 5, 30, "central receiving all five")

    def settled(s: Scrape) -> bool:
        return s.value("gridedge_central_messages_received_total") == 5 and s.has("gridedge_central_site_gap_messages",
                                                                                  site="beta")  # fmt: skip

    m = scrape_when(central.metrics_port, settled, "the figures in /metrics")
    total = central.status()["total"]

    # ingest per stream: messages and items, as stored
    assert m.labels("gridedge_central_messages_stored_total", "stream") == {"telemetry": 2, "events": 1}
    assert m.labels("gridedge_central_items_stored_total", "stream") == {"telemetry": 5, "events": 1}
    assert sum(m.labels("gridedge_central_messages_stored_total", "stream").values()) == total["stored"]
    assert query_db(central.workdir / "central.db", "SELECT SUM(count) FROM messages")[0][0] == 6
    # what was not stored, and why
    assert m.value("gridedge_central_messages_duplicate_total") == total["duplicates"] == 1
    assert m.value("gridedge_central_messages_refused_total", reason="invalid") == total["invalid"] == 1
    assert m.value("gridedge_central_messages_refused_total", reason="queue_full") == 0
    # per site: the lag from the items' own time, the gaps `central gaps` lists
    lag = m.value("gridedge_central_site_lag_seconds", site="alpha")
    assert AGE_S <= lag < AGE_S + 600, lag
    assert 5 <= m.value("gridedge_central_site_lag_seconds", site="beta") < AGE_S
    gaps = run_gridedge("central", "gaps", "--config", str(central.workdir / "central.toml"))
    assert "site=alpha stream=telemetry missing_seq=2 count=1" in gaps.stdout, gaps.stdout + gaps.stderr
    assert m.value("gridedge_central_site_gap_messages", site="alpha") == 1
    assert m.value("gridedge_central_site_gap_messages", site="beta") == 0
    assert m.value("gridedge_central_site_last_message_age_seconds", site="alpha") >= 0
    # the store's size, from its files
    db = central.workdir / "central.db"
    assert m.value("gridedge_central_store_size_bytes") >= db.stat().st_size > 0
    assert m.value("gridedge_central_workers") == 1 and m.value("gridedge_central_mqtt_connected") == 1
    ours = {name for name in m.families if name.startswith("gridedge_central_")}
    assert ours <= {n.removesuffix("_total") for n in SPECS}

    assert central.stop("central") == 0, central.logs("central")


@pytest.mark.integration
def test_a_metrics_port_held_by_another_program_never_stops_the_ingest(central: CentralSite) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", central.metrics_port))
    holder.listen(1)
    try:
        proc = central.start()
        wait_for(lambda: "event=central_metrics_failed" in central.log("central") or proc.poll() is not None, 60,
                 "central's log naming the port it cannot have")  # fmt: skip
        assert proc.poll() is None, central.logs("central")
        assert f"listen=127.0.0.1:{central.metrics_port}" in central.log("central")
        wait_for(lambda: central.status().get("total", {}).get("connects", 0) >= 1, 30, "central subscribed")
        now = time.time()
        _publish(central.broker.port, [(topic("alpha", "telemetry"),
                                        encode_batch("alpha", "telemetry", 1, "a-1", now, _readings(2, now)))])  # fmt: skip
        wait_for(lambda: central.status().get("total", {}).get("stored", 0) == 1, 30, "the message stored meanwhile")
    finally:
        holder.close()
    wait_for(lambda: scrape_or_none(central.metrics_port) is not None, 60, "the metrics served once the port is free")
    assert scrape(central.metrics_port).labels("gridedge_central_messages_stored_total", "stream") == {"telemetry": 1}
    assert central.stop("central") == 0, central.logs("central")


# ---- the store's figures and the ingest's tally, without a process ------------------------------------------------


def _batch(site: str, seq: int, msg_id: str, ts: float = 1_764_300_000.0) -> Batch:
    return decode_batch(encode_batch(site, "telemetry", seq, msg_id, ts, _readings(2, ts)))


def test_gap_counts_are_what_central_gaps_lists_and_are_read_at_most_every_refresh(target: Path | str) -> None:
    """On both stores: the SQLite file, or a PostgreSQL database (tests/helpers/stores.py)."""
    store = open_store(target)
    try:
        # seq 3-4 and 6-8 missing; seq 1 sent again under a new id (an agent whose store was replaced)
        store.store_batches([_batch("a", s, f"a-{s}") for s in (1, 2, 5, 9)] + [_batch("a", 1, "a-1-again")], 100.0)
        store.store_batches([_batch("b", 1, "b-1")], 200.0)
        listed = sum(last - first + 1 for first, last in store.gaps("a", "telemetry"))
        now = [1000.0]
        figures = StoreFigures(target, refresh_s=10.0, clock=lambda: now[0])
        f = {(s.name, tuple(s.labels.values())): s.value for m in figures.gather().metrics() for s in m.samples}
        assert f[("gridedge_central_site_gap_messages", ("a",))] == listed == 5
        assert f[("gridedge_central_site_gap_messages", ("b",))] == 0
        assert f[("gridedge_central_site_last_message_age_seconds", ("b",))] == 800.0
        assert f[("gridedge_central_store_size_bytes", ())] > 0
        store.store_batches([_batch("b", 3, "b-3")], 300.0)
        now[0] += 5.0  # within refresh_s: the figures read before
        f = {(s.name, tuple(s.labels.values())): s.value for m in figures.gather().metrics() for s in m.samples}
        assert f[("gridedge_central_site_gap_messages", ("b",))] == 0
        now[0] += 5.0  # refresh_s later: read again
        f = {(s.name, tuple(s.labels.values())): s.value for m in figures.gather().metrics() for s in m.samples}
        assert f[("gridedge_central_site_gap_messages", ("b",))] == 1
        assert f[("gridedge_central_site_last_message_age_seconds", ("b",))] == 710.0
    finally:
        store.close()


def test_the_tally_keeps_the_newest_item_time_per_site_whatever_the_order() -> None:
    tally = IngestTally()
    tally.stored(_batch("a", 1, "a-1", ts=500.0))  # items at 500 and 499
    tally.stored(_batch("a", 2, "a-2", ts=300.0))  # older, sent later (a backlog draining)
    tally.stored(_batch("b", 1, "b-1", ts=50.0))
    assert tally.newest == {"a": 500.0, "b": 50.0}
    assert tally.messages == {"telemetry": 3} and tally.items == {"telemetry": 6}
