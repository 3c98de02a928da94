"""``gridedge central run|gaps``: the reference central service's commands.

gridedge.py hands everything after the word ``central`` to :func:`main`, so central never imports the agent.
Exit codes: 0 success, 1 gaps or reused sequence numbers found (``gaps``), 2 bad usage or configuration, 3 runtime failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from central.config import CentralConfig, CentralConfigError, load_central_config
from central.ingest import run_workers
from central.store import CentralStore, CentralStoreError
from protocols.eventlog import EventLog, setup_logging

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
        log.info("central_starting", config=args.config, workers=args.workers, db=config.db_path)
        try:
            asyncio.run(_run_until_signalled(config, args.workers))
        except Exception as err:  # a TaskGroup wraps the cause; name every leaf for the operator
            for leaf in _leaves(err):
                log.error("central_failed", error=repr(leaf))
            return 3
        log.info("central_stopped")
        return 0
    try:
        store = CentralStore(config.db_path)
    except CentralStoreError as err:
        print(err, file=sys.stderr)
        return 3
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
