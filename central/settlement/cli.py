"""``gridedge central intervals``, ``gridedge central settle`` and ``gridedge central schedule import`` (central/cli.py
registers them).

Exit codes as the other central commands: 0 success, 2 bad arguments or configuration (also: a correction with no
final run to correct, a losses file that cannot be read), 3 the store failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from central.config import CentralConfig
from central.settlement.data import load_rows
from central.settlement.db import SettlementDb, open_settlement_db
from central.settlement.nem12 import write_nem12
from central.settlement.reconcile import LossesError
from central.settlement.report import write_report
from central.settlement.runs import RUN_KINDS, RunResult, SettlementError, settle
from central.settlement.schedules import ScheduleError, parse_csv, store_schedule
from central.settlement.vee import CHECKS
from central.store import CentralStoreError
from central.times import parse_utc
from protocols.telemetry.schema import valid_site


def add_parsers(sub: Any) -> None:
    iv = sub.add_parser("intervals", help="the latest version of each interval of a site (docs/settlement.md)")
    iv.add_argument("--config", required=True, help="central TOML file")
    iv.add_argument("--site", required=True)
    iv.add_argument("--meter", default=None, help="only this meter")
    iv.add_argument("--from", dest="t_from", required=True, help="ISO-8601 UTC (2025-12-01T00:00Z) or epoch seconds")
    iv.add_argument("--to", dest="t_to", required=True, help="end, excluded; ISO-8601 UTC or epoch seconds")
    iv.add_argument("--json", action="store_true", help="print a JSON array")
    st = sub.add_parser("settle", help="a settlement run: VEE, reconciliation, CSV, summary, NEM12 and HTML report")
    st.add_argument("--config", required=True, help="central TOML file ([settlement]: docs/settlement.md)")
    st.add_argument("--from", dest="t_from", required=True, help="ISO-8601 UTC or epoch seconds")
    st.add_argument("--to", dest="t_to", required=True, help="end, excluded; ISO-8601 UTC or epoch seconds")
    st.add_argument("--run", required=True, choices=RUN_KINDS, help="the run's kind")
    st.add_argument("--out", required=True, help="folder for the run's files (made if missing)")
    sc = sub.add_parser("schedule", help="scheduled energy per meter and interval, settled against (imbalance)")
    sc_sub = sc.add_subparsers(dest="schedule_command", required=True)
    imp = sc_sub.add_parser(
        "import", help="store a schedule CSV (site,meter,channel,start,end,energy) as a new version"
    )
    imp.add_argument("--config", required=True, help="central TOML file")
    imp.add_argument("--file", required=True, help="the schedule CSV (docs/settlement.md, 'Imbalance')")
    imp.add_argument("--source", default=None, help="what the schedule is (default: csv:<file name>)")


def parse_time(text: str, flag: str) -> int:
    """Epoch seconds, or ISO-8601 in UTC (``Z``, ``+00:00`` or no offset); ValueError naming the flag."""
    return parse_utc(text, flag)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Refused(ValueError):
    """A command's bad argument or configuration: its text is printed and the command exits 2."""


def _run(body: Callable[[argparse.Namespace, CentralConfig], int], args: argparse.Namespace,
         config: CentralConfig) -> int:  # fmt: skip
    """Every settlement command's frame: one line on stderr and exit 2 for a refused argument, 3 when the store
    failed (opening it, reading or writing: the line names the store)."""
    try:
        return body(args, config)
    except Refused as err:
        print(err, file=sys.stderr)
        return 2
    except CentralStoreError as err:
        print(err, file=sys.stderr)
        return 3


@contextmanager
def _store(config: CentralConfig) -> Iterator[SettlementDb]:
    """Settlement's access to central's store, SQLite or PostgreSQL (``[store]``), closed after."""
    db = open_settlement_db(config.store_target)
    try:
        yield db
    finally:
        db.close()


def _period(args: argparse.Namespace) -> tuple[int, int]:
    """``--from`` and ``--to`` as epoch seconds; Refused naming the flag."""
    try:
        t0, t1 = parse_time(args.t_from, "--from"), parse_time(args.t_to, "--to")
    except ValueError as err:
        raise Refused(str(err)) from None
    if t1 <= t0:
        raise Refused(f"--to = {args.t_to!r}: must be after --from = {args.t_from!r}")
    return t0, t1


def intervals_command(args: argparse.Namespace, config: CentralConfig) -> int:
    return _run(_intervals, args, config)


def settle_command(args: argparse.Namespace, config: CentralConfig) -> int:
    return _run(_settle, args, config)


def schedule_command(args: argparse.Namespace, config: CentralConfig) -> int:
    return _run(_schedule, args, config)


def _intervals(args: argparse.Namespace, config: CentralConfig) -> int:
    if not valid_site(args.site):
        raise Refused(f"--site = {args.site!r}: 1-64 letters, digits, '_', '.', '-'")
    t0, t1 = _period(args)
    with _store(config) as db:
        rows = load_rows(db, t0, t1, args.site, args.meter)
    names = ("site", "meter", "register", "start", "version", "end", "channel", "unit", "value", "quality", "method",
             "flags")  # fmt: skip
    out = [dict(zip(names, r[:12], strict=True)) for r in rows]
    for o in out:
        o["flags"] = json.loads(o["flags"])
    if args.json:
        print(json.dumps(out))
        return 0
    if not out:
        print("no intervals")
    for o in out:
        value = "null" if o["value"] is None else f"{o['value']:g}"
        print(f"{_iso(o['start'])} site={o['site']} meter={o['meter']} register={o['register']} value={value} "
              f"unit={o['unit']} quality={o['quality']} method={o['method'] or '-'} version={o['version']}"
              + (f" flags={','.join(o['flags'])}" if o["flags"] else ""))  # fmt: skip
    return 0


