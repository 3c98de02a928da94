"""`gridedge pq analyze` / `gridedge pq report` as a user runs them: one real subprocess, the rest in-process."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.pq import doc, phases, write_comtrade, write_csv

import gridedge
from agent.pq.offline.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dip_csv(tmp_path_factory) -> Path:
    t, x = phases(6400.0, 2.0, harmonics={5: 0.05})
    x[1, (t >= 1.0) & (t < 1.06)] *= 0.5
    return write_csv(tmp_path_factory.mktemp("cli") / "dip.csv", t, x)


@pytest.fixture(scope="module")
def flagged_csv(tmp_path_factory) -> Path:
    """15 s at 1600 Hz, vb dipped to 50 % from 12.0 s for 0.1 s: inside the short file's Pst interval."""
    t, x = phases(1600.0, 15.0)
    x[1, (t >= 12.0) & (t < 12.1)] *= 0.5
    return write_csv(tmp_path_factory.mktemp("cli") / "flagged.csv", t, x)


def gridedge_cmd(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed ``gridedge`` command, as a user runs it."""
    exe = Path(sys.executable).parent / "gridedge"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.integration
def test_analyze_json_in_a_real_subprocess(dip_csv):
    exe = Path(sys.executable).parent / "gridedge"
    proc = subprocess.run([str(exe), "pq", "analyze", str(dip_csv), "--json"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {"channels", "unbalance_u2_pct", "unbalance_u0_pct", "events", "file", "aggregates_10min"} <= set(report)
    vb = report["channels"]["vb"]
    assert {"rms_v", "frequency_hz", "thd_pct", "harmonics_pct", "pst", "pst_short", "plt"} <= set(vb)
    assert vb["harmonics_pct"]["5"] == pytest.approx(5.0, abs=0.1)
    assert list(vb["harmonics_pct"]) == [str(h) for h in range(2, 51)]
    (ev,) = report["events"]
    assert (ev["type"], ev["phase"]) == ("dip", "vb")
    assert ev["residual_pct"] == pytest.approx(50.0 * math.sqrt(1.0025), abs=0.2)  # half the RMS of a sine + 5 % 5th


def test_analyze_text_report(capsys, dip_csv):
    code, out, err = run(capsys, "analyze", str(dip_csv))
    assert code == 0 and err == ""
    assert "Nominal   50 Hz (estimated)" in out and "dip" in out and "phase vb" in out
    assert "      5 " in out  # the 5th harmonic row


def test_analyze_plot_writes_a_png(capsys, dip_csv, tmp_path):
    png = tmp_path / "out.png"
    code, out, _ = run(capsys, "analyze", str(dip_csv), "--plot", str(png), "--json")
    assert code == 0 and json.loads(out)["events"]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # five panels with lines and bars


def test_analyze_comtrade_60hz(capsys, tmp_path):
    _, x = phases(7680.0, 1.5, f=60.0, peak=277 * math.sqrt(2), harmonics={7: 0.02})
    cfg = write_comtrade(tmp_path / "r60", 7680.0, x, lf=60.0)
    code, out, _ = run(capsys, "analyze", str(cfg), "--json")
    r = json.loads(out)
    assert (code, r["nominal_hz"], r["udin_v"], r["lamp_v"]) == (0, 60.0, 277.0, 120)
    assert r["channels"]["vc"]["harmonics_pct"]["7"] == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["analyze", "{csv}", "--nominal", "55"], "--nominal: '55': allowed 50 or 60"),
        (["analyze", "{csv}", "--lamp", "100"], "--lamp: '100': allowed 230 or 120"),
        (["analyze", "{csv}", "--vnom", "-1"], "--vnom: '-1': allowed a number > 0"),
        (["analyze", "{csv}", "--rate", "abc"], "--rate: 'abc': allowed a number > 0"),
        (["analyze", "{csv}", "--plot", "{tmp}/x.jpg"], "allowed a .png file name"),
        (["analyze", "{csv}", "--plot", "{tmp}/no/x.png"], "does not exist"),
        (["analyze", "{tmp}/missing.csv"], "missing.csv: no such file"),
        (["analyze", "{tmp}/bad.csv"], "row 1 (line 2), column 1 'va': 'x' is not a finite number"),
        (["analyze"], "the following arguments are required: file"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["report", "--input", "{csv}", "--standard", "iec"], "invalid choice: 'iec'"),
        (["report", "--input", "{csv}", "--bus-kv", "13.8"], "--bus-kv: only with --standard ieee519"),
        (["report", "--input", "{tmp}/bad.json"], "not a JSON document"),
        (["report", "--input", "{tmp}/list.json"], "not the JSON of `gridedge pq analyze --json`"),
        (["report", "--input", "{tmp}/partial.json"], "input.aggregates_10min: missing"),
        (["report", "--input", "{tmp}/none.json"], "none.json: no such file"),
    ],
)
def test_bad_input_exits_2_with_a_message(capsys, dip_csv, tmp_path, args, message):
    (tmp_path / "bad.csv").write_text("va\nx\n")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    partial = doc()
    del partial["aggregates_10min"]
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    argv = [a.format(csv=dip_csv, tmp=tmp_path) for a in args]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and err.startswith("gridedge pq") and err.count("\n") == 1


def test_report_from_json_pass_and_fail(capsys, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(doc(plt=[0.4] * 20)))
    code, out, _ = run(capsys, "report", "--input", str(good))
    assert code == 0 and "Verdict: PASS" in out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc(harm=lambda i: {5: 4.0}, n3=10, harm3=lambda i: {5: 4.0})))
    code, out, _ = run(capsys, "report", "--input", str(bad), "--standard", "ieee519", "--bus-kv", "13.8", "--json")
    r = json.loads(out)
    assert code == 1 and r["verdict"] == "fail" and r["ieee519_row"] == "1 kV < V <= 69 kV"
    failed = {(c["criterion"], c["channel"]) for c in r["criteria"] if c["passed"] is False}
    assert ("harmonic 5 (10 min)", "va") in failed and ("harmonic 5 (3 s)", "va") not in failed  # 4 < 4.5


def test_report_from_a_recording_and_from_analyze_json(capsys, dip_csv, tmp_path):
    code, out, _ = run(capsys, "report", "--input", str(dip_csv), "--standard", "en50160-mv", "--json")
    r = json.loads(out)
    # 2 s: no 10-min value, no Plt: nothing to assess against the weekly limits
    assert code == 0 and r["verdict"] == "incomplete" and r["period"]["complete"] is False
    code, out, _ = run(capsys, "analyze", str(dip_csv), "--json")
    saved = tmp_path / "a.json"
    saved.write_text(out)
    code, out, _ = run(capsys, "report", "--input", str(saved), "--standard", "ieee519")
    # the 3-s values exist: 5 % 5th < 1.5 x 5 % passes the daily criterion; the 10-min ones have no data
    assert code == 0 and "THD (3 s)" in out and "Verdict: INCOMPLETE" in out


def test_gridedge_dispatches_pq_and_lists_it_in_help(capsys, dip_csv):
    assert gridedge.main(["pq", "analyze", str(dip_csv), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["channels"]
    assert gridedge.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "pq " in out and "pq analyze FILE" in out and "sim" in out
    assert main([]) == 0 and "analyze" in capsys.readouterr().out


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pq", "analyze", "."], ".: is a folder, not a recording"),
        (["pq", "report", "--input", "."], ".: is a folder, not a recording"),
        (["pq", "report", "--input", "saved.json"], "saved.json: is a folder, not the JSON of `gridedge pq analyze"),
    ],
)
def test_a_folder_is_named_a_folder_not_a_missing_file(tmp_path, args, message):
    (tmp_path / "saved.json").mkdir()
    proc = gridedge_cmd(*args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert message in proc.stderr and "no such file" not in proc.stderr and proc.stderr.count("\n") == 1


HIDE_MATPLOTLIB = """
import sys


class HideMatplotlib:
    \"\"\"An installation without matplotlib: importing it fails as it does when the package is absent.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, HideMatplotlib())
"""


@pytest.mark.integration
def test_plot_without_matplotlib_says_how_to_install_it(tmp_path, dip_csv):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDE_MATPLOTLIB)
    env = {**os.environ, "PYTHONPATH": str(site)}
    hidden = subprocess.run([sys.executable, "-c", "import matplotlib"], capture_output=True, text=True, env=env)
    assert hidden.returncode == 1 and "No module named 'matplotlib'" in hidden.stderr  # the hiding works
    png = tmp_path / "out.png"
    proc = gridedge_cmd("pq", "analyze", str(dip_csv), "--plot", str(png), env=env)
    assert proc.returncode == 2 and proc.stdout == "" and not png.exists()
    assert "--plot needs matplotlib" in proc.stderr and "pip install 'gridedge[plot]'" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.integration
def test_analyze_marks_a_flagged_pst_in_the_text_and_carries_the_flag_in_json(flagged_csv):
    proc = gridedge_cmd("pq", "analyze", str(flagged_csv))
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line[:2] in ("va", "vb", "vc")}
    # IEC 61000-4-30 4.7 flags by time: the dip on vb flags the interval's Pst of every channel
    for name in ("va", "vb", "vc"):
        assert re.search(r"  \d+\.\d{3}\* \(short file: 5 s\)$", rows[name]), rows[name]
    assert "* flagged" in proc.stdout and "IEC 61000-4-30 4.7" in proc.stdout
    proc = gridedge_cmd("pq", "analyze", str(flagged_csv), "--json")
    report = json.loads(proc.stdout)
    assert report["events"][0]["type"] == "dip"
    for ch in report["channels"].values():
        assert len(ch["pst"]) == 1 and ch["pst_flagged"] == [True]


@pytest.mark.integration
def test_report_says_why_a_criterion_has_no_verdict(flagged_csv):
    proc = gridedge_cmd("pq", "report", "--input", str(flagged_csv))
    assert proc.returncode == 0, proc.stderr
    na = [line for line in proc.stdout.splitlines() if " n/a" in line]
    assert na and all(re.search(r" n/a: \S", line) for line in na), na
    voltage = next(line for line in na if line.startswith("supply voltage variation "))
    assert "n/a: no 10-min value: the record is 15.0 s long" in voltage
    plt = next(line for line in na if line.startswith("flicker severity Plt"))
    assert "n/a: no Plt value: the record is 15.0 s long" in plt
