"""``gridedge central run|gaps|command|commands|intervals|settle|schedule|dispatch|forecast|report``: the reference central service's commands.

gridedge.py hands everything after the word ``central`` to :func:`main`, so central never imports the agent.
Exit codes: 0 success, 1 gaps or reused sequence numbers found (``gaps``), 2 bad usage or configuration, 3 runtime failure.
``command``: 0 applied, 1 refused or failed, 2 bad arguments or configuration, 3 no result within the timeout (the
command stays recorded as ``sent``; ``central commands`` shows it, with its result if one comes later).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from central.commands import UNTIL_KINDS, CommandError, CommandIssuer, Outcome, outcomes
from central.config import CentralConfig, CentralConfigError, load_central_config
from central.dispatch.args import add_parsers as add_dispatch_parsers
from central.forecast.cli import add_parser as add_forecast_parser
from central.forecast.cli import forecast_command
from central.ingest import run_workers
from central.report.cli import add_parser as add_report_parser
from central.report.cli import report_command
from central.settlement.cli import add_parsers as add_settlement_parsers
from central.settlement.cli import intervals_command, schedule_command, settle_command
from central.store import CentralStoreError, Store, open_store
from protocols.eventlog import EventLog, setup_logging
from protocols.mqtt.session import MqttSession
from protocols.telemetry.commands import KINDS, MAX_HOLD_S
from protocols.telemetry.schema import valid_site

log = EventLog("central")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gridedge central", description="The reference central ingest service.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="ingest uplink messages from the broker into the db, acking each one")
    run.add_argument("--config", required=True, help="central TOML file (see config/central.toml)")
    run.add_argument("--broker", help="override broker.url (mqtt://host:port)")
    run.add_argument("--workers", type=int, default=1, help="ingest workers sharing the subscription (default 1)")
    gaps = sub.add_parser("gaps", help="list missing (and reused) sequence ranges per site and stream")
    gaps.add_argument("--config", required=True, help="central TOML file")
    cmd = sub.add_parser(
        "command",
        help="sign a command for a site, send it and wait for its signed result (docs/commands.md)",
        epilog="exit status: 0 applied; 1 refused or failed; 2 bad arguments or configuration; 3 no result within "
        "the timeout (the command stays recorded as sent)",
    )
    cmd.add_argument("--config", required=True, help="central TOML file with a [commands] section")
    cmd.add_argument("--site", required=True, help="the site (the command's audience)")
    cmd.add_argument("--broker", help="override broker.url (mqtt://host:port)")
    cmd.add_argument("--kind", required=True, help=f"one of {', '.join(KINDS)}")
    cmd.add_argument("--target", default="*", help="the device or function, or * (default *)")
    cmd.add_argument("--body", default="{}", help="the body as a JSON object, e.g. '{\"p_limit_pct\": 50}'")
    cmd.add_argument("--for", dest="for_s", type=float, default=None,
                     help=f"seconds the override holds: sets body.until = now + N ({', '.join(UNTIL_KINDS)})")  # fmt: skip
    cmd.add_argument("--key-id", default=None, help="sign with this key (default: the first operator key)")
    cmd.add_argument("--timeout", type=float, default=None, help="seconds to wait for the result "
                     "(default commands.result_timeout_s)")  # fmt: skip
    cmd.add_argument("--json", action="store_true", help="print one JSON object")
    lst = sub.add_parser("commands", help="the commands central sent and what came of them")
    lst.add_argument("--config", required=True, help="central TOML file")
    lst.add_argument("--site", default=None, help="only this site's")
    lst.add_argument("--json", action="store_true", help="print a JSON array")
    add_settlement_parsers(sub)
    add_dispatch_parsers(sub)
    chk = sub.add_parser("check-config", help="validate central's configuration and list every error (exit 2)")
    chk.add_argument("--config", required=True, help="central TOML file")
    add_forecast_parser(sub)
    add_report_parser(sub)
    return p


def _leaves(err: BaseException) -> list[BaseException]:
    if isinstance(err, BaseExceptionGroup):
        return [leaf for sub in err.exceptions for leaf in _leaves(sub)]
    return [err]


async def _run_until_signalled(config: CentralConfig, workers: int) -> None:
    task = asyncio.create_task(run_workers(config, workers))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as err:  # argparse has printed the usage; return instead of exiting the dispatcher
        return 0 if err.code == 0 else 2
    if args.command == "forecast":  # its backtest needs no config; the service loads its own
        return forecast_command(args)
    try:
        config = load_central_config(args.config, getattr(args, "broker", None))
    except CentralConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if args.command == "run":
        if args.workers < 1:
            print(f"--workers = {args.workers}: must be at least 1", file=sys.stderr)
            return 2
        setup_logging()
        log.info("central_starting", config=args.config, workers=args.workers, db=config.store_name)
        try:
            asyncio.run(_run_until_signalled(config, args.workers))
        except Exception as err:  # a TaskGroup wraps the cause; name every leaf for the operator
            for leaf in _leaves(err):
                log.error("central_failed", error=repr(leaf))
            return 3
        log.info("central_stopped")
        return 0
    if args.command == "check-config":  # every error was reported (exit 2) while the file was read
        d = config.dispatch
        print(
            f"{args.config}: ok — store {config.store_name}, {len(config.commands.keys)} signing key(s), "
            + ("no [dispatch]" if d is None else f"dispatch of {len(d.sites)} site(s) on {d.network.name}")
        )
        return 0
    if args.command == "command":
        return _command(args, config)
    if args.command == "dispatch":
        try:
            from central.dispatch.cli import dispatch_command  # opendssdirect: the `dispatch` extra
        except ImportError as err:
            print(f"gridedge central dispatch: {err}; install gridedge[dispatch]", file=sys.stderr)
            return 2
        return dispatch_command(args, config)
    if args.command == "report":
        return report_command(args, config)
    if args.command == "intervals":
        return intervals_command(args, config)
    if args.command == "settle":
        return settle_command(args, config)
    if args.command == "schedule":
        return schedule_command(args, config)
    try:
        store = open_store(config.store_target)
    except CentralStoreError as err:
        print(err, file=sys.stderr)
        return 3
    if args.command == "commands":
        try:
            return _list_commands(args, store)
        finally:
            store.close()
    try:
        found = False
        for site, stream in store.streams():
            for first, last in store.gaps(site, stream):
                found = True
                span = str(first) if first == last else f"{first}-{last}"
                print(f"site={site} stream={stream} missing_seq={span} count={last - first + 1}")
            for first, last in store.reused_seqs(site, stream):
                found = True
                span = str(first) if first == last else f"{first}-{last}"
                print(f"site={site} stream={stream} reused_seq={span} count={last - first + 1} "
                      "(the agent's sequence restarted: a new or erased agent store; gaps below are not seen)")  # fmt: skip
        if not found:
            print("no gaps")
        return 1 if found else 0
    finally:
        store.close()


# ---- central command / central commands ------------------------------------------------------------------------

EXIT_APPLIED, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_RESULT = 0, 1, 2, 3


def _command_body(args: argparse.Namespace, now: float) -> dict[str, Any]:
    """The body from --body and --for; CommandError naming the flag."""
    try:
        body = json.loads(args.body)
    except json.JSONDecodeError as err:
        raise CommandError(f"--body = {args.body!r:.80}: not JSON ({err.msg})") from None
    if not isinstance(body, dict):
        raise CommandError(f"--body = {args.body!r:.80}: a JSON object")
    if args.for_s is not None:
        if args.kind not in UNTIL_KINDS:
            raise CommandError(f"--for: {args.kind} has no until; --for applies to {', '.join(UNTIL_KINDS)}")
        if not 0 < args.for_s <= MAX_HOLD_S:
            raise CommandError(f"--for = {args.for_s:g}: seconds in (0, {MAX_HOLD_S:g}] (MAX_HOLD_S)")
        body["until"] = round(now + args.for_s, 3)
    return body


def _command(args: argparse.Namespace, config: CentralConfig) -> int:
    if not valid_site(args.site):
        print(f"--site = {args.site!r}: 1-64 letters, digits, '_', '.', '-'", file=sys.stderr)
        return EXIT_USAGE
    if args.timeout is not None and not 0 < args.timeout <= 3600:
        print(f"--timeout = {args.timeout:g}: seconds in (0, 3600]", file=sys.stderr)
        return EXIT_USAGE
    try:
        body = _command_body(args, time.time())
    except CommandError as err:
        print(f"gridedge central command: {err}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging("warning", stream=sys.stderr)
    try:
        store = open_store(config.store_target)
    except CentralStoreError as err:
        print(err, file=sys.stderr)
        return 3
    try:
        outcome = asyncio.run(_send(config, store, args, body))
    except CommandError as err:
        print(f"gridedge central command: {err}", file=sys.stderr)
        return EXIT_USAGE
    except TimeoutError:
        print(f"gridedge central command: the broker {config.broker.host}:{config.broker.port} did not take the "
              "command in time (not sent, or sent without the broker's acknowledgement)", file=sys.stderr)  # fmt: skip
        return EXIT_NO_RESULT
    finally:
        store.close()
    if args.json:
        print(json.dumps(outcome.to_dict(), sort_keys=True))
    else:
        print(_outcome_text(outcome))
    if outcome.status == "applied":
        return EXIT_APPLIED
    return EXIT_NO_RESULT if outcome.status == "sent" else EXIT_REFUSED


async def _send(config: CentralConfig, store: Store, args: argparse.Namespace, body: dict[str, Any]) -> Outcome:
    cmds = config.commands
    timeout = cmds.result_timeout_s if args.timeout is None else args.timeout
    # A client id of its own: two CLIs (or a CLI and the ingest) must not take each other's session.
    session = MqttSession(config.broker.session_config(client_id=f"{config.broker.client_id}-cmd-{uuid.uuid4().hex[:8]}",
                                                       backoff_max_s=min(config.backoff_max_s, 1.0)))  # fmt: skip
    issuer = CommandIssuer(cmds, store, session)
    issuer.check(args.site, args.kind, args.target, body, args.key_id)  # before the broker is even asked
    issuer.watch(args.site)
    task = asyncio.create_task(session.run(), name="central-command-mqtt")
    try:
        await asyncio.wait_for(session.connected.wait(), timeout)
        return await issuer.send(args.site, args.kind, args.target, body, args.key_id, timeout_s=timeout)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _outcome_text(o: Outcome) -> str:
    c = o.command
    status = "no result (still sent)" if o.status == "sent" else o.status
    readback = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(o.readback.items())) or "-"
    return "\n".join([
        f"command  {c.command_id}",
        f"sent     {c.kind} to {c.audience} target {c.target} (key {c.key_id}, seq {c.seq}) at {_when(o.sent_at)}",
        f"result   {status}",
        f"reason   {o.reason or '-'}",
        f"readback {readback}",
    ])  # fmt: skip


def _list_commands(args: argparse.Namespace, store: Store) -> int:
    try:
        found = outcomes(store, args.site)
    except CentralStoreError as err:
        print(err, file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps([o.to_dict() for o in found], sort_keys=True))
        return 0
    if not found:
        print("no commands")
    for o in found:
        c = o.command
        reason = f" reason={json.dumps(o.reason)}" if o.reason else ""
        print(f"{_when(c.issued_at)} site={c.audience} kind={c.kind} target={c.target} key={c.key_id} seq={c.seq} "
              f"status={o.status}{reason} command_id={c.command_id}")  # fmt: skip
    return 0
