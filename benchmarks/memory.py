"""The agent's peak memory on the demo site, beside a bare interpreter that only imports the agent's
libraries (the floor no agent can go under).

    .venv/bin/python benchmarks/memory.py [--seconds 20]

Runs the demo's processes (Mosquitto, bench, central, agent) and reads the agent's peak resident set
(VmHWM in /proc/<pid>/status) after the given time. Target (issue 2): < 60 MB.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.demo import Demo  # noqa: E402


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def baseline_kb() -> int:
    code = (
        "import pymodbus.client, paho.mqtt.client, serial, sqlite3, sqlite_utils, asyncio\n"
        "from pathlib import Path\n"
        "print([l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')][0].split()[1])"
    )
    return int(subprocess.check_output([sys.executable, "-c", code], text=True).strip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    workdir = ROOT / "run" / "bench-memory"
    workdir.mkdir(parents=True, exist_ok=True)
    demo = Demo(workdir)
    try:
        demo.start()
        time.sleep(args.seconds)
        failure = demo.check_alive()
        if failure:
            print(f"memory benchmark: {failure}", file=sys.stderr)
            return 1
        agent_kb = vm_hwm_kb(demo.procs["agent"].pid)
    finally:
        demo.stop_all()
    base = baseline_kb()
    print(f"agent on the demo site for {args.seconds:.0f} s: peak RSS (VmHWM)")
    print(f"{'':32}{'peak RSS MB':>12}{'ratio':>8}")
    print(f"{'bare python + agent libraries':32}{base / 1024:12.1f}{1.0:8.2f}")
    print(f"{'gridedge agent':32}{agent_kb / 1024:12.1f}{agent_kb / base:8.2f}")
    print(f"target < 60 MB: {'met' if agent_kb < 60 * 1024 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
