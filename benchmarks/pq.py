"""The power-quality chain, side by side with pqopen-lib and with a bare FFT loop.

    .venv/bin/python benchmarks/pq.py [--seconds 60] [--channels 8] [--rate 12800] [--block 0.1] [--repeat 3]

Ours: the full IEC 61000-4-30 Class A chain (:class:`agent.pq.classa.ClassAMeter`: synchronised 10/12-cycle
harmonics and interharmonics to the 50th, RMS, unbalance, Urms(1/2) events, 10-s frequency, flagging, 3-s
and 10-min aggregation) plus IEC 61000-4-15 flicker on every channel (:class:`agent.pq.flicker.FlickermeterBank`),
fed in blocks of ``--block`` seconds as the agent feeds them (:class:`agent.pq.processor.PqProcessor`).

Peer: pqopen-lib's ``PowerSystem`` (the power-quality library of the daqopen project, not written here) on
three phases of the same signal, with the same measurements enabled: harmonics and interharmonics to the
50th (``enable_harmonic_calculation(50)``), 10-period RMS, frequency, unbalance (on by itself with three
phases and harmonics), flicker (``enable_fluctuation_calculation``, which needs the time channel of
``enable_nper_abs_time_sync``). It also computes its one-period and half-period values (RMS, frequency),
which it cannot switch off. It is fed the same blocks through its ``AcqBuffer`` ring buffers.

Baseline: ``numpy.fft.rfft`` of every 10-cycle window of the ``--channels`` channels and nothing else (no
synchronisation, no grouping, no events): the floor any harmonic analyser sits on.

Everything runs in this process, one after the other, on one core; the figure is seconds of signal per
CPU-second (process time), i.e. the real-time factor. Each measurement is repeated ``--repeat`` times and the
median is printed. Rows for the parts of our chain show where the time goes.

Targets:
- ours >= 1.5 x pqopen-lib on the 3-channel signal (same measurements).
- the full chain plus flicker on 8 channels at 12.8 kHz >= 40 x real time on one core of this kind of
  machine. Source: the agent's need on its edge hardware: a site measures up to two three-phase buses with
  their neutrals (8 voltage channels) at 12.8 kHz (256 samples per 50-Hz cycle, a common rate of Class A power
  quality instruments), in real time, on one core of a Raspberry Pi-class computer, several times slower than
  this machine's core, while the same computer polls, stores and uplinks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.pq.classa import ClassAMeter  # noqa: E402
from agent.pq.events import EventConfig, EventDetector  # noqa: E402
from agent.pq.flicker import FlickermeterBank  # noqa: E402
from agent.pq.harmonics import HarmonicAnalyser  # noqa: E402

TARGET_PEER_RATIO = 1.5
TARGET_RTF = 40.0
PEER_CHANNELS = 3
UNIT = "s of signal / CPU-s"


def signal(channels: int, rate_hz: float, seconds: float, f_hz: float = 50.02) -> np.ndarray:
    """Phase voltages (three-phase sets repeated) with a 5 % 5th, 3 % 7th, a 0.3 % 8.8 Hz flicker and one dip."""
    t = np.arange(round(rate_hz * seconds)) / rate_hz
    out = np.empty((channels, t.size))
    for k in range(channels):
        theta = 2 * np.pi * f_hz * t - (k % 3) * 2 * np.pi / 3
        env = 1 + 0.0015 * np.sin(2 * np.pi * 8.8 * t)
        out[k] = 325.0 * env * (np.sin(theta) + 0.05 * np.sin(5 * theta) + 0.03 * np.sin(7 * theta))
    out[:, (t >= seconds / 2) & (t < seconds / 2 + 0.1)] *= 0.6
    return out


def cpu_seconds(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def feed(x: np.ndarray, block: int, push: Callable[[np.ndarray], object]) -> None:
    for i in range(0, x.shape[1], block):
        push(x[:, i : i + block])


def ours_runners(x: np.ndarray, rate_hz: float, block: int) -> dict[str, Callable[[], None]]:
    channels = x.shape[0]
    config = EventConfig(udin_v=230.0)

    def chain_and_flicker() -> None:
        meter = ClassAMeter(config, rate_hz, 50.0, channels)
        bank = FlickermeterBank(rate_hz, 50, 230, channels)

        def push(b: np.ndarray) -> None:
            meter.push(b)
            bank.process(b)

        feed(x, block, push)

    return {
        "Class A chain + flicker": chain_and_flicker,
        "Class A chain (ClassAMeter)": lambda: feed(x, block, ClassAMeter(config, rate_hz, 50.0, channels).push),
        "  harmonics + RMS": lambda: feed(x, block, HarmonicAnalyser(rate_hz, 50.0, channels).push),
        "  events (Urms(1/2))": lambda: feed(x, block, EventDetector(config, rate_hz, 50.0, channels).push),
        "  flicker (FlickermeterBank)": lambda: feed(x, block, FlickermeterBank(rate_hz, 50, 230, channels).process),
    }


def peer_runner(x: np.ndarray, rate_hz: float, block: int) -> Callable[[], None]:
    """pqopen-lib's PowerSystem over the three phases of ``x``: harmonics to the 50th, RMS, frequency, unbalance, flicker."""
    from daqopen.channelbuffer import AcqBuffer
    from pqopen.powersystem import PowerSystem

    def run() -> None:
        size = round(20 * rate_hz)  # ring buffers of 20 s: more than its 10-period window and its flicker step
        phases = [AcqBuffer(size, dtype=np.float64, name=f"U{k + 1}") for k in range(PEER_CHANNELS)]
        clock = AcqBuffer(size, dtype=np.int64, name="time")
        system = PowerSystem(zcd_channel=phases[0], input_samplerate=rate_hz, nominal_frequency=50.0, nper=10)
        for k, buf in enumerate(phases):
            system.add_phase(u_channel=buf, name=str(k + 1))
        system.enable_harmonic_calculation(50)
        system.enable_nper_abs_time_sync(clock, interval_sec=600)
        system.enable_fluctuation_calculation(nominal_voltage=230, pst_interval_sec=600)
        for i in range(0, x.shape[1], block):
            n = min(block, x.shape[1] - i)
            for k, buf in enumerate(phases):
                buf.put_data(x[k, i : i + n])
            clock.put_data((np.arange(i, i + n) * (1e6 / rate_hz)).astype(np.int64))
            system.process()

    return run


