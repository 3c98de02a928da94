"""The broker tier: central's ingest through Mosquitto (one broker) and through a NATS JetStream cluster, side by side.

    .venv/bin/python benchmarks/broker_tier.py [--messages 2000] [--per-message 500] [--sites 16] [--workers 1,2]
        [--replicas 3] [--repeat 1] [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]

What is measured: the whole uplink path, agent to central's commit and back. Simulated agents (``--sites`` MQTT
3.1.1 clients in two publisher processes, each a site's topics and payloads, QoS 1, at most 32 messages a site
waiting for central's ack, as the agent's max_inflight) publish
``--messages`` telemetry messages of ``--per-message`` readings; central (``gridedge central run``, one process
per worker, as on separate machines) stores them in a new PostgreSQL database and acks each to its agent; the
run ends when every message is acked. Through Mosquitto the workers share an MQTT 5 shared subscription; through
NATS (``--replicas``-way replicated stream on a three-node cluster on this machine, agents spread over the three
nodes' MQTT listeners) they share one durable JetStream consumer.

Figures: messages/s and readings/s (first publish to last ack), and the CPU-seconds the broker processes (all
nodes) and central's workers spent per 1,000 messages (from /proc), and the growth of the database per reading
(pg_database_size), from which docs/scale.md sizes the tier. The three NATS nodes share this machine's cores with
everything else: the cluster's figures are its cost per message (replication included), not what three machines
would carry.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # the rigs the tests use: tests/helpers

from _report import emit  # noqa: E402
from central_pg import backend_cpu_s, drop_database, pg_database  # noqa: E402
from helpers.nats import NatsCluster  # noqa: E402
from helpers.net import free_port, wait_port  # noqa: E402

from protocols.telemetry.schema import decode_ack, encode_batch, topic  # noqa: E402

T0 = 1_764_300_000.0
MAX_INFLIGHT = 32  # messages a site publishes ahead of central's acks (the agent's [uplink] max_inflight)
ACK_TIMEOUT_S = 5.0  # the simulated agents resend what central has not acked after this long (the agent: 30 s)


def publisher(port_of_site: dict[str, int], messages: int, per_message: int, ready, start, out) -> None:  # type: ignore[no-untyped-def]
    """Agents: one MQTT 3.1.1 client per site, publishing pre-encoded messages at QoS 1 and counting acks."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    lock = threading.Condition()
    inflight: set[str] = set()  # published and not yet acked by central: at most MAX_INFLIGHT a site
    pending: set[str] = set()
    last_ack = [0.0]
    clients = []
    payloads: dict[str, tuple[mqtt.Client, str, bytes]] = {}
    subscribed = threading.Semaphore(0)
    for site, port in port_of_site.items():
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gridedge-{site}", protocol=mqtt.MQTTv311)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)

        def on_message(_c, _u, msg) -> None:  # type: ignore[no-untyped-def]
            ids = decode_ack(msg.payload).msg_ids
            with lock:
                pending.difference_update(ids)
                inflight.difference_update(ids)
                lock.notify_all()
                last_ack[0] = time.time()
                if not pending:
                    done.set()

        c.on_message = on_message
        c.on_subscribe = lambda *_a: subscribed.release()
        # subscribe once connected (paho drops a SUBSCRIBE made before the CONNACK)
        c.on_connect = lambda c, _u, _f, _rc, _p=None, site=site: c.subscribe(topic(site, "ack"), qos=1)
        c.connect("127.0.0.1", port, keepalive=60)
        c.loop_start()
        clients.append(c)
        for seq in range(1, messages // len(port_of_site) + 1):
            t = T0 + seq
            items = [{"point": f"dev{p // 50}.p{p % 50}", "ts": t, "value": 120.0 + (p % 7) * 0.1, "unit": "V",
                      "quality": "good"} for p in range(per_message)]  # fmt: skip
            msg_id = f"{site}-{seq}"
            pending.add(msg_id)
            payloads[msg_id] = (c, topic(site, "telemetry"), encode_batch(site, "telemetry", seq, msg_id, t, items))
    for _ in clients:
        if not subscribed.acquire(timeout=30):
            raise TimeoutError("no SUBACK for an ack subscription within 30 s")
    ready.put(len(payloads))
    start.wait()
    t0 = time.time()
    window = MAX_INFLIGHT * len(clients)
    for msg_id in sorted(payloads, key=lambda i: int(i.rsplit("-", 1)[1])):  # the sites in turn, as they run
        with lock:
            lock.wait_for(lambda: len(inflight) < window, timeout=ACK_TIMEOUT_S)
            inflight.add(msg_id)
        c, t, payload = payloads[msg_id]
        c.publish(t, payload, qos=1)
    resent = 0
    deadline = time.monotonic() + 120
    while not done.wait(ACK_TIMEOUT_S) and time.monotonic() < deadline:
        with lock:  # as the agent does: what central has not acked within its ack timeout is sent again
            again = [payloads[i] for i in pending]
        for c, t, payload in again:
            c.publish(t, payload, qos=1)
        resent += len(again)
    with lock:
        left = len(pending)
    out.put({"t0": t0, "t1": last_ack[0], "acked": len(payloads) - left, "sent": len(payloads), "resent": resent})
    for c in clients:
        c.loop_stop()
        c.disconnect()


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):  # a process that has ended
            total += backend_cpu_s(pid)
    return total


