"""The arguments of ``gridedge central dispatch`` (kept apart from central/dispatch/cli.py, so that central's other
commands do not load the network model's engine)."""

from __future__ import annotations

from typing import Any


def add_parsers(sub: Any) -> None:
    d = sub.add_parser(
        "dispatch",
        help="schedules for each site from forecasts and the network model, sent as signed commands (docs/dispatch.md)",
        epilog="exit status: 0 done; 1 infeasible, not following (status) or a command not applied (--once); 2 bad "
        "arguments, configuration or inputs; 3 runtime failure",
    )
    d.add_argument("action", nargs="?", default="run", choices=("run", "status"),
                   help="run (default): solve and send; status: is each site following its schedule")  # fmt: skip
    d.add_argument("--config", required=True, help="central TOML file with a [dispatch] section")
    d.add_argument("--once", action="store_true", help="solve and send the current interval once, then exit")
    d.add_argument("--dry-run", action="store_true", help="print the schedule; send and store nothing")
    d.add_argument("--forecast", default=None, help="a forecast CSV (start,load_kw,load_kvar,pv_kw) instead of the "
                   "forecasts table")  # fmt: skip
    d.add_argument("--prices", default=None, help="a price CSV (start,price) instead of the config's price")
    d.add_argument("--now", default=None, help="the time to plan from (epoch s or ISO-8601 UTC; default: the clock, "
                   "or with --forecast and --dry-run its first start)")  # fmt: skip
    d.add_argument("--clock-start", default=None, help="a scaled clock, as a bench site's agent [clock] start: the "
                   "instant (epoch s or ISO-8601 UTC) it reads at --clock-wall-start (default: the wall clock)")  # fmt: skip
    d.add_argument("--clock-wall-start", default=None, help="the wall instant at which the scaled clock reads "
                   "--clock-start (default: when dispatch starts)")  # fmt: skip
    d.add_argument("--clock-speed", type=float, default=None, help="the scaled clock's simulated seconds per wall "
                   "second, as the agent's [clock] speed (default 1)")  # fmt: skip
    d.add_argument("--broker", help="override broker.url (mqtt://host:port)")
    d.add_argument("--timeout", type=float, default=None, help="seconds to wait for each command's result "
                   "(default commands.result_timeout_s)")  # fmt: skip
    d.add_argument("--window", type=float, default=3600.0, help="status: seconds back to judge (default 3600)")
    d.add_argument("--json", action="store_true", help="status: print a JSON array")
