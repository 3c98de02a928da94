"""``gridedge status``: whether the agent runs, and its status file as an operator reads it.

The running agent replaces ``<store>.status.json`` every ``status_interval_s`` (agent/service.py). Whether
it still runs is judged from that file alone, with no request to the agent:

- ``running`` false: the agent stopped cleanly (the last thing its stop does is write that file);
- its ``pid`` gone (or a zombie): killed (SIGKILL, OOM) or crashed, so it could not say it stopped;
- ``ts`` older than :data:`STALE_INTERVALS` status intervals while the pid exists: not responding (hung,
  or the pid now belongs to another process).

The text rounds for people (the ``--json`` output keeps every figure as the agent wrote it) and shows each
part with its last error: devices, PMU streams, PQ streams, the uplink; and the feeder's voltages by bus and
phase against ANSI C84.1 (docs/monitoring.md); control (docs/control.md): the global mode, each function's
mode and last decision, each commanded device's wear budgets left and whether it is held or suspended, and why.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

STALE_INTERVALS = 5  # status intervals without a new file before the agent counts as not responding
MIN_STALE_S = 5.0  # and never less than this, so a loaded machine's late write is not taken for a hang

# counters shown when not zero: (key in the status file, label)
DEVICE_COUNTERS = (("timeouts", "timeouts"), ("connection_errors", "link errors"), ("exceptions", "exceptions"),
                   ("frame_errors", "bad frames"), ("decode_errors", "decode errors"))  # fmt: skip
PMU_COUNTERS = (("late", "late"), ("bad_data", "bad data"), ("frame_errors", "bad frames"),
                ("reconnects", "reconnects"), ("triggers", "events"))  # fmt: skip
PQ_COUNTERS = (("gaps", "gaps"), ("bad_frames", "bad frames"), ("reconnects", "reconnects"), ("events", "events"),
               ("config_errors", "config errors"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class AgentState:
    """What the status file says of the agent itself: ``running`` and one line saying why."""

    running: bool
    text: str


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists on this machine and is not a zombie (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):  # no /proc (not Linux): os.kill's answer stands
        return True


def agent_state(status: dict[str, Any], now: float, alive: Callable[[int], bool] = pid_alive) -> AgentState:
    """Is the agent that wrote ``status`` running at ``now`` (s UTC)? See the module docstring for the rules."""
    ts = float(status.get("ts") or 0.0)
    age = now - ts
    seen = f"last seen {_ago(age)} ago ({_utc(ts)})"
    pid = status.get("pid")
    if status.get("running") is False:
        return AgentState(False, f"NOT RUNNING: stopped cleanly {_ago(age)} ago ({_utc(ts)})")
    if isinstance(pid, int) and not alive(pid):
        return AgentState(
            False, f"NOT RUNNING: process {pid} is gone without stopping cleanly (killed or crashed); {seen}"
        )
    interval = float(status.get("status_interval_s") or 1.0)
    stale_after = max(STALE_INTERVALS * interval, MIN_STALE_S)
    if age > stale_after:
        if isinstance(pid, int):
            why = f"process {pid} exists but has not written its status for {_ago(age)} (hung?)"
        else:
            why = f"no status written for {_ago(age)}"
        return AgentState(False, f"NOT RESPONDING: {why}; {seen}")
    up = f", up {_ago(now - float(status['started_ts']))}" if status.get("started_ts") else ""
    who = f"pid {pid}{up}, " if isinstance(pid, int) else ""
    return AgentState(True, f"running ({who}status {_ago(max(age, 0.0))} old)")


def status_text(status: dict[str, Any], state: AgentState, now: float) -> str:
    """The status file for people: the agent's state, then the uplink, the store and each part."""
    lines = [f"agent {status.get('site')}: {state.text}"]
    if not state.running:
        lines.append("  (the figures below are the last the agent wrote)")
    lines += _uplink(status)
    lines += _devices(status.get("devices") or {}, _agent_now(status, now), live=state.running)
    lines += _pmus(status.get("pmus") or {}, now)
    lines += _pq(status.get("pq") or {}, status.get("pq_worker"))
    lines += _monitoring(status.get("monitoring"))
    lines += _control(status.get("control"))
    lines += _commands(status.get("commands"), (status.get("control") or {}).get("clock_ts"))
    lines += _serial(status.get("serial_lines") or {})
    lines += _tasks(status.get("tasks") or {})
    return "\n".join(lines)


