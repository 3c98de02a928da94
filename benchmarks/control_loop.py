"""The control decision loop's CPU per cycle, side by side with the raw cost of what it cannot avoid.

    .venv/bin/python benchmarks/control_loop.py [--cycles 300] [--warmup-s 12]

The shipped bench (config/sim-ieee13.toml, copied with free ports, started at solar noon on a clear day) runs as
its own process, as in the field. This process builds the agent's pollers and control from the demo's site file
(config/agent-sim.toml, pointed at the copy's ports, its own store) with ``[control]`` in ``advise`` mode and the
regulator and DER sections added: four SunSpec inverters (pv675, pv680, pv634, pv652), one cap bank
(cap675-ctl), one regulator (reg-ctl). ``build_control`` decides which functions run, so every function built
since is measured without a change here (the functions built are printed).

The pollers read every device over loopback for ``--warmup-s`` seconds (SunSpec discovery, the RS-485 line's
5 s cycle) and are then stopped, so the process does nothing else while the loop is timed. One cycle is what the
controller's layers do in one pass with every function due (the worst case: in the field each layer runs at its
own cadence): a View of the snapshot, each function's pure step, and for a proposed command the envelope (its
state read from the store, checks 2..9, the advise verdict) and the audit record stored. CPU is the process's
(time.process_time: the store's worker thread included). Peers, each the floor of one part of a cycle:

- snapshot read: ``snapshot.get`` of every point one cycle read (counted during a cycle), nothing else;
- envelope state read: ``Envelope.refresh()``, the store query each submit makes (operations and flags).

Beside them, the CPU of one live picture for ``gridedge control explain`` (agent/control/live.py), written once a
second whatever the cadence of the layers.

Target: under 5 ms of CPU per cycle. Source: the edge computer is a Pi-class board whose one core also
polls every device, stores and sends; a loop that runs every few seconds must take a small share of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import emit  # noqa: E402
from bench_steps import bench_copy  # noqa: E402

from agent.acquisition import Snapshot, build_pollers  # noqa: E402
from agent.clock import SystemClock  # noqa: E402
from agent.config import parse_config  # noqa: E402
from agent.control.wiring import build_control  # noqa: E402
from agent.points import Reading  # noqa: E402
from agent.store import AsyncStore  # noqa: E402
from gridedge_demo import wait_port  # noqa: E402
from protocols.modbus.serialbus import SerialBusRegistry  # noqa: E402
from sim_hw.config import load_bench_config  # noqa: E402

TARGET_MS = 5.0
SITE = ROOT / "config" / "agent-sim.toml"
INVERTERS = ["pv675", "pv680", "pv634", "pv652"]
REGULATOR = {"device": "reg-ctl", "operation": "supervise", "reverse_power": "allow", "band_center_min_v": 118.0,
             "band_center_max_v": 124.0, "bandwidth_min_v": 2.0, "bandwidth_max_v": 3.0}  # fmt: skip
DER = [{"devices": INVERTERS, "volt_var": "category-b", "volt_watt": "default"}]


def site(bench_path: Path, store: Path, capbank: dict[str, Any] | None = None) -> Any:
    """The demo's site file pointed at the bench copy, its own store, advise mode, regulator and DER added."""
    raw = tomllib.loads(SITE.read_text())
    bench = load_bench_config(bench_path)
    ports = {d.name: d.port for d in bench.devices if d.port}
    link = str(bench.bus("bus1").link)
    for dev in raw["devices"]:
        if "serial_port" in dev:
            dev["serial_port"] = link
        elif dev["name"] in ports:
            dev["port"] = ports[dev["name"]]
    raw["store"]["path"] = str(store)
    ctl = raw["control"]
    ctl["mode"] = "advise"
    ctl.setdefault("regulator", REGULATOR)
    ctl.setdefault("der", DER)
    ctl["capbank"].update(capbank or {})
    return parse_config(raw, SITE)


class Counting:
    """The snapshot, noting every point read through it."""

    def __init__(self, inner: Snapshot) -> None:
        self.inner = inner
        self.points: set[str] = set()

    def get(self, point: str) -> Reading | None:
        self.points.add(point)
        return self.inner.get(point)

    def items(self) -> list[tuple[str, Reading]]:
        return self.inner.items()


