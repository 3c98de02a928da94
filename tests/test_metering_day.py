"""The metering day harness (benchmarks/metering_day.py): the bench copy it writes starts every feeder meter's
registers near 2**32 and is accepted by the bench with its scenario; the agent's site file gets a ``[metering]``
section of 15-minute intervals over every feeder meter, accepted by the agent's parser. No processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent.config import load_config
from sim_hw.config import load_bench_config
from sim_hw.devices.feeder_meter import FeederMeter
from sim_hw.scenarios import load_scenario

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import metering_day as md  # noqa: E402


def test_the_bench_copy_and_the_agents_metering_section_are_accepted(tmp_path: Path) -> None:
    ports: dict[int, int] = {}
    path = md.bench_config(tmp_path, 10.0, ports, set())
    md.with_counters(path)
    bench = load_bench_config(path)
    meters = {d.name: d for d in bench.devices if d.kind == "feeder-meter"}
    assert set(meters) == set(md.METERS)
    start = md.ENERGY_MODULUS_WH - md.COUNTER_HEADROOM_WH
    for spec in meters.values():
        model = FeederMeter.from_options(spec.name, spec.options)
        assert model.values()["energy_delivered_wh"] == start
        assert model.values()["energy_received_wh"] == start
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(md.scenario_text())
    played = load_scenario(scenario, start=bench.bench.start, devices=tuple(d.name for d in bench.devices))
    assert len(played.steps) == 5  # two silences (start and end) and the swap
    agent_toml = md.agent_config(tmp_path, md.RUNS[1], ports, speed=120, sim_start=bench.bench.start,
                                 wall_start=1.8e9)  # fmt: skip
    agent_toml.write_text(agent_toml.read_text() + md.metering_section())
    agent = load_config(agent_toml)
    assert agent.metering is not None
    assert agent.metering.interval_s == 900
    assert agent.metering.estimate_span_s == md.ESTIMATE_SPAN_S
    assert {m.device: m.rated_kw for m in agent.metering.meters} == pytest.approx(md.METERS)
    assert all({r.channel for r in m.registers} == {"kwh_delivered", "kwh_received"} for m in agent.metering.meters)


def test_the_bench_copy_takes_a_finer_step_when_asked(tmp_path: Path) -> None:
    """--step-s: the meters' registers are refreshed once a step, so a finer step reads closer to the truth."""
    path = md.bench_config(tmp_path, 10.0, {}, set())
    md.with_counters(path, 0.25)
    assert load_bench_config(path).bench.step_s == 0.25


def _stores(tmp_path: Path, central: list[tuple], seqs: list[int], made: list[tuple], conflicts: int = 0) -> tuple:
    """Central's db (its schema) holding ``central`` (meter, register, start, version) and messages ``seqs`` of the
    intervals stream; the agent's intervals table holding ``made`` as wire items."""
    import json
    import sqlite3

    from central.store import SCHEMA

    cdb, adb = tmp_path / "central.db", tmp_path / "agent.db"
    con = sqlite3.connect(cdb)
    con.executescript(SCHEMA)
    for m, r, s, v in central:
        con.execute("INSERT INTO intervals (site, meter, register, start, version, end_ts, channel, unit, quality, "
                    "flags, reads, msg_id, received) VALUES ('s', ?, ?, ?, ?, ?, 'kwh_delivered', 'kWh', 'A', '[]', "
                    "'[]', 'x', 0)", (m, r, s, v, s + md.INTERVAL_S))  # fmt: skip
    for seq in seqs:
        con.execute("INSERT INTO messages VALUES (?, 's', 'intervals', ?, 1, 0)", (f"m{seq}", seq))
    for k in range(conflicts):
        con.execute("INSERT INTO interval_conflicts VALUES ('s', 'm', 'r', ?, 1, 'x', 0, '{}')", (k,))
    con.commit()
    con.close()
    con = sqlite3.connect(adb)
    con.execute("CREATE TABLE intervals (id INTEGER PRIMARY KEY, item TEXT)")
    for m, r, s, v in made:
        con.execute("INSERT INTO intervals (item) VALUES (?)",
                    (json.dumps({"meter": m, "register": r, "start": s, "version": v}),))  # fmt: skip
    con.commit()
    con.close()
    return cdb, adb


T = 1_774_000_800
KILLS = {"broker_kills": md.BROKER_KILLS, "agent_kills": md.AGENT_KILLS}


def test_exactly_once_holds_when_each_interval_is_at_central_once_and_only_the_newest_is_on_its_way(
    tmp_path: Path,
) -> None:
    made = [("m", "r", T + k * md.INTERVAL_S, 1) for k in range(6)]
    cdb, adb = _stores(tmp_path, made[:5], [1, 2, 3], made)
    [check] = md.exactly_once(cdb, adb, KILLS)
    assert check.met is True and "each once, no gap, no duplicate" in check.detail


@pytest.mark.parametrize(
    ("central", "seqs", "made", "conflicts", "why"),
    [
        ([(T, 1), (T + 900, 1), (T + 2700, 1)], [1, 2], None, 0, "intervals missing at central: m/r 1"),
        ([(T, 1), (T, 2), (T + 900, 1)], [1, 2], None, 0, "1 intervals with a second version"),
        ([(T, 1), (T + 900, 1)], [1, 3], None, 0, "sequence has gaps"),
        ([(T, 1), (T + 900, 1)], [1], None, 2, "2 conflicting copies"),
        ([(T, 1), (T + 900, 1)], [1], [(T, 1), (T, 1), (T + 900, 1)], 0, "the agent made 1 intervals twice"),
        ([(T, 1), (T + 900, 1)], [1], [(T, 1)], 0, "1 intervals at central the agent did not make"),
        ([(T + 1800, 1), (T + 2700, 1)], [1], [(T, 1), (T + 1800, 1), (T + 2700, 1)], 0, "1 older intervals"),
    ],
)
def test_exactly_once_names_what_broke_it(tmp_path: Path, central, seqs, made, conflicts, why) -> None:
    rows = [("m", "r", s, v) for s, v in central]
    agent = rows if made is None else [("m", "r", s, v) for s, v in made]
    cdb, adb = _stores(tmp_path, rows, seqs, agent, conflicts)
    [check] = md.exactly_once(cdb, adb, KILLS)
    assert check.met is False and why in check.detail, check.detail


def test_exactly_once_is_not_met_when_the_chaos_fell_short(tmp_path: Path) -> None:
    made = [("m", "r", T, 1)]
    cdb, adb = _stores(tmp_path, made, [1], made)
    [check] = md.exactly_once(cdb, adb, {"broker_kills": 3, "agent_kills": 0})
    assert check.met is False and "3 broker kills and 0 agent SIGKILLs" in check.text
