"""The physics bench's own guards: ratings checked at start, one broken device never stops the others."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from conftest import async_test, free_port

from sim_hw.bench import Bench, BenchError
from sim_hw.config import parse_bench_config

ROOT = Path(__file__).resolve().parent.parent


def ieee13_copy(tmp_path: Path, edit: tuple[str, str] | None = None):
    """config/sim-ieee13.toml with free ports, a private pty link and absolute paths."""
    text = (ROOT / "config" / "sim-ieee13.toml").read_text()
    text = re.sub(r"port = 1\d{4}", lambda _m: f"port = {free_port()}", text)
    text = text.replace('link = "run/rtu-bus1"', f'link = "{tmp_path / "rtu"}"')
    text = text.replace('"ieee13/', f'"{ROOT / "config" / "ieee13"}/').replace(
        '"maps/', f'"{ROOT / "config" / "maps"}/'
    )
    text = text.replace("seed = 1\n", 'seed = 1\nstart = "2026-06-21T12:00:00Z"\n')
    if edit:
        assert edit[0] in text
        text = text.replace(*edit)
    return parse_bench_config(tomllib.loads(text), tmp_path / "bench.toml")


@async_test
async def test_an_inverter_rated_above_its_pv_site_is_refused_at_start(tmp_path: Path) -> None:
    cfg = ieee13_copy(tmp_path, ("kva = 250.0, kw = 250.0", "kva = 300.0, kw = 250.0"))
    bench = Bench(cfg)
    with pytest.raises(BenchError, match=r"device 'pv634': kva = 300: above the feeder's pv634 rating \(250 kVA\)"):
        await bench.start()
    assert not (tmp_path / "rtu").exists()  # the failed start cleaned up its pty pair


@async_test
async def test_a_device_whose_model_fails_is_counted_and_the_others_go_on(tmp_path: Path, mocker) -> None:
    bench = Bench(ieee13_copy(tmp_path))
    await bench.start()
    try:
        relay = bench.model_of("head-relay")
        mocker.patch.object(relay, "observe", side_effect=RuntimeError("model bug"))  # a bug cannot be made for real
        meter = bench.model_of("sub-meter")

        def energy() -> int:  # delivered + received: at noon the PV may reverse the flow
            v = meter.values(bench.sim_time)
            return v["energy_delivered_wh"] + v["energy_received_wh"]

        before = energy()
        for _ in range(5):
            await bench.step_once()
        assert bench.device_errors == {"head-relay": 5}
        assert energy() > before  # the meter kept integrating
    finally:
        await bench.stop()


@async_test
async def test_inverters_follow_the_physics_at_any_bench_step(tmp_path: Path) -> None:
    """A half-second step: OpenDER must be stepped at the bench's step, not a fixed 1 s (it used to freeze)."""
    cfg = ieee13_copy(tmp_path, ("step_s = 1.0", "step_s = 0.5"))
    bench = Bench(cfg)
    await bench.start()
    try:
        bench._irradiance_profile = type("Flat", (), {"value": staticmethod(lambda t: 1.0)})()  # a clear sky all day
        for _ in range(40):
            await bench.step_once()
        inverter = bench.model_of("pv675")
        full = inverter.p_kw
        assert full > 2000  # 2.5 MW array at 1000 W/m2
        bench.set_irradiance_factor(0.2)
        for _ in range(40):  # 20 simulated seconds
            await bench.step_once()
        assert inverter.p_kw < 0.3 * full
    finally:
        await bench.stop()


def max_feeder_pu(bench: Bench) -> tuple[float, str]:
    """The highest phase voltage on the feeder's buses (the substation side of the regulator excluded)."""
    sol = bench.solution
    return max((v, f"{bus}.{ph}") for bus in sol.bus_v if bus not in ("sourcebus", "650", "rg60")
               for ph, v in sol.v_pu(bus).items())  # fmt: skip


@async_test
async def test_a_cloud_clearing_pushes_the_feeder_out_of_ansi_range_a_until_the_regulator_acts(tmp_path: Path) -> None:
    """Issue 4's scenario: with the regulator's taps set for no PV, the PV returning at noon lifts bus 680 above
    1.05 pu (ANSI C84.1-2016 Table 1, Range A, service voltage) until the regulator steps down after its 30 s."""
    from dataclasses import replace

    scenario = tmp_path / "cloud.toml"
    scenario.write_text('[[events]]\nat_s = 5\naction = "cloud"\nfactor = 0.0\nduration_s = 300\n')
    cfg = replace(ieee13_copy(tmp_path, ('irradiance = "cloudy"', 'irradiance = "clear"')), scenario=scenario)
    bench = Bench(cfg)
    await bench.start()
    try:
        for _ in range(300):  # under the cloud: the regulator settles for the load alone
            await bench.step_once()
        under_cloud = max_feeder_pu(bench)
        assert under_cloud[0] < 1.0505  # at the edge: the feeder's phase unbalance holds 675 b near 1.05
        peak = (0.0, "")
        for _ in range(25):  # the cloud clears at 305 s; the regulator waits 30 s
            await bench.step_once()
            peak = max(peak, max_feeder_pu(bench))
        assert peak[0] > 1.055, peak  # clearly out of Range A
        for _ in range(120):
            await bench.step_once()
        assert max_feeder_pu(bench)[0] < 1.0505  # the regulator brought it back
        assert [name for _, name in bench.scenario.played] == ["cloud factor=0", "cloud clears"]
    finally:
        await bench.stop()
