"""The agent's subcommands: run, check-config, status, control (explain, list, clear), pmu probe."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from agent.config import AgentConfig, ConfigError, ConfigIssue, load_config
from agent.pmu import probe as pmu_probe
from protocols.eventlog import setup_logging

EXIT_CONFIG = 2
EXIT_STORE = 4  # the store cannot be opened (1 stays Python's own: an unexpected crash)
EXIT_NOT_RUNNING = 3  # status: the agent stopped, was killed, or does not respond
EXIT_NO_STATUS = 4  # status: no (readable) status file: the agent never ran with this store


def _load(path: str, *, show_warnings: bool = False) -> AgentConfig | None:
    try:
        return load_config(path)
    except ConfigError as err:
        print(f"gridedge: {err.source}: {len(err.issues)} configuration error(s):", file=sys.stderr)
        for issue in err.issues:
            print(f"  {issue}", file=sys.stderr)
        if show_warnings:
            _print_warnings(err.warnings)
        return None


def _print_warnings(warnings: Sequence[ConfigIssue]) -> None:
    """Warnings (what works but is likely a mistake) on stderr, each marked; they never fail a check."""
    if warnings:
        print(f"gridedge: {len(warnings)} configuration warning(s) (not errors):", file=sys.stderr)
    for warning in warnings:
        print(f"  warning: {warning}", file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file, show_warnings=True)
    if config is None:
        return EXIT_CONFIG
    _print_warnings(config.warnings)
    points = sum(len(d.register_map.points) for d in config.devices)
    print(f"{args.file}: ok — site {config.site_id}, {len(config.devices)} device(s), {points} point(s), "
          f"{len(config.pmus)} PMU stream(s), {len(config.waveforms)} waveform stream(s)")  # fmt: skip
    for d in config.devices:
        where = f"{d.host}:{d.port}" if d.serial is None else f"{d.serial.port} @ {d.serial.baudrate} baud"
        what = f"{len(d.register_map.points)} points ({d.register_map.name})"
        if d.protocol == "sunspec":  # no map: the layout is discovered at connect (docs/sunspec.md)
            what = f"SunSpec models {','.join(map(str, d.models))} (discovered at connect)"
        print(f"  {d.name:<16} {d.protocol:<11} {where:<28} unit {d.unit_id:<3} every {d.poll_interval_s:g} s, {what}")
    for pmu in config.pmus:
        data = f"data over UDP port {pmu.udp_port}" if pmu.udp_port else "data over TCP"
        nominal = f", nominal {pmu.nominal_v:g} V" if pmu.nominal_v is not None else ""
        print(f"  {pmu.name:<16} {'c37.118':<11} {pmu.host + ':' + str(pmu.port):<28} idcode {pmu.idcode}, "
              f"CFG-{pmu.cfg}, {data}{nominal}")  # fmt: skip
    for w in config.waveforms:
        standards = ", ".join(w.compliance) or "none"
        if "ieee519" in w.compliance:
            kv = w.bus_kv if w.bus_kv is not None else w.udin_v * 3**0.5 / 1000
            standards += f" (bus {kv:.3f} kV{'' if w.bus_kv is not None else ' from Udin'})"
        print(f"  {w.name:<16} {'waveforms':<11} {w.host + ':' + str(w.port):<28} {w.nominal_hz} Hz, lamp {w.lamp_v} V, "
              f"Udin {w.udin_v:g} V, {','.join(w.channels)}, compliance {standards}")  # fmt: skip
    b = config.uplink.broker
    print(f"  uplink {b.url} as {b.client_id}; store {config.store.path}")
    return 0


def _setup_logging(level: str) -> None:
    setup_logging(level, stream=sys.stderr)
    # pymodbus logs the faults it raises to us; the pollers log them once, in the dialect
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    if args.broker:
        from agent.config import override_broker

        try:
            config = override_broker(config, args.broker)
        except ConfigError as err:
            print(f"gridedge: {err}", file=sys.stderr)
            return EXIT_CONFIG
    _setup_logging(args.log_level)
    from agent.service import run_agent  # heavy imports only when running
    from agent.store import StoreError

    try:
        asyncio.run(run_agent(config))
    except StoreError as err:  # the store cannot be opened or created (a foreign file, a read-only disk)
        print(f"gridedge run: the store {config.store.path} cannot be used: {err}", file=sys.stderr)
        return EXIT_STORE
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    from agent.service import status_path
    from agent.statustext import agent_state, status_text

    path = status_path(config)
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        print(f"gridedge status: no status file {path}: the agent has not run with this store", file=sys.stderr)
        return EXIT_NO_STATUS
    except (OSError, ValueError) as err:  # unreadable, or not JSON (not written by an agent)
        print(f"gridedge status: cannot read the status file {path}: {err}", file=sys.stderr)
        return EXIT_NO_STATUS
    state = agent_state(status, time.time())
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(status_text(status, state, time.time()))
    return 0 if state.running else EXIT_NOT_RUNNING


def _running_status(config: AgentConfig, what: str) -> int | None:
    """None when the agent of ``config`` runs; else the exit status, the reason printed."""
    from agent.service import status_path
    from agent.statustext import agent_state

    path = status_path(config)
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        print(f"gridedge {what}: the agent is not running: it has never run with this store (no {path})",
              file=sys.stderr)  # fmt: skip
        return EXIT_NO_STATUS
    except (OSError, ValueError) as err:
        print(f"gridedge {what}: cannot read the status file {path}: {err}", file=sys.stderr)
        return EXIT_NO_STATUS
    state = agent_state(status, time.time())
    if not state.running:
        print(f"gridedge {what}: the agent is not running, so there is no live snapshot to explain from: "
              f"{state.text}", file=sys.stderr)  # fmt: skip
        return EXIT_NOT_RUNNING
    return None


def cmd_control(args: argparse.Namespace) -> int:
    """``control list`` / ``control clear``: agent/control/operator.py; ``control explain``: a dry run."""
    if args.control_command in ("list", "clear"):
        from agent.control import operator

        extra: list[str] = []
        if args.control_command == "clear":
            extra = [args.function, args.device, *(["--by", args.by] if args.by else [])]
        return operator.main(["--config", args.config, args.control_command, *extra])
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    if config.control is None:
        print(f"gridedge control explain: {args.config} has no [control] section: nothing to explain", file=sys.stderr)
        return EXIT_CONFIG
    code = _running_status(config, "control explain")
    if code is not None:
        return code
    from agent.control.explain import ExplainError, explain, explain_text, load_picture

    try:
        picture = load_picture(config)
        mode, items = asyncio.run(explain(config, picture))
    except ExplainError as err:
        print(f"gridedge control explain: {err}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    if args.json:
        print(json.dumps({"mode": mode, "clock_ts": picture.get("clock_ts"), "functions": [e.to_dict() for e in items]},
                         indent=2))  # fmt: skip
    else:
        print(explain_text(mode, items, picture, time.time()))
    return 0


def _control_parser(sub: Any) -> None:
    ctl = sub.add_parser("control", help="control: explain what each function would do now; list, clear suspensions")
    csub = ctl.add_subparsers(dest="control_command", metavar="CONTROL_COMMAND", required=True)
    e = csub.add_parser(
        "explain",
        help="what each control function would do now, from the running agent's live snapshot (writes nothing)",
        epilog="exit status: 0 explained; 2 a bad configuration or no [control]; 3 the agent is not running (or "
        "runs no control); 4 the agent never ran with this store",
    )
    e.add_argument("--config", required=True, help="the site's TOML file")
    e.add_argument("--json", action="store_true", help="the decisions as JSON records")
    lst = csub.add_parser("list", help="suspensions and the devices the envelope holds (from the store)")
    lst.add_argument("--config", required=True, help="the site's TOML file")
    clr = csub.add_parser("clear", help="clear the suspension of FUNCTION on DEVICE")
    clr.add_argument("--config", required=True, help="the site's TOML file")
    clr.add_argument("function")
    clr.add_argument("device")
    clr.add_argument("--by", default=None, help="who clears it (default: the login name)")
    for p in (e, lst, clr):
        p.set_defaults(func=cmd_control)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gridedge", description="GridEdge: the open substation and feeder edge agent.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    r = sub.add_parser("run", help="run the agent with a site configuration")
    r.add_argument("--config", required=True, help="the site's TOML file")
    r.add_argument("--broker", help="override uplink.broker (mqtt://host:port)")
    r.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("check-config", help="validate a site configuration and list every error")
    c.add_argument("file")
    c.set_defaults(func=cmd_check_config)
    s = sub.add_parser(
        "status",
        help="is the agent running; its devices, PMUs, PQ streams and uplink",
        description="Read the status file the agent writes beside its store every second and say whether the agent "
        "runs (a clean stop, a killed process and a hung one are told apart), then its figures.",
        epilog="exit status: 0 the agent runs; 2 a bad configuration; 3 not running (stopped, killed or not "
        "responding: the figures shown are its last); 4 no status file (the agent never ran with this store)",
    )
    s.add_argument("--config", required=True, help="the site's TOML file (the status file sits beside its store)")
    s.add_argument("--json", action="store_true", help="the status file as the agent wrote it (same exit status)")
    s.set_defaults(func=cmd_status)
    _control_parser(sub)
    from agent import keytool

    keytool.add_parser(sub)
    pm = sub.add_parser("pmu", help="synchrophasor (C37.118) tools: pmu probe ADDRESS")
    pmu_sub = pm.add_subparsers(dest="pmu_command", metavar="PMU_COMMAND", required=True)
    pmu_probe.add_parser(pmu_sub)
    # Handled by gridedge.py's dispatcher; listed here so `gridedge --help` shows them.
    sub.add_parser("sim", help="the simulated substation: sim run --config FILE [--speed N]", add_help=False)
    sub.add_parser("central", help="the reference central service: central run --config FILE", add_help=False)
    sub.add_parser("pq", help="power quality of recordings: pq analyze FILE, pq report --input FILE", add_help=False)
    sub.add_parser("demo", help="simulated substation + agent + central against a real Mosquitto", add_help=False)
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help printed (0), or a usage error printed (2)
        return int(exit_.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    return args.func(args)
