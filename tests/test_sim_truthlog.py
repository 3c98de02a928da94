"""The truth log's writer and reader (docs/truth-log.md): step records from solved feeders, and the summary a proof of
control reports, checked on logs made by hand with the answers worked out by hand in the comments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sim_hw.cli import main as sim_main
from sim_hw.feeder.solution import Solution, Terminal
from sim_hw.truthlog import (
    Extreme,
    TruthLog,
    TruthLogError,
    format_summary,
    read_records,
    step_fields,
    summarise,
)

T0 = 1_773_964_800.0  # 2026-03-20T00:00:00Z


def header(step_s: float = 60.0) -> dict[str, Any]:
    """A bench_up record: three feeder buses A (abc), B (bc), C (a) behind the substation's sourcebus, 650, rg60."""
    buses = {b: {"phases": "abc", "base_kv_ln": 2.4} for b in ("sourcebus", "650", "rg60", "a")}
    buses |= {"b": {"phases": "bc", "base_kv_ln": 2.4}, "c": {"phases": "a", "base_kv_ln": 0.277}}
    feeder = {"buses": buses, "substation_buses": ["sourcebus", "650", "rg60"], "head": "Line.h/1", "pv": {},
              "capacitors": ["cap1"], "load_model": {"model": "exponential"}}  # fmt: skip
    return {"record": "bench_up", "ts": T0, "step_s": step_s, "sim_start": T0, "feeder": feeder}


def step(n: int, a: list, b: list, c: list, taps: list[int], cap: bool, head_kw: float, loss_kw: float,
         load_kw: float = 0.0, pv_kw: float = 0.0, step_s: float = 60.0) -> dict[str, Any]:  # fmt: skip
    return {"record": "step", "ts": T0 + n * step_s, "n": n,
            "v": {"sourcebus": [1.0] * 3, "650": [1.0] * 3, "rg60": [1.07] * 3, "a": a, "b": b, "c": c},
            "taps": taps, "caps": {"cap1": cap}, "head_kw": head_kw, "head_kvar": 0.0, "loss_kw": loss_kw,
            "loss_kvar": 0.0, "load_kw": load_kw, "load_kvar": 0.0, "pv": {"pv1": [pv_kw, 0.0]}}  # fmt: skip


N = None
# Five one-minute steps. The substation's rg60 is at 1.07 pu throughout: held high on purpose, never judged.
HAND_LOG = [
    header(),
    step(0, [1.0, 1.0, 1.0], [N, 1.0, 1.0], [1.0, N, N], [5, 4, 5], True, 1000.0, 30.0, 970.0),
    # A above Range A (1.06 > 1.05, and above Range B's 1.0583); B below Range A (0.94 < 0.95), inside Range B
    step(1, [1.06, 1.0, 1.0], [N, 0.94, 1.0], [1.0, N, N], [4, 4, 5], True, 600.0, 20.0, 900.0, 320.0),
    # A above and below at once (counted once in the total, in both splits); B below Range B too (0.91 < 0.9167);
    # C above Range B (1.06); the cap opens; taps a -2, b +1
    step(2, [1.055, 0.94, 1.0], [N, 0.91, 1.0], [1.06, N, N], [2, 5, 5], False, -200.0, 40.0, 800.0, 1000.0),
    {
        "record": "scenario_step",
        "ts": T0 + 180,
        "elapsed_s": 180.0,
        "action": "fault",
        "where": "bus a",
        "text": "x",
        "end": False,
    },  # fmt: skip
    # A and C de-energised (every phase < 0.1 pu): an interruption, not out of range; the cap closes again
    step(3, [0.05, 0.02, 0.0], [N, 1.0, 1.0], [0.05, N, N], [2, 5, 5], True, 0.0, 10.0),
    step(4, [1.0, 1.0, 1.0], [N, 1.0, 1.0], [1.0, N, N], [3, 5, 5], True, 1000.0, 30.0, 970.0),
    {"record": "bench_down", "ts": T0 + 300, "steps": 4, "late_steps": 0, "max_lag_s": 0.001},
]


