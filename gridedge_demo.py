"""``gridedge demo``: the simulated substation, the agent and central together against a real Mosquitto on
loopback, each as its own process started through the ``gridedge`` command, exactly as they would run in the
field. It sits beside gridedge.py, not in any of the three packages, because it runs all of them.

The parts start one after the other, each only once the one before is up: Mosquitto (a free port), central, the
bench (which plays the demo's scenario), the agent. A part that fails to start fails the demo at once, with the
part's own reason; the parts already started are stopped. Then, every second, a live line of the agent's
figures; each scenario step as the bench plays it (from the bench's truth log, sim_hw/truthlog.py); and what the
agent made of it as it reaches central's store: its events, devices whose readings stop being good (and when
they are good again), energy registers that go back. At the end, the scenario and the agent's evidence counted,
and whether every reading the agent took is in central's store (``lost: 0``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from protocols.eventlog import setup_logging

ROOT = Path(__file__).resolve().parent
CONFIG_DIR = ROOT / "config"
# The demo's files in a config folder (its runtime files land in run/ beside that folder).
SIM_CONFIG = "sim-ieee13.toml"
AGENT_CONFIG = "agent-sim.toml"
CENTRAL_CONFIG = "central.toml"
SCENARIO = "scenarios/ieee13-demo.toml"  # a PMU losing sync, a fault, a cloud, a silent unit, a meter swap

# The demo's signed command (docs/commands.md): central limits pv675 to 80 % of its rating for five minutes,
# once the agent has been up this long: after the cap bank's first switching (about 11 s in), which a DER set point
# in flight would hold, since a slower layer moves only once the faster ones have settled (docs/control.md). Keys are made fresh for each run (never shipped: a published private key
# would let anyone command a site that copied the demo's files), in run/demo/keys.
COMMAND_AFTER_S = 12.0
COMMAND_ARGS = ("--kind", "der.setpoint", "--target", "pv675", "--body", '{"p_limit_pct": 80}', "--for", "300")
_START_TIMEOUT_S = {"mosquitto": 10.0, "central": 30.0, "sim": 90.0, "agent": 30.0}  # OpenDSS's import is slow
_MEASURING_WAIT_S = 20.0  # the agent's PQ worker imports numpy and scipy before it connects
_LABEL = {"mosquitto": "Mosquitto", "central": "central", "sim": "the bench", "agent": "the agent"}
_QUALITY_MEANS = {
    "stale": "the device does not answer",
    "invalid": "values not to be trusted",
    "flagged": "measured during a dip, swell or interruption",
    "estimated": "estimated, not measured",
}
_ENERGY_UNITS = ("Wh", "varh", "VAh")


class DemoError(Exception):
    """A part of the demo could not start or stopped: the message names it and gives its reason."""


class DemoStopped(Exception):
    """Ctrl-C (or SIGTERM) while the parts were starting."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for the demo's broker; benchmarks use it too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float) -> bool:
    """True once something accepts connections on 127.0.0.1:port, False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        time.sleep(0.05)
    return False


def _read_json(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _central_query(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of a read-only query of central's store; none while the store does not exist or is busy."""
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []


