"""Dispatch's schedule on the wire: central's dispatch solves a schedule on the IEEE 13-node model, signs the
current interval's set point with its dispatch key and sends it through a real Mosquitto to a real agent driving
the bench's inverter pv675; the inverter holds the limit, the hold ends at the interval's end (the agent's
fallback), and once the site is gone its next commands expire unanswered and central reports it as not
following (docs/dispatch.md, "Following")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.aio import async_test, running_tasks, until
from helpers.commandrig import SITE, command_site
from helpers.derrig import DEV
from helpers.stores import store_toml, target_fixture  # noqa: F401 (the target fixture)

from central.commands import CommandIssuer
from central.config import load_central_config
from central.dispatch.inputs import Forecast, horizon
from central.dispatch.optimise import solve
from central.dispatch.plan import build_problem, network_for, schedule
from central.dispatch.send import send_step
from central.dispatch.status import following, status_table
from central.settlement.db import open_settlement_db
from central.store import open_store
from protocols.mqtt.session import MqttSession

pytestmark = pytest.mark.integration

IEEE13 = Path(__file__).resolve().parents[1] / "config" / "ieee13" / "IEEE13.dss"
LIMIT, LIMIT_ENA = "DERCtlAC.WMaxLimPct", "DERCtlAC.WMaxLimPctEna"


def central_toml(tmp_path: Path, port: int, target: Path | str = Path("central.db")) -> Path:
    keys = tmp_path / "agent" / "keys"  # helpers.commandrig.make_keys wrote them for the site
    conf = tmp_path / "central.toml"
    conf.write_text(f"""
