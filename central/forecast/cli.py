"""``gridedge central forecast [--config FILE [--once]] | forecast backtest --history FILE ...`` (docs/forecast.md).

Exit codes: 0 success; 2 bad usage, configuration or history file; 3 runtime failure (store, broker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from central.forecast.history import HistoryError


def add_parser(sub: Any) -> None:
    fc = sub.add_parser(
        "forecast",
        help="load and PV forecasts per feeder into the store and onto MQTT; `forecast backtest` scores a history",
        description="Without a subcommand: forecast the feeders of [forecast] in --config every 15 minutes "
        "(or once with --once). `forecast backtest`: a rolling-origin backtest of a history file.",
    )
    fc.add_argument("--config", help="central TOML file with a [forecast] section")
    fc.add_argument("--once", action="store_true", help="one cycle (intraday and day-ahead), then exit")
    fsub = fc.add_subparsers(dest="forecast_command")
    bt = fsub.add_parser("backtest", help="rolling-origin backtest of a history CSV: our model and the baselines")
    bt.add_argument("--history", required=True, help="CSV: timestamp (ISO-8601 UTC), value column(s), "
                    "optional temperature and irradiance (docs/forecast.md)")  # fmt: skip
    bt.add_argument("--horizon", required=True, choices=("intraday", "day-ahead"))
    bt.add_argument("--kind", choices=("load", "pv"), default=None,
                    help="load or pv (default: pv when the column's name contains 'pv', else load)")  # fmt: skip
    bt.add_argument("--column", default=None, help="the value column (default: the only non-weather column)")
    bt.add_argument("--timezone", default="UTC", help="IANA zone for local time of day and issue time (default UTC)")
    bt.add_argument("--issue-time", default="10:00", help="local day-ahead issue time HH:MM (default 10:00)")
    bt.add_argument("--holidays", default=None, metavar="CODE",
                    help="public holidays taken as Sundays: a country code, e.g. US or DE-BY (default none)")  # fmt: skip
    bt.add_argument("--mstl", action="store_true",
                    help="also try statsforecast's MSTL with an AutoETS trend (the `mstl` extra; ~0.4 s a day)")  # fmt: skip
    bt.add_argument("--json", action="store_true", help="print one JSON object")
    bt.add_argument("--plot", default=None, metavar="OUT.png", help="draw the scores side by side (matplotlib)")


def forecast_command(args: argparse.Namespace) -> int:
    if args.forecast_command == "backtest":
        return _backtest(args)
    if not args.config:
        print("gridedge central forecast: --config FILE is required (or `forecast backtest ...`)", file=sys.stderr)
        return 2
    return _serve(args)


def _issue_slot(text: str) -> int | None:
    try:
        h, m = (int(x) for x in text.split(":"))
    except ValueError:
        return None
    return h * 4 + m // 15 if 0 <= h < 24 and m in (0, 15, 30, 45) else None


def _backtest(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from central.forecast import backtest, plot
    from central.forecast.history import read_history
    from central.forecast.models import ForecastError

    slot = _issue_slot(args.issue_time)
    if slot is None:
        print(f"--issue-time {args.issue_time!r}: a local time HH:MM on a 15-minute boundary", file=sys.stderr)
        return 2
    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"--timezone {args.timezone!r}: an IANA time zone name, e.g. UTC or Europe/Berlin", file=sys.stderr)
        return 2
    try:
        history = read_history(args.history, args.column)
        kind = args.kind or ("pv" if "pv" in history.column.lower() else "load")
        report = backtest.run(history, kind, args.horizon, tz=args.timezone, holidays=args.holidays, issue_slot=slot,
                              use_mstl=args.mstl)  # fmt: skip
        if args.plot:
            plot.plot(report, history, args.plot)
    except (HistoryError, ForecastError) as err:
        print(err, file=sys.stderr)
        return 2
    print(json.dumps(report, sort_keys=True) if args.json else backtest.format_table(report))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from central.config import CentralConfigError, load_central_config
    from central.forecast import service
    from central.store import CentralStoreError, open_store
    from protocols.eventlog import setup_logging

    try:
        config = load_central_config(args.config)
    except CentralConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if not config.forecast.feeders:
        print(f"{args.config}: [forecast] names no feeders ([[forecast.feeders]] with name, site and points)",
              file=sys.stderr)  # fmt: skip
        return 2
    setup_logging()
    try:
        store = open_store(config.store_target)
    except CentralStoreError as err:
        print(err, file=sys.stderr)
        return 3

    async def main() -> int:
        task = asyncio.create_task(service.run(config, store, once=args.once))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return 0

    try:
        issued = asyncio.run(main())
    finally:
        store.close()
    if args.once and not issued:
        print("no forecast issued: see the forecast_skipped lines", file=sys.stderr)
        return 3
    return 0
