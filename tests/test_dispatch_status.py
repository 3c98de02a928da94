"""Is each site following its schedule? Central's own records judged: dispatch commands applied, refused, expired
without a result or still in their window, and metered energy against the scheduled (docs/dispatch.md,
"Following")."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path

import pytest
from helpers.stores import store_toml, target_fixture  # noqa: F401 (the target fixture)

from central.cli import main
from central.commands import CommandIssuer
from central.config import load_central_config
from central.dispatch.status import following
from central.settlement.db import open_settlement_db
from central.settlement.schedules import ScheduledInterval, store_schedule
from central.store import VerifiedResult, open_store
from protocols.telemetry.commands import Result, generate_key, private_pem, public_text, read_result, sign_result

T0 = 1_780_012_800  # 2026-05-29T00:00:00Z
ONE_BUS = """Clear
New Circuit.one phases=3 basekv=0.48 pu=1.0 bus1=src
New Line.l1 phases=3 bus1=src bus2=b1 r1=0.001 x1=0.001 r0=0.001 x0=0.001 c1=0 c0=0 length=1 units=km
New Generator.pv bus1=b1 phases=3 conn=wye model=1 kV=0.48 kVA=100 kW=0 kvar=0
Set VoltageBases=[0.48]
CalcVoltageBases
"""


def _setup(tmp_path: Path, target: Path | str):  # type: ignore[no-untyped-def]
    agent, disp, ops = generate_key(), generate_key(), generate_key()
    (tmp_path / "dispatch-1.key").write_bytes(private_pem(disp))
    (tmp_path / "ops-1.key").write_bytes(private_pem(ops))
    (tmp_path / "one.dss").write_text(ONE_BUS)
    sites = ""
    for site in ("site-a", "site-b"):
        sites += f'[commands.sites.{site}]\nagent_key = "{public_text(agent.public_key())}"\n'
    conf = tmp_path / "central.toml"
    conf.write_text(
        '[broker]\nurl = "mqtt://127.0.0.1:1"\n' + store_toml(target) + '[commands]\nvalid_s = 60\n'
        '[[commands.keys]]\nkey_id = "ops-1"\nrole = "operator"\nkey_file = "ops-1.key"\n'
        '[[commands.keys]]\nkey_id = "dispatch-1"\nrole = "dispatch"\nkey_file = "dispatch-1.key"\n' + sites
        + '[dispatch]\nnetwork = "one.dss"\nfeeder = "one"\nprice = 0.1\nfollow_tolerance_pct = 10\n'
        '[[dispatch.sites]]\nsite = "site-a"\ninverters = [{device = "pv", kva = 100}]\n'
        'meters = [{meter = "pv-m", channel = "kwh_received", measures = "pv"}]\n'
        '[[dispatch.sites]]\nsite = "site-b"\ninverters = [{device = "pv-b", kva = 100}]\n'
    )  # fmt: skip
    return load_central_config(conf), agent


def _metered(target: Path | str, values: list[float | None]) -> None:
    """site-a's pv-m intervals from T0, written as the ingest would have stored them."""
    sql = ("INSERT INTO intervals (site, meter, register, start, version, end_ts, channel, value, unit, quality, flags, "
           "reads, msg_id, received) VALUES ('site-a', 'pv-m', 'energy_received_wh', ?, 1, ?, 'kwh_received', ?, "
           "'kWh', 'A', '[]', '[]', 'x', 0)")  # fmt: skip
    rows = [(T0 + 900 * k, T0 + 900 * (k + 1), v) for k, v in enumerate(values)]
    if isinstance(target, Path):
        with contextlib.closing(sqlite3.connect(target)) as db, db:
            db.executemany(sql, rows)
        return
    import psycopg

    with psycopg.connect(target, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(sql.replace("?", "%s"), rows)


def _answer(store, command, agent, status: str, reason: str = "") -> None:  # type: ignore[no-untyped-def]
    r = Result(command.command_id, command.audience, command.kind, command.target, command.key_id, command.seq,
               status, reason, time.time(), {}, ())  # fmt: skip
    data = sign_result(agent, "agent", r)
    assert store.record_result(command.audience, VerifiedResult(read_result(data, agent.public_key()), data), T0)


def test_a_site_is_not_following_for_refused_expired_or_off_schedule_and_following_otherwise(
    tmp_path: Path, target: Path | str, capsys: pytest.CaptureFixture
) -> None:
    """On SQLite and PostgreSQL: ``status`` reads the commands and the metered intervals on either store."""
    config, agent = _setup(tmp_path, target)
    cfg = config.dispatch
    assert cfg is not None
    store = open_store(config.store_target)
    issuer = CommandIssuer(config.commands, store, clock=lambda: T0)
    body = {"p_limit_pct": 50.0, "var_pct": 0.0, "until": T0 + 960.0}
    a1, _ = issuer.build("site-a", "der.setpoint", "pv", body, "dispatch-1")
    a2, _ = issuer.build("site-a", "der.setpoint", "pv", body, "dispatch-1")
    a3, _ = issuer.build("site-a", "der.setpoint", "pv", body, "dispatch-1")  # never answered
    b1, _ = issuer.build("site-b", "der.setpoint", "pv-b", body, "dispatch-1")
    ops, _ = issuer.build("site-b", "revert.all", "*", {}, "ops-1")  # an operator's, not dispatch's: not judged
    _answer(store, a1, agent, "applied")
    _answer(store, a2, agent, "refused", "bounds")
    _answer(store, b1, agent, "applied")
    # within the window of a3 (expires T0 + 60): waiting; site-b has one applied command: following
    rows = {r.site: r for r in following(cfg, store, None, "dispatch-1", T0 + 30)}
    assert (rows["site-a"].applied, rows["site-a"].refused, rows["site-a"].waiting, rows["site-a"].expired) == (
        1,
        1,
        1,
        0,
    )
    assert rows["site-a"].state == "not_following" and "1 refused or failed (bounds)" in rows["site-a"].why()
    assert rows["site-b"].state == "following" and rows["site-b"].commands == 1
    # past a3's window: expired without a result
    rows = {r.site: r for r in following(cfg, store, None, "dispatch-1", T0 + 61)}
    assert rows["site-a"].expired == 1 and rows["site-a"].waiting == 0
    # nothing in the last hour at all: no_commands, not "following"
    rows = {r.site: r for r in following(cfg, store, None, "dispatch-1", T0 + 7200)}
    assert rows["site-b"].state == "no_commands" and not rows["site-b"].following
    assert ops.kind == "revert.all"
    store.close()

    # metered energy against the schedule: 25 kWh scheduled per interval; metered 25, 23 (within 10 %), 10 (off),
    # and one interval without a value (not compared)
    settlement = open_settlement_db(config.store_target)  # central's and settlement's tables
    store_schedule(settlement, [ScheduledInterval("site-a", "pv-m", "kwh_received", T0 + 900 * k, T0 + 900 * (k + 1),
                                                  25.0) for k in range(4)], "dispatch", 0.0)  # fmt: skip
    _metered(target, [25.0, 23.0, 10.0, None])
    store = open_store(config.store_target)
    rows = {r.site: r for r in following(cfg, store, settlement, "dispatch-1", T0 + 3600)}
    assert (rows["site-a"].compared, rows["site-a"].off) == (3, 1)
    assert "1 of 3 metered interval(s) off schedule" in rows["site-a"].why()
    store.close()
    settlement.close()

    # the CLI: a table, exit 1 while a site is not following
    rc = main(["dispatch", "status", "--config", str(config.source), "--now", str(T0 + 61)])
    out = capsys.readouterr().out
    assert rc == 1
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:]}
    assert lines["site-a"][:6] == ["site-a", "not_following", "1", "1", "1", "0"]
    assert lines["site-b"][:2] == ["site-b", "following"]
    # an hour on: the CLI's own connection to the store compares the three metered intervals (PostgreSQL too)
    assert main(["dispatch", "status", "--config", str(config.source), "--now", str(T0 + 3600), "--json"]) == 1
    a = next(r for r in json.loads(capsys.readouterr().out) if r["site"] == "site-a")
    assert (a["metered"], a["off"], a["expired"]) == (3, 1, 1)
