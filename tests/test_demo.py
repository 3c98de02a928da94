"""``gridedge demo`` and the shipped demo site: where its runtime files land, its command line, its parts failing to
start, its children's process groups, and the scenario it shows."""

from __future__ import annotations

import ast
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers.net import free_port
from helpers.wait import wait_for

from agent.config import load_config
from agent.service import status_path
from central.config import load_central_config
from central.store import CentralStore
from gridedge_demo import Demo, Watch, _control_live
from sim_hw.config import load_bench_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
RUN = ROOT / "run"


# ---- where the runtime files land -------------------------------------------------------------------------


def test_runtime_files_of_the_shipped_configs_land_in_run_at_the_repository_root() -> None:
    """ptys, stores and status files of every shipped config are under <repository>/run, none under config/."""
    agent = load_config(CONFIG / "agent-sim.toml")
    central = load_central_config(CONFIG / "central.toml")
    links = [load_bench_config(CONFIG / name).bus("bus1") for name in ("sim-ieee13.toml", "sim-site.toml")]
    runtime = [agent.store.path, status_path(agent), central.db_path, central.status_file]
    runtime += [bus.link for bus in links] + [bus.sim_path for bus in links]
    runtime += [Path(d.serial.port) for d in agent.devices if d.serial is not None]
    assert all(path.parent == RUN for path in runtime), [str(p) for p in runtime if p.parent != RUN]


def test_the_demo_agent_opens_the_pty_the_demo_bench_serves() -> None:
    agent = load_config(CONFIG / "agent-sim.toml")
    bench = load_bench_config(CONFIG / "sim-ieee13.toml")
    ports = {Path(d.serial.port) for d in agent.devices if d.serial is not None}
    assert ports == {bench.bus("bus1").link}


@pytest.mark.integration
def test_git_ignores_the_runtime_folder_and_nothing_of_the_same_name_elsewhere() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", "run/central.db"], cwd=ROOT, check=False)
    assert ignored.returncode == 0
    kept = subprocess.run(["git", "check-ignore", "-q", "sim_hw/run/x.py"], cwd=ROOT, check=False)
    assert kept.returncode == 1


