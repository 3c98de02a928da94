"""The closed-loop proof on the high-PV cloudy day (docs/control.md, "The closed-loop day").

    .venv/bin/python benchmarks/control_day.py [--runs 1,2,3] [--speed 120] [--hours 0-24] [--out run/control-day]
    .venv/bin/python benchmarks/control_day.py --table-only --out run/control-day   # the table from kept logs

Every part is its own process, as in the field: the bench (``gridedge sim run --config config/sim-ieee13-day.toml
--truth FILE --speed N``, on free ports), the agent (``gridedge run``, config/agent-day.toml pointed at those
ports, its ``[clock]`` on the bench's start instant and speed), a Mosquitto on a free loopback port and central.
Three runs of the same day, one after the other, judged from the bench's own truth logs (docs/truth-log.md):

1. ``monitor``: the devices on their own local controls (inverters at unity power factor, the regulator
   automatic, the cap bank local automatic); the agent reads everything and writes nothing;
2. ``control``: the agent keeps voltages in range (DER volt-var and volt-watt groups, regulator supervision,
   the cap bank);
3. ``cvr``: run 2 with conservation voltage reduction on.

The table: bus-minutes outside ANSI C84.1 Range A, tap and capacitor operations, feeder-head energy, losses and
mean voltage per run, with run 2 / run 1 and run 3 / run 1, then the targets: run 2 at least 90 %
fewer bus-minutes outside Range A than run 1 with no more tap + cap operations; run 3 at least 2 % less
feeder-head energy than run 1 with no judged bus below Range A; and CVR's mean voltage reduction and energy saved.

``--out DIR`` keeps, per run, the truth log (``runN.jsonl``), its summary (``runN.json``), each process's log and
the agent's store and status under ``runN/``, and the table (``table.txt``). The exit status is 0 when every
target judged was met (or none could be judged), 1 when one was missed, 2 when a run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim_hw.truthlog import RANGE_A_PU, TruthSummary, read_records, summarise  # noqa: E402

DAY_BENCH = ROOT / "config" / "sim-ieee13-day.toml"
DAY_AGENT = ROOT / "config" / "agent-day.toml"
DAY_START = "2026-04-05T04:00:00Z"  # [bench] start of config/sim-ieee13-day.toml
# The highest speed at which bench and agent kept up on the 2-core build machine shared with other work
# (docs/control.md, "The closed-loop day"): 150 with a light background load, 60 under a heavy one.
DEFAULT_SPEED = 60.0
MAX_LAG_SIM_S = 30.0  # a bench step later than this [simulated s]: the agent's clock was that far ahead of it

# the targets the controller is held to
RUN2_OUTSIDE_A_MAX_RATIO = 0.10  # at least 90 % fewer bus-minutes outside Range A than run 1
RUN3_HEAD_ENERGY_MAX_RATIO = 0.98  # at least 2 % less feeder-head energy than run 1
EPS = 1e-6  # bus-minutes, kWh: a figure exactly on its target meets it (the sums carry float rounding)


@dataclass(frozen=True, slots=True)
class RunKind:
    number: int
    name: str
    what: str
    mode: str  # [control] mode
    cvr: bool  # [control.cvr] enabled


RUNS = {
    1: RunKind(1, "monitor", "devices on their own local controls, the agent monitoring", "monitor", False),
    2: RunKind(2, "control", "agent control: DER curves, regulator supervision, cap bank", "control", False),
    3: RunKind(3, "cvr", "agent control with CVR", "control", True),
}


# ---- the table and the targets (pure: summaries in, text out) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    run: int
    text: str
    met: bool | None  # None: not judged (a run missing)
    detail: str


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def switching_ops(s: TruthSummary) -> int:
    """Tap plus capacitor operations (the wear the targets compare)."""
    return s.tap_operations + s.cap_operations


def judge(runs: Mapping[int, TruthSummary]) -> list[Target]:
    """The targets for whichever of runs 2 and 3 are present beside run 1."""
    out: list[Target] = []
    one = runs.get(1)
    two = runs.get(2)
    three = runs.get(3)
    if 2 in runs:
        text = "run 2: >= 90 % fewer bus-minutes outside Range A than run 1, no more tap + cap operations"
        if one is None or two is None:
            out.append(Target(2, text, None, "run 1 missing"))
        else:
            fewer = two.bus_minutes_outside_a <= RUN2_OUTSIDE_A_MAX_RATIO * one.bus_minutes_outside_a + EPS
            wear = switching_ops(two) <= switching_ops(one)
            cut = (1 - two.bus_minutes_outside_a / one.bus_minutes_outside_a) * 100 if one.bus_minutes_outside_a else 0
            detail = (f"bus-minutes {two.bus_minutes_outside_a:.1f} vs {one.bus_minutes_outside_a:.1f} "
                      f"({cut:.1f} % fewer: {'ok' if fewer else 'MISSED'}); tap + cap "
                      f"{switching_ops(two)} vs {switching_ops(one)} ({'ok' if wear else 'MISSED'})")  # fmt: skip
            out.append(Target(2, text, fewer and wear, detail))
    if 3 in runs:
        text = "run 3: >= 2 % less feeder-head energy than run 1, no judged bus below Range A"
        if one is None or three is None:
            out.append(Target(3, text, None, "run 1 missing"))
        else:
            saved = one.head_kwh - three.head_kwh
            pct = saved / abs(one.head_kwh) * 100 if one.head_kwh else 0.0
            less = one.head_kwh > 0 and three.head_kwh <= RUN3_HEAD_ENERGY_MAX_RATIO * one.head_kwh + EPS
            floor = three.bus_minutes_below_a == 0
            low = (
                "-" if three.v_min is None else f"{three.v_min.pu * 120:.1f} V at {three.v_min.bus}.{three.v_min.phase}"
            )
            if one.head_kwh <= 0:  # the feeder exported on net: a share of a net export says nothing of CVR
                out.append(Target(3, text, None, f"not judged: the feeder exported {-one.head_kwh:.1f} kWh on net in "
                                  f"run 1; CVR saved {saved:.1f} kWh ({pct:.2f} % of the net flow); lowest {low}"))  # fmt: skip
            else:
                detail = (f"head energy {three.head_kwh:.1f} vs {one.head_kwh:.1f} kWh ({pct:.2f} % less: "
                          f"{'ok' if less else 'MISSED'}); bus-minutes below Range A "
                          f"{three.bus_minutes_below_a:.1f}, lowest {low} ({'ok' if floor else 'MISSED'})")  # fmt: skip
                out.append(Target(3, text, less and floor, detail))
    return out


def cvr_effect(one: TruthSummary, three: TruthSummary) -> dict[str, float | None]:
    """CVR's mean voltage reduction (pu, V on the 120 V base, %) and energy saved (kWh, %) against run 1."""
    dv = None if one.v_mean_pu is None or three.v_mean_pu is None else one.v_mean_pu - three.v_mean_pu
    saved = one.head_kwh - three.head_kwh
    return {
        "v_reduction_pu": dv,
        "v_reduction_v": None if dv is None else dv * 120.0,
        "v_reduction_pct": None if dv is None or not one.v_mean_pu else dv / one.v_mean_pu * 100.0,
        "energy_saved_kwh": saved,
        "energy_saved_pct": saved / one.head_kwh * 100.0 if one.head_kwh > 0 else None,
    }


