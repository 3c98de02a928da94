"""What an operator does to the safety envelope's persisted state: list it, clear a suspension.

A readback mismatch, hunting or a device taken back at its panel suspends a function on a device until an
operator has looked at the device and clears it (docs/control.md, "Suspensions"):

    python -m agent.control.operator --config SITE list
    python -m agent.control.operator --config SITE clear FUNCTION DEVICE [--by NAME]

It works on the agent's store file, also while the agent runs: the envelope reads its state from the store at
every decision, so a cleared function commands again at its next decision. The clearing is stored with an event
(``control_suspension_cleared``) that goes uplink like every event.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Sequence

from agent.config import ConfigError, load_config
from agent.store import Store, StoreError


def _store(config_path: str) -> Store:
    config = load_config(config_path)
    return Store(config.store.path, config.site_id, config.store.max_bytes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.control.operator", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="the agent's site file (its store is used)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="suspensions and the devices the envelope holds")
    clear = sub.add_parser("clear", help="clear the suspension of FUNCTION on DEVICE")
    clear.add_argument("function")
    clear.add_argument("device")
    clear.add_argument("--by", default=None, help="who clears it (default: the login name)")
    args = parser.parse_args(argv)
    try:
        store = _store(args.config)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    except StoreError as err:
        print(f"store: {err}", file=sys.stderr)
        return 2
    try:
        if args.command == "list":
            flags = store.control_flags()
            if not flags:
                print("no suspension, no device held")
            for f in flags:
                what = "suspended" if f.kind == "suspended" else "held out of its autonomous mode"
                print(f"{f.kind:9} {f.function:10} {f.device:16} since={f.since:.0f} reason={f.reason}  ({what})")
            return 0
        by = args.by or getpass.getuser()
        now = time.time()
        event = (now, "control_suspension_cleared", "info", args.device,
                 f"{args.function} on {args.device}: suspension cleared by {by}", {"function": args.function, "by": by})  # fmt: skip
        if store.control_clear_flag("suspended", args.function, args.device, event):
            print(f"cleared: {args.function} on {args.device} may command again at its next decision")
            return 0
        print(f"no suspension of {args.function} on {args.device}", file=sys.stderr)
        return 1
    except StoreError as err:
        print(f"store: {err}", file=sys.stderr)
        return 2
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