def mqtt_ready(port: int, timeout: float = 60.0) -> None:
    """Until the node takes an MQTT connection: the first one on a new cluster creates the MQTT listener's own
    streams, and connections made meanwhile are refused (``unable to connect: lookup sessions stream``)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"warmup-{port}", protocol=mqtt.MQTTv311)
        try:
            c.connect("127.0.0.1", port, keepalive=10)
            c.loop_start()
            for _ in range(50):
                if c.is_connected():
                    return
                time.sleep(0.1)
        except OSError:
            time.sleep(0.2)
        finally:
            c.loop_stop()
            c.disconnect()
    raise TimeoutError(f"the MQTT listener on port {port} took no connection within {timeout} s")


def db_size(url: str) -> int:
    """The database's size on disk (tables, indexes, TOAST), bytes."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def start_mosquitto(work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 1000000\nset_tcp_nodelay true\nmax_inflight_messages 100\n"
                    "log_dest stderr\nlog_type error\n")  # fmt: skip
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def central_config(work: Path, k: int, kind: str, pg_url: str, *, port: int = 0, servers: list[str] = (),
                   replicas: int = 3) -> Path:  # fmt: skip
    if kind == "mqtt":
        broker = f'url = "mqtt://127.0.0.1:{port}"\nclient_id = "central-p{k}"\n'
    else:
        broker = (f'kind = "nats"\nservers = {json.dumps(list(servers))}\nclient_id = "central-p{k}"\n'
                  f"replicas = {replicas}\n")  # fmt: skip
    path = work / f"central-{kind}-{k}.toml"
    path.write_text(f'[broker]\n{broker}\n[store]\nurl = "{pg_url}"\n\n[ingest]\ngroup = "central"\n'
                    f'status_file = "status-{kind}-{k}.json"\nack_interval_s = 0.05\nmax_queue = 20000\n')  # fmt: skip
    return path


def wait_connected(status: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(status.read_text())["total"]["connects"] >= 1:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"central did not connect ({status})")


