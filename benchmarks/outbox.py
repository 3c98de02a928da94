"""The outbox path, side by side with its naive baseline.

    .venv/bin/python benchmarks/outbox.py [--readings 500000] [--per-call 1000] [--naive 20000]
        [--backlog 300000] [--live-points 500] [--naive-publish 20000] [--skip-store] [--skip-drain]

Store half (``bench_store``): readings stored per second through ``Store.add_readings`` (one transaction
and one ``executemany`` per call) against sqlite-utils ``table.insert(row)`` per reading on the same kind
of file (WAL, synchronous=NORMAL, so the ratio measures batching, not durability settings; measured on
fewer rows and given as a rate); and ``seal()``: readings sealed into JSON payloads per second against
encoding the same items with ``encode_batch`` alone (no SQL: the floor the store's overhead sits on).
Target: >= 100,000 readings/s stored. Source: the agent's need. A 500-point site polled every second stores
500 readings a second: at 100,000 a second that is 5 ms of this machine's core, a small share on a Pi
several times slower, and the readings queued or spilled during an outage are committed in seconds.

Drain half (``bench_drain``): a backlog of telemetry (default 300,000 readings of a 500-point site, sealed
into outbox messages of ``batch_size`` readings, as the uplink loop seals them while the broker is out of
reach) is drained by the real ``Uplink`` + ``MqttSession`` (in this process) to our own Mosquitto on a free
loopback port, and the real central service (``python -m gridedge central run``, a separate process, so its
CPU is not counted against the agent's) stores every message and acknowledges it. The rate is backlog /
time until central has acknowledged the last backlog message (the agent deletes an outbox row only then).
Meanwhile live readings keep flowing (``--live-points`` readings a second, one batch a second as the
acquisition writes them); at the end every reading the agent took must be in central's database.
Baseline: paho publish-and-wait, one reading per message (``client.publish(...).wait_for_publish()``),
which waits only for the broker's PUBACK — a weaker promise than ours (central's commit).
Target: >= 50,000 readings/s drained. Source: the operators' need: after a day without a link (43 million
readings, 24 h of 500 points) central is up to date again in under 15 minutes, while live readings go on.

Each ``bench_*`` function returns rows ``(what, ours_label, ours_rate, baseline_label, baseline_rate,
unit)``; ``main`` prints them all in one table with the ratio ours / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
import sqlite_utils  # noqa: E402
from _report import emit  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from agent.points import Reading, Stream  # noqa: E402
from agent.store import AsyncStore, Store  # noqa: E402
from agent.uplink import Uplink, session_config_for  # noqa: E402
from gridedge_demo import free_port, wait_port  # noqa: E402
from protocols.mqtt.session import MqttSession  # noqa: E402
from protocols.telemetry.schema import encode_batch, topic  # noqa: E402

Row = tuple[str, str, float, str, float, str]


def make_readings(n: int) -> list[Reading]:
    """A realistic mix: 20 points per device, one energy register in 50 readings."""
    t0 = 1_700_000_000.0
    return [
        Reading(f"meter{i % 7}.kwh", t0 + i * 0.001, 1000.0 + i, "kWh", stream=Stream.ENERGY)
        if i % 50 == 0
        else Reading(f"meter{i % 7}.p{i % 20}", t0 + i * 0.001, 120.0 + (i % 100) / 10, "V")
        for i in range(n)
    ]


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_store(total: int = 500_000, per_call: int = 1000, naive: int = 20_000, batch_size: int = 500) -> list[Row]:
    readings = make_readings(total)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gridedge-bench-") as tmp:
        tmpdir = Path(tmp)

        def add_all(store: Store, items: list[Reading]) -> None:
            for i in range(0, len(items), per_call):
                store.add_readings(items[i : i + per_call])

        store = Store(tmpdir / "ours.db", "bench", 1 << 40, batch_size=batch_size)
        t_add = _timed(lambda: add_all(store, readings))
        sealed = 0

        def seal_all() -> None:
            nonlocal sealed
            sealed = store.seal(force=True)

        t_seal = _timed(seal_all)
        sealed_items = store.stats().outbox_readings
        assert sealed_items == total and sealed > 0
        store.close()

        durable = Store(tmpdir / "durable.db", "bench", 1 << 40, batch_size=batch_size, durable=True)
        n_durable = min(total, 100_000)
        t_durable = _timed(lambda: add_all(durable, readings[:n_durable]))
        durable.close()

        db = sqlite_utils.Database(tmpdir / "naive.db")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        table = db["readings"]
        table.create(
            {"id": int, "stream": str, "point": str, "ts": float, "value": float, "unit": str, "quality": str}, pk="id"
        )
        dict_rows = [
            {"stream": r.stream.value, "point": r.point, "ts": r.ts, "value": r.value, "unit": r.unit,
             "quality": r.quality.value}
            for r in readings[:naive]
        ]  # fmt: skip

        def insert_each() -> None:
            for row in dict_rows:
                table.insert(row)

        t_naive = _timed(insert_each)
        db.close()

        # the floor under seal(): JSON-encoding the same items in batches, no SQL at all
        items = [
            {"point": r.point, "ts": r.ts, "value": r.value, "unit": r.unit, "quality": r.quality.value}
            for r in readings
        ]

        def encode_all() -> None:
            for seq, i in enumerate(range(0, len(items), batch_size), 1):
                encode_batch("bench", "telemetry", seq, f"{seq:032x}", 0.0, items[i : i + batch_size])

        t_encode = _timed(encode_all)

    rows.append(
        (f"store {total:,} readings", f"add_readings x{per_call}", total / t_add,
         "sqlite-utils insert/row", naive / t_naive, "readings/s")
    )  # fmt: skip
    rows.append(
        (f"store {n_durable:,}, durable", f"add_readings x{per_call} FULL", n_durable / t_durable,
         "sqlite-utils insert/row", naive / t_naive, "readings/s")
    )  # fmt: skip
    rows.append(
        (f"seal {total:,} readings", f"seal() into {sealed} msgs", total / t_seal,
         "encode_batch only", total / t_encode, "readings/s")
    )  # fmt: skip
    return rows


# ---- drain half ------------------------------------------------------------------------------------

SITE = "bench-site"
NAIVE_SITE = "bench-naive"
DRAIN_TARGET = 50_000  # readings/s (the module docstring gives its source)
STORE_TARGET = 100_000  # readings/s (the module docstring gives its source)
DAY_BACKLOG = 43_200_000  # 500 points x 86,400 s: 24 hours of a 500-point site at one reading a second
# 20 quantities per device: a 500-point site is 25 such devices
_QUANTITIES = (
    ("v_a", "V", 7200.0), ("v_b", "V", 7200.0), ("v_c", "V", 7200.0),
    ("i_a", "A", 180.0), ("i_b", "A", 175.0), ("i_c", "A", 185.0),
    ("p_a", "kW", 1250.0), ("p_b", "kW", 1210.0), ("p_c", "kW", 1290.0),
    ("q_a", "kvar", 310.0), ("q_b", "kvar", 300.0), ("q_c", "kvar", 320.0),
    ("p", "kW", 3750.0), ("q", "kvar", 930.0), ("s", "kVA", 3860.0),
    ("pf", "", 0.97), ("f", "Hz", 60.0), ("thd_v_a", "%", 2.1), ("thd_i_a", "%", 4.5), ("tap_pos", "", 3.0),
)  # fmt: skip


def site_points(n_points: int) -> list[tuple[str, str, float]]:
    """``n_points`` (name, unit, nominal value): ``dev07.v_a``-style names, 20 quantities per device."""
    out = []
    for i in range(n_points):
        name, unit, nominal = _QUANTITIES[i % len(_QUANTITIES)]
        out.append((f"dev{i // len(_QUANTITIES):02d}.{name}", unit, nominal))
    return out


def scan(points: list[tuple[str, str, float]], ts: float, rng: random.Random) -> list[Reading]:
    """One reading per point taken at ``ts``, within 2 % of nominal (what one acquisition cycle stores)."""
    return [
        Reading(name, ts, round(nominal * (1 + rng.uniform(-0.02, 0.02)), 3), unit) for name, unit, nominal in points
    ]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _start_mosquitto(workdir: Path, port: int) -> subprocess.Popen:
    """Our own broker on loopback, as tests/helpers/broker.py's Broker, with room for the whole backlog queued."""
    if shutil.which("mosquitto") is None:
        raise SystemExit("mosquitto is not installed: run scripts/install-system-packages.sh")
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 1000000\n"  # never drop a QoS 1 message queued for central
        "max_inflight_messages 100\n"
        "log_dest stderr\nlog_type error\nlog_type warning\n"
    )
    with open(workdir / "mosquitto.log", "ab") as log:
        proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log)
    if not wait_port(port, 10.0):
        raise TimeoutError(f"mosquitto did not listen on 127.0.0.1:{port} within 10 s")
    return proc


