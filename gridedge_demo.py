"""``gridedge demo``: the simulated substation, the agent and central together against a real
Mosquitto on loopback, each as its own process started through the ``gridedge`` command, exactly as
they would run in the field. Prints a live line every second and a summary at the end.

Stops on Ctrl-C, or after ``DEMO_SECONDS`` seconds when that variable is set.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SIM_CONFIG = ROOT / "config" / "sim-ieee13.toml"
AGENT_CONFIG = ROOT / "config" / "agent-sim.toml"
SCENARIO = ROOT / "config" / "scenarios" / "ieee13-demo.toml"  # a PMU losing sync, a fault, a cloud...
CENTRAL_CONFIG = ROOT / "config" / "central.toml"


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


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _central_readings(db: Path) -> int | None:
    if not db.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)) as conn:
            return conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    except sqlite3.Error:
        return None


class Demo:
    def __init__(self, workdir: Path, *, agent_python: str | None = None) -> None:
        self.workdir = workdir
        # The interpreter the agent runs under (benchmarks/memory.py: one with the runtime dependencies only,
        # as on a Pi); the others always run under this one.
        self.agent_python = agent_python or sys.executable
        self.procs: dict[str, subprocess.Popen] = {}
        self.port = free_port()
        self.broker_url = f"mqtt://127.0.0.1:{self.port}"

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

    def start(self) -> None:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\nlog_dest stderr\n"
        )
        self._spawn("mosquitto", [mosquitto, "-c", str(conf)])
        if not wait_port(self.port, 10):
            raise RuntimeError(f"mosquitto did not start on port {self.port}: see {self.workdir}/mosquitto.log")
        exe = [sys.executable, "-m", "gridedge"]
        self._spawn("sim", [*exe, "sim", "run", "--config", str(SIM_CONFIG), "--scenario", str(SCENARIO)])
        self._spawn("central", [*exe, "central", "run", "--config", str(CENTRAL_CONFIG), "--broker", self.broker_url])
        time.sleep(1.0)  # let the bench open its ports and ptys before the agent's first poll
        agent = [self.agent_python, "-m", "gridedge"]
        self._spawn("agent", [*agent, "run", "--config", str(AGENT_CONFIG), "--broker", self.broker_url])

    def check_alive(self) -> str | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode}: see {self.workdir / (name + '.log')}"
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


_PR_SET_PDEATHSIG = 1  # prctl(2)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the demo's process dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    # The bench runs in a child process; find out here, not from its log, that the extra is missing.
    for module in ("opendssdirect", "opender"):
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    seconds = float(os.environ.get("DEMO_SECONDS", "0") or 0)
    workdir = ROOT / "run" / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    from agent.config import load_config  # the agent's own view of where its store and status are
    from agent.service import status_path

    agent_cfg = load_config(AGENT_CONFIG)
    for stale in (agent_cfg.store.path, status_path(agent_cfg)):
        for p in (stale, stale.with_name(stale.name + "-wal"), stale.with_name(stale.name + "-shm")):
            p.unlink(missing_ok=True)
    central_db = ROOT / "run" / "central.db"
    for p in (central_db, central_db.with_name("central.db-wal"), central_db.with_name("central.db-shm")):
        p.unlink(missing_ok=True)

    demo = Demo(workdir)
    stopping = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    print(f"gridedge demo: broker {demo.broker_url}, logs in {workdir}; Ctrl-C to stop", flush=True)
    failure = None
    started = time.monotonic()
    try:
        demo.start()
        while not stopping and (seconds <= 0 or time.monotonic() - started < seconds):
            time.sleep(1.0)
            if stopping:  # a child that exits now is being stopped with the rest, not failing
                break
            failure = demo.check_alive()
            if failure:
                break
            st = _read_json(status_path(agent_cfg)) or {}
            store = st.get("store") or {}
            central = _central_readings(central_db)
            print(
                f"t={time.monotonic() - started:5.0f}s points={st.get('points', 0):4d} "
                f"readings_stored={store.get('readings_taken', 0):7d} "
                f"outbox={store.get('unsealed', 0) + store.get('outbox_readings', 0):6d} "
                f"acked_by_central={store.get('acked_readings', 0):7d} central_store={central or 0:7d} "
                f"broker={'up' if st.get('connected') else 'down'}",
                flush=True,
            )
    finally:
        demo.stop_all()
    st = _read_json(status_path(agent_cfg)) or {}
    store = st.get("store") or {}
    taken = store.get("readings_taken", 0)
    buffered = store.get("unsealed", 0) + store.get("outbox_readings", 0)
    dropped = store.get("dropped_readings", 0)
    central = _central_readings(central_db) or 0
    lost = taken - central - buffered - dropped
    print(
        f"summary: readings taken {taken}, in central's store {central}, still buffered at the edge {buffered}, "
        f"dropped by policy {dropped}, lost: {lost}"
    )
    if failure:
        print(f"gridedge demo: {failure}", file=sys.stderr)
        return 1
    return 0 if lost == 0 else 1
