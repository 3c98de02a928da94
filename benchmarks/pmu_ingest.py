"""The agent ingesting many PMUs: CPU (fraction of one core) and frames dropped or late.

    .venv/bin/python benchmarks/pmu_ingest.py [--pmus 64] [--rate 60] [--seconds 10]

The simulated PMUs (sim_hw SimPmu, real TCP servers on 127.0.0.1) run in a child process so the CPU
measured here (``time.process_time`` of this process over the measuring interval, after a warm-up)
is the agent's alone: one PdcClient per PMU, the stream reader and codec, PmuIngest (ring buffer,
frequency / ROCOF / voltage / time-sync monitors, once-a-second readings), the events task.

``dropped`` = frames the PMUs sent over the whole run (or could not write because the agent's socket was
full) minus frames ingested, counted once the PMUs have stopped and the last frames arrived. Besides it, the
frames missing from the PMUs' grid in the measured interval: the simulator skips ticks when it runs late;
``late`` = frames ingested more than 0.5 s after their timestamp. Targets: none dropped, < 25 % of one core.
Source: the agent's need: an event window is built from every frame (a dropped frame is a hole in it), and
64 PMUs at 60 frames/s (a large substation, or one PDC stream) must leave most of a core to acquisition,
storage, the uplink and power quality. ``cancel``: how long every task took to end once cancelled (a SIGTERM).

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

from agent.pmu.config import PmuMonitoringConfig, PmuStreamConfig  # noqa: E402
from agent.pmu.ingest import PmuMonitoring  # noqa: E402
from protocols.c37118 import data_codec, encode_frame  # noqa: E402


async def serve(n: int, rate: int) -> None:
    from sim_hw.devices.pmu import SimPmu

    pmus = [await SimPmu(100 + i, f"PMU{i}", rate=rate, port=0).start() for i in range(n)]
    print(" ".join(str(p.port) for p in pmus), flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):  # until the parent closes stdin
        # "stop": no more data frames; answer how many were sent and how many the agent's full socket refused.
        for p in pmus:
            p.stop_sending()
        sent = sum(p.stats.data_frames_sent for p in pmus)
        refused = sum(p.stats.data_frames_dropped for p in pmus)
        print(sent, refused, flush=True)
    for p in pmus:
        await p.stop()


class NullStore:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    async def add_event(self, *args, **kwargs) -> None:
        self.events.append(args)


async def measure(child: subprocess.Popen, ports: list[int], rate: int, seconds: float) -> dict:
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
    ingests = list(mon.ingests.values())
    # Per PMU: frames counted and the newest timestamp, at both ends of the interval. The PMUs' grid
    # between the two newest timestamps says exactly how many frames that span holds, whatever the
    # phase of the sampling against the bursts (all PMUs send on the same grid).
    f0 = [i.stats.frames for i in ingests]
    t0 = [i.buffer.last_ts for i in ingests]
    late0 = sum(i.stats.late for i in ingests)
    c0, w0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    c1, w1 = time.process_time(), time.monotonic()
    f1 = [i.stats.frames for i in ingests]
    t1 = [i.buffer.last_ts for i in ingests]
    late1 = sum(i.stats.late for i in ingests)
    # Whole run: every frame the PMUs sent must have been ingested once the last ones have arrived.
    child.stdin.write("stop\n")
    child.stdin.flush()
    reply = await asyncio.get_running_loop().run_in_executor(None, child.stdout.readline)
    sent, refused = (int(x) for x in reply.split())
    await asyncio.sleep(0.25)  # the last frames arrive; the stale timeout (0.5 s) has not passed
    lost = sent - sum(i.stats.frames for i in ingests) + refused
    s0 = time.monotonic()
    for t in tasks:
        t.cancel()
    _, stuck = await asyncio.wait(tasks, timeout=5)
    stop_s = time.monotonic() - s0
    for t in stuck:
        t.cancel()  # once more, so that the loop can close
    wall = w1 - w0
    frames = sum(f1) - sum(f0)
    expected = sum(round((b - a) * rate) for a, b in zip(t0, t1, strict=True))
    missing = sum(max(0, round((b - a) * rate) - (n1 - n0)) for a, b, n0, n1 in zip(t0, t1, f0, f1, strict=True))
    sample = next(iter(mon.ingests.values()))
    return {"cpu_s": c1 - c0, "wall_s": wall, "frames": frames, "expected": expected, "late": late1 - late0,
            "dropped": lost, "missing": missing, "stop_s": stop_s, "stuck": len(stuck), "tasks": len(tasks),
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
        r = asyncio.run(measure(child, ports, args.rate, args.seconds))
    finally:
        child.stdin.close()
        child.wait(10)
    frames = r["frames"]
    dropped = r["dropped"]
    core = r["cpu_s"] / r["wall_s"]
    dec_s, data, cfg = decode_cost(r["config"], frames)
    # pyPMU reads STAT as 2005 did (bits 8-6 unknown to it): give it the same PMU's 2005 frames.
    _, data05, cfg05 = decode_cost(replace(r["config"], version=1), 10)
    py_s = pypmu_cost(data05, cfg05, frames)
    print(f"{args.pmus} PMUs x {args.rate} frames/s for {r['wall_s']:.1f} s (SimPmus in a child process)")
    print(
        f"  whole run: dropped {dropped} (sent by the PMUs, never ingested); measured interval: "
        f"{frames} frames of {r['expected']} on the grid ({r['missing']} never sent: the simulator skips late ticks)"
    )
    print(f"  late {r['late']}, "
          f"max latency {r['max_latency_s'] * 1000:.1f} ms, events {r['events']}, readings {r['readings']}")  # fmt: skip
    print(f"  agent CPU {r['cpu_s']:.2f} s = {core * 100:.1f} % of one core (target < 25 %), "
          f"{r['cpu_s'] / frames * 1e6:.1f} us per frame")  # fmt: skip
    print(f"  cancel: {r['tasks'] - r['stuck']} of {r['tasks']} tasks ended in {r['stop_s'] * 1000:.0f} ms "
          f"(the supervisor allows 10 s per stage)")  # fmt: skip
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