def _agent_now(status: dict[str, Any], now: float) -> float:
    """``now`` on the agent's clock, which the pollers time their answers by: the system clock, or a bench day
    running at speed ([clock]); the status file says where that clock stood when it was written."""
    clock_ts, ts = status.get("clock_ts"), status.get("ts")
    if isinstance(clock_ts, int | float) and isinstance(ts, int | float):
        return clock_ts + (now - ts)
    return now


# ---- the parts ---------------------------------------------------------------------------------------------


def _uplink(status: dict[str, Any]) -> list[str]:
    store = status.get("store") or {}
    up = status.get("uplink") or {}
    backlog = (store.get("unsealed") or 0) + (store.get("outbox_readings") or 0)
    broker = f" to {status['broker']}" if status.get("broker") else ""
    link = f"connected{broker}" if status.get("connected") else f"NOT CONNECTED{broker}"
    lines = [
        f"uplink: {link}  backlog {backlog} readings  acked {_int(store.get('acked_readings'))}"
        f"  published {_int(up.get('published'))}  resent {_int(up.get('resent'))}"
        f"  ack timeouts {_int(up.get('ack_timeouts'))}"
    ]
    size, cap = store.get("size_bytes"), store.get("max_bytes")
    room = f"  store {size / 1e6:.1f} of {cap / 1e6:.0f} MB" if size is not None and cap else ""
    lines.append(
        f"readings: taken {_int(store.get('readings_taken'))}  queued {_int(status.get('queued'))}"
        f"  dropped {_int(store.get('dropped_readings'))}  refused {_int(status.get('refused'))}{room}"
    )
    return lines


def _devices(devices: dict[str, Any], now: float, *, live: bool = True) -> list[str]:
    """Each device's state and figures; the next try only while the agent runs (a stopped agent tries nothing)."""
    if not devices:
        return []
    width = max(16, *(len(n) for n in devices))
    lines = [f"devices ({len(devices)}):"]
    for name, d in devices.items():
        failing = d.get("consecutive_failures") or 0
        polls, ok = d.get("polls") or 0, d.get("polls_ok") or 0
        state = "FAILING" if failing else ("ok" if ok else "waiting")
        figures = f"polls {polls} ok {ok}" + _counters(d, DEVICE_COUNTERS)
        if failing:
            figures += f"  failed {failing} in a row"
            if live:
                figures += f", next try in {_seconds(d.get('backoff_s'))}"
        elif d.get("last_ok_ts"):
            figures += f"  last answer {_ago(now - d['last_ok_ts'])} ago"
        lines.append(f"  {name:<{width}} {state:<8} {figures}")
        lines += _last_error(d, now, width)
    return lines


def _pmus(pmus: dict[str, Any], now: float) -> list[str]:
    if not pmus:
        return []
    width = max(16, *(len(n) for n in pmus))
    lines = [f"PMU streams ({len(pmus)}):"]
    for name, p in pmus.items():
        if not p.get("connected"):
            state = "DOWN"
        elif p.get("stale"):
            state = "STALE"
        else:
            state = "ok"
        idcode = f"IDCODE {p['idcode']}  " if p.get("idcode") is not None else ""
        figures = f"{idcode}frames {_int(p.get('frames'))}" + _counters(p, PMU_COUNTERS)
        lines.append(f"  {name:<{width}} {state:<8} {figures}")
        lines += _last_error(p, now, width)
    return lines


