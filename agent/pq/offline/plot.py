"""The ``--plot`` picture of ``gridedge pq analyze``: one page to investigate a recording's worst event.

Panels, top to bottom (each titled, with units; :func:`build_figure` labels each axes so tests can find it):

- ``overview``: the lowest and highest Urms(1/2) of each channel over the whole recording (per time bin,
  :class:`~agent.pq.offline.analyze.UrmsEnvelope`), the dip, swell and interruption thresholds at the
  recording's Udin, every event marked, the zoomed span shaded;
- ``waveform``: the sampled voltages around the worst event, with margins before and after it;
- ``urms``: Urms(1/2) over the same span (IEC 61000-4-30 5.4.1: the RMS over one cycle, refreshed every
  half cycle), recomputed here from the samples, so the residual voltage of a dip shows; the thresholds, the
  event's span and its residual (or maximum) and duration annotated;
- ``pst``: each Pst interval of each channel against Pst = 1 (IEC 61000-2-2), flagged values
  (IEC 61000-4-30 4.7) hatched;
- ``harmonics``: the whole-file harmonic subgroups against the limits of the standard for the recording's
  nominal frequency and voltage (EN 50160 Table 1 at 50 Hz up to 36 kV, else IEEE 519-2014 Table 1).

The worst event is the one furthest from Udin (lowest residual, highest swell), the longer on a tie; without
an event the zoom centres on the lowest Urms(1/2) of the recording. matplotlib with the Agg backend (no
display needed); this module is imported only when a plot is asked for (the ``plot`` extra installs it).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from agent.pq.compliance import EN50160_HARMONIC_LIMITS_PCT, ieee519_row  # noqa: E402
from agent.pq.events import HalfCycleRms  # noqa: E402
from agent.pq.offline.analyze import Analysis  # noqa: E402
from agent.pq.offline.recording import RecordingError  # noqa: E402

FIGSIZE_IN = (13.0, 17.0)
DPI = 100
MARGIN_CYCLES = 6  # shown before and after the event at least
MARGIN_SHARE = 0.5  # ... or this share of the event's duration, whichever is longer
MARGIN_MAX_S = 2.0  # ... but never more than this on each side
URMS_SETTLE_CYCLES = 20  # Urms(1/2) is recomputed from this long before the zoom (crossings, period estimate)
EN50160_MAX_UN_V = 36_000.0  # EN 50160:2010 clause 1: LV and MV up to 36 kV line to line (its Table 1 for both)
OVERVIEW_EVENT_LABELS = 8  # events named in the overview (all are marked)
PST_LIMIT = 1.0  # IEC 61000-2-2:2002 4.2: Pst compatibility level 1.0 (the service's pq_flicker event limit)
_EVENT_COLOURS = {"dip": "tab:orange", "swell": "tab:purple", "interruption": "tab:red"}
_CHANNEL_COLOURS = ("tab:blue", "tab:green", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


@dataclass(frozen=True, slots=True)
class Zoom:
    """The span the waveform and Urms(1/2) panels show, from the file start [s], and the event it is about."""

    start_s: float
    end_s: float
    event: dict[str, Any] | None  # the worst event (a row of the report's ``events``), None without one
    centre_s: float  # the event's start, or the lowest Urms(1/2) without an event


def check_out_path(out_path: str | Path) -> Path:
    """``--plot``'s file name: a .png in a folder that exists; else :class:`RecordingError` naming it."""
    out = Path(out_path)
    if out.suffix.lower() != ".png":
        raise RecordingError(f"--plot {out}: allowed a .png file name")
    if not out.parent.is_dir():
        raise RecordingError(f"--plot {out}: the folder {out.parent} does not exist")
    return out


def plot_analysis(analysis: Analysis, out_path: str | Path) -> Path:
    """Write the figure of :func:`build_figure` to ``out_path`` (PNG); returns the path."""
    out = check_out_path(out_path)
    fig = build_figure(analysis)
    try:
        fig.savefig(out, dpi=DPI)
    finally:
        plt.close(fig)
    return out


