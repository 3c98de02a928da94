"""``gridedge central report``: one UTC day's metrics from a small day built by hand, every figure worked out in
the comments (docs/report.md)."""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from pathlib import Path

import pytest
from helpers.stores import store_toml, target_fixture  # noqa: F401 (the target fixture)

from central.cli import main
from central.commands import CommandIssuer
from central.config import CentralConfigError, load_central_config
from central.dispatch.runs import DispatchRun, record_run
from central.report.cli import build
from central.report.data import ReportError, parse_day
from central.settlement.db import open_settlement_db
from central.settlement.schedules import ScheduledInterval, store_schedule
from central.store import VerifiedResult, open_store
from protocols.telemetry.commands import Result, generate_key, private_pem, public_text, read_result, sign_result
from protocols.telemetry.schema import Batch

D = 1_780_012_800  # 2026-05-29T00:00:00Z, the reported day
DAY = "2026-05-29"
ONE_BUS = "Clear\nNew Circuit.one phases=3 basekv=0.48 pu=1.0 bus1=src\n"


def _config(tmp_path: Path, target: Path | str, agent, extra: str = "import_limit_kw = 120\n") -> Path:  # type: ignore[no-untyped-def]
    disp, ops = generate_key(), generate_key()
    (tmp_path / "dispatch-1.key").write_bytes(private_pem(disp))
    (tmp_path / "ops-1.key").write_bytes(private_pem(ops))
    (tmp_path / "one.dss").write_text(ONE_BUS)
    conf = tmp_path / "central.toml"
    conf.write_text(
        '[broker]\nurl = "mqtt://127.0.0.1:1"\n' + store_toml(target) + "[commands]\nvalid_s = 60\n"
        '[[commands.keys]]\nkey_id = "ops-1"\nrole = "operator"\nkey_file = "ops-1.key"\n'
        '[[commands.keys]]\nkey_id = "dispatch-1"\nrole = "dispatch"\nkey_file = "dispatch-1.key"\n'
        + "".join(f'[commands.sites.{s}]\nagent_key = "{public_text(agent.public_key())}"\n' for s in ("site-a", "site-b"))
        + '[dispatch]\nnetwork = "one.dss"\nfeeder = "one"\nprice = 0.1\n' + extra
        + '[[dispatch.sites]]\nsite = "site-a"\ninverters = [{device = "pv", kva = 100}]\n'
        'meters = [{meter = "pv-m", channel = "kwh_received", measures = "pv"}, '
        '{meter = "head-m", channel = "kwh_delivered", measures = "head"}]\n'
        '[[dispatch.sites]]\nsite = "site-b"\ninverters = [{device = "pv-b", kva = 100}]\n'
        '[forecast]\nhistory_days = 42\n[[forecast.feeders]]\nname = "one"\nsite = "site-a"\nload_p = "head_p_kw"\n'
        'pv = "pv_kw"\n'
    )  # fmt: skip
    return conf


def _readings(store, items: list[dict]) -> None:  # type: ignore[no-untyped-def]
    batches = [Batch("site-a", "telemetry", i + 1, f"r{i}", 1.0, tuple(items[k : k + 500]))
               for i, k in enumerate(range(0, len(items), 500))]  # fmt: skip
    assert all(store.store_batches(batches, time.time()))


