"""The dispatch proof on the bench: a closed loop over a simulated day at speed (docs/dispatch.md, "Closed loop on
the bench").

    .venv/bin/python benchmarks/dispatch_day.py [--speed 60] [--hours 0-24] [--out run/dispatch-day]
    .venv/bin/python benchmarks/dispatch_day.py --table-only --out run/dispatch-day   # judge the kept runs again
    .venv/bin/python benchmarks/dispatch_day.py --only dispatch --out run/dispatch-day  # the dispatch run again

forecast -> central dispatch -> signed commands -> agent -> inverters and regulator -> physics -> metering ->
central, every part its own process as in benchmarks/control_day.py (whose helpers this reuses):

- the forecast: central's own day-ahead models (central/forecast, chosen per series by their inner backtest)
  fitted on the feeder's past, ``gridedge sim history`` of the ``HISTORY_DAYS`` days before the run's day under
  the bench's seed (what the site metered), each day's forecast issued the day before from what was known then,
  the weather forecasts by the documented error model (:func:`model_forecast`); dispatch corrects it from the
  head's and the inverters' measured power as it goes (its nowcast: the PV by its clear-sky index, the load
  against the forecast averaged over three intervals), holds a reserve on the two large inverters and trims them
  half-way through each interval (config/dispatch-day/dispatch.toml);
- the bench: config/sim-ieee13-day.toml on free ports, ``[profiles] source = "bdew"`` (the realistic profiles),
  the day ``DAY`` (sunny, the PV exports at midday) from ``--hours``;
- a Mosquitto, ``gridedge central run`` (ingest), the agent (config/agent-day.toml in ``control`` mode, its
  ``[clock]`` on the bench's, with ``[commands]`` trusting the dispatch key and ``[metering]`` of the head meter);
- run ``dispatch``: ``gridedge central dispatch`` running (config/dispatch-day/dispatch.toml, prices
  config/dispatch-day/prices.csv) on the agent's scaled clock (``--clock-start``, ``--clock-wall-start``,
  ``--clock-speed``); run ``baseline``: the same day, the same bench seed, no dispatch.

Judged (benchmarks/dispatch_judge.py): (a) the share of intervals whose metered net energy at the head meter
(central's ``intervals``, delivered - received) is within +-5 % of the schedule (settlement's ``schedules``,
latest version: the one sent for the interval), or within the floor for near-zero schedules; (b) the energy cost
of the head's metered net import x the price, dispatch against baseline; (c) the bus-phase-minutes outside ANSI
C84.1 Range A in the dispatch run's truth log, and of those the ones the baseline run did not have ("caused").

``--out DIR`` keeps per run the truth log, each process's log and the stores, the forecast, ``results.json`` and
``table.txt``. Exit 0 when every target was met, 1 when one was missed, 2 when a run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import emit  # noqa: E402
from control_day import (  # noqa: E402
    RUNS,
    Parts,
    _hours,
    _speed,
    _sub,
    agent_config,
    bench_config,
    bench_lag,
    iso,
    start_broker,
    wait_bench_done,
    wait_bench_up,
)
from dispatch_judge import (  # noqa: E402
    FLOOR_SHARE,
    FOLLOW_TOL_PCT,
    Following,
    caused,
    energy_cost,
    judge_following,
    outside_range_a,
)

from sim_hw.truthlog import read_records  # noqa: E402

CONFIG = ROOT / "config" / "dispatch-day"
DAY = "2026-04-01"  # a clear spring day of the TMY year: PV up to 5.3 MW against 2.7 MW of load, the head exports
DEFAULT_SPEED = 60.0
DEFAULT_HOURS = (0.0, 24.0)  # UTC: the whole simulated day (20:00 the evening before to 20:00 local, EDT)
BENCH_SEED = 1
SITE = "sim-day"  # config/agent-day.toml's site_id
HEAD = "sub-meter"
INTERVAL_S = 900
SHARE_TARGET_PCT = 95.0
RUNS_ = ("dispatch", "baseline")


# ---- inputs --------------------------------------------------------------------------------------------------


HISTORY_DAYS = 60  # central's history of the feeder before the run's day: two months, as a site gathers
HISTORY_AFTER = 4  # days of history from the run's day on: the truth the later day-ahead issues are judged on
MODEL_COLUMNS = {"load_p_kw": ("load", "load_kw"), "load_q_kvar": ("load", "load_kvar"), "pv_p_kw": ("pv", "pv_kw")}


def model_forecast(history: Path, out: Path, first: int, days: int = 2) -> dict[str, str]:
    """Dispatch's forecast CSV made by central's own models (central/forecast/models.py, as ``central forecast``
    fits them: each series' model chosen by its inner backtest) from ``history`` (the feeder's metered past, a
    ``sim history`` file): the day-ahead forecasts of the ``days`` days from ``first`` (UTC midnight), each issued
    the day before at the forecaster's issue time from what was known then, the weather forecasts by the
    documented error model (central/forecast/weather.py). Returns the model chosen per column."""
    from central.forecast.history import read_history
    from central.forecast.models import Forecaster, Series
    from central.forecast.weather import simulated_forecast

    prof = tomllib.loads((ROOT / "config" / "sim-ieee13-day.toml").read_text())["profiles"]
    tz = prof["timezone"]
    hol = "-".join(x for x in (prof.get("country"), prof.get("subdiv")) if x) or None
    values: dict[str, dict[int, float]] = {}
    chosen: dict[str, str] = {}
    for column, (kind, _) in MODEL_COLUMNS.items():
        h = read_history(history, column)
        series = Series(h.start, h.values, kind, tz=tz, holidays=hol, weather=simulated_forecast(h, 0), extra=0)
        fc = Forecaster(series)
        i0 = (first - h.start) // INTERVAL_S
        # the issues whose local days cover [first, first + days x 24 h) (local days end hours after UTC's)
        origins = fc.origins("day-ahead", i0 - 2 * 96, i0 + days * 96)
        origins = origins[fc.targets("day-ahead", origins)[:, -1] < series.n]
        fit = fc.fit(int(origins[0]))
        chosen[column] = fit.choice["day-ahead"]
        f = fc.forecast(fit, chosen[column], "day-ahead", origins)
        values[column] = {h.start + INTERVAL_S * int(t): float(v) for t, v in
                          zip(f.targets.ravel(), f.p50.ravel(), strict=True)}  # fmt: skip
    starts = sorted(set.intersection(*(set(v) for v in values.values())))
    with out.open("w", newline="") as fout:
        w = csv.writer(fout)
        w.writerow(["start", *(c[1] for c in MODEL_COLUMNS.values())])
        for t in starts:
            w.writerow([iso(t), *(f"{max(values[c][t], 0.0):.3f}" for c in MODEL_COLUMNS)])
    return chosen


def bdew_bench(workdir: Path, start_h: float, ports: dict[int, int], used: set[int]) -> Path:
    """The day bench (control_day.bench_config: the realistic profiles) on ``DAY`` from ``start_h``, its loads'
    noise seeded ``BENCH_SEED``, without the seeded cloud transients: the forecast is trained on ``sim history``,
    which has none (an hourly weather year), and the proof judges 15-minute energies; the transients are the
    control proofs' (docs/dispatch.md, "Closed loop on the bench")."""
    path = bench_config(workdir, 0.0, ports, used)
    text = path.read_text()
    start = datetime.fromisoformat(f"{DAY}T00:00:00+00:00").timestamp() + start_h * 3600.0
    text = _sub(r'(?m)^start = "[^"]*"', f'start = "{iso(start)}"', text, 1, "bench start")
    text = _sub(r'(?m)^source = "[a-z]*"', 'source = "bdew"', text, 1, "[profiles] source")
    text = _sub(r'(?m)^clouds = "[a-z]*"', 'clouds = "none"', text, 1, "[profiles] clouds")
    text = _sub(r"(?m)^seed = 1(\s+# the loads)", rf"seed = {BENCH_SEED}\1", text, 1, "[profiles] seed")
    path.write_text(text)
    return path