def _rows(s: TruthSummary) -> list[tuple[str, float | None, str]]:
    """(quantity, value, format) of one run's column."""
    return [
        ("bus-minutes outside Range A", s.bus_minutes_outside_a, "{:.1f}"),
        ("  above Range A", s.bus_minutes_above_a, "{:.1f}"),
        ("  below Range A", s.bus_minutes_below_a, "{:.1f}"),
        ("tap operations", s.tap_operations, "{:.0f}"),
        ("capacitor operations", s.cap_operations, "{:.0f}"),
        ("tap + cap operations", switching_ops(s), "{:.0f}"),
        ("feeder-head energy, net [kWh]", s.head_kwh, "{:,.1f}"),
        ("losses [kWh]", s.loss_kwh, "{:,.1f}"),
        ("mean voltage [pu]", s.v_mean_pu, "{:.4f}"),
        ("mean voltage [V, 120 V base]", None if s.v_mean_pu is None else s.v_mean_pu * 120, "{:.2f}"),
        ("highest voltage [pu]", None if s.v_max is None else s.v_max.pu, "{:.4f}"),
        ("lowest voltage [pu]", None if s.v_min is None else s.v_min.pu, "{:.4f}"),
    ]


def format_table(runs: Mapping[int, TruthSummary], notes: Mapping[int, str] | None = None) -> str:
    """The runs side by side, the ratios to run 1, the targets and CVR's effect, as aligned text."""
    order = sorted(runs)
    if not order:
        return "no runs"
    cols = [f"run {n} ({RUNS[n].name})" for n in order]
    ratio_cols = [f"run {n} / run 1" for n in order if n != 1 and 1 in runs]
    header = ["", *cols, *ratio_cols]
    body: list[list[str]] = []
    rows = {n: _rows(runs[n]) for n in order}
    for k, (name, _, fmt) in enumerate(rows[order[0]]):
        line = [name]
        for n in order:
            value = rows[n][k][1]
            line.append("-" if value is None else fmt.format(value))
        if 1 in runs:
            for n in order:
                if n == 1:
                    continue
                r = _ratio(rows[n][k][1], rows[1][k][1])
                line.append("-" if r is None else f"{r:.3f}")
        body.append(line)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in [header, *body]]  # fmt: skip
    s0 = runs[order[0]]
    lo, hi = RANGE_A_PU
    text.append("")
    text.append(f"{s0.duration_s / 3600:.2f} h simulated per run ({s0.steps} steps of {s0.step_s:g} s); buses judged: "
                f"{' '.join(s0.buses)}; ANSI C84.1 Range A {lo * 120:.0f}..{hi * 120:.0f} V (Table 1)")  # fmt: skip
    for n in order:
        late = runs[n].late_steps
        note = (notes or {}).get(n, "")
        text.append(f"run {n}: {RUNS[n].what}; bench steps late {'-' if late is None else late}"
                    + (f"; {note}" if note else ""))  # fmt: skip
    targets = judge(runs)
    if targets:
        text.append("")
        for t in targets:
            verdict = {True: "MET", False: "MISSED", None: "not judged"}[t.met]
            text.append(f"{verdict:<10}  {t.text}")
            text.append(f"{'':<10}  {t.detail}")
    if 1 in runs and 3 in runs:
        e = cvr_effect(runs[1], runs[3])
        if e["v_reduction_pu"] is not None:
            text.append(f"{'CVR':<10}  mean voltage {e['v_reduction_pu']:.4f} pu lower ({e['v_reduction_v']:.2f} V, "
                        f"{e['v_reduction_pct']:.2f} %); head energy saved {e['energy_saved_kwh']:,.1f} kWh "
                        + ("" if e["energy_saved_pct"] is None else f"({e['energy_saved_pct']:.2f} %)"))  # fmt: skip
    return "\n".join(text)


