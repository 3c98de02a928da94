"""The metering proof on the bench (docs/metering.md, "The day on the bench").

    .venv/bin/python benchmarks/metering_day.py [--speed 120] [--hours 10-14] [--out run/metering-day]
    .venv/bin/python benchmarks/metering_day.py --table-only --out run/metering-day   # judge the kept run again

The day bench (config/sim-ieee13-day.toml) with its seven feeder meters' uint32 Wh registers started
``COUNTER_HEADROOM_WH`` below 2**32 so they roll over early in the run, and a scenario (``scenario_text``): one meter
silent from ``SILENT_RUN_AT_S`` to the end of the run, another silent for ``SILENT_HOUR_S`` (an hour), and a
meter swap. Every part its own process as in benchmarks/control_day.py (whose helpers this reuses): the bench
(``gridedge sim run --truth FILE --scenario FILE``), a Mosquitto, central and the agent (config/agent-day.toml,
monitoring only, with a ``[metering]`` section: 15-minute intervals of every feeder meter).

Judged (benchmarks/metering_judge.py) from the bench's truth log: central's 15-minute intervals (its ``intervals``
table, latest versions; the agent's store when central has none) against the bench's own energy per meter:
every actual interval within 0.1 %, each register's total within 0.1 %, the swap flagged, every rollover
flagged, the silenced meters' intervals S (method 17) or N; and the head meter against the downstream meters plus
the losses and unmetered net load of the truth log, within 0.5 % per interval.

``--chaos`` kills the broker (SIGKILL) 20 times and the agent 5 times, spread over the run, each started again at
once, and judges exactly once besides: every interval at central once (one version, no conflicting copy), none
missing between the first and the last of each register, the intervals stream's sequence without a gap, nothing at
central the agent did not make, and only the newest of what it made not yet at central.

``--out DIR`` keeps the truth log (``truth.jsonl``), each process's log, the stores and the table (``table.txt``).
Exit 0 when every target judged was met, 1 when one was missed, 2 when the run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from control_day import (  # noqa: E402
    RUNS,
    Parts,
    _hours,
    _speed,
    agent_config,
    bench_config,
    bench_lag,
    start_broker,
    wait_bench_done,
    wait_bench_up,
    wait_port,
)
from metering_judge import (  # noqa: E402
    ENERGY_MODULUS_WH,
    Check,
    Truth,
    Verdict,
    judge_intervals,
    p99,
    reconcile,
)

from sim_hw.truthlog import read_records  # noqa: E402

INTERVAL_S = 900
DEFAULT_SPEED = 120.0  # see docs/metering.md, "The day on the bench": the bench and the agent kept up at it here
DEFAULT_HOURS = (10.0, 14.0)  # midday: the PV turns the far meters' flow round, clouds swing it
COUNTER_HEADROOM_WH = 150_000  # every register starts 150 kWh below 2**32: the head wraps within minutes
TOLERANCE_PCT = 0.1
RECONCILE_PCT = 0.5

# the feeder meters metered, with their rated power [kW] (the spike bound, docs/metering.md rule 4)
METERS = {
    "sub-meter": 10000, "fdr-680-meter": 5000, "fdr-675-meter": 5000, "fdr-611-meter": 1000,
    "fdr-652-meter": 1000, "xfm1-634-meter": 1000, "fdr-645-meter": 2000,
}  # fmt: skip
HEAD = "sub-meter"
# Reconciliation: +1 a meter at a lateral's sending end (its delivered energy leaves the metered middle of the
# feeder), -1 a meter at a line's far end, facing the line (its delivered energy is what its bus sends back).
DOWNSTREAM = {"fdr-645-meter": +1.0, "fdr-680-meter": -1.0, "fdr-675-meter": -1.0, "fdr-611-meter": -1.0,
              "fdr-652-meter": -1.0, "xfm1-634-meter": -1.0}  # fmt: skip

# the scenario, in simulated seconds after the bench's start
SILENT_RUN = "fdr-611-meter"
SILENT_RUN_AT_S = 1210  # 20 min in: the engine has a first read, then nothing to the end
SILENT_HOUR = "fdr-652-meter"
SILENT_HOUR_AT_S = 2950
SILENT_HOUR_S = 3600
SWAPPED = "fdr-675-meter"
SWAP_AT_S = 7330  # inside an interval, not on a boundary
ESTIMATE_SPAN_S = 5400  # the hour's silence (3600 s plus a poll) is interpolated (S); the longer one is null (N)
ACTUAL_SPAN_S = 130  # twice the RS-485 645 meter's 60 s poll, with its line time


def scenario_text() -> str:
    return f"""description = "metering day: {SILENT_RUN} silent to the end, {SILENT_HOUR} silent an hour, {SWAPPED} swapped"