[broker]
url = "mqtt://127.0.0.1:{port}"
{store_toml(target)}[commands]
result_timeout_s = 10
valid_s = 10
[[commands.keys]]
key_id = "dispatch-1"
role = "dispatch"
key_file = "{keys / "dispatch-1.key"}"
[commands.sites.{SITE}]
agent_key_file = "{keys / "agent.pub"}"
[dispatch]
network = "{IEEE13}"
feeder = "ieee13"
interval_s = 300
horizon_intervals = 2
price = 0.1
expiry_margin_s = 0
[[dispatch.sites]]
site = "{SITE}"
inverters = [{{device = "{DEV}", kva = 2500, p_limit_min_pct = 30}}]
""")
    return conf


@async_test
async def test_a_schedule_reaches_the_agent_and_a_lost_site_falls_back_and_is_reported(
    tmp_path: Path, broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tasks: list[asyncio.Task] = []
    stores = []
    try:
        async with command_site(tmp_path, broker, speed=20.0) as s:
            # central: its own store, dispatch key and link, running on past the site (the rig made the keys)
            config = load_central_config(central_toml(tmp_path, broker.port))
            cfg = config.dispatch
            assert cfg is not None
            store = open_store(config.store_target)
            stores.append(store)
            session = MqttSession(config.broker.session_config(client_id="central-dispatch-test"))
            issuer = CommandIssuer(config.commands, store, session)
            issuer.watch(SITE)
            tasks.append(asyncio.create_task(session.run()))
            await until(lambda: s.agent.snapshot.get(f"{DEV}.{LIMIT_ENA}") is not None, timeout=30)
            await asyncio.wait_for(session.connected.wait(), 10)
            inv = s.bench.model_of(DEV)
            # Two intervals on the agent's clock (the bench's; `until` is judged on it), the first ending 60 s from
            # now: 2000 kW of PV into a negative price, so the optimum curtails pv675 to its lowest limit, 30 %.
            now = s.now()
            forecast = Forecast(horizon(int(now) - 240, 300, 2), np.array([1500.0, 1500.0]), np.array([700.0, 700.0]),
                                np.array([2000.0, 2000.0]), "test")  # fmt: skip
            sol = solve(build_problem(cfg, network_for(cfg), forecast, np.array([-0.05, 0.10])))
            steps = schedule(cfg, sol)
            assert [st.p_limit_pct[DEV] for st in steps] == [30.0, 100.0]
            (out,) = await send_step(issuer, steps[:1], cfg.expiry_margin_s, "dispatch-1", 10.0)
            assert out.status == "applied", out.reason
            # the agent's readback of the inverter's registers: the limit, and no var set point (the schedule's vars
            # are zero: the inverter keeps its own reactive mode)
            assert out.readback["DERCtlAC.WMaxLimPct"] == pytest.approx(30.0)
            assert out.readback["DERCtlAC.WMaxLimPctEna"] == 1 and out.readback.get("DERCtlAC.VarSetEna", 0) == 0
            assert inv.settings["DERCtlAC.VarSetEna"] == 0
            await until(lambda: inv.settings[LIMIT_ENA] == 1 and inv.settings[LIMIT] == pytest.approx(30), timeout=15)
            # the interval ends (its command held until then, no margin): the agent hands pv675 back, limit off
            await until(lambda: inv.settings[LIMIT_ENA] == 0, timeout=15)
            assert s.now() >= steps[0].end
            rows = following(cfg, store, None, "dispatch-1", time.time())
            assert [(r.site, r.state, r.applied) for r in rows] == [(SITE, "following", 1)]
        # the site is gone (agent stopped): the next interval's command is sent and never answered
        (late,) = await send_step(issuer, steps[1:], cfg.expiry_margin_s, "dispatch-1", 0.5)
        assert late.status == "sent"
        after = late.command.expires_at + 1  # judged once its window has passed
        rows = following(cfg, store, None, "dispatch-1", after)
        print("\n" + status_table(rows))
        assert [(r.site, r.state, r.applied, r.expired) for r in rows] == [(SITE, "not_following", 1, 1)]
        assert "1 command(s) expired without a result" in rows[0].why()
        assert any(r.getMessage().startswith("event=dispatch_site_not_following ") and f"site={SITE}" in r.getMessage()
                   for r in caplog.records)  # fmt: skip
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for st in stores:
            st.close()


def test_once_reads_the_forecasts_table_stores_the_schedule_and_records_unanswered_commands(
    tmp_path: Path, broker, target: Path | str, capsys: pytest.CaptureFixture
) -> None:
    """`central dispatch --once` with no agent behind the broker, on SQLite and on PostgreSQL: the forecasts come
    from central's table (the forecasting's schema), the horizon's energy goes to settlement's schedules (source
    dispatch), the round's costs to dispatch_runs, the interval's command is signed, recorded and published, and
    with no result it exits 1 naming it."""
    from central.cli import main
    from protocols.telemetry.commands import generate_key, private_pem, public_text

    keys = tmp_path / "agent" / "keys"
    keys.mkdir(parents=True)
    (keys / "dispatch-1.key").write_bytes(private_pem(generate_key()))
    (keys / "agent.pub").write_text(public_text(generate_key().public_key()))
    conf = central_toml(tmp_path, broker.port, target)
    conf.write_text(conf.read_text() + 'meters = [{meter = "pv-m", channel = "kwh_received", measures = "pv675"}]\n')
    now = time.time()
    start = int(now // 300) * 300
    store = open_store(target)
    try:
        store.write_forecasts([("ieee13", kind, "intraday", int(now) - 60, start, start + 3600, 0, p50, 0, unit, "test")
                               for kind, unit, p50 in (("load_p", "kW", 1500.0), ("load_q", "kvar", 700.0),
                                                       ("pv", "kW", 1000.0))])  # fmt: skip
        rc = main(["dispatch", "--config", str(conf), "--once", "--timeout", "0.5"])
        got = capsys.readouterr()
        assert rc == 1, got.err[-2000:]
        assert "sent 1 command(s): 0 applied; bench-site/pv675 der.setpoint sent" in got.out
        db = open_settlement_db(target)
        try:
            rows = db.scheduled(SITE, "pv-m", "kwh_received", start - 300, start + 3600)
            sources = db._rows("SELECT DISTINCT source FROM schedules")  # noqa: SLF001 - the seam's shared reader
        finally:
            db.close()
        # 1000 kW of PV, nothing to curtail at 0.10 / kWh: 1000 kW x 5 min = 83.33 kWh in each of the two intervals
        # (from the interval the CLI ran in: this one, or the next if a boundary passed in between)
        rows.sort()
        assert rows[0][0] in (start, start + 300) and [r[0] - rows[0][0] for r in rows] == [0, 300]
        assert [e for _, e in rows] == [pytest.approx(83.333, abs=0.01)] * 2 and sources == [("dispatch",)]
        (cmd,) = store.commands(SITE)
        assert (cmd["status"], cmd["kind"]) == ("sent", "der.setpoint") and '\\"p_limit_pct\\":100' in cmd["message"]
        (run,) = store.dispatch_runs("ieee13", start - 300, start + 3600)
        # one round of 2 intervals from the first scheduled one: 1500 kW of load less 1000 kW of PV imported at
        # 0.10 / kWh is 4.17 per 5 minutes, plus the losses; vars may trim the losses, never add to the cost
        assert (run["horizon_start"], run["interval_s"], run["intervals"]) == (rows[0][0], 300, 2)
        assert 4.17 < run["first_cost"] <= run["first_cost_no_dispatch"] < 4.6
        assert 8.34 < run["cost"] <= run["cost_no_dispatch"] < 9.2 and now <= run["issued"] <= time.time()
    finally:
        store.close()


@async_test
async def test_a_round_of_several_commands_reaches_the_site_in_sequence_order(tmp_path: Path, broker) -> None:
    """One interval of a site with several devices is several commands of one key: each is numbered, and a site
    refuses a number below one it took (old_sequence), so they must reach it in the order of their numbers."""
    from protocols.telemetry.commands import generate_key, private_pem, public_text, read_command, read_signed
    from protocols.telemetry.schema import topic

    keys = tmp_path / "agent" / "keys"
    keys.mkdir(parents=True)
    (keys / "dispatch-1.key").write_bytes(private_pem(generate_key()))
    (keys / "agent.pub").write_text(public_text(generate_key().public_key()))
    config = load_central_config(central_toml(tmp_path, broker.port))
    store = open_store(config.store_target)
    central = MqttSession(config.broker.session_config(client_id="central-order-test"))
    site = MqttSession(config.broker.session_config(client_id="site-order-test"))
    seqs: list[int] = []
    site.subscribe(topic(SITE, "cmd"), 1, lambda _t, raw: seqs.append(read_command(read_signed(raw)).seq))
    issuer = CommandIssuer(config.commands, store, central)
    tasks = [asyncio.create_task(central.run()), asyncio.create_task(site.run())]
    try:
        await asyncio.wait_for(asyncio.gather(central.connected.wait(), site.connected.wait()), 10)
        until_ts = time.time() + 600
        items = [(SITE, "der.setpoint", f"pv{n}", {"p_limit_pct": 50.0, "until": until_ts}) for n in range(12)]
        outs = await issuer.send_many(items, "dispatch-1", timeout_s=0.3)
        await until(lambda: len(seqs) == 12, timeout=10)
        assert [o.command.seq for o in outs] == list(range(1, 13))  # one per item, in the items' order
        assert seqs == list(range(1, 13))  # and so on the wire
        assert {o.status for o in outs} == {"sent"}  # nobody answers here
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        store.close()


@async_test
async def test_the_trim_sends_the_reserved_inverters_new_limit_from_the_heads_readings(
    tmp_path: Path, broker, caplog: pytest.LogCaptureFixture
) -> None:
    """pv675 holds a 10 % reserve: 1000 kW of sun, 900 kW scheduled (36 % of 2500). Half-way through the 5-minute
    interval the head's readings in central's store show it 25 kW above its schedule: the other half must be
    25 kW below, so pv675 is asked for 50 kW more, 950 kW, a limit of 38 %: signed, on the site's cmd topic,
    holding to the interval's end."""
    from central.dispatch.cli import Round, trim_interval
    from central.dispatch.clock import DispatchClock
    from protocols.telemetry.commands import generate_key, private_pem, public_text, read_command, read_signed
    from protocols.telemetry.schema import Batch, topic

    caplog.set_level(logging.INFO)
    keys = tmp_path / "agent" / "keys"
    keys.mkdir(parents=True)
    (keys / "dispatch-1.key").write_bytes(private_pem(generate_key()))
    (keys / "agent.pub").write_text(public_text(generate_key().public_key()))
    conf = central_toml(tmp_path, broker.port)
    text = conf.read_text().replace("p_limit_min_pct = 30}", "p_limit_min_pct = 0, reserve_pct = 10}")
    conf.write_text(text.replace("[[dispatch.sites]]", 'trim_at_s = 150\n[dispatch.nowcast]\nsite = "bench-site"\n'
                                 'point = "sub-meter.p_total"\n[[dispatch.sites]]'))  # fmt: skip
    config = load_central_config(conf)
    cfg = config.dispatch
    assert cfg is not None and cfg.trim_at_s == 150
    start = (int(time.time()) // 300 + 4) * 300
    f = Forecast(horizon(start, 300, 2), np.array([1500.0, 1500.0]), np.array([700.0, 700.0]),
                 np.array([1000.0, 1000.0]), "test")  # fmt: skip
    sol = solve(build_problem(cfg, network_for(cfg), f, np.array([0.10, 0.10])))
    step = schedule(cfg, sol)[0]
    assert step.p_out_kw[DEV] == pytest.approx(900.0, abs=0.01) and step.p_limit_pct[DEV] == 36.0
    store = open_store(config.store_target)
    items = tuple({"point": "sub-meter.p_total", "ts": float(t), "value": (step.head_kw + 25.0) * 1000.0, "unit": "W",
                   "quality": "good"} for t in range(start, start + 150, 5))  # fmt: skip
    assert all(store.store_batches([Batch(SITE, "telemetry", 1, "m1", 1.0, items)], time.time()))
    central = MqttSession(config.broker.session_config(client_id="central-trim-test"))
    site = MqttSession(config.broker.session_config(client_id="site-trim-test"))
    got: list = []
    site.subscribe(topic(SITE, "cmd"), 1, lambda _t, raw: got.append(read_command(read_signed(raw))))
    issuer = CommandIssuer(config.commands, store, central)
    try:
        async with running_tasks(central.run(), site.run()):
            await asyncio.wait_for(asyncio.gather(central.connected.wait(), site.connected.wait()), 10)
            clock = DispatchClock(1.0, start + 150.0, time.time())
            sent: dict = {}
            outs = await trim_interval(cfg, Round([], [step], sol, {}), store, issuer, "dispatch-1", 0.3, clock, sent)
            await until(lambda: len(got) == 1, timeout=10)
        assert [(o.command.kind, o.command.target, o.status) for o in outs] == [("der.setpoint", DEV, "sent")]
        cmd = got[0]
        assert cmd.body["p_limit_pct"] == 38.0 and cmd.body["until"] == step.end + cfg.expiry_margin_s
        assert sent == {}  # not applied (nobody answers here): the next round's ramp starts from the schedule's
        assert any(r.getMessage().startswith("event=dispatch_trim ") and "applied=true" in r.getMessage()
                   for r in caplog.records)  # fmt: skip
    finally:
        store.close()