def rate_of(seconds: float, fn: Callable[[], None], repeat: int) -> float:
    """Median over ``repeat`` runs of seconds of signal per CPU-second."""
    return statistics.median(seconds / cpu_seconds(fn) for _ in range(repeat))


def emit(name: str, ours: float, peer: float | None, ratio: float | None, unit: str, target: str, met: bool) -> None:
    """One BENCH line (benchmarks/summary.py collects them)."""
    row = {"name": name, "ours": round(ours, 2), "peer": None if peer is None else round(peer, 2),
           "ratio": None if ratio is None else round(ratio, 3), "unit": unit, "target": target, "met": met}  # fmt: skip
    print("BENCH " + json.dumps(row))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of signal per run")
    ap.add_argument("--channels", type=int, default=8, help="channels of the real-time rows")
    ap.add_argument("--rate", type=float, default=12800.0, help="sample rate [Hz]")
    ap.add_argument("--block", type=float, default=0.1, help="block length fed per call [s]")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is printed")
    args = ap.parse_args()
    block = round(args.block * args.rate)
    seconds = args.seconds

    # pqopen-lib side by side with ours on the same three phases
    x3 = signal(PEER_CHANNELS, args.rate, seconds)
    peer_fn = peer_runner(x3, args.rate, block)
    ours_fn = ours_runners(x3, args.rate, block)["Class A chain + flicker"]
    peer, ours3 = [], []
    for _ in range(args.repeat):  # alternated, so a change of the machine's load hits both
        peer.append(seconds / cpu_seconds(peer_fn))
        ours3.append(seconds / cpu_seconds(ours_fn))
    peer_rate, ours3_rate = statistics.median(peer), statistics.median(ours3)

    # our chain on --channels channels, part by part, and the FFT floor
    x = signal(args.channels, args.rate, seconds)
    window = round(10 * args.rate / 50.0)  # 10 nominal cycles, raw samples

    def fft_loop() -> None:
        for i in range(0, x.shape[1] - window + 1, window):
            np.fft.rfft(x[:, i : i + window], axis=1)

    parts = {what: rate_of(seconds, fn, args.repeat) for what, fn in ours_runners(x, args.rate, block).items()}
    base = rate_of(seconds, fft_loop, args.repeat)

    label = f"{args.rate / 1000:g} kHz, {args.block:g}-s blocks, {seconds:g} s of signal, median of {args.repeat}"
    print(f"ours vs pqopen-lib, {PEER_CHANNELS} channels ({label}); {UNIT}")
    header = f"{'measure':44}{'ours':>10}{'pqopen-lib':>12}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    print(f"{'harmonics 50 + IH, RMS, freq, unbalance, Pst':44}{ours3_rate:10.1f}{peer_rate:12.1f}"
          f"{ours3_rate / peer_rate:8.2f}")  # fmt: skip
    print(f"  runs: ours {', '.join(f'{v:.1f}' for v in ours3)}; pqopen-lib {', '.join(f'{v:.1f}' for v in peer)}")
    print()
    print(f"ours, {args.channels} channels ({label}); {UNIT}")
    header = f"{'measure':44}{'ours':>10}{'rfft floor':>12}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for what, value in parts.items():
        print(f"{what:44}{value:10.1f}{base:12,.0f}{value / base:8.4f}")
    rtf = parts["Class A chain + flicker"]
    print()
    emit(f"pq chain + flicker vs pqopen-lib PowerSystem, {PEER_CHANNELS} ch @ {args.rate / 1000:g} kHz", ours3_rate,
         peer_rate, ours3_rate / peer_rate, UNIT, f">= {TARGET_PEER_RATIO:g}x pqopen-lib",
         ours3_rate / peer_rate >= TARGET_PEER_RATIO)  # fmt: skip
    emit(f"pq chain + flicker real-time factor, {args.channels} ch @ {args.rate / 1000:g} kHz", rtf, None, None,
         "x real time", f">= {TARGET_RTF:g}x real time {args.channels} ch", rtf >= TARGET_RTF)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