[[events]]
at_s = {SILENT_RUN_AT_S}
action = "silence"
device = "{SILENT_RUN}"
duration_s = 864000

[[events]]
at_s = {SILENT_HOUR_AT_S}
action = "silence"
device = "{SILENT_HOUR}"
duration_s = {SILENT_HOUR_S}

[[events]]
at_s = {SWAP_AT_S}
action = "meter_swap"
device = "{SWAPPED}"
"""


def initial_counters() -> dict[str, tuple[float, float]]:
    start = float(ENERGY_MODULUS_WH - COUNTER_HEADROOM_WH)
    return {m: (start, start) for m in METERS}


def metering_section() -> str:
    lines = ["", "# --- Interval energy (docs/metering.md): benchmarks/metering_day.py ------------------------------",
             "[metering]", f"interval_s = {INTERVAL_S}", f"estimate_span_s = {ESTIMATE_SPAN_S}",
             f"actual_span_s = {ACTUAL_SPAN_S}"]  # fmt: skip
    for name, kw in METERS.items():
        lines += ["", "[[metering.meters]]", f'device = "{name}"', f"rated_kw = {kw}"]
    return "\n".join(lines) + "\n"


def with_counters(bench_toml: Path, step_s: float | None = None) -> None:
    """The bench copy's feeder meters started near 2**32 (``energy_delivered_wh``, ``energy_received_wh``); and
    its ``step_s`` when given (the meters' registers are refreshed once a step: see docs/metering.md)."""
    start = ENERGY_MODULUS_WH - COUNTER_HEADROOM_WH
    text = bench_toml.read_text()
    if step_s is not None:
        text, n = re.subn(r"(?m)^step_s = [0-9.]+", f"step_s = {step_s:g}", text)
        if n != 1:
            raise RuntimeError(f"bench copy: {n} step_s lines found, expected 1")
    text, n = re.subn(r'(options = \{ element = "[^"]+", terminal = \d+)( \})',
                      rf"\1, energy_delivered_wh = {start}, energy_received_wh = {start}\2", text)  # fmt: skip
    if n != len(METERS):
        raise RuntimeError(f"bench copy: {n} feeder meters' options found, expected {len(METERS)}")
    bench_toml.write_text(text)


# ---- the intervals, from central or from the agent ----------------------------------------------------------------


def _connect(db: Path) -> sqlite3.Connection | None:
    if not db.exists():
        return None
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def agent_intervals(db: Path) -> list[dict[str, Any]]:
    """Every interval item the agent stored (its ``intervals`` table, column ``item``: the wire item)."""
    con = _connect(db)
    if con is None:
        return []
    try:
        return [json.loads(item) for (item,) in con.execute("SELECT item FROM intervals ORDER BY id")]
    except sqlite3.Error:
        return []
    finally:
        con.close()


def central_intervals(db: Path) -> list[dict[str, Any]]:
    """Every interval central stored (its ``intervals`` table: one row per version), as wire items."""
    con = _connect(db)
    if con is None:
        return []
    con.row_factory = sqlite3.Row
    try:
        rows = con.execute("SELECT * FROM intervals").fetchall()
    except sqlite3.Error:
        return []
    finally:
        con.close()
    out = []
    for r in rows:
        keys = r.keys()
        flags = r["flags"] if "flags" in keys else "[]"
        with contextlib.suppress(TypeError, ValueError):
            flags = json.loads(flags) if isinstance(flags, str) else flags
        out.append({
            "meter": r["meter"], "register": r["register"], "channel": r["channel"], "start": float(r["start"]),
            "end": float(r["end_ts"] if "end_ts" in keys else r["end"]), "value": r["value"], "unit": r["unit"],
            "quality": r["quality"], "method": r["method"], "version": int(r["version"]), "flags": list(flags or []),
            "meter_id": r["meter_id"] if "meter_id" in keys else None,
        })  # fmt: skip
    return out


# ---- the table -------------------------------------------------------------------------------------------------


def _pct(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_table(verdict: Verdict, recon: Sequence[Any], source: str, extra: Sequence[Check] = ()) -> str:
    header = ["meter", "register", "A", "S", "N", "holes", "A > 0.1 %", "A max %", "A p99 %", "A thru max %", "total kWh", "truth kWh",
              "total err %", "N truth kWh", "flags"]  # fmt: skip
    body = []
    for (meter, channel), rv in sorted(verdict.registers.items()):
        q = rv.by_quality
        flags = ", ".join(f"{k} {v}" for k, v in sorted(rv.flags.items())) or "-"
        body.append([meter, channel.removeprefix("kwh_"), str(q["A"]), str(q["S"]), str(q["N"]), str(rv.holes),
                     str(sum(1 for e in rv.a_errors_pct if e > verdict.tolerance_pct)), _pct(rv.a_max_pct),
                     _pct(rv.a_p99_pct), _pct(rv.a_through_max_pct), f"{rv.total_kwh:,.1f}", f"{rv.total_truth_kwh:,.1f}",
                     _pct(rv.total_error_pct), f"{rv.null_truth_kwh:,.1f}", flags])  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i in (0, 1, 14) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
             strict=True))) for r in [header, *body]]  # fmt: skip
    lines.append("")
    lines.append(f"intervals from {source}; errors |value - truth| / max(|truth|, 2 kWh); A max/p99 without the "
                 "meter_swap intervals; thru: against the energy through the meter (delivered + received)")  # fmt: skip
    for (meter, channel), rv in sorted(verdict.registers.items()):
        for start, quality, value, true in rv.swaps:
            err = abs((value or 0) - true) / max(abs(true), 2.0) * 100
            lines.append(f"swap interval {meter} {channel} {datetime.fromtimestamp(start, UTC):%H:%M}: {quality} "
                         f"{value:.3f} kWh vs truth {true:.3f} ({err:.3f} %; the energy between the old meter's last "
                         "read and the new one's first is not booked)")  # fmt: skip
    checks = list(verdict.checks)
    if recon:
        errs = [r.error_pct for r in recon]
        worst = max(recon, key=lambda r: r.error_pct)
        full = sum(1 for r in recon if len(r.metered) == len(DOWNSTREAM))
        checks.append(Check(f"head = downstream meters + truth losses and unmetered net load, within {RECONCILE_PCT:g} "
                            "% per interval", worst.error_pct <= RECONCILE_PCT,
                            f"{len(recon)} intervals ({full} with every downstream meter actual; mean |head| "
                            f"{sum(abs(r.head_kwh) for r in recon) / len(recon):.1f} kWh, mean |truth rest| "
                            f"{sum(abs(r.truth_rest_kwh) for r in recon) / len(recon):.1f} kWh), max "
                            f"{worst.error_pct:.4f} % at {datetime.fromtimestamp(worst.start, UTC):%H:%M} (head "
                            f"{worst.head_kwh:.2f}, downstream {worst.downstream_kwh:.2f}, truth rest "
                            f"{worst.truth_rest_kwh:.2f} kWh), p99 {p99(errs):.4f} %"))  # fmt: skip
    checks += extra
    lines.append("")
    for c in checks:
        word = {True: "MET", False: "MISSED", None: "not judged"}[c.met]
        lines.append(f"{word:<10}  {c.text}")
        lines.append(f"{'':<10}  {c.detail}")
    return "\n".join(lines)