def _pq(streams: dict[str, Any], worker: dict[str, Any] | None) -> list[str]:
    if not streams and not worker:
        return []
    lines = [f"PQ streams ({len(streams)}):"]
    if worker and worker.get("exits"):
        code = worker.get("last_exit_code")
        lines.append(
            f"  the PQ worker exited {worker['exits']} time(s), last with code {code}; started {worker.get('starts')}"
        )
    width = max(16, *(len(n) for n in streams)) if streams else 16
    for name, q in streams.items():
        state = "ok" if q.get("connected") else "DOWN"
        figures = f"measured {_seconds(q.get('signal_s'))} of signal" + _counters(q, PQ_COUNTERS)
        lines.append(f"  {name:<{width}} {state:<8} {figures}")
        if q.get("last_error"):
            lines.append(f"  {'':<{width}} last error: {q['last_error']}")
    return lines


RANGE_CLASS_TEXT = {"A": "in A", "B": "in B, outside A", "outside_b": "OUTSIDE B"}


def _monitoring(mon: dict[str, Any] | None) -> list[str]:
    """Per bus and phase the value used (pu, V on 120 V), its age, its ANSI C84.1 range, alarms; stale named."""
    if not mon or mon.get("bus_phases") is None:
        return []
    bps: dict[str, Any] = mon["bus_phases"]
    stale: dict[str, Any] = mon.get("stale") or {}
    n_stale = sum(1 for bp in bps.values() if bp.get("stale"))
    lines = [f"voltages (ANSI C84.1, Range {mon.get('range')} alarms; {len(bps)} bus-phases"
             + (f", {n_stale} STALE" if n_stale else "") + "):"]  # fmt: skip
    width = max(10, *(len(k) for k in bps)) if bps else 10
    for key, bp in bps.items():
        eol = " (end of line)" if bp.get("end_of_line") else ""
        if bp.get("stale"):
            why = ", ".join(f"{p} {stale[p]['state']}" for p in bp.get("sources") or [] if p in stale)
            lines.append(f"  {key:<{width}} STALE    no usable source{': ' + why if why else ''}{eol}")
            continue
        alarms = bp.get("alarms") or []
        alarm = f"  ALARM {', '.join(alarms)}" if alarms else ""
        state = RANGE_CLASS_TEXT.get(bp.get("range_class") or "", "-")
        lines.append(f"  {key:<{width}} {_pu(bp.get('value_pu'))} pu {_volts(bp.get('value_v'))} V  "
                     f"{_seconds(bp.get('age_s'))} old  {state}{alarm}  from {bp.get('source')}{eol}")  # fmt: skip
    extremes = [(label, mon.get(k)) for label, k in
                (("lowest", "lowest"), ("highest", "highest"), ("lowest end of line", "lowest_end_of_line"))]  # fmt: skip
    shown = [f"{label} {x['bus']}/{x['phase']} {_pu(x.get('value_pu'))} pu" for label, x in extremes if x]
    if shown:
        lines.append("  " + "; ".join(shown))
    if stale:
        names = ", ".join(f"{p} ({s.get('state')}" + (f", {_seconds(s.get('age_s'))} old)" if s.get("age_s")
                          is not None else ")") for p, s in stale.items())  # fmt: skip
        lines.append(f"  stale: {names}")
    return lines


BUDGET_TEXT = {"cap_ops_per_day": "ops/day", "taps_per_day": "taps/day",
               "setpoint_changes_per_hour": "set-point changes/hour"}  # fmt: skip