def per_call_ms(fn: Any, n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1000


# the cap bank called to switch at every cycle (delay 0): the shipped bench's bank is closed, and its var flow is
# always below this q_open_below_var (the voltage rules stay the demo's)
PROPOSING = {"delay_s": 0, "q_close_above_var": 3e8, "q_open_below_var": 1e8}


async def cycles_of(config: Any, snapshot: Snapshot, store: AsyncStore, pollers: list[Any], n: int) -> dict[str, Any]:
    """``n`` cycles of the control built from ``config`` over the frozen ``snapshot``."""
    counting = Counting(snapshot)
    control = build_control(config, counting, store, SystemClock(), pollers)
    assert control is not None
    controller, envelope = control.controller, control.envelope
    await envelope.refresh()
    cpu: list[float] = []
    wall: list[float] = []
    commands = 0
    for _ in range(n):
        controller._due.clear()  # every function due at once: the worst case
        c0, w0 = time.process_time(), time.perf_counter()
        for layer in controller.layers():
            commands += sum(1 for d in await controller.cycle(layer) if d.command is not None)
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    points = sorted(counting.points)
    r0 = time.process_time()
    for _ in range(n):
        await envelope.refresh()
    return {
        "functions": [f"{f.name}:{f.policy.mode}" for f in controller.functions],
        "actuators": sorted(envelope.status()["devices"]), "points_read": len(points), "cycles": n,
        "commands_proposed": commands, "decisions": dict(envelope.counts),
        "last": {fn: f"{d.rule} {dict(d.detail)}" for fn, d in envelope.last.items()}, "cpu_ms": cpu, "wall_ms": wall,
        "get_ms": per_call_ms(lambda: [snapshot.get(p) for p in points], 20000),
        "refresh_ms": (time.process_time() - r0) / n * 1000,
        # the live picture `control explain` reads, written once a second (agent/control/live.py)
        "live_ms": per_call_ms(lambda: json.dumps(control.live.picture(), default=str), 50) if control.live else None,
    }  # fmt: skip


async def measure(configs: dict[str, Any], cycles: int, warmup_s: float) -> dict[str, Any]:
    """Poll the bench for ``warmup_s``, stop, then time the loop of each config over the frozen snapshot."""
    first = next(iter(configs.values()))
    clock = SystemClock()
    store = await AsyncStore.open(first.store.path, first.site_id, first.store.max_bytes)
    snapshot = Snapshot()
    registry = SerialBusRegistry()
    pollers = build_pollers(first.devices, snapshot.update, clock.time, registry=registry)
    tasks = [asyncio.create_task(p.run()) for p in pollers]
    await asyncio.sleep(warmup_s)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    out = {name: await cycles_of(cfg, snapshot, store, pollers, cycles) for name, cfg in configs.items()}
    out["points_in_snapshot"] = len(snapshot)  # type: ignore[assignment]
    for p in pollers:
        with contextlib.suppress(Exception):
            await p.transport.close()
    await registry.close()
    await store.aclose()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--warmup-s", type=float, default=12.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gridedge-control-loop-") as tmp:
        folder = Path(tmp)
        bench_path = bench_copy(folder)
        bench = load_bench_config(bench_path)
        log = open(folder / "sim.log", "wb")  # noqa: SIM115 - the child's log for its life
        sim = subprocess.Popen([sys.executable, "-m", "gridedge", "sim", "run", "--config", str(bench_path)],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)  # fmt: skip
        try:
            meter = next(d.port for d in bench.devices if d.name == "sub-meter")
            if not wait_port(meter, 120):
                print(f"control loop benchmark: the bench did not start\n{(folder / 'sim.log').read_text()[-2000:]}")
                return 1
            time.sleep(2.0)  # the RS-485 pty and the SunSpec servers come up with the meter's
            configs = {"as shipped": site(bench_path, folder / "agent.db"),
                       "proposing": site(bench_path, folder / "agent.db", PROPOSING)}  # fmt: skip
            r = asyncio.run(measure(configs, args.cycles, args.warmup_s))
        finally:
            sim.terminate()
            try:
                sim.wait(20)
            except subprocess.TimeoutExpired:
                sim.kill()
            log.close()
    worst = 0.0
    print(f"control decision loop over a frozen snapshot of {r['points_in_snapshot']} points; every function due "
          "at each cycle; CPU of the process (time.process_time)")  # fmt: skip
    for name in ("as shipped", "proposing"):
        x = r[name]
        cpu = sorted(x["cpu_ms"])
        mean, p95 = statistics.fmean(cpu), cpu[int(0.95 * (len(cpu) - 1))]
        worst = max(worst, p95)
        print(f"\n{name}: {x['cycles']} cycles; functions {', '.join(x['functions'])}; envelope devices "
              f"{', '.join(x['actuators'])}; {x['points_read']} points read per cycle; commands proposed "
              f"{x['commands_proposed']}; decisions {x['decisions']}")  # fmt: skip
        for fn, last in x["last"].items():
            print(f"  last decision of {fn}: {last[:200]}")
        print(f"{'':44}{'CPU ms':>10}{'ratio':>10}")
        print(f"{'one cycle (mean)':44}{mean:10.3f}{'':>10}")
        print(f"{'one cycle (p95)':44}{p95:10.3f}{'':>10}")
        print(f"{'one cycle, wall (mean)':44}{statistics.fmean(x['wall_ms']):10.3f}{'':>10}")
        print(f"{'peer: snapshot read of those points':44}{x['get_ms']:10.4f}{mean / x['get_ms']:10.1f}")
        print(f"{'peer: envelope state read (store query)':44}{x['refresh_ms']:10.3f}{mean / x['refresh_ms']:10.2f}")
    if r["as shipped"]["live_ms"] is not None:
        print(f"\nthe live picture for control explain (whole snapshot as JSON, once a second): "
              f"{r['as shipped']['live_ms']:.2f} ms CPU per write")  # fmt: skip
    print("\nratio: one cycle's mean CPU / the peer's")
    print(f"target: < {TARGET_MS:g} ms CPU per cycle: {'met' if worst < TARGET_MS else 'NOT met'} "
          f"(worst p95 {worst:.3f} ms)")  # fmt: skip
    for name in ("as shipped", "proposing"):
        x = r[name]
        cpu = sorted(x["cpu_ms"])
        p95 = cpu[int(0.95 * (len(cpu) - 1))]
        emit(f"control cycle, {name}", p95, x["refresh_ms"], p95 / x["refresh_ms"],
             "CPU ms p95 (peer: envelope state read)", f"< {TARGET_MS:g} ms", p95 < TARGET_MS)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
