"""The IEEE 13-node bench's step rate, side by side with the bare power flow it is built on.

    .venv/bin/python benchmarks/bench_steps.py [--steps 600] [--solves 3000] [--hour-steps 3600]

Ours: ``Bench.step_once()`` in a tight loop on the shipped bench (config/sim-ieee13.toml, copied with free ports
and a temporary pty link, started at solar noon on a clear day so the PV and its OpenDER models work): per step
the profiles, every device's ``actuate`` (4 SunSpec inverters, the cap bank, the regulator, the relay), the
OpenDSS solve, every device's ``observe``, and the new values encoded into all 11 Modbus units (8 TCP servers,
one RTU line of 3 units); both PMUs listen (no client connected, so no frames are encoded). Baseline: the same
feeder's ``Feeder.solve()`` alone, the floor a step cannot go below. The ratio is ours / baseline (< 1: the
share of a step that is the power flow).

Then a simulated hour at full speed: ``--hour-steps`` (3600 = one hour at step_s = 1 s) steps timed for real,
which is what ``gridedge sim run --speed N`` can reach before the machine falls behind: the largest speed that
keeps up is the step rate x step_s.

Target: >= 100 steps/s, so ``gridedge sim run --speed 100`` (a simulated day in under 15 minutes, what the day
benchmarks run at) keeps up at step_s = 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import socket
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import emit  # noqa: E402

from sim_hw.bench import Bench  # noqa: E402
from sim_hw.config import load_bench_config, with_absolute_paths  # noqa: E402
from sim_hw.feeder.model import Feeder  # noqa: E402

SHIPPED = ROOT / "config" / "sim-ieee13.toml"
NOON = "2026-06-21T12:00:00Z"
TARGET_STEPS_S = 100.0  # --speed 100 at step_s = 1 s (the module docstring)
Row = tuple[str, str, float, str, float, str]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_copy(folder: Path) -> Path:
    """The shipped bench with free ports, a pty link in ``folder``, absolute paths and a fixed start at noon."""
    text = with_absolute_paths(SHIPPED.read_text(), SHIPPED.parent)
    text = re.sub(r"(?m)^port = \d+", lambda _: f"port = {free_port()}", text)
    text = re.sub(r'(?m)^link = "[^"]*"', lambda _: f'link = "{folder / "rtu-bus1"}"', text)
    text = re.sub(r'irradiance = "\w+"', 'irradiance = "clear"', text)
    text = re.sub(r"(?m)^seed = 1$", f'seed = 1\nstart = "{NOON}"', text)
    path = folder / "sim-ieee13.toml"
    path.write_text(text)
    return path


class Timers:
    """Wall time spent in each wrapped call, by label (the breakdown of a step)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}

    def wrap(self, obj: object, method: str, label: str) -> None:
        inner = getattr(obj, method, None)
        if inner is None:
            return
        total = self.total
        total.setdefault(label, 0.0)
        if asyncio.iscoroutinefunction(inner):

            async def timed_async(*args: object, **kwargs: object) -> object:
                t0 = time.perf_counter()
                try:
                    return await inner(*args, **kwargs)
                finally:
                    total[label] += time.perf_counter() - t0

            setattr(obj, method, timed_async)
        else:

            def timed(*args: object, **kwargs: object) -> object:
                t0 = time.perf_counter()
                try:
                    return inner(*args, **kwargs)
                finally:
                    total[label] += time.perf_counter() - t0

            setattr(obj, method, timed)


async def breakdown(bench: Bench, steps: int) -> dict[str, float]:
    """Milliseconds per step in the power flow, each device kind's model calls and the Modbus servers' updates."""
    timers = Timers()
    timers.wrap(bench.feeder, "solve", "power flow (Feeder.solve)")
    servers = {}
    for spec in bench.config.devices:
        model = bench.model_of(spec.name)
        for method in ("actuate", "observe", "values"):
            timers.wrap(model, method, f"models: {spec.kind}")
        servers[id(bench.server_of(spec.name))] = bench.server_of(spec.name)
    for server in servers.values():
        timers.wrap(server, "update", "Modbus servers: update")
    t0 = time.perf_counter()
    for _ in range(steps):
        await bench.step_once()
    wall = time.perf_counter() - t0
    out = {label: 1e3 * s / steps for label, s in timers.total.items()}
    out["rest (profiles, scenario, loop)"] = 1e3 * wall / steps - sum(out.values())
    return out


