"""``gridedge central dispatch [run|status] --config FILE ...``: solve the schedule, print it (``--dry-run``) or send
its current interval as signed commands (``--once``, or every interval until stopped), and report whether each
site follows (docs/dispatch.md).

Exit codes: 0 done (``status``: every site following); 1 no schedule keeps the limits (infeasible), or a site not
following (``status``), or a command not applied (``--once``); 2 bad arguments, configuration or inputs; 3 runtime
failure (no broker, the store).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from central.commands import CommandError, CommandIssuer, Outcome
from central.config import CentralConfig
from central.dispatch.clock import ClockError, DispatchClock, make_clock
from central.dispatch.config import DispatchConfig
from central.dispatch.inputs import (
    Forecast,
    InputError,
    current_start,
    forecast_csv,
    forecast_db,
    horizon,
    parse_time,
    prices_csv,
)
from central.dispatch.network import NetworkError, NetworkModel
from central.dispatch.nowcast import Nowcast, Planned, smoothed
from central.dispatch.optimise import InfeasibleError, Solution, evaluate, solve
from central.dispatch.plan import Step, build_problem, network_for, refine, schedule
from central.dispatch.runs import DispatchRun, record_run
from central.dispatch.send import DispatchSendError, Outputs, dispatch_key, outputs, send_step, write_schedules
from central.dispatch.status import SiteFollowing, following, status_table
from central.dispatch.trim import head_scheduled_kwh, trim
from central.settlement.db import open_settlement_db
from central.store import CentralStoreError, Store, open_store
from protocols.eventlog import EventLog, setup_logging
from protocols.mqtt.session import MqttSession

log = EventLog("central.dispatch")
EXIT_OK, EXIT_NOT_OK, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3
LEAD_WALL_S = 5.0  # the next interval is solved this long (wall) before it begins, at most a third of it early


def _instant(text: str | None, where: str) -> float | None:
    """Epoch seconds (fractions kept) or ISO-8601 UTC; None when absent."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return float(parse_time(text, where))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _err(text: str) -> int:
    print(f"gridedge central dispatch: {text}", file=sys.stderr)
    return EXIT_USAGE


def dispatch_command(args: argparse.Namespace, config: CentralConfig) -> int:
    cfg = config.dispatch
    if cfg is None:
        return _err(f"{config.source}: no [dispatch] section (docs/dispatch.md, 'Configuration')")
    if args.timeout is not None and not 0 < args.timeout <= 3600:
        return _err(f"--timeout = {args.timeout:g}: seconds in (0, 3600]")
    if args.action == "status":
        return _status(args, config, cfg)
    if args.dry_run and args.once:
        return _err("--dry-run and --once: give one (--dry-run sends nothing)")
    try:
        now = parse_time(args.now, "--now") if args.now is not None else None
        clock = make_clock(args.clock_speed, _instant(args.clock_start, "--clock-start"),
                           _instant(args.clock_wall_start, "--clock-wall-start"))  # fmt: skip
        model = network_for(cfg)
    except (InputError, NetworkError, ClockError) as err:
        return _err(str(err))
    if args.dry_run:
        try:
            steps, sol, base = plan_once(cfg, config, model, args, now)
        except (InputError, NetworkError) as err:
            return _err(str(err))
        except InfeasibleError as err:
            log.error("dispatch_infeasible", reason=err)
            print(f"gridedge central dispatch: {err}", file=sys.stderr)
            return EXIT_NOT_OK
        print(schedule_table(cfg, steps, sol, base))
        return EXIT_OK
    setup_logging("info", stream=sys.stderr)
    try:
        key = dispatch_key(cfg, config.commands)
    except DispatchSendError as err:
        return _err(str(err))
    try:
        return asyncio.run(_run(args, config, cfg, model, key.key_id, now, clock))
    except (InputError, NetworkError, CommandError, DispatchSendError) as err:
        return _err(str(err))
    except (CentralStoreError, sqlite3.Error, TimeoutError) as err:
        print(f"gridedge central dispatch: {err or type(err).__name__}", file=sys.stderr)
        return EXIT_RUNTIME


