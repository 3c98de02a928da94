"""Central's store ingest on SQLite and on PostgreSQL, side by side in one run.

    .venv/bin/python benchmarks/central_pg.py [--readings 200000] [--per-message 500] [--per-flush 10]
        [--workers 1,2,4] [--repeat 3] [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]

What is measured: ``store_batches`` (central/store.py, central/store_pg.py), the part of central's ingest after
a message is decoded, with each flush acknowledged only after its commit. Each worker is a process of its own
with its own connection (as ``central run`` workers on one or several machines), storing its share of the
messages: telemetry of a 500-point site (``--per-message`` readings a message, ``--per-flush`` messages a
transaction, as the ingest gathers a burst). Every configuration starts on a new SQLite file or a new PostgreSQL
database, and the two backends run one after the other inside each repetition, so a load that comes and goes on
the machine hits both alike; the median of ``--repeat`` runs is shown.

Figures: readings/s (wall clock, first flush to last commit over all workers); readings per CPU-second of the
workers (the client: what central's processes spend); for PostgreSQL also per CPU-second of client and server
backends together (each worker's backend process, read from /proc; the WAL writer and checkpointer are not in it).
Durability as configured for central: SQLite WAL with synchronous=FULL, PostgreSQL's default (fsync,
synchronous_commit on).

Targets (issue "Central at utility scale"): PostgreSQL with 2 workers stores at least as many readings a second
as one SQLite worker on this 2-core machine; one PostgreSQL worker stores at least 50,000 readings/s, the drain
rate the agent's outbox is held to (benchmarks/outbox.py: a day without a link caught up in under 15 minutes).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from _report import emit  # noqa: E402

from central.store import open_store  # noqa: E402
from protocols.telemetry.schema import decode_batch, encode_batch  # noqa: E402

T0 = 1_764_300_000.0  # 2025-11-28 UTC: the readings of one run fall in one or two monthly partitions
TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds (proc(5): fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def worker(target: str, k: int, messages: int, per_message: int, per_flush: int, start, out) -> None:  # type: ignore[no-untyped-def]
    site = f"bench-w{k}"
    batches = []
    for seq in range(1, messages + 1):
        t = T0 + seq
        items = [{"point": f"dev{p // 50}.p{p % 50}", "ts": t, "value": 120.0 + (p % 7) * 0.1 + seq * 1e-4,
                  "unit": "V", "quality": "good"} for p in range(per_message)]  # fmt: skip
        batches.append(decode_batch(encode_batch(site, "telemetry", seq, f"{site}-{seq}", t, items)))
    flushes = [batches[i : i + per_flush] for i in range(0, len(batches), per_flush)]
    store = open_store(target)
    backend = None
    if target.startswith("postgresql://"):
        backend = int(store.query("SELECT pg_backend_pid()")[0][0])  # type: ignore[attr-defined]
    start.wait()
    server0 = backend_cpu_s(backend) if backend else 0.0
    cpu0, t0 = time.process_time(), time.perf_counter()
    stored = 0
    for flush in flushes:
        results = store.store_batches(flush, time.time())
        stored += sum(1 for r in results if r is True)
    t1, cpu1 = time.perf_counter(), time.process_time()
    server = (backend_cpu_s(backend) - server0) if backend else 0.0
    store.close()
    out.put({"k": k, "stored": stored, "t0": t0, "t1": t1, "cpu": cpu1 - cpu0, "server_cpu": server})


def run_one(
    target: str, workers: int, readings: int, per_message: int, per_flush: int, point_index: bool = False
) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    messages = max(1, readings // per_message // workers)
    procs = [ctx.Process(target=worker, args=(target, k, messages, per_message, per_flush, start, out))
             for k in range(workers)]  # fmt: skip
    for p in procs:
        p.start()
    store = open_store(target)  # migrations done before the clock starts (workers would queue on them)
    if point_index and target.startswith("postgresql://"):
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("CREATE INDEX readings_site_point_ts ON readings (site, point, ts)")
    store.close()
    time.sleep(0.5 + 0.3 * workers)  # the workers build their messages before the start
    start.set()
    done = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    total = sum(d["stored"] for d in done) * per_message
    assert total == messages * workers * per_message, (total, messages, workers)
    check = open_store(target)
    assert check.count("readings") == total
    check.close()
    wall = max(d["t1"] for d in done) - min(d["t0"] for d in done)
    cpu = sum(d["cpu"] for d in done)
    server = sum(d["server_cpu"] for d in done)
    return {"rate": total / wall, "per_cpu": total / cpu, "per_cpu_all": total / (cpu + server), "readings": total}


def pg_database(admin_url: str):  # type: ignore[no-untyped-def]
    name = f"gridedge_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name, admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readings", type=int, default=200_000, help="readings per configuration and run")
    ap.add_argument("--per-message", type=int, default=500)
    ap.add_argument("--per-flush", type=int, default=10)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--pg-point-index",
        action="store_true",
        help="give PostgreSQL's readings the (site, point, ts) b-tree SQLite's have (not in the schema)",
    )
    ap.add_argument(
        "--pg-url", default=os.environ.get("GRIDEDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="central-pg-bench-") as tmp:
        for r in range(args.repeat):
            for n in counts:
                path = Path(tmp) / f"r{r}-w{n}.db"
                results.setdefault(("sqlite", n), []).append(
                    run_one(str(path), n, args.readings, args.per_message, args.per_flush)
                )
                name, url = pg_database(args.pg_url)
                try:
                    results.setdefault(("postgresql", n), []).append(
                        run_one(url, n, args.readings, args.per_message, args.per_flush, args.pg_point_index)
                    )
                finally:
                    drop_database(args.pg_url, name)
                print(f"run {r + 1}/{args.repeat}, {n} worker(s): done", file=sys.stderr)

    def med(backend: str, n: int, key: str) -> float:
        return statistics.median(x[key] for x in results[(backend, n)])

    print(f"central store ingest: {args.readings} readings a run, {args.per_message} a message, {args.per_flush} "
          f"messages a transaction; median of {args.repeat} (machine shared with other work)"
          + ("; PostgreSQL with the (site, point, ts) b-tree" if args.pg_point_index else ""))  # fmt: skip
    print(f"{'backend':<11} {'workers':>7} {'readings/s':>12} {'per client CPU-s':>17} {'per client+server CPU-s':>24}")
    for backend in ("sqlite", "postgresql"):
        for n in counts:
            all_cpu = (
                f"{med(backend, n, 'per_cpu_all'):>24,.0f}" if backend == "postgresql" else f"{'(all client)':>24}"
            )
            print(
                f"{backend:<11} {n:>7} {med(backend, n, 'rate'):>12,.0f} {med(backend, n, 'per_cpu'):>17,.0f} {all_cpu}"
            )
    sqlite1 = med("sqlite", 1, "rate") if 1 in counts else None
    if 2 in counts and sqlite1:
        pg2 = med("postgresql", 2, "rate")
        emit("central_pg_2_workers_vs_sqlite_1", pg2, sqlite1, pg2 / sqlite1, "readings/s",
             ">= 1.0x peer (one SQLite worker)", pg2 >= sqlite1)  # fmt: skip
    if 1 in counts:
        pg1 = med("postgresql", 1, "rate")
        emit("central_pg_1_worker", pg1, None, None, "readings/s", ">= 50000 readings/s (the outbox drain target)",
             pg1 >= 50_000)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