def make_keys(workdir: Path) -> None:
    from protocols.telemetry.commands import generate_key, private_pem, public_text

    keys = workdir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    for name in ("agent", "dispatch-1"):
        k = generate_key()
        (keys / f"{name}.key").write_bytes(private_pem(k))
        (keys / f"{name}.pub").write_text(public_text(k.public_key()) + "\n")


def agent_sections() -> str:
    """What the agent gets beyond agent-day.toml: [commands] trusting the dispatch key, [metering] of the head."""
    return f"""
# --- benchmarks/dispatch_day.py ---------------------------------------------------------------------------------
[commands]
agent_key_file = "keys/agent.key"
agent_key_id = "agent-{SITE}"

[[commands.keys]]
key_id = "dispatch-1"
role = "dispatch"
public_key_file = "keys/dispatch-1.pub"

[metering]
interval_s = {INTERVAL_S}

[[metering.meters]]
device = "{HEAD}"
rated_kw = 10000
"""


def central_toml(workdir: Path, broker: str) -> Path:
    text = (CONFIG / "dispatch.toml").read_text()
    text = _sub(r'(?m)^network = "[^"]*"', f'network = "{ROOT / "config" / "ieee13" / "IEEE13.dss"}"', text, 1,
                "dispatch network")  # fmt: skip
    text = _sub(r'(?m)^price_file = "[^"]*"', f'price_file = "{CONFIG / "prices.csv"}"', text, 1, "price_file")
    head = f"""[broker]
url = "{broker}"

[store]
db = "central.db"

[ingest]
status_file = "central-status.json"

[commands]
result_timeout_s = 10
valid_s = 60

[[commands.keys]]
key_id = "dispatch-1"
role = "dispatch"
key_file = "keys/dispatch-1.key"

[commands.sites.{SITE}]
agent_key_file = "keys/agent.pub"

"""
    path = workdir / "central.toml"
    path.write_text(head + text)
    return path