def plan_once(cfg: DispatchConfig, config: CentralConfig, model: NetworkModel, args: argparse.Namespace,
              now: float | None, banks_now: dict[str, bool] | None = None,
              adjust: Callable[[Forecast], Forecast] | None = None
              ) -> tuple[list[Step], Solution, Solution]:  # fmt: skip
    """Read the inputs, solve, and return the schedule with its solution and the no-dispatch baseline.
    ``adjust``: what the round changes in the forecast before solving (the nowcast)."""
    forecast = read_forecast(cfg, config, args, now)
    if adjust is not None:
        forecast = adjust(forecast)
    price = read_prices(cfg, args, forecast.starts)
    problem = build_problem(cfg, model, forecast, price, banks_now)
    t0 = time.perf_counter()
    sol = refine(cfg, model, forecast, solve(problem), cfg.refine_passes)
    sol = replace(sol, solve_s=time.perf_counter() - t0)
    base = evaluate(problem)
    log.info("dispatch_solved", intervals=len(problem.starts), first=_iso(problem.starts[0]), cost=round(sol.cost.sum(), 2),
             baseline_cost=round(base.cost.sum(), 2), solve_s=round(sol.solve_s, 3))  # fmt: skip
    return schedule(cfg, sol), sol, base


Rows = Sequence[tuple[float, object, str]]