def _control(ctl: dict[str, Any] | None) -> list[str]:
    """Global mode; per function its mode and last decision (time, rule, action, outcome); per device the wear
    left, held (by whom, why) and suspensions (why, how to clear). Times on the agent's clock (``clock_ts``)."""
    if not ctl:
        return []
    env: dict[str, Any] = ctl.get("envelope") or {}
    now = ctl.get("clock_ts")
    counts = ", ".join(f"{k} {v}" for k, v in sorted((env.get("decisions") or {}).items()))
    beats = f"  heartbeats {env.get('heartbeats', 0)}" + (f" ({env['heartbeat_failures']} failed)"
                                                          if env.get("heartbeat_failures") else "")  # fmt: skip
    lines = [f"control: mode {ctl.get('mode')}  cycles {_int(ctl.get('cycles'))}  decisions: {counts or 'none'}{beats}"]
    running: dict[str, Any] = ctl.get("functions") or {}
    modes: dict[str, str] = {**(env.get("functions") or {}), **{n: f.get("mode") for n, f in running.items()}}
    last: dict[str, Any] = env.get("last_decisions") or {}
    width = max(12, *(len(n) for n in modes)) if modes else 12
    for name, mode in modes.items():
        f = running.get(name)
        if f is None or mode == "monitor":
            lines.append(f"  {name:<{width}} mode {mode:<8} makes no decisions")
            continue
        where = f"on {', '.join(f.get('devices') or [])}, every {_seconds(f.get('cadence_s'))}"
        lines.append(f"  {name:<{width}} mode {mode:<8} {where}")
        d = last.get(name)
        if d is None:
            lines.append(f"  {'':<{width}} no decision yet")
            continue
        ago = f"{_ago(max(0.0, now - d['ts']))} ago, " if isinstance(now, int | float) else ""
        verdict = f", {d['verdict']}" if str(d.get("verdict", "")).startswith("refused:") else ""
        action = d.get("action") or "no command"
        lines.append(f"  {'':<{width}} last decision {ago}{_utc(d['ts'])}: rule {d.get('rule')}, "
                     f"{action} on {d.get('device')} -> {d.get('outcome')}{verdict}")  # fmt: skip
    devices: dict[str, Any] = env.get("devices") or {}
    if devices:
        lines.append("  commanded devices:")
    dwidth = max(12, *(len(n) for n in devices)) if devices else 12
    for dev, s in devices.items():
        budgets = s.get("budgets") or {b: {"left": v} for b, v in (s.get("budgets_left") or {}).items()}
        wear = ", ".join(f"{BUDGET_TEXT.get(b, b)} {_int(v.get('left'))}" + (f" of {v['limit']}" if v.get("limit")
                         is not None else "") for b, v in budgets.items())  # fmt: skip
        state = "HELD" if s.get("held") else "autonomous"
        lines.append(f"    {dev:<{dwidth}} {state:<10} wear left: {wear or 'no budget'}")
        if s.get("held"):
            since = s.get("held_since")
            for_s = f" for {_ago(max(0.0, now - since))}" if isinstance(now, int | float) and since else ""
            beat = f"; heartbeat every {_seconds(s['heartbeat_s'])}" if s.get("heartbeat_s") else "; no heartbeat"
            lines.append(f"    {'':<{dwidth}} held out of its autonomous state by {s.get('held_by') or '?'}{for_s} "
                         f"({s.get('held_reason') or 'commanded'}{beat})")  # fmt: skip
        for fn, sus in (s.get("suspended") or {}).items():
            lines.append(f"    {'':<{dwidth}} SUSPENDED {fn} since {_utc(sus['since'])}: {sus.get('reason')} "
                         f"(an operator clears it: gridedge control clear {fn} {dev} --config SITE)")  # fmt: skip
    return lines