def test_summary_of_a_hand_made_log_gives_the_hand_computed_figures() -> None:
    s = summarise(HAND_LOG)
    assert s.steps == 5 and s.step_s == 60.0 and s.duration_s == 300.0
    assert s.start_ts == T0 and s.end_ts == T0 + 300
    assert s.buses == ("a", "b", "c")  # the substation's buses are not judged
    # step 1: A, B; step 2: A, B, C -> 5 bus-minutes; above: A1, A2, C2; below: B1, A2, B2
    assert s.bus_minutes_outside_a == pytest.approx(5.0)
    assert s.bus_minutes_above_a == pytest.approx(3.0)
    assert s.bus_minutes_below_a == pytest.approx(3.0)
    assert s.outside_a_by_bus == pytest.approx({"a": 2.0, "b": 2.0, "c": 1.0})
    # Range B (0.9167..1.0583): A at step 1 (1.06), B (0.91) and C (1.06) at step 2
    assert s.bus_minutes_outside_b == pytest.approx(3.0)
    assert s.bus_minutes_dead == pytest.approx(2.0)  # A and C at step 3
    assert s.v_max == Extreme(1.06, "a", "a", T0 + 60)  # C's 1.06 later does not beat it
    assert s.v_min == Extreme(0.91, "b", "b", T0 + 120)  # the de-energised phases are not the lowest voltage
    # 26 energised phase values (6 + 6 + 6 + 2 + 6) summing to 6 + 6 + 5.965 + 2 + 6 = 25.965
    assert s.v_mean_pu == pytest.approx(25.965 / 26)
    # a: |4-5| + |2-4| + |3-2| = 4; b: |5-4| = 1; c: 0
    assert s.tap_operations_by_phase == [4, 1, 0] and s.tap_operations == 5
    assert s.cap_operations == 2 and s.cap_operations_by_cap == {"cap1": 2}
    # each step's power for one minute: head (1000 + 600 - 200 + 0 + 1000) / 60 = 40 kWh; import 2600 / 60,
    # export 200 / 60; losses 130 / 60; load (970 + 900 + 800 + 0 + 970) / 60; PV (320 + 1000) / 60
    assert s.head_kwh == pytest.approx(40.0)
    assert s.head_import_kwh == pytest.approx(2600 / 60) and s.head_export_kwh == pytest.approx(200 / 60)
    assert s.loss_kwh == pytest.approx(130 / 60)
    assert s.load_kwh == pytest.approx(3640 / 60) and s.pv_kwh == pytest.approx(1320 / 60)
    assert s.scenario_steps == 1 and s.late_steps == 0


def test_summary_on_chosen_buses_and_the_range_edges_count_as_inside() -> None:
    log = [
        header(step_s=30.0),
        step(0, [1.05, 0.95, 1.0], [N, 1.0, 1.0], [1.0, N, N], [0, 0, 0], True, 0.0, 0.0, step_s=30.0),
        step(1, [1.0501, 1.0, 1.0], [N, 1.0, 1.0], [1.0, N, N], [0, 0, 0], True, 0.0, 0.0, step_s=30.0),
    ]
    s = summarise(log)
    assert s.bus_minutes_outside_a == pytest.approx(0.5)  # step 0 on the edges: inside; step 1: 30 s above
    only_b = summarise(log, buses=["B"])
    assert only_b.buses == ("b",) and only_b.bus_minutes_outside_a == 0.0
    with_substation = summarise(log, buses=["a", "rg60"])
    assert with_substation.bus_minutes_outside_a == pytest.approx(1.5)  # rg60 at 1.07 pu for both steps


