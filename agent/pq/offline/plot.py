"""The ``--plot`` picture of ``gridedge pq analyze``: waveform, RMS trend with events, harmonic spectrum.

matplotlib with the Agg backend (no display needed), imported only when a plot is asked for.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from agent.pq.compliance import EN50160_HARMONIC_LIMITS_PCT  # noqa: E402
from agent.pq.offline.analyze import Analysis  # noqa: E402
from agent.pq.offline.recording import RecordingError  # noqa: E402

WAVEFORM_CYCLES = 3
_EVENT_COLOURS = {"dip": "tab:orange", "swell": "tab:purple", "interruption": "tab:red"}


def check_out_path(out_path: str | Path) -> Path:
    """``--plot``'s file name: a .png in a folder that exists; else :class:`RecordingError` naming it."""
    out = Path(out_path)
    if out.suffix.lower() != ".png":
        raise RecordingError(f"--plot {out}: allowed a .png file name")
    if not out.parent.is_dir():
        raise RecordingError(f"--plot {out}: the folder {out.parent} does not exist")
    return out


def plot_analysis(analysis: Analysis, out_path: str | Path) -> Path:
    """Write the three panels to ``out_path`` (PNG); returns the path."""
    out = check_out_path(out_path)
    rec, report = analysis.recording, analysis.report
    names = list(rec.voltages)
    fig, (ax_w, ax_r, ax_h) = plt.subplots(3, 1, figsize=(10, 11), constrained_layout=True)
    fig.suptitle(f"{rec.path.name}: {report['nominal_hz']:g} Hz, Udin {report['udin_v']:g} V")

    n = min(rec.n_samples, round(WAVEFORM_CYCLES * rec.rate_hz / report["nominal_hz"]))
    t_ms = np.arange(n) / rec.rate_hz * 1000.0
    for name in names:
        ax_w.plot(t_ms, rec.voltages[name][:n], label=name, linewidth=1)
    ax_w.set(title=f"Waveform, first {WAVEFORM_CYCLES} cycles", xlabel="time [ms]", ylabel="voltage [V]")
    ax_w.legend(loc="upper right")
    ax_w.grid(alpha=0.3)

    for k, name in enumerate(names):
        # each value held over its window (window_t_s are the window starts)
        ax_r.plot(analysis.window_t_s, analysis.window_rms_v[k], label=name, linewidth=1, drawstyle="steps-post")
    shown: set[str] = set()
    for e in analysis.events:
        colour = _EVENT_COLOURS.get(e["type"], "grey")
        ax_r.axvspan(e["start_s"], e["start_s"] + e["duration_s"], color=colour, alpha=0.3,
                     label=e["type"] if e["type"] not in shown else None)  # fmt: skip
        shown.add(e["type"])
    ax_r.axhline(report["udin_v"], color="black", linewidth=0.8, linestyle="--", label="Udin")
    ax_r.set(title="RMS of each 10/12-cycle window, events shaded", xlabel="time from file start [s]",
             ylabel="RMS [V]")  # fmt: skip
    ax_r.legend(loc="lower right")
    ax_r.grid(alpha=0.3)

    order = report["max_order"]
    orders = np.arange(2, order + 1)
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        pct = [report["channels"][name]["harmonics_pct"].get(str(h)) or 0.0 for h in orders]
        ax_h.bar(orders + (k - (len(names) - 1) / 2) * width, pct, width=width, label=name)
    lim_orders = [h for h in EN50160_HARMONIC_LIMITS_PCT if h <= order]
    ax_h.scatter(lim_orders, [EN50160_HARMONIC_LIMITS_PCT[h] for h in lim_orders], marker="_", s=300,
                 linewidths=2, color="red", label="EN 50160 Table 1 limit", zorder=3)  # fmt: skip
    ax_h.set(title="Harmonic subgroups (whole file) against EN 50160 Table 1", xlabel="harmonic order",
             ylabel="% of fundamental", xlim=(1.3, order + 0.7))  # fmt: skip
    ax_h.legend(loc="upper right")
    ax_h.grid(alpha=0.3, axis="y")
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