def nowcasted(nowcast: Nowcast, forecast: Forecast, head_rows: Rows, pv_rows: dict[str, Rows], at: float,
              interval_s: int) -> tuple[Forecast, dict[int, tuple[float, float]]]:  # fmt: skip
    """The forecast with the nowcast's corrections (the load's, each load's power factor kept; the PV factor), and
    per interval start (load correction [kW], PV factor); the forecast as it is when there is none to make (the
    log says why)."""
    spec = nowcast.spec
    if spec.smooth_intervals > 1:  # the model's interval-to-interval scatter is not the loads' (docs/dispatch.md)
        load_s = smoothed(forecast.load_kw, spec.smooth_intervals)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(forecast.load_kw > 0, load_s / forecast.load_kw, 1.0)
        forecast = replace(forecast, load_kw=load_s, load_kvar=forecast.load_kvar * k)
    try:
        c = nowcast.correction(head_rows, pv_rows, at, interval_s, forecast.starts, forecast.load_kw, forecast.pv_kw)
    except ValueError as err:
        log.info("dispatch_nowcast", site=spec.site, point=spec.point, applied=False, why=str(err))
        return forecast, {}
    load = np.maximum(forecast.load_kw + c.load_kw, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(forecast.load_kw > 0, load / forecast.load_kw, 1.0)
    log.info("dispatch_nowcast", site=spec.site, point=spec.point, applied=True, error_kw=round(c.error_kw, 1),
             measured_kw=round(c.measured_kw, 1), predicted_kw=round(c.predicted_kw, 1), readings=c.readings,
             next_kw=round(float(c.load_kw[0]), 1), pv_factor=round(c.pv_factor_now, 3),
             pv_measured_kw=None if c.pv_measured_kw is None else round(c.pv_measured_kw, 1),
             clear_sky_index=None if c.clear_sky_index is None else round(c.clear_sky_index, 3),
             next_pv_kw=None if c.pv_kw is None else round(float(c.pv_kw[0]), 1))  # fmt: skip
    pv = c.pv_kw if c.pv_kw is not None else forecast.pv_kw * c.pv_factor
    out = replace(forecast, load_kw=load, load_kvar=forecast.load_kvar * ratio, pv_kw=pv,
                  source=f"{forecast.source} + nowcast")  # fmt: skip
    return out, {int(s): (float(x), float(f)) for s, x, f in
                 zip(forecast.starts, load - forecast.load_kw, c.pv_factor, strict=True)}  # fmt: skip


def plans_of(cfg: DispatchConfig, sol: Solution, applied: dict[int, tuple[float, float]]) -> list[Planned]:
    """What the nowcast keeps of a round: per interval the predicted head and outputs, the corrections in it."""
    devices = [i.device for _, i in cfg.inverters]
    p, out = sol.problem, sol.p_out_kw
    return [Planned(float(sol.head_kw[t]), {d: float(out[t, n]) for n, d in enumerate(devices)},
                    {d: float(p.avail_kw[t, n]) for n, d in enumerate(devices)},
                    {d: bool(sol.curtail_kw[t, n] > 1e-3) for n, d in enumerate(devices)},
                    *applied.get(int(s), (0.0, 1.0)))
            for t, s in enumerate(p.starts.tolist())]  # fmt: skip


def read_forecast(cfg: DispatchConfig, config: CentralConfig, args: argparse.Namespace, now: float | None) -> Forecast:
    if args.forecast is not None:
        path = Path(args.forecast)
        if now is None and args.dry_run:
            with path.open(encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
            if len(rows) < 2:
                raise InputError(f"{path}: no rows after the header")
            now = parse_time(rows[1][0], f"{path} line 2 start")
        start = current_start(time.time() if now is None else now, cfg.interval_s)
        return forecast_csv(path, horizon(start, cfg.interval_s, cfg.horizon_intervals))
    t = time.time() if now is None else now
    starts = horizon(current_start(t, cfg.interval_s), cfg.interval_s, cfg.horizon_intervals)
    if config.db_path is not None and not config.db_path.exists():  # a dry run creates no store
        raise InputError(f"central's store {config.db_path}: no such file; give --forecast FILE")
    try:
        store = open_store(config.store_target)  # SQLite or PostgreSQL
    except CentralStoreError as err:
        raise InputError(f"{err}; give --forecast FILE to plan without it") from None
    try:
        return forecast_db(store, cfg.feeder, starts, cfg.interval_s, t)
    finally:
        store.close()


def read_prices(cfg: DispatchConfig, args: argparse.Namespace, starts: np.ndarray) -> np.ndarray:
    if args.prices is not None:
        return prices_csv(Path(args.prices), starts)
    if cfg.price_file is not None:
        return prices_csv(cfg.price_file, starts)
    assert cfg.price is not None
    return np.full(len(starts), cfg.price)


def schedule_table(cfg: DispatchConfig, steps: Sequence[Step], sol: Solution, base: Solution) -> str:
    """The dry run's print: a summary, then one line per interval and site."""
    p = sol.problem
    lines = [
        f"dispatch {len(p.starts)} x {p.interval_s // 60} min from {_iso(p.starts[0])}: cost {sol.cost.sum():.2f} "
        f"(no dispatch {base.cost.sum():.2f}), solved in {sol.solve_s * 1000:.0f} ms",
        f"limits: bus voltage {p.v_lo:.3f}..{p.v_hi:.3f} pu on {len(p.nodes)} nodes (ANSI C84.1 Range A less "
        f"{cfg.margin_pu:g} pu); reverse power "
        + ("none" if p.reverse_power_kw is None else f"at most {p.reverse_power_kw:g} kW"),
        f"no dispatch would see {base.v_pred.min():.4f}..{base.v_pred.max():.4f} pu and head "
        f"{base.head_kw.min():.1f}..{base.head_kw.max():.1f} kW",
        "",
        f"{'start':<20} {'site':<10} {'pv limit %':<24} {'var % of kVA':<24} {'cvr':<4} {'caps':<26} {'v_min':>6} "
        f"{'v_max':>6} {'head kW':>9} {'cost':>8}",
    ]  # fmt: skip
    for s in steps:
        lim = " ".join(f"{d}={v:g}" for d, v in s.p_limit_pct.items()) or "-"
        var = " ".join(f"{d}={s.var_pct[d]:g}" if d in s.var_pct else f"{d}=own" for d in s.p_limit_pct) or "-"
        caps = " ".join(f"{d}={'closed' if c else 'open'}" for d, c in s.cap_closed.items()) or "-"
        cvr = "-" if s.cvr_on is None else ("on" if s.cvr_on else "off")
        lines.append(f"{_iso(s.start):<20} {s.site:<10} {lim:<24} {var:<24} {cvr:<4} {caps:<26} {s.v_min_pu:6.4f} "
                     f"{s.v_max_pu:6.4f} {s.head_kw:9.1f} {s.cost:8.2f}")  # fmt: skip
    return "\n".join(lines)


async def _run(args: argparse.Namespace, config: CentralConfig, cfg: DispatchConfig, model: NetworkModel,
               key_id: str, now: float | None, clock: DispatchClock | None = None) -> int:  # fmt: skip
    """The running dispatch: one round now, then each interval solved a little before it begins (``LEAD_WALL_S``)
    and sent when it begins, on ``clock`` (the wall clock, or a bench's scaled clock)."""
    clock = clock or DispatchClock()
    store = open_store(config.store_target)
    db_path = config.store_target  # a SQLite file or a postgresql:// URL: what both seams open
    session = MqttSession(config.broker.session_config(client_id=f"{config.broker.client_id}-dispatch-{uuid.uuid4().hex[:8]}",
                                                       backoff_max_s=min(config.backoff_max_s, 1.0)))  # fmt: skip
    issuer = CommandIssuer(config.commands, store, session)
    for s in cfg.sites:
        issuer.watch(s.site)
    task = asyncio.create_task(session.run(), name="central-dispatch-mqtt")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    timeout = config.commands.result_timeout_s if args.timeout is None else args.timeout
    try:
        await asyncio.wait_for(session.connected.wait(), max(timeout, 10.0))
        banks: dict[str, bool] = {}  # each bank where the last round left it, as far as central knows
        sent: Outputs = {}  # each inverter's output in the interval the last round sent
        rated = {i.device: i.kw for _, i in cfg.inverters}
        nowcast = Nowcast(cfg.nowcast, rated) if cfg.nowcast is not None else None
        send_at: float | None = None  # the first round sends at once
        while True:
            plan_now = clock.now() if now is None else now
            on_time = send_at is not None  # the first round sends at once, part-way through its interval
            rnd = await dispatch_interval(cfg, config, model, args, issuer, db_path, key_id, plan_now, timeout, banks,
                                          send_at=send_at, clock=clock, nowcast=nowcast, store=store,
                                          sent=sent)  # fmt: skip
            outs = rnd.outs
            bad = [o for o in outs if o.status != "applied"]
            print(f"{_iso(clock.now())} sent {len(outs)} command(s): {len(outs) - len(bad)} applied"
                  + "".join(f"; {o.command.audience}/{o.command.target} {o.command.kind} {o.status}"
                            f"{' ' + o.reason if o.reason else ''}" for o in bad), flush=True)  # fmt: skip
            rows = await asyncio.to_thread(_following, cfg, store, db_path, key_id, clock, args.window)
            print(status_table(rows), flush=True)
            if args.once:
                return EXIT_NOT_OK if bad else EXIT_OK
            if cfg.trim_at_s > 0 and on_time and rnd.first:
                wait = clock.wall_seconds(rnd.first[0].start + cfg.trim_at_s - clock.now())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(wait, 0.0))
                if stop.is_set():
                    return EXIT_OK
                await trim_interval(cfg, rnd, store, issuer, key_id, timeout, clock, sent)
            send_at = current_start(clock.now(), cfg.interval_s) + cfg.interval_s
            lead = min(LEAD_WALL_S * clock.speed, cfg.interval_s / 3)
            wait = clock.wall_seconds(send_at - lead - clock.now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(wait, 0.0))
            if stop.is_set():
                return EXIT_OK
            now = send_at
    except InfeasibleError as err:
        log.error("dispatch_infeasible", reason=err)
        print(f"gridedge central dispatch: {err}", file=sys.stderr)
        return EXIT_NOT_OK
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()


async def dispatch_interval(cfg: DispatchConfig, config: CentralConfig, model: NetworkModel, args: argparse.Namespace,
                            issuer: CommandIssuer, db_path: str | Path, key_id: str, now: float | None,
                            timeout_s: float, banks: dict[str, bool], *, send_at: float | None = None,
                            clock: DispatchClock | None = None, nowcast: Nowcast | None = None,
                            store: Store | None = None, sent: Outputs | None = None) -> Round:  # fmt: skip
    """One round: solve from the interval ``now`` is in, store the horizon's scheduled energy and the round's
    record, send that interval's commands (when ``clock`` reads ``send_at``, when given: the interval solved
    ahead goes out as it begins). ``banks`` (each bank's state as the last round left it) is read and updated: a
    bank moves only when its switch was applied. ``nowcast`` (with ``store``, where the head's readings are)
    corrects the load forecast from the head's power and remembers what this round predicts. ``sent`` (read and
    updated): each inverter's output in the interval the round before sent, where the scheduled energy's ramp
    starts."""
    clock = clock or DispatchClock()
    adjust, applied = None, {}
    if nowcast is not None and store is not None:
        at, spec = clock.now(), nowcast.spec
        points = nowcast.pv_points([i.device for _, i in cfg.inverters])

        def read() -> tuple[Rows, dict[str, Rows]]:
            since, until = at - spec.window_s, at + 1e-3
            return (store.point_readings(spec.site, spec.point, since, until),
                    {d: store.point_readings(spec.site, p, since, until) for d, p in points.items()})  # fmt: skip

        head_rows, pv_rows = await asyncio.to_thread(read)

        def adjust(f: Forecast) -> Forecast:
            out, corr = nowcasted(nowcast, f, head_rows, pv_rows, at, cfg.interval_s)
            applied.update(corr)
            return out

    steps, sol, base = await asyncio.to_thread(plan_once, cfg, config, model, args, now, dict(banks) or None, adjust)
    if nowcast is not None:
        nowcast.remember(sol.problem.starts.tolist(), plans_of(cfg, sol, applied))
    first = [s for s in steps if s.start == steps[0].start]
    before = dict(sent or {})
    await asyncio.to_thread(_write_schedules, db_path, cfg, steps, clock.now(), before)
    await asyncio.to_thread(record_run, db_path, run_of(cfg, sol, base, time.time()))
    if send_at is not None:
        await asyncio.sleep(max(0.0, clock.wall_seconds(send_at - clock.now())))
    outs = await send_step(issuer, first, cfg.expiry_margin_s, key_id, timeout_s)
    if sent is not None:
        sent.update(outputs(first))
    for s in first:
        banks.update(s.cap_before)
    for o in outs:
        if o.status == "applied" and o.command.kind in ("capbank.open", "capbank.close"):
            banks[o.command.target] = o.command.kind == "capbank.close"
    return Round(outs, first, sol, before)


@dataclass(frozen=True, slots=True)
class Round:
    """What one round sent: the results, its first interval's steps, the solution and the outputs before it."""

    outs: list[Outcome]
    first: list[Step]
    sol: Solution
    before: Outputs


async def trim_interval(cfg: DispatchConfig, rnd: Round, store: Store, issuer: CommandIssuer, key_id: str,
                        timeout_s: float, clock: DispatchClock, sent: Outputs) -> list[Outcome]:  # fmt: skip
    """The trim of the interval ``rnd`` sent (central/dispatch/trim.py), at the nowcast's site: its reserved
    inverters' new limits sent as set points holding to the interval's end plus the margin."""
    spec = cfg.nowcast
    assert spec is not None
    step = next((s for s in rnd.first if s.site == spec.site), None)
    if step is None:
        return []
    at = clock.now()
    rows = await asyncio.to_thread(store.point_readings, spec.site, spec.point, float(step.start), at + 1e-3)
    p = rnd.sol.problem
    devices = [i.device for _, i in cfg.inverters]
    avail = {d: float(p.avail_kw[0, n]) for n, d in enumerate(devices)}
    try:
        tr = trim(cfg, step, head_scheduled_kwh(cfg, step, rnd.before), rows, at, avail, p.sens.dv_dp,
                  rnd.sol.v_pred[0], devices)  # fmt: skip
    except ValueError as err:
        log.info("dispatch_trim", site=step.site, start=_iso(step.start), applied=False, why=str(err))
        return []
    outs = await send_step(issuer, [tr.step], cfg.expiry_margin_s, key_id, timeout_s,
                           keep=lambda c: c.kind == "der.setpoint" and c.target in tr.delta_kw)  # fmt: skip
    done = {o.command.target for o in outs if o.status == "applied"}
    sent.update({d: v for d, v in outputs([tr.step]).items() if d in done})
    log.info("dispatch_trim", site=step.site, start=_iso(step.start), applied=True,
             scheduled_kwh=round(tr.scheduled_kwh, 2), so_far_kwh=round(tr.so_far_kwh, 2),
             elapsed_kw=round(tr.elapsed_kw, 1), required_kw=round(tr.required_kw, 1),
             delta_kw=round(sum(tr.delta_kw.values()), 1), scale=round(tr.scale, 3),
             sent=len(outs), applied_count=len(done))  # fmt: skip
    return outs


def run_of(cfg: DispatchConfig, sol: Solution, base: Solution, now: float) -> DispatchRun:
    """The round's record for ``dispatch_runs`` (central/dispatch/runs.py)."""
    p = sol.problem
    return DispatchRun(cfg.feeder, now, int(p.starts[0]), int(p.interval_s), len(p.starts), float(sol.cost.sum()),
                       float(base.cost.sum()), float(sol.cost[0]), float(base.cost[0]))  # fmt: skip


def _write_schedules(db_path: str | Path, cfg: DispatchConfig, steps: Sequence[Step], now: float,
                     before: Outputs | None = None) -> int:  # fmt: skip
    db = open_settlement_db(db_path)  # a connection of the worker thread's own
    try:
        return write_schedules(db, cfg, steps, now, before)
    finally:
        db.close()


def _following(cfg: DispatchConfig, store: Store, db_path: str | Path, key_id: str, clock: DispatchClock,
               window_s: float) -> list[SiteFollowing]:  # fmt: skip
    """The status over the last ``window_s`` of ``clock``: the commands' windows are on the wall clock (the
    window scaled to it), the metered intervals on ``clock``."""
    db = open_settlement_db(db_path)
    try:
        return following(cfg, store, db, key_id, time.time(), clock.wall_seconds(window_s),
                         metered_now=clock.now(), metered_window_s=window_s)  # fmt: skip
    finally:
        db.close()


def _status(args: argparse.Namespace, config: CentralConfig, cfg: DispatchConfig) -> int:
    try:
        key = dispatch_key(cfg, config.commands)
    except DispatchSendError as err:
        return _err(str(err))
    if not 0 < args.window <= 30 * 86_400:
        return _err(f"--window = {args.window:g}: seconds in (0, {30 * 86_400}]")
    setup_logging("warning", stream=sys.stderr)
    try:
        store = open_store(config.store_target)
    except CentralStoreError as err:
        print(err, file=sys.stderr)
        return EXIT_RUNTIME
    db = open_settlement_db(config.store_target)
    try:
        now = parse_time(args.now, "--now") if args.now is not None else time.time()
        rows = following(cfg, store, db, key.key_id, now, args.window)
    except InputError as err:
        return _err(str(err))
    finally:
        store.close()
        if db is not None:
            db.close()
    if args.json:
        print(json.dumps([{"site": r.site, "state": r.state, "applied": r.applied, "refused": r.refused,
                           "expired": r.expired, "waiting": r.waiting, "metered": r.compared, "off": r.off,
                           "why": r.why()} for r in rows], sort_keys=True))  # fmt: skip
    else:
        print(status_table(rows))
    return EXIT_OK if all(r.following for r in rows) else EXIT_NOT_OK


__all__ = ["dispatch_command", "dispatch_interval", "plan_once", "schedule_table"]