def run_one(kind: str, workers: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    name, url = pg_database(args.pg_url)
    brokers: list[int] = []
    centrals: list[subprocess.Popen] = []
    cluster = None
    mosq = None
    try:
        if kind == "mqtt":
            mosq, port = start_mosquitto(work)
            brokers = [mosq.pid]
            ports = [port]
            confs = [central_config(work, k, kind, url, port=port) for k in range(workers)]
        else:
            cluster = NatsCluster(workdir=work / f"nats-{time.monotonic_ns()}")
            cluster.start()
            brokers = [n.proc.pid for n in cluster.nodes if n.proc is not None]
            for n in cluster.nodes:
                mqtt_ready(n.mqtt_port)
            ports = [n.mqtt_port for n in cluster.nodes]
            confs = [central_config(work, k, kind, url, servers=cluster.urls, replicas=args.replicas)
                     for k in range(workers)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for conf in confs:
            (work / f"status-{kind}-{confs.index(conf)}.json").unlink(missing_ok=True)
            centrals.append(subprocess.Popen([sys.executable, "-m", "gridedge", "central", "run", "--config",
                                              str(conf)], cwd=ROOT, env=env, stderr=subprocess.DEVNULL))  # fmt: skip
        for k in range(workers):
            wait_connected(work / f"status-{kind}-{k}.json")
        size0 = db_size(url)  # central's tables exist once a worker is connected
        sites = [f"bench-{i}" for i in range(args.sites)]
        groups = [{s: ports[i % len(ports)] for i, s in enumerate(sites) if i % 2 == g} for g in range(2)]
        ready, start, out = mp.Queue(), mp.Event(), mp.Queue()
        pubs = [mp.Process(target=publisher, args=(g, args.messages // 2, args.per_message, ready, start, out))
                for g in groups]  # fmt: skip
        for p in pubs:
            p.start()
        sent = sum(ready.get(timeout=120) for _ in pubs)
        broker_cpu0, central_cpu0 = cpu_s(brokers), cpu_s([c.pid for c in centrals])
        start.set()
        results = [out.get(timeout=400) for _ in pubs]
        broker_cpu, central_cpu = cpu_s(brokers) - broker_cpu0, cpu_s([c.pid for c in centrals]) - central_cpu0
        for p in pubs:
            p.join(10)
        acked = sum(r["acked"] for r in results)
        grown = db_size(url) - size0
        resent = sum(r["resent"] for r in results)
        if resent:
            print(
                f"{kind} x{workers}: {resent} messages resent after {ACK_TIMEOUT_S} s without an ack", file=sys.stderr
            )
        elapsed = max(r["t1"] for r in results) - min(r["t0"] for r in results)
        if acked != sent:
            print(f"{kind} x{workers}: only {acked} of {sent} messages acked", file=sys.stderr)
        return {"msgs": acked / elapsed, "readings": acked * args.per_message / elapsed,
                "broker_cpu_per_k": 1000 * broker_cpu / max(acked, 1),
                "central_cpu_per_k": 1000 * central_cpu / max(acked, 1), "complete": float(acked == sent),
                "bytes_per_reading": grown / max(acked * args.per_message, 1)}  # fmt: skip
    finally:
        for c in centrals:
            c.send_signal(signal.SIGTERM)
        for c in centrals:
            try:
                c.wait(10)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait(5)
        if mosq is not None:
            mosq.terminate()
            mosq.wait(5)
        if cluster is not None:
            cluster.stop()
        drop_database(args.pg_url, name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000, help="messages per configuration and run")
    ap.add_argument("--per-message", type=int, default=500, help="readings a message (the agent's batch_size)")
    ap.add_argument("--sites", type=int, default=16, help="simulated agents (MQTT clients)")
    ap.add_argument("--workers", default="1,2", help="central worker processes")
    ap.add_argument("--replicas", type=int, default=3, choices=(1, 3), help="copies of each message in NATS")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument(
        "--pg-url", default=os.environ.get("GRIDEDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="broker-tier-bench-") as tmp:
        for r in range(args.repeat):
            for n in counts:
                for kind in ("mqtt", "nats"):
                    results.setdefault((kind, n), []).append(run_one(kind, n, args, Path(tmp)))
                    print(f"run {r + 1}/{args.repeat}: {kind}, {n} worker(s) done", file=sys.stderr)

    def med(kind: str, n: int, key: str) -> float:
        return statistics.median(x[key] for x in results[(kind, n)])

    label = {"mqtt": "mosquitto (1 broker)", "nats": f"nats (3 nodes, R{args.replicas})"}
    print(f"broker tier: {args.messages} messages of {args.per_message} readings from {args.sites} agents, central "
          f"on PostgreSQL, acked end to end; median of {args.repeat} (all on this machine, shared with other work)")  # fmt: skip
    print(f"{'broker':<22} {'workers':>7} {'messages/s':>11} {'readings/s':>12} {'broker CPU-s/1k msg':>20} "
          f"{'central CPU-s/1k msg':>21} {'PG bytes/reading':>17}")  # fmt: skip
    for kind in ("mqtt", "nats"):
        for n in counts:
            print(f"{label[kind]:<22} {n:>7} {med(kind, n, 'msgs'):>11,.0f} {med(kind, n, 'readings'):>12,.0f} "
                  f"{med(kind, n, 'broker_cpu_per_k'):>20.3f} {med(kind, n, 'central_cpu_per_k'):>21.3f} "
                  f"{med(kind, n, 'bytes_per_reading'):>17.1f}")  # fmt: skip
    for n in counts:
        m, k = med("mqtt", n, "msgs"), med("nats", n, "msgs")
        print(f"nats / mosquitto, {n} worker(s): {k / m:.2f}x messages/s")
    complete = all(x["complete"] for rs in results.values() for x in rs)
    top = max(counts)
    nats_top, mqtt_top = med("nats", top, "readings"), med("mqtt", top, "readings")
    emit(f"broker_tier_nats_{top}_workers_vs_mosquitto", nats_top, mqtt_top, nats_top / mqtt_top, "readings/s",
         ">= 0.5x peer (a replicated cluster on one machine vs one broker), every message acked", complete
         and nats_top >= 0.5 * mqtt_top)  # fmt: skip
    if 1 in counts and 2 in counts:
        one, two = med("nats", 1, "readings"), med("nats", 2, "readings")
        emit("broker_tier_nats_2_workers_vs_1", two, one, two / one, "readings/s",
             ">= 1.0x peer (a second worker does not slow the tier)", complete and two >= one)  # fmt: skip
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