def _central_readings(db: Path) -> int | None:
    rows = _central_query(db, "SELECT count(*) FROM readings")
    return rows[0][0] if rows else None


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def with_commands(config_dir: Path, keys: Path) -> tuple[Path, Path]:
    """The agent's and central's files for this run: the shipped ones with a ``[commands]`` section each, on key
    pairs made now (the agent's, to sign its results; central's operator key ``ops-1``). They are written beside
    the shipped files (hidden, ``.<name>.demo-<tag>.toml``, removed when the demo stops) so the relative paths in
    them still resolve."""
    from protocols.telemetry.commands import generate_key, private_pem, public_text

    keys.mkdir(parents=True, exist_ok=True)
    pub = {}
    for name in ("agent", "ops-1"):
        k = generate_key()
        path = keys / f"{name}.key"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_pem(k))
        pub[name] = public_text(k.public_key())
    agent_text = (config_dir / AGENT_CONFIG).read_text()
    site = next(line.split("=", 1)[1].strip().strip('"') for line in agent_text.splitlines()
                if line.startswith("site_id"))  # fmt: skip
    # named after the run's folder: demos (and tests) with other folders on the same config never share one
    tag = hashlib.sha256(str(keys.resolve()).encode()).hexdigest()[:8]
    agent = config_dir / f".{AGENT_CONFIG.removesuffix('.toml')}.demo-{tag}.toml"
    agent.write_text(
        agent_text
        + "\n# -- added by gridedge demo: central's signed commands (docs/commands.md), keys made for this run\n"
        f'[commands]\nagent_key_file = "{keys / "agent.key"}"\n'
        f'[[commands.keys]]\nkey_id = "ops-1"\nrole = "operator"\npublic_key = "{pub["ops-1"]}"\n'
    )
    central = config_dir / f".{CENTRAL_CONFIG.removesuffix('.toml')}.demo-{tag}.toml"
    central.write_text(
        (config_dir / CENTRAL_CONFIG).read_text()
        + "\n# -- added by gridedge demo: signing keys made for this run (docs/commands.md)\n"
        "[commands]\nresult_timeout_s = 20\nvalid_s = 120\n"
        f'[[commands.keys]]\nkey_id = "ops-1"\nrole = "operator"\nkey_file = "{keys / "ops-1.key"}"\n'
        f'[commands.sites.{site}]\nagent_key = "{pub["agent"]}"\n'
    )
    return agent, central


