"""Every log line of the product is an ``event=<name> key=value`` line on a ``gridedge.<subsystem>`` logger,
written through protocols/eventlog.py, and docs/log-events.md lists exactly the events the code can write.

The source is read with ``ast``, so a module that logs another way, an event name built at run time or an event
missing from the operators' table fails here, before an operator's grep misses it.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from protocols.eventlog import EVENT_NAME_RE, LOGGER_PREFIX, parse_line

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("agent", "protocols", "central", "sim_hw", "gridedge.py", "gridedge_demo.py")
EVENTLOG = ROOT / "protocols" / "eventlog.py"
DOC = ROOT / "docs" / "log-events.md"
#: Other libraries' loggers the product quiets (their faults reach us as exceptions, logged in our dialect).
THIRD_PARTY = frozenset({"pymodbus", "pymodbus.logging"})
LEVEL_METHODS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR", "exception": "ERROR"}
LOG_RECEIVERS = frozenset({"log", "self.log"})  # the names an EventLog goes by in the code


def _modules() -> list[Path]:
    out: list[Path] = []
    for name in SOURCES:
        path = ROOT / name
        out += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return out


@dataclass(frozen=True)
class Call:
    """One EventLog call found in the source."""

    where: str
    receiver: str  # "log" (the module's EventLog) or "self.log" (one handed in)
    event: str | None  # None: not a literal
    level: str | None  # None: chosen at run time (``log.log(level, ...)``)
    logger: str | None  # None: an EventLog handed in (``self.log``), the producer's
    keys: frozenset[str]
    splat: bool  # fields also come from ``**mapping``


def _module_logger(tree: ast.Module) -> str | None:
    for node in tree.body:
        if (isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["log"]
                and isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "EventLog"
                and len(node.value.args) == 1 and isinstance(node.value.args[0], ast.Constant)):  # fmt: skip
            return f"{LOGGER_PREFIX}.{node.value.args[0].value}"
    return None


def _calls(path: Path) -> list[Call]:
    tree = ast.parse(path.read_text(), str(path))
    logger = _module_logger(tree)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in (*LEVEL_METHODS, "log") and ast.unparse(node.func.value) in LOG_RECEIVERS):  # fmt: skip
            continue
        args = list(node.args)
        level = LEVEL_METHODS.get(node.func.attr)
        if node.func.attr == "log":
            first = args.pop(0)
            if isinstance(first, ast.Attribute) and ast.unparse(first.value) == "logging":
                level = first.attr
        name = args[0].value if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str) else None
        found.append(Call(
            where=f"{path.relative_to(ROOT)}:{node.lineno}", receiver=ast.unparse(node.func.value), event=name,
            level=level,
            logger=logger if ast.unparse(node.func.value) == "log" else None,
            keys=frozenset(k.arg for k in node.keywords if k.arg is not None),
            splat=any(k.arg is None for k in node.keywords) or len(args) != 1,
        ))  # fmt: skip
    return found


CALLS = [call for path in _modules() for call in _calls(path)]


# ---- the code: one helper, one dialect -----------------------------------------------------------------------


def test_the_scan_finds_the_products_log_calls() -> None:
    """A guard on the guard: the scan sees the calls (a renamed receiver would make every check pass vacuously)."""
    assert len(CALLS) > 150
    assert {"agent_started", "store_open", "mqtt_link_down", "central_stopped", "bench_up"} <= {c.event for c in CALLS}


def test_no_module_logs_through_the_logging_module_itself() -> None:
    """Only protocols/eventlog.py makes loggers and sets up handlers; elsewhere ``logging.getLogger`` only quiets
    another library's logger, and nothing calls ``logging.info(...)`` or ``basicConfig``."""
    bad = []
    for path in _modules():
        if path == EVENTLOG:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            func = ast.unparse(node.func)
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if func == "logging.getLogger":
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, ast.Constant) and arg.value in THIRD_PARTY):
                    bad.append(f"{where}: {ast.unparse(node)} (use protocols.eventlog.EventLog)")
            elif func.startswith("logging.") and node.func.attr in (*LEVEL_METHODS, "log", "basicConfig", "critical"):
                bad.append(f"{where}: {ast.unparse(node)}")
    assert not bad, "\n".join(bad)


