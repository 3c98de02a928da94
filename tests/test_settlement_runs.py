"""Settlement runs over central's store (a real SQLite file; the tests taking ``target`` also on a fresh PostgreSQL
database, with the same hand-computed expectations): the reconciliation of a feeder worked out by hand, run kinds and their
versions, a correction that holds only what changed since the final run, the losses from the bench's truth log or a
file, and the `central intervals` / `central settle` commands with their files."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers.intervals import DAY0, QH, day_items, item
from helpers.stores import query, store_toml, target_fixture  # noqa: F401 (the target fixture)

from central.cli import main as central_main
from central.settlement.config import Feeder, SettlementConfig
from central.settlement.db import open_settlement_db
from central.settlement.reconcile import losses_series
from central.settlement.runs import SettlementError, settle
from central.settlement.vee import CLOCK, SUM, VeeParams
from central.store import open_store
from protocols.telemetry.schema import decode_batch, encode_batch

SITE = "sub-07"
D = DAY0 + 7 * 86_400
REG = "energy_delivered_wh"
FEEDER = Feeder("f1", (SITE, "head", REG), ((SITE, "m1", REG), (SITE, "m2", REG)), 0.01)
CFG = SettlementConfig(tolerance_pct=0.5, vee=VeeParams(like_weeks=1), feeders=(FEEDER,))
_seq = iter(range(1, 10_000))


def send(target: Path | str, items: list[dict]) -> None:
    seq = next(_seq)
    store = open_store(target)
    try:
        assert store.store_batches([decode_batch(encode_batch(SITE, "intervals", seq, f"t{seq}", D, items))], 1.0) == [
            True
        ]
    finally:
        store.close()


def feeder_day(target: Path | str) -> None:
    """Four intervals of a feeder (head, m1, m2) on day D; interval 2's head read 1000 s before its start (clock);
    interval 3 of m2 null with no like day to fill it."""
    head = [item(D + i * QH, 10.0, meter="head") for i in (0, 1, 3)]
    head.insert(2, item(D + 2 * QH, 10.0, meter="head", reads=[[D + 2 * QH - 1000.0, 0.0], [D + 3 * QH + 1, 10_000.0]]))
    m1 = [item(D + i * QH, 5.0, meter="m1") for i in range(4)]
    m2 = [item(D, 4.9, meter="m2"), item(D + QH, 4.0, meter="m2"), item(D + 2 * QH, 4.9, meter="m2"),
          item(D + 3 * QH, None, meter="m2", quality="N")]  # fmt: skip
    send(target, head + m1 + m2)


def test_a_feeder_reconciles_interval_by_interval_as_worked_out_by_hand(target: Path | str) -> None:
    feeder_day(target)
    db = open_settlement_db(target)
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
    assert query(target, "SELECT COUNT(*) FROM settlement_values WHERE run_id = ?", (run.run_id,)) == [(12,)]
    db.close()


def test_runs_are_versioned_and_a_correction_holds_only_the_deltas_against_the_last_final(
    target: Path | str,
) -> None:
    feeder_day(target)
    db = open_settlement_db(target)
    period = (D, D + 4 * QH)
    with pytest.raises(SettlementError, match="no final run"):
        settle(db, CFG, *period, "correction", now=1.0)
    p = settle(db, CFG, *period, "preliminary", now=1.0)
    f1 = settle(db, CFG, *period, "final", now=2.0)
    f2 = settle(db, CFG, *period, "final", now=3.0)
    assert (p.version, f1.version, f2.version) == (1, 1, 2) and f2.run_id > f1.run_id > p.run_id
    # m2's interval 1 corrected by the edge (version 2): the correction run holds that interval only
    send(target, [item(D + QH, 4.9, meter="m2", version=2, quality="S", method=17)])
    c = settle(db, CFG, *period, "correction", now=4.0)
    assert c.base_run == f2.run_id
    (r,) = c.registers
    assert (r.meter, r.starts.tolist(), r.value.tolist(), r.quality.tolist()) == ("m2", [D + QH], [4.9], ["S"])
    assert r.delta is not None and r.delta.tolist() == pytest.approx([0.9])
    rows = query(target, "SELECT meter, start, value, delta, version FROM settlement_values WHERE run_id = ?",
                 (c.run_id,))  # fmt: skip
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


def _conf(tmp_path: Path, target: Path | str, extra: str = "") -> Path:
    conf = tmp_path / "central.toml"
    conf.write_text(
        '[broker]\nurl = "mqtt://127.0.0.1"\n' + store_toml(target) + "[settlement]\ntolerance_pct = 0.5\n"
        "[settlement.vee]\nlike_weeks = 1\n"
        '[[settlement.feeders]]\nname = "f1"\nhead = {site = "sub-07", meter = "head", register = "energy_delivered_wh"}\n'
        'downstream = [{site = "sub-07", meter = "m1", register = "energy_delivered_wh"}, '
        '{site = "sub-07", meter = "m2", register = "energy_delivered_wh"}]\nlosses = 0.01\n' + extra
    )
    return conf


def test_the_settle_command_writes_the_run_its_summary_nem12_and_report(
    tmp_path: Path, target: Path | str, capsys
) -> None:
    feeder_day(target)
    conf = _conf(tmp_path, target)
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


def test_the_intervals_command_lists_the_latest_versions(tmp_path: Path, target: Path | str, capsys) -> None:
    feeder_day(target)
    send(target, [item(D + QH, 4.9, meter="m2", version=2, quality="S", method=17)])
    conf = _conf(tmp_path, target)
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
    conf = _conf(tmp_path, tmp_path / "c.db", '[settlement.nmi]\n"sub-07/m1" = "short"\n')
    text = conf.read_text().replace("losses = 0.01", 'losses = "truth"').replace("like_weeks = 1", "like_weeks = 0")
    conf.write_text(text)
    assert central_main(["settle", "--config", str(conf), "--from", "0", "--to", "1", "--run", "final", "--out",
                         str(tmp_path)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "settlement.feeders[0].losses_file = (missing)" in err or "settlement.feeders[0].losses_file = None" in err
    assert "settlement.vee.like_weeks = 0: must be in 1..52" in err
    assert "settlement.nmi.sub-07/m1 = 'short'" in err


def test_a_gap_from_the_edge_is_filled_from_like_days_and_scaled_to_the_reads_around_it(target: Path | str) -> None:
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
        send(target, items[k : k + 400])
    db = open_settlement_db(target)
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


def test_a_check_meter_named_in_the_config_substitutes_a_gap(tmp_path: Path, target: Path | str, capsys) -> None:
    send(target, [item(D, 5.0, meter="m1"), item(D + QH, None, meter="m1", quality="N"),
                              item(D, 5.1, meter="m1c"), item(D + QH, 5.2, meter="m1c")])  # fmt: skip
    conf = _conf(tmp_path, target, '[[settlement.check_meters]]\nmeter = {site = "sub-07", meter = "m1", register = '
                 '"energy_delivered_wh"}\ncheck = {site = "sub-07", meter = "m1c", register = "energy_delivered_wh"}\n')  # fmt: skip
    out = tmp_path / "out"
    assert central_main(["settle", "--config", str(conf), "--from", str(D), "--to", str(D + 2 * QH), "--run",
                         "preliminary", "--out", str(out)]) == 0  # fmt: skip
    rows = [line.split(",") for line in next(out.glob("*-intervals.csv")).read_text().splitlines()[1:]]
    m1 = [(r[7], r[9], r[10]) for r in rows if r[1] == "m1"]
    assert m1 == [("5.000000", "A", ""), ("5.200000", "S", "11")]


def test_the_reads_scale_the_agent_sends_is_what_the_sum_check_uses(target: Path | str) -> None:
    """A register whose name says no unit: with the items' read_scale (0.001 kWh per Wh) the day's intervals add up
    to its reads; without it central can only take 1 kWh per unit, and the sum check fails the day."""
    values = [1.0 + (i % 7) * 0.1 for i in range(96)]
    for name, extra in (("said", {"read_scale": 0.001, "modulus": 2.0**32}), ("unsaid", {})):
        send(target, [it | extra for it in day_items(D, values, meter=name, register="import_active")])
    db = open_settlement_db(target)
    run = settle(db, SettlementConfig(vee=VeeParams(like_weeks=1)), D, D + 86_400, "preliminary", now=1.0)
    db.close()
    assert sorted(r.meter for r in run.registers) == ["said", "unsaid"]
    for r in run.registers:
        failed_sum = bool((r.failed & SUM).any())
        assert failed_sum == (r.meter == "unsaid"), r.meter
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


@pytest.mark.parametrize("store", ["postgresql://postgres@127.0.0.1:9/nowhere", "a-folder"])
def test_every_settlement_command_names_a_store_it_cannot_open_and_exits_3(tmp_path: Path, store: str, capsys) -> None:
    """A PostgreSQL server that does not answer, a SQLite "file" that is a folder: the error names the store."""
    target: Path | str = store
    if store == "a-folder":
        target = tmp_path / "a-folder"
        target.mkdir()
    conf = _conf(tmp_path, target)
    schedule = tmp_path / "s.csv"
    schedule.write_text(f"site,meter,channel,start,end,energy\n{SITE},m,kwh_delivered,{D},{D + QH},1\n")
    period = ["--from", str(D), "--to", str(D + QH)]
    for args in (["intervals", "--site", SITE, *period], ["settle", *period, "--run", "final", "--out", str(tmp_path)],
                 ["schedule", "import", "--file", str(schedule)]):  # fmt: skip
        assert central_main([*args, "--config", str(conf)]) == 3, args
        err = capsys.readouterr().err
        shown = "postgresql://postgres@127.0.0.1:9/nowhere" if store != "a-folder" else str(target)
        assert err.startswith(f"cannot open central store {shown}: "), err


def test_two_final_runs_of_one_period_at_once_get_versions_1_and_2(target: Path | str) -> None:
    """Two analysts (two processes, two connections) settling the same period at the same instant: the writes
    queue (SQLite's write lock, PostgreSQL's advisory lock), so each run counts the other and the versions differ."""
    feeder_day(target)
    barrier = threading.Barrier(2)
    runs = []

    def run() -> None:
        db = open_settlement_db(target)
        try:
            barrier.wait()
            runs.append(settle(db, CFG, D, D + 4 * QH, "final", now=1.0))
        finally:
            db.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.version for r in runs) == [1, 2] and len({r.run_id for r in runs}) == 2
    assert query(target, "SELECT r.version, COUNT(*) FROM settlement_values v JOIN settlement_runs r ON "
                 "r.run_id = v.run_id GROUP BY r.version ORDER BY r.version") == [(1, 12), (2, 12)]  # fmt: skip