def dispatch_argv(central: Path, forecast: Path, up: Mapping[str, Any], speed: float) -> list[str]:
    return ["central", "dispatch", "--config", str(central), "--forecast", str(forecast),
            "--clock-start", f"{float(up['sim_start']):.3f}", "--clock-wall-start", f"{float(up['wall']):.6f}",
            "--clock-speed", f"{speed:g}"]  # fmt: skip


# ---- one run -------------------------------------------------------------------------------------------------


def run_one(name: str, out: Path, *, speed: float, hours: tuple[float, float], forecast: Path) -> str:
    """Broker, central, the bench, the agent and (run ``dispatch``) central dispatch; notes on how they kept up."""
    workdir = out / name
    truth = out / f"{name}.jsonl"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    truth.unlink(missing_ok=True)
    used: set[int] = set()
    ports: dict[int, int] = {}
    parts = Parts(workdir)
    sim_s = (hours[1] - hours[0]) * 3600.0
    try:
        make_keys(workdir)
        broker = start_broker(parts, used)
        central = central_toml(workdir, broker)
        parts.gridedge("central", "central", "run", "--config", str(central))
        bench_toml = bdew_bench(workdir, hours[0], ports, used)
        bench = parts.gridedge("bench", "sim", "run", "--config", str(bench_toml), "--speed", f"{speed:g}",
                               "--sim-seconds", f"{sim_s:g}", "--truth", str(truth))  # fmt: skip
        up = wait_bench_up(truth, bench, 120)
        agent_toml = agent_config(workdir, RUNS[2], ports, speed=speed, sim_start=float(up["sim_start"]),
                                  wall_start=float(up["wall"]))  # fmt: skip
        agent_toml.write_text(agent_toml.read_text() + agent_sections())
        parts.gridedge("agent", "run", "--config", str(agent_toml), "--broker", broker)
        if name == "dispatch":
            parts.gridedge("dispatch", *dispatch_argv(central, forecast, up, speed))
        print(f"{name}: bench up (pid {up['pid']}), agent started; {sim_s / speed / 60:.1f} min of wall time at "
              f"speed {speed:g}", file=sys.stderr, flush=True)  # fmt: skip

        def dispatch_alive() -> None:
            if name == "dispatch" and not parts.alive("dispatch"):
                raise RuntimeError(f"central dispatch exited:\n{parts.tail('dispatch')}")

        wait_bench_done(bench, parts, sim_s / speed, dispatch_alive)
        time.sleep(3.0)  # the agent's last intervals: stored, then uplink
        parts.stop("dispatch")
        parts.stop("agent")
        time.sleep(2.0)  # central takes what the agent drained
        return bench_lag(truth, speed)
    finally:
        parts.stop_all()


# ---- reading the stores --------------------------------------------------------------------------------------


def metered_net(db: Path, meter: str = HEAD) -> dict[int, float]:
    """Central's intervals of ``meter``, latest versions: delivered - received [kWh] per start where both exist."""
    if not db.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
        rows = con.execute(
            "SELECT channel, start, value FROM intervals i WHERE meter = ? AND value IS NOT NULL AND version = "
            "(SELECT MAX(version) FROM intervals WHERE site = i.site AND meter = i.meter AND register = i.register "
            "AND start = i.start)", (meter,)).fetchall()  # fmt: skip
    by: dict[str, dict[int, float]] = {}
    for channel, start, value in rows:
        by.setdefault(channel, {})[int(start)] = float(value)
    d, r = by.get("kwh_delivered", {}), by.get("kwh_received", {})
    return {s: d[s] - r[s] for s in sorted(set(d) & set(r))}


