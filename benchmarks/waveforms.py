"""The bench's waveforms and our COMTRADE codec, side by side with their peers.

    .venv/bin/python benchmarks/waveforms.py [--seconds 60]

- Synthesis (sim_hw/waveforms): 6 channels (va vb vc ia ib ic) at 12.8 kHz, plain sines and a rich signal
  (5 voltage harmonics, 2 current harmonics, 8.8 Hz flicker, a dip, noise), in seconds of signal per
  wall second, against plain ``numpy.sin`` of the same 6 channels (the floor any synthesis sits on).
- COMTRADE (protocols/comtrade): read time of a 2013 BINARY and an ASCII file written by us, against the
  ``comtrade`` package from PyPI (0.2) reading the same files; rows/s and the ratio ours / peer.
- Wave stream (protocols/wavestream): samples per second over loopback at full speed, server and client
  in one event loop.

Targets: synthesis and the wave stream at least real time (the bench plays its waveforms live: slower than
real time, it would fall behind its own clock). The COMTRADE reads have no target (figures beside the peer).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import comtrade as peer
import numpy as np
from _report import emit

from protocols import comtrade as ct
from protocols import wavestream as ws
from sim_hw.waveforms import Event, Flicker, Harmonic, Noise, WaveformDesc, comtrade_config, generate
from sim_hw.waveforms.stream import WaveformStreamServer

RATE = 12_800.0


def best(fn: Callable[[], Any], n: int = 2) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    secs = args.seconds
    n = int(secs * RATE)
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    print(f"{'what':44}{'ours':>14}{'peer':>14}{'ratio':>8}  unit")
    plain = WaveformDesc(rate_hz=RATE)
    rich = WaveformDesc(
        rate_hz=RATE,
        harmonics=tuple(Harmonic(h, 1.0) for h in (3, 5, 7, 11, 13)),
        current_harmonics=(Harmonic(5, 20), Harmonic(7, 10)),
        flicker=Flicker(1.0, freq_hz=8.8),
        events=(Event("dip", 5, 1, 50, "a"),),
        noise=Noise(0.1, 0.1, 1),
    )
    t_idx = np.arange(n) / RATE

    def numpy_sines() -> np.ndarray:
        return np.stack([np.sin(2 * math.pi * 60 * t_idx + k * 2.094) for k in range(6)])

    t_np = best(numpy_sines)
    judged: list[tuple] = []
    for name, desc in (("plain", plain), ("rich", rich)):
        t = best(lambda d=desc: generate(d, secs))
        print(
            f"{'generate ' + name + ' (s of signal / s)':44}{secs / t:14,.0f}{secs / t_np:14,.0f}{t_np / t:8.2f}  x real time, peer = numpy.sin"
        )
        judged.append((f"synthesis {name}", secs / t, secs / t_np, t_np / t, "x real time (peer: numpy.sin)",
                       ">= 1x real time", secs / t >= 1.0))  # fmt: skip
    w = generate(rich, secs)
    tmp = Path(tempfile.mkdtemp())
    for fmt in ("BINARY", "ASCII"):
        cfg = comtrade_config(w, rev_year="2013", data_format=fmt)
        ct.write(tmp / f"r{fmt}", cfg, w.data)
        t_ours = best(lambda f=fmt: ct.read(tmp / f"r{f}.cfg"))

        def peer_read(f: str = fmt) -> None:
            rec = peer.Comtrade(use_numpy_arrays=True, use_double_precision=True, ignore_warnings=True)
            rec.load(str(tmp / f"r{f}.cfg"))

        t_peer = best(peer_read, 1)
        print(
            f"{'COMTRADE 2013 ' + fmt + ' read (rows/s)':44}{n / t_ours:14,.0f}{n / t_peer:14,.0f}{t_peer / t_ours:8.2f}  rows/s, peer = comtrade 0.2"
        )
        judged.append((f"COMTRADE {fmt} read", n / t_ours, n / t_peer, t_peer / t_ours, "rows/s (peer: comtrade 0.2)",
                       "none (figure)", True))  # fmt: skip

    async def stream() -> float:
        async with WaveformStreamServer(plain, block_s=0.1, speed=math.inf, duration_s=secs) as srv:
            t0 = time.perf_counter()
            async with ws.WaveStreamClient("127.0.0.1", srv.port) as client:
                got = 0
                async for block in client:
                    got += block.n_samples
            return got / (time.perf_counter() - t0)

    rate = asyncio.run(stream())
    print(
        f"{'wave stream loopback (samples/s per channel)':44}{rate:14,.0f}{RATE:14,.0f}{rate / RATE:8.2f}  x real time at 12.8 kHz"
    )
    judged.append(("wave stream loopback", rate, RATE, rate / RATE, "samples/s per channel (peer: 12.8 kHz)",
                   ">= 1x real time", rate >= RATE))  # fmt: skip
    for record in judged:
        emit(*record)


if __name__ == "__main__":
    main()