def _start_central(workdir: Path, port: int) -> subprocess.Popen:
    """The real central service in its own process (``python -m gridedge central run``), once it is subscribed."""
    url = f"mqtt://127.0.0.1:{port}"
    conf = workdir / "central.toml"
    conf.write_text(
        f'[broker]\nurl = "{url}"\nclient_id = "bench-central"\n\n'
        '[store]\ndb = "central.db"\n\n'
        '[ingest]\ngroup = "bench"\nstatus_file = "central-status.json"\nack_interval_s = 0.05\nmax_queue = 20000\n'
    )
    status = workdir / "central-status.json"
    with open(workdir / "central.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gridedge", "central", "run", "--config", str(conf), "--broker", url],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"central exited with {proc.returncode}: see {workdir / 'central.log'}")
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(status.read_text())["total"]["connects"] >= 1:
                time.sleep(0.2)  # the SUBACK precedes "connected"; a little margin for the state topic
                return proc
        time.sleep(0.05)
    _stop(proc)
    raise TimeoutError(f"central did not connect within 30 s: see {workdir / 'central.log'}")


@dataclass
class DrainResult:
    seconds: float  # until central acknowledged the last backlog message
    agent_cpu_s: float  # this process (uplink, session thread, store thread, live writer) over `seconds`
    central_cpu_s: float
    broker_cpu_s: float
    live_taken: int  # live readings stored by the agent while the backlog drained (and until the end)
    taken: int  # every reading the agent took (backlog + live)
    at_central: int  # readings of this site in central's database at the end
    live_max_wait_s: float  # longest time from a live reading's ts to central's commit of its message
    resent: int
    ack_timeouts: int
    messages_at_central: int


