"""``gridedge pq analyze`` and ``gridedge pq report`` (docs/pq-report.md).

Exit codes: 0 done (report: every criterion passed or had no data), 1 report: a criterion failed,
2 bad input (file, option), with one line on stderr naming the file, row, column or option.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from agent.pq import compliance
from agent.pq.harmonics import PqInputError
from agent.pq.offline.analyze import analyse_file
from agent.pq.offline.recording import RecordingError
from agent.pq.offline.text import format_analysis, format_compliance
from protocols.eventlog import setup_logging


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() reports every bad input the same way (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise RecordingError(f"{self.prog}: {message}")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed a number > 0") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: allowed a number > 0")
    return value


def _choice(allowed: tuple[int, ...]) -> Any:
    def parse(text: str) -> int:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if value not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r}: allowed {' or '.join(str(a) for a in allowed)}")
        return int(value)

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gridedge pq", description="Power quality of recorded waveforms (IEC 61000-4-30 Class A).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    a = sub.add_parser("analyze", help="RMS, frequency, harmonics, flicker, unbalance, events of a COMTRADE/CSV file")
    a.add_argument("file", help="COMTRADE .cfg (with its .dat) or .cff, or CSV (header: [t,] va[, vb, vc, ia, ib, ic])")
    a.add_argument("--rate", type=_positive, metavar="HZ", help="sample rate; required for CSV without a t column")
    a.add_argument("--nominal", type=_choice((50, 60)), metavar="50|60",
                   help="nominal frequency (default: COMTRADE line frequency, else estimated from the signal)")  # fmt: skip
    a.add_argument("--lamp", type=_choice((230, 120)), metavar="230|120",
                   help="flickermeter lamp (default 230 at 50 Hz, 120 at 60 Hz)")  # fmt: skip
    a.add_argument("--vnom", type=_positive, metavar="VOLTS",
                   help="declared input voltage Udin, phase to neutral (default: the median RMS rounded to a "
                        "standard nominal voltage)")  # fmt: skip
    a.add_argument("--json", action="store_true", help="print the JSON document instead of the text report")
    a.add_argument("--plot", metavar="OUT.png",
                   help="write a PNG to investigate the worst event: Urms(1/2) overview, waveform and Urms(1/2) "
                        "around the event, Pst, harmonics (needs matplotlib: pip install 'gridedge[plot]')")  # fmt: skip
    r = sub.add_parser("report", help="compliance with EN 50160 (LV/MV) or IEEE 519-2014 voltage distortion")
    r.add_argument("--input", required=True, metavar="FILE",
                   help="the JSON of `pq analyze --json`, or a recording (analysed first)")  # fmt: skip
    r.add_argument("--standard", default="en50160-lv", choices=compliance.STANDARDS, help="default en50160-lv")
    r.add_argument("--bus-kv", type=_positive, metavar="KV",
                   help="IEEE 519: PCC bus voltage line to line (default: Udin x sqrt 3)")  # fmt: skip
    r.add_argument("--rate", type=_positive, metavar="HZ", help="as for analyze, when --input is a recording")
    r.add_argument("--nominal", type=_choice((50, 60)), metavar="50|60", help="as for analyze")
    r.add_argument("--vnom", type=_positive, metavar="VOLTS", help="as for analyze")
    r.add_argument("--json", action="store_true", help="print the JSON document instead of the text summary")
    return p


def _analyse(args: argparse.Namespace, path: str, lamp: int | None = None) -> Any:
    return analyse_file(path, rate_hz=args.rate, nominal_hz=args.nominal, udin_v=args.vnom, lamp_v=lamp)


def _plotter(out_path: str) -> Any:
    """The plot module, once ``--plot OUT.png`` is known to be usable: before the analysis, which takes a while."""
    try:
        from agent.pq.offline import plot  # matplotlib only when asked
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] != "matplotlib":
            raise
        raise RecordingError("--plot needs matplotlib, which is not installed: pip install 'gridedge[plot]'") from err
    plot.check_out_path(out_path)
    return plot


def cmd_analyze(args: argparse.Namespace) -> int:
    plot = _plotter(args.plot) if args.plot else None
    analysis = _analyse(args, args.file, args.lamp)
    if plot is not None:
        plot.plot_analysis(analysis, args.plot)
    if args.json:
        print(json.dumps(analysis.report, indent=1, allow_nan=False))
    else:
        print(format_analysis(analysis.report))
        if args.plot:
            print(f"Plot: {args.plot}")
    return 0


def load_report_input(path: str) -> dict[str, Any] | None:
    """The analyze document of a .json file; None when ``path`` is not JSON (a recording)."""
    p = Path(path)
    if p.suffix.lower() != ".json":
        return None
    if p.is_dir():
        raise RecordingError(f"{p}: is a folder, not the JSON of `gridedge pq analyze --json`")
    if not p.is_file():
        raise RecordingError(f"{p}: no such file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordingError(f"{p}: not a JSON document: {err}") from err
    if not isinstance(data, dict):
        raise RecordingError(f"{p}: not the JSON of `gridedge pq analyze --json` (an object with channels, ...)")
    return data


def cmd_report(args: argparse.Namespace) -> int:
    data = load_report_input(args.input)
    if data is None:
        data = _analyse(args, args.input).report
    if args.bus_kv is not None and args.standard != "ieee519":
        raise RecordingError(f"--bus-kv: only with --standard ieee519 (EN 50160 uses Udin), not {args.standard}")
    report = compliance.evaluate(data, args.standard, args.bus_kv)
    if args.json:
        print(json.dumps(report.to_json(), indent=1, allow_nan=False))
    else:
        print(format_compliance(report))
    return 1 if report.verdict == "fail" else 0


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    setup_logging("WARNING")  # the one log format, should a measurement warn; the results go to stdout
    try:
        args = parser.parse_args(args_list)
        if args.command is None:
            parser.print_help()
            return 0 if not args_list else 2
        return cmd_analyze(args) if args.command == "analyze" else cmd_report(args)
    except (RecordingError, PqInputError, compliance.ComplianceError) as err:
        print(f"gridedge pq: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