class Demo:
    """The four processes of the demo. ``start()`` raises DemoError naming the part that did not start (and
    stops the others); ``stop_all()`` stops them in order."""

    def __init__(self, workdir: Path, *, agent_python: str | None = None, config_dir: Path = CONFIG_DIR) -> None:
        from agent.config import load_config  # the agent's own view of where its store and status are
        from agent.service import status_path
        from central.config import load_central_config

        self.workdir = workdir
        self.config_dir = config_dir
        # The interpreter the agent runs under (benchmarks/memory.py: one with the runtime dependencies only,
        # as on a Pi); the others always run under this one.
        self.agent_python = agent_python or sys.executable
        self.procs: dict[str, subprocess.Popen] = {}
        self.port = free_port()
        self.broker_url = f"mqtt://127.0.0.1:{self.port}"
        self.agent_file, self.central_file = with_commands(config_dir, workdir / "keys")
        self.agent_config = load_config(self.agent_file)
        self.agent_status = status_path(self.agent_config)
        central = load_central_config(self.central_file)
        self.command: subprocess.Popen | None = None  # the demo's signed command, once sent
        self.central_db = central.db_path
        self.central_status = central.status_file
        self.truth_log = workdir / "truth.jsonl"
        self.stopping = False  # set by the signal handler: a start under way gives up

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        # Each child leads its own process group: a Ctrl-C at the terminal reaches the demo alone, which then
        # stops the children in order (the agent first, so it drains to central while the broker is still up),
        # and a stop reaches the child's own children too (the bench's socat). If the demo itself dies, the
        # kernel sends each child SIGTERM (PR_SET_PDEATHSIG), so none is left running.
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it for its life
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, process_group=0, preexec_fn=_die_with_parent
        )
        log.close()
        self.procs[name] = proc
        return proc

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def _wait_up(self, name: str, is_up: Callable[[], bool]) -> None:
        """Until ``is_up()`` holds; DemoError with the part's own last word if it exits or takes too long."""
        proc = self.procs[name]
        deadline = time.monotonic() + _START_TIMEOUT_S[name]
        while not is_up():
            if proc.poll() is not None:
                reason = _last_line(self.log_path(name)) or f"exit code {proc.returncode}"
                raise DemoError(f"{_LABEL[name]} did not start: {reason} (log: {self.log_path(name)})")
            if self.stopping:
                raise DemoStopped
            if time.monotonic() > deadline:
                raise DemoError(f"{_LABEL[name]} was not up after {_START_TIMEOUT_S[name]:g} s "
                                f"(log: {self.log_path(name)})")  # fmt: skip
            time.sleep(0.05)

    def _bench_up(self) -> bool:
        record = next(iter(read_truth_log(self.truth_log)), None)
        return record is not None and record.get("record") == "bench_up" and record.get("pid") == self.procs["sim"].pid

    def _status_written(self, path: Path | None, since: float, pid: int | None = None) -> bool:
        if path is None:  # nothing to watch: alive is all that can be asked
            return True
        try:
            if path.stat().st_mtime < since:
                return False  # left by an earlier run
        except OSError:
            return False
        return pid is None or (_read_json(path) or {}).get("pid") == pid

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop_all()
            raise

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\nset_tcp_nodelay true\nlog_dest stderr\n"
        )
        self._spawn("mosquitto", [mosquitto, "-c", str(conf)])
        self._wait_up("mosquitto", lambda: wait_port(self.port, 0.2))
        exe = [sys.executable, "-m", "gridedge"]
        since = time.time()
        central = self._spawn("central", [*exe, "central", "run", "--config", str(self.central_file),
                                          "--broker", self.broker_url])  # fmt: skip
        self._wait_up("central", lambda: self._status_written(self.central_status, since, central.pid))
        self.truth_log.unlink(missing_ok=True)
        sim_config, scenario = self.config_dir / SIM_CONFIG, self.config_dir / SCENARIO
        self._spawn("sim", [*exe, "sim", "run", "--config", str(sim_config), "--scenario", str(scenario),
                            "--truth", str(self.truth_log)])  # fmt: skip
        self._wait_up("sim", self._bench_up)
        since = time.time()
        agent = [self.agent_python, "-m", "gridedge"]
        self._spawn("agent", [*agent, "run", "--config", str(self.agent_file),
                              "--broker", self.broker_url])  # fmt: skip
        self._wait_up("agent", lambda: self._status_written(self.agent_status, since))
        self._wait_measuring(_MEASURING_WAIT_S)

    def _wait_measuring(self, timeout_s: float) -> None:
        """Until the agent's status shows every PMU and waveform stream connected, or ``timeout_s`` (a stream
        that does not connect is the agent's to report, not a reason to stop the demo)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping:
            st = _read_json(self.agent_status) or {}
            streams = [*(st.get("pmus") or {}).values(), *(st.get("pq") or {}).values()]
            if all(isinstance(s, dict) and s.get("connected") for s in streams):
                return
            time.sleep(0.1)

    def send_command(self) -> None:
        """``gridedge central command`` in the background: central signs, sends and waits for the signed result."""
        out = open(self.workdir / "command.json", "wb")  # noqa: SIM115 - the child owns it for its life
        self.command = subprocess.Popen(
            [sys.executable, "-m", "gridedge", "central", "command", "--config", str(self.central_file), "--site",
             self.agent_config.site_id, *COMMAND_ARGS, "--broker", self.broker_url, "--json", "--timeout", "20"],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=_die_with_parent,
        )  # fmt: skip
        out.close()

    def command_result(self) -> str | None:
        """The command's line once its result is in (None while it is not)."""
        if self.command is None or self.command.poll() is None:
            return None
        text = (self.workdir / "command.json").read_text(errors="replace").strip()
        self.command = None
        try:
            r = json.loads(text.splitlines()[-1])
        except (ValueError, IndexError):
            return f"command:  no result: {text.splitlines()[-1] if text else 'no output'}"
        back = ", ".join(f"{k.split('.')[-1]}={v:g}" for k, v in (r.get("readback") or {}).items()
                         if k.endswith(("WMaxLimPct", "WMaxLimPctEna")) and isinstance(v, int | float))  # fmt: skip
        return (f"command:  central -> {self.agent_config.site_id}: {' '.join(COMMAND_ARGS[1::2][:2])} "
                f"{COMMAND_ARGS[5]} for {COMMAND_ARGS[7]} s, signed by {r.get('key_id')} (seq {r.get('seq')}): "
                f"{r.get('status')}{' (' + r['reason'] + ')' if r.get('reason') else ''}"
                f"{'; read back ' + back if back else ''}")  # fmt: skip

    def check_alive(self) -> str | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                reason = _last_line(self.log_path(name))
                return (f"{_LABEL[name]} exited with code {proc.returncode}" + (f": {reason}" if reason else "")
                        + f" (log: {self.log_path(name)})")  # fmt: skip
        return None

    def stop(self, name: str, timeout_s: float = 20.0) -> None:
        proc = self.procs.get(name)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        # Whatever the child left in its group (it is the group's leader, so the group id is its pid).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        # The agent first: it commits what it took and drains its outbox while central still listens.
        for name in ("agent", "sim", "central", "mosquitto"):
            self.stop(name)
        for path in (self.agent_file, self.central_file):
            path.unlink(missing_ok=True)


