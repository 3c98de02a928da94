"""The control stream end to end: decisions stored by the agent, sealed, sent over a real Mosquitto, stored by
central in its own table, acknowledged, and gone from the agent's outbox; the schema refuses what is not one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.aio import async_test, running_tasks, until

from agent.control.decision import Command, Input, audit_event, propose
from agent.store import AsyncStore
from agent.uplink import Uplink, session_config_for
from central.config import CentralConfig
from central.ingest import CentralWorker
from central.store import CentralStore
from protocols.mqtt import BrokerConfig, MqttSession
from protocols.telemetry.schema import SchemaError, decode_batch, encode_batch

SITE = "sub-07"


def a_decision(i: int):
    d = propose("capbank", "cap675-ctl", "control", 1_781_913_600.0 + i,
                [Input("sub-meter.q_total", 812_000.0, 1_781_913_599.0, 1.0, "good")], "var_lagging",
                Command("cap675-ctl", "capbank.close", {"action": 1}, "vars high"), id_factory=lambda: f"dec{i}")  # fmt: skip
    return d.replace(verdict="allowed", outcome="applied", readback={"closed": 1}, budgets_left={"cap_ops_per_day": 3})


@async_test
async def test_decisions_reach_centrals_decision_table_and_leave_the_outbox_on_its_ack(broker, tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "agent.db", SITE, 16 << 20, max_age_s=0.0)
    for i in range(3):
        ev = audit_event(a_decision(i))
        await store.add_event(ev.ts, ev.kind, ev.severity, ev.source, ev.text, ev.data, stream="control")
    session = MqttSession(session_config_for(SITE, "127.0.0.1", broker.port, "agent-ctl"))
    uplink = Uplink(SITE, store, session, poll_s=0.05, ack_timeout_s=2.0)
    config = CentralConfig(broker=BrokerConfig("127.0.0.1", broker.port, client_id="central"),
                           db_path=tmp_path / "central.db", ack_interval_s=0.02)  # fmt: skip
    worker = CentralWorker(config, "w1")
    try:
        async with running_tasks(worker.run()):
            await until(worker.session.connected.is_set)  # subscribed before anything is published
            async with running_tasks(session.run(), uplink.run()):
                await until(lambda: uplink.stats.acked_messages >= 1, timeout=20)
                assert await store.pending(10) == []
    finally:
        await store.aclose()
    central = CentralStore(tmp_path / "central.db")
    try:
        assert central.count("decisions") == 3 and central.count("events") == 0
        rows = central._db.execute(
            "SELECT decision_id, function, device, verdict, outcome, data FROM decisions ORDER BY ts"
        ).fetchall()
    finally:
        central.close()
    assert [r[:5] for r in rows] == [(f"dec{i}", "capbank", "cap675-ctl", "allowed", "applied") for i in range(3)]
    assert json.loads(rows[0][5]) == a_decision(0).to_dict()


def _control_batch(item: dict) -> bytes:
    return encode_batch(SITE, "control", 1, "m1", 1_781_913_700.0, [item])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "limit"}, "kind"),
        ({"data": None}, "data"),
        ({"data": {**audit_event(a_decision(0)).data, "id": ""}}, "data.id"),
        ({"data": {**audit_event(a_decision(0)).data, "mode": "auto"}}, "data.mode"),
        ({"data": {**audit_event(a_decision(0)).data, "inputs": "none"}}, "data.inputs"),
        ({"data": {k: v for k, v in audit_event(a_decision(0)).data.items() if k != "outcome"}}, "data.outcome"),
    ],
)
def test_the_schema_refuses_a_control_item_that_is_not_a_decision(change: dict, field: str) -> None:
    ev = audit_event(a_decision(0))
    item = {"ts": ev.ts, "kind": ev.kind, "severity": ev.severity, "source": ev.source, "text": ev.text,
            "data": ev.data, **change}  # fmt: skip
    with pytest.raises(SchemaError, match=rf"items\[0\]\.{field}"):
        decode_batch(_control_batch(item))


def test_an_audit_event_is_a_valid_control_item() -> None:
    ev = audit_event(a_decision(0))
    item = {
        "ts": ev.ts,
        "kind": ev.kind,
        "severity": ev.severity,
        "source": ev.source,
        "text": ev.text,
        "data": ev.data,
    }
    assert decode_batch(_control_batch(item)).items == (item,)
