"""The power-quality chain, side by side with a bare FFT loop.

    .venv/bin/python benchmarks/pq.py [--seconds 60] [--channels 8] [--rate 12800] [--block 0.1]

Ours: the full IEC 61000-4-30 Class A chain (:class:`agent.pq.classa.ClassAMeter`: synchronised 10/12-cycle
harmonics, RMS, Urms(1/2) events, 10-s frequency, flagging, 3-s and 10-min aggregation) over ``--channels``
channels, plus one IEC 61000-4-15 :class:`agent.pq.flicker.Flickermeter` per channel, fed in blocks of
``--block`` seconds as the agent feeds them. Baseline: ``numpy.fft.rfft`` of every 10-cycle window of the same
channels and nothing else (no synchronisation, no grouping, no events): the floor any harmonic analyser
sits on. Both run in this process on one core; the figure is seconds of signal per CPU-second (process
time), i.e. the real-time factor. Rows for the parts of the chain show where the time goes.

Target: the full chain plus flicker on 8 channels at 12.8 kHz >= 20 x real time on one core of this kind of
machine. Source: the agent's need on its edge hardware: a site measures up to two three-phase buses with
their neutrals (8 voltage channels) at 12.8 kHz (256 samples per 50-Hz cycle, a common rate of Class A power
quality instruments), in real time, on one core of a Raspberry Pi-class computer, several times slower than
this machine's core, while the same computer polls, stores and uplinks.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.pq.classa import ClassAMeter  # noqa: E402
from agent.pq.events import EventConfig, EventDetector  # noqa: E402
from agent.pq.flicker import Flickermeter  # noqa: E402
from agent.pq.harmonics import HarmonicAnalyser  # noqa: E402

TARGET_RTF = 20.0
Row = tuple[str, str, float, str, float, str]


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


def bench(seconds: float, channels: int, rate_hz: float, block_s: float) -> tuple[list[Row], float]:
    x = signal(channels, rate_hz, seconds)
    block = round(block_s * rate_hz)
    config = EventConfig(udin_v=230.0)

    def chain_and_flicker() -> None:
        meter = ClassAMeter(config, rate_hz, 50.0, channels)
        flickers = [Flickermeter(rate_hz, 50, 230) for _ in range(channels)]

        def push(b: np.ndarray) -> None:
            meter.push(b)
            for k, fl in enumerate(flickers):
                fl.process(b[k])

        feed(x, block, push)

    def chain_only() -> None:
        feed(x, block, ClassAMeter(config, rate_hz, 50.0, channels).push)

    def harmonics_only() -> None:
        feed(x, block, HarmonicAnalyser(rate_hz, 50.0, channels).push)

    def events_only() -> None:
        feed(x, block, EventDetector(config, rate_hz, 50.0, channels).push)

    def flicker_only() -> None:
        flickers = [Flickermeter(rate_hz, 50, 230) for _ in range(channels)]
        feed(x, block, lambda b: [fl.process(b[k]) for k, fl in enumerate(flickers)])

    window = round(10 * rate_hz / 50.0)  # 10 nominal cycles, raw samples

    def fft_loop() -> None:
        for i in range(0, x.shape[1] - window + 1, window):
            np.fft.rfft(x[:, i : i + window], axis=1)

    base = seconds / cpu_seconds(fft_loop)
    rows: list[Row] = []
    for what, fn in [
        ("Class A chain + flicker", chain_and_flicker),
        ("Class A chain (ClassAMeter)", chain_only),
        ("  harmonics + RMS", harmonics_only),
        ("  events (Urms(1/2))", events_only),
        ("  flicker (8 meters)" if channels == 8 else "  flicker", flicker_only),
    ]:
        rows.append((what, f"{channels} ch @ {rate_hz / 1000:g} kHz", seconds / cpu_seconds(fn), "rfft per window", base,
                     "s of signal / CPU-s"))  # fmt: skip
    return rows, rows[0][2]


def print_table(rows: list[Row]) -> None:
    header = f"{'measure':30}{'ours':>18}{'rate':>10}{'baseline':>18}{'rate':>10}{'ratio':>9}  unit"
    print(header)
    print("-" * len(header))
    for what, ours_label, ours, base_label, base, unit in rows:
        print(f"{what:30}{ours_label:>18}{ours:10,.1f}{base_label:>18}{base:10,.1f}{ours / base:9.4f}  {unit}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of signal per run")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--rate", type=float, default=12800.0, help="sample rate [Hz]")
    ap.add_argument("--block", type=float, default=0.1, help="block length fed per call [s]")
    args = ap.parse_args()
    rows, rtf = bench(args.seconds, args.channels, args.rate, args.block)
    print_table(rows)
    print()
    print(f"real-time factor of the full chain + flicker: {rtf:.1f} x (target >= {TARGET_RTF:g} x): "
          f"{'MET' if rtf >= TARGET_RTF else 'MISSED'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