def test_without_a_bench_up_record_every_bus_is_judged_and_the_step_comes_from_the_spacing() -> None:
    steps = [r for r in HAND_LOG if r["record"] == "step"]
    s = summarise(steps)
    assert s.step_s == 60.0
    assert s.buses == ("sourcebus", "650", "rg60", "a", "b", "c")
    assert s.bus_minutes_outside_a == pytest.approx(5.0 + 5.0)  # rg60 counted now: 5 more minutes
    with pytest.raises(TruthLogError, match="gives no step length"):
        summarise(steps[:1])


def test_an_empty_log_summarises_to_zeros() -> None:
    s = summarise([header()])
    assert s.steps == 0 and s.bus_minutes_outside_a == 0.0 and s.v_max is None and s.head_kwh == 0.0
    assert "steps" in format_summary(s)


def write_lines(path: Path, records: list[dict[str, Any]], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_read_records_leaves_out_a_line_still_being_written(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    write_lines(path, HAND_LOG[:3], tail='{"record": "step", "ts": 17')
    records = list(read_records(path))
    assert [r["record"] for r in records] == ["bench_up", "step", "step"]


@pytest.mark.parametrize(
    ("line", "match"),
    [("not json", r"truth.jsonl:3: not a JSON record"), ("[1, 2]", r"truth.jsonl:3: a record must be a JSON object")],
)
def test_read_records_names_the_line_that_is_not_a_record(tmp_path: Path, line: str, match: str) -> None:
    path = tmp_path / "truth.jsonl"
    write_lines(path, HAND_LOG[:2], tail=line + "\n")
    with pytest.raises(TruthLogError, match=match):
        list(read_records(path))


def test_read_records_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(TruthLogError, match=r"nope.jsonl: cannot read the truth log"):
        list(read_records(tmp_path / "nope.jsonl"))


# --- the writer -----------------------------------------------------------------------------------------------


def solution(t: float, head_a: float, pv_a: float, source_kw: float, loss_kw: float) -> Solution:
    """A one-phase feeder built by hand: bus x at 2400 V (1.0 pu of 2.4 kV), bus y at 2520 V (1.05 pu); the head
    carries ``head_a`` A at unity power factor (2.4 kV x A), the PV site injects ``pv_a`` A at bus y."""
    v_x, v_y = 2400 + 0j, 2520 + 0j
    terminals = {
        "Line.h/1": Terminal("Line.h", "x", {"a": v_x}, {"a": complex(head_a)}),
        "Generator.pv1/1": Terminal("Generator.pv1", "y", {"a": v_y}, {"a": complex(-pv_a)}),
    }
    return Solution(t=t, converged=True, bus_v={"x": {"a": v_x}, "y": {"a": v_y, "b": 0.95 * 2400 + 0j}},
                    base_kv_ln={"x": 2.4, "y": 2.4}, terminals=terminals, losses_kva=complex(loss_kw, 2.0),
                    source_kva=complex(source_kw, 100.0), regulator_taps=(3, 2, 1),
                    capacitors={"cap1": False})  # fmt: skip


def test_step_fields_read_the_solution() -> None:
    fields = step_fields(solution(T0, head_a=500.0, pv_a=100.0, source_kw=1200.0, loss_kw=12.0), ("Line.h", 1))
    assert fields["v"] == {"x": [1.0, None, None], "y": [1.05, 0.95, None]}
    assert fields["head_kw"] == 1200.0 and fields["head_kvar"] == 0.0  # 2400 V x 500 A
    assert fields["pv"] == {"pv1": [252.0, 0.0]}  # 2520 V x 100 A injected
    # the loads draw what the source sends and the PV adds, less the losses: 1200 + 252 - 12
    assert fields["load_kw"] == 1440.0 and fields["load_kvar"] == 98.0
    assert fields["loss_kw"] == 12.0 and fields["taps"] == [3, 2, 1] and fields["caps"] == {"cap1": False}


def test_truth_log_steps_carry_the_energy_up_to_their_time_and_the_summary_agrees(tmp_path: Path) -> None:
    path = tmp_path / "run" / "truth.jsonl"
    log = TruthLog(path)
    log.write("bench_up", T0, step_s=10.0)
    # head 2.4 kV x 1000 A = 2400 kW for 10 s, then 2.4 kV x -500 A = -1200 kW (back-feed) for 10 s, then 0
    for n, amps in enumerate((1000.0, -500.0, 0.0)):
        log.step(solution(T0 + 10 * n, head_a=amps, pv_a=0.0, source_kw=0.0, loss_kw=36.0), n,
                 head=("Line.h", 1), step_s=10.0)  # fmt: skip
    log.close()
    records = list(read_records(path))
    steps = [r for r in records if r["record"] == "step"]
    assert [r["n"] for r in steps] == [0, 1, 2] and [r["ts"] for r in steps] == [T0, T0 + 10, T0 + 20]
    # up to each record's time: 0; 2400 kW x 10 s = 6.6667 kWh; then 6.6667 - 1200 kW x 10 s = 3.3333 kWh
    assert [r["head_kwh"] for r in steps] == [0.0, 6.6667, 3.3333]
    assert [r["head_import_kwh"] for r in steps] == [0.0, 6.6667, 6.6667]
    assert [r["head_export_kwh"] for r in steps] == [0.0, 0.0, 3.3333]
    assert [r["loss_kwh"] for r in steps] == [0.0, 0.1, 0.2]  # 36 kW x 10 s each
    s = summarise(records)
    assert s.head_kwh == pytest.approx(steps[-1]["head_kwh"] + steps[-1]["head_kw"] * 10 / 3600, abs=1e-4)
    assert s.loss_kwh == pytest.approx(0.3)
    assert "-0.0" not in path.read_text()


def test_steps_carry_each_meters_true_energy_when_given(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    log = TruthLog(path)
    log.step(solution(T0, head_a=1.0, pv_a=0.0, source_kw=0.0, loss_kw=0.0), 0, head=("Line.h", 1), step_s=1.0,
             meters={"m2": (5.0, 0.0), "m1": (1234.56789, 2.0)})  # fmt: skip
    log.step(solution(T0 + 1, head_a=1.0, pv_a=0.0, source_kw=0.0, loss_kw=0.0), 1, head=("Line.h", 1), step_s=1.0)
    log.close()
    first, second = (r for r in read_records(path) if r["record"] == "step")
    assert first["meters"] == {"m1": [1234.568, 2.0], "m2": [5.0, 0.0]} and "meters" not in second


def test_a_truth_log_that_cannot_be_written_is_dropped_with_one_error(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = TruthLog(blocker / "truth.jsonl")  # its folder is a file: cannot be created
    log.write("bench_up", T0)
    log.step(solution(T0, 1.0, 0.0, 0.0, 0.0), 0, head=("Line.h", 1), step_s=1.0)
    log.close()
    assert sum("truth_log_failed" in r.getMessage() for r in caplog.records) == 1


# --- the command ---------------------------------------------------------------------------------------------


def test_sim_truth_prints_the_summary_and_its_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "truth.jsonl"
    write_lines(path, HAND_LOG)
    assert sim_main(["truth", str(path)]) == 0
    text = capsys.readouterr().out
    assert "bus-minutes outside Range A (0.9500..1.0500 pu)  5.0 (above 3.0, below 3.0)" in text
    assert "tap operations" in text and "5 (per phase 4, 1, 0)" in text
    assert "40.0 kWh net (import 43.3, export 3.3)" in text
    assert sim_main(["truth", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bus_minutes_outside_a"] == pytest.approx(5.0) and data["cap_operations"] == 2
    assert data["v_max"] == {"pu": 1.06, "bus": "a", "phase": "a", "ts": T0 + 60}


def test_sim_truth_of_a_bad_file_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "truth.jsonl"
    path.write_text("garbage\n")
    assert sim_main(["truth", str(path)]) == 2
    assert "truth.jsonl:1: not a JSON record" in capsys.readouterr().err
