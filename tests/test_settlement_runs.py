"""Settlement runs over a real SQLite file: the reconciliation of a feeder worked out by hand, run kinds and their
versions, a correction that holds only what changed since the final run, the losses from the bench's truth log or a
file, and the `central intervals` / `central settle` commands with their files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from helpers.intervals import DAY0, QH, day_items, item

from central.cli import main as central_main
from central.settlement.config import Feeder, SettlementConfig
from central.settlement.reconcile import losses_series
from central.settlement.runs import SettlementError, settle
from central.settlement.vee import CLOCK, SUM, VeeParams
from central.store import CentralStore
from protocols.telemetry.schema import decode_batch, encode_batch

SITE = "sub-07"
D = DAY0 + 7 * 86_400
REG = "energy_delivered_wh"
FEEDER = Feeder("f1", (SITE, "head", REG), ((SITE, "m1", REG), (SITE, "m2", REG)), 0.01)
CFG = SettlementConfig(tolerance_pct=0.5, vee=VeeParams(like_weeks=1), feeders=(FEEDER,))
_seq = iter(range(1, 10_000))


def send(db_path: Path, items: list[dict]) -> None:
    seq = next(_seq)
    store = CentralStore(db_path)
    try:
        assert store.store_batches([decode_batch(encode_batch(SITE, "intervals", seq, f"t{seq}", D, items))], 1.0) == [
            True
        ]
    finally:
        store.close()


def feeder_day(db_path: Path) -> None:
    """Four intervals of a feeder (head, m1, m2) on day D; interval 2's head read 1000 s before its start (clock);
    interval 3 of m2 null with no like day to fill it."""
    head = [item(D + i * QH, 10.0, meter="head") for i in (0, 1, 3)]
    head.insert(2, item(D + 2 * QH, 10.0, meter="head", reads=[[D + 2 * QH - 1000.0, 0.0], [D + 3 * QH + 1, 10_000.0]]))
    m1 = [item(D + i * QH, 5.0, meter="m1") for i in range(4)]
    m2 = [item(D, 4.9, meter="m2"), item(D + QH, 4.0, meter="m2"), item(D + 2 * QH, 4.9, meter="m2"),
          item(D + 3 * QH, None, meter="m2", quality="N")]  # fmt: skip
    send(db_path, head + m1 + m2)


def test_a_feeder_reconciles_interval_by_interval_as_worked_out_by_hand(tmp_path: Path) -> None:
    feeder_day(tmp_path / "c.db")
    db = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    run = settle(db, CFG, D, D + 4 * QH, "preliminary", now=D + 86_400)
    (f,) = run.feeders
    # losses 1 % of head = 0.1; tolerance 0.5 % of 10 = 0.05
    # 0: 10 - 9.9 - 0.1 = 0    reconciled
    # 1: 10 - 9.0 - 0.1 = 0.9  not reconciled
    # 2: 10 - 9.9 - 0.1 = 0    reconciled, but the head failed the clock check (flag only): not validated
    # 3: m2 null, no like day: not complete
    assert f.complete.tolist() == [True, True, True, False]
    assert f.validated.tolist() == [True, True, False, True]
    assert f.reconciled.tolist() == [True, False, True, False]
    s = run.summary["feeders"][0]
    assert s["reconciliation_rate"] == 0.25 and s["unaccounted_kwh"] == pytest.approx(0.9)
    assert s["head_kwh"] == 30.0 and s["downstream_kwh"] == pytest.approx(28.8) and s["losses_kwh"] == 0.3
    head = next(r for r in run.registers if r.meter == "head")
    assert head.failed.tolist() == [0, 0, CLOCK, 0]
    assert run.summary["failed_checks"]["clock"] == 1 and run.summary["quality"] == {"A": 11, "N": 1}
    stored = db.execute("SELECT COUNT(*) FROM settlement_values WHERE run_id = ?", (run.run_id,)).fetchone()[0]
    assert stored == 12
    db.close()


def test_runs_are_versioned_and_a_correction_holds_only_the_deltas_against_the_last_final(tmp_path: Path) -> None:
    feeder_day(tmp_path / "c.db")
    db = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    period = (D, D + 4 * QH)
    with pytest.raises(SettlementError, match="no final run"):
        settle(db, CFG, *period, "correction", now=1.0)
    p = settle(db, CFG, *period, "preliminary", now=1.0)
    f1 = settle(db, CFG, *period, "final", now=2.0)
    f2 = settle(db, CFG, *period, "final", now=3.0)
    assert (p.version, f1.version, f2.version) == (1, 1, 2) and f2.run_id > f1.run_id > p.run_id
    # m2's interval 1 corrected by the edge (version 2): the correction run holds that interval only
    send(tmp_path / "c.db", [item(D + QH, 4.9, meter="m2", version=2, quality="S", method=17)])
    c = settle(db, CFG, *period, "correction", now=4.0)
    assert c.base_run == f2.run_id
    (r,) = c.registers
    assert (r.meter, r.starts.tolist(), r.value.tolist(), r.quality.tolist()) == ("m2", [D + QH], [4.9], ["S"])
    assert r.delta is not None and r.delta.tolist() == pytest.approx([0.9])
    rows = db.execute("SELECT meter, start, value, delta, version FROM settlement_values WHERE run_id = ?",
                      (c.run_id,)).fetchall()  # fmt: skip
    assert rows == [("m2", D + QH, 4.9, pytest.approx(0.9), 2)]
    # the feeder's interval 1 now reconciles: 3 of 4 complete, 2 reconciled and validated
    assert c.summary["feeders"][0]["reconciliation_rate"] == 0.5
    db.close()


def test_losses_from_the_truth_log_and_from_a_file(tmp_path: Path) -> None:
    truth = tmp_path / "day.jsonl"
    recs = [{"record": "bench_up", "ts": D}] + [{"record": "step", "ts": D + 60 * k, "loss_kwh": 0.01 * k}
                                                  for k in range(31)]  # fmt: skip
    truth.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"record": "step", "ts"')  # last line unfinished
    starts = np.array([D, D + QH, D + 2 * QH])
    got = losses_series(Feeder("f", FEEDER.head, FEEDER.downstream, "truth", truth), starts, QH, np.zeros(3))
    # 15 minutes = 15 steps of 0.01 kWh; the third interval is past the log's end
    assert got[:2].tolist() == pytest.approx([0.15, 0.15]) and np.isnan(got[2])
    series = tmp_path / "losses.csv"
    series.write_text(f"start,loss_kwh\n{D},0.2\n{D + QH},0.3\n")
    got = losses_series(Feeder("f", FEEDER.head, FEEDER.downstream, "file", series), starts, QH, np.zeros(3))
    assert got[:2].tolist() == [0.2, 0.3] and np.isnan(got[2])


def _conf(tmp_path: Path, extra: str = "") -> Path:
    conf = tmp_path / "central.toml"
    conf.write_text(
        '[broker]\nurl = "mqtt://127.0.0.1"\n[store]\ndb = "c.db"\n[settlement]\ntolerance_pct = 0.5\n'
        "[settlement.vee]\nlike_weeks = 1\n"
        '[[settlement.feeders]]\nname = "f1"\nhead = {site = "sub-07", meter = "head", register = "energy_delivered_wh"}\n'
        'downstream = [{site = "sub-07", meter = "m1", register = "energy_delivered_wh"}, '
        '{site = "sub-07", meter = "m2", register = "energy_delivered_wh"}]\nlosses = 0.01\n' + extra
    )
    return conf


def test_the_settle_command_writes_the_run_its_summary_nem12_and_report(tmp_path: Path, capsys) -> None:
    feeder_day(tmp_path / "c.db")
    conf = _conf(tmp_path)
    out = tmp_path / "out"
    args = ["settle", "--config", str(conf), "--from", "2025-12-08T00:00:00Z", "--to", str(D + 4 * QH)]
    assert central_main([*args, "--run", "correction", "--out", str(out)]) == 2
    assert "no final run" in capsys.readouterr().err
    assert central_main([*args, "--run", "final", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "feeder=f1 rate=0.25 unaccounted_kwh=0.9" in text
    summary = json.loads(next(out.glob("run-*-final-summary.json")).read_text())
    assert summary["feeders"][0]["reconciliation_rate"] == 0.25 and summary["kind"] == "final"
    lines = next(out.glob("run-*-final-intervals.csv")).read_text().splitlines()
    assert len(lines) == 13 and lines[0].startswith("site,meter,register,channel,start,start_utc")
    assert any(",clock," in line for line in lines)
    nem12 = next(out.glob("nem12#*.csv")).read_text().splitlines()
    assert nem12[0].startswith("100,NEM12") and nem12[-1] == "900"
    page = next(out.glob("run-*-report.html")).read_text()
    assert "<svg" in page and "polyline" in page and "f1" in page and "<script" not in page


def test_the_intervals_command_lists_the_latest_versions(tmp_path: Path, capsys) -> None:
    feeder_day(tmp_path / "c.db")
    send(tmp_path / "c.db", [item(D + QH, 4.9, meter="m2", version=2, quality="S", method=17)])
    conf = _conf(tmp_path)
    base = ["intervals", "--config", str(conf), "--site", SITE, "--from", str(D), "--to", "2025-12-08T01:00Z"]
    assert central_main([*base, "--meter", "m2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["start"], r["value"], r["version"], r["quality"]) for r in rows] == [
        (D, 4.9, 1, "A"), (D + QH, 4.9, 2, "S"), (D + 2 * QH, 4.9, 1, "A"), (D + 3 * QH, None, 1, "N")]  # fmt: skip
    assert central_main(base) == 0
    assert capsys.readouterr().out.count("\n") == 12
    assert central_main([*base[:-4], "--from", "yesterday", "--to", "1"]) == 2
    assert "--from = 'yesterday'" in capsys.readouterr().err
    assert central_main([*base[:-2], "--to", str(D - 1)]) == 2


def test_a_bad_settlement_section_names_key_value_and_allowed(tmp_path: Path, capsys) -> None:
    conf = _conf(tmp_path, '[settlement.nmi]\n"sub-07/m1" = "short"\n')
    text = conf.read_text().replace("losses = 0.01", 'losses = "truth"').replace("like_weeks = 1", "like_weeks = 0")
    conf.write_text(text)
    assert central_main(["settle", "--config", str(conf), "--from", "0", "--to", "1", "--run", "final", "--out",
                         str(tmp_path)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "settlement.feeders[0].losses_file = (missing)" in err or "settlement.feeders[0].losses_file = None" in err
    assert "settlement.vee.like_weeks = 0: must be in 1..52" in err
    assert "settlement.nmi.sub-07/m1 = 'short'" in err


def test_a_gap_from_the_edge_is_filled_from_like_days_and_scaled_to_the_reads_around_it(tmp_path: Path) -> None:
    """From the wire to the run: the register's reads on both sides of a null gap (quality N, no reads) say how much
    energy passed; the like day gives the shape. A tampered day fails the sum check and stays flagged."""
    true = [1.0 + (i % 5) * 0.1 + (0.5 if 40 <= i % 96 < 48 else 0.0) for i in range(8 * 96)]
    items, reg = [], 5_000_000.0
    for i, v in enumerate(true):
        start = DAY0 + i * QH
        if 7 * 96 + 40 <= i < 7 * 96 + 48:
            items.append(item(start, None, meter="gm", quality="N", flags=["gap"]))
        elif i == 3 * 96 + 10:
            items.append(item(start, v + 5.0, meter="gm", reg0=reg))  # its reads say v, its value v + 5
        else:
            items.append(item(start, v, meter="gm", reg0=reg))
        reg += v * 1000.0
    for k in range(0, len(items), 400):
        send(tmp_path / "c.db", items[k : k + 400])
    db = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    cfg = SettlementConfig(vee=VeeParams(like_weeks=1))
    run = settle(db, cfg, DAY0, DAY0 + 8 * 86_400, "preliminary", now=1.0)
    (r,) = run.registers
    gap = slice(7 * 96 + 40, 7 * 96 + 48)
    assert r.quality[gap].tolist() == ["S"] * 8 and r.method[gap].tolist() == [15] * 8
    # the register advanced by the true energy across the gap (1.5..1.9 kWh a slot), the like day had 1.0..1.4
    assert float(np.sum(r.value[gap])) == pytest.approx(sum(true[7 * 96 + 40 : 7 * 96 + 48]), abs=1e-6)
    like = np.array(true[40:48])
    assert r.value[gap] / like == pytest.approx(np.full(8, r.value[gap][0] / like[0]))  # the like day's shape
    # the tampered day: every interval flagged, values kept (sum is a flag-only check by default)
    day3 = slice(3 * 96, 4 * 96)
    assert (r.failed[day3] == SUM).all() and r.value[3 * 96 + 10] == pytest.approx(true[3 * 96 + 10] + 5.0)
    assert not (r.failed[: 3 * 96] & SUM).any() and not (r.failed[4 * 96 :] & SUM).any()
    db.close()


def test_a_check_meter_named_in_the_config_substitutes_a_gap(tmp_path: Path, capsys) -> None:
    send(tmp_path / "c.db", [item(D, 5.0, meter="m1"), item(D + QH, None, meter="m1", quality="N"),
                              item(D, 5.1, meter="m1c"), item(D + QH, 5.2, meter="m1c")])  # fmt: skip
    conf = _conf(tmp_path, '[[settlement.check_meters]]\nmeter = {site = "sub-07", meter = "m1", register = '
                 '"energy_delivered_wh"}\ncheck = {site = "sub-07", meter = "m1c", register = "energy_delivered_wh"}\n')  # fmt: skip
    out = tmp_path / "out"
    assert central_main(["settle", "--config", str(conf), "--from", str(D), "--to", str(D + 2 * QH), "--run",
                         "preliminary", "--out", str(out)]) == 0  # fmt: skip
    rows = [line.split(",") for line in next(out.glob("*-intervals.csv")).read_text().splitlines()[1:]]
    m1 = [(r[7], r[9], r[10]) for r in rows if r[1] == "m1"]
    assert m1 == [("5.000000", "A", ""), ("5.200000", "S", "11")]


def test_the_reads_scale_the_agent_sends_is_what_the_sum_check_uses(tmp_path: Path) -> None:
    """A register whose name says no unit: with the items' read_scale (0.001 kWh per Wh) the day's intervals add up
    to its reads; without it central can only take 1 kWh per unit, and the sum check fails the day."""
    values = [1.0 + (i % 7) * 0.1 for i in range(96)]
    for name, extra in (("said", {"read_scale": 0.001, "modulus": 2.0**32}), ("unsaid", {})):
        items = [it | extra for it in day_items(D, values, meter="m", register="import_active")]
        db_path = tmp_path / f"{name}.db"
        send(db_path, items)
        db = sqlite3.connect(db_path, isolation_level=None)
        (r,) = settle(
            db, SettlementConfig(vee=VeeParams(like_weeks=1)), D, D + 86_400, "preliminary", now=1.0
        ).registers
        db.close()
        failed_sum = bool((r.failed & SUM).any())
        assert failed_sum == (name == "unsaid"), name
        assert r.value.tolist() == pytest.approx(values)  # flag-only: the values are kept either way


def test_a_central_file_made_before_read_scale_and_modulus_gets_both_columns(tmp_path: Path) -> None:
    from central.store import SCHEMA

    old = SCHEMA.replace("    read_scale REAL,\n", "").replace("    modulus   REAL,\n", "")
    assert old != SCHEMA
    db = sqlite3.connect(tmp_path / "old.db")
    db.executescript(old)
    db.close()
    send(tmp_path / "old.db", [item(D, 5.0, meter="m1", reg0=1000.0) | {"read_scale": 0.001, "modulus": 65536}])
    db = sqlite3.connect(tmp_path / "old.db")
    assert db.execute("SELECT value, read_scale, modulus FROM intervals").fetchall() == [(5.0, 0.001, 65536.0)]
    db.close()
