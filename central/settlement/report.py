"""A settlement run as one self-contained HTML page: the run's summary, a table per feeder and an inline SVG of the
head against downstream + losses per interval (no script, no file beside it: it can be mailed or archived as is)."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from central.settlement.reconcile import FeederResult
from central.settlement.runs import RunResult

W, H, PAD = 900, 260, 40


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _polyline(x: np.ndarray, y: np.ndarray, lo: float, hi: float, t0: float, t1: float, colour: str,
              width: float = 1.0) -> str:  # fmt: skip
    """Segments of a polyline, broken where y is NaN."""
    span_t = max(t1 - t0, 1.0)
    span_y = max(hi - lo, 1e-9)
    px = PAD + (x - t0) / span_t * (W - 2 * PAD)
    py = H - PAD - (y - lo) / span_y * (H - 2 * PAD)
    out, seg = [], []
    for a, b, v in zip(px.tolist(), py.tolist(), y.tolist(), strict=True):
        if v != v:
            if len(seg) > 1:
                out.append(seg)
            seg = []
            continue
        seg.append(f"{a:.1f},{b:.1f}")
    if len(seg) > 1:
        out.append(seg)
    return "".join(
        f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" points="{" ".join(s)}"/>' for s in out
    )


def feeder_svg(f: FeederResult) -> str:
    """Head (wide, grey) and downstream + losses (thin, blue) per interval [kWh]; red ticks under intervals not reconciled."""
    t = f.starts.astype(float)
    if t.size == 0:
        return "<p>no intervals</p>"
    other = f.downstream + f.losses
    both = np.concatenate([f.head, other])
    both = both[~np.isnan(both)]
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    t0, t1 = float(t[0]), float(t[-1])
    bad = t[~(f.complete & f.reconciled)]
    span = max(t1 - t0, 1.0)
    ticks = "".join(
        f'<line x1="{PAD + (b - t0) / span * (W - 2 * PAD):.1f}" y1="{H - PAD + 4}" '
        f'x2="{PAD + (b - t0) / span * (W - 2 * PAD):.1f}" y2="{H - PAD + 10}" stroke="red"/>'
        for b in bad[:5000]
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="head vs downstream plus losses, {html.escape(f.name)}">'
        f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" stroke="#ccc"/>'
        f'<text x="{PAD}" y="{PAD - 8}" font-size="12">top {hi:.3f} kWh, bottom {lo:.3f} kWh per interval</text>'
        f'<text x="{W - PAD}" y="{PAD - 8}" font-size="12" text-anchor="end">head (wide grey), downstream + losses '
        f"(blue)</text>"
        f'<text x="{PAD}" y="{H - PAD + 24}" font-size="12">{_when(t0)}</text>'
        f'<text x="{W - PAD}" y="{H - PAD + 24}" font-size="12" text-anchor="end">{_when(t1)}</text>'
        + _polyline(t, f.head, lo, hi, t0, t1, "#aaa", 4.0)
        + _polyline(t, other, lo, hi, t0, t1, "#1f77b4")
        + ticks
        + "</svg>"
    )


def write_report(path: Path, run: RunResult) -> None:
    s = run.summary
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(fs[k]))}</td>" for k in _COLS) + "</tr>" for fs in s["feeders"]
    )
    quality = ", ".join(f"{k}: {v}" for k, v in sorted(s["quality"].items()))
    failed = ", ".join(f"{k}: {v}" for k, v in s["failed_checks"].items())
    charts = "".join(
        f"<h2>Feeder {html.escape(f.name)}</h2><p>wide grey: head; thin blue: downstream + losses; red ticks: intervals not "
        f"complete or not reconciled</p>{feeder_svg(f)}"
        for f in run.feeders
    )
    imbalance = ""
    if s.get("imbalance"):
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(im[k]))}</td>" for k in _IMBALANCE_COLS) + "</tr>"
            for im in s["imbalance"]
        )
        imbalance = (
            "<h2>Imbalance (metered - scheduled)</h2><table><tr>"
            + "".join(f"<th>{c}</th>" for c in _IMBALANCE_COLS)
            + f"</tr>{body}</table>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Settlement run {run.run_id}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;text-align:right}}</style></head><body>
<h1>Settlement run {run.run_id}: {html.escape(run.kind)} (version {run.version})</h1>
<p>Period {_when(run.t_from)} to {_when(run.t_to)}; made {_when(run.created)}{
        f"; against final run {run.base_run}" if run.base_run else ""
    }.</p>
<p>{s["registers"]} registers, {s["intervals"]} intervals. Quality: {html.escape(quality)}. Failed checks:
{html.escape(failed)}. Reconciliation rate: {s["reconciliation_rate"]}.</p>
<table><tr>{"".join(f"<th>{c}</th>" for c in _COLS)}</tr>{rows}</table>
{imbalance}
{charts}
</body></html>
"""
    path.write_text(page)


_COLS = ("feeder", "intervals", "complete", "validated", "reconciled", "reconciliation_rate", "head_kwh",
         "downstream_kwh", "losses_kwh", "unaccounted_kwh")  # fmt: skip
_IMBALANCE_COLS = ("site", "meter", "channel", "unit", "scheduled_intervals", "unmetered_intervals", "scheduled",
                   "metered", "imbalance", "over", "under")  # fmt: skip
