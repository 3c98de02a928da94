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