def verdict(targets: Sequence[Target]) -> int:
    """0: every judged target met (or none judged); 1: one missed."""
    return 1 if any(t.met is False for t in targets) else 0


# ---- the parts: each its own process --------------------------------------------------------------------------


def free_port(used: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in used:
            used.add(port)
            return port


def wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:g} s")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _sub(pattern: str, repl: str, text: str, count: int, what: str) -> str:
    out, n = re.subn(pattern, repl, text)
    if n != count:
        raise RuntimeError(f"{what}: {pattern!r} matched {n} times, expected {count} (the shipped file changed)")
    return out


def bench_config(workdir: Path, start_h: float, ports: dict[int, int], used: set[int]) -> Path:
    """config/sim-ieee13-day.toml with free ports (``ports``: shipped -> new, filled here), absolute paths, the
    RS-485 link in ``workdir`` and the day started at ``start_h`` (the day's profiles follow the time of day)."""
    text = DAY_BENCH.read_text()

    def port(m: re.Match[str]) -> str:
        ports[int(m.group(1))] = new = free_port(used)
        return f"port = {new}"

    text = re.sub(r"(?m)^port = (\d+)", port, text)
    text = text.replace('map = "maps/', f'map = "{ROOT / "config" / "maps"}/')
    text = _sub(r'dss = "ieee13/', f'dss = "{ROOT / "config" / "ieee13"}/', text, 1, "bench dss")
    text = _sub(r'link = "\.\./run/rtu-day-bus1"', f'link = "{workdir / "rtu-day-bus1"}"', text, 1, "bench link")
    start = datetime.fromisoformat(DAY_START).timestamp() + start_h * 3600.0
    text = _sub(f'start = "{DAY_START}"', f'start = "{iso(start)}"', text, 1, "bench start")
    path = workdir / "bench.toml"
    path.write_text(text)
    return path