def judge_run(out: Path) -> tuple[str, bool]:
    truth = Truth.from_records(read_records(out / "truth.jsonl"))
    items = central_intervals(out / "run" / "central.db")
    source = "central's intervals table"
    if not items:
        items = agent_intervals(out / "run" / "agent.db")
        source = "the agent's store (central had none)"
    items = [i for i in items if truth.covers(float(i["start"]), float(i["end"]))]
    verdict = judge_intervals(truth, items, tolerance_pct=TOLERANCE_PCT, initial_wh=initial_counters())
    recon = reconcile(truth, items, head=HEAD, downstream=DOWNSTREAM)
    extra: list[Check] = []
    if (out / "chaos.json").exists():
        extra = exactly_once(out / "run" / "central.db", out / "run" / "agent.db",
                             json.loads((out / "chaos.json").read_text()))  # fmt: skip
    table = format_table(verdict, recon, source, extra)
    ok = verdict.met() and all(r.error_pct <= RECONCILE_PCT for r in recon) and all(c.met for c in extra)
    return table, ok


# ---- chaos ------------------------------------------------------------------------------------------------------

BROKER_KILLS = 20
AGENT_KILLS = 5


def sigkill(parts: Parts, name: str) -> None:
    """SIGKILL a part's whole process group, as a power cut or an OOM kill would end it."""
    proc = parts.procs.pop(name)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@dataclass