def _intervals(target: Path | str, meter: str, channel: str, values: list[float | None]) -> None:
    rows = [("site-a", meter, "e", D + 900 * k, 1, D + 900 * (k + 1), channel, v, "kWh", "A", "[]", "[]", "x", 0.0)
            for k, v in enumerate(values)]  # fmt: skip
    sql = ("INSERT INTO intervals (site, meter, register, start, version, end_ts, channel, value, unit, quality, flags, "
           "reads, msg_id, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")  # fmt: skip
    if isinstance(target, Path):
        with sqlite3.connect(target) as db:
            db.executemany(sql, rows)
        return
    import psycopg

    with psycopg.connect(target, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(sql.replace("?", "%s"), rows)


def _build_day(tmp_path: Path, target: Path | str) -> Path:
    agent = generate_key()
    conf = _config(tmp_path, target, agent)
    config = load_central_config(conf)
    store = open_store(config.store_target)
    try:
        # Load: history D-2 at 100 kW, D-1 at 110 kW (seasonal-naive MAE m=96 = 10 kW); day D measured at 120 kW.
        # PMU pmu1 at site-a, 1 s apart: 60.00 60.01 60.05 60.04 59.95 60.00 60.00 60.00 60.00 59.99 Hz
        #   mean 600.04/10 = 60.004; max |f-60| = 0.05; outside +-0.036: 60.05, 60.04, 59.95 -> 3 s.
        #   rocof 0.1, -0.8, 0.3 Hz/s -> max |rocof| 0.8.
        items = [{"point": "head_p_kw", "ts": float(D + (d * 96 + k) * 900 + 60), "value": v, "unit": "kW",
                  "quality": "good"} for d, v in ((-2, 100.0), (-1, 110.0), (0, 120.0)) for k in range(96)]  # fmt: skip
        freq = [60.0, 60.01, 60.05, 60.04, 59.95, 60.0, 60.0, 60.0, 60.0, 59.99]
        items += [{"point": "pmu1.frequency", "ts": float(D + 3600 + i), "value": f, "unit": "Hz", "quality": "good"}
                  for i, f in enumerate(freq)]  # fmt: skip
        items += [{"point": "pmu1.rocof", "ts": float(D + 3600 + i), "value": r, "unit": "Hz/s", "quality": "good"}
                  for i, r in enumerate([0.1, -0.8, 0.3])]  # fmt: skip
        _readings(store, items)
        # Day-ahead load forecast issued the day before: p50 114 everywhere -> MAE 6, MASE 6/10 = 0.6, MAPE 6/120 =
        # 5 %; band [110, 118] for intervals 0..47 (120 outside), [115, 125] for 48..95 (inside) -> coverage 0.5.
        # PV day-ahead: p10 30 kW in intervals 40..55, 0 elsewhere (no PV readings: accuracy says no data).
        issued = D - 50_000
        rows = [("one", "load_p", "day-ahead", issued, D + 900 * k, D + 900 * (k + 1),
                 110.0 if k < 48 else 115.0, 114.0, 118.0 if k < 48 else 125.0, "kW", "m") for k in range(96)]  # fmt: skip
        rows += [("one", "pv", "day-ahead", issued, D + 900 * k, D + 900 * (k + 1), 30.0 if 40 <= k < 56 else 0.0,
                  40.0, 50.0, "kW", "m") for k in range(96)]  # fmt: skip
        store.write_forecasts(rows)
        # Dispatch commands: site-a applied + refused der.setpoint and an unanswered capbank.close (expired: valid
        # 60 s in May); one of the day before and one operator command, neither counted.
        issuer = CommandIssuer(config.commands, store, clock=lambda: D + 100)
        body = {"p_limit_pct": 50.0, "var_pct": 0.0, "until": D + 960.0}
        for status in ("applied", "refused"):
            c, _ = issuer.build("site-a", "der.setpoint", "pv", body, "dispatch-1")
            r = Result(c.command_id, c.audience, c.kind, c.target, c.key_id, c.seq, status, "", D + 101, {}, ())
            data = sign_result(agent, "agent", r)
            assert store.record_result("site-a", VerifiedResult(read_result(data, agent.public_key()), data), D + 101)
        issuer.build("site-a", "capbank.close", "cap", {"until": D + 960.0}, "dispatch-1")
        issuer.build("site-a", "revert.all", "*", {}, "ops-1")
        CommandIssuer(config.commands, store, clock=lambda: D - 100).build("site-a", "der.setpoint", "pv", body,
                                                                          "dispatch-1")  # fmt: skip
    finally:
        store.close()
    # Schedules: pv-m 25 kWh in intervals 0..3 and 0 in interval 4.
    db = open_settlement_db(config.store_target)
    try:
        sched = [25.0, 25.0, 25.0, 25.0, 0.0]
        store_schedule(db, [ScheduledInterval("site-a", "pv-m", "kwh_received", D + 900 * k, D + 900 * (k + 1), e)
                            for k, e in enumerate(sched)], "dispatch", 0.0)  # fmt: skip
    finally:
        db.close()
    # Metered pv-m: 25 (within), 23.9 (|-1.1| <= 5 % of 25 = 1.25: within), 20 (-5: off, the worst), none, 0.2
    # (schedule 0: floor max(1 % of 25, 0.01) = 0.25 -> within): 3 of 4 within.
    _intervals(target, "pv-m", "kwh_received", [25.0, 23.9, 20.0, None, 0.2])
    # Head import 30 kWh in 4 intervals at 0.1 /kWh: 120 kWh, cost 12.
    _intervals(target, "head-m", "kwh_delivered", [30.0] * 4)
    return conf


def _by(rows: list[dict], **key: str) -> dict:
    found = [r for r in rows if all(r.get(k) == v for k, v in key.items())]
    assert len(found) == 1, (key, rows)
    return found[0]


def test_a_hand_built_day_gives_the_hand_computed_metrics(tmp_path: Path, target: Path | str) -> None:
    conf = _build_day(tmp_path, target)
    # Dispatch's rounds, on either store: interval 0 solved twice (the later round counts: 2.5 against 3.0, and
    # it is recorded first, so the order written cannot decide), interval 1 once (2.0 against 2.0), a round of
    # the day before and one of another feeder: planned 4.5, no dispatch 5.0, saving 0.5.
    for run in (DispatchRun("one", D - 5, D, 900, 96, 80.0, 85.0, 2.5, 3.0),
                DispatchRun("one", D - 10, D, 900, 96, 90.0, 95.0, 9.0, 9.5),
                DispatchRun("one", D + 895, D + 900, 900, 96, 70.0, 70.0, 2.0, 2.0),
                DispatchRun("one", D - 1000, D - 900, 900, 96, 1.0, 1.0, 1.0, 1.0),
                DispatchRun("two", D + 1, D + 900, 900, 96, 1.0, 1.0, 7.0, 7.0)):  # fmt: skip
        record_run(target, run)
    config = load_central_config(conf)
    s = {sec.name: sec for sec in build(config, D)}

    acc = _by(s["accuracy"].rows, kind="load_p", horizon="day-ahead")
    assert (acc["pairs"], acc["mae"], acc["mase_scale"], acc["mase"]) == (96, 6.0, 10.0, 0.6)
    assert acc["mape_pct"] == pytest.approx(5.0) and acc["coverage_p10_p90"] == 0.5
    assert "no data: one load_p intraday: no forecast for the day" in s["accuracy"].notes
    assert "no data: one pv day-ahead: no readings of pv_kw in the day" in s["accuracy"].notes

    # margin = 120 + pv p10 - load p90: 0..39: 2; 40..47: 32; 48..55: 25; 56..95: -5 (40 intervals short);
    # worst -5 first at interval 56 = 14:00Z; mean (40*2 + 8*32 + 8*25 - 40*5) / 96 = 3.5
    ad = s["adequacy"].rows[0]
    assert (ad["margin_min_kw"], ad["worst_interval"], ad["short_intervals"]) == (-5.0, "2026-05-29T14:00:00Z", 40)
    assert ad["margin_mean_kw"] == 3.5 and len(s["adequacy"].detail) == 96

    d = s["dispatch"].rows
    assert _by(d, kind="der.setpoint") == {"site": "site-a", "kind": "der.setpoint", "applied": 1, "refused": 1,
                                           "failed": 0, "expired": 0, "waiting": 0, "issued": 2}  # fmt: skip
    assert _by(d, kind="capbank.close")["expired"] == 1
    assert "no data: site-b: no dispatch command issued in the day" in s["dispatch"].notes

    cost = s["cost"].rows[0]
    assert (cost["metered_import_kwh"], cost["metered_cost"]) == (120.0, 12.0)
    assert (cost["dispatched_intervals"], cost["planned_cost"], cost["no_dispatch_cost"]) == (2, 4.5, 5.0)
    assert cost["planned_saving"] == 0.5

    adh = _by(s["adherence"].rows, meter="pv-m")
    assert (adh["compared"], adh["within"], adh["unmetered"], adh["within_share"]) == (4, 3, 1, 0.75)
    assert (adh["worst_interval"], adh["worst_imbalance_kwh"], adh["floor_kwh"]) == ("2026-05-29T00:30:00Z", -5.0, 0.25)
    assert "no data: site-a/head-m kwh_delivered: no schedule in the day" in s["adherence"].notes

    f = _by(s["frequency"].rows, pmu="pmu1")
    assert (f["samples"], f["mean_hz"], f["max_abs_dev_hz"], f["outside_s"]) == (10, 60.004, 0.05, 3.0)
    assert f["rocof_max_abs_hz_per_s"] == 0.8
    assert "no data: site-b: no PMU frequency reading in the day" in s["frequency"].notes


def test_the_command_prints_text_json_and_writes_csvs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = _build_day(tmp_path, tmp_path / "central.db")
    assert main(["report", "--config", str(conf), "--day", DAY, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "== Forecast accuracy" in out and "== Frequency deviation" in out and "pmu1" in out
    with (tmp_path / "out" / "adherence_intervals.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["within"] for r in rows] == ["True", "True", "False", "True"]
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"accuracy.csv", "adequacy_intervals.csv", "cost.csv",
                                                               "dispatch.csv", "frequency.csv"}  # fmt: skip
    assert main(["report", "--config", str(conf), "--day", DAY, "--json", "--feeder", "one"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["day"] == DAY and doc["adequacy"]["rows"][0]["margin_min_kw"] == -5.0


def test_an_empty_store_reports_no_data_in_every_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = _config(tmp_path, tmp_path / "central.db", generate_key(), extra="")
    sections = build(load_central_config(conf), D)
    assert all(not s.rows for s in sections)
    assert all(any(n.startswith("no data") for n in s.notes) for s in sections)
    assert "no data: [dispatch] import_limit_kw is not set" in sections[1].notes[0]
    assert main(["report", "--config", str(conf), "--day", DAY]) == 0
    assert capsys.readouterr().out.count("no data") >= 6


def test_a_point_in_a_unit_the_forecast_cannot_take_is_no_data_naming_it(tmp_path: Path) -> None:
    conf = _config(tmp_path, tmp_path / "central.db", generate_key())
    config = load_central_config(conf)
    store = open_store(config.store_target)
    try:
        _readings(store, [{"point": "head_p_kw", "ts": D + 60.0, "value": 20.0, "unit": "degC", "quality": "good"}])
    finally:
        store.close()
    notes = build(config, D)[0].notes
    assert any("no data: one load_p: site-a/head_p_kw: a reading in 'degC'" in n for n in notes), notes


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--day", "2026-13-01"], "--day = '2026-13-01': not a calendar date"),
        (["--day", "29.05.2026"], "--day = '29.05.2026': a date YYYY-MM-DD"),
        (["--day", DAY, "--feeder", "nope"], "--feeder = 'nope': one of one"),
        (["--day", DAY, "--band-hz", "0"], "--band-hz = 0: a band in (0, 5) Hz"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                 named: str) -> None:  # fmt: skip
    conf = _config(tmp_path, tmp_path / "central.db", generate_key())
    assert main(["report", "--config", str(conf), *argv]) == 2
    assert named in capsys.readouterr().err


def test_parse_day_is_the_utc_midnight() -> None:
    assert parse_day(DAY) == D
    with pytest.raises(ReportError, match="--day = ''"):
        parse_day("")


def test_import_limit_kw_must_be_a_positive_number(tmp_path: Path) -> None:
    conf = _config(tmp_path, tmp_path / "central.db", generate_key(), extra="import_limit_kw = -3\n")
    with pytest.raises(CentralConfigError, match="dispatch.import_limit_kw"):
        load_central_config(conf)


def test_a_dispatch_round_records_its_cost_and_its_no_dispatch_cost(tmp_path: Path) -> None:
    """One bus (40 kW load, 100 kW PV available), prices 0.10 then -0.05 per kWh, 15-minute intervals.

    Dispatch: interval 1 exports 60 kW at 0.10 (0.25 h x 0.10 x -60 = -1.5), interval 2 curtails to 20 % and
    imports 20 kW at -0.05 (-0.25): -1.75. No dispatch: interval 1 the same -1.5, interval 2 exports 60 kW at -0.05
    (+0.75): -0.75. The losses are watts (within 0.02)."""
    import numpy as np

    from central.dispatch.cli import run_of
    from central.dispatch.config import DispatchConfig, InverterSpec, SiteSpec
    from central.dispatch.inputs import Forecast, horizon
    from central.dispatch.optimise import evaluate, solve
    from central.dispatch.plan import build_problem, network_for

    dss = tmp_path / "one.dss"
    dss.write_text(
        "Clear\nNew Circuit.one phases=3 basekv=0.48 pu=1.0 bus1=src MVAsc3=1000 MVAsc1=1000\n"
        "New Line.l1 phases=3 bus1=src bus2=b1 r1=0.001 x1=0.001 r0=0.001 x0=0.001 c1=0 c0=0 length=1 units=km\n"
        "New Load.ld bus1=b1 phases=3 conn=wye model=1 kV=0.48 kW=40 kvar=0\n"
        "New Generator.pv bus1=b1 phases=3 conn=wye model=1 kV=0.48 kVA=100 kW=0 kvar=0\n"
        "Set VoltageBases=[0.48]\nCalcVoltageBases\n"
    )
    cfg = DispatchConfig(network=dss, feeder="one", sites=(SiteSpec("site-1", (InverterSpec("pv", "pv", 100.0, 100.0,
                         "B", 20.0),)),), v_min_pu=0.9, v_max_pu=1.1, margin_pu=0.0, horizon_intervals=2)  # fmt: skip
    forecast = Forecast(horizon(D, 900, 2), np.full(2, 40.0), np.zeros(2), np.full(2, 100.0), "test")
    prob = build_problem(cfg, network_for(cfg), forecast, np.array([0.10, -0.05]))
    run = run_of(cfg, solve(prob), evaluate(prob), D + 5.0)
    assert (run.feeder, run.horizon_start, run.interval_s, run.intervals) == ("one", D, 900, 2)
    assert (run.cost, run.cost_no_dispatch) == (pytest.approx(-1.75, abs=0.02), pytest.approx(-0.75, abs=0.02))
    assert (run.first_cost, run.first_cost_no_dispatch) == (pytest.approx(-1.5, abs=0.02),) * 2
    record_run(tmp_path / "central.db", run)
    store = open_store(tmp_path / "central.db")
    try:
        (got,) = store.dispatch_runs("one", D, D + 900)
    finally:
        store.close()
    assert (got["feeder"], got["horizon_start"], got["issued"]) == ("one", D, D + 5.0)
    assert got["first_cost"] == run.first_cost