def scheduled_net(db: Path, meter: str = HEAD) -> dict[int, float]:
    """Settlement's schedules of ``meter``, latest versions (the one sent for the interval): delivered - received."""
    if not db.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
        try:
            rows = con.execute(
                "SELECT channel, start, energy FROM schedules s WHERE meter = ? AND version = (SELECT MAX(version) "
                "FROM schedules WHERE site = s.site AND meter = s.meter AND channel = s.channel AND start = s.start)",
                (meter,)).fetchall()  # fmt: skip
        except sqlite3.OperationalError:
            return {}
    by: dict[str, dict[int, float]] = {}
    for channel, start, energy in rows:
        by.setdefault(channel, {})[int(start)] = float(energy)
    d, r = by.get("kwh_delivered", {}), by.get("kwh_received", {})
    return {s: d.get(s, 0.0) - r.get(s, 0.0) for s in sorted(set(d) | set(r))}


def curtailed_intervals(db: Path) -> set[int]:
    """The intervals in which an applied ``der.setpoint`` limited an inverter below 100 % (its ``until`` is the
    interval's end plus ``expiry_margin_s``)."""
    from protocols.telemetry.commands import read_command, read_signed

    margin = tomllib.loads((CONFIG / "dispatch.toml").read_text())["dispatch"]["expiry_margin_s"]
    if not db.exists():
        return set()
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
        rows = con.execute("SELECT message FROM commands WHERE kind = 'der.setpoint' AND status = 'applied'").fetchall()
    out = set()
    for (message,) in rows:
        body = read_command(read_signed(message.encode())).body
        if float(body.get("p_limit_pct", 100.0)) < 100.0:
            out.add(int(float(body["until"]) - margin) - INTERVAL_S)
    return out