class Chaos:
    """Called every wall second during the run: ``BROKER_KILLS`` broker kills evenly over ``wall_s``, the agent
    killed with every fourth (``AGENT_KILLS`` in all), each started again at once with the same arguments."""

    parts: Parts
    broker_port: int
    agent_argv: list[str]
    wall_s: float
    t0: float = field(default_factory=time.monotonic)
    broker_kills: int = 0
    agent_kills: int = 0

    def __call__(self) -> None:
        due = min(BROKER_KILLS, int((time.monotonic() - self.t0) / (self.wall_s / (BROKER_KILLS + 1))))
        while self.broker_kills < due:
            sigkill(self.parts, "mosquitto")
            time.sleep(0.3)
            self.parts.start("mosquitto", ["mosquitto", "-c", str(self.parts.workdir / "mosquitto.conf")])
            wait_port(self.broker_port, 10)
            self.broker_kills += 1
            if self.broker_kills % (BROKER_KILLS // AGENT_KILLS) == 0 and self.agent_kills < AGENT_KILLS:
                sigkill(self.parts, "agent")
                self.parts.gridedge("agent", *self.agent_argv)
                self.agent_kills += 1


def exactly_once(central_db: Path, agent_db: Path, chaos: dict[str, int]) -> list[Check]:
    """The exactly-once checks of a chaos run (module docstring) from central's and the agent's stores."""
    text = f"exactly once through {chaos['broker_kills']} broker kills and {chaos['agent_kills']} agent SIGKILLs"
    with contextlib.closing(sqlite3.connect(central_db)) as con:
        rows = con.execute("SELECT meter, register, start, version FROM intervals").fetchall()
        conflicts = con.execute("SELECT count(*) FROM interval_conflicts").fetchone()[0]
        seqs = [s for (s,) in con.execute("SELECT DISTINCT seq FROM messages WHERE stream = 'intervals' ORDER BY seq")]
    with contextlib.closing(sqlite3.connect(agent_db)) as con:
        made = [json.loads(i) for (i,) in con.execute("SELECT item FROM intervals")]
    problems = []
    if any(v != 1 for *_, v in rows):
        problems.append(f"{sum(1 for *_, v in rows if v != 1)} intervals with a second version")
    if conflicts:
        problems.append(f"{conflicts} conflicting copies")
    starts: dict[tuple[str, str], list[int]] = {}
    for meter, register, start, _v in rows:
        starts.setdefault((meter, register), []).append(int(start))
    holes = {k: sum((b - a) // INTERVAL_S - 1 for a, b in zip(sorted(v), sorted(v)[1:], strict=False))
             for k, v in starts.items()}  # fmt: skip
    if any(holes.values()):
        problems.append(
            f"intervals missing at central: {', '.join(f'{k[0]}/{k[1]} {n}' for k, n in holes.items() if n)}"
        )
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(
            f"the intervals stream's sequence has gaps ({len(seqs)} seqs, last {seqs[-1] if seqs else None})"
        )
    keys = [(i["meter"], i["register"], int(i["start"]), int(i["version"])) for i in made]
    if len(keys) != len(set(keys)):
        problems.append(f"the agent made {len(keys) - len(set(keys))} intervals twice")
    central = {(m, r, int(s), v) for m, r, s, v in rows}
    if central - set(keys):
        problems.append(f"{len(central - set(keys))} intervals at central the agent did not make")
    last = max((s for _, _, s, _ in central), default=0)
    late = [k for k in set(keys) - central if k[2] < last - INTERVAL_S]
    if late:
        problems.append(f"{len(late)} older intervals the agent made never reached central")
    detail = (f"{len(rows)} intervals at central over {len(starts)} registers, {len(seqs)} messages of the intervals "
              f"stream; " + ("; ".join(problems) if problems else "each once, no gap, no duplicate"))  # fmt: skip
    met = not problems and chaos["broker_kills"] >= BROKER_KILLS and chaos["agent_kills"] >= AGENT_KILLS
    return [Check(text, met, detail)]


# ---- the run ----------------------------------------------------------------------------------------------------


def run(
    out: Path, *, speed: float, hours: tuple[float, float], step_s: float | None = None, chaos: bool = False
) -> str:
    """Broker, central, the bench with the scenario, the agent with [metering]; the notes on how they kept up."""
    workdir = out / "run"
    truth = out / "truth.jsonl"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    truth.unlink(missing_ok=True)
    (out / "chaos.json").unlink(missing_ok=True)
    used: set[int] = set()
    ports: dict[int, int] = {}
    parts = Parts(workdir)
    sim_s = (hours[1] - hours[0]) * 3600.0
    try:
        broker = start_broker(parts, used)
        (workdir / "central.toml").write_text(f'[broker]\nurl = "{broker}"\n\n[store]\ndb = "central.db"\n'
                                              f'\n[ingest]\nstatus_file = "central-status.json"\n')  # fmt: skip
        parts.gridedge("central", "central", "run", "--config", str(workdir / "central.toml"))
        bench_toml = bench_config(workdir, hours[0], ports, used)
        with_counters(bench_toml, step_s)
        scenario = workdir / "scenario.toml"
        scenario.write_text(scenario_text())
        bench = parts.gridedge("bench", "sim", "run", "--config", str(bench_toml), "--speed", f"{speed:g}",
                               "--sim-seconds", f"{sim_s:g}", "--truth", str(truth), "--scenario", str(scenario))  # fmt: skip
        up = wait_bench_up(truth, bench, 120)
        agent_toml = agent_config(workdir, RUNS[1], ports, speed=speed, sim_start=float(up["sim_start"]),
                                  wall_start=float(up["wall"]))  # fmt: skip
        # a day of readings at 120x outgrows agent-day.toml's 256 MB: the store prunes its acknowledged history
        # as it goes (docs/store.md, "The full policy"), which the run shows
        agent_toml.write_text(agent_toml.read_text() + metering_section())
        agent_argv = ["run", "--config", str(agent_toml), "--broker", broker]
        parts.gridedge("agent", *agent_argv)
        print(f"metering day: bench up (pid {up['pid']}), agent started; {sim_s / speed / 60:.1f} min of wall time "
              f"at speed {speed:g}" + (", with chaos" if chaos else ""), file=sys.stderr, flush=True)  # fmt: skip
        kills = Chaos(parts, int(broker.rsplit(":", 1)[1]), agent_argv, sim_s / speed) if chaos else None
        wait_bench_done(bench, parts, sim_s / speed, kills)
        if kills is not None:
            (out / "chaos.json").write_text(json.dumps({"broker_kills": kills.broker_kills,
                                                        "agent_kills": kills.agent_kills}))  # fmt: skip
            time.sleep(10.0)  # the agent started last drains what it holds
        time.sleep(3.0)  # the agent's last intervals: stored every wall second, then uplink
        parts.stop("agent")
        time.sleep(2.0)  # central takes what the agent drained
        return bench_lag(truth, speed)
    finally:
        parts.stop_all()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--speed", type=_speed, default=DEFAULT_SPEED,
                   help=f"simulated seconds per wall second (default {DEFAULT_SPEED:g})")  # fmt: skip
    p.add_argument("--hours", type=_hours, default=DEFAULT_HOURS,
                   help=f"a window of the day, A-B in hours (default {DEFAULT_HOURS[0]:g}-{DEFAULT_HOURS[1]:g})")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "run" / "metering-day", help="truth log, logs and the table")
    p.add_argument("--step-s", type=_speed, default=None, help="the bench's step [simulated s] (default its 1 s)")
    p.add_argument("--chaos", action="store_true", help=f"kill the broker {BROKER_KILLS} and the agent {AGENT_KILLS} "
                   "times during the run and judge exactly once too")  # fmt: skip
    p.add_argument("--table-only", action="store_true", help="no run: judge the one kept in --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    note = ""
    if not args.table_only:
        hours = args.hours
        if (hours[1] - hours[0]) * 3600 < SWAP_AT_S + 2 * INTERVAL_S:
            print(f"--hours: the scenario needs at least {(SWAP_AT_S + 2 * INTERVAL_S) / 3600:.1f} h", file=sys.stderr)
            return 2
        try:
            note = run(out, speed=args.speed, hours=hours, step_s=args.step_s, chaos=args.chaos)
        except (OSError, RuntimeError, TimeoutError) as err:
            print(f"metering day failed: {err}", file=sys.stderr)
            return 2
    try:
        table, ok = judge_run(out)
    except (OSError, ValueError) as err:
        print(f"metering day: cannot judge: {err}", file=sys.stderr)
        return 2
    head = "metering day" + ("" if args.table_only else
                             f", hours {args.hours[0]:g}-{args.hours[1]:g}, speed {args.speed:g}"
                             + ("" if args.step_s is None else f", bench step {args.step_s:g} s")
                             + (", chaos" if args.chaos else ""))  # fmt: skip
    text = f"{head}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n{note}\n\n{table}"
    print(text)
    (out / "table.txt").write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