def agent_config(workdir: Path, kind: RunKind, ports: Mapping[int, int], *, speed: float, sim_start: float,
                 wall_start: float) -> Path:  # fmt: skip
    """config/agent-day.toml pointed at this run's bench (``ports``: the bench's shipped -> new ports), its store
    and RS-485 link in ``workdir``, its clock on the bench's (``sim_start`` at the wall instant ``wall_start``),
    and the run's modes: ``[control] mode`` and ``[control.cvr] enabled`` (the lines marked "harness:")."""
    text = DAY_AGENT.read_text()

    def port(m: re.Match[str]) -> str:
        shipped = int(m.group(1))
        if shipped not in ports:
            raise RuntimeError(f"agent-day.toml: port {shipped} is not a port of the day bench")
        return f"port = {ports[shipped]}"

    text = re.sub(r"(?m)^port = (\d+)", port, text)
    text = text.replace('map = "maps/', f'map = "{ROOT / "config" / "maps"}/')
    text = text.replace('serial_port = "../run/rtu-day-bus1"', f'serial_port = "{workdir / "rtu-day-bus1"}"')
    text = _sub(r'(?m)^path = "\.\./run/agent-day\.db"', f'path = "{workdir / "agent.db"}"', text, 1, "agent store")
    clock = f'speed = {speed:g}\nstart = "{iso(sim_start)}"\nwall_start = "{iso(wall_start)}"'
    text = _sub(r'(?m)^speed = \d+.*\nstart = "[^"]*"', clock, text, 1, "agent [clock]")
    text = _sub(r'(?m)^mode = "monitor"( +# harness:)', rf'mode = "{kind.mode}"\1', text, 1, "[control] mode")
    cvr = "true" if kind.cvr else "false"
    text = _sub(r"(?m)^enabled = false( +# harness:)", rf"enabled = {cvr}\1", text, 1, "[control.cvr] enabled")
    path = workdir / "agent.toml"
    path.write_text(text)
    return path