_PR_SET_PDEATHSIG = 1  # prctl(2)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the demo's process dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def read_truth_log(path: Path, offset: int = 0) -> list[dict]:
    """The complete records of the bench's truth log from byte ``offset`` (a line still being written waits)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return []
    out = []
    for line in data.split(b"\n")[:-1]:
        offset += len(line) + 1
        with contextlib.suppress(ValueError):
            out.append(json.loads(line) | {"_end": offset})
    return out


class Watch:
    """What the demo shows as it happens: the scenario steps the bench plays (its truth log) and the agent's
    evidence in central's store (events; devices whose readings stop being good; energy registers that go back).
    :meth:`poll` returns the new lines; the counters feed the summary."""

    def __init__(self, truth_log: Path, central_db: Path) -> None:
        self.truth_log = truth_log
        self.central_db = central_db
        self._offset = 0
        self.sim_start: float | None = None
        self._wall_at_start = time.time()
        self._speed = 1.0
        self.scenario: dict | None = None  # the bench_up record's scenario: source, description, events, steps
        self.steps_played = 0
        self.steps_failed = 0
        self._event_rowid = 0
        self._reading_rowid = 0
        self._latest: dict[str, tuple[float, str]] = {}  # point -> (ts, quality) of its newest reading
        self._not_good: dict[str, set[str]] = {}  # device -> its points whose newest reading is not good
        self.devices_not_good: dict[str, set[str]] = {}  # device -> every quality other than good it showed
        self._energy: dict[str, tuple[float, float]] = {}  # point -> (ts, value) of its newest energy reading
        self.registers_back: list[str] = []  # energy points whose value went back
        self._decision_rowid = 0
        self.decisions: Counter[str] = Counter()  # outcome -> the agent's control decisions in central's store
        self.operations: list[str] = []  # the commands that reached a device: "capbank.open on cap675-ctl"

    def _t(self, ts: float) -> str:
        return f"t={ts - (self.sim_start or ts):4.0f}s"

    def now(self) -> float:
        """The bench's simulated clock now [s since the epoch]: every time the demo shows is on it."""
        if self.sim_start is None:
            return time.time()
        return self.sim_start + (time.time() - self._wall_at_start) * self._speed

    def elapsed_s(self) -> float:
        """Simulated seconds since the bench's step 0."""
        return self.now() - (self.sim_start or self.now())

    def poll(self) -> list[str]:
        return self._scenario_lines() + self._event_lines() + self._decision_lines() + self._reading_lines()

    def _decision_lines(self) -> list[str]:
        """The agent's control decisions as they reach central (its ``control`` stream, docs/control.md)."""
        rows = _central_query(self.central_db, "SELECT rowid, ts, function, device, verdict, outcome, data "
                              "FROM decisions WHERE rowid > ? ORDER BY rowid", (self._decision_rowid,))  # fmt: skip
        out = []
        for rowid, ts, function, device, verdict, outcome, data in rows:
            self._decision_rowid = max(self._decision_rowid, rowid)
            d = json.loads(data) if data else {}
            action = (d.get("command") or {}).get("action") or "no command"
            self.decisions[outcome] += 1
            if outcome == "applied":
                self.operations.append(f"{action} on {device}")
            why = d.get("rule", "")
            if verdict.startswith("refused:"):
                why += f"; refused: {verdict.removeprefix('refused:')}"
            elif outcome == "advised":
                why += f"; the envelope would answer: {(d.get('detail') or {}).get('would')}"
            when = self._t(ts).replace(" ", "")
            out.append(f"{self._t(self.now())} control:  {function} {device} {action}: {outcome} ({why}) at {when}")
        return out

    def _scenario_lines(self) -> list[str]:
        out = []
        for rec in read_truth_log(self.truth_log, self._offset):
            self._offset = rec["_end"]
            if rec.get("record") == "bench_up":
                self.sim_start = rec.get("sim_start")
                self._wall_at_start = rec.get("wall", time.time())
                self._speed = rec.get("speed", 1.0)
                self.scenario = rec.get("scenario")
            elif rec.get("record") == "scenario_step":
                if rec.get("error"):
                    self.steps_failed += 1
                    out.append(f"{self._t(rec['ts'])} scenario: {rec.get('text')} FAILED: {rec['error']}")
                else:
                    self.steps_played += 1
                    out.append(f"{self._t(rec['ts'])} scenario: {rec.get('text')}")
        return out

    def _event_lines(self) -> list[str]:
        rows = _central_query(self.central_db, "SELECT rowid, ts, kind, severity, source, text FROM events "
                              "WHERE rowid > ? ORDER BY rowid", (self._event_rowid,))  # fmt: skip
        groups: dict[tuple, list[tuple]] = {}  # one line for the events one check raised at once
        for row in rows:
            self._event_rowid = max(self._event_rowid, row[0])
            groups.setdefault((row[1], row[2], row[4]), []).append(row)
        out = []
        for (ts, kind, _source), group in sorted(groups.items()):
            more = f" (and {len(group) - 1} more like it)" if len(group) > 1 else ""
            when = self._t(ts).replace(" ", "")
            out.append(f"{self._t(self.now())} agent:    event {kind} ({group[0][3]}) at {when}: {group[0][5]}{more}")
        return out

    def _reading_lines(self) -> list[str]:
        out = []
        while True:
            rows = _central_query(self.central_db, "SELECT rowid, point, ts, value, unit, quality FROM readings "
                                  "WHERE rowid > ? ORDER BY rowid LIMIT 20000", (self._reading_rowid,))  # fmt: skip
            if not rows:
                return out
            for rowid, point, ts, value, unit, quality in rows:
                self._reading_rowid = rowid
                out += self._quality(point, ts, quality) + self._register(point, ts, value, unit, quality)

    def _quality(self, point: str, ts: float, quality: str) -> list[str]:
        newest = self._latest.get(point)
        if newest is not None and ts < newest[0]:
            return []  # an older reading arriving late says nothing about now
        self._latest[point] = (ts, quality)
        device = point.split(".", 1)[0]
        bad = self._not_good.setdefault(device, set())
        was_good = not bad
        now, when = self._t(self.now()), self._t(ts).replace(" ", "")
        if quality == "good":
            bad.discard(point)
            return [f"{now} agent:    {device} readings good again from {when}"] if not was_good and not bad else []
        bad.add(point)
        self.devices_not_good.setdefault(device, set()).add(quality)
        if was_good:
            meaning = _QUALITY_MEANS.get(quality, quality)
            return [f"{now} agent:    {device} readings {quality} from {when}: {meaning}"]
        return []

    def _register(self, point: str, ts: float, value: object, unit: str, quality: str) -> list[str]:
        if unit not in _ENERGY_UNITS or quality != "good" or not isinstance(value, int | float):
            return []
        before = self._energy.get(point)
        if before is not None and ts < before[0]:
            return []
        self._energy[point] = (ts, float(value))
        if before is None or value >= before[1]:
            return []
        self.registers_back.append(point)
        return [f"{self._t(self.now())} agent:    {point} went back from {before[1]:.0f} to {value:.0f} {unit} at "
                f"{self._t(ts).replace(' ', '')} (the register restarted)"]  # fmt: skip

    def event_counts(self) -> Counter[str]:
        return Counter(dict(_central_query(self.central_db, "SELECT kind, count(*) FROM events GROUP BY kind")))

    def summary(self) -> list[str]:
        lines = []
        if self.scenario is not None:
            total = self.scenario.get("steps", 0)
            line = (f"scenario: {self.steps_played} of {total} steps played ({self.scenario.get('events', 0)} events"
                    f" of {Path(self.scenario.get('source', '')).name}), {self.steps_failed} failed")  # fmt: skip
            if self.steps_played + self.steps_failed < total:
                line += "; the rest comes later in the scenario: run longer (DEMO_SECONDS)"
            lines.append(line)
        kinds = self.event_counts()
        events = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) or "none"
        not_good = ", ".join(f"{d} ({'/'.join(sorted(q))})" for d, q in sorted(self.devices_not_good.items()))
        back = ", ".join(sorted(set(self.registers_back))) or "none"
        lines.append(f"agent's evidence in central's store: {sum(kinds.values())} events ({events}); "
                     f"readings not good from {not_good or 'no device'}; energy registers gone back: {back}")  # fmt: skip
        outcomes = ", ".join(f"{k} {n}" for k, n in sorted(self.decisions.items())) or "none yet"
        ops = ", ".join(self.operations) or "none"
        lines.append(f"control: {sum(self.decisions.values())} decisions in central's store ({outcomes}); "
                     f"operations carried out: {ops}")  # fmt: skip
        return lines