async def time_bench(config_path: Path, steps: int, hour_steps: int) -> tuple[float, float, int, dict[str, float]]:
    """(steps/s over ``steps``, wall seconds of ``hour_steps`` steps, devices, ms per step by part) of one bench."""
    bench = Bench(load_bench_config(config_path))
    await bench.start()
    try:
        for _ in range(20):  # warm up: OpenDER's filters, the servers' first full encodes
            await bench.step_once()
        t0 = time.perf_counter()
        for _ in range(steps):
            await bench.step_once()
        rate = steps / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(hour_steps):
            await bench.step_once()
        hour_wall_s = time.perf_counter() - t0
        parts = await breakdown(bench, steps)  # last: the wrappers cost a little
        return rate, hour_wall_s, len(bench.config.devices), parts
    finally:
        await bench.stop()


def time_solve(solves: int) -> float:
    feeder = Feeder.from_file(ROOT / "config" / "ieee13" / "IEEE13.dss")
    feeder.set_regulator_taps((10, 8, 11))  # fixed taps, as the bench's regulator control pushes them every step
    for k in range(20):
        feeder.solve(float(k))
    t0 = time.perf_counter()
    for k in range(solves):
        feeder.solve(float(k))
    return solves / (time.perf_counter() - t0)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"opendssdirect.py {version('opendssdirect.py')}, opender {version('opender')}, pymodbus {version('pymodbus')}"
    )


def print_table(rows: list[Row]) -> None:
    header = f"{'what':28}{'ours':>34}{'rate':>12}{'baseline':>26}{'rate':>12}{'ratio':>9}  unit"
    print(header)
    print("-" * len(header))
    for what, ours_label, ours, base_label, base, unit in rows:
        print(f"{what:28}{ours_label:>34}{ours:12,.0f}{base_label:>26}{base:12,.0f}{ours / base:9.2f}  {unit}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600, help="bench steps timed for the step rate")
    ap.add_argument("--solves", type=int, default=3000, help="bare Feeder.solve calls timed")
    ap.add_argument("--hour-steps", type=int, default=3600, help="steps of the simulated hour (0: skip it)")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as tmp:
        step_rate, hour_wall_s, devices, parts = asyncio.run(
            time_bench(bench_copy(Path(tmp)), args.steps, args.hour_steps)
        )
    solve_rate = time_solve(args.solves)
    rows: list[Row] = [
        ("IEEE 13-node step", f"Bench.step_once ({devices} devices)", step_rate, "Feeder.solve alone", solve_rate,
         "steps/s"),
    ]  # fmt: skip
    print()
    print_table(rows)
    print()
    print(f"one bench step: {1e3 / step_rate:.2f} ms; the bare power flow: {1e3 / solve_rate:.3f} ms")
    print("where a step's time goes (instrumented run):")
    for label, ms in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {label:34}{ms:8.3f} ms")
    if args.hour_steps:
        sim_s = args.hour_steps * 1.0
        print(
            f"a simulated hour at full speed: {args.hour_steps} steps (step_s = 1 s) in {hour_wall_s:.1f} s wall "
            f"= {sim_s / hour_wall_s:,.0f}x real time (--speed 100 needs 100 steps/s)"
        )
    met = step_rate >= TARGET_STEPS_S
    print(f"target: >= {TARGET_STEPS_S:g} bench steps/s: {step_rate:,.0f} -> {'MET' if met else 'MISSED'}")
    emit(
        "bench step vs bare OpenDSS solve",
        step_rate,
        solve_rate,
        step_rate / solve_rate,
        "steps/s (peer: Feeder.solve alone)",
        f">= {TARGET_STEPS_S:g} steps/s",
        met,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
