"""The high-PV cloudy day (config/sim-ieee13-day.toml) and the bench support it needs: PV ratings and loads from the
[feeder] table, the truth log of a running bench, a run bounded in simulated time, the late-step count."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.aio import async_test
from helpers.bench import DAY, SHIPPED, day_copy

from sim_hw.bench import Bench, BenchError
from sim_hw.config import BenchConfigError, load_bench_config, parse_bench_config
from sim_hw.truthlog import TruthLog, read_records, summarise

ROOT = Path(__file__).resolve().parent.parent
GRIDEDGE = Path(sys.executable).parent / "gridedge"


def test_the_day_is_a_fixed_high_pv_cloudy_day_with_every_device_on_its_own_control() -> None:
    cfg = load_bench_config(DAY)
    assert cfg.bench.start == datetime(2026, 4, 5, 4, tzinfo=UTC).timestamp()  # 00:00 EDT of a fixed date
    assert cfg.bench.speed == 60.0 and cfg.bench.step_s == 1.0
    assert cfg.feeder is not None and cfg.feeder.load_model == "exponential"
    p = cfg.profiles  # the realistic profiles with the seeded 1 s cloud transients over the PV
    assert p is not None and (p.source, p.clouds, p.cloud_seed, p.start) == ("bdew", "seeded", 13, None)
    assert cfg.feeder.pv_kva == {"pv675": 3500.0, "pv680": 3000.0}
    inverters = {d.name: d.options for d in cfg.devices if d.kind == "inverter"}
    assert sum(o["kva"] for o in inverters.values()) == 6850.0  # for a 3.47 MW peak load
    assert all("settings" not in o for o in inverters.values())  # unity power factor: no volt-var, no set point
    (cap,) = [d for d in cfg.devices if d.kind == "capbank"]
    (reg,) = [d for d in cfg.devices if d.kind == "regulator"]
    assert cap.options["mode"] == "local_auto" and cap.options["revert_timeout_s"] == 300
    assert reg.options.get("mode", "automatic") == "automatic" and reg.options["revert_timeout_s"] == 300
    assert cfg.waveforms == ()


def test_the_day_and_the_demo_bench_can_run_side_by_side() -> None:
    day, demo = load_bench_config(DAY), load_bench_config(SHIPPED)

    def addresses(cfg) -> set:
        return {d.port for d in cfg.devices if d.port} | {p.port for p in cfg.pmus} | {w.port for w in cfg.waveforms}

    assert not addresses(day) & addresses(demo)
    assert {b.link for b in day.buses}.isdisjoint({b.link for b in demo.buses})


@pytest.mark.parametrize(
    ("feeder", "key", "allowed"),
    [
        ({"load_model": "zip"}, "feeder.load_model", "one of 'exponential', 'published'"),
        ({"pv_kva": {"pv675": 0}}, "feeder.pv_kva.pv675", "0 < kva <= 20000"),
        ({"pv_kva": {"pv675": "big"}}, "feeder.pv_kva.pv675", "0 < kva <= 20000"),
        ({"pv_kva": 3500}, "feeder.pv_kva", "a table of PV site = rating"),
        ({"head": "Line.650632"}, "feeder.head", '"<element>/<terminal>"'),
        ({"loads": "exponential"}, "feeder.loads", "unknown key"),
    ],
)
def test_bad_feeder_keys_name_the_key_and_what_is_allowed(feeder: dict, key: str, allowed: str) -> None:
    data = {"feeder": {"dss": str(ROOT / "config" / "ieee13" / "IEEE13.dss")} | feeder,
            "devices": [{"name": "m", "protocol": "modbus-tcp", "port": 15999,
                         "map": str(ROOT / "config" / "maps" / "sim-meter.toml")}]}  # fmt: skip
    with pytest.raises(BenchConfigError) as err:
        parse_bench_config(data, ROOT / "config" / "x.toml")
    (issue,) = err.value.issues
    assert issue.key == key and allowed in issue.allowed


# --- on a running bench ----------------------------------------------------------------------------------------


@pytest.mark.integration
@async_test
async def test_midday_pushes_the_far_end_above_range_a_when_every_device_is_on_its_own_control(tmp_path: Path) -> None:
    """11:30 to 11:40 EDT on the day: the regulator automatic, the cap bank local automatic, the inverters at unity power
    factor; bus 680 at the end of the feeder, beside 3 MW of PV, spends the ten minutes above 1.05 pu (ANSI C84.1
    Range A), and the truth log says so as the physics does."""
    cfg = load_bench_config(day_copy(tmp_path, start="2026-04-05T15:30:00Z"))
    truth = tmp_path / "truth.jsonl"
    bench = Bench(cfg, truth_log=TruthLog(truth))
    await bench.start()
    try:
        for _ in range(600):
            await bench.step_once()
        inverter = bench.model_of("pv680")
        assert inverter.p_kw > 2000 and abs(inverter.q_kvar) < 1.0  # producing, unity power factor
        last = bench.solution
    finally:
        await bench.stop()
    records = list(read_records(truth))
    steps = [r for r in records if r["record"] == "step"]
    assert [r["n"] for r in steps] == list(range(601))
    assert steps[-1]["v"]["680"] == [round(last.v_pu("680")[p], 4) for p in "abc"]  # the log is the physics
    assert steps[-1]["head_kw"] < 0  # the PV back-feeds the substation
    summary = summarise(records)
    assert summary.outside_a_by_bus.get("680", 0.0) > 5.0, summary.outside_a_by_bus  # of 10 minutes
    assert summary.bus_minutes_below_a == 0.0
    assert summary.v_max is not None and summary.v_max.pu > 1.05 and summary.v_max.bus in ("680", "675")


@pytest.mark.integration
@async_test
async def test_run_stops_after_the_simulated_seconds_asked_and_counts_late_steps(tmp_path: Path) -> None:
    cfg = load_bench_config(day_copy(tmp_path))
    truth = tmp_path / "truth.jsonl"
    bench = Bench(cfg, speed=100_000.0, truth_log=TruthLog(truth))  # far faster than the machine: every step late
    await bench.start()
    try:
        await bench.run(sim_seconds=120)
        assert bench.steps == 120 and bench.elapsed_sim_s == 120.0
        assert bench.late_steps >= 100 and bench.max_lag_s > 0
    finally:
        await bench.stop()
    records = list(read_records(truth))
    down = records[-1]
    assert down["record"] == "bench_down" and down["steps"] == 120 and down["late_steps"] == bench.late_steps
    assert summarise(records).late_steps == bench.late_steps


@pytest.mark.integration
@async_test
async def test_a_bench_at_a_speed_the_machine_keeps_up_with_takes_no_step_late(tmp_path: Path) -> None:
    """Speed 10: a step every 100 ms of wall time for a bench step of a few ms (docs/feeder.md, "Speed")."""
    bench = Bench(load_bench_config(day_copy(tmp_path)), speed=10.0)
    await bench.start()
    try:
        await bench.run(sim_seconds=20)
        assert bench.steps == 20 and bench.late_steps == 0
    finally:
        await bench.stop()


@pytest.mark.integration
@async_test
async def test_a_pv_rating_for_a_site_the_feeder_lacks_or_a_head_it_lacks_stops_the_start(tmp_path: Path) -> None:
    cfg = load_bench_config(day_copy(tmp_path, edit=("pv680 = 3000.0", "pv999 = 3000.0")))
    with pytest.raises(BenchError, match=r"feeder: PV site 'pv999': no such site"):
        await Bench(cfg).start()
    cfg = load_bench_config(day_copy(tmp_path, edit=('head = "Line.650632/1"', 'head = "Line.650632/3"')))
    with pytest.raises(BenchError, match=r"feeder: head = 'Line.650632/3': not a terminal of the feeder"):
        await Bench(cfg).start()
    assert not (tmp_path / "rtu-day-bus1").exists()  # the failed starts cleaned up their pty pairs


@pytest.mark.integration
def test_sim_run_for_a_simulated_minute_then_sim_truth_summarises_it(tmp_path: Path) -> None:
    path, truth = day_copy(tmp_path), tmp_path / "truth.jsonl"
    proc = subprocess.run(
        [str(GRIDEDGE), "sim", "run", "--config", str(path), "--speed", "600", "--sim-seconds", "60",
         "--truth", str(truth)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "stopped steps=60 sim_elapsed_s=60 speed=600 late_steps=" in proc.stdout
    records = [json.loads(line) for line in truth.read_text().splitlines()]
    assert [r["record"] for r in records] == ["bench_up"] + ["step"] * 61 + ["bench_down"]
    assert records[0]["feeder"]["pv"] == {"pv634": 250.0, "pv652": 100.0, "pv675": 3500.0, "pv680": 3000.0}
    assert records[0]["feeder"]["load_model"] == {"model": "exponential", "cvr_watts": 0.8, "cvr_vars": 2.5}
    out = subprocess.run([str(GRIDEDGE), "sim", "truth", str(truth), "--json"], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["steps"] == 61 and summary["duration_s"] == 61.0
    assert summary["pv_kwh"] == 0.0  # 00:00: night
    assert summary["head_kwh"] == pytest.approx(records[-2]["head_kwh"] + records[-2]["head_kw"] / 3600, abs=1e-3)


def test_the_device_index_lists_the_day_as_configured() -> None:
    """docs/devices/README.md's table of the day against config/sim-ieee13-day.toml: names, protocol, address, unit."""
    text = (ROOT / "docs" / "devices" / "README.md").read_text()
    section = text.split("## The high-PV cloudy day", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in section.splitlines() if ln.startswith("| ")]
    documented = {row[0]: row for row in rows[1:]}  # past the header (its rule is "|---|...")
    cfg = load_bench_config(DAY)
    assert set(documented) == {d.name for d in cfg.devices} | {p.name for p in cfg.pmus}
    for d in cfg.devices:
        _, _, _, protocol, address, unit = documented[d.name]
        if d.protocol == "modbus-tcp":
            assert protocol.startswith("Modbus TCP") and address == f"{d.host}:{d.port}", d.name
        else:
            assert protocol == "Modbus RTU" and address == f"pty `{cfg.bus(str(d.bus)).link.relative_to(ROOT)}`"
        assert unit == str(d.unit_id), d.name
    (pmu,) = cfg.pmus
    assert documented[pmu.name][4] == f"{pmu.host}:{pmu.port}"