async def _drain(
    store: Store,
    port: int,
    backlog_last_rowid: int,
    points: list[tuple[str, str, float]],
    max_inflight: int,
    central: subprocess.Popen,
    broker: subprocess.Popen,
    rng: random.Random,
) -> tuple[DrainResult, float]:
    """Run the real Uplink until central has acknowledged every backlog message, live readings flowing."""
    astore = AsyncStore(store)
    session = MqttSession(session_config_for(SITE, "127.0.0.1", port, client_id="bench-agent"))
    uplink = Uplink(SITE, astore, session, max_inflight=max_inflight)
    watch = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    tasks: list[asyncio.Task[None]] = []
    live_taken = 0

    async def live() -> None:
        nonlocal live_taken
        start = time.monotonic()
        k = 0
        while True:  # one scan of every point a second, on a fixed schedule, as acquisition writes them
            await astore.add_readings(scan(points, time.time(), rng))
            live_taken += len(points)
            k += 1
            await asyncio.sleep(max(0.0, start + k - time.monotonic()))

    try:
        tasks.append(asyncio.create_task(session.run(), name="bench-session"))
        await asyncio.wait_for(session.connected.wait(), 10)
        live_since = time.time()
        cpu0, central0, broker0 = time.process_time(), _cpu_s(central.pid), _cpu_s(broker.pid)
        t0 = time.perf_counter()
        tasks.append(asyncio.create_task(uplink.run(), name="bench-uplink"))
        live_task = asyncio.create_task(live(), name="bench-live")
        tasks.append(live_task)
        query = "SELECT count(*) FROM outbox WHERE rowid <= ?"
        while watch.execute(query, (backlog_last_rowid,)).fetchone()[0]:
            await asyncio.sleep(0.005)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        central_cpu, broker_cpu = _cpu_s(central.pid) - central0, _cpu_s(broker.pid) - broker0
        # live readings keep flowing a little longer, then stop; everything taken must reach central
        await asyncio.sleep(2.0)
        live_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await live_task
        deadline = time.monotonic() + 60
        while True:
            st = await astore.stats()
            if st.unsealed == 0 and st.outbox_messages == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"outbox not empty 60 s after the backlog drained: {st}")
            await asyncio.sleep(0.05)
    finally:
        for task in reversed(tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        watch.close()
        await astore.aclose()
    result = DrainResult(
        seconds=seconds, agent_cpu_s=cpu, central_cpu_s=central_cpu, broker_cpu_s=broker_cpu,
        live_taken=live_taken, taken=st.readings_taken, at_central=0, live_max_wait_s=0.0,
        resent=uplink.stats.resent, ack_timeouts=uplink.stats.ack_timeouts, messages_at_central=0,
    )  # fmt: skip
    return result, live_since


def _naive_publish(port: int, points: list[tuple[str, str, float]], n: int, rng: random.Random) -> tuple[float, float]:
    """The naive design: one reading per message, publish and wait for the broker's PUBACK before the next."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-naive", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        readings = [r for k in range(-(-n // len(points))) for r in scan(points, time.time() + k, rng)][:n]
        t_topic = topic(NAIVE_SITE, "telemetry")
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for seq, r in enumerate(readings, 1):
            item = {"point": r.point, "ts": r.ts, "value": r.value, "unit": r.unit, "quality": r.quality.value}
            payload = encode_batch(NAIVE_SITE, "telemetry", seq, os.urandom(16).hex(), time.time(), [item])
            client.publish(t_topic, payload, qos=1).wait_for_publish(10)
        return time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        client.disconnect()
        client.loop_stop()


def bench_drain(
    backlog: int = 300_000,
    n_points: int = 500,
    naive: int = 20_000,
    batch_size: int = 500,
    max_inflight: int = 32,
    seed: int = 1,
) -> tuple[list[Row], list[str]]:
    """Drain a sealed backlog through the real Uplink to the real central; see the module docstring."""
    rng = random.Random(seed)
    points = site_points(n_points)
    with tempfile.TemporaryDirectory(prefix="gridedge-drain-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        broker = central = None
        try:
            broker = _start_mosquitto(workdir, port)
            central = _start_central(workdir, port)
            store = Store(workdir / "agent.db", SITE, 1 << 40, batch_size=batch_size)
            # the backlog: scans of the last day, sealed as the uplink loop seals them while central is unreachable
            t_first = time.time() - 86_400
            taken = 0
            k = 0
            while taken < backlog:
                batch = scan(points, t_first + k, rng)[: backlog - taken]
                store.add_readings(batch)
                taken += len(batch)
                k += 1
            store.seal(force=True)
            (backlog_msgs, last_rowid), (backlog_bytes,) = (
                store.conn.execute("SELECT count(*), max(rowid) FROM outbox").fetchone(),
                store.conn.execute("SELECT sum(length(payload)) FROM outbox").fetchone(),
            )
            result, live_since = asyncio.run(
                _drain(store, port, last_rowid, points, max_inflight, central, broker, rng)
            )
            with contextlib.closing(sqlite3.connect(workdir / "central.db")) as cdb:
                result.at_central = cdb.execute("SELECT count(*) FROM readings WHERE site=?", (SITE,)).fetchone()[0]
                result.messages_at_central = cdb.execute(
                    "SELECT count(*) FROM messages WHERE site=?", (SITE,)
                ).fetchone()[0]
                result.live_max_wait_s = cdb.execute(
                    "SELECT coalesce(max(m.received - r.ts), 0) FROM readings r JOIN messages m USING (msg_id) "
                    "WHERE r.site=? AND r.ts>=?",
                    (SITE, live_since),
                ).fetchone()[0]
            t_naive, cpu_naive = _naive_publish(port, points, naive, rng)
        finally:
            _stop(central)
            _stop(broker)
    r = result
    ours = backlog / r.seconds
    base = naive / t_naive
    rows: list[Row] = [
        (f"drain {backlog:,} backlog", f"Uplink, {max_inflight} in flight", ours,
         "paho publish+wait/reading", base, "readings/s"),
        (f"drain messages ({batch_size}/msg)", f"{backlog_msgs} msgs, ~{backlog_bytes // backlog_msgs:,} B",
         backlog_msgs / r.seconds, "1 reading/msg", base, "messages/s"),
        ("drain agent CPU", f"{r.agent_cpu_s:.2f} CPU-s", backlog / r.agent_cpu_s,
         f"{cpu_naive:.2f} CPU-s", naive / cpu_naive, "readings/CPU-s"),
    ]  # fmt: skip
    hours = DAY_BACKLOG / ours / 60
    notes = [
        f"drain: {backlog:,} readings acknowledged by central in {r.seconds:.2f} s; agent {r.agent_cpu_s:.2f} CPU-s, "
        f"central (own process) {r.central_cpu_s:.2f} CPU-s, mosquitto {r.broker_cpu_s:.2f} CPU-s; "
        f"resent {r.resent}, ack timeouts {r.ack_timeouts}",
        f"drain: 43.2 M readings (24 h x 500 points) at {ours:,.0f}/s -> {hours:.1f} min "
        f"(target <= 15 min, >= {DRAIN_TARGET:,}/s): {'MET' if ours >= DRAIN_TARGET else 'MISSED'}; "
        f"baseline would take {DAY_BACKLOG / base / 3600:.1f} h",
        f"live: {r.live_taken:,} live readings ({n_points} points/s) taken during and after the drain; "
        f"agent took {r.taken:,} in all, central has {r.at_central:,} "
        f"({'all through' if r.taken == r.at_central else 'MISMATCH'}); "
        f"longest live reading -> central commit {r.live_max_wait_s:.2f} s (the outbox is oldest first: live "
        "readings queue behind the backlog)",
    ]
    return rows, notes


def print_table(rows: list[Row]) -> None:
    header = f"{'measure':28}{'ours':>30}{'rate':>14}{'baseline':>26}{'rate':>14}{'ratio':>9}  unit"
    print(header)
    print("-" * len(header))
    for what, ours_label, ours, base_label, base, unit in rows:
        print(f"{what:28}{ours_label:>30}{ours:14,.0f}{base_label:>26}{base:14,.0f}{ours / base:9.2f}  {unit}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=500_000, help="readings stored through the Store")
    ap.add_argument("--per-call", type=int, default=1000, help="readings per add_readings call")
    ap.add_argument("--naive", type=int, default=20_000, help="readings inserted one by one by the baseline")
    ap.add_argument("--backlog", type=int, default=300_000, help="readings in the outbox backlog to drain")
    ap.add_argument("--live-points", type=int, default=500, help="points of the site (live readings a second)")
    ap.add_argument("--naive-publish", type=int, default=20_000, help="readings the paho baseline publishes")
    ap.add_argument("--max-inflight", type=int, default=32, help="the uplink's max_inflight (config default 32)")
    ap.add_argument("--skip-store", action="store_true", help="only the drain half")
    ap.add_argument("--skip-drain", action="store_true", help="only the store half")
    args = ap.parse_args()
    rows: list[Row] = []
    notes: list[str] = []
    judged: list[tuple] = []
    if not args.skip_store:
        rows += bench_store(args.readings, args.per_call, args.naive)
        stored, store_base = rows[0][2], rows[0][4]
        judged.append(
            ("outbox store", stored, store_base, "readings/s", f">= {STORE_TARGET:,}/s", stored >= STORE_TARGET)
        )
        notes.append(
            f"store: {stored:,.0f} readings/s (target >= {STORE_TARGET:,}/s): "
            f"{'MET' if stored >= STORE_TARGET else 'MISSED'}"
        )
    if not args.skip_drain:
        drain_rows, drain_notes = bench_drain(
            args.backlog, args.live_points, args.naive_publish, max_inflight=args.max_inflight
        )
        rows += drain_rows
        notes += drain_notes
        drained, drain_base = drain_rows[0][2], drain_rows[0][4]
        judged.append(
            ("outbox drain", drained, drain_base, "readings/s", f">= {DRAIN_TARGET:,}/s", drained >= DRAIN_TARGET)
        )
    print_table(rows)
    print()
    for note in notes:
        print(note)
    for name, ours, peer, unit, target, met in judged:
        emit(name, ours, peer, ours / peer, unit, target, met)
    return 0


if __name__ == "__main__":
    sys.exit(main())
