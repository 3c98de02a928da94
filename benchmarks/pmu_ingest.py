"""The agent ingesting many PMUs: CPU per frame and per core, frames dropped, against the codec and pyPMU.

    .venv/bin/python benchmarks/pmu_ingest.py [--pmus 64] [--rate 60] [--seconds 5] [--intervals 3]
                                              [--read-batch-s S] [--buffer-s 60] [--warmup-s 1]

The simulated PMUs (sim_hw SimPmu, real TCP servers on 127.0.0.1) run in a child process so the CPU
measured here (``time.process_time`` of this process, user + system, over each measured interval, after a
warm-up) is the agent's alone: one PdcClient per PMU sharing the ReadBatcher that reads their sockets, the
stream reader and codec, PmuIngest (ring buffer, frequency / ROCOF / voltage / time-sync monitors,
once-a-second readings), the events task (stale ticks, event windows). ``--intervals`` back-to-back
intervals of ``--seconds`` are measured; the median is reported with the spread.
``--read-batch-s 0`` reads each segment as it comes (no batcher), for comparison. ``--buffer-s`` is the
ring buffers' length (``[pmu_monitoring] buffer_s``, default the agent's 60 s) and ``--warmup-s`` the time
streamed before the first interval: ``--buffer-s 5 --warmup-s 6`` measures full buffers, which overwrite
their oldest frame with every new one (the steady state of a running agent).

``dropped`` = frames the PMUs sent over the whole run (or could not write because the agent's socket was
full) minus frames ingested, counted once the PMUs have stopped and the last frames arrived. Besides it, the
frames missing from the PMUs' grid in the measured intervals: the simulator skips ticks when it runs late;
``late`` = frames ingested more than 0.5 s after their timestamp. ``cancel``: how long every task took to
end once cancelled (a SIGTERM).

Targets: the whole ingest at most 10 us per frame, 64 PMUs x 60 frames/s under 5 % of one core, none
dropped. Source: the agent's need: an event window is built from every frame (a dropped frame is a hole in
it), and 64 PMUs at 60 frames/s (a large substation, or one PDC stream) must leave the core to acquisition,
storage, the uplink and power quality on the Raspberry Pi-class computer the agent runs on (several times
slower than this machine).

The same frames through each stage alone, as ratios (no sockets): the stream reader with the batch a read
brings (``rate x read-batch`` frames per feed, ``StreamReader.data_frames``, decode included),
``PmuIngest.on_frames`` on decoded frames (as many a call, 64 PMUs in turn), our decode alone
(``DataCodec.decode``) and pyPMU's ``CommonFrame.convert2frame`` (the synchrophasor package, when installed;
given the 2005 frames it reads).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.pmu.config import PmuMonitoringConfig, PmuStreamConfig  # noqa: E402
from agent.pmu.ingest import PmuIngest, PmuMonitoring  # noqa: E402
from protocols.c37118 import data_codec, encode_frame  # noqa: E402
from protocols.c37118.stream import NEED_DATA, StreamReader  # noqa: E402


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


async def measure(child: subprocess.Popen, ports: list[int], rate: int, seconds: float, intervals: int,
                  read_batch_s: float | None, buffer_s: float, warmup_s: float) -> dict:  # fmt: skip
    readings = [0]

    def sink(r: list) -> None:
        readings[0] += len(r)

    pmus = tuple(PmuStreamConfig(name=f"pmu{i}", host="127.0.0.1", port=p, idcode=100 + i, nominal_v=7200.0)
                 for i, p in enumerate(ports))  # fmt: skip
    store = NullStore()
    mon = PmuMonitoring(pmus, PmuMonitoringConfig(buffer_s=buffer_s), sink, store, read_batch_s=read_batch_s)
    tasks = [asyncio.create_task(c.run()) for c in mon.clients.values()]
    tasks.append(asyncio.create_task(mon.run_events()))
    deadline = time.monotonic() + 20
    while any(i.stats.frames < rate for i in mon.ingests.values()):
        if time.monotonic() > deadline:
            raise SystemExit("PMUs did not all stream within 20 s")
        await asyncio.sleep(0.1)
    await asyncio.sleep(warmup_s)
    ingests = list(mon.ingests.values())
    # Per PMU: frames counted and the newest timestamp, at both ends of each interval. The PMUs' grid
    # between the two newest timestamps says exactly how many frames that span holds, whatever the
    # phase of the sampling against the reads (all PMUs send on the same grid).
    runs = []
    for _ in range(intervals):
        f0 = [i.stats.frames for i in ingests]
        t0 = [i.buffer.last_ts for i in ingests]
        late0 = sum(i.stats.late for i in ingests)
        reads0 = mon.batcher.reads if mon.batcher is not None else 0
        c0, w0, o0 = time.process_time(), time.monotonic(), os.times()
        await asyncio.sleep(seconds)
        c1, w1, o1 = time.process_time(), time.monotonic(), os.times()
        f1 = [i.stats.frames for i in ingests]
        t1 = [i.buffer.last_ts for i in ingests]
        frames = sum(f1) - sum(f0)
        runs.append({
            "cpu_s": c1 - c0, "wall_s": w1 - w0, "frames": frames,
            "us": (c1 - c0) / frames * 1e6, "core": (c1 - c0) / (w1 - w0),
            "sys": (o1.system - o0.system) / max(1e-9, (o1.user - o0.user) + (o1.system - o0.system)),
            "expected": sum(round((b - a) * rate) for a, b in zip(t0, t1, strict=True)),
            "missing": sum(max(0, round((b - a) * rate) - (n1 - n0))
                           for a, b, n0, n1 in zip(t0, t1, f0, f1, strict=True)),
            "late": sum(i.stats.late for i in ingests) - late0,
            "reads": (mon.batcher.reads if mon.batcher is not None else 0) - reads0,
        })  # fmt: skip
    # Whole run: every frame the PMUs sent must have been ingested once the last ones have arrived.
    child.stdin.write("stop\n")
    child.stdin.flush()
    reply = await asyncio.get_running_loop().run_in_executor(None, child.stdout.readline)
    sent, refused = (int(x) for x in reply.split())
    await asyncio.sleep(0.5)  # the last frames arrive (one batch interval and more); stale takes 2 s
    lost = sent - sum(i.stats.frames for i in ingests) + refused
    s0 = time.monotonic()
    for t in tasks:
        t.cancel()
    _, stuck = await asyncio.wait(tasks, timeout=5)
    stop_s = time.monotonic() - s0
    for t in stuck:
        t.cancel()  # once more, so that the loop can close
    sample = next(iter(mon.ingests.values()))
    return {"runs": runs, "dropped": lost, "stop_s": stop_s, "stuck": len(stuck), "tasks": len(tasks),
            "max_latency_s": max(i.stats.max_latency_s for i in mon.ingests.values()), "events": len(store.events),
            "readings": readings[0], "config": sample.config,
            "full": sum(len(i.buffer) == i.buffer.capacity for i in ingests),
            "buffer_mb": sum(getattr(i.buffer, "nbytes", 0) for i in ingests) / 1e6,
            "batch_s": mon.batcher.interval_s if mon.batcher is not None else 0.0}  # fmt: skip


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


def reader_cost(data: list[bytes], config, per_feed: int, frames: int) -> float:
    """CPU s for ``frames`` frames through StreamReader.feed + data_frames, ``per_feed`` frames a feed (as the
    agent reads them)."""
    chunks = [b"".join(data[k : k + per_feed]) for k in range(0, len(data) - per_feed + 1, per_feed)]
    reader = StreamReader([config])
    done = 0
    t0 = time.process_time()
    while done < frames:
        for chunk in chunks:
            reader.feed(chunk)
            out: list = []
            while reader.data_frames(out) is not NEED_DATA:
                pass
            done += len(out)
            if done >= frames:
                break
    return (time.process_time() - t0) * frames / done


def ingest_cost(data: list[bytes], config, pmus: int, per_feed: int, frames: int) -> float:
    """CPU s for ``frames`` decoded frames through PmuIngest.on_frames, ``per_feed`` frames a call (a read's),
    ``pmus`` PMUs in turn (no sockets)."""
    codec = data_codec(config)
    decoded = [codec.decode(d) for d in data]
    mon = PmuMonitoringConfig()
    ingests = [PmuIngest(PmuStreamConfig(name=f"pmu{i}", host="127.0.0.1", port=1, idcode=config.idcode,
                                         nominal_v=7200.0), mon, lambda r: None, lambda *a: None)
               for i in range(pmus)]  # fmt: skip
    per_pmu = min(len(decoded), max(1, frames // pmus))
    batches = [decoded[k : k + per_feed] for k in range(0, per_pmu, per_feed)]
    t0 = time.process_time()
    for batch in batches:
        for ingest in ingests:
            ingest.on_frames(batch)
    return (time.process_time() - t0) * frames / (per_pmu * pmus)


def bench(name: str, ours: float, peer: float | None, ratio: float | None, unit: str, target: str,
          met: bool) -> None:  # fmt: skip
    """One BENCH line (the benchmarks' summary protocol)."""
    r = {"name": name, "ours": round(ours, 3), "peer": None if peer is None else round(peer, 3),
         "ratio": None if ratio is None else round(ratio, 2), "unit": unit, "target": target, "met": bool(met)}  # fmt: skip
    print("BENCH " + json.dumps(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pmus", type=int, default=64)
    ap.add_argument("--rate", type=int, default=60)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each measured interval")
    ap.add_argument("--intervals", type=int, default=3, help="measured intervals (the median is reported)")
    ap.add_argument("--read-batch-s", type=float, default=None,
                    help="interval of the socket reads (default: the agent's; 0: every read as it comes)")  # fmt: skip
    ap.add_argument("--buffer-s", type=float, default=PmuMonitoringConfig().buffer_s,
                    help="ring buffer length per PMU (the agent's [pmu_monitoring] buffer_s)")  # fmt: skip
    ap.add_argument("--warmup-s", type=float, default=1.0, help="streaming before the first measured interval")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.pmus, args.rate))
        return
    child = subprocess.Popen([sys.executable, __file__, "--serve", "--pmus", str(args.pmus), "--rate", str(args.rate)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        ports = [int(p) for p in child.stdout.readline().split()]
        r = asyncio.run(measure(child, ports, args.rate, args.seconds, args.intervals, args.read_batch_s,
                                args.buffer_s, args.warmup_s))  # fmt: skip
    finally:
        child.stdin.close()
        child.wait(10)
    runs = sorted(r["runs"], key=lambda x: x["us"])
    mid = runs[len(runs) // 2]
    us, core, dropped = mid["us"], mid["core"] * 100, r["dropped"]
    frames = sum(x["frames"] for x in runs)
    per_read = frames / sum(x["reads"] for x in runs) if any(x["reads"] for x in runs) else None
    per_feed = max(1, round(args.rate * r["batch_s"]))
    dec_s, data, cfg = decode_cost(r["config"], frames)
    rd_s = reader_cost(data, cfg, per_feed, frames)
    in_s = ingest_cost(data, cfg, args.pmus, per_feed, frames)
    # pyPMU reads STAT as 2005 did (bits 8-6 unknown to it): give it the same PMU's 2005 frames.
    _, data05, cfg05 = decode_cost(replace(r["config"], version=1), 10)
    py_s = pypmu_cost(data05, cfg05, frames)
    dec_us, rd_us, in_us = (x / frames * 1e6 for x in (dec_s, rd_s, in_s))
    py_us = None if py_s is None else py_s / frames * 1e6
    batch = f"sockets read every {r['batch_s']:g} s" if r["batch_s"] else "every read as it comes (no batcher)"
    print(f"{args.pmus} PMUs x {args.rate} frames/s, {len(runs)} intervals of {args.seconds:g} s "
          f"(SimPmus in a child process; {batch}; ring buffers of {args.buffer_s:g} s, {r['full']} of "
          f"{args.pmus} full at the end: {r['buffer_mb']:.1f} MB)")  # fmt: skip
    print(f"  whole run: dropped {dropped} (sent by the PMUs, never ingested); measured: {frames} frames of "
          f"{sum(x['expected'] for x in runs)} on the grid ({sum(x['missing'] for x in runs)} never sent: the "
          f"simulator skips late ticks)")  # fmt: skip
    print(f"  late {sum(x['late'] for x in runs)}, max latency {r['max_latency_s'] * 1000:.1f} ms, events {r['events']}, "
          f"readings {r['readings']}" + (f", {per_read:.1f} frames per socket read" if per_read else ""))  # fmt: skip
    spread = ", ".join(f"{x['us']:.1f}" for x in r["runs"])
    print(f"  agent CPU: median {us:.1f} us per frame = {core:.2f} % of one core "
          f"(intervals: {spread} us per frame), {mid['sys'] * 100:.0f} % of it in the kernel")  # fmt: skip
    print(f"  cancel: {r['tasks'] - r['stuck']} of {r['tasks']} tasks ended in {r['stop_s'] * 1000:.0f} ms "
          f"(the supervisor allows 10 s per stage)")  # fmt: skip
    print("| per frame | us | whole ingest / this |")
    print("|---|---|---|")
    print(f"| agent ingest, whole (socket reads, reader, decode, monitors, readings, events task) | {us:.2f} | 1.0x |")
    print(f"| stream reader + decode, {per_feed} frames per feed | {rd_us:.2f} | {us / rd_us:.1f}x |")
    print(f"| PmuIngest.on_frames, {per_feed} frames a call (buffer, monitors, readings) | {in_us:.2f} | "
          f"{us / in_us:.1f}x |")  # fmt: skip
    print(f"| our decode only (DataCodec.decode) | {dec_us:.2f} | {us / dec_us:.1f}x |")
    if py_us is not None:
        print(f"| pyPMU decode only (convert2frame) | {py_us:.2f} | {us / py_us:.2f}x |")
    else:
        print("| pyPMU decode only | (synchrophasor not installed) | |")
    n = f"{args.pmus}x{args.rate}"
    bench(f"pmu ingest {n}: us/frame, whole ingest (peer: pyPMU decode alone)", us, py_us,
          None if py_us is None else py_us / us, "us/frame", "ingest us/frame <= 10", us <= 10)  # fmt: skip
    bench(f"pmu ingest {n}: % of one core", core, None, None, "% of one core", f"core % for {n} < 5", core < 5)
    bench(f"pmu ingest {n}: frames dropped", dropped, None, None, "frames", "dropped == 0", dropped == 0)


if __name__ == "__main__":
    main()
