"""`gridedge status`: whether the agent runs (a clean stop, a killed process and a hung one told apart, each
with its exit status), and its figures as an operator reads them: each part with its last error, rounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.broker import Broker
from helpers.net import free_port
from helpers.processes import Processes
from helpers.wait import wait_for

from agent.statustext import AgentState, agent_state, status_text

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "config" / "maps" / "sim-meter.toml"
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z

# A status file as a running agent writes it (agent/service.py status()), trimmed to what the text shows.
STATUS = {
    "site": "sub-07",
    "ts": NOW - 0.4,
    "pid": 4242,
    "started_ts": NOW - 754.3,
    "running": True,
    "status_interval_s": 1.0,
    "broker": "mqtt://127.0.0.1:1883",
    "connected": True,
    "queued": 3,
    "refused": 0,
    "store": {
        "readings_taken": 5520,
        "unsealed": 100,
        "outbox_readings": 20,
        "acked_readings": 5400,
        "dropped_readings": 0,
        "size_bytes": 1_234_567,
        "max_bytes": 100_000_000,
    },  # fmt: skip
    "uplink": {"published": 180, "resent": 2, "ack_timeouts": 0},
    "devices": {
        "meter-1": {
            "polls": 40,
            "polls_ok": 40,
            "timeouts": 0,
            "connection_errors": 0,
            "exceptions": 0,
            "consecutive_failures": 0,
            "backoff_s": 0.0,
            "last_ok_ts": NOW - 0.31234,
            "last_error": "",
            "last_error_ts": None,
        },  # fmt: skip
        "dead-meter": {
            "polls": 4,
            "polls_ok": 0,
            "timeouts": 0,
            "connection_errors": 4,
            "exceptions": 0,
            "consecutive_failures": 4,
            "backoff_s": 8.142107117127715,
            "last_ok_ts": None,
            "last_error": "link down: cannot connect (refused or no route)",
            "last_error_ts": NOW - 2.0417,
        },  # fmt: skip
    },
    "pmus": {
        "pmu-632": {
            "connected": True,
            "stale": False,
            "idcode": 632,
            "frames": 12000,
            "reconnects": 0,
            "late": 0,
            "last_error": "",
            "last_error_ts": None,
        },  # fmt: skip
        "pmu-671": {
            "connected": False,
            "stale": True,
            "idcode": None,
            "frames": 0,
            "reconnects": 3,
            "late": 0,
            "last_error": "connect to 127.0.0.1:14722: connection refused",
            "last_error_ts": NOW - 1.27,
        },  # fmt: skip
    },
    "pq": {
        "pq671": {
            "connected": False,
            "signal_s": 612.4567891,
            "gaps": 1,
            "reconnects": 2,
            "last_error": "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 15040)",
        },  # fmt: skip
    },
    "pq_worker": {"pid": 4250, "starts": 1, "exits": 0},
    "tasks": {"poll:meter-1": "running", "poll:dead-meter": "running", "writer": "running"},
}


def _running(status: dict) -> AgentState:
    return agent_state(status, NOW, alive=lambda pid: True)


def test_an_unreachable_device_shows_its_last_error_and_when() -> None:
    text = status_text(STATUS, _running(STATUS), NOW)
    (line,) = [line for line in text.splitlines() if line.lstrip().startswith("dead-meter")]
    assert "FAILING" in line and "polls 4 ok 0 link errors 4" in line and "next try in 8.1 s" in line
    assert "last error (2.0 s ago): link down: cannot connect (refused or no route)" in text
    (ok,) = [line for line in text.splitlines() if line.lstrip().startswith("meter-1")]
    assert " ok " in ok and "last answer 0.3 s ago" in ok and "error" not in ok


def test_a_stopped_agent_promises_no_next_try() -> None:
    stopped = {**STATUS, "running": False, "ts": NOW - 42}
    text = status_text(stopped, agent_state(stopped, NOW, alive=lambda pid: False), NOW)
    (line,) = [line for line in text.splitlines() if line.lstrip().startswith("dead-meter")]
    assert "failed 4 in a row" in line and "next try" not in text
    assert "last error (2.0 s ago): link down" in text  # what it last saw stays


def test_pmu_and_pq_streams_show_their_state_and_last_error() -> None:
    text = status_text(STATUS, _running(STATUS), NOW)
    assert "PMU streams (2):" in text and "PQ streams (1):" in text
    lines = text.splitlines()
    (pmu,) = [line for line in lines if line.lstrip().startswith("pmu-671")]
    assert "DOWN" in pmu and "reconnects 3" in pmu
    assert "last error (1.3 s ago): connect to 127.0.0.1:14722: connection refused" in text
    (good,) = [line for line in lines if line.lstrip().startswith("pmu-632")]
    assert " ok " in good and "IDCODE 632" in good and "frames 12000" in good
    (pq,) = [line for line in lines if line.lstrip().startswith("pq671")]
    assert "DOWN" in pq and "measured 10 min 12 s of signal" in pq and "gaps 1" in pq
    assert "last error: ConnectionRefusedError" in text


def test_tasks_not_running_are_named_by_state() -> None:
    tasks = {"writer": "running", "uplink": "running", "pq-worker": "backoff", "poll:dead-meter": "running"}
    text = status_text({**STATUS, "tasks": tasks}, _running(STATUS), NOW)
    assert "tasks: 3 of 4 running; backoff: pq-worker" in text
    assert "tasks: all 3 running" in status_text(STATUS, _running(STATUS), NOW)


def test_the_uplink_shows_connection_and_backlog() -> None:
    text = status_text(STATUS, _running(STATUS), NOW)
    assert "uplink: connected to mqtt://127.0.0.1:1883  backlog 120 readings  acked 5400" in text
    down = status_text({**STATUS, "connected": False}, _running(STATUS), NOW)
    assert "uplink: NOT CONNECTED to mqtt://127.0.0.1:1883" in down


def test_figures_are_rounded_for_people() -> None:
    text = status_text(STATUS, _running(STATUS), NOW)
    assert "store 1.2 of 100 MB" in text
    for raw in ("8.142107117127715", "612.4567891", "0.31234", "2.0417", "754.3"):
        assert raw not in text, raw
    assert text.splitlines()[0] == "agent sub-07: running (pid 4242, up 12 min 34 s, status 0.4 s old)"


@pytest.mark.parametrize(
    ("change", "alive", "running", "says"),
    [
        ({}, True, True, "running (pid 4242"),
        ({"running": False, "ts": NOW - 42}, False, False, "NOT RUNNING: stopped cleanly 42 s ago (2025-12-31 23:59:18Z)"),
        ({"ts": NOW - 2}, False, False, "NOT RUNNING: process 4242 is gone without stopping cleanly (killed or crashed); last seen 2.0 s ago"),
        ({"ts": NOW - 4}, True, True, "running (pid 4242"),  # late, within the allowance
        ({"ts": NOW - 3700}, True, False, "NOT RESPONDING: process 4242 exists but has not written its status for 1 h 01 min (hung?)"),
        ({"ts": NOW - 30, "pid": None, "running": None}, True, False, "NOT RESPONDING: no status written for 30 s"),
    ],
)  # fmt: skip
def test_whether_the_agent_runs_is_judged_from_the_flag_the_pid_and_the_age(
    change: dict, alive: bool, running: bool, says: str
) -> None:
    state = agent_state({**STATUS, **change}, NOW, alive=lambda pid: alive)
    assert state.running is running and says in state.text, state.text
    text = status_text({**STATUS, **change}, state, NOW)
    assert ("the figures below are the last the agent wrote" in text) is not running


# ---- a real agent against a real broker ---------------------------------------------------------------------


@dataclass
class _Site(Processes):
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def status(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gridedge", "status", "--config", "agent.toml", *args],
            cwd=self.workdir, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def status_file(self) -> dict:
        path = self.workdir / "agent.db.status.json"
        return json.loads(path.read_text()) if path.exists() else {}


def _site(tmp_path: Path, broker: Broker) -> _Site:
    """An agent whose one device is a closed port, its uplink a real Mosquitto."""
    (tmp_path / "agent.toml").write_text(
        textwrap.dedent(
            f"""
            site_id = "status-test"
            [store]
            path = "agent.db"
            [uplink]
            broker = "{broker.url}"
            drain_on_stop_s = 0
            [[devices]]
            name = "dead-meter"
            protocol = "modbus-tcp"
            host = "127.0.0.1"
            port = {free_port()}
            poll_interval_s = 0.2
            timeout_s = 0.2
            map = "{MAP}"
            """
        )
    )
    return _Site(tmp_path)


def _started(site: _Site) -> subprocess.Popen:
    proc = site.start_gridedge("agent", "run", "--config", "agent.toml")

    def ready() -> bool:
        st = site.status_file()
        return bool(st.get("connected") and st.get("devices", {}).get("dead-meter", {}).get("last_error"))

    wait_for(lambda: ready() or proc.poll() is not None, 60, "the agent's status: connected, device tried")
    assert proc.poll() is None, site.logs("agent")
    return proc


@pytest.mark.integration
def test_status_of_a_running_agent_then_of_one_stopped_by_sigterm(tmp_path: Path, broker: Broker) -> None:
    site = _site(tmp_path, broker)
    try:
        proc = _started(site)
        live = site.status()
        assert live.returncode == 0, live.stdout + live.stderr
        assert live.stdout.startswith(f"agent status-test: running (pid {proc.pid}, up ")
        assert f"uplink: connected to {broker.url}" in live.stdout
        assert "dead-meter" in live.stdout and "FAILING" in live.stdout
        assert "last error (" in live.stdout and "link down: cannot connect" in live.stdout
        assert json.loads(site.status("--json").stdout)["pid"] == proc.pid
        assert site.stop("agent") == 0, site.logs("agent")
    finally:
        site.kill_all()
    stopped = site.status()
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert stopped.stdout.startswith("agent status-test: NOT RUNNING: stopped cleanly ")
    assert "the figures below are the last the agent wrote" in stopped.stdout
    as_json = site.status("--json")
    assert as_json.returncode == 3 and json.loads(as_json.stdout)["running"] is False


@pytest.mark.integration
def test_status_of_an_agent_killed_with_sigkill_says_it_is_not_running(tmp_path: Path, broker: Broker) -> None:
    site = _site(tmp_path, broker)
    try:
        proc = _started(site)
        site.kill("agent")
    finally:
        site.kill_all()
    assert site.status_file()["running"] is True  # it had no chance to say it stopped
    gone = site.status()
    assert gone.returncode == 3, gone.stdout + gone.stderr
    assert gone.stdout.startswith(f"agent status-test: NOT RUNNING: process {proc.pid} is gone without stopping")
    assert "dead-meter" in gone.stdout  # the last figures are still shown, as such


@pytest.mark.integration
def test_status_of_an_agent_that_stopped_writing_says_it_does_not_respond(tmp_path: Path, broker: Broker) -> None:
    """A status file whose writer still exists but has not written for a minute: a hung agent."""
    site = _site(tmp_path, broker)
    try:
        _started(site)
        assert site.stop("agent") == 0, site.logs("agent")
    finally:
        site.kill_all()
    status = site.status_file()
    # what a hung agent leaves: its own pid (this test's process stands in for it), running, a minute old
    status.update(running=True, pid=os.getpid(), ts=time.time() - 60)
    (tmp_path / "agent.db.status.json").write_text(json.dumps(status))
    hung = site.status()
    assert hung.returncode == 3 and f"NOT RESPONDING: process {os.getpid()} exists" in hung.stdout


@pytest.mark.integration
def test_status_without_a_status_file_says_so(tmp_path: Path, broker: Broker) -> None:
    site = _site(tmp_path, broker)
    none = site.status()
    assert none.returncode == 4 and not none.stdout
    assert "no status file" in none.stderr and "agent.db.status.json" in none.stderr
    help_ = subprocess.run([sys.executable, "-m", "gridedge", "status", "--help"], capture_output=True, text=True)
    assert "0 the agent runs" in help_.stdout and "3 not running" in help_.stdout and "4 no status file" in help_.stdout


def test_device_ages_are_judged_on_the_agent_s_clock_when_a_bench_day_runs_it() -> None:
    """An agent on a bench day's clock ([clock] start in March, at speed) times its devices' answers on that
    clock; status says how long ago on the same clock, not months against the wall."""
    day = NOW - 200 * 86400.0  # the bench's day, far from the wall clock
    status = {
        **STATUS,
        "clock_ts": day,
        "devices": {"meter-1": {**STATUS["devices"]["meter-1"], "last_ok_ts": day - 4.0}},
    }
    text = status_text(status, _running(status), NOW)
    (ok,) = [line for line in text.splitlines() if line.lstrip().startswith("meter-1")]
    assert "last answer 4.4 s ago" in ok  # 4.0 s before the file was written, which was 0.4 s ago


def test_commands_show_what_came_what_is_in_force_and_the_link_never_a_key() -> None:
    commands = {"topic": "gridedge/v1/sub-1/cmd", "counts": {"received": 9, "applied": 3, "refused": 6, "failed": 0,
                                                             "dropped": 0},
                "refusals": {"bad_signature": 4, "expired": 2}, "trusted_keys": ["ops-1", "ops-2"],
                "revoked_keys": ["ops-0"], "link_loss_s": 900.0, "unheard_s": 12.0, "link_lost": False, "queue": 0,
                "in_force": {"schedule:s1": {"kind": "schedule.load", "target": "pv675", "command_id": "c-1",
                                             "since": NOW - 60, "until": NOW + 540, "value_now": 40}}}  # fmt: skip
    status = {**STATUS, "commands": commands, "control": {"mode": "control", "clock_ts": NOW, "cycles": 1}}
    text = status_text(status, _running(status), NOW)
    assert "commands: 9 received, 3 applied, 6 refused, 0 failed; central heard 12 s ago (fallback after 15 min" in text
    assert "refused: bad_signature 4, expired 2" in text
    assert "trusted keys: ops-1, ops-2; revoked: ops-0" in text
    (line,) = [ln for ln in text.splitlines() if "in force: schedule:s1" in ln]
    assert "9 min 0 s left" in line, line
    assert "now 40" in line and "command c-1" in line
    lost = {**status, "commands": {**commands, "link_lost": True}}
    assert "LINK LOST" in status_text(lost, _running(lost), NOW)
