"""``gridedge central report --config FILE --day YYYY-MM-DD [--feeder NAME] [--json] [--out DIR]``: one UTC day's
forecasting and dispatch metrics (docs/report.md).

Exit codes: 0 the report was made (sections without inputs say "no data"); 2 bad arguments or configuration;
3 the store failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from central.config import CentralConfig
from central.report.data import Inputs, ReportError, Section, iso, parse_day
from central.store import CentralStoreError

EXIT_OK, EXIT_USAGE, EXIT_RUNTIME = 0, 2, 3
NOMINAL_HZ = 60.0
BAND_HZ = 0.036  # IEEE 1547-2018 6.5.2.7 Table 24, default db_OF / db_UF (central/report/frequency.py)


def add_parser(sub: Any) -> None:
    r = sub.add_parser("report", help="one UTC day's forecast, adequacy, dispatch, cost, adherence and PMU frequency "
                       "metrics (docs/report.md)")  # fmt: skip
    r.add_argument("--config", required=True, help="central TOML file")
    r.add_argument("--day", required=True, help="the UTC day, YYYY-MM-DD")
    r.add_argument("--feeder", default=None, help="only this feeder's forecasts and adequacy")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--out", default=None, help="also write one CSV per metric into this directory")
    r.add_argument("--nominal-hz", type=float, default=NOMINAL_HZ, help=f"nominal frequency (default {NOMINAL_HZ:g})")
    r.add_argument("--band-hz", type=float, default=BAND_HZ, help=f"frequency band +- [Hz] (default {BAND_HZ:g}: "
                   "IEEE 1547-2018 Table 24 droop deadband)")  # fmt: skip


def build(config: CentralConfig, day: int, feeder: str | None = None, nominal_hz: float = NOMINAL_HZ,
          band_hz: float = BAND_HZ, now: float | None = None) -> list[Section]:  # fmt: skip
    """Every section of the day's report."""
    from central.report.accuracy import accuracy  # numpy and the forecaster: only when a report is made
    from central.report.adequacy import adequacy
    from central.report.adherence import adherence
    from central.report.commands import dispatch_frequency
    from central.report.cost import energy_cost
    from central.report.frequency import frequency

    inputs = Inputs(config)
    try:
        return [
            accuracy(inputs, day, feeder),
            adequacy(inputs, day, feeder),
            dispatch_frequency(inputs, day, now),
            energy_cost(inputs, day),
            adherence(inputs, day),
            frequency(inputs, day, nominal_hz, band_hz),
        ]
    finally:
        inputs.close()


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:g}" if isinstance(v, float) else str(v)


def text(day: int, sections: list[Section]) -> str:
    lines = [f"report for {iso(day)[:10]} (UTC day {iso(day)} .. {iso(day + 86_400)})"]
    for s in sections:
        lines += ["", f"== {s.title}"]
        if s.rows:
            cols = list(dict.fromkeys(k for r in s.rows for k in r))
            cells = [[_cell(r.get(c)) for c in cols] for r in s.rows]
            widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
            lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
            lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        lines += s.notes or ([] if s.rows else ["no data"])
    return "\n".join(lines)


def write_csvs(out: Path, sections: list[Section]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in sections:
        for name, rows in ((s.name, s.rows), (f"{s.name}_intervals", s.detail)):
            if not rows and name != s.name:
                continue
            path = out / f"{name}.csv"
            cols = list(dict.fromkeys(k for r in rows for k in r))
            with path.open("w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=cols)
                w.writeheader()
                w.writerows(rows)
            written.append(path)
    return written


def report_command(args: argparse.Namespace, config: CentralConfig) -> int:
    try:
        day = parse_day(args.day)
        if not 40 <= args.nominal_hz <= 70:
            raise ReportError(f"--nominal-hz = {args.nominal_hz:g}: a power system frequency in [40, 70] Hz")
        if not 0 < args.band_hz < 5:
            raise ReportError(f"--band-hz = {args.band_hz:g}: a band in (0, 5) Hz")
        names = {f.name for f in config.forecast.feeders} | ({config.dispatch.feeder} if config.dispatch else set())
        if args.feeder is not None and args.feeder not in names:
            raise ReportError(f"--feeder = {args.feeder!r}: one of {', '.join(sorted(names)) or '(none configured)'}")
    except ReportError as err:
        print(f"gridedge central report: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        sections = build(config, day, args.feeder, args.nominal_hz, args.band_hz)
    except CentralStoreError as err:
        print(f"gridedge central report: {err}", file=sys.stderr)
        return EXIT_RUNTIME
    if args.out is not None:
        try:
            write_csvs(Path(args.out), sections)
        except OSError as err:
            print(f"gridedge central report: --out = {args.out}: {err.strerror}", file=sys.stderr)
            return EXIT_RUNTIME
    if args.json:
        print(json.dumps({"day": iso(day)[:10], "start": iso(day), **{s.name: s.to_dict() for s in sections}},
                         sort_keys=True))  # fmt: skip
    else:
        print(text(day, sections))
    return EXIT_OK
