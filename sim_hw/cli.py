"""``gridedge sim ...``: run the simulated bench or list its devices.

``gridedge.py`` hands everything after the word ``sim`` to :func:`main`.

- ``sim run --config FILE [--speed N] [--seconds S] [--sim-seconds S] [--scenario FILE] [--truth FILE]``: print
  the device table, serve until SIGINT or SIGTERM (or S seconds of wall time, or S simulated seconds), exit 0;
  with ``--truth``, write the bench's truth (every step's solved feeder, the scenario's steps) as JSON lines
  (sim_hw/truthlog.py, docs/truth-log.md).
- ``sim truth FILE [--json]``: summarise a truth log: bus-minutes outside ANSI C84.1 Range A, tap and capacitor
  operations, feeder-head energy and losses.
- ``sim devices --config FILE``: print the device table only.
- ``sim history --config FILE --days N --out FILE [--start YYYY-MM-DD] [--seed S]``: write N days of 15-minute
  feeder history (CSV, docs/forecast.md "History files") from the bench's physics and its realistic profiles
  (sim_hw/history.py, sim_hw/feeder/bdew.py).
- ``sim solve --config FILE [--regulator-taps A,B,C] [--json]``: solve the feeder once at the published loads
  and print every bus's voltages; the published case needs ``--regulator-taps 10,8,11`` (sim_hw/solve.py).
- ``sim waveform --desc FILE --seconds S --out PREFIX [--rev 1999|2013] [--format ...]``: write a synthetic
  recording (docs/devices/sim-waveforms.md) as COMTRADE PREFIX.cfg + PREFIX.dat; with ``--port P`` instead
  of ``--out``, stream it live over TCP (protocols/wavestream.py) until interrupted.

Exit codes: 0 done, 2 bad command line or configuration (an ``--out`` whose folder does not exist), 1 the bench
could not start or the recording could not be written.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from protocols.eventlog import setup_logging
from sim_hw.bench import Bench, BenchError, device_table
from sim_hw.config import BenchConfigError, load_bench_config
from sim_hw.devices.modbus_server import ModbusServerError
from sim_hw.history import MAX_DAYS, midnight_utc
from sim_hw.solve import PUBLISHED_TAPS, join_tap_values, parse_taps
from sim_hw.solve import run as solve_run
from sim_hw.truthlog import TruthLog


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed an integer 1..{MAX_DAYS}") from None
    if not 1 <= value <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed an integer 1..{MAX_DAYS}")
    return value


def _date(text: str) -> float:
    try:
        return midnight_utc(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r}: allowed a date YYYY-MM-DD (the first UTC day)") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gridedge sim", description="The simulated substation bench.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve every device of the bench until interrupted")
    run.add_argument("--config", required=True, help="the bench's TOML file (e.g. config/sim-site.toml)")
    run.add_argument("--speed", type=_positive, help="simulated seconds per wall second (overrides [bench] speed)")
    run.add_argument("--seconds", type=_positive, help="stop after this many wall seconds")
    run.add_argument("--sim-seconds", type=_positive, help="stop after this many simulated seconds (86400: a day)")
    run.add_argument("--scenario", help="a scenario file (sim_hw/scenarios): overrides the config's scenario")
    run.add_argument("--truth", metavar="FILE", help="write the bench's truth to FILE as JSON lines: every step's "
                     "bus voltages, taps, capacitors, head power, losses, energy; each scenario step "
                     "(docs/truth-log.md)")  # fmt: skip
    run.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    truth = sub.add_parser("truth", help="summarise a truth log (sim run --truth): voltages out of ANSI C84.1 "
                           "Range A, tap and capacitor operations, energy")  # fmt: skip
    truth.add_argument("file", help="the truth log")
    truth.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    hist = sub.add_parser("history", help="write N days of 15-minute feeder history (CSV) from the bench's physics "
                          "and its realistic profiles (docs/forecast.md)")  # fmt: skip
    hist.add_argument("--config", required=True, help="the bench's TOML ([feeder], optional [profiles])")
    hist.add_argument("--days", required=True, type=_days, help=f"days to write, 1..{MAX_DAYS}")
    hist.add_argument("--out", required=True, help="the CSV file to write (its folder must exist)")
    hist.add_argument("--start", type=_date, default="2026-01-01", help="the first UTC day, YYYY-MM-DD (2026-01-01)")
    hist.add_argument("--seed", type=int, help="the noise's seed (overrides [profiles] seed)")
    dev = sub.add_parser("devices", help="print the bench's devices and their addresses")
    dev.add_argument("--config", required=True)
    published = ",".join(map(str, PUBLISHED_TAPS))
    solve = sub.add_parser(
        "solve",
        help=f"solve the feeder once at the published loads, print bus voltages (the published case: "
        f"--regulator-taps {published})",
        description="Solve the feeder once at the published loads (PV at 0, capacitors in service). Without "
        "--regulator-taps, OpenDSS's regulator control chooses the taps (not the published ones); "
        f"--regulator-taps {published} gives the published case.",
    )
    solve.add_argument("--config", required=True, help="the bench's TOML ([feeder] dss) or an OpenDSS .dss script")
    solve.add_argument(
        "--regulator-taps",
        type=parse_taps,
        help=f"fixed tap steps for phases a,b,c, each -16..16 ({published}: the published case's)",
    )
    solve.add_argument("--json", action="store_true", help='print {"buses": {bus: {phase: {"pu", "deg"}}}}')
    wav = sub.add_parser("waveform", help="write a synthetic recording as COMTRADE, or stream it live")
    wav.add_argument("--desc", required=True, help="TOML file whose [waveform] table describes the signal")
    wav.add_argument("--seconds", type=_positive, help="duration (required with --out; streams forever without)")
    out = wav.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="COMTRADE path prefix: writes PREFIX.cfg and PREFIX.dat")
    out.add_argument("--port", type=int, help="stream live over TCP on 127.0.0.1:PORT")
    wav.add_argument("--rev", default="2013", choices=("1999", "2013"), help="COMTRADE revision (C37.111)")
    wav.add_argument("--format", default="BINARY", choices=("ASCII", "BINARY", "BINARY32", "FLOAT32"))
    wav.add_argument("--speed", type=_positive, default=1.0, help="stream N times faster than real time")
    return p


def _waveform(args: argparse.Namespace) -> int:
    import tomllib

    from sim_hw.waveforms import DescriptionError, WaveformDesc, generate, write_comtrade

    try:
        with open(args.desc, "rb") as fh:
            desc = WaveformDesc.from_dict(tomllib.load(fh).get("waveform", {}))
    except (OSError, tomllib.TOMLDecodeError) as err:
        print(f"sim waveform: --desc {args.desc}: cannot read: {err}", file=sys.stderr)
        return 2
    except DescriptionError as err:
        print(f"sim waveform: --desc {args.desc}: {err}", file=sys.stderr)
        return 2
    if args.out is not None:
        if args.seconds is None:
            print("sim waveform: --seconds is required with --out", file=sys.stderr)
            return 2
        folder = Path(args.out).parent
        if not folder.is_dir():
            why = "is not a folder" if folder.exists() else "does not exist"
            print(f"sim waveform: --out {args.out}: folder {folder} {why}", file=sys.stderr)
            return 2
        wave = generate(desc, args.seconds)
        try:
            cfg, dat = write_comtrade(
                wave, args.out, rev_year=args.rev, data_format=args.format, nominal_hz=desc.nominal_hz
            )
        except OSError as err:
            print(f"sim waveform: --out {args.out}: cannot write {err.filename or args.out}: {err.strerror or err}",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(f"wrote {cfg} and {dat}")
        return 0
    if not 1 <= args.port <= 65535:
        print(f"sim waveform: --port = {args.port}: must be 1..65535", file=sys.stderr)
        return 2
    return asyncio.run(_stream(desc, args.port, args.speed, args.seconds))


async def _stream(desc: Any, port: int, speed: float, seconds: float | None) -> int:
    from sim_hw.waveforms.stream import WaveformStreamServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with WaveformStreamServer(desc, port=port, speed=speed, duration_s=seconds) as srv:
            print(f"streaming on 127.0.0.1:{srv.port} rate={desc.rate:g} Hz speed={speed:g}", flush=True)
            await stop.wait()
    except OSError as err:
        print(f"sim waveform: cannot listen on 127.0.0.1:{port}: {err}", file=sys.stderr)
        return 1
    return 0


def _truth(args: argparse.Namespace) -> int:
    import json

    from sim_hw.truthlog import TruthLogError, format_summary, read_records, summarise

    try:
        summary = summarise(read_records(args.file))
    except TruthLogError as err:
        print(f"sim truth: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary.to_json(), sort_keys=True) if args.json else format_summary(summary))
    return 0


def _history(args: argparse.Namespace, config: Any) -> int:
    import os
    import time

    from sim_hw.feeder.bdew import ProfileError
    from sim_hw.history import HistoryError, write_history

    out = Path(args.out)
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist"
        print(f"sim history: --out {args.out}: folder {folder} {why}", file=sys.stderr)
        return 2
    if out.is_dir() or not os.access(folder, os.W_OK):
        what = "is a folder" if out.is_dir() else f"folder {folder} is not writable"
        print(f"sim history: --out {args.out}: {what}: allowed a file path in a writable folder", file=sys.stderr)
        return 2
    began = time.monotonic()
    try:
        result = write_history(config, out, start=args.start, days=args.days, seed=args.seed)
    except (HistoryError, ProfileError) as err:
        print(f"sim history: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"sim history: --out {args.out}: cannot write: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"wrote {out} rows={result.rows} columns={len(result.columns)} not_converged={result.not_converged} "
          f"elapsed_s={time.monotonic() - began:.1f}")  # fmt: skip
    return 0


async def _run(bench: Bench, seconds: float | None, sim_seconds: float | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await bench.start()
        print(bench.table(), flush=True)
        await bench.run(seconds=seconds, stop=stop, sim_seconds=sim_seconds)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await bench.stop()
    print(
        f"stopped steps={bench.steps} sim_elapsed_s={bench.elapsed_sim_s:g} speed={bench.speed:g} "
        f"late_steps={bench.late_steps} max_lag_s={bench.max_lag_s:.3f}",
        flush=True,
    )


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(join_tap_values(argv) if argv[:1] == ["solve"] else argv)
    except SystemExit as exit_:  # argparse has printed the usage
        return int(exit_.code or 0)
    # the one log format; `run` takes --log-level, the one-shot commands show warnings and errors only
    setup_logging(getattr(args, "log_level", "WARNING"))
    logging.getLogger("pymodbus").setLevel(logging.WARNING)  # the bench's servers log their own faults
    if args.command == "solve":
        return solve_run(args)
    if args.command == "waveform":
        return _waveform(args)
    if args.command == "truth":
        return _truth(args)
    try:
        config = load_bench_config(args.config)
    except BenchConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if args.command == "history":
        return _history(args, config)
    if args.command == "devices":
        print(device_table(config))
        return 0
    if args.scenario is not None:
        from dataclasses import replace

        scenario = Path(args.scenario).resolve()
        if not scenario.is_file():
            print(f"sim: --scenario {args.scenario}: no such file", file=sys.stderr)
            return 2
        if config.feeder is None:
            print("sim: --scenario needs a bench with a [feeder] (the physics plays the events)", file=sys.stderr)
            return 2
        config = replace(config, scenario=scenario)
    if config.scenario is not None:
        from sim_hw.scenarios import ScenarioError, load_scenario

        try:  # checked before anything starts: a bad file is a configuration error (exit 2)
            load_scenario(config.scenario, start=0.0, devices=tuple(d.name for d in config.devices),
                          pmus=tuple(p.name for p in config.pmus))  # fmt: skip
        except ScenarioError as err:
            print(f"sim: scenario: {err}", file=sys.stderr)
            return 2
    try:
        truth_log = TruthLog(Path(args.truth)) if args.truth else None
        asyncio.run(_run(Bench(config, speed=args.speed, truth_log=truth_log), args.seconds, args.sim_seconds))
    except (BenchError, ModbusServerError) as err:
        print(f"sim: cannot run the bench: {err}", file=sys.stderr)
        return 1
    return 0
