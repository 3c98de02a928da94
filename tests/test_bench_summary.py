"""The benchmarks' report line (benchmarks/_report.py) and the summary that collects it (benchmarks/summary.py)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import _report  # noqa: E402
import summary  # noqa: E402


def test_bench_line_is_one_json_record_after_the_prefix(capsys):
    _report.emit("poll cycle vs raw floor", 33.5, 29.0, 33.5 / 29.0, "ms", "<= 1.15x raw floor", False)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("BENCH {")
    record = json.loads(out[len("BENCH ") :])
    assert record == {
        "name": "poll cycle vs raw floor",
        "ours": 33.5,
        "peer": 29.0,
        "ratio": round(33.5 / 29.0, 6),
        "unit": "ms",
        "target": "<= 1.15x raw floor",
        "met": False,
    }
    assert _report.parse(out.rstrip("\n")) == record


def test_missing_and_non_finite_figures_are_null():
    record = _report.parse(_report.line("budget", 12, None, math.nan, "s", "< 60 s", True))
    assert record is not None
    assert (record["ours"], record["peer"], record["ratio"], record["met"]) == (12, None, None, True)


def test_other_lines_are_not_records():
    assert _report.parse("target: decode >= 20x pyPMU") is None
    assert _report.parse("BENCH not json") is None
    assert _report.parse("BENCH [1, 2]") is None


def test_summary_table_has_a_row_per_record_and_one_per_failed_benchmark():
    ok = {"name": "store", "ours": 120_000.0, "peer": 9_000.0, "ratio": 13.3, "unit": "readings/s",
          "target": ">= 100,000/s", "met": True}  # fmt: skip
    rows = summary.table([("outbox.py", [ok], 0, 1.0), ("broken.py", [], 1, 0.5), ("quiet.py", [], 0, 0.1)])
    body = rows[2:]
    assert len(body) == 3
    assert body[0].split()[:2] == ["outbox.py", "store"] and "120,000" in body[0] and body[0].rstrip().endswith("yes")
    assert "FAILED (exit 1)" in body[1] and body[1].rstrip().endswith("NO")
    assert "no BENCH line printed" in body[2]


def test_every_listed_benchmark_exists_and_the_day_runs_are_not_default():
    listed = [s for s, _ in summary.DEFAULT + summary.LONG]
    assert all((ROOT / "benchmarks" / s).is_file() for s in listed)
    assert {"control_day.py", "metering_day.py", "metering_judge.py"}.isdisjoint(s for s, _ in summary.DEFAULT)


@pytest.mark.integration
def test_a_benchmark_over_its_time_is_ended_and_what_it_printed_is_kept(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "from _report import emit\n"
        "emit('first', 1.0, 2.0, 0.5, 's', '< 1 s', True)\n"
        "time.sleep(600)\n"
    )
    records, code, _ = summary.run_one(str(script), timeout_s=2.0)
    assert [r["name"] for r in records] == ["first"]
    assert code != 0