def worst_event(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The event furthest from Udin: lowest residual or highest maximum [% of Udin]; on a tie an interruption
    before the dip it sits in (IEC 61000-4-30 reports both), then the longer."""
    if not events:
        return None
    return max(events, key=_severity)


def _severity(e: dict[str, Any]) -> tuple[float, bool, float]:
    return round(abs(_level_pct(e) - 100.0), 6), e["type"] == "interruption", e["duration_s"]


def zoom_for(analysis: Analysis) -> Zoom:
    """The span around the worst event: margins of :data:`MARGIN_CYCLES` cycles or :data:`MARGIN_SHARE` of the
    event's duration (at most :data:`MARGIN_MAX_S`) each side, within the recording."""
    report = analysis.report
    cycle = 1.0 / report["nominal_hz"]
    duration = analysis.recording.duration_s
    event = worst_event(analysis.events)
    if event is not None:
        start, end = event["start_s"], event["start_s"] + event["duration_s"]
        centre = start
    else:
        env = analysis.urms
        lowest = np.where(np.isnan(env.min_v), np.inf, env.min_v).min(axis=0, initial=np.inf)
        k = int(np.argmin(lowest)) if lowest.size and np.isfinite(lowest).any() else 0
        centre = float(env.t_s[k] + env.bin_s / 2) if env.t_s.size else duration / 2
        start = end = centre
    margin = min(max(MARGIN_CYCLES * cycle, MARGIN_SHARE * (end - start)), MARGIN_MAX_S)
    lo, hi = max(0.0, start - margin), min(duration, end + margin)
    return Zoom(lo, hi, event, centre)


def build_figure(analysis: Analysis) -> Figure:
    """The five panels as a matplotlib Figure (not drawn to a file; :func:`plot_analysis` does that)."""
    report = analysis.report
    zoom = zoom_for(analysis)
    fig = plt.figure(figsize=FIGSIZE_IN, layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[7.6, 2.8])
    grid = top.add_gridspec(3, 1, height_ratios=[2.2, 2.4, 2.8])
    ax_over = top.add_subplot(grid[0], label="overview")
    ax_wave = top.add_subplot(grid[1], label="waveform")
    ax_urms = top.add_subplot(grid[2], label="urms", sharex=ax_wave)
    ax_pst = bottom.add_subplot(1, 2, 1, label="pst")
    ax_harm = bottom.add_subplot(1, 2, 2, label="harmonics")
    fig.suptitle(_suptitle(analysis, zoom), fontsize=12)
    _overview(ax_over, analysis, zoom)
    segment = _segment(analysis, zoom)
    _waveform(ax_wave, analysis, zoom, segment)
    _urms(ax_urms, analysis, zoom, segment)
    _pst(ax_pst, report)
    _harmonics(ax_harm, report)
    for ax in (ax_over, ax_wave, ax_urms, ax_pst, ax_harm):
        ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------------------------------------------- panels


def _suptitle(analysis: Analysis, zoom: Zoom) -> str:
    rec, report = analysis.recording, analysis.report
    start = dt.datetime.fromtimestamp(rec.start_utc_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    head = (f"{rec.path.name}: {report['nominal_hz']:g} Hz, Udin {report['udin_v']:g} V ({report['udin_source']}), "
            f"{rec.rate_hz:g} samples/s, {_duration_text(rec.duration_s)} from {start}")  # fmt: skip
    n = len(analysis.events)
    if zoom.event is None:
        tail = "no dip, swell or interruption: the zoom shows the lowest Urms(1/2)"
    else:
        tail = f"{n} event{'s' if n != 1 else ''}; zoom on the worst: {_event_text(zoom.event, report)}"
    return f"{head}\n{tail}"


def _overview(ax: Axes, analysis: Analysis, zoom: Zoom) -> None:
    report, env = analysis.report, analysis.urms
    udin = report["udin_v"]
    scale, unit = _time_unit(analysis.recording.duration_s)
    t = (env.t_s + env.bin_s / 2) / scale
    for k, name in enumerate(analysis.recording.voltages):
        colour = _CHANNEL_COLOURS[k % len(_CHANNEL_COLOURS)]
        ax.fill_between(t, env.min_v[k], env.max_v[k], color=colour, alpha=0.25, linewidth=0, step="mid")
        ax.plot(t, env.min_v[k], color=colour, linewidth=0.8, drawstyle="steps-mid", label=f"{name} (min-max)")
    _thresholds(ax, analysis, env.min_v, env.max_v)
    for e in sorted(analysis.events, key=_severity):  # the worst drawn last, on top
        colour = _EVENT_COLOURS.get(e["type"], "grey")
        s, d = e["start_s"] / scale, e["duration_s"] / scale
        ax.axvspan(s, s + d, color=colour, alpha=0.35, linewidth=0)
        ax.plot([s], [_level_pct(e) / 100 * udin], marker="v" if e["type"] != "swell" else "^", color=colour,
                markersize=10, markeredgecolor="black", linestyle="none")  # fmt: skip
    width = analysis.recording.duration_s / scale
    labelled: list[float] = []
    for e in sorted(analysis.events, key=_severity, reverse=True):  # the worst first: they get the labels
        s = e["start_s"] / scale
        if len(labelled) < OVERVIEW_EVENT_LABELS and all(abs(s - x) > 0.03 * width for x in labelled):
            labelled.append(s)
            ax.annotate(f" {e['type']} {e['phase']} {_level_pct(e):.0f} %", (s, _level_pct(e) / 100 * udin),
                        fontsize=8, xytext=(4, -4 if e["type"] != "swell" else 4), textcoords="offset points")  # fmt: skip
    ax.axvspan(zoom.start_s / scale, zoom.end_s / scale, facecolor="none", edgecolor="black", hatch="///",
               linewidth=0.8, alpha=0.6, label="zoomed below")  # fmt: skip
    for kind in sorted({e["type"] for e in analysis.events}):
        ax.plot([], [], marker="v" if kind != "swell" else "^", color=_EVENT_COLOURS.get(kind, "grey"),
                linestyle="none", label=kind)  # fmt: skip
    ax.set_xlim(0, analysis.recording.duration_s / scale)
    bin_text = f"{env.bin_s * 1000:.0f} ms" if env.bin_s < 1 else f"{env.bin_s:.1f} s"
    ax.set_title(f"Overview: Urms(1/2) of the whole recording, lowest and highest in each {bin_text}")
    ax.set_xlabel(f"time from the recording's start [{unit}]")
    ax.set_ylabel("Urms(1/2) [V]")
    _percent_axis(ax, udin)
    _legend_outside(ax)


def _segment(analysis: Analysis, zoom: Zoom) -> dict[str, Any]:
    """Samples and Urms(1/2) of the zoomed span (Urms(1/2) computed from :data:`URMS_SETTLE_CYCLES` before it)."""
    rec, report = analysis.recording, analysis.report
    rate, nominal = rec.rate_hz, report["nominal_hz"]
    i0, i1 = max(0, math.floor(zoom.start_s * rate)), min(rec.n_samples, math.ceil(zoom.end_s * rate) + 1)
    j0 = max(0, i0 - round(URMS_SETTLE_CYCLES * rate / nominal))
    x = np.vstack([v[j0:i1] for v in rec.voltages.values()])
    cfg = analysis.event_config
    min_peak = 0.5 * cfg.interruption_threshold_pct / 100 * cfg.udin_v * math.sqrt(2.0)
    times, chans, values = HalfCycleRms(rate, nominal, x.shape[0], start_utc_s=j0 / rate, min_peak_v=min_peak).push(x)
    keep = (times >= zoom.start_s) & (times <= zoom.end_s)
    return {"t_s": np.arange(i0, i1) / rate, "v": x[:, i0 - j0 :], "urms_t_s": times[keep],
            "urms_ch": chans[keep], "urms_v": values[keep]}  # fmt: skip


def _waveform(ax: Axes, analysis: Analysis, zoom: Zoom, seg: dict[str, Any]) -> None:
    t_ms = (seg["t_s"] - zoom.centre_s) * 1000.0
    for k, name in enumerate(analysis.recording.voltages):
        ax.plot(t_ms, seg["v"][k], color=_CHANNEL_COLOURS[k % len(_CHANNEL_COLOURS)], linewidth=0.9, label=name)
    _event_spans(ax, analysis, zoom)
    peak = analysis.report["udin_v"] * math.sqrt(2.0)
    ax.axhline(peak, color="grey", linewidth=0.6, linestyle=":")
    ax.axhline(-peak, color="grey", linewidth=0.6, linestyle=":", label="Udin peak (Udin x sqrt 2)")
    what = "the worst event" if zoom.event is not None else "the lowest Urms(1/2)"
    ax.set_title(f"Waveform around {what}, {_duration_text(zoom.end_s - zoom.start_s)} shown")
    ax.set_xlabel(f"time from {'the event start' if zoom.event is not None else 'the lowest Urms(1/2)'} [ms]")
    ax.set_ylabel("voltage [V]")
    ax.set_xlim((zoom.start_s - zoom.centre_s) * 1000.0, (zoom.end_s - zoom.centre_s) * 1000.0)
    _legend_outside(ax)


def _urms(ax: Axes, analysis: Analysis, zoom: Zoom, seg: dict[str, Any]) -> None:
    report = analysis.report
    udin = report["udin_v"]
    per_channel = []
    for k, name in enumerate(analysis.recording.voltages):
        mine = seg["urms_ch"] == k
        t_ms = (seg["urms_t_s"][mine] - zoom.centre_s) * 1000.0
        v = seg["urms_v"][mine]
        per_channel.append(v)
        ax.plot(t_ms, v, color=_CHANNEL_COLOURS[k % len(_CHANNEL_COLOURS)], linewidth=1.2, drawstyle="steps-post",
                marker=".", markersize=3, label=name)  # fmt: skip
    values = np.concatenate(per_channel) if per_channel else np.zeros(0)
    _thresholds(ax, analysis, values, values)
    _event_spans(ax, analysis, zoom)
    if zoom.event is not None:
        _annotate(ax, zoom, report)
    ax.set_title("Urms(1/2): RMS over one cycle, refreshed every half cycle, stamped at the cycle's end "
                 "(IEC 61000-4-30 5.4.1)")  # fmt: skip
    ax.set_xlabel(f"time from {'the event start' if zoom.event is not None else 'the lowest Urms(1/2)'} [ms]")
    ax.set_ylabel("Urms(1/2) [V]")
    _percent_axis(ax, udin)
    _legend_outside(ax)


def _pst(ax: Axes, report: dict[str, Any]) -> None:
    channels = report["channels"]
    names = list(channels)
    counts = {len(ch["pst"]) for ch in channels.values()}
    n = max(counts) if counts else 0
    if n == 0:
        ax.text(0.5, 0.5, "no Pst: the flickermeter settles over the first 10 s,\nand the recording is "
                f"{report['file']['duration_s']:.1f} s long", ha="center", va="center", transform=ax.transAxes)  # fmt: skip
        ax.set_title("Flicker: Pst per 10-min interval (IEC 61000-4-15)")
        ax.set_xticks([])
        ax.set_ylabel("Pst")
        return
    width = 0.8 / max(len(names), 1)
    x = np.arange(n)
    handles: list[Any] = []
    flagged_any = False
    for k, name in enumerate(names):
        ch = channels[name]
        pst = np.asarray(ch["pst"], dtype=np.float64)
        flags = ch.get("pst_flagged") or [False] * pst.size
        colour = _CHANNEL_COLOURS[k % len(_CHANNEL_COLOURS)]
        pos = x[: pst.size] + (k - (len(names) - 1) / 2) * width
        bars = ax.bar(pos, pst, width=width, color=colour, edgecolor="black", linewidth=0.5)
        for bar, flag in zip(bars, flags, strict=True):
            if flag:
                flagged_any = True
                bar.set_hatch("xx")
                bar.set_alpha(0.55)
                bar.set_gid("flagged")
        handles.append(Patch(facecolor=colour, edgecolor="black", linewidth=0.5, label=name))
    if flagged_any:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="xx", label="flagged (IEC 61000-4-30 4.7)"))
    handles.append(ax.axhline(PST_LIMIT, color="red", linewidth=1.2, linestyle="--", label="Pst 1.0 (IEC 61000-2-2)"))
    first = channels[names[0]]
    if first["pst_short"]:
        ax.set_xticks(x, [f"the first {first['pst_interval_s']:.0f} s after settling (a short recording)"], fontsize=8)
        ax.set_xlabel("interval")
    else:
        step = max(1, math.ceil(n / 12))
        ax.set_xticks(x[::step], [f"{10 * i}" for i in range(0, n, step)], fontsize=8)
        ax.set_xlabel("start of the 10-min interval [min from the recording's start]")
    plts = [f"{name} {_plt_text(ch)}" for name, ch in channels.items() if ch.get("plt")]
    title = "Flicker: Pst per 10-min interval (IEC 61000-4-15)"
    if flagged_any:
        title += "\nhatched: a dip, swell or interruption in the interval"
    ax.set_title(
        title + (f"\nPlt {'; '.join(plts)}" + (" (* flagged)" if "*" in "".join(plts) else "") if plts else "")
    )
    ax.set_ylabel("Pst")
    highest = max(max(ch["pst"], default=0.0) for ch in channels.values())
    ax.set_ylim(0, 1.5 * max(PST_LIMIT, highest))  # room above the bars for the legend
    ax.legend(handles=handles, loc="upper center", fontsize=8, ncol=3)