def test_every_module_that_logs_names_one_gridedge_logger() -> None:
    """A module's ``log`` is ``EventLog("<subsystem>")`` with a literal subsystem, so its logger is known from the
    source (and the table below can name it)."""
    bad = sorted({c.where for c in CALLS if c.receiver == "log" and c.logger is None})
    assert not bad, f"modules using `log` without `log = EventLog(...)`: {bad}"


def test_every_event_name_is_a_literal_in_the_dialect() -> None:
    """The event name is the first argument, a string literal an operator can grep the source for; the
    fields are keywords."""
    bad = [f"{c.where}: {c.event!r}" for c in CALLS if c.event is None or not EVENT_NAME_RE.match(c.event)]
    assert not bad, "\n".join(bad)


def test_no_field_key_needs_quoting() -> None:
    bad = [f"{c.where}: {k}" for c in CALLS for k in c.keys if not EVENT_NAME_RE.match(k) or k == "event"]
    assert not bad, bad


# ---- the operators' table ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    event: str
    levels: frozenset[str]
    loggers: frozenset[str]
    fields: frozenset[str]
    line: int


def _rows() -> list[Row]:
    rows = []
    for n, line in enumerate(DOC.read_text().splitlines(), start=1):
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) != 5 or not re.fullmatch(r"`[a-z][a-z0-9_]*`", cells[0]):
            continue  # the header, its rule, a subsystem's heading row
        rows.append(Row(
            event=cells[0].strip("`"),
            levels=frozenset(re.findall(r"\b(DEBUG|INFO|WARNING|ERROR)\b", cells[1])),
            loggers=frozenset(re.findall(r"gridedge(?:\.[a-z0-9_]+)+", cells[2])),
            fields=frozenset(re.findall(r"`([a-z][a-z0-9_]*)`", cells[3])),
            line=n,
        ))  # fmt: skip
    return rows


ROWS = _rows()


def test_the_table_has_one_row_per_event_and_logger() -> None:
    assert len(ROWS) > 100
    seen: dict[tuple[str, str], int] = {}
    for row in ROWS:
        assert row.levels and row.loggers, f"docs/log-events.md:{row.line}: {row.event} needs a level and a logger"
        for logger in row.loggers:
            key = (row.event, logger)
            assert key not in seen, f"docs/log-events.md:{row.line}: {key} is also on line {seen[key]}"
            seen[key] = row.line


def test_every_event_in_the_code_is_in_the_table() -> None:
    documented = {r.event for r in ROWS}
    missing = sorted({f"{c.event} ({c.where})" for c in CALLS if c.event not in documented})
    assert not missing, "events missing from docs/log-events.md:\n" + "\n".join(missing)


def test_every_event_in_the_table_is_in_the_code() -> None:
    logged = {c.event for c in CALLS}
    stale = [f"docs/log-events.md:{r.line}: {r.event}" for r in ROWS if r.event not in logged]
    assert not stale, "events the code no longer writes:\n" + "\n".join(stale)


@pytest.mark.parametrize("call", [c for c in CALLS if c.logger is not None], ids=lambda c: c.where)
def test_the_tables_row_names_the_calls_logger_level_and_fields(call: Call) -> None:
    rows = [r for r in ROWS if r.event == call.event and call.logger in r.loggers]
    assert rows, f"{call.where}: no row for {call.event} on {call.logger}"
    (row,) = rows
    if call.level is not None:
        assert call.level in row.levels, f"{call.where}: {call.event} at {call.level}; the table says {row.levels}"
    assert call.keys <= row.fields, f"{call.where}: fields {sorted(call.keys - row.fields)} not in the table"


def test_every_field_in_the_table_is_written_by_the_code() -> None:
    stale = []
    for row in ROWS:
        calls = [c for c in CALLS if c.event == row.event and (c.logger is None or c.logger in row.loggers)]
        if calls and not any(c.splat for c in calls):
            written = frozenset().union(*(c.keys for c in calls))
            stale += [f"docs/log-events.md:{row.line}: {row.event} {f}" for f in sorted(row.fields - written)]
    assert not stale, "fields the code does not write:\n" + "\n".join(stale)


# ---- the processes: one format on stderr ------------------------------------------------------------------------