def commands_summary(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
        try:
            rows = con.execute("SELECT kind, status, count(*) FROM commands GROUP BY kind, status").fetchall()
        except sqlite3.OperationalError:
            return {}
    return {f"{k} {s}": n for k, s, n in rows}


def truth_window(truth: Path) -> tuple[float, float, dict[tuple[str, str, int], float]]:
    """The truth log's first and last step, and its bus-phase-minutes outside Range A on the judged buses (every
    bus but the substation's), read as a stream."""
    span: list[float] = []
    buses: list[str] = []

    def steps() -> Iterator[dict[str, Any]]:
        for rec in read_records(truth):
            if rec["record"] == "bench_up":
                feeder = rec.get("feeder") or {}
                sub = set(feeder.get("substation_buses") or ())
                buses.extend(b for b in (feeder.get("buses") or {}) if b not in sub)
            elif rec["record"] == "step":
                ts = float(rec["ts"])
                if not span:
                    span.append(ts)
                span[1:] = [ts]
                yield rec

    class Judged:  # the judged buses are known once bench_up has been read: the first step comes after it
        def __contains__(self, bus: object) -> bool:
            return bus in buses

        def __iter__(self) -> Iterator[str]:
            return iter(buses)

    outside = outside_range_a(steps(), Judged())
    if len(span) < 2:
        raise ValueError(f"{truth}: fewer than two step records")
    return span[0], span[1], outside


# ---- the verdict ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    following: Following
    cost_dispatch: float
    cost_baseline: float
    cost_intervals: int
    outside: int
    outside_baseline: int
    caused: dict[tuple[str, str, int], float]
    commands: dict[str, int]
    curtailed: set[int]

    @property
    def share_met(self) -> bool:
        return self.following.share_pct is not None and self.following.share_pct >= SHARE_TARGET_PCT

    @property
    def cost_met(self) -> bool:
        return self.cost_intervals > 0 and self.cost_dispatch < self.cost_baseline

    @property
    def caused_met(self) -> bool:
        return not self.caused


def judge(out: Path, prices: Path) -> Verdict:
    d_first, d_last, run = truth_window(out / "dispatch.jsonl")
    # judged: whole intervals after the first (the parts start during it) that end by the bench's last step
    lo = (int(d_first) // INTERVAL_S + 1) * INTERVAL_S
    hi = d_last + 1.0

    def inside(series: Mapping[int, float]) -> dict[int, float]:
        return {s: v for s, v in series.items() if s >= lo and s + INTERVAL_S <= hi}

    metered = inside(metered_net(out / "dispatch" / "central.db"))
    sched = inside(scheduled_net(out / "dispatch" / "central.db"))
    following = judge_following(metered, sched)
    base = inside(metered_net(out / "baseline" / "central.db"))
    both = sorted(set(metered) & set(base))
    cost_d = energy_cost({s: metered[s] for s in both}, prices)
    cost_b = energy_cost({s: base[s] for s in both}, prices)
    _, _, baseline = truth_window(out / "baseline.jsonl")
    return Verdict(following, cost_d, cost_b, len(both), len(run), len(baseline), caused(run, baseline),
                   commands_summary(out / "dispatch" / "central.db"),
                   curtailed_intervals(out / "dispatch" / "central.db"))  # fmt: skip


def _t(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def format_table(v: Verdict) -> str:
    f = v.following
    lines = [f"{'interval':<8} {'scheduled kWh':>14} {'metered kWh':>12} {'error kWh':>10} {'error %':>8} "
             f"{'allowed kWh':>11}  within  PV curtailed"]  # fmt: skip
    for c in f.checks:
        pct = "-" if c.error_pct is None else f"{c.error_pct:.1f}"
        lines.append(f"{_t(c.start):<8} {c.scheduled_kwh:14.1f} {c.metered_kwh:12.1f} {c.error_kwh:10.1f} {pct:>8} "
                     f"{c.allowed_kwh:11.1f}  {'yes' if c.within else 'NO ':<6}  "
                     f"{'yes' if c.start in v.curtailed else '-'}")  # fmt: skip
    lines.append("")
    lines.append(f"head meter {HEAD}, net energy (delivered - received) per 15 minutes; allowed: {FOLLOW_TOL_PCT:g} % "
                 f"of |scheduled|, at least {FLOOR_SHARE * 100:g} % of the run's largest |scheduled| "
                 f"({f.floor_kwh:.1f} kWh; {f.floored} interval(s) judged by it); {len(f.missing)} scheduled "
                 "interval(s) without a metered value")  # fmt: skip
    cw, cn = f.share_of(v.curtailed)
    lines.append(f"with PV curtailed by the schedule: {cw} of {cn} within; the others (the head's net energy is the "
                 f"forecast's, nothing dispatched changes it but CVR): {f.within - cw} of {f.judged - cn}")  # fmt: skip
    lines.append("commands: " + (", ".join(f"{k} {n}" for k, n in sorted(v.commands.items())) or "none"))
    lines.append("")
    ratio = v.cost_dispatch / v.cost_baseline if v.cost_baseline else float("nan")
    checks = [
        (v.share_met, f"(a) >= {SHARE_TARGET_PCT:g} % of intervals within +-{FOLLOW_TOL_PCT:g} % of schedule",
         f"{f.within} of {f.judged} ({'-' if f.share_pct is None else f'{f.share_pct:.1f}'} %)"),
        (v.cost_met, "(b) energy cost at the head lower with dispatch than without",
         f"{v.cost_dispatch:.2f} vs {v.cost_baseline:.2f} over {v.cost_intervals} intervals (ratio {ratio:.3f})"),
        (v.caused_met, "(c) no bus outside ANSI C84.1 Range A caused by a schedule (truth log)",
         f"bus-phase-minutes outside Range A: dispatch {v.outside}, baseline {v.outside_baseline}; caused "
         f"{len(v.caused)}" + "".join(f"; {b}.{p} {_t(m * 60)} {x:.4f} pu" for (b, p, m), x in
                                      sorted(v.caused.items())[:8])),
    ]  # fmt: skip
    for met, text, detail in checks:
        lines.append(f"{'MET' if met else 'MISSED':<8}  {text}")
        lines.append(f"{'':<8}  {detail}")
    return "\n".join(lines)


def results_json(v: Verdict, notes: Mapping[str, str], args: argparse.Namespace) -> dict[str, Any]:
    f = v.following
    return {
        "day": DAY, "hours": list(args.hours), "speed": args.speed, "bench_seed": BENCH_SEED,
        "history_days": HISTORY_DAYS, "notes": dict(notes),
        "following": {"judged": f.judged, "within": f.within, "curtailed": list(f.share_of(v.curtailed)), "share_pct": f.share_pct, "floor_kwh": f.floor_kwh,
                      "floored": f.floored, "missing": len(f.missing),
                      "intervals": [{"start": c.start, "scheduled_kwh": c.scheduled_kwh, "metered_kwh": c.metered_kwh,
                                     "allowed_kwh": c.allowed_kwh, "within": c.within,
                                     "curtailed": c.start in v.curtailed} for c in f.checks]},
        "cost": {"dispatch": v.cost_dispatch, "baseline": v.cost_baseline, "intervals": v.cost_intervals},
        "range_a": {"dispatch_bus_phase_minutes": v.outside, "baseline_bus_phase_minutes": v.outside_baseline,
                    "caused": [{"bus": b, "phase": p, "minute": iso(m * 60), "pu": x}
                               for (b, p, m), x in sorted(v.caused.items())]},
        "commands": v.commands,
        "met": {"share": v.share_met, "cost": v.cost_met, "caused": v.caused_met},
    }  # fmt: skip


def emit_bench(v: Verdict) -> None:
    f = v.following
    emit("dispatch_day_intervals_within_5pct", f.share_pct, None, None, "%", f">= {SHARE_TARGET_PCT:g} %", v.share_met)
    ratio = v.cost_dispatch / v.cost_baseline if v.cost_baseline else None
    emit("dispatch_day_energy_cost", v.cost_dispatch, v.cost_baseline, ratio, "currency",
         "lower than no dispatch", v.cost_met)  # fmt: skip
    emit("dispatch_day_range_a_caused", len(v.caused), v.outside_baseline, None, "bus-phase-minutes", "0",
         v.caused_met)  # fmt: skip


# ---- command line ----------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--speed", type=_speed, default=DEFAULT_SPEED,
                   help=f"simulated seconds per wall second (default {DEFAULT_SPEED:g})")  # fmt: skip
    p.add_argument("--hours", type=_hours, default=DEFAULT_HOURS,
                   help=f"a UTC window of {DAY}, A-B in hours (default {DEFAULT_HOURS[0]:g}-{DEFAULT_HOURS[1]:g})")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "run" / "dispatch-day", help="truth logs, logs, the results")
    p.add_argument("--table-only", action="store_true", help="no runs: judge the ones kept in --out")
    p.add_argument("--only", choices=RUNS_, help="run this one again, judge it with the other run kept in --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    notes: dict[str, str] = {}
    if args.only and (out / "notes.json").exists():
        notes = json.loads((out / "notes.json").read_text())
    if not args.table_only:
        history = out / "forecast-history.csv"
        forecast = out / "forecast.csv"
        first = int(datetime.fromisoformat(f"{DAY}T00:00:00+00:00").timestamp())
        res = subprocess.run([sys.executable, "-m", "gridedge", "sim", "history", "--config",
                              str(ROOT / "config" / "sim-ieee13-day.toml"),
                              "--days", str(HISTORY_DAYS + HISTORY_AFTER), "--start",
                              iso(first - HISTORY_DAYS * 86400)[:10], "--seed", str(BENCH_SEED), "--out", str(history)],
                             capture_output=True, text=True, check=False)  # fmt: skip
        if res.returncode != 0:
            print(f"dispatch day: sim history failed: {res.stderr.strip()}", file=sys.stderr)
            return 2
        notes["forecast"] = "central's day-ahead models: " + ", ".join(
            f"{c} {m}" for c, m in model_forecast(history, forecast, first).items()
        )
        for name in (args.only,) if args.only else RUNS_:
            try:
                notes[name] = run_one(name, out, speed=args.speed, hours=args.hours, forecast=forecast)
            except (OSError, RuntimeError, TimeoutError) as err:
                print(f"dispatch day: run {name} failed: {err}", file=sys.stderr)
                return 2
        (out / "notes.json").write_text(json.dumps(notes))
    elif (out / "notes.json").exists():
        notes = json.loads((out / "notes.json").read_text())
    try:
        v = judge(out, CONFIG / "prices.csv")
    except (OSError, ValueError) as err:
        print(f"dispatch day: cannot judge: {err}", file=sys.stderr)
        return 2
    head = (f"dispatch day {DAY}, hours {args.hours[0]:g}-{args.hours[1]:g} UTC, speed {args.speed:g}, bench seed "
            f"{BENCH_SEED}, forecast: central's day-ahead on {HISTORY_DAYS} days of history; "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")  # fmt: skip
    text = head + "\n" + "\n".join(f"{k}: {n}" for k, n in notes.items()) + "\n\n" + format_table(v)
    print(text)
    (out / "table.txt").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(results_json(v, notes, args), indent=1) + "\n")
    emit_bench(v)
    return 0 if v.share_met and v.cost_met and v.caused_met else 1


if __name__ == "__main__":
    sys.exit(main())
