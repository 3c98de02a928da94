"""The closed-loop day harness (benchmarks/control_day.py): its table and its targets judged right from small
synthetic truth logs (no processes), the configurations it writes accepted by the bench and the agent, and run 1
end to end over a few simulated minutes (bench, agent, Mosquitto and central each its own process).

The targets: run 2 at least 90 % fewer bus-minutes outside ANSI C84.1 Range A than run 1 with no
more tap + capacitor operations; run 3 at least 2 % less feeder-head energy than run 1 with no judged bus below
Range A (114 V on the 120 V base, ANSI C84.1-2016 Table 1)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from agent.config import load_config
from sim_hw.config import load_bench_config
from sim_hw.truthlog import read_records, summarise

ROOT = Path(__file__).resolve().parent.parent


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("control_day", ROOT / "benchmarks" / "control_day.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["control_day"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


cd = _harness()

STEP_S = 60.0  # one step a minute: a step outside Range A is one bus-minute
BUSES = {"rg60": "abc", "632": "abc", "675": "abc", "611": "c"}


def truth_log(path: Path, *, high: int = 0, low: int = 0, taps: int = 0, caps: int = 0, head_kw: float = 1200.0,
              v: float = 1.0, steps: int = 60) -> Path:  # fmt: skip
    """A truth log of ``steps`` one-minute steps: bus 675 above Range A (1.06 pu) for the first ``high`` steps,
    bus 611 below it (0.94 pu) for the next ``low``, every other judged phase at ``v``; ``taps`` tap steps on
    phase a and ``caps`` capacitor switchings spread over the log; a constant ``head_kw`` (losses 2 % of it)."""
    buses = {b: {"phases": p, "base_kv_ln": 2.401777} for b, p in BUSES.items()}
    recs = [{"record": "bench_up", "ts": 0.0, "pid": 1, "speed": 60, "step_s": STEP_S, "sim_start": 0.0, "wall": 0.0,
             "devices": [], "scenario": None,
             "feeder": {"buses": buses, "substation_buses": ["rg60"], "head": "Line.650632/1", "pv": {},
                        "capacitors": ["cap675"], "load_model": {"model": "published"}}}]  # fmt: skip
    tap, closed = 0, True
    for n in range(steps):
        volts = {b: [v if ph in p else None for ph in "abc"] for b, p in BUSES.items()}
        volts["rg60"] = [1.03, 1.03, 1.03]  # a substation bus: not judged, however high
        if n < high:
            volts["675"] = [1.06, v, v]
        elif n < high + low:
            volts["611"] = [None, None, 0.94]
        if 0 < n <= taps:
            tap += 1
        if 0 < n <= caps:
            closed = not closed
        recs.append({"record": "step", "ts": n * STEP_S, "n": n, "v": volts, "taps": [tap, 0, 0],
                     "caps": {"cap675": closed}, "head_kw": head_kw, "head_kvar": 300.0,
                     "loss_kw": head_kw * 0.02, "loss_kvar": 0.0, "load_kw": head_kw * 0.98, "load_kvar": 300.0,
                     "pv": {}})  # fmt: skip
    recs.append({"record": "bench_down", "ts": steps * STEP_S, "steps": steps, "late_steps": 0, "max_lag_s": 0.0})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def summary(path: Path):
    return summarise(read_records(path))


def test_the_summary_of_a_synthetic_log_counts_what_was_written(tmp_path: Path) -> None:
    s = summary(truth_log(tmp_path / "r.jsonl", high=10, low=3, taps=4, caps=2, head_kw=1200.0))
    assert s.bus_minutes_above_a == 10 and s.bus_minutes_below_a == 3 and s.bus_minutes_outside_a == 13
    assert (s.tap_operations, s.cap_operations, cd.switching_ops(s)) == (4, 2, 6)
    assert s.head_kwh == pytest.approx(1200.0)  # 1200 kW for an hour


def test_run_two_meets_its_target_with_exactly_ninety_percent_fewer_minutes_and_equal_wear(tmp_path: Path) -> None:
    one = summary(truth_log(tmp_path / "1.jsonl", high=10, taps=3))
    two = summary(truth_log(tmp_path / "2.jsonl", high=1, taps=2, caps=1))
    [t] = cd.judge({1: one, 2: two})
    assert t.run == 2 and t.met is True, t.detail


@pytest.mark.parametrize(
    ("high", "taps", "caps", "why"),
    [(2, 3, 0, "80 % fewer minutes only"), (1, 3, 1, "one operation more than run 1"), (0, 5, 0, "more taps")],
)
def test_run_two_misses_its_target(tmp_path: Path, high: int, taps: int, caps: int, why: str) -> None:
    one = summary(truth_log(tmp_path / "1.jsonl", high=10, taps=3))
    two = summary(truth_log(tmp_path / "2.jsonl", high=high, taps=taps, caps=caps))
    [t] = cd.judge({1: one, 2: two})
    assert t.met is False, why
    assert "MISSED" in t.detail


def test_run_three_meets_its_target_with_two_percent_less_energy_and_no_bus_below_range_a(tmp_path: Path) -> None:
    one = summary(truth_log(tmp_path / "1.jsonl", head_kw=1000.0))
    three = summary(truth_log(tmp_path / "3.jsonl", head_kw=980.0, v=0.97))
    [t] = cd.judge({1: one, 3: three})
    assert t.met is True, t.detail
    effect = cd.cvr_effect(one, three)
    assert effect["energy_saved_kwh"] == pytest.approx(20.0)
    assert effect["energy_saved_pct"] == pytest.approx(2.0)
    assert effect["v_reduction_pu"] == pytest.approx(0.03)
    assert effect["v_reduction_v"] == pytest.approx(3.6)  # 0.03 pu of the 120 V base


@pytest.mark.parametrize(
    ("head_kw", "low", "why"), [(981.0, 0, "1.9 % less energy"), (950.0, 1, "one bus-minute below Range A")]
)
def test_run_three_misses_its_target(tmp_path: Path, head_kw: float, low: int, why: str) -> None:
    one = summary(truth_log(tmp_path / "1.jsonl", head_kw=1000.0))
    three = summary(truth_log(tmp_path / "3.jsonl", head_kw=head_kw, low=low))
    [t] = cd.judge({1: one, 3: three})
    assert t.met is False, why


def test_run_three_is_not_judged_on_a_window_the_feeder_exported_on_net(tmp_path: Path) -> None:
    one = summary(truth_log(tmp_path / "1.jsonl", head_kw=-1000.0))
    three = summary(truth_log(tmp_path / "3.jsonl", head_kw=-1010.0, v=0.97))
    [t] = cd.judge({1: one, 3: three})
    assert t.met is None and "not judged" in t.detail and "MISSED" not in t.detail
    effect = cd.cvr_effect(one, three)
    assert effect["energy_saved_kwh"] == pytest.approx(one.head_kwh - three.head_kwh) and effect["energy_saved_kwh"] > 0
    assert effect["energy_saved_pct"] is None


def test_without_run_one_the_targets_are_not_judged(tmp_path: Path) -> None:
    two = summary(truth_log(tmp_path / "2.jsonl", high=1))
    three = summary(truth_log(tmp_path / "3.jsonl"))
    assert [t.met for t in cd.judge({2: two, 3: three})] == [None, None]
    assert cd.verdict(cd.judge({2: two, 3: three})) == 0


def test_the_table_shows_each_run_and_its_ratio_to_run_one(tmp_path: Path) -> None:
    runs = {1: summary(truth_log(tmp_path / "1.jsonl", high=20, taps=4, head_kw=1000.0)),
            2: summary(truth_log(tmp_path / "2.jsonl", high=1, taps=2, head_kw=1000.0)),
            3: summary(truth_log(tmp_path / "3.jsonl", taps=2, head_kw=970.0, v=0.98))}  # fmt: skip
    table = cd.format_table(runs)
    row = next(line for line in table.splitlines() if line.startswith("bus-minutes outside Range A"))
    assert row.split()[-5:] == ["20.0", "1.0", "0.0", "0.050", "0.000"]
    energy = next(line for line in table.splitlines() if line.startswith("feeder-head energy"))
    assert energy.split()[-5:] == ["1,000.0", "1,000.0", "970.0", "1.000", "0.970"]
    assert table.count("MET") == 2 and "MISSED" not in table
    assert "head energy saved 30.0 kWh (3.00 %)" in table


def test_table_only_reads_the_kept_logs_and_exits_one_on_a_missed_target(tmp_path: Path, capsys) -> None:
    truth_log(tmp_path / "run1.jsonl", high=10, taps=3)
    truth_log(tmp_path / "run2.jsonl", high=5, taps=3)
    assert cd.main(["--table-only", "--runs", "1,2", "--out", str(tmp_path)]) == 1
    assert "MISSED" in capsys.readouterr().out
    assert "MISSED" in (tmp_path / "table.txt").read_text()
    truth_log(tmp_path / "run2.jsonl", high=0, taps=3)
    assert cd.main(["--table-only", "--runs", "1,2", "--out", str(tmp_path)]) == 0


@pytest.mark.parametrize("run", [1, 2, 3])
def test_the_configs_the_harness_writes_are_accepted_by_the_bench_and_the_agent(tmp_path: Path, run: int) -> None:
    ports: dict[int, int] = {}
    bench = load_bench_config(cd.bench_config(tmp_path, 10.0, ports, set()))
    start = bench.bench.start
    assert start == pytest.approx(cd.datetime.fromisoformat(cd.DAY_START).timestamp() + 10 * 3600)
    path = cd.agent_config(tmp_path, cd.RUNS[run], ports, speed=120, sim_start=start, wall_start=1.8e9)
    agent = load_config(path)
    served = {d.port for d in bench.devices if d.port} | {p.port for p in bench.pmus}
    assert {d.port for d in agent.devices if d.port} | {p.port for p in agent.pmus} <= served
    assert {Path(d.serial.port) for d in agent.devices if d.serial} == {bench.bus("bus1").link}
    assert agent.clock.speed == 120 and agent.clock.start == start and agent.clock.wall_start == 1.8e9
    assert agent.control.mode == ("monitor" if run == 1 else "control")
    assert agent.control.cvr is not None and agent.control.cvr.enabled == (run == 3)


@pytest.mark.integration
def test_run_one_end_to_end_over_three_simulated_minutes_writes_nothing(tmp_path: Path) -> None:
    """Bench, agent (monitor), Mosquitto and central, each its own process: the truth log has the window's steps,
    the agent recorded no control decision, and the table says so."""
    code = cd.main(["--runs", "1", "--speed", "30", "--hours", "12-12.05", "--out", str(tmp_path)])
    assert code == 0, (tmp_path / "table.txt").read_text()
    s = summary(tmp_path / "run1.jsonl")
    assert s.steps == 181  # steps 0..180 of 1 s: three simulated minutes
    assert s.start_ts == pytest.approx(cd.datetime.fromisoformat(cd.DAY_START).timestamp() + 12 * 3600)
    assert cd.control_decisions(tmp_path / "run1" / "agent.db") == {}
    table = (tmp_path / "table.txt").read_text()
    assert "run 1 (monitor)" in table and "agent polls" in table


class _Bench:
    """What wait_bench_up asks of the bench's process: its pid, and whether it has exited."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode = None

    def poll(self) -> None:
        return None


def test_a_previous_runs_truth_log_is_not_taken_for_this_benchs(tmp_path: Path) -> None:
    """The agent's clock is set from the bench_up record: one left by an earlier bench (another pid) must not do."""
    path = tmp_path / "run1.jsonl"
    path.write_text(json.dumps({"record": "bench_up", "ts": 0.0, "pid": 111, "sim_start": 0.0, "wall": 5.0}) + "\n")
    with pytest.raises(TimeoutError):
        cd.wait_bench_up(path, _Bench(222), 0.3)
    path.write_text(json.dumps({"record": "bench_up", "ts": 0.0, "pid": 222, "sim_start": 0.0, "wall": 9.0}) + "\n")
    assert cd.wait_bench_up(path, _Bench(222), 1.0)["wall"] == 9.0