def _plt_text(ch: dict[str, Any]) -> str:
    flags = ch.get("plt_flagged") or [False] * len(ch["plt"])
    return ", ".join(f"{p:.2f}{'*' if f else ''}" for p, f in zip(ch["plt"], flags, strict=True))


def _harmonics(ax: Axes, report: dict[str, Any]) -> None:
    order = report["max_order"]
    names = list(report["channels"])
    orders = np.arange(2, order + 1)
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        pct = [report["channels"][name]["harmonics_pct"].get(str(h)) or 0.0 for h in orders]
        ax.bar(orders + (k - (len(names) - 1) / 2) * width, pct, width=width, label=name,
               color=_CHANNEL_COLOURS[k % len(_CHANNEL_COLOURS)])  # fmt: skip
    standard, limits = harmonic_limits(report["nominal_hz"], report["udin_v"])
    shown = [h for h in sorted(limits) if h <= order]
    ax.scatter(shown, [limits[h] for h in shown], marker="_", s=260, linewidths=2, color="red", zorder=3,
               label=f"{standard} limit")  # fmt: skip
    # orders past the last limit and the last visible value are left off, so the bars stay readable
    visible = [h for h in orders if any((report["channels"][n]["harmonics_pct"].get(str(h)) or 0.0) >= 0.05
                                        for n in names)]  # fmt: skip
    top = min(order, max([*shown, *visible, 2]))
    ax.set_title(f"Harmonic subgroups of the whole recording\nagainst {standard}")
    ax.set_xlabel("harmonic order" + (f" (measured to {order}; above {top} all below 0.05 %)" if top < order else ""))
    ax.set_ylabel("% of the fundamental")
    ax.set_xlim(1.3, top + 0.7)
    ax.legend(loc="upper right", fontsize=8)


