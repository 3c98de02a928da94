"""``gridedge sim waveform``: a synthetic recording written as COMTRADE, read back by the comtrade package."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import comtrade
import numpy as np
import pytest

from sim_hw.cli import main

DESC = """
[waveform]
nominal_hz = 60
rate_hz = 7680
v_rms = [120.0, 120.0, 120.0]
harmonics = [{order = 5, pct = 4.0}]
[[waveform.events]]
kind = "dip"
start_s = 0.5
duration_s = 0.1
magnitude_pct = 60
phases = "a"
"""


@pytest.mark.integration
def test_cli_writes_comtrade_the_comtrade_package_reads(tmp_path: Path) -> None:
    desc = tmp_path / "w.toml"
    desc.write_text(DESC)
    out = tmp_path / "rec"
    proc = subprocess.run(
        [sys.executable, "-m", "gridedge", "sim", "waveform", "--desc", str(desc), "--seconds", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rec = comtrade.Comtrade(use_numpy_arrays=True, ignore_warnings=True)
    rec.load(str(out) + ".cfg", str(out) + ".dat")
    assert rec.frequency == 60 and len(rec.time) == 7680
    va = np.asarray(rec.analog[0])
    cycle = 128  # 7680 / 60
    rms_before = math.sqrt(float(np.mean(va[: cycle * 25] ** 2)))  # 25 whole cycles before the dip
    assert rms_before == pytest.approx(120.0 * math.sqrt(1 + 0.04**2), rel=2e-3)  # fundamental + 4 % 5th
    mid = int(0.55 * 7680) - cycle // 2
    rms_dip = math.sqrt(float(np.mean(va[mid : mid + cycle] ** 2)))
    assert rms_dip == pytest.approx(0.6 * rms_before, rel=1e-2)  # the dip to 60 %


def test_cli_refuses_a_bad_description_and_missing_seconds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[waveform]\nrate_hz = -5\n")
    assert main(["waveform", "--desc", str(bad), "--seconds", "1", "--out", str(tmp_path / "x")]) == 2
    assert "rate_hz" in capsys.readouterr().err
    good = tmp_path / "good.toml"
    good.write_text(DESC)
    assert main(["waveform", "--desc", str(good), "--out", str(tmp_path / "x")]) == 2
    assert "--seconds is required" in capsys.readouterr().err
    assert main(["waveform", "--desc", str(tmp_path / "none.toml"), "--seconds", "1", "--out", "x"]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.parametrize(
    ("out", "exit_code", "reason"),
    [
        ("/nonexistent/x", 2, "folder /nonexistent does not exist"),
        ("{tmp}/a-file/x", 2, "is not a folder"),
        ("/proc/x", 1, "cannot write /proc/x.cfg"),  # a folder that takes no new file, whoever asks
    ],
)
def test_an_output_path_it_cannot_write_is_one_line_naming_the_path_and_why(
    tmp_path: Path, out: str, exit_code: int, reason: str
) -> None:
    """No traceback: one line naming the path and the reason, and a non-zero exit."""
    (tmp_path / "a-file").write_text("")
    out = out.format(tmp=tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "gridedge", "sim", "waveform", "--desc", "config/waveforms/flicker-dip.toml",
         "--seconds", "2", "--out", out],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert proc.returncode == exit_code, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert out in proc.stderr and reason in proc.stderr, proc.stderr
