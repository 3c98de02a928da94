"""Scheduled energy and imbalance: schedule CSVs checked row by row (nothing stored from a bad file), each import a
new version, and a settlement run's imbalance (metered - scheduled per interval) worked out by hand; the tests taking
``target`` on both stores, SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers.intervals import DAY0, QH, item
from helpers.stores import query, store_toml, target_fixture  # noqa: F401 (the target fixture)

from central.cli import main as central_main
from central.settlement.cli import parse_time
from central.settlement.config import SettlementConfig
from central.settlement.db import open_settlement_db
from central.settlement.runs import settle
from central.settlement.schedules import ScheduleError, allowed_imbalance, parse_csv, store_schedule
from central.settlement.vee import VeeParams
from central.store import open_store
from protocols.telemetry.schema import decode_batch, encode_batch

SITE = "sub-07"
D = DAY0 + 7 * 86_400
HEADER = "site,meter,channel,start,end,energy\n"


def send(target: Path | str, items: list[dict], seq: int = 1) -> None:
    store = open_store(target)
    try:
        batch = decode_batch(encode_batch(SITE, "intervals", seq, f"t{seq}", D, items))
        assert store.store_batches([batch], 1.0) == [True]
    finally:
        store.close()


def metered_day(target: Path | str) -> None:
    """Meter m: 5 kWh delivered in each of four intervals of day D but the last, null (quality N, no like day)."""
    send(target, [item(D + i * QH, 5.0, meter="m") for i in range(3)] + [item(D + 3 * QH, None, meter="m",
                                                                                quality="N")])  # fmt: skip


def schedule_csv(rows: list[tuple[int, float]], meter: str = "m") -> str:
    return HEADER + "".join(f"{SITE},{meter},kwh_delivered,{s},{s + QH},{e}\n" for s, e in rows)


def conf(tmp_path: Path, target: Path | str) -> Path:
    path = tmp_path / "central.toml"
    path.write_text('[broker]\nurl = "mqtt://127.0.0.1"\n' + store_toml(target) + "[settlement.vee]\nlike_weeks = 1\n")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("site,meter,start,end,energy\n", "header = .*must be site,meter,channel,start,end,energy"),
        (HEADER, "no rows after the header"),
        (HEADER + f"{SITE},m,kwh_exported,{D},{D + QH},1\n", "line 2: channel = 'kwh_exported': one of kwh_delivered"),
        (HEADER + f"{SITE},m,kwh_delivered,{D + 60},{D + 60 + QH},1\n", "line 2: .* not a clock-aligned UTC interval"),
        (HEADER + f"{SITE},m,kwh_delivered,{D},{D + 600},1\n", "line 2: .* of 300, 900, 1800, 3600 s"),
        (HEADER + f"{SITE},m,kwh_delivered,{D},{D + QH},lots\n", "line 2: energy = 'lots': a number"),
        (HEADER + f"{SITE},m,kwh_delivered,{D},{D + QH},nan\n", "line 2: energy = 'nan': a finite number"),
        (HEADER + f"{SITE},m,kwh_delivered,{D},{D + QH}\n", "line 2: 5 columns, 6 expected"),
        (HEADER + f"bad site!,m,kwh_delivered,{D},{D + QH},1\n", "line 2: site = 'bad site!'"),
        (HEADER + f"{SITE},m,kwh_delivered,yesterday,{D + QH},1\n", "line 2: start = 'yesterday': ISO-8601 UTC"),
        (
            HEADER + f"{SITE},m,kwh_delivered,{D},{D + QH},1\n{SITE},m,kwh_delivered,{D},{D + QH},2\n",
            "line 3: sub-07/m/kwh_delivered at .* is given twice",
        ),
    ],
)
def test_a_bad_schedule_names_its_line_and_column(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_csv(text, parse_time)


def test_every_bad_line_is_named_at_once() -> None:
    text = HEADER + f"{SITE},m,kwh_delivered,{D},{D + QH},x\n{SITE},m,kwh_delivered,{D + QH},{D + 2 * QH},1\n"
    text += f"{SITE},m,volts,{D},{D + QH},1\n"
    with pytest.raises(ScheduleError) as err:
        parse_csv(text, parse_time)
    assert "line 2:" in str(err.value) and "line 4:" in str(err.value) and "line 3" not in str(err.value)


def test_the_imbalance_is_metered_minus_scheduled_per_interval_as_worked_out_by_hand(target: Path | str) -> None:
    metered_day(target)
    db = open_settlement_db(target)
    # scheduled 4, 5, 6.5 kWh against 5, 5, 5 metered; interval 3 scheduled 2 but its meter value is null
    rows = parse_csv(schedule_csv([(D, 4.0), (D + QH, 5.0), (D + 2 * QH, 6.5), (D + 3 * QH, 2.0)]), parse_time)
    assert store_schedule(db, rows, "csv:test", 1.0) == 4
    run = settle(db, SettlementConfig(vee=VeeParams(like_weeks=1)), D, D + 4 * QH, "preliminary", now=2.0)
    (s,) = run.summary["imbalance"]
    assert (s["meter"], s["channel"], s["unit"]) == ("m", "kwh_delivered", "kWh")
    assert s["scheduled_intervals"] == 4 and s["settled_intervals"] == 3 and s["unmetered_intervals"] == 1
    assert s["scheduled"] == pytest.approx(15.5) and s["metered"] == pytest.approx(15.0)
    assert s["imbalance"] == pytest.approx(-0.5) and s["over"] == pytest.approx(1.0)
    assert s["under"] == pytest.approx(1.5) and s["abs_max"] == pytest.approx(1.5)
    stored = query(
        target,
        "SELECT start, scheduled, metered, imbalance FROM settlement_imbalance WHERE run_id = ? ORDER BY start",
        (run.run_id,),
    )
    assert stored == [(D, 4.0, 5.0, 1.0), (D + QH, 5.0, 5.0, 0.0), (D + 2 * QH, 6.5, 5.0, -1.5), (D + 3 * QH, 2.0,
                                                                                                   None, None)]  # fmt: skip
    db.close()


def test_a_second_import_is_a_new_version_and_the_run_settles_against_the_latest(target: Path | str) -> None:
    metered_day(target)
    db = open_settlement_db(target)
    store_schedule(db, parse_csv(schedule_csv([(D, 4.0), (D + QH, 4.0)]), parse_time), "day-ahead", 1.0)
    store_schedule(db, parse_csv(schedule_csv([(D + QH, 6.0)]), parse_time), "intraday", 2.0)
    kept = query(target, "SELECT start, version, energy, source FROM schedules ORDER BY start, version")
    assert kept == [(D, 1, 4.0, "day-ahead"), (D + QH, 1, 4.0, "day-ahead"), (D + QH, 2, 6.0, "intraday")]
    run = settle(db, SettlementConfig(vee=VeeParams(like_weeks=1)), D, D + 4 * QH, "final", now=3.0)
    (s,) = run.summary["imbalance"]
    assert s["scheduled"] == pytest.approx(10.0) and s["imbalance"] == pytest.approx(0.0)
    assert s["over"] == pytest.approx(1.0) and s["under"] == pytest.approx(1.0)
    db.close()


def test_a_run_without_schedules_reports_no_imbalance(target: Path | str) -> None:
    metered_day(target)
    db = open_settlement_db(target)
    run = settle(db, SettlementConfig(vee=VeeParams(like_weeks=1)), D, D + 4 * QH, "preliminary", now=2.0)
    assert run.summary["imbalance"] == [] and run.imbalances == []
    db.close()


def test_the_schedule_and_settle_commands_import_and_report_the_imbalance(
    tmp_path: Path, target: Path | str, capsys
) -> None:
    metered_day(target)
    config = conf(tmp_path, target)
    bad = tmp_path / "bad.csv"
    bad.write_text(schedule_csv([(D, 4.0)]).replace("kwh_delivered", "kwh"))
    assert central_main(["schedule", "import", "--config", str(config), "--file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 2: channel = 'kwh'" in err and "nothing stored" in err
    assert central_main(["schedule", "import", "--config", str(config), "--file", str(tmp_path / "none.csv")]) == 2
    assert "cannot read it" in capsys.readouterr().err
    good = tmp_path / "day-ahead.csv"
    good.write_text(schedule_csv([(D, 4.0), (D + QH, 5.5)]))
    assert central_main(["schedule", "import", "--config", str(config), "--file", str(good)]) == 0
    assert "schedule: 2 intervals stored for 1 meters at sub-07" in capsys.readouterr().out
    out = tmp_path / "out"
    args = ["settle", "--config", str(config), "--from", str(D), "--to", str(D + 4 * QH), "--run", "final"]
    assert central_main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "imbalance site=sub-07 meter=m channel=kwh_delivered scheduled=9.5 metered=10 imbalance=0.5 kWh" in text
    rows = list(csv.DictReader(next(out.glob("run-*-final-imbalance.csv")).open()))
    assert [(r["start"], r["scheduled"], r["metered"], r["imbalance"]) for r in rows] == [
        (str(D), "4.000000", "5.000000", "1.000000"),
        (str(D + QH), "5.500000", "5.000000", "-0.500000"),
    ]
    summary = json.loads(next(out.glob("run-*-final-summary.json")).read_text())
    assert summary["files"]["imbalance"].endswith("-imbalance.csv")
    page = next(out.glob("run-*-report.html")).read_text()
    assert "Imbalance (metered - scheduled)" in page and "<td>9.5</td>" in page and "<td>0.5</td>" in page


def test_the_allowed_imbalance_is_a_share_of_the_schedule_with_a_floor_on_the_meters_scale() -> None:
    """5 % of |scheduled| per interval; near zero, 1 % of the largest |scheduled| (here 1000 kWh: 10 kWh); never
    under 0.01 kWh; gaps (NaN) neither judged nor counted in the largest."""
    allowed, floor = allowed_imbalance(np.array([1000.0, -400.0, 100.0, 0.0, np.nan]), 5.0, 0.01)
    assert floor == 10.0
    assert allowed[:4].tolist() == [50.0, 20.0, 10.0, 10.0]
    allowed, floor = allowed_imbalance(np.array([0.0, 0.1]), 10.0)
    assert floor == 0.01 and allowed.tolist() == [0.01, 0.01]
    allowed, floor = allowed_imbalance(np.array([np.nan, np.nan]), 5.0, 0.01)
    assert floor == 0.01