LINE_RE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)Z (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<logger>gridedge(?:\.[a-z0-9_]+)+) event=[a-z][a-z0-9_]*( .*)?$"
)
NOT_UTC = {**os.environ, "TZ": "Asia/Kathmandu", "PYTHONPATH": str(ROOT)}  # UTC+5:45: a local clock would show


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lines(stderr: str) -> list[dict[str, str]]:
    """Each stderr line in the one format (asserted), as its pairs plus ``level``, ``logger`` and ``ts``."""
    out = []
    for line in stderr.splitlines():
        m = LINE_RE.match(line)
        assert m, f"not a log line in the dialect: {line!r}\n{stderr[-3000:]}"
        ts = datetime.strptime(m["ts"], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        assert abs((ts - datetime.now(UTC)).total_seconds()) < 3600, f"not UTC: {line!r}"
        out.append({**parse_line(line), "level": m["level"], "logger": m["logger"]})
    return out


def _wait_for(proc: subprocess.Popen[str], text: str, timeout_s: float) -> str:
    """stderr up to and including the first line holding ``text`` (the process must not end before)."""
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + timeout_s
    while text not in seen:
        assert time.monotonic() < deadline and proc.poll() is None, f"no {text!r} in:\n{seen[-3000:]}"
        seen += proc.stderr.readline()
    return seen


_PQ_AGENT = """
import asyncio, sys
from protocols.eventlog import setup_logging
setup_logging(sys.argv[1])
from agent.pq.config import WaveformStreamConfig
from agent.pq.events import EventConfig
from agent.pq.worker import PqWorker

class Outlets:
    def __call__(self, readings): pass
    async def add_event(self, *args, **kw): pass

async def main():
    cfg = WaveformStreamConfig(name="pq1", host="127.0.0.1", port=int(sys.argv[2]), nominal_hz=60, lamp_v=120,
                               events=EventConfig(udin_v=120.0))
    worker = PqWorker([cfg], Outlets(), Outlets())
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(60):  # the child reports the stream refused at least once
        while not worker.status().get("pq1", {}).get("connect_failures"):
            await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

asyncio.run(main())
"""


@pytest.mark.integration
@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_the_pq_childs_lines_reach_the_agents_stderr_in_the_dialect_at_the_agents_level(level: str) -> None:
    """The PQ worker shares the agent's stderr: its lines and the agent's are one log, one format (UTC), and the
    child logs at the agent's level."""
    proc = subprocess.run([sys.executable, "-c", _PQ_AGENT, level, str(_closed_port())], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=NOT_UTC)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = _lines(proc.stderr)
    events = {(ln["event"], ln["logger"]) for ln in lines}
    assert ("pq_stream_down", "gridedge.pq") in events, proc.stderr  # the child's, a WARNING: at both levels
    down = next(ln for ln in lines if ln["event"] == "pq_stream_down")
    assert down["stream"] == "pq1" and "ConnectionRefusedError" in down["error"], down
    if level == "INFO":
        started = next(ln for ln in lines if ln["event"] == "pq_worker_started")  # the agent's side
        running = next(ln for ln in lines if ln["event"] == "pq_worker_running")  # the child's
        assert started["logger"] == running["logger"] == "gridedge.pq.worker"
        assert started["pid"] == running["pid"], (started, running)
        assert ("pq_worker_stopping", "gridedge.pq.worker") in events, proc.stderr
    else:
        assert {ln["level"] for ln in lines} <= {"WARNING", "ERROR"}, proc.stderr


@pytest.mark.integration
def test_central_logs_its_life_in_the_dialect(tmp_path: Path) -> None:
    """``gridedge central run`` with its broker down: the start, the refused connections and the stop, each a line
    of the one format on central's loggers."""
    conf = tmp_path / "central.toml"
    conf.write_text(f'[broker]\nurl = "mqtt://127.0.0.1:{_closed_port()}"\n[store]\ndb = "central.db"\n')
    proc = subprocess.Popen([sys.executable, "-m", "gridedge", "central", "run", "--config", str(conf)], cwd=ROOT,
                            env=NOT_UTC, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        seen = _wait_for(proc, "event=mqtt_connect_failed", 60)
        proc.send_signal(signal.SIGTERM)
        seen += proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, seen
    lines = _lines(seen)
    assert [(ln["event"], ln["logger"]) for ln in lines if ln["event"].startswith("central_")] == [
        ("central_starting", "gridedge.central"), ("central_worker_started", "gridedge.central.ingest"),
        ("central_stopped", "gridedge.central")]  # fmt: skip
    failed = next(ln for ln in lines if ln["event"] == "mqtt_connect_failed")
    assert failed["logger"] == "gridedge.mqtt" and failed["level"] == "WARNING" and failed["reason"], failed
