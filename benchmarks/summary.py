"""Run the benchmarks with their defaults and print one table of their judged targets.

Each benchmark in ``DEFAULT`` runs as a subprocess of the same interpreter, in the listed order, one after
another (they measure, so they must not share the machine with each other); its output is streamed as it
comes, and its ``BENCH {json}`` lines (``benchmarks/_report.py``) are collected. At the end: one table
(benchmark, target, ours, peer, ratio, met) and the machine (CPU model, cores, Python).

The day-long runs (``control_day.py``, ``metering_day.py``, then ``metering_judge.py`` over its output) take
hours of a bench and are left out of the default list; ``--all`` adds them at the end.

    .venv/bin/python benchmarks/summary.py [--all] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from _report import parse

HERE = Path(__file__).resolve().parent

# (script, what it measures): the default run of `make bench`.
DEFAULT: tuple[tuple[str, str], ...] = (
    ("outbox.py", "store and outbox drain against plain SQLite and paho"),
    ("polling.py", "a poll cycle of 100 Modbus TCP devices against the raw asyncio floor"),
    ("memory.py", "peak RSS of the agent and the PQ worker"),
    ("c37118_decode.py", "C37.118 frame decoding against pyPMU"),
    ("pmu_ingest.py", "PMU stream ingest"),
    ("pq.py", "power-quality pipeline"),
    ("metering.py", "CPU of meter reads"),
    ("commands.py", "command verification and round trip against bare MQTT"),
    ("settlement.py", "a month's settlement against plain SQL floors"),
    ("central_pg.py", "central's store ingest on PostgreSQL against SQLite"),
    ("control_loop.py", "one control decision cycle"),
    ("bench_steps.py", "bench steps against the bare OpenDSS solve"),
    ("waveforms.py", "waveform capture and COMTRADE against python-comtrade"),
    ("dispatch.py", "a 96-interval dispatch solve against the no-dispatch baseline"),
)

# The day-long runs: only with --all (hours each). metering_judge.py reads what metering_day.py wrote.
LONG: tuple[tuple[str, str], ...] = (
    ("control_day.py", "a day of control on the bench"),
    ("metering_day.py", "a day of metering on the bench"),
    ("metering_judge.py", "the metering day judged"),
)


def machine() -> str:
    """CPU model (from /proc/cpuinfo), cores and Python, for the table's footer."""
    model = platform.processor() or platform.machine()
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}; {os.cpu_count()} cores; Python {platform.python_version()} ({sys.executable})"


def run_one(script: str, timeout_s: float | None) -> tuple[list[dict], int, float]:
    """Run one benchmark, streaming its output; its BENCH records, its exit code and its wall time.

    The benchmark runs in its own process group (it may start a broker, a bench, a device farm): after
    ``timeout_s`` (None: no limit), or when this process is interrupted, the whole group is ended."""
    print(f"\n===== {script} =====", flush=True)
    t0 = time.monotonic()
    records: list[dict] = []
    with subprocess.Popen(
        [sys.executable, "-u", str(HERE / script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        cwd=HERE.parent,
        start_new_session=True,
    ) as proc:
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            _end_group(proc)

        watchdog = threading.Timer(timeout_s, expire) if timeout_s is not None else None
        if watchdog is not None:
            watchdog.start()
        try:
            assert proc.stdout is not None
            for text in proc.stdout:
                sys.stdout.write(text)
                sys.stdout.flush()
                record = parse(text.rstrip("\n"))
                if record is not None:
                    records.append(record)
            code = proc.wait()
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if proc.poll() is None:
                _end_group(proc)
    if timed_out.is_set():
        print(f"summary: {script} ended after its {timeout_s:g} s", flush=True)
        code = code or -1
    return records, code, time.monotonic() - t0


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the benchmark's process group, SIGKILL if it is still there 10 s later."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _fig(x: object) -> str:
    if x is None:
        return "-"
    if isinstance(x, int | float):
        ax = abs(x)
        if ax >= 1000:
            return f"{x:,.0f}"
        if ax >= 10:
            return f"{x:.1f}"
        if ax >= 0.1:
            return f"{x:.3f}"
        return f"{x:.4g}"
    return str(x)


def _no_target(record: dict) -> bool:
    """A figure reported without a target (its target text starts with "none")."""
    return str(record.get("target", "")).startswith("none")


def table(results: list[tuple[str, list[dict], int, float]]) -> list[str]:
    """The summary rows: one per BENCH record, one per benchmark that failed or judged nothing."""
    head = ("benchmark", "target name", "ours", "peer", "ratio", "unit", "target", "met")
    rows: list[tuple[str, ...]] = []
    for script, records, code, _ in results:
        for r in records:
            rows.append(
                (
                    script,
                    str(r.get("name", "?")),
                    _fig(r.get("ours")),
                    _fig(r.get("peer")),
                    _fig(r.get("ratio")),
                    str(r.get("unit", "")),
                    str(r.get("target", "")),
                    "-" if _no_target(r) else "yes" if r.get("met") else "NO",
                )
            )
        if code != 0:
            rows.append((script, f"FAILED (exit {code})", "", "", "", "", "", "NO"))
        elif not records:
            rows.append((script, "no BENCH line printed", "", "", "", "", "", "?"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    numeric = {2, 3, 4}

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [fmt(head), "-" * len(fmt(head))]
    out += [fmt(r) for r in rows]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--all", action="store_true", help="also the day-long runs (hours): " + ", ".join(s for s, _ in LONG)
    )
    ap.add_argument("--only", nargs="+", metavar="SCRIPT", help="run only these (e.g. polling.py outbox)")
    ap.add_argument(
        "--timeout-s",
        type=float,
        default=1800.0,
        help="the most one default benchmark may take (default 30 min; the day runs have no limit)",
    )
    args = ap.parse_args()
    chosen = list(DEFAULT) + (list(LONG) if args.all else [])
    if args.only:
        wanted = {w if w.endswith(".py") else w + ".py" for w in args.only}
        known = {s for s, _ in DEFAULT + LONG}
        if unknown := wanted - known:
            ap.error(f"unknown benchmark(s) {sorted(unknown)}; known: {sorted(known)}")
        chosen = [(s, w) for s, w in DEFAULT + LONG if s in wanted]

    results = []
    t0 = time.monotonic()
    for script, _ in chosen:
        limit = None if script in {s for s, _ in LONG} else args.timeout_s  # the day runs take hours
        records, code, wall = run_one(script, limit)
        results.append((script, records, code, wall))

    print("\n===== summary =====")
    for text in table(results):
        print(text)
    print(f"\nmachine: {machine()}")
    print(f"wall: {time.monotonic() - t0:.0f} s for {len(results)} benchmarks, run one after another")
    judged_records = [r for _, recs, _, _ in results for r in recs if not _no_target(r)]
    met = sum(1 for r in judged_records if r.get("met"))
    judged = len(judged_records)
    failed = [s for s, _, code, _ in results if code != 0]
    print(f"targets met: {met} of {judged}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