def _failed_names(bits: int) -> str:
    return "+".join(name for name, bit in CHECKS.items() if bits & bit)


def write_run(out: Path, run: RunResult, config: CentralConfig) -> dict[str, Path]:
    """The run's files in ``out``: intervals CSV, summary JSON, NEM12 file, HTML report."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"run-{run.run_id}-{run.kind}"
    files = {"csv": out / f"{stem}-intervals.csv", "summary": out / f"{stem}-summary.json",
             "nem12": out / f"nem12#run{run.run_id}#GRIDEDGE#RETAILER.csv", "report": out / f"{stem}-report.html"}  # fmt: skip
    with files["csv"].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site", "meter", "register", "channel", "start", "start_utc", "end", "value", "unit", "quality",
                    "method", "failed_checks", "version", "delta"])  # fmt: skip
        for r in run.registers:
            delta = r.delta if r.delta is not None else np.full(r.starts.size, np.nan)
            for s, v, q, m, f, ver, d in zip(r.starts.tolist(), r.value.tolist(), r.quality.tolist(),
                                             r.method.tolist(), r.failed.tolist(), r.version.tolist(), delta.tolist(),
                                             strict=True):  # fmt: skip
                w.writerow([r.site, r.meter, r.register, r.channel, s, _iso(s), s + r.length_s,
                            "" if v != v else f"{v:.6f}", r.unit, q, m or "", _failed_names(f), ver,
                            "" if d != d else f"{d:.6f}"])  # fmt: skip
    if run.imbalances:
        files["imbalance"] = out / f"{stem}-imbalance.csv"
        with files["imbalance"].open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["site", "meter", "register", "channel", "start", "start_utc", "scheduled", "metered",
                        "imbalance", "unit"])  # fmt: skip
            for i in run.imbalances:
                for s, sch, met, imb in zip(i.starts.tolist(), i.scheduled.tolist(), i.metered.tolist(),
                                            i.imbalance.tolist(), strict=True):  # fmt: skip
                    if sch == sch:
                        w.writerow([i.site, i.meter, i.register, i.channel, s, _iso(s), f"{sch:.6f}",
                                    "" if met != met else f"{met:.6f}", "" if imb != imb else f"{imb:.6f}", i.unit])  # fmt: skip
    left_out = write_nem12(files["nem12"], run.registers, created=run.created, nmi=config.settlement.nmi)
    summary = {**run.summary, "nem12_left_out": [list(r.key) for r in left_out],
               "files": {k: p.name for k, p in files.items()}}  # fmt: skip
    files["summary"].write_text(json.dumps(summary, indent=1, sort_keys=True))
    write_report(files["report"], run)
    return files


def _schedule(args: argparse.Namespace, config: CentralConfig) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise Refused(f"--file = {args.file!r}: cannot read it: {err}") from None
    try:
        rows = parse_csv(text, parse_time)
    except ScheduleError as err:
        raise Refused(f"--file = {args.file!r}: {err}; nothing stored") from None
    with _store(config) as db:
        n = store_schedule(db, rows, args.source or f"csv:{path.name}", time.time())
    sites = sorted({r.site for r in rows})
    print(f"schedule: {n} intervals stored for {len({(r.site, r.meter) for r in rows})} meters at {', '.join(sites)}, "
          f"{_iso(min(r.start for r in rows))} to {_iso(max(r.end for r in rows))}")  # fmt: skip
    return 0


def _settle(args: argparse.Namespace, config: CentralConfig) -> int:
    t0, t1 = _period(args)
    with _store(config) as db:
        try:
            run = settle(db, config.settlement, t0, t1, args.run, time.time())
        except (SettlementError, LossesError) as err:
            raise Refused(f"gridedge central settle: {err}") from None
    try:
        files = write_run(Path(args.out), run, config)
    except OSError as err:
        print(f"gridedge central settle: cannot write --out {args.out}: {err}", file=sys.stderr)
        return 3
    s = run.summary
    print(f"run {run.run_id} {run.kind} version {run.version} [{_iso(t0)}, {_iso(t1)}): {s['registers']} registers, "
          f"{s['intervals']} intervals, reconciliation rate {s['reconciliation_rate']}")  # fmt: skip
    for fs in s["feeders"]:
        print(f"feeder={fs['feeder']} rate={fs['reconciliation_rate']} unaccounted_kwh={fs['unaccounted_kwh']}")
    for im in s.get("imbalance", []):
        print(f"imbalance site={im['site']} meter={im['meter']} channel={im['channel']} scheduled={im['scheduled']:g} "
              f"metered={im['metered']:g} imbalance={im['imbalance']:g} {im['unit']} over={im['over']:g} "
              f"under={im['under']:g} unmetered_intervals={im['unmetered_intervals']}")  # fmt: skip
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0
