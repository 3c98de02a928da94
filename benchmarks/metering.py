"""Metering at the edge: the CPU of turning register reads into intervals, side by side with its floor.

    .venv/bin/python benchmarks/metering.py [--meters 100] [--hours 2]

100 meters with two uint32 Wh registers each (delivered, received) and a serial number, read every second, as
the agent's pollers hand them over: every second of simulated time is one batch of readings given to
``MeteringService.take`` (agent/metering/service.py: a lookup per reading, one engine ``add`` per register
read), and every simulated second the intervals the engines closed are stored with their states in one
transaction on a real SQLite file (``store_closed``), as the service's task does. The counters rise at a
constant power, so every 15-minute interval closes as actual.

Peer (the floor of the same work): ``Snapshot.update`` of the same batches, what every reading costs the agent
anyway (agent/acquisition: the latest value per point). Printed: CPU per simulated second of reads, as a share of
one core (the reads arrive once a second), and the ratio to the floor.

Target: under 1 % of a core for 100 meters read every second. Source: the agent on a Pi-class board also polls,
stores, sends, controls and measures power quality on its one core; metering is bookkeeping.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import emit  # noqa: E402

from agent.acquisition import Snapshot  # noqa: E402
from agent.metering.config import MeterConfig, MeteringConfig, RegisterConfig  # noqa: E402
from agent.metering.service import MeteringService  # noqa: E402
from agent.points import Quality, Reading, Stream  # noqa: E402
from agent.store import AsyncStore  # noqa: E402

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 900


def config(n: int) -> MeteringConfig:
    regs = (RegisterConfig("energy_delivered_wh", "kwh_delivered", 2**32, 0.001, 1.0),
            RegisterConfig("energy_received_wh", "kwh_received", 2**32, 0.001, 1.0))  # fmt: skip
    return MeteringConfig(interval_s=900, meters=tuple(MeterConfig(f"m{i}", 20_000.0, regs, ("serial_number",))
                                                       for i in range(n)))  # fmt: skip


def batches(n: int, seconds: int) -> list[list[Reading]]:
    out = []
    for s in range(seconds):
        t = T0 + s
        batch = []
        for i in range(n):
            wh = int((i + 1) * 50 * s) % 2**32  # (i+1) x 180 kW
            batch.append(Reading(f"m{i}.energy_delivered_wh", t, wh, "Wh", Quality.GOOD, Stream.ENERGY))
            batch.append(Reading(f"m{i}.energy_received_wh", t, 1000, "Wh", Quality.GOOD, Stream.ENERGY))
            batch.append(Reading(f"m{i}.serial_number", t, 4711 + i, "", Quality.GOOD))
        out.append(batch)
    return out


async def measure(n: int, seconds: int, folder: Path) -> dict[str, float]:
    data = batches(n, seconds)
    store = await AsyncStore.open(folder / "bench.db", "bench", 256 << 20, max_age_s=0.0)
    try:
        svc = MeteringService(config(n), store, clock=lambda: T0)
        await svc.start()
        take = store_cpu = 0.0
        for batch in data:
            c0 = time.process_time()
            svc.take(batch)
            c1 = time.process_time()
            await svc.store_closed()
            take += c1 - c0
            store_cpu += time.process_time() - c1
        snap = Snapshot()
        c0 = time.process_time()
        for batch in data:
            snap.update(batch)
        floor = time.process_time() - c0
        return {"take": take, "store": store_cpu, "floor": floor, "intervals": svc.stored, "reads": svc.reads}
    finally:
        await store.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=100)
    ap.add_argument("--hours", type=float, default=2.0, help="simulated hours of reads (one batch a second)")
    args = ap.parse_args()
    seconds = int(args.hours * 3600)
    with tempfile.TemporaryDirectory() as d:
        r = asyncio.run(measure(args.meters, seconds, Path(d)))
    per_s = {k: r[k] / seconds for k in ("take", "store", "floor")}
    total = per_s["take"] + per_s["store"]
    print(f"metering: {args.meters} meters x 2 registers read every second, {args.hours:g} simulated hours "
          f"({r['reads']:,} reads, {r['intervals']:,} intervals stored)")  # fmt: skip
    print(f"{'':44s}{'CPU per s of reads':>20s}{'share of a core':>17s}{'ratio':>8s}")
    rows = [("floor: Snapshot.update of the same readings", per_s["floor"]),
            ("MeteringService.take (every engine add)", per_s["take"]),
            ("store_closed (intervals + states, SQLite)", per_s["store"]),
            ("metering in all", total)]  # fmt: skip
    for name, v in rows:
        ratio = "" if name.startswith("floor") else f"{v / per_s['floor']:7.1f}x"
        print(f"{name:44s}{v * 1e3:17.3f} ms{v * 100:16.3f}%{ratio:>8s}")
    print(f"target: under 1 % of a core -> {'met' if total < 0.01 else 'NOT met'}")
    emit(
        f"metering CPU, {args.meters} meters",
        total * 100,
        per_s["floor"] * 100,
        total / per_s["floor"],
        "% of a core (peer: Snapshot.update)",
        "< 1 % of a core",
        total < 0.01,
    )


if __name__ == "__main__":
    main()
