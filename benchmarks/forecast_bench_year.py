"""The forecasting proofs on the bench's own year, and on history the bench did not make.

    nice -n 15 .venv/bin/python benchmarks/forecast_bench_year.py [--out run/forecast-bench-year] [--days 365] [--mstl]

Histories (each made with ``gridedge sim history``, about 15-60 s each; an existing file of the same name in
--out is reused with --reuse):

- ``bench``: config/sim-ieee13-day.toml's [profiles] (BDEW classes with NC holidays, Greensboro TMY weather,
  America/New_York), from 2026-01-01, the config's noise seed;
- ``other-year``: the same feeder from 2025-07-01 (another calendar, so the backtest window falls in May-June:
  cooling instead of heating) with noise seed 2;
- ``other-mix``: another customer-class mix (every commercial load a different BDEW class: G1, G4, G6) and noise
  seed 3, from 2026-01-01.

Each series is backtested by rolling origin (central/forecast/backtest.py, docs/forecast.md "Backtest") with the
config's time zone and holidays (country-subdivision), both horizons: load_p_kw and head_p_kw (net of PV) as
load, pv_p_kw as PV. Printed: every backtest table, then one summary table with the targets of
docs/forecast.md ("Targets") and met / not met, the model the backtest chose per series; BENCH lines for the
judged targets; PNGs under --out (forecast-bench-scores.png, forecast-bench-week.png). ``--mstl``: statsforecast's
MSTL joins each series' candidates, and its score is printed beside the baselines'.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import emit  # noqa: E402

from central.forecast import backtest  # noqa: E402
from central.forecast.history import History, read_history  # noqa: E402
from central.forecast.models import DAY, Forecaster, Series  # noqa: E402
from central.forecast.weather import simulated_forecast  # noqa: E402

OTHER_MIX = '{ "671" = "G1", "675a" = "G4", "675b" = "G4", "675c" = "G4", "634a" = "G6", "634b" = "G6", "634c" = "G6" }'
# (name, start, seed, classes or None) of the histories; the bench's year first
HISTORIES = (
    ("bench", "2026-01-01", None, None),
    ("other-year", "2025-07-01", 2, None),
    ("other-mix", "2026-01-01", 3, OTHER_MIX),
)
# (history, column, kind) backtested
SERIES = (
    ("bench", "load_p_kw", "load"),
    ("bench", "head_p_kw", "load"),
    ("bench", "pv_p_kw", "pv"),
    ("other-year", "load_p_kw", "load"),
    ("other-year", "pv_p_kw", "pv"),
    ("other-mix", "load_p_kw", "load"),
)


def derived_config(config: Path, classes: str, out: Path) -> Path:
    """A copy of ``config`` with another [profiles] classes table; its relative paths made absolute."""
    text = config.read_text()

    def absolute(m: re.Match[str]) -> str:
        value = m.group(2)
        path = config.parent / value
        return (
            f'{m.group(1)}"{path}"' if not Path(value).is_absolute() and path.exists() and "/" in value else m.group(0)
        )

    text = re.sub(r'^(\s*(?:dss|map|scenario)\s*=\s*)"([^"]+)"', absolute, text, flags=re.M)
    text = re.sub(r"^classes = .*$", f"classes = {classes}", text, flags=re.M)
    out.write_text(text)
    return out


def make_history(config: Path, name: str, start: str, seed: int | None, classes: str | None, days: int,
                 out: Path, reuse: bool) -> Path:  # fmt: skip
    path = out / f"{name}.csv"
    if reuse and path.exists():
        return path
    cfg = derived_config(config, classes, out / f"{name}.toml") if classes else config
    cmd = [sys.executable, str(ROOT / "gridedge.py"), "sim", "history", "--config", str(cfg), "--days", str(days),
           "--start", start, "--out", str(path)]  # fmt: skip
    if seed is not None:
        cmd += ["--seed", str(seed)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"gridedge sim history failed ({done.returncode}): {done.stderr.strip()}")
    print(f"{name}: {done.stdout.strip()} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return path


NET = ("head_p_kw",)  # net of PV: near zero at noon, so MAPE (a gross load's target) means nothing there


def judge(kind: str, horizon: str, r: dict[str, Any]) -> tuple[str, bool]:
    """The target text and whether it is met (docs/forecast.md, "Targets")."""
    ours = r["models"]["ours"]
    cov = 0.7 <= ours["coverage"] <= 0.9
    if kind == "pv":
        if horizon == "day-ahead":
            return ">= 0.25 skill; cov 70-90 %", ours["skill"] >= 0.25 and cov
        return "cov 70-90 %", cov
    naive = r["models"]["seasonal-naive-daily"]["mase"]
    limit = 0.85 if horizon == "day-ahead" else 0.7
    met = ours["mase"] < limit and ours["mase"] <= 0.85 * naive and cov
    text = f"MASE < {limit}, <= 0.85 naive; cov 70-90 %"
    if horizon == "day-ahead" and r["column"] not in NET:
        text += "; MAPE < 6 %"
        met = met and ours["mape_pct"] < 6
    return text, met


def summary_row(name: str, r: dict[str, Any]) -> tuple[str, bool]:
    kind, horizon, m = r["kind"], r["horizon"], r["models"]
    ours = m["ours"]
    if kind == "load":
        best = min(backtest.BASELINES["load"], key=lambda b: m[b]["mase"])
        score = f"MASE {ours['mase']:.3f}" + (f", MAPE {ours['mape_pct']:.1f} %" if r["column"] not in NET else "")
        base = f"daily {m['seasonal-naive-daily']['mase']:.3f}, weekly {m['seasonal-naive-weekly']['mase']:.3f}"
        base += f"; mstl {m['mstl']['mase']:.3f}" if "mstl" in m else ""
        ahead = ours["mase"] < m[best]["mase"]
    else:
        score = f"skill {ours['skill']:.3f}, nMAE {ours['nmae']:.3f}"
        base = f"csi-persistence nMAE {m['csi-persistence']['nmae']:.3f}, daily {m['seasonal-naive-daily']['nmae']:.3f}"
        base += f"; mstl {m['mstl']['nmae']:.3f}" if "mstl" in m else ""
        ahead = ours["mae"] < min(m[b]["mae"] for b in backtest.BASELINES["pv"])
    chosen = ", ".join(f"{k} {v}" for k, v in sorted(r["chosen"].items(), key=lambda kv: -kv[1]))
    target, met = judge(kind, horizon, r)
    row = (f"| {name} {r['column']}, {horizon} | {score} | {base} | {100 * ours['coverage']:.1f} % | {chosen} | "
           f"{'yes' if ahead else 'NO'} | {target}: {'met' if met else 'NOT met'} |")  # fmt: skip
    return row, ahead


def plots(reports: dict[tuple[str, str, str], dict[str, Any]], histories: dict[str, History], tz: str, hol: str,
          out: Path) -> None:  # fmt: skip
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: no plots (pip install 'gridedge[plot]')")
        return
    # 1. MASE (load) per model, series and horizon, side by side
    keys = [k for k in reports if reports[k]["kind"] == "load"]
    models = ["ours", "seasonal-naive-daily", "seasonal-naive-weekly", "gbm"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / len(models)
    for j, m in enumerate(models):
        ax.bar(np.arange(len(keys)) + j * width, [reports[k]["models"][m]["mase"] for k in keys], width, label=m)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [f"{h}\n{c}\n{hz}" for h, c, hz in keys], fontsize=6)
    ax.axhline(0.85, color="k", lw=0.6, ls="--")
    ax.set_ylabel("MASE (m = 96)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(out / "forecast-bench-scores.png", dpi=80)
    plt.close(fig)
    # 2. one backtest week of the bench's load, day-ahead: truth, P10-P90 and P50 against seasonal naive (weekly)
    h = histories["bench"]
    s = Series(h.start, h.values, "load", tz=tz, holidays=hol, weather=simulated_forecast(h, 0), extra=0)
    fc = Forecaster(s)
    lo, hi = backtest.window(s.n)
    # the refit week of the window holding the most public holidays (the first if none): holidays are the hard part
    refits = list(range(lo, hi - 9 * DAY + 1, 7 * DAY))  # a refit whose week of day-ahead targets lies inside
    at = max(refits, key=lambda a: (s.cal.holiday[a + DAY : a + 9 * DAY].sum(), -a))
    fit = fc.fit(at)
    origins = fc.origins("day-ahead", at, at + 7 * DAY)
    chosen = fit.choice["day-ahead"]
    f = fc.forecast(fit, chosen, "day-ahead", origins)
    t = f.targets.ravel()
    x = (t - t[0]) / DAY
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.fill_between(x, f.p10.ravel(), f.p90.ravel(), color="tab:green", alpha=0.25, label="ours P10-P90")
    ax.plot(x, s.y[t], "k", lw=0.8, label="truth")
    ax.plot(x, f.p50.ravel(), "tab:green", lw=0.9, label=f"ours P50 (chosen: {chosen})")
    for m, style in (("gbm", ("tab:blue", "-")), ("seasonal-naive-weekly", ("tab:red", "--"))):
        if m != chosen:
            ax.plot(x, fc.forecast(fit, m, "day-ahead", origins).p50.ravel(), color=style[0], ls=style[1], lw=0.6,
                    label=m)  # fmt: skip
    is_holiday = s.cal.holiday[t] > 0
    ax.fill_between(x, 0, 1, where=is_holiday, transform=ax.get_xaxis_transform(), color="tab:orange", alpha=0.12,
                    label="public holiday")  # fmt: skip
    day0 = backtest.iso(h.start + 900 * int(t[0]))[:10]
    ax.set_xlabel(f"days from {day0} (UTC)")
    ax.set_ylabel(f"{h.column} [kW]")
    ax.legend(fontsize=6, ncol=3, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "forecast-bench-week.png", dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "sim-ieee13-day.toml"))
    ap.add_argument("--out", default=str(ROOT / "run" / "forecast-bench-year"))
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--reuse", action="store_true", help="reuse history files already in --out")
    ap.add_argument("--mstl", action="store_true", help="statsforecast's MSTL among ours' candidates (and its row)")
    args = ap.parse_args()
    out, config = Path(args.out), Path(args.config)
    out.mkdir(parents=True, exist_ok=True)
    prof = tomllib.loads(config.read_text()).get("profiles", {})
    tz = prof.get("timezone", "UTC")
    hol = prof.get("country") and "-".join(x for x in (prof.get("country"), prof.get("subdiv")) if x)
    paths = {n: make_history(config, n, start, seed, cls, args.days, out, args.reuse)
             for n, start, seed, cls in HISTORIES}  # fmt: skip
    reports: dict[tuple[str, str, str], dict[str, Any]] = {}
    histories: dict[str, History] = {}
    for name, column, kind in SERIES:
        h = read_history(paths[name], column)
        if column == "load_p_kw":
            histories.setdefault(name, h)
        t0 = time.perf_counter()
        rs = backtest.run_horizons(h, kind, tz=tz, holidays=hol, use_mstl=args.mstl)
        for horizon, r in rs.items():
            reports[(name, column, horizon)] = r
            print(f"\n{name}: {column}, {horizon} ({time.perf_counter() - t0:.0f} s for both horizons)")
            print(backtest.format_table(r), flush=True)
    print(f"\ntime zone {tz}, holidays {hol}")
    print(
        "| series, horizon | ours | seasonal naive (MASE or nMAE) | P10-P90 | chosen (origins) | ahead of baselines | target |"
    )
    print("|---|---|---|---|---|---|---|")
    for (name, _, _), r in reports.items():
        row, _ = summary_row(name, r)
        print(row)
    for (name, column, horizon), r in reports.items():
        target, met = judge(r["kind"], horizon, r)
        ours = r["models"]["ours"]
        key = f"forecast_{name.replace('-', '_')}_{column}_{horizon.replace('-', '_')}"
        if r["kind"] == "load":
            naive = r["models"]["seasonal-naive-daily"]["mase"]
            emit(f"{key}_mase", ours["mase"], naive, ours["mase"] / naive, "MASE", target, met)
        else:
            ref = r["models"]["csi-persistence"]["mae"]
            emit(f"{key}_mae", ours["mae"], ref, ours["mae"] / ref, "kW", target, met)
    plots(reports, histories, tz, hol, out)
    print(f"plots in {out}")


if __name__ == "__main__":
    main()
