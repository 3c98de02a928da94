"""The NEM12 export read back by nemreader (a reader no one here wrote): a month of three meters with mixed quality
gives nemreader the same totals per NMI and channel and the same quality flag per interval as our run, settled from
either store (SQLite, PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import nemreader  # the test extra's NEM12 reader: a missing install fails here, never skips
import numpy as np
from helpers.intervals import DAY0, QH, item
from helpers.stores import target_fixture  # noqa: F401 (the target fixture)

from central.settlement.config import SettlementConfig
from central.settlement.db import open_settlement_db
from central.settlement.nem12 import derived_nmi, quality_method, write_nem12
from central.settlement.runs import settle
from central.settlement.vee import VeeParams
from central.store import open_store
from protocols.telemetry.schema import decode_batch, encode_batch

SITE = "sub-07"
DAYS = 30


def month(target: Path | str) -> Path | str:
    """Three meters (one with a received channel too), 30 days of 15-minute intervals: actual values, a long gap
    (null from the edge) on day 20, an edge estimate (E52) and a substitution (S17) here and there."""
    rng = np.random.default_rng(7)
    store = open_store(target)
    seq = 0
    for meter in ("m1", "m2", "m3"):
        channels = [("energy_delivered_wh", "kwh_delivered")]
        if meter == "m2":
            channels.append(("energy_received_wh", "kwh_received"))
        for register, channel in channels:
            items = []
            for d in range(DAYS):
                for s in range(96):
                    start = DAY0 + d * 86_400 + s * QH
                    v = round(float(1.0 + np.sin(s / 96 * 2 * np.pi) * 0.5 + rng.random() * 0.3), 4)
                    if d == 20 and 30 <= s < 40 and meter == "m1":
                        items.append(item(start, None, meter=meter, register=register, channel=channel, quality="N"))
                    elif d == 5 and s == 3:
                        items.append(item(start, v, meter=meter, register=register, channel=channel, quality="E",
                                          method=52))  # fmt: skip
                    elif d == 9 and s in (10, 11):
                        items.append(item(start, v, meter=meter, register=register, channel=channel, quality="S",
                                          method=17))  # fmt: skip
                    else:
                        items.append(item(start, v, meter=meter, register=register, channel=channel))
            for i in range(0, len(items), 500):
                seq += 1
                b = decode_batch(encode_batch(SITE, "intervals", seq, f"m{seq}", DAY0, items[i : i + 500]))
                assert store.store_batches([b], 1.0) == [True]
    store.close()
    return target


def test_quality_method_field() -> None:
    assert [quality_method(q, m) for q, m in [("A", 0), ("N", 0), ("S", 15), ("E", 52), ("F", 11)]] == [
        "A", "N", "S15", "E52", "F11"]  # fmt: skip
    n = derived_nmi("sub-07", "m1")
    assert len(n) == 10 and n.isalnum() and n.isupper() and n == derived_nmi("sub-07", "m1")


def test_a_month_written_as_nem12_reads_back_with_nemreader_with_the_same_totals_and_flags(
    tmp_path: Path, target: Path | str
) -> None:
    db = open_settlement_db(month(target))
    cfg = SettlementConfig(vee=VeeParams(frozen_intervals=50, like_weeks=2), nmi={"sub-07/m1": "GE00000001"})
    run = settle(db, cfg, DAY0, DAY0 + DAYS * 86_400, "final", now=DAY0 + 40 * 86_400)
    db.close()
    out = tmp_path / "run.nem12.csv"
    assert write_nem12(out, run.registers, created=run.created, nmi=cfg.nmi) == []
    # our side: the gap on day 20 was filled from like days (S15), the rest as sent
    m1 = next(r for r in run.registers if r.meter == "m1")
    assert set(m1.quality.tolist()) == {"A", "E", "S"} and (m1.method == 15).sum() == 10

    nf = nemreader.NEMFile(str(out), strict=True)
    data = nf.nem_data()
    assert data.header.version_header == "NEM12"
    assert "GE00000001" in data.readings and set(data.readings["GE00000001"]) == {"E1"}
    m2_nmi = derived_nmi(SITE, "m2")
    assert set(data.readings[m2_nmi]) == {"E1", "B1"}
    for r in run.registers:
        the_nmi = cfg.nmi.get(f"{r.site}/{r.meter}") or derived_nmi(r.site, r.meter)
        suffix = {"kwh_delivered": "E1", "kwh_received": "B1"}[r.channel]
        reads = data.readings[the_nmi][suffix]
        assert len(reads) == r.starts.size == DAYS * 96
        theirs = np.array([x.read_value for x in reads])
        # values are written with 5 decimals: the totals agree within half a unit of the last digit per interval
        assert abs(theirs.sum() - np.nansum(r.value)) <= r.starts.size * 5e-6
        assert [x.quality_method for x in reads] == [quality_method(q, int(m)) for q, m in
                                                     zip(r.quality.tolist(), r.method.tolist(), strict=True)]  # fmt: skip
        assert reads[0].t_start == datetime(2025, 12, 1) and reads[-1].t_end == datetime(2025, 12, 31)  # UTC days
    text = out.read_text().splitlines()
    assert text[0].startswith("100,NEM12,") and text[-1] == "900"
    assert any(line.startswith("300,") and ",V," in line for line in text)  # mixed-quality days
    assert any(line.startswith("400,") and ",S15,0," in line for line in text)


def test_half_hour_intervals_travel_settle_and_read_back_as_nem12_30_minute_data(
    tmp_path: Path, target: Path | str
) -> None:
    half, hour = 1800, 3600
    items = [item(DAY0 + k * half, 1.0 + k % 3, meter="h30", length=half) for k in range(2 * 48)]
    items += [item(DAY0 + k * hour, 2.0, meter="h60", length=hour) for k in range(2 * 24)]
    store = open_store(target)
    b = decode_batch(encode_batch(SITE, "intervals", 1, "m1", DAY0, items))  # the wire takes both lengths
    assert store.store_batches([b], 1.0) == [True]
    store.close()
    db = open_settlement_db(target)
    run = settle(db, SettlementConfig(vee=VeeParams(like_weeks=1)), DAY0, DAY0 + 2 * 86_400, "final", now=DAY0 + 9e5)
    db.close()
    out = tmp_path / "run.nem12.csv"
    left_out = write_nem12(out, run.registers, created=run.created, nmi={})
    assert [r.meter for r in left_out] == ["h60"]  # NEM12 has no 60-minute IntervalLength
    reads = nemreader.NEMFile(str(out), strict=True).nem_data().readings[derived_nmi(SITE, "h30")]["E1"]
    assert len(reads) == 96 and all((x.t_end - x.t_start).total_seconds() == half for x in reads)
    assert sum(x.read_value for x in reads) == sum(1.0 + k % 3 for k in range(96))
