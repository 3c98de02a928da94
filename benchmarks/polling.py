"""Polling benchmark: 100 Modbus TCP devices on loopback, each answering after 20 ms, polled every second.

Ours: build_pollers + DevicePoller, one task per device (what the agent runs).
Baseline: the plain pymodbus loop a script would write, reading the 100 devices one after another.

The simulated devices run in a subprocess (a small asyncio server answering function 3 after a
fixed delay), so the CPU figures of the polling side are its own; the servers' CPU is shown apart.

    .venv/bin/python benchmarks/polling.py [--devices 100] [--seconds 10] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config import DeviceConfig  # noqa: E402
from agent.points import Reading  # noqa: E402
from protocols.modbus.registermap import parse_register_map  # noqa: E402

# A typical meter block: 3 voltages, 3 currents as float32, frequency, energy counter.
METER_MAP = parse_register_map(
    {
        "name": "bench-meter",
        "points": [
            *({"name": f"v{i}", "address": 2 * i, "type": "float32", "unit": "V"} for i in range(3)),
            *({"name": f"i{i}", "address": 6 + 2 * i, "type": "float32", "unit": "A"} for i in range(3)),
            {"name": "f", "address": 12, "type": "uint16", "scale": 0.01, "unit": "Hz"},
            {"name": "kwh", "address": 13, "type": "uint32", "unit": "kWh", "kind": "energy"},
        ],
    }
)
BLOCK = (0, 15)  # the read plan's single block: start, count


# ---- the simulated devices (subprocess) ---------------------------------------------------------


class _Device(asyncio.Protocol):
    """Answers Modbus TCP function 3 with fixed float values after ``latency`` seconds."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        loop = asyncio.get_running_loop()
        while len(self.buf) >= 12:
            length = int.from_bytes(self.buf[4:6], "big")
            frame, self.buf = self.buf[: 6 + length], self.buf[6 + length :]
            tid, unit, fc = frame[0:2], frame[6], frame[7]
            if fc == 3:
                count = int.from_bytes(frame[10:12], "big")
                regs = b"".join((0x4366 if i % 2 == 0 else 0x8000).to_bytes(2, "big") for i in range(count))
                pdu = bytes((3, 2 * count)) + regs
            else:
                pdu = bytes((fc | 0x80, 1))
            resp = tid + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes((unit,)) + pdu
            loop.call_later(self.latency, self._send, resp)

    def _send(self, resp: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(resp)


async def _serve(n: int, latency: float) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda: _Device(latency), "127.0.0.1", 0) for _ in range(n)]
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # until the parent says stop
    print(json.dumps({"cpu_s": time.process_time()}), flush=True)