def _commands(cmd: dict[str, Any] | None, now: Any) -> list[str]:
    """Commands from central: what came and what became of it, the refusals by reason, what is in force and until
    when, and how long central has been unheard (docs/commands.md). Key ids only, never a key."""
    if not cmd:
        return []
    c = cmd.get("counts") or {}
    unheard = cmd.get("unheard_s")
    link = (
        "LINK LOST: holds ended, devices autonomous"
        if cmd.get("link_lost")
        else (f"central heard {_ago(unheard)} ago" if isinstance(unheard, int | float) else "central not heard yet")
    )
    lines = [f"commands: {_int(c.get('received'))} received, {_int(c.get('applied'))} applied, "
             f"{_int(c.get('refused'))} refused, {_int(c.get('failed'))} failed; {link} "
             f"(fallback after {_seconds(cmd.get('link_loss_s'))})"]  # fmt: skip
    refusals = cmd.get("refusals") or {}
    if refusals:
        lines.append("  refused: " + ", ".join(f"{k} {v}" for k, v in sorted(refusals.items())))
    lines.append(f"  trusted keys: {', '.join(cmd.get('trusted_keys') or []) or 'none'}"
                 + (f"; revoked: {', '.join(cmd['revoked_keys'])}" if cmd.get("revoked_keys") else ""))  # fmt: skip
    for slot, s in (cmd.get("in_force") or {}).items():
        until = s.get("until")
        left = (
            f", {_ago(max(0.0, until - now))} left"
            if isinstance(until, int | float) and isinstance(now, int | float)
            else ""
        )
        when = f"until {_utc(until)}{left}" if isinstance(until, int | float) else "until reverted"
        value = f", now {s['value_now']}" if "value_now" in s else ""
        lines.append(f"  in force: {slot} ({s.get('kind')}) {when}{value}; command {s.get('command_id')}")
    return lines


def _pu(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, int | float) and math.isfinite(x) else "-"


def _volts(x: Any) -> str:
    return f"{x:.1f}" if isinstance(x, int | float) and math.isfinite(x) else "-"


def _serial(buses: dict[str, Any]) -> list[str]:
    out = []
    for port, bus in buses.items():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted((bus.get("last_transactions") or {}).items()))
        flushed = _int(bus.get("flushed_bytes"))
        out.append(f"serial line {port} {bus.get('settings')}: recent {outcomes or 'none'}, bytes flushed {flushed}")
    return out


def _tasks(tasks: dict[str, str]) -> list[str]:
    """``tasks: all 22 running``, or the count running and the others named by state (all of a state: counted)."""
    if not tasks:
        return []
    by_state: dict[str, list[str]] = {}
    for name, state in tasks.items():
        by_state.setdefault(state, []).append(name)
    if len(by_state) == 1:
        return [f"tasks: all {len(tasks)} {next(iter(by_state))}"]
    running = len(by_state.pop("running", []))
    others = "; ".join(f"{state}: {', '.join(names)}" for state, names in by_state.items())
    return [f"tasks: {running} of {len(tasks)} running; {others}"]


def _counters(d: dict[str, Any], table: tuple[tuple[str, str], ...]) -> str:
    """`` timeouts 4 link errors 2``: the counters of ``table`` that are not zero, with their labels."""
    return "".join(f" {label} {d[key]}" for key, label in table if d.get(key))


def _last_error(d: dict[str, Any], now: float, width: int) -> list[str]:
    if not d.get("last_error"):
        return []
    when = f" ({_ago(now - d['last_error_ts'])} ago)" if d.get("last_error_ts") else ""
    return [f"  {'':<{width}} last error{when}: {d['last_error']}"]


# ---- numbers for people ---------------------------------------------------------------------------------------


def _int(x: Any) -> str:
    return "-" if x is None else str(x)


def _seconds(x: Any) -> str:
    """``8.1 s``, ``42 s``, ``3 min 12 s``: one decimal below ten seconds, whole seconds above."""
    if not isinstance(x, int | float) or not math.isfinite(x):
        return "-"
    return _ago(x)


def _ago(s: float) -> str:
    """A duration rounded for people: ``0.4 s``, ``42 s``, ``3 min 12 s``, ``2 h 05 min``, ``3 d 4 h``."""
    if s < 10:
        return f"{s:.1f} s"
    s = round(s)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