def harmonic_limits(nominal_hz: float, udin_v: float) -> tuple[str, dict[int, float]]:
    """(name, {order: limit %}) of the individual-harmonic limits that apply to the recording's system.

    EN 50160:2010 at 50 Hz up to 36 kV line to line (its LV and MV tables are the same, 4.2.6 and 5.2.6);
    else IEEE 519-2014 Table 1, the row of the bus voltage Udin x sqrt 3, for every order up to 50.
    """
    un_v = udin_v * math.sqrt(3.0)
    if nominal_hz == 50 and un_v <= EN50160_MAX_UN_V:
        return "EN 50160 Table 1", dict(EN50160_HARMONIC_LIMITS_PCT)
    row = ieee519_row(un_v / 1000.0)
    return f"IEEE 519 Table 1 ({row.label})", {h: row.individual_pct for h in range(2, 51)}


# ---------------------------------------------------------------------------------------------------- helpers


def _thresholds(ax: Axes, analysis: Analysis, low_v: np.ndarray, high_v: np.ndarray) -> None:
    """Udin and the IEC 61000-4-30 5.4 thresholds at Udin; the interruption threshold only when a value nears it."""
    cfg = analysis.event_config
    udin = cfg.udin_v
    lines = [
        ("Udin", 100.0, "dimgrey", "-"),
        ("swell threshold", cfg.swell_threshold_pct, _EVENT_COLOURS["swell"], "--"),
        ("dip threshold", cfg.dip_threshold_pct, _EVENT_COLOURS["dip"], "--"),
        ("dip end (threshold + hysteresis)", cfg.dip_threshold_pct + cfg.hysteresis_pct, _EVENT_COLOURS["dip"], ":"),
    ]
    lowest = float(np.nanmin(low_v)) if np.isfinite(low_v).any() else udin
    if lowest < 3 * cfg.interruption_threshold_pct / 100 * udin:
        lines.append(("interruption threshold", cfg.interruption_threshold_pct, _EVENT_COLOURS["interruption"], "--"))
    for name, pct, colour, style in lines:
        y = pct / 100.0 * udin
        ax.axhline(y, color=colour, linewidth=1.0, linestyle=style, label=f"{name} {pct:g} % = {y:.4g} V", zorder=1)
    highest = float(np.nanmax(high_v)) if np.isfinite(high_v).any() else udin
    top = max(highest, cfg.swell_threshold_pct / 100 * udin)
    bottom = min(lowest, cfg.dip_threshold_pct / 100 * udin)
    pad = 0.05 * (top - bottom)
    ax.set_ylim(max(0.0, bottom - pad) if bottom > 0 else bottom - pad, top + pad)