def _control_live(ctl: dict | None) -> str:
    """`` control=control decisions=3 last=capbank:capbank.open:applied``: the agent's control, from its status."""
    if not ctl:
        return ""
    env = ctl.get("envelope") or {}
    last = max((env.get("last_decisions") or {}).values(), key=lambda d: d.get("ts") or 0, default=None)
    text = f" control={ctl.get('mode')} decisions={sum((env.get('decisions') or {}).values())}"
    if last is not None:
        text += f" last={last.get('device')}:{last.get('action') or last.get('rule')}:{last.get('outcome')}"
    return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gridedge demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The simulated IEEE 13-node substation, the agent and central together, against a real\n"
        "Mosquitto on a free loopback port. The bench plays the demo's scenario; each of its steps is shown\n"
        "as it happens, and so is what the agent reported of it in central's store.",
        epilog="environment:\n"
        "  DEMO_SECONDS=N   stop N seconds after every part is up (DEMO_SECONDS=20 shows the whole scenario);\n"
        "                   unset or 0: run until Ctrl-C\n\n"
        "Logs, the bench's truth log and the stores go to run/ beside the config folder (run/demo/ for the logs).\n"
        "Exit: 0 every reading the agent took is in central's store (lost: 0); 1 a part did not start or stopped,\n"
        "or readings were lost; 2 bad command line or DEMO_SECONDS.",
    )
    p.add_argument("--config-dir", type=Path, default=CONFIG_DIR, metavar="DIR",
                   help=f"the folder holding {SIM_CONFIG}, {AGENT_CONFIG}, {CENTRAL_CONFIG} and {SCENARIO} "
                   "(default: the repository's config/)")  # fmt: skip
    return p


