"""Review of supervision and the front door (issue 2, parts 1 and 8): the supervisor's backoff under a task
failing in a tight loop, systemd's watchdog against a blocked event loop (a real AF_UNIX datagram socket),
SIGTERM while a heavy write is under way (a real agent process), the demo's process handling (real child
processes), and the `sim`/`demo` commands on an install without the `sim` extra."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.aio import arun, until
from helpers.net import free_port
from helpers.processes import Processes
from helpers.wait import wait_for

from agent.runtime import Supervisor, SystemdNotifier, watchdog
from gridedge_demo import Demo

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "config" / "maps" / "sim-meter.toml"


# ---- the supervisor's backoff ------------------------------------------------------------------------------


def test_backoff_grows_stays_capped_and_resets_after_a_healthy_run() -> None:
    now = [1000.0]
    delays: list[float] = []
    attempt = 0
    # attempt n -> how long it runs before failing (s); None: it returns normally (finished)
    plan = {**{n: 0.0 for n in range(1, 9)}, 9: 61.0, 10: 0.0, 11: None}

    async def flaky() -> None:
        nonlocal attempt
        attempt += 1
        ran_s = plan[attempt]
        if ran_s is None:
            return
        now[0] += ran_s
        raise RuntimeError(f"failure {attempt}")

    async def record(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0)

    async def main() -> Supervisor:
        sup = Supervisor(
            backoff_min_s=1.0, backoff_max_s=8.0, healthy_after_s=60.0, clock=lambda: now[0], rng=random.Random(3),
            sleep=record,
        )  # fmt: skip
        sup.add("flaky", flaky)
        sup.start()
        await until(lambda: sup.health()["flaky"].state == "stopped", timeout=5)
        await sup.stop()
        return sup

    sup = arun(main())
    assert attempt == 11 and sup.health()["flaky"].restarts == 10
    # Ceilings by hand: doubling from 1 s to the 8 s cap, held there; attempt 9 ran 61 s (>= 60 s healthy),
    # so its failure starts again from 1 s, and the next one doubles to 2 s.
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8, 1, 2]
    assert len(delays) == len(ceilings)
    for n, (delay, cap) in enumerate(zip(delays, ceilings, strict=True), start=1):
        assert cap / 2 <= delay <= cap, (n, delay, cap)


# ---- the watchdog against a blocked loop -------------------------------------------------------------------


class NotifyListener:
    """systemd's side of NOTIFY_SOCKET: a bound AF_UNIX datagram socket read by a thread, in arrival order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._on = True
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while self._on:
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())

    def close(self) -> None:
        self._on = False
        self._thread.join(5)
        self.sock.close()


def test_watchdog_pings_stop_while_the_event_loop_is_blocked(tmp_path: Path) -> None:
    listener = NotifyListener(tmp_path / "notify.sock")
    # The test's own markers go to the same socket, so their place among the pings is their order of arrival.
    marker = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    env = {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "40000"}  # a ping every 20 ms

    def pings(messages: list[str]) -> int:
        return messages.count("WATCHDOG=1")

    async def main() -> None:
        notifier = SystemdNotifier(environ=env)
        sup = Supervisor()
        sup.add("idle", lambda: asyncio.Event().wait())
        sup.add("watchdog", lambda: watchdog(notifier, sup, lambda: "ok"))
        sup.start()
        await until(lambda: pings(listener.messages) >= 2, timeout=10)
        marker.sendto(b"BLOCK_START", str(listener.path))
        time.sleep(0.5)  # the loop is stuck: 25 ping intervals pass without it turning
        marker.sendto(b"BLOCK_END", str(listener.path))
        await until(lambda: "BLOCK_END" in listener.messages, timeout=10)
        end = listener.messages.index("BLOCK_END")
        await until(lambda: pings(listener.messages[end:]) >= 1, timeout=10)  # the loop turns: pings resume
        await sup.stop()
        notifier.close()

    try:
        arun(main())
    finally:
        marker.close()
        listener.close()
    got = listener.messages
    start, end = got.index("BLOCK_START"), got.index("BLOCK_END")
    assert pings(got[:start]) >= 2
    assert got[start + 1 : end] == []  # nothing at all while the loop was stuck
    assert pings(got[end:]) >= 1


# ---- SIGTERM during a heavy write, in a real agent process ---------------------------------------------------