@dataclass
class Parts:
    """The processes of one run, each in its own process group (the bench's socat goes with the bench)."""

    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, cwd=self.workdir, stdout=log, stderr=log, start_new_session=True)
        self.procs[name] = proc
        return proc

    def gridedge(self, name: str, *args: str) -> subprocess.Popen:
        return self.start(name, [sys.executable, "-m", "gridedge", *args])

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def stop(self, name: str, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL to what the process's group left behind; the exit code."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        return code

    def stop_all(self) -> None:
        for name in list(self.procs)[::-1]:
            self.stop(name, 10.0)

    def tail(self, name: str, n: int = 2000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""


def start_broker(parts: Parts, used: set[int]) -> str:
    port = free_port(used)
    conf = parts.workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 100000\nmax_inflight_messages 100\nlog_dest stderr\n"
                    "log_type error\nlog_type warning\n")  # fmt: skip
    parts.start("mosquitto", ["mosquitto", "-c", str(conf)])
    wait_port(port, 10)
    return f"mqtt://127.0.0.1:{port}"


def wait_bench_up(truth: Path, bench: subprocess.Popen, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if bench.poll() is not None:
            raise RuntimeError(f"the bench exited with {bench.returncode} before it was up")
        if truth.exists():
            for rec in read_records(truth):
                if rec["record"] == "bench_up" and rec.get("pid") == bench.pid:
                    return rec
                break
        time.sleep(0.1)
    raise TimeoutError(f"no bench_up record in {truth} after {timeout_s:g} s")


def bench_lag(truth: Path, speed: float) -> str:
    """The bench's worst step delay (its ``bench_down`` record), in wall and in simulated seconds."""
    for rec in read_records(truth):
        if rec["record"] == "bench_down":
            lag = float(rec.get("max_lag_s") or 0.0)
            text = f"bench max lag {lag:.3f} s ({lag * speed:.1f} simulated s)"
            if lag * speed > MAX_LAG_SIM_S:
                text += " FELL BEHIND (the agent's clock ran ahead of the bench's): try a lower --speed"
            return text
    return "no bench_down record"


def wait_bench_done(bench: subprocess.Popen, parts: Parts, wall_s: float,
                    every_s: Callable[[], None] | None = None) -> None:  # fmt: skip
    """Until the bench has played its window (``wall_s`` of wall time; 1.5 x that and 2 min more at most), the
    agent running throughout; ``every_s`` is called each second. Raises naming the part that failed."""
    deadline = time.monotonic() + wall_s * 1.5 + 120
    while bench.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the bench did not finish its window in 1.5 x its wall time")
        if not parts.alive("agent"):
            raise RuntimeError(f"the agent exited:\n{parts.tail('agent')}")
        if every_s is not None:
            every_s()
        time.sleep(1.0)
    if bench.returncode != 0:
        raise RuntimeError(f"the bench exited with {bench.returncode}:\n{parts.tail('bench')}")


def control_decisions(db: Path, until: float | None = None) -> Counter[str]:
    """The agent's control decisions by ``function:rule:outcome`` (its ``control`` stream), those taken up to
    ``until`` (the bench's last step: after it the agent only sees the bench gone)."""
    if not db.exists():
        return Counter()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT data FROM events WHERE stream = 'control'").fetchall()
    except sqlite3.Error:
        return Counter()
    finally:
        con.close()
    out: Counter[str] = Counter()
    for (data,) in rows:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            d = json.loads(data)
            if until is not None and float(d.get("ts", 0.0)) > until:
                continue
            out[f"{d.get('function')}:{d.get('rule')}:{d.get('outcome') or d.get('verdict')}"] += 1
    return out


def agent_keeping_up(status: Path) -> str:
    """From the agent's status file: polls skipped because a cycle overran, and devices failing."""
    try:
        data = json.loads(status.read_text())
    except (OSError, ValueError):
        return "no agent status"
    devices = data.get("devices") or {}
    items = devices.items() if isinstance(devices, dict) else ((d.get("name"), d) for d in devices)
    missed, polls, failing = 0, 0, []
    for name, d in items:
        if not isinstance(d, dict):
            continue
        stats = d.get("stats", d)
        missed += int(stats.get("missed_slots", 0) or 0)
        polls += int(stats.get("polls", 0) or 0)
        if stats.get("consecutive_failures"):
            failing.append(str(name))
    share = missed / (missed + polls) * 100 if missed + polls else 0.0
    text = f"agent polls {polls}, slots missed {missed} ({share:.1f} %)" + (
        f", failing {', '.join(failing)}" if failing else ""
    )
    control = data.get("control") or {}
    functions = control.get("functions") or {}
    if functions:
        text += f"; control {control.get('mode')}: {control.get('cycles', 0)} cycles of " + ", ".join(
            f"{k} ({v.get('mode')})" for k, v in functions.items() if isinstance(v, dict)
        )
    return text


@dataclass
class RunResult:
    kind: RunKind
    truth: Path
    summary: TruthSummary | None
    note: str
    error: str | None = None


def run_one(kind: RunKind, out: Path, *, speed: float, hours: tuple[float, float]) -> RunResult:
    """One run of the day window: broker, central, bench, agent; the bench's truth log judged when it stops."""
    workdir = out / f"run{kind.number}"
    truth = out / f"run{kind.number}.jsonl"
    # A previous run's files must go: its truth log would be read as this bench's (its clock), its agent store
    # would carry the envelope's spent budgets and suspensions into this run.
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    truth.unlink(missing_ok=True)
    truth.with_suffix(".json").unlink(missing_ok=True)
    used: set[int] = set()
    ports: dict[int, int] = {}
    parts = Parts(workdir)
    sim_s = (hours[1] - hours[0]) * 3600.0
    note = ""
    try:
        broker = start_broker(parts, used)
        (workdir / "central.toml").write_text(f'[broker]\nurl = "{broker}"\n\n[store]\ndb = "central.db"\n'
                                              f'\n[ingest]\nstatus_file = "central-status.json"\n')  # fmt: skip
        parts.gridedge("central", "central", "run", "--config", str(workdir / "central.toml"))
        bench_toml = bench_config(workdir, hours[0], ports, used)
        bench = parts.gridedge("bench", "sim", "run", "--config", str(bench_toml), "--speed", f"{speed:g}",
                               "--sim-seconds", f"{sim_s:g}", "--truth", str(truth))  # fmt: skip
        up = wait_bench_up(truth, bench, 120)
        agent_toml = agent_config(workdir, kind, ports, speed=speed, sim_start=float(up["sim_start"]),
                                  wall_start=float(up["wall"]))  # fmt: skip
        parts.gridedge("agent", "run", "--config", str(agent_toml), "--broker", broker)
        status = workdir / "agent.db.status.json"
        print(f"run {kind.number} ({kind.name}): bench up (pid {up['pid']}), agent started; "
              f"{sim_s / speed / 60:.1f} min of wall time at speed {speed:g}", file=sys.stderr, flush=True)  # fmt: skip

        def keep_status() -> None:
            with contextlib.suppress(OSError):
                seen = status.read_bytes()
                if bench.poll() is None:  # written while the bench still ran: not the agent seeing it gone
                    (workdir / "agent-status-last.json").write_bytes(seen)

        wait_bench_done(bench, parts, sim_s / speed, every_s=keep_status)
        parts.stop("agent")
        summary = _summary(truth)
        note = bench_lag(truth, speed) + "; " + agent_keeping_up(workdir / "agent-status-last.json")
        decisions = control_decisions(workdir / "agent.db", None if summary is None else summary.end_ts)
        if decisions:
            note += "; decisions " + ", ".join(f"{k} {v}" for k, v in sorted(decisions.items()))
        elif kind.mode != "monitor":
            note += "; no control decisions recorded"
    except (OSError, RuntimeError, TimeoutError) as err:
        return RunResult(kind, truth, _summary(truth), note, error=str(err))
    finally:
        parts.stop_all()
    return RunResult(kind, truth, summary, note)


def _summary(truth: Path) -> TruthSummary | None:
    if not truth.exists():
        return None
    s = summarise(read_records(truth))
    (truth.with_suffix(".json")).write_text(json.dumps(s.to_json(), indent=1) + "\n")
    return s if s.steps else None


# ---- command line ----------------------------------------------------------------------------------------------


def _runs(text: str) -> list[int]:
    try:
        runs = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: a list of run numbers such as 1,2,3") from err
    if not runs or not set(runs) <= set(RUNS):
        raise argparse.ArgumentTypeError(f"{text!r}: runs are 1, 2 and 3")
    return runs


def _hours(text: str) -> tuple[float, float]:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*", text)
    if not m or not 0 <= float(m.group(1)) < float(m.group(2)) <= 24:
        raise argparse.ArgumentTypeError(f"{text!r}: a window of the day A-B in hours, 0 <= A < B <= 24")
    return float(m.group(1)), float(m.group(2))


def _speed(text: str) -> float:
    value = float(text)
    if not 0 < value <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r}: simulated seconds per wall second, > 0")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=_runs, default=[1, 2, 3], help="which runs, e.g. 1,2,3 (default all three)")
    p.add_argument("--speed", type=_speed, default=DEFAULT_SPEED,
                   help=f"simulated seconds per wall second (default {DEFAULT_SPEED:g})")  # fmt: skip
    p.add_argument("--hours", type=_hours, default=(0.0, 24.0), help="a window of the day, A-B in hours (default 0-24)")
    p.add_argument("--out", type=Path, default=ROOT / "run" / "control-day", help="truth logs, logs and the table")
    p.add_argument("--table-only", action="store_true", help="no runs: the table from the truth logs in --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    summaries: dict[int, TruthSummary] = {}
    notes: dict[int, str] = {}
    failed = False
    for n in args.runs:
        if args.table_only:
            s = _summary(out / f"run{n}.jsonl")
            if s is not None:
                summaries[n] = s
            continue
        result = run_one(RUNS[n], out, speed=args.speed, hours=args.hours)
        if result.summary is not None:
            summaries[n] = result.summary
        notes[n] = result.note
        if result.error:
            failed = True
            notes[n] = f"FAILED: {result.error.splitlines()[0]}" + (f"; {result.note}" if result.note else "")
            print(f"run {n} failed: {result.error}", file=sys.stderr)
    table = format_table(summaries, notes)
    if not args.table_only:
        table = (f"closed-loop day, hours {args.hours[0]:g}-{args.hours[1]:g}, speed {args.speed:g}, "
                 f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n{table}")  # fmt: skip
    print(table)
    (out / "table.txt").write_text(table + "\n")
    if failed:
        return 2
    return verdict(judge(summaries))


if __name__ == "__main__":
    sys.exit(main())