def _demo_seconds(text: str) -> float | None:
    try:
        seconds = float(text or 0)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _lock(workdir: Path) -> int | None:
    """Hold the demo's lock for this process's life; None when another demo holds it."""
    fd = os.open(workdir / "demo.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed the usage or the help
        return int(exit_.code or 0)
    setup_logging("WARNING")  # the demo speaks on stdout; a warning from its own code is a log line in the dialect
    seconds = _demo_seconds(os.environ.get("DEMO_SECONDS", ""))
    if seconds is None:
        print(f"gridedge demo: DEMO_SECONDS = {os.environ['DEMO_SECONDS']!r}: must be a number of seconds >= 0 "
              "(0 or unset: until Ctrl-C)", file=sys.stderr)  # fmt: skip
        return 2
    config_dir = args.config_dir.resolve()
    missing = [
        name for name in (SIM_CONFIG, AGENT_CONFIG, CENTRAL_CONFIG, SCENARIO) if not (config_dir / name).is_file()
    ]
    if missing:
        print(f"gridedge demo: --config-dir {args.config_dir}: no {', '.join(missing)}", file=sys.stderr)
        return 2
    # The bench runs in a child process; find out here, not from its log, that the extra is missing.
    for module in ("opendssdirect", "opender"):
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    from protocols.configcheck import ConfigError

    workdir = config_dir.parent / "run" / "demo"
    try:
        demo = Demo(workdir, config_dir=config_dir)
    except ConfigError as err:
        print(f"gridedge demo: {err}", file=sys.stderr)
        return 2
    workdir.mkdir(parents=True, exist_ok=True)
    if _lock(workdir) is None:  # held until this process exits
        holder = (workdir / "demo.lock").read_text().strip()
        print(f"gridedge demo: another demo runs from {config_dir} (pid {holder or '?'}): stop it first",
              file=sys.stderr)  # fmt: skip
        return 1
    for stale in (demo.agent_config.store.path, demo.agent_status, demo.central_db):
        for p in (stale, stale.with_name(stale.name + "-wal"), stale.with_name(stale.name + "-shm")):
            p.unlink(missing_ok=True)

    def _on_signal(signum: int, frame: object) -> None:
        demo.stopping = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    print(f"gridedge demo: broker {demo.broker_url}, logs in {workdir}; Ctrl-C to stop", flush=True)
    try:
        demo.start()
    except DemoStopped:
        return 130
    except DemoError as err:
        print(f"gridedge demo: {err}", file=sys.stderr)
        return 1
    watch = Watch(demo.truth_log, demo.central_db)
    for line in watch.poll():
        print(line, flush=True)
    description = (watch.scenario or {}).get("description")
    print("gridedge demo: Mosquitto, central, the bench and the agent are up"
          + (f"; the scenario: {description}" if description else ""), flush=True)  # fmt: skip
    failure = None
    started = time.monotonic()
    next_line = started + 1.0
    sent, command_line = False, "command:  not sent (the demo stopped first)"
    try:
        while not demo.stopping and (seconds <= 0 or time.monotonic() - started < seconds):
            time.sleep(0.25)
            if demo.stopping:  # a child that exits now is being stopped with the rest, not failing
                break
            failure = demo.check_alive()
            if failure:
                print(f"gridedge demo: {failure}", file=sys.stderr, flush=True)
                break
            for line in watch.poll():
                print(line, flush=True)
            if not sent and time.monotonic() - started >= COMMAND_AFTER_S:
                sent = True
                demo.send_command()
            line = demo.command_result()
            if line is not None:
                command_line = line
                print(f"t={watch.elapsed_s():4.0f}s {line}", flush=True)
            if time.monotonic() < next_line:
                continue
            next_line += 1.0
            st = _read_json(demo.agent_status) or {}
            store = st.get("store") or {}
            central = _central_readings(demo.central_db)
            print(
                f"t={watch.elapsed_s():4.0f}s live:     points={st.get('points', 0)} "
                f"readings_stored={store.get('readings_taken', 0)} "
                f"outbox={store.get('unsealed', 0) + store.get('outbox_readings', 0)} "
                f"acked_by_central={store.get('acked_readings', 0)} central_store={central or 0} "
                f"broker={'up' if st.get('connected') else 'down'} "
                f"scenario={watch.steps_played}/{(watch.scenario or {}).get('steps', 0)}"
                f"{_control_live(st.get('control'))}",
                flush=True,
            )
    finally:
        demo.stop_all()
    for line in watch.poll():  # what the agent drained to central while it stopped
        print(line, flush=True)
    st = _read_json(demo.agent_status) or {}
    store = st.get("store") or {}
    taken = store.get("readings_taken", 0)
    buffered = store.get("unsealed", 0) + store.get("outbox_readings", 0)
    dropped = store.get("dropped_readings", 0)
    central = _central_readings(demo.central_db) or 0
    lost = taken - central - buffered - dropped
    for line in watch.summary():
        print(line)
    if sent and demo.command is not None:  # still waiting when the demo stopped
        demo.command.wait(25)
        command_line = demo.command_result() or command_line
    print(command_line)
    print(
        f"summary: readings taken {taken}, in central's store {central}, still buffered at the edge {buffered}, "
        f"dropped by policy {dropped}, lost: {lost}"
    )
    if failure:
        return 1  # said when it happened, above
    return 0 if lost == 0 else 1