# ---- rooms --------------------------------------------------------------------------------------------------


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_agent_imports_neither_the_bench_nor_central_nor_the_demo() -> None:
    """agent/ meets sim_hw/ and central/ only on the wire; the demo, which runs them all, sits beside gridedge.py."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_roots(path) & {"sim_hw", "central", "gridedge_demo", "gridedge"})
        for path in (ROOT / "agent").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert not (ROOT / "agent" / "demo.py").exists() and (ROOT / "gridedge_demo.py").is_file()


# ---- the command line ---------------------------------------------------------------------------------------


def _gridedge(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gridedge", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, **(env or {})})  # fmt: skip


@pytest.mark.integration
def test_an_unknown_argument_is_a_usage_error_and_starts_nothing() -> None:
    proc = _gridedge("demo", "--bogus", env={"DEMO_SECONDS": "1"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "usage: gridedge demo" in proc.stderr and "unrecognized arguments: --bogus" in proc.stderr
    assert "broker" not in proc.stdout


@pytest.mark.integration
def test_help_gives_the_usage_and_describes_demo_seconds() -> None:
    proc = _gridedge("demo", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: gridedge demo")
    assert "DEMO_SECONDS=N" in proc.stdout and "Ctrl-C" in proc.stdout


@pytest.mark.integration
@pytest.mark.parametrize("value", ["twenty", "-5", "nan"])
def test_a_bad_demo_seconds_is_refused_naming_the_value(value: str) -> None:
    proc = _gridedge("demo", env={"DEMO_SECONDS": value})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"DEMO_SECONDS = {value!r}: must be a number of seconds >= 0" in proc.stderr


# ---- the watch: scenario steps and the agent's evidence ----------------------------------------------------


def _truth(path: Path, *records: dict) -> None:
    with path.open("a") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")


def _central(path: Path, sql: str, *rows: tuple) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executemany(sql, rows)


READING = "INSERT INTO readings (msg_id, site, point, ts, value, unit, quality) VALUES ('m', 's', ?, ?, ?, ?, ?)"
EVENT = "INSERT INTO events (msg_id, site, ts, kind, severity, source, text) VALUES ('m', 's', ?, ?, ?, ?, ?)"
T0 = 1_800_000_000.0


def _said(lines: list[str]) -> list[list[str]]:
    """[who, what] of each line ``t=  4s who: what`` (the time the line is shown at left out)."""
    out = []
    for line in lines:
        m = re.fullmatch(r"t=\s*-?\d+s (\S+)\s+(.*)", line)
        assert m, line
        out.append([m[1], m[2]])
    return out


def test_the_watch_shows_each_scenario_step_and_the_agents_evidence_once(tmp_path: Path) -> None:
    truth, db = tmp_path / "truth.jsonl", tmp_path / "central.db"
    CentralStore(db).close()
    watch = Watch(truth, db)
    assert watch.poll() == []  # nothing yet: no truth log, an empty store
    scenario = {"source": "x/demo.toml", "description": "d", "events": 2, "steps": 3}
    _truth(truth, {"record": "bench_up", "ts": T0, "sim_start": T0, "wall": 0.0, "speed": 1.0, "scenario": scenario},
           {"record": "scenario_step", "ts": T0 + 4, "text": "PMU pmu-671 loses time sync for 4 s"})  # fmt: skip
    with truth.open("a") as fh:
        fh.write('{"record": "scenario_step", "ts": ')  # a line the bench is still writing: waits for its end
    _central(db, EVENT, (T0 + 4, "pmu_time_sync", "error", "pmu-671", "pmu-671: time synchronisation lost"),
             (T0 + 5, "pmu_voltage", "warning", "pmu-632", "VA high"), (T0 + 5, "pmu_voltage", "warning", "pmu-632", "VB high"))  # fmt: skip
    _central(db, READING, ("m645.p", T0 + 9, 1.0, "W", "good"), ("m645.p", T0 + 10, None, "W", "stale"),
             ("m645.q", T0 + 10, None, "var", "stale"), ("m633.energy_wh", T0 + 9, 500, "Wh", "good"),
             ("m633.energy_wh", T0 + 10, 0, "Wh", "good"))  # fmt: skip
    assert _said(watch.poll()) == [
        ["scenario:", "PMU pmu-671 loses time sync for 4 s"],
        ["agent:", "event pmu_time_sync (error) at t=4s: pmu-671: time synchronisation lost"],
        ["agent:", "event pmu_voltage (warning) at t=5s: VA high (and 1 more like it)"],
        ["agent:", "m645 readings stale from t=10s: the device does not answer"],
        ["agent:", "m633.energy_wh went back from 500 to 0 Wh at t=10s (the register restarted)"],
    ]
    with truth.open("a") as fh:
        fh.write(f'{T0 + 8}, "text": "PMU pmu-671 regains time sync"}}\n')
    _central(db, READING, ("m645.p", T0 + 8, 2.0, "W", "good"),  # older than what is known: says nothing of now
             ("m645.p", T0 + 12, 3.0, "W", "good"))  # fmt: skip
    assert _said(watch.poll()) == [["scenario:", "PMU pmu-671 regains time sync"]]
    _central(db, READING, ("m645.q", T0 + 12, 1.0, "var", "good"))
    assert _said(watch.poll()) == [["agent:", "m645 readings good again from t=12s"]]
    assert watch.summary() == [
        "scenario: 2 of 3 steps played (2 events of demo.toml), 0 failed; the rest comes later in the scenario: "
        "run longer (DEMO_SECONDS)",
        "agent's evidence in central's store: 3 events (pmu_time_sync 1, pmu_voltage 2); readings not good from "
        "m645 (stale); energy registers gone back: m633.energy_wh",
        "control: 0 decisions in central's store (none yet); operations carried out: none",
    ]


DECISION = ("INSERT INTO decisions (msg_id, site, ts, decision_id, function, device, verdict, outcome, data) "
            "VALUES ('m', 's', ?, ?, ?, ?, ?, ?, ?)")  # fmt: skip


def _decision(ts: float, action: str | None, rule: str, verdict: str, outcome: str, **detail: object) -> tuple:
    command = None if action is None else {"action": action}
    data = {"id": f"d{ts}", "function": "capbank", "device": "cap", "rule": rule, "verdict": verdict,
            "outcome": outcome, "command": command, "detail": detail}  # fmt: skip
    return (ts, data["id"], "capbank", "cap", verdict, outcome, json.dumps(data))


def test_the_watch_shows_the_controllers_decisions_and_counts_its_operations(tmp_path: Path) -> None:
    truth, db = tmp_path / "truth.jsonl", tmp_path / "central.db"
    CentralStore(db).close()
    watch = Watch(truth, db)
    _truth(truth, {"record": "bench_up", "ts": T0, "sim_start": T0, "wall": 0.0, "speed": 1.0, "scenario": None})
    _central(db, DECISION, _decision(T0 + 3, None, "inputs_stale", "held", "held"),
             _decision(T0 + 7, "capbank.open", "var_leading", "allowed", "applied"),
             _decision(T0 + 9, "capbank.close", "var_lagging", "refused:dwell", "refused"),
             _decision(T0 + 11, "capbank.close", "var_lagging", "advise", "advised", would="allowed"))  # fmt: skip
    assert _said(watch.poll()) == [
        ["control:", "capbank cap no command: held (inputs_stale) at t=3s"],
        ["control:", "capbank cap capbank.open: applied (var_leading) at t=7s"],
        ["control:", "capbank cap capbank.close: refused (var_lagging; refused: dwell) at t=9s"],
        ["control:", "capbank cap capbank.close: advised (var_lagging; the envelope would answer: allowed) at t=11s"],
    ]
    assert watch.poll() == [], "each decision is shown once"
    assert watch.summary()[-1] == ("control: 4 decisions in central's store (advised 1, applied 1, held 1, refused 1); "
                                   "operations carried out: capbank.open on cap")  # fmt: skip


def test_the_live_line_shows_the_agents_control_mode_decisions_and_the_latest() -> None:
    env = {"decisions": {"applied": 1, "held": 2}, "last_decisions": {
        "capbank": {"ts": 5.0, "device": "cap", "action": "capbank.open", "rule": "var_leading", "outcome": "applied"},
        "regulator": {"ts": 9.0, "device": "reg", "action": None, "rule": "inputs_stale",
                      "outcome": "held"}}}  # fmt: skip
    live = _control_live({"mode": "control", "envelope": env})
    assert live == " control=control decisions=3 last=reg:inputs_stale:held", "the latest by time, not by name"
    assert _control_live(None) == ""


# ---- the demo's children: in their own process groups, stopped with the demo -------------------------------

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


@pytest.mark.integration
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


@pytest.mark.integration
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


# ---- the demo's processes, on a copy of config/ with free ports ------------------------------------------------


def demo_config_copy(tmp_path: Path) -> Path:
    """config/ copied to tmp_path/config with every port of the demo's bench (and the agent's matching one) free;
    its runtime files then land in tmp_path/run."""
    copy = tmp_path / "config"
    shutil.copytree(CONFIG, copy, ignore=shutil.ignore_patterns("run"))
    bench, agent = copy / "sim-ieee13.toml", copy / "agent-sim.toml"
    mapping: dict[str, str] = {}
    for old in re.findall(r"(?m)^port = (\d+)", bench.read_text()):
        new = str(free_port())
        while new in mapping.values():
            new = str(free_port())
        mapping.setdefault(old, new)
    for path in (bench, agent):
        text = re.sub(r"(?m)^port = (\d+)", lambda m: f"port = {mapping[m[1]]}", path.read_text())
        path.write_text(text)
    return copy


def _processes_naming(text: str) -> list[str]:
    """Command lines of the running processes that name ``text`` (a test's folder), zombies left out."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in argv:
            out.append(f"{entry.name}: {argv}")
    return out


def _wait_bench(proc: subprocess.Popen[bytes], link: Path, log: Path) -> None:
    deadline = time.monotonic() + 90
    while not ("NAME" in log.read_text() and link.is_symlink()):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


@pytest.mark.integration
@pytest.mark.parametrize("busy", ["another bench", "a port"])
def test_a_part_that_fails_to_start_fails_the_demo_at_once_with_its_reason(tmp_path: Path, busy: str) -> None:
    """Beside a running bench on the same config (or with one of the bench's ports taken), the demo says that its
    bench did not start and why, stops the parts it started, prints no summary, exits 1; the running bench keeps
    its pty links."""
    config = demo_config_copy(tmp_path)
    link = load_bench_config(config / "sim-ieee13.toml").bus("bus1").link
    assert link == tmp_path / "run" / "rtu-bus1"
    other = blocker = None
    try:
        if busy == "another bench":
            with (tmp_path / "other.log").open("ab") as log:
                other = subprocess.Popen([sys.executable, "-m", "gridedge", "sim", "run", "--config",
                                          str(config / "sim-ieee13.toml")], stdout=log, stderr=subprocess.STDOUT,
                                         cwd=ROOT, start_new_session=True)  # fmt: skip
            _wait_bench(other, link, tmp_path / "other.log")
            before = os.readlink(link)
            expected = [f"{link.name}", "is held by socat pid"]
        else:
            port = load_bench_config(config / "sim-ieee13.toml").devices[0].port
            blocker = socket.socket()
            blocker.bind(("127.0.0.1", port))
            blocker.listen()
            expected = [f"cannot serve Modbus on 127.0.0.1:{port}"]
        demo = _gridedge("demo", "--config-dir", str(config), env={"DEMO_SECONDS": "20"}, timeout=180)
        assert demo.returncode == 1, demo.stdout + demo.stderr
        assert "gridedge demo: the bench did not start: sim: cannot run the bench:" in demo.stderr, demo.stderr
        assert all(text in demo.stderr for text in expected), demo.stderr
        assert "lost:" not in demo.stdout and "summary" not in demo.stdout, demo.stdout
        others = {str(other.pid)} if other else set()
        left = [p for p in _processes_naming(str(tmp_path)) if p.split(":")[0] not in others and "socat" not in p]
        assert left == [], "the demo left its parts running"
        if other is not None:
            assert os.readlink(link) == before and other.poll() is None
    finally:
        if blocker is not None:
            blocker.close()
        if other is not None:
            other.terminate()
            other.wait(30)


@pytest.mark.integration
def test_the_suggested_run_shows_every_scenario_step_and_the_agents_evidence(tmp_path: Path) -> None:
    """DEMO_SECONDS=20, as the README suggests: each of the scenario's steps has its line as it is played, the
    agent's resulting events and readings reach the output from central's store, the summary counts them, and every
    reading the agent took is in central's store. The runtime files land in run/ beside the config folder."""
    config = demo_config_copy(tmp_path)
    demo = _gridedge("demo", "--config-dir", str(config), env={"DEMO_SECONDS": "20"}, timeout=240)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = demo.stdout
    steps = [
        "PMU pmu-671 loses time sync for 4 s", "PMU pmu-671 regains time sync", "fdr-645-meter stops answering for 6 s",
        "fdr-645-meter answers again", "a cloud over every PV site: irradiance x0.05 for 4 s",
        "the cloud clears: full irradiance on every PV site", "fault at bus 671, phases abc, 0.01 ohm, for 3 s",
        "the fault at bus 671 clears", "meter fdr-633-meter replaced: its energy registers restart at 0",
    ]  # fmt: skip
    for step in steps:
        assert re.search(rf"(?m)^t=\s*\d+s scenario: {re.escape(step)}$", out), (step, out)
    assert "scenario: 9 of 9 steps played (5 events of ieee13-demo.toml), 0 failed" in out
    assert re.search(r"(?m)^t=\s*\d+s agent:\s+event pmu_time_sync \(error\) at t=\d+s: pmu-671: ", out), out
    assert re.search(r"(?m)^t=\s*\d+s agent:\s+fdr-645-meter readings stale from t=\d+s", out), out
    # the new meter counts from 0 at the swap: its first read holds the Wh since then, below the old one's last
    back = re.search(
        r"(?m)^t=\s*\d+s agent:\s+fdr-633-meter\.energy_delivered_wh went back from (\d+) to (\d+) Wh", out
    )
    assert back and int(back[2]) < int(back[1]), out
    evidence = next(line for line in out.splitlines() if line.startswith("agent's evidence in central's store: "))
    assert "pmu_time_sync 2" in evidence and "fdr-645-meter (stale)" in evidence, evidence
    assert re.search(r"(?m)^summary: readings taken [1-9]\d*, .*, lost: 0$", out), out
    # the controller acting: the shipped site's cap bank function switches the bank within the run (its live line
    # and central's store), and the summary counts the operation
    assert re.search(r"(?m)^t=\s*\d+s control:\s+capbank cap675-ctl capbank\.(open|close): applied \(", out), out
    assert re.search(r"(?m)^t=\s*\d+s .* control=control decisions=[1-9]", out), out
    assert re.search(
        r"(?m)^control: \d+ decisions in central's store \(.*applied [1-9].*\); "
        r"operations carried out: capbank\.(open|close) on cap675-ctl",
        out,
    ), out
    assert (tmp_path / "run" / "central.db").is_file() and (tmp_path / "run" / "agent-sim.db").is_file()
    assert (tmp_path / "run" / "demo" / "truth.jsonl").is_file()
    assert not (config / "run").exists() and not (tmp_path / "run" / "rtu-bus1").is_symlink()
    assert _processes_naming(str(tmp_path)) == []


@pytest.mark.integration
def test_a_second_demo_on_the_same_folder_refuses_and_leaves_the_running_ones_stores(tmp_path: Path) -> None:
    """The demo clears the stores of its run/ folder when it starts: never while another demo runs from there."""
    config = demo_config_copy(tmp_path)
    (tmp_path / "run" / "demo").mkdir(parents=True)
    store = tmp_path / "run" / "central.db"
    store.write_bytes(b"the running demo's store")
    with (tmp_path / "run" / "demo" / "demo.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the running demo holds it
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        proc = _gridedge("demo", "--config-dir", str(config), env={"DEMO_SECONDS": "5"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"another demo runs from {config} (pid {os.getpid()}): stop it first" in proc.stderr
    assert store.read_bytes() == b"the running demo's store"