def _spill(tmp_path: Path, spilled: int) -> None:
    t0 = 1_700_000_000.0
    with open(tmp_path / "agent.db.unsaved.jsonl", "w", encoding="utf-8") as f:
        for i in range(spilled):
            f.write(json.dumps([f"old.p{i % 100}", t0 + i // 100, float(i), "V", "good", "telemetry"]) + "\n")


@dataclass
class _Agent(Processes):
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)


def _started_agent(tmp_path: Path, spilled: int) -> _Agent:
    """A real `gridedge run` over ``spilled`` readings a previous run left, once it has said it started."""
    _spill(tmp_path, spilled)
    _agent_config(tmp_path)
    site = _Agent(tmp_path)
    proc = site.start_gridedge("agent", "run", "--config", "agent.toml")
    wait_for(lambda: "event=agent_started" in site.log("agent") or proc.poll() is not None, 60, "the agent")
    assert proc.poll() is None, site.logs("agent")
    return site


def test_sigterm_right_after_a_heavy_start_commits_every_reading(tmp_path: Path) -> None:
    """150,000 readings spilled by a previous run are committed as the agent starts; SIGTERM lands 0.3 s
    after it said it started. Every one of them, and every reading the poller took, is in the store."""
    spilled = 150_000
    site = _started_agent(tmp_path, spilled)
    try:
        time.sleep(0.3)
        assert site.stop("agent", 60) == 0, site.logs("agent")
    finally:
        site.kill_all()
    status = json.loads((tmp_path / "agent.db.status.json").read_text())
    polled = status["devices"]["m1"]["readings"]
    with contextlib.closing(sqlite3.connect(tmp_path / "agent.db")) as conn:
        stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        old = conn.execute("SELECT count(*), sum(value) FROM readings WHERE point LIKE 'old.%'").fetchone()
    assert old == (spilled, float(sum(range(spilled))))  # each spilled reading once, with its own value
    assert stored == spilled + polled
    assert status["store"]["readings_taken"] == stored and status["queued"] == 0
    assert not (tmp_path / "agent.db.unsaved.jsonl").exists()  # nothing had to be spilled again


def test_sigkill_as_soon_as_the_agent_started_loses_no_spilled_reading(tmp_path: Path) -> None:
    """The spilled readings are committed before the file is removed: a SIGKILL the moment the agent says it
    started (before its writer's first flush) leaves them in the store, or still in the file, never nowhere."""
    spilled = 20_000
    site = _started_agent(tmp_path, spilled)
    site.kill("agent")
    with contextlib.closing(sqlite3.connect(tmp_path / "agent.db")) as conn:
        old = conn.execute("SELECT count(*), sum(value) FROM readings WHERE point LIKE 'old.%'").fetchone()
    assert old == (spilled, float(sum(range(spilled))))
    assert not (tmp_path / "agent.db.unsaved.jsonl").exists()


def _agent_config(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text(
        textwrap.dedent(
            f"""
            site_id = "heavy-write"
            [store]
            path = "agent.db"
            [uplink]
            broker = "mqtt://127.0.0.1:{free_port()}"
            drain_on_stop_s = 0
            [[devices]]
            name = "m1"
            protocol = "modbus-tcp"
            host = "127.0.0.1"
            port = {free_port()}
            poll_interval_s = 0.05
            timeout_s = 0.1
            map = "{MAP}"
            """
        )
    )


# ---- the demo's children ----------------------------------------------------------------------------------

_GRANDPARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_demo_children_are_out_of_reach_of_ctrl_c_and_stopped_with_their_own_children(tmp_path: Path) -> None:
    demo = Demo(tmp_path)
    proc = demo._spawn("bench", [sys.executable, "-c", _GRANDPARENT])
    try:
        wait_for(lambda: (tmp_path / "bench.log").read_text().strip(), 30, "the grandchild's pid")
        grandchild = int((tmp_path / "bench.log").read_text().split()[0])
        # A terminal's Ctrl-C goes to the foreground process group: the demo's, not its children's.
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
        demo.stop("bench")
        assert proc.returncode is not None
        wait_for(lambda: _gone(grandchild), 10, "the child's own child (like the bench's socat) to be stopped too")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_demo_children_stop_when_the_demo_process_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from gridedge_demo import Demo
        demo = Demo(Path({str(tmp_path)!r}))
        child = demo._spawn("central", [sys.executable, "-c", "import time; time.sleep(120)"])
        print(child.pid, flush=True)
        time.sleep(120)
        """
    )
    runner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    child = int(runner.stdout.readline())
    try:
        runner.kill()  # SIGKILL: the demo gets no chance to stop anything itself
        runner.wait(10)
        wait_for(lambda: _gone(child), 10, "the demo's child to stop after the demo died")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        runner.stdout.close()


# ---- an install without the sim extra --------------------------------------------------------------------

_WITHOUT_SIM_EXTRA = """
import sys
class NoSimExtra:  # as on a Pi installed with `pip install gridedge`: the simulator's dependencies are absent
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("opendssdirect", "opender", "sunspec2", "dss"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NoSimExtra())
import importlib.util
_find = importlib.util.find_spec
def find_spec(name, package=None):
    if name.split(".")[0] in ("opendssdirect", "opender", "sunspec2", "dss"):
        return None
    return _find(name, package)
importlib.util.find_spec = find_spec
import gridedge
sys.exit(gridedge.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("args", [["sim", "run", "--config", "x.toml"], ["demo"]])
def test_sim_and_demo_without_the_sim_extra_say_how_to_install_it(args: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SIM_EXTRA, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "pip install 'gridedge[sim]'" in proc.stderr


def test_agent_commands_work_without_the_sim_extra(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SIM_EXTRA, "check-config", str(ROOT / "config" / "agent-sim.toml")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert ": ok — site sim-substation" in proc.stdout