def _legend_outside(ax: Axes) -> None:
    """The legend right of the axes (beyond the % axis), so it never hides a trace."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.07, 1.0), fontsize=8, borderaxespad=0.0)


def _percent_axis(ax: Axes, udin_v: float) -> None:
    sec = ax.secondary_yaxis("right", functions=(lambda v: v / udin_v * 100.0, lambda p: p * udin_v / 100.0))
    sec.set_ylabel("% of Udin")


def _event_spans(ax: Axes, analysis: Analysis, zoom: Zoom) -> None:
    """Every event that overlaps the zoomed span, shaded in its colour."""
    shown: set[str] = set()
    for e in analysis.events:
        if e["start_s"] > zoom.end_s or e["start_s"] + e["duration_s"] < zoom.start_s:
            continue
        s = (e["start_s"] - zoom.centre_s) * 1000.0
        ax.axvspan(s, s + e["duration_s"] * 1000.0, color=_EVENT_COLOURS.get(e["type"], "grey"), alpha=0.15,
                   linewidth=0, label=f"{e['type']} (IEC 61000-4-30 5.4)" if e["type"] not in shown else None)  # fmt: skip
        shown.add(e["type"])


def _annotate(ax: Axes, zoom: Zoom, report: dict[str, Any]) -> None:
    e = zoom.event
    assert e is not None
    udin = report["udin_v"]
    level = _level_pct(e)
    start_ms, dur_ms = (e["start_s"] - zoom.centre_s) * 1000.0, e["duration_s"] * 1000.0
    y = level / 100.0 * udin
    ax.annotate(_event_text(e, report), xy=(start_ms + dur_ms / 2, y), xytext=(0.5, 0.5 if level < 100 else 0.3),
                textcoords="axes fraction", ha="center", fontsize=10,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9},
                arrowprops={"arrowstyle": "->", "color": "black"})  # fmt: skip
    ax.axhline(y, color=_EVENT_COLOURS.get(e["type"], "grey"), linewidth=0.8, linestyle="-.",
               label=f"{'residual' if level < 100 else 'maximum'} {level:.1f} % = {y:.4g} V")  # fmt: skip


def _event_text(e: dict[str, Any], report: dict[str, Any]) -> str:
    udin = report["udin_v"]
    level = _level_pct(e)
    what = "residual" if "residual_pct" in e else "maximum"
    cycles = e["duration_s"] * report["nominal_hz"]
    return (f"{e['type']} on {e['phase']} (phases {e['phases']}) at {e['start_s']:.3f} s: {what} {level:.1f} % of "
            f"Udin = {level / 100 * udin:.4g} V, duration {e['duration_s'] * 1000:.1f} ms ({cycles:.1f} cycles)")  # fmt: skip


def _level_pct(e: dict[str, Any]) -> float:
    return float(e["residual_pct"] if "residual_pct" in e else e["max_pct"])


def _time_unit(duration_s: float) -> tuple[float, str]:
    if duration_s > 7200:
        return 3600.0, "h"
    if duration_s > 1200:
        return 60.0, "min"
    return 1.0, "s"


def _duration_text(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
