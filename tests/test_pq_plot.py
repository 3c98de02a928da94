"""The ``pq analyze --plot`` figure: what it shows, read from the matplotlib Figure (not from pixels).

Recordings are synthesised here with a known dip, so where the event is, its residual and the thresholds the
figure must draw follow from the signal and from IEC 61000-4-30 5.4's defaults (dip 90 %, swell 110 %,
hysteresis 2 % of Udin).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from helpers.pq import phases

from agent.pq.offline.analyze import Analysis, analyse_recording
from agent.pq.offline.plot import build_figure, harmonic_limits, plot_analysis, worst_event, zoom_for
from agent.pq.offline.recording import Recording


def analysis_of(x: np.ndarray, rate: float, names=("va", "vb", "vc")) -> Analysis:
    rec = Recording(Path("synth.csv"), "csv", rate, dict(zip(names, x, strict=True)), info={"format": "csv"})
    return analyse_recording(rec)


@pytest.fixture(scope="module")
def dip60() -> Analysis:
    """120 V / 60 Hz, 15 s at 1920 Hz; va dips to 50 % from 12.0 s for 0.1 s (6 cycles)."""
    t, x = phases(1920.0, 15.0, f=60.0, peak=120 * math.sqrt(2))
    x[0, (t >= 12.0) & (t < 12.1)] *= 0.5
    return analysis_of(x, 1920.0)


@pytest.fixture(scope="module")
def figure60(dip60):
    fig = build_figure(dip60)
    yield fig, {ax.get_label(): ax for ax in fig.get_axes()}
    plt.close(fig)


def line(ax, label_start: str):
    hits = [ln for ln in ax.get_lines() if ln.get_label().startswith(label_start)]
    assert len(hits) == 1, [ln.get_label() for ln in ax.get_lines()]
    return hits[0]


def test_the_figure_has_its_five_panels_titled_with_units(figure60):
    _, axes = figure60
    assert set(axes) == {"overview", "waveform", "urms", "pst", "harmonics"}
    assert "whole recording" in axes["overview"].get_title()
    assert axes["waveform"].get_title().startswith("Waveform around the worst event")
    assert "Urms(1/2)" in axes["urms"].get_title() and "IEC 61000-4-30 5.4.1" in axes["urms"].get_title()
    assert "Pst" in axes["pst"].get_title() and "hatched" in axes["pst"].get_title()
    assert axes["harmonics"].get_title().endswith("IEEE 519 Table 1 (V <= 1.0 kV)")  # 60 Hz, 208 V line to line
    assert axes["waveform"].get_ylabel() == "voltage [V]" and axes["urms"].get_ylabel() == "Urms(1/2) [V]"
    assert axes["waveform"].get_xlabel() == "time from the event start [ms]"
    assert axes["overview"].get_xlabel() == "time from the recording's start [s]"


def test_the_zoom_is_centred_on_the_event_with_margins(dip60, figure60):
    _, axes = figure60
    (event,) = dip60.events
    assert event["start_s"] == pytest.approx(12.0, abs=0.02)
    lo, hi = axes["waveform"].get_xlim()
    dur_ms = event["duration_s"] * 1000.0
    # at least 6 cycles (100 ms at 60 Hz) before the start and after the end
    assert lo <= -100.0 + 1e-6 and hi >= dur_ms + 100.0 - 1e-6
    assert hi - lo < dur_ms + 2 * 2000.0 + 1e-6  # at most 2 s of margin each side
    assert axes["urms"].get_xlim() == (lo, hi)
    # the waveform drawn spans the zoom and holds the dip: the lowest peak of va is half of the normal one
    va = line(axes["waveform"], "va")
    t, v = va.get_xdata(), va.get_ydata()
    assert t[0] <= lo + 1 and t[-1] >= hi - 1
    inside = (t > 20) & (t < dur_ms - 20)
    assert np.abs(v[inside]).max() == pytest.approx(60 * math.sqrt(2), rel=0.02)
    assert axes["overview"].get_xlim() == (0.0, 15.0)


def test_the_thresholds_are_drawn_at_the_recording_udin(figure60):
    _, axes = figure60
    for name in ("overview", "urms"):
        ax = axes[name]
        assert list(line(ax, "dip threshold").get_ydata()) == pytest.approx([108.0, 108.0])  # 90 % of 120 V
        assert list(line(ax, "dip end").get_ydata()) == pytest.approx([110.4, 110.4])  # 92 %
        assert list(line(ax, "swell threshold").get_ydata()) == pytest.approx([132.0, 132.0])  # 110 %
        assert list(line(ax, "Udin").get_ydata()) == pytest.approx([120.0, 120.0])
        assert not [ln for ln in ax.get_lines() if ln.get_label().startswith("interruption threshold")]


def test_urms_half_shows_the_residual_and_the_event_is_annotated(dip60, figure60):
    _, axes = figure60
    (event,) = dip60.events
    va = line(axes["urms"], "va")
    # Urms(1/2), not a 10/12-cycle RMS: its lowest value is the event's residual (6 cycles at 50 %)
    assert va.get_ydata().min() / 120.0 * 100 == pytest.approx(event["residual_pct"], abs=0.3)
    assert event["residual_pct"] == pytest.approx(50.0, abs=0.5)
    steps = np.diff(va.get_xdata())
    assert np.median(steps) == pytest.approx(1000 / 120, rel=0.05)  # refreshed every half cycle
    (note,) = axes["urms"].texts
    assert f"residual {event['residual_pct']:.1f} % of Udin" in note.get_text()
    assert f"duration {event['duration_s'] * 1000:.1f} ms" in note.get_text()
    assert list(line(axes["urms"], "residual").get_ydata()) == pytest.approx([event["residual_pct"] * 1.2] * 2)


def test_the_pst_panel_marks_flagged_values(dip60, figure60):
    _, axes = figure60
    bars = [p for p in axes["pst"].patches if p.get_height() > 0]
    assert len(bars) == 3  # one short-file Pst per channel
    assert all(b.get_gid() == "flagged" and b.get_hatch() for b in bars)  # the dip lies in the interval
    heights = sorted(b.get_height() for b in bars)
    assert heights == pytest.approx(sorted(ch["pst"][0] for ch in dip60.report["channels"].values()))
    assert list(line(axes["pst"], "Pst 1.0").get_ydata()) == [1.0, 1.0]


def test_a_50_hz_recording_gets_its_own_thresholds_and_en50160(tmp_path):
    t, x = phases(3200.0, 3.0)
    x[:, (t >= 1.0) & (t < 1.2)] *= 0.7
    a = analysis_of(x, 3200.0)
    fig = build_figure(a)
    axes = {ax.get_label(): ax for ax in fig.get_axes()}
    assert list(line(axes["urms"], "dip threshold").get_ydata()) == pytest.approx([207.0, 207.0])
    assert axes["harmonics"].get_title().endswith("EN 50160 Table 1")
    assert "no Pst" in axes["pst"].texts[0].get_text()  # 3 s: the flickermeter is still settling
    plt.close(fig)
    out = plot_analysis(a, tmp_path / "dip50.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_an_event_the_zoom_shows_the_lowest_urms_half():
    t, x = phases(3200.0, 3.0)
    x[:, (t >= 2.0) & (t < 2.05)] *= 0.95  # 95 %: above the 90 % dip threshold, the lowest point of the file
    a = analysis_of(x, 3200.0)
    assert a.events == []
    zoom = zoom_for(a)
    assert zoom.event is None and 2.0 <= zoom.centre_s <= 2.1
    fig = build_figure(a)
    assert "no dip, swell or interruption" in fig.get_suptitle()
    plt.close(fig)


def test_the_worst_event_is_the_furthest_from_udin_an_interruption_before_its_dip():
    dip = {"type": "dip", "residual_pct": 0.0, "duration_s": 0.3}
    interruption = {"type": "interruption", "residual_pct": 0.0, "duration_s": 0.28}
    swell = {"type": "swell", "max_pct": 140.0, "duration_s": 1.0}
    shallow = {"type": "dip", "residual_pct": 85.0, "duration_s": 5.0}
    assert worst_event([shallow, dip, interruption, swell]) is interruption
    assert worst_event([shallow, swell]) is swell  # 40 % above Udin beats 15 % below
    assert worst_event([]) is None


@pytest.mark.parametrize(
    ("nominal_hz", "udin_v", "standard", "limit_5th"),
    [
        (50, 230.0, "EN 50160 Table 1", 6.0),
        (50, 33000 / math.sqrt(3), "EN 50160 Table 1", 6.0),  # MV, within EN 50160's 36 kV
        (50, 69000 / math.sqrt(3), "IEEE 519 Table 1 (1 kV < V <= 69 kV)", 3.0),
        (60, 120.0, "IEEE 519 Table 1 (V <= 1.0 kV)", 5.0),
        (60, 7200.0, "IEEE 519 Table 1 (1 kV < V <= 69 kV)", 3.0),  # 12.47 kV line to line
    ],
)
def test_harmonic_limits_follow_the_nominal_frequency_and_voltage(nominal_hz, udin_v, standard, limit_5th):
    name, limits = harmonic_limits(nominal_hz, udin_v)
    assert name == standard and limits[5] == limit_5th