class DeviceFarm:
    def __init__(self, n: int, latency: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(n), str(latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ports: list[int] = json.loads(self.proc.stdout.readline())

    def stop(self) -> float:
        """Stop the servers; returns their CPU seconds."""
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        cpu = json.loads(self.proc.stdout.readline())["cpu_s"]
        self.proc.wait(10)
        return cpu


# ---- the two pollers ----------------------------------------------------------------------------


def _cycles(spans: list[list[tuple[float, float]]]) -> list[float]:
    """Cycle k lasts from the first device's k-th poll start to the last device's k-th poll end."""
    n = min(len(s) for s in spans)
    return [max(s[k][1] for s in spans) - min(s[k][0] for s in spans) for k in range(1, n)]  # k=0: connecting


async def run_ours(ports: list[int], seconds: float) -> dict:
    from agent.acquisition import build_pollers

    readings = 0

    def sink(rs: list[Reading]) -> None:
        nonlocal readings
        readings += len(rs)

    devices = [
        DeviceConfig(name=f"m{i}", protocol="modbus-tcp", unit_id=1, register_map=METER_MAP, host="127.0.0.1",
                     port=port, poll_interval_s=1.0, timeout_s=1.0, retries=0)
        for i, port in enumerate(ports)
    ]  # fmt: skip
    pollers = build_pollers(devices, sink)
    assert all(len(p.plan) == 1 and (p.plan[0].start, p.plan[0].count) == BLOCK for p in pollers)
    loop = asyncio.get_running_loop()
    spans: list[list[tuple[float, float]]] = [[] for _ in pollers]
    for idx, p in enumerate(pollers):
        inner = p.poll_once

        async def timed(inner=inner, idx=idx) -> bool:
            t0 = loop.time()
            ok = await inner()
            spans[idx].append((t0, loop.time()))
            return ok

        p.poll_once = timed  # type: ignore[method-assign]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    tasks = [asyncio.create_task(p.run()) for p in pollers]
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    failures = sum(p.stats.polls - p.stats.polls_ok for p in pollers)
    return {"cycles": _cycles(spans), "cpu_per_s": cpu / wall, "readings_per_s": readings / wall, "failures": failures}


async def run_baseline(ports: list[int], seconds: float) -> dict:
    from pymodbus.client import AsyncModbusTcpClient

    clients = [AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1.0) for port in ports]
    for c in clients:
        await c.connect()
    cycles: list[float] = []
    values = 0
    failures = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    first = True
    while time.perf_counter() - wall0 < seconds:
        t0 = time.perf_counter()
        for c in clients:  # one device after another, as a simple script does
            rr = await c.read_holding_registers(BLOCK[0], count=BLOCK[1], device_id=1)
            if rr.isError():
                failures += 1
            else:
                values += len(METER_MAP.points)
        if not first:
            cycles.append(time.perf_counter() - t0)
        first = False
        await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))  # every second, if it can
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    for c in clients:
        c.close()
    return {"cycles": cycles, "cpu_per_s": cpu / wall, "readings_per_s": values / wall, "failures": failures}


def _p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1] if len(xs) >= 2 else xs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    latency = args.latency_ms / 1000

    results = {}
    for name, fn in (("ours", run_ours), ("baseline", run_baseline)):
        farm = DeviceFarm(args.devices, latency)
        try:
            res = asyncio.run(fn(farm.ports, args.seconds))
        finally:
            server_cpu = farm.stop()
        res["server_cpu_per_s"] = server_cpu / args.seconds
        results[name] = res

    ours, base = results["ours"], results["baseline"]
    rows = [
        ("cycle median [ms]", statistics.median(ours["cycles"]) * 1e3, statistics.median(base["cycles"]) * 1e3),
        ("cycle p95 [ms]", _p95(ours["cycles"]) * 1e3, _p95(base["cycles"]) * 1e3),
        ("cycles measured", len(ours["cycles"]), len(base["cycles"])),
        ("readings per s", ours["readings_per_s"], base["readings_per_s"]),
        ("poller CPU s per s", ours["cpu_per_s"], base["cpu_per_s"]),
        ("device servers CPU s per s", ours["server_cpu_per_s"], base["server_cpu_per_s"]),
        ("failed polls", ours["failures"], base["failures"]),
    ]
    print(
        f"\n{args.devices} Modbus TCP devices on 127.0.0.1, {args.latency_ms:g} ms answer latency, "
        f"poll every 1 s, {args.seconds:g} s per run, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n"
    )
    print(f"{'':30} {'ours (pollers)':>15} {'baseline (seq.)':>16} {'ours/baseline':>14}")
    for label, a, b in rows:
        ratio = f"{a / b:.3f}" if b else "-"
        fmt = "{:>15.1f} {:>16.1f}" if isinstance(a, float) else "{:>15} {:>16}"
        if "CPU" in label:
            fmt = "{:>15.3f} {:>16.3f}"
        print(f"{label:30} " + fmt.format(a, b) + f" {ratio:>14}")
    target = 1.5 * args.latency_ms
    med = statistics.median(ours["cycles"]) * 1e3
    verdict = "MET" if med <= target else "MISSED"
    print(
        f"\ntarget: a whole cycle within 1.5x one device's latency ({target:g} ms): ours {med:.1f} ms median, "
        f"{_p95(ours['cycles']) * 1e3:.1f} ms p95 -> {verdict}"
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        asyncio.run(_serve(int(sys.argv[2]), float(sys.argv[3])))
    else:
        main()
