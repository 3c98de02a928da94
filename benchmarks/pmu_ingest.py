"""The agent ingesting many PMUs: CPU (fraction of one core) and frames dropped or late.

    .venv/bin/python benchmarks/pmu_ingest.py [--pmus 64] [--rate 60] [--seconds 10]

The simulated PMUs (sim_hw SimPmu, real TCP servers on 127.0.0.1) run in a child process so the CPU
measured here (``time.process_time`` of this process over the measuring interval, after a warm-up)
is the agent's alone: one PdcClient per PMU, the stream reader and codec, PmuIngest (ring buffer,
frequency / ROCOF / voltage / time-sync monitors, once-a-second readings), the events task.

``dropped`` = frames the PMUs' grid says should have arrived in the interval minus frames ingested;
``late`` = frames ingested more than 0.5 s after their timestamp. Targets (issue 3): none dropped,
< 25 % of one core.

Baselines for the same number of frames, as ratios: our decode alone (``DataCodec.decode`` of the
same bytes) and pyPMU's ``CommonFrame.convert2frame`` (the synchrophasor package, when installed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.config import PmuMonitoringConfig, PmuStreamConfig  # noqa: E402
from agent.pmu.ingest import PmuMonitoring  # noqa: E402
from protocols.c37118 import data_codec, encode_frame  # noqa: E402


async def serve(n: int, rate: int) -> None:
    from sim_hw.devices.pmu import SimPmu

    pmus = [await SimPmu(100 + i, f"PMU{i}", rate=rate, port=0).start() for i in range(n)]
    print(" ".join(str(p.port) for p in pmus), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    for p in pmus:
        await p.stop()


class NullStore:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    async def add_event(self, *args, **kwargs) -> None:
        self.events.append(args)


async def measure(ports: list[int], rate: int, seconds: float) -> dict:
    readings = [0]

    def sink(r: list) -> None:
        readings[0] += len(r)

    pmus = tuple(PmuStreamConfig(name=f"pmu{i}", host="127.0.0.1", port=p, idcode=100 + i, nominal_v=7200.0)
                 for i, p in enumerate(ports))  # fmt: skip
    store = NullStore()
    mon = PmuMonitoring(pmus, PmuMonitoringConfig(), sink, store)
    tasks = [asyncio.create_task(c.run()) for c in mon.clients.values()]
    tasks.append(asyncio.create_task(mon.run_events()))
    deadline = time.monotonic() + 20
    while any(i.stats.frames < rate for i in mon.ingests.values()):
        if time.monotonic() > deadline:
            raise SystemExit("PMUs did not all stream within 20 s")
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    f0 = sum(i.stats.frames for i in mon.ingests.values())
    late0 = sum(i.stats.late for i in mon.ingests.values())
    c0, w0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    c1, w1 = time.process_time(), time.monotonic()
    f1 = sum(i.stats.frames for i in mon.ingests.values())
    late1 = sum(i.stats.late for i in mon.ingests.values())
    for t in tasks:
        t.cancel()
    _, stuck = await asyncio.wait(tasks, timeout=5)
    if stuck:
        print(f"  ({len(stuck)} tasks did not stop within 5 s of cancel)", file=sys.stderr)
    wall = w1 - w0
    expected = len(ports) * rate * wall
    frames = f1 - f0
    sample = next(iter(mon.ingests.values()))
    return {"cpu_s": c1 - c0, "wall_s": wall, "frames": frames, "expected": expected, "late": late1 - late0,
            "max_latency_s": max(i.stats.max_latency_s for i in mon.ingests.values()), "events": len(store.events),
            "readings": readings[0], "config": sample.config}  # fmt: skip


def decode_cost(config, frames: int) -> float:
    from sim_hw.devices.pmu import SimPmu

    pmu = SimPmu(config.idcode, "PMU0", rate=config.data_rate, version=2011 if config.version == 2 else 2005)
    k0 = 1_700_000_000 * config.data_rate
    data = [encode_frame(pmu.data_frame(k0 + k)) for k in range(min(frames, 5000))]
    codec = data_codec(pmu.config)
    t0 = time.process_time()
    done = 0
    while done < frames:
        for d in data[: frames - done]:
            codec.decode(d)
        done += min(len(data), frames - done)
    return time.process_time() - t0, data, pmu.config


def pypmu_cost(data: list[bytes], config, frames: int) -> float | None:
    import collections
    import collections.abc

    for alias in ("Sequence", "Mapping", "Iterable", "MutableMapping", "Callable"):
        if not hasattr(collections, alias):
            setattr(collections, alias, getattr(collections.abc, alias))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from synchrophasor.frame import CommonFrame
    except ImportError:
        return None
    from protocols.c37118 import FrameType

    cfg_bytes = encode_frame(config.__class__(**{**{f: getattr(config, f) for f in config.__dataclass_fields__},
                                                 "frame_type": FrameType.CFG2}))  # fmt: skip
    cfg = CommonFrame.convert2frame(cfg_bytes)
    t0 = time.process_time()
    done = 0
    while done < frames:
        for d in data[: frames - done]:
            CommonFrame.convert2frame(d, cfg)
        done += min(len(data), frames - done)
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pmus", type=int, default=64)
    ap.add_argument("--rate", type=int, default=60)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.pmus, args.rate))
        return
    child = subprocess.Popen([sys.executable, __file__, "--serve", "--pmus", str(args.pmus), "--rate", str(args.rate)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        ports = [int(p) for p in child.stdout.readline().split()]
        r = asyncio.run(measure(ports, args.rate, args.seconds))
    finally:
        child.stdin.close()
        child.wait(10)
    frames = r["frames"]
    dropped = max(0, round(r["expected"] - frames))
    core = r["cpu_s"] / r["wall_s"]
    dec_s, data, cfg = decode_cost(r["config"], frames)
    # pyPMU reads STAT as 2005 did (bits 8-6 unknown to it): give it the same PMU's 2005 frames.
    _, data05, cfg05 = decode_cost(replace(r["config"], version=1), 10)
    py_s = pypmu_cost(data05, cfg05, frames)
    print(f"{args.pmus} PMUs x {args.rate} frames/s for {r['wall_s']:.1f} s (SimPmus in a child process)")
    print(f"  frames ingested {frames} of ~{r['expected']:.0f} expected: dropped ~{dropped}, late {r['late']}, "
          f"max latency {r['max_latency_s'] * 1000:.1f} ms, events {r['events']}, readings {r['readings']}")  # fmt: skip
    print(f"  agent CPU {r['cpu_s']:.2f} s = {core * 100:.1f} % of one core (target < 25 %), "
          f"{r['cpu_s'] / frames * 1e6:.1f} us per frame")  # fmt: skip
    print("| per frame | us | ingest / this |")
    print("|---|---|---|")
    print(f"| agent ingest (client + reader + decode + monitors) | {r['cpu_s'] / frames * 1e6:.1f} | 1.0x |")
    print(f"| our decode only (DataCodec.decode) | {dec_s / frames * 1e6:.2f} | {r['cpu_s'] / dec_s:.1f}x |")
    if py_s is not None:
        print(f"| pyPMU decode only (convert2frame) | {py_s / frames * 1e6:.2f} | {r['cpu_s'] / py_s:.2f}x |")
    else:
        print("| pyPMU decode only | (synchrophasor not installed) | |")


if __name__ == "__main__":
    main()
