"""The agent's peak memory on the demo site, as installed on a Pi, beside the floor of its libraries.

    .venv/bin/python benchmarks/memory.py [--seconds 30] [--control both|on|off]

Runs the demo's processes (Mosquitto, bench, central, agent; the IEEE 13-node bench playing its scenario)
with the agent under an interpreter that has the runtime dependencies only (``pip install .``, no extras: the
development venv also holds pandas, which sqlite-utils imports whenever it is installed, and a Pi does not).
That venv is built once under run/bench-memory/venv and rebuilt when pyproject.toml changes; the agent's code
comes from this tree. After the given time it reads the peak resident set (VmHWM in /proc/<pid>/status) of
the agent and of its PQ worker (agent/pq/worker.py: the waveform stream's measurement, a child process),
beside bare interpreters that only import each one's libraries (the floor no code can go under).
With ``--control both`` (the default) the demo runs twice: once as shipped (``[control]`` on: the cap bank
function, the envelope, its audit spool and the live picture for ``control explain``), once with control
off: the ``[control]`` section kept in ``monitor`` mode with no functions (the demo's signed commands need the
section: agent/commands/config.py) and every ``[control.*]`` table taken out of the agent's site file (a copy
of config/ under run/bench-memory/), so the cost of the control functions is the difference. Target: the agent < 60 MB with control on. Source: the edge computer. The
agent runs on a Raspberry Pi-class board, many with 1 GB
of memory or less, shared with the operating system, the PQ worker (its numpy and scipy alone take ~65 MB)
and, at some sites, a local broker and the utility's own software; the agent takes a small share of it.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import emit  # noqa: E402

from gridedge_demo import AGENT_CONFIG, Demo  # noqa: E402

TARGET_MB = 60.0
AGENT_LIBS = "import asyncio, sqlite3, json, serial, paho.mqtt.client, pymodbus.client, sqlite_utils"
WORKER_LIBS = "import asyncio, json, numpy, scipy.signal, scipy.interpolate"


def runtime_venv(workdir: Path) -> Path:
    """A venv with the agent's runtime dependencies only; rebuilt when pyproject.toml changes."""
    venv = workdir / "venv"
    python = venv / "bin" / "python"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = venv / ".pyproject.sha256"
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    print("building the runtime-only venv (once)...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], check=True, cwd=workdir)
    stamp.write_text(digest)
    return python


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def floor_kb(python: Path, imports: str) -> int:
    code = (
        f"{imports}\nfrom pathlib import Path\n"
        "print([l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')][0].split()[1])"
    )
    return int(subprocess.check_output([str(python), "-c", code], text=True, cwd="/").strip())


def without_control(workdir: Path) -> Path:
    """A copy of config/ (links, and the agent's site file rewritten) whose agent site keeps ``[control]`` in
    ``monitor`` mode (commands need the section) and has no ``[control.*]`` tables: no control function runs."""
    folder = workdir / "config-nocontrol"
    folder.mkdir(parents=True, exist_ok=True)
    for entry in (ROOT / "config").iterdir():
        target = folder / entry.name
        if entry.name == AGENT_CONFIG or target.exists() or target.is_symlink():
            continue
        target.symlink_to(entry)
    kept, skipping, control = [], False, False
    for line in (ROOT / "config" / AGENT_CONFIG).read_text().splitlines():
        if line.startswith("["):
            section = line.split("#", 1)[0].strip()
            control = section == "[control]"
            skipping = line.startswith(("[control.", "[[control."))
        if not skipping:
            kept.append('mode = "monitor"' if control and line.startswith("mode =") else line)
    (folder / AGENT_CONFIG).write_text("\n".join(kept) + "\n")
    return folder


def run_demo(workdir: Path, python: Path, seconds: float, config_dir: Path) -> tuple[int, int] | None:
    """(agent's peak RSS, its PQ worker's) in kB after ``seconds`` of the demo from ``config_dir``."""
    demo = Demo(workdir, agent_python=str(python), config_dir=config_dir)
    try:
        demo.start()
        time.sleep(seconds)
        failure = demo.check_alive()
        if failure:
            print(f"memory benchmark: {failure}", file=sys.stderr)
            return None
        agent_pid = demo.procs["agent"].pid
        return vm_hwm_kb(agent_pid), sum(vm_hwm_kb(p) for p in children(agent_pid))
    finally:
        demo.stop_all()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--control", choices=("both", "on", "off"), default="both")
    args = ap.parse_args()
    workdir = ROOT / "run" / "bench-memory"
    workdir.mkdir(parents=True, exist_ok=True)
    python = runtime_venv(workdir)
    runs: dict[str, tuple[int, int]] = {}
    for name in ("on", "off"):
        if args.control not in (name, "both"):
            continue
        config_dir = ROOT / "config" if name == "on" else without_control(workdir)
        got = run_demo(workdir, python, args.seconds, config_dir)
        if got is None:
            return 1
        runs[name] = got
    agent_kb, worker_kb = runs.get("on") or runs["off"]
    workers = worker_kb > 0
    agent_floor = floor_kb(python, AGENT_LIBS)
    worker_floor = floor_kb(python, WORKER_LIBS)
    print(f"demo site for {args.seconds:.0f} s, runtime-only install: peak RSS (VmHWM), MB")
    print(f"{'':40}{'process':>10}{'floor':>10}{'ratio':>8}")
    for name, (kb, _) in runs.items():
        label = f"agent, control {name}"
        print(f"{label:40}{kb / 1024:10.1f}{agent_floor / 1024:10.1f}{kb / agent_floor:8.2f}")
    if len(runs) == 2:
        on, off = runs["on"][0], runs["off"][0]
        print(f"{'control costs (on - off)':40}{(on - off) / 1024:10.2f}{'':10}{on / off:8.3f}  (ratio: on / off; "
              f"{on - off:+d} kB)")  # fmt: skip
    if workers:
        print(f"{'PQ worker (1 waveform stream)':40}{worker_kb / 1024:10.1f}{worker_floor / 1024:10.1f}"
              f"{worker_kb / worker_floor:8.2f}")  # fmt: skip
        print(f"{'both':40}{(agent_kb + worker_kb) / 1024:10.1f}")
    else:
        print("no PQ worker found under the agent")
    print("floor: a bare interpreter of the same venv importing the process's libraries only")
    which = "control on" if "on" in runs else "control off"
    print(f"target: agent < {TARGET_MB:.0f} MB ({which}): {'met' if agent_kb < TARGET_MB * 1024 else 'NOT met'}")
    emit(
        f"agent peak RSS ({which})",
        agent_kb / 1024,
        agent_floor / 1024,
        agent_kb / agent_floor,
        "MB (peer: bare interpreter with its libraries)",
        f"< {TARGET_MB:.0f} MB",
        agent_kb < TARGET_MB * 1024,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
