"""The signed downlink's cost, side by side with its floors, as ratios.

    .venv/bin/python benchmarks/commands.py [--verify 3000] [--handle 400] [--commands 50] [--mqtt 200]
        [--gap-s 0.05] [--alternate] [--shipped-only] [--skip-agent] [--skip-round-trip]

Agent half (``bench_agent``, this process only, no broker and no device):

- ``Verifier.check`` of one signed ``der.setpoint`` message (read the outer JSON, find the key, Ed25519 signature,
  canonical re-encoding of the payload, every field and the kind's body, role, audience, sequence, window), against
  its floor: one bare ``Ed25519PublicKey.verify`` (cryptography) of the very bytes the signature covers
  (``CMD_DOMAIN`` + payload). Beside them, the parse alone (``read_signed`` + ``read_command``, no signature).
- ``CommandService.handle`` of a ``control.mode`` command for the whole site (``*``) alternating ``advise`` and
  ``control``: it changes no device, so what is measured is verification plus the store: the last sequence and the
  executed-ids reads, the ``take`` transaction (the command logged ``executing``, its audit row), the result signed
  with the agent's key and the ``finish`` transaction (result event, mode slot, audit rows). The service is built as
  tests/test_commands_agent.py builds it: tests/helpers/envelope.py's ``Rig`` (a real SQLite store on disk in WAL,
  with the agent's default synchronous=NORMAL, its envelope over a fake actuator nothing writes to) and an
  ``MqttSession`` that is never run. Per command p50 and p99 (wall) and the mean CPU (time.process_time: the
  store's worker thread included); ratio to ``Verifier.check``. Peers of its parts: one Ed25519 ``sign`` (the
  result's signature) and two bare SQLite write transactions on a file of the same settings (one INSERT each).

Round-trip half (``bench_round_trip``): the shipped IEEE 13-node bench runs as its own process (``gridedge sim run``
on a copy with free ports, started at solar noon on a clear day), as in the field; our own Mosquitto on a free
loopback port; central's ingest as its own process (``gridedge central run``: it acknowledges the agent's uplink and
records results, as in the field). In this process: the whole agent (``AgentService``, the composition root: its
pollers, store, control with the envelope, command service, uplink and MQTT session, on the system clock), built
from tests/helpers/controlbench.py's ``site_file`` and tests/helpers/commandrig.py's ``command_control`` with the
envelope's limits raised so nothing is refused (``min_command_interval_s = 0``, ``max_commands_per_hour = 3600``,
the DER group's ``setpoint_changes_per_hour = 3600``, the most config allows); and central's real
``CommandIssuer`` on central's store and its own MQTT session (as ``gridedge central command`` builds it, but one
session for all the commands). One command is ``der.setpoint`` of pv675's ``p_limit_pct``, each a value 50..94 in
turn, so each one writes the inverter and reads it back; it is timed from the ``issuer.send`` call (check, sequence
number from central's store, sign, record, publish QoS 1) until the verified result is in hand (the agent's
signed result on ``gridedge/v1/<site>/results``, verified with the site's agent key, recorded on its command).
After each result (outside the timing) the inverter's ``WMaxLimPct`` is read directly through the agent's link:
the counts printed say how many results were not ``applied`` with a decision (a write), and how many times the
inverter held another value than the command asked. ``--alternate`` runs 50/60 instead: before the fix it found,
the agent answered a command whose value its snapshot still showed from before the previous write ``applied:
already_held`` without writing (22 of 50); now such a match is written again and read back
(``settings_unconfirmed``), and the counts must show 0.

The round trip runs twice, on the broker's two settings: Mosquitto's default ``set_tcp_nodelay false``, and
``set_tcp_nodelay true`` (what config/mosquitto/, the demo's and the tests' brokers set). Our ``MqttSession`` sets
TCP_NODELAY on its own sockets since this benchmark found paho leaves Nagle on: on loopback a QoS 1 exchange whose
second small write waits behind Nagle for a delayed ACK stalls ~40 ms a hop, most of the round trip when the
broker keeps Nagle. ``--shipped-only`` skips the second run.

Breakdown (cheap, in-process): central's part before the publish took (``sent_at``) and after the result came
(``result_at``), from the issuer's Outcome; the agent's ``CommandService.handle`` (received -> result stored) and,
inside it, the DER actuator's ``carry_out`` (the SunSpec writes and the readback), both timed by wrapping the
instance's method in this process (the code is not changed). What is left is the two broker hops, the uplink
publishing the result and the event loop's scheduling.

Peer: a bare MQTT QoS 1 round trip on the same broker, between two of our ``MqttSession`` clients in this same
process while the agent runs (the same client code, loop and load the command path has): one publishes on a ping
topic and waits for its PUBACK, an echo client republishes every message on a pong topic at QoS 1, the first
receives it. Payloads of a signed command's size. Ratio: command round trip / MQTT round trip.

No target: these are the figures docs/commands.md ("Figures") quotes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # the rigs the tests use: tests/helpers

from _report import emit  # noqa: E402
from bench_steps import bench_copy, free_port  # noqa: E402
from helpers.commandrig import command_control, make_keys  # noqa: E402
from helpers.controlbench import site_file  # noqa: E402
from helpers.envelope import Rig  # noqa: E402

from agent.commands.config import parse_commands  # noqa: E402
from agent.commands.service import CommandService  # noqa: E402
from agent.commands.verify import KeyRing, Verifier  # noqa: E402
from agent.config import load_config  # noqa: E402
from agent.control.controller import Controller  # noqa: E402
from agent.control.wiring import ControlSystem  # noqa: E402
from agent.service import AgentService  # noqa: E402
from central.commands import CommandIssuer  # noqa: E402
from central.config import load_central_config  # noqa: E402
from central.store import CentralStore  # noqa: E402
from gridedge_demo import wait_port  # noqa: E402
from protocols.configcheck import Checker  # noqa: E402
from protocols.mqtt.session import MqttSession, SessionConfig  # noqa: E402
from protocols.telemetry.commands import (  # noqa: E402
    CMD_DOMAIN,
    Command,
    generate_key,
    private_pem,
    public_text,
    read_command,
    read_signed,
    sign_command,
)
from sim_hw.config import load_bench_config  # noqa: E402

SITE = "bench-site"
DEV = "pv675"
WMAX = "DERCtlAC.WMaxLimPct"  # the point p_limit_pct is written to (SunSpec 704)
# p_limit_pct of each command in turn: 45 values, so a command never asks for a value that the agent's snapshot of the
# inverter (read every poll_interval_s = 2 s, and at the next poll after a write) may still show from an earlier
# command (~100 ms each); before the fix such a command was answered "already_held" without a write (ALTERNATE)
VALUES = tuple(float(v) for v in range(50, 95))
NO_TARGET = "none (figure for docs/commands.md)"
ALTERNATE = (50.0, 60.0)  # --alternate: 50/60, the case of the answers from a stale snapshot (fixed: 0 now)


# ---- figures -----------------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


class Figures:
    """Rows of (what, wall p50, wall p99, CPU mean or None, [ms]), printed with a ratio to a named row."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[tuple[str, float, float, float | None, str]] = []
        self.p50: dict[str, float] = {}
        self.note = ""

    def add(self, what: str, wall_ms: list[float], cpu_ms: float | None = None, ratio_to: str = "") -> None:
        p50 = statistics.median(wall_ms)
        self.p50[what] = p50
        self.rows.append((what, p50, pct(wall_ms, 0.99), cpu_ms, ratio_to))

    def print(self) -> None:
        print(f"\n{self.title}")
        head = f"{'':58}{'wall p50 ms':>12}{'wall p99 ms':>12}{'CPU ms':>10}{'ratio':>8}  ratio of p50 to"
        print(head)
        print("-" * len(head))
        for what, p50, p99, cpu, to in self.rows:
            cpu_s = "" if cpu is None else f"{cpu:10.3f}"
            ratio = f"{p50 / self.p50[to]:8.1f}" if to else ""
            print(f"{what:58}{p50:12.3f}{p99:12.3f}{cpu_s:>10}{ratio:>8}  {to}")


def timed(fn: Callable[[], object], n: int) -> tuple[list[float], float]:
    """Wall ms of each of ``n`` calls, and the mean CPU ms per call (time.process_time)."""
    wall: list[float] = []
    c0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1000)
    return wall, (time.process_time() - c0) / n * 1000


# ---- the agent alone: verification and one message end to end ------------------------------------------------------


def _config(folder: Path, site: str) -> tuple[Any, Any]:
    """An operator key, and ``[commands]`` trusting it with the agent's own key written where it is read."""
    ops, agent = generate_key(), generate_key()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "agent.key").write_bytes(private_pem(agent))
    c = Checker(folder)
    raw = {"agent_key_file": "agent.key",
           "keys": [{"key_id": "ops-1", "role": "operator", "public_key": public_text(ops.public_key())}]}  # fmt: skip
    cfg = parse_commands(c, raw, site, True)
    if c.issues or cfg is None:
        raise SystemExit(f"commands benchmark: [commands] refused: {c.issues}")
    return ops, cfg


def _command(site: str, seq: int, kind: str, target: str, body: dict[str, Any]) -> Command:
    wall = time.time()
    return Command(key_id="ops-1", role="operator", audience=site, target=target, command_id=str(uuid.uuid4()),
                   seq=seq, issued_at=round(wall, 3), not_before=round(wall - 5, 3),
                   expires_at=round(wall + 600, 3), kind=kind, body=body)  # fmt: skip


def _sqlite_floor(path: Path, n: int) -> tuple[list[float], float]:
    """Two write transactions of one INSERT each, WAL and synchronous=NORMAL (the store's settings)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT)")
    row = "x" * 600

    def two() -> None:
        for _ in range(2):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (data) VALUES (?)", (row,))
            conn.execute("COMMIT")

    try:
        return timed(two, n)
    finally:
        conn.close()


async def _handle_all(folder: Path, n: int) -> dict[str, Any]:
    site = "sub-1"  # Rig's store is opened for site sub-1
    ops, cfg = _config(folder / "keys-handle", site)
    async with Rig(folder / "handle.db") as rig:
        session = MqttSession(SessionConfig(host="127.0.0.1", port=1, client_id="bench"))  # never run: no broker
        control = ControlSystem(rig.envelope.config, rig.envelope,
                                Controller([], rig.envelope, rig.snapshot, rig.clock))  # fmt: skip
        svc = CommandService(site, cfg, rig.store, session, control)
        await svc.start()
        warm = 20
        msgs = [sign_command(ops, _command(site, i + 1, "control.mode", "*", {"mode": ("advise", "control")[i % 2]}))
                for i in range(n + warm)]  # fmt: skip
        wall: list[float] = []
        cpu = 0.0
        for i, raw in enumerate(msgs):
            c0, t0 = time.process_time(), time.perf_counter()
            v = await svc.handle(raw)
            t1, c1 = time.perf_counter(), time.process_time()
            if v.reason is not None:
                raise SystemExit(f"commands benchmark: handle refused a command: {v.reason} {v.detail}")
            if i >= warm:
                wall.append((t1 - t0) * 1000)
                cpu += c1 - c0
        conn = rig.store.store.conn
        pragmas = {p: conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("journal_mode", "synchronous")}
        counts = dict(svc.counts)
    sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(pragmas["synchronous"], pragmas["synchronous"])
    return {"wall": wall, "cpu_ms": cpu / n * 1000, "journal": pragmas["journal_mode"], "sync": sync,
            "counts": counts}  # fmt: skip


def bench_agent(folder: Path, n_verify: int, n_handle: int) -> Figures:
    ops, cfg = _config(folder / "keys-verify", SITE)
    verifier = Verifier(SITE, cfg, KeyRing(cfg))
    cmd = _command(SITE, 1, "der.setpoint", DEV, {"p_limit_pct": 50, "until": round(time.time() + 3600, 3)})
    raw = sign_command(ops, cmd)
    signed = read_signed(raw)
    sig = base64.b64decode(signed.sig)
    covered = CMD_DOMAIN + signed.payload
    public = ops.public_key()
    now = time.time()
    assert verifier.check(raw, now, 0, None).reason is None

    def check() -> None:
        verifier.check(raw, now, 0, None)

    def bare() -> None:
        public.verify(sig, covered)

    def parse() -> None:
        read_command(read_signed(raw))

    agent_key = cfg.agent_key
    result = b"x" * 400  # a result's canonical JSON is a few hundred bytes

    def sign() -> None:
        agent_key.sign(result)

    for fn in (check, bare, parse, sign):  # warm caches and the allocator
        timed(fn, 200)
    f = Figures(f"agent: verification and one message end to end ({len(raw)}-byte command message)")
    w, c = timed(bare, n_verify)
    f.add("floor: Ed25519 verify of the signed bytes (cryptography)", w, c)
    w, c = timed(check, n_verify)
    f.add(
        "Verifier.check (signature + canonical parse + checks)",
        w,
        c,
        "floor: Ed25519 verify of the signed bytes (cryptography)",
    )
    w, c = timed(parse, n_verify)
    f.add("  of which: read_signed + read_command (no signature)", w, c)
    w, c = timed(sign, n_verify)
    f.add("peer: Ed25519 sign (the result's signature)", w, c)
    w, c = _sqlite_floor(folder / "floor.db", n_handle)
    f.add("peer: two bare SQLite write transactions (WAL, NORMAL)", w, c)
    h = asyncio.run(_handle_all(folder, n_handle))
    f.add(f"CommandService.handle, control.mode (no device), n={n_handle}", h["wall"], h["cpu_ms"],
          "Verifier.check (signature + canonical parse + checks)")  # fmt: skip
    f.note = (
        f"the store: journal_mode={h['journal']}, synchronous={h['sync']} (the agent's default); "
        f"service counts {h['counts']}"
    )
    return f


# ---- the round trip on loopback ----------------------------------------------------------------------------------


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _start_mosquitto(folder: Path, port: int, nodelay: bool) -> subprocess.Popen:
    """Our own broker on loopback, as tests/helpers/broker.py's Broker (``nodelay``: ``set_tcp_nodelay true``)."""
    if shutil.which("mosquitto") is None:
        raise SystemExit("mosquitto is not installed: run scripts/install-system-packages.sh")
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 100000\nmax_inflight_messages 100\n"
                    "log_dest stderr\nlog_type error\nlog_type warning\n" + ("set_tcp_nodelay true\n" if nodelay else ""))  # fmt: skip
    with open(folder / "mosquitto.log", "ab") as log:
        proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log)
    if not wait_port(port, 10.0):
        _stop(proc)
        raise SystemExit(f"mosquitto did not listen on 127.0.0.1:{port} within 10 s")
    return proc


def _central_config(folder: Path, port: int, keys: dict[str, Any], ops_key: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "central.toml"
    conf.write_text(
        f'[broker]\nurl = "mqtt://127.0.0.1:{port}"\nclient_id = "bench-central"\n\n'
        '[store]\ndb = "central.db"\n\n'
        '[ingest]\ngroup = "bench"\nstatus_file = "central-status.json"\nack_interval_s = 0.05\n\n'
        "[commands]\nresult_timeout_s = 30\nvalid_s = 120\n"
        f'[[commands.keys]]\nkey_id = "ops-1"\nrole = "operator"\nkey_file = "{ops_key}"\n'
        f'[commands.sites.{SITE}]\nagent_key = "{public_text(keys["agent"].public_key())}"\n'
    )
    return conf


def _start_central(folder: Path, conf: Path) -> subprocess.Popen:
    """``gridedge central run`` in its own process, once it has connected (its status file says so)."""
    status = folder / "central-status.json"
    with open(folder / "central.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gridedge", "central", "run", "--config", str(conf)],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"central exited with {proc.returncode}: {(folder / 'central.log').read_text()[-2000:]}")
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(status.read_text())["total"]["connects"] >= 1:
                time.sleep(0.2)
                return proc
        time.sleep(0.05)
    _stop(proc)
    raise SystemExit(f"central did not connect within 30 s: {(folder / 'central.log').read_text()[-2000:]}")


def agent_site(bench_path: Path, folder: Path, broker_url: str) -> Path:
    """commandrig's site text (pv675, the cap bank, a DER group in monitor mode, ``[commands]``) with the envelope's
    limits raised to the most config allows (agent/control/config.py: max_commands_per_hour and the group's
    setpoint_changes_per_hour 1..3600), so a command every few tens of milliseconds is never refused."""
    bench = load_bench_config(bench_path)
    pv_port = next(d.port for d in bench.devices if d.name == DEV)
    text = command_control(pv_port)
    for old, new in (("min_command_interval_s = 0\n", "min_command_interval_s = 0\nmax_commands_per_hour = 3600\n"),
                     ("stale_after_s = 30\n", "stale_after_s = 30\nsetpoint_changes_per_hour = 3600\n")):  # fmt: skip
        if text.count(old) != 1:
            raise SystemExit(f"commands benchmark: commandrig's site text changed; {old.strip()!r} not found once")
        text = text.replace(old, new)
    return site_file(bench, folder, text, broker=broker_url)


def _nodelay(session: MqttSession) -> None:
    """TCP_NODELAY on the session's connected socket (paho does not set it; lost at a reconnect, none here)."""
    link = session._link
    sock = link.client.socket() if link is not None and link.client is not None else None
    if sock is None:
        raise SystemExit("commands benchmark: the session has no socket to set TCP_NODELAY on")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Timings:
    """Wall ms of each call of a wrapped instance method (the class and the code are left alone)."""

    def __init__(self, obj: Any, method: str) -> None:
        self.ms: list[float] = []
        inner = getattr(obj, method)

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                self.ms.append((time.perf_counter() - t0) * 1000)

        setattr(obj, method, wrapped)


async def _mqtt_rtt(port: int, n: int, size: int, nodelay: bool) -> list[float]:
    """Ping on one session, echoed by another at QoS 1, received by the first: ms per round trip."""
    ping, pong = "bench/echo/ping", "bench/echo/pong"
    a = MqttSession(SessionConfig(host="127.0.0.1", port=port, client_id="bench-echo-a"))
    b = MqttSession(SessionConfig(host="127.0.0.1", port=port, client_id="bench-echo-b"))
    waiting: dict[bytes, asyncio.Future[None]] = {}
    echoes: set[asyncio.Task[None]] = set()

    def on_ping(_t: str, payload: bytes) -> None:
        task = asyncio.create_task(b.publish(pong, bytes(payload), qos=1))
        echoes.add(task)
        task.add_done_callback(echoes.discard)

    def on_pong(_t: str, payload: bytes) -> None:
        fut = waiting.pop(bytes(payload[:36]), None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    b.subscribe(ping, 1, on_ping)
    a.subscribe(pong, 1, on_pong)
    tasks = [asyncio.create_task(s.run()) for s in (a, b)]
    try:
        await asyncio.wait_for(asyncio.gather(a.connected.wait(), b.connected.wait()), 10)
        await asyncio.sleep(0.3)  # the SUBACKs
        if nodelay:
            _nodelay(a)
            _nodelay(b)
        out: list[float] = []
        loop = asyncio.get_running_loop()
        for i in range(n + 10):
            key = str(uuid.uuid4()).encode()
            fut: asyncio.Future[None] = loop.create_future()
            waiting[key] = fut
            t0 = time.perf_counter()
            await a.publish(ping, key + b"x" * (size - len(key)), qos=1)
            await asyncio.wait_for(fut, 10)
            if i >= 10:
                out.append((time.perf_counter() - t0) * 1000)
        return out
    finally:
        await asyncio.gather(*echoes, return_exceptions=True)  # the last echo's PUBACK, before the sessions close
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _round_trips(site: Path, conf: Path, port: int, n: int, n_mqtt: int, gap_s: float, values: tuple[float, ...],
                       nodelay: bool) -> dict[str, Any]:  # fmt: skip
    agent = AgentService(load_config(site))
    assert agent.commands is not None and agent.control is not None
    handle = Timings(agent.commands, "handle")
    write = Timings(agent.control.envelope._actuators[DEV], "carry_out")  # the DER actuator: writes and readback
    stop = asyncio.Event()
    agent_task = asyncio.create_task(agent.run(stop))
    ccfg = load_central_config(conf)
    store = CentralStore(ccfg.db_path)
    session = MqttSession(ccfg.broker.session_config(client_id="bench-central-cmd", backoff_max_s=1.0))
    issuer = CommandIssuer(ccfg.commands, store, session)
    issuer.watch(SITE)
    session_task = asyncio.create_task(session.run())

    async def send(value: float) -> tuple[Any, float, float]:
        wall0, t0 = time.time(), time.perf_counter()
        out = await issuer.send(SITE, "der.setpoint", DEV, {"p_limit_pct": value, "until": round(time.time() + 3600)},
                                timeout_s=30)  # fmt: skip
        return out, (time.perf_counter() - t0) * 1000, wall0

    try:
        await asyncio.wait_for(session.connected.wait(), 30)
        await asyncio.wait_for(agent.session.connected.wait(), 30)
        if nodelay:
            _nodelay(session)
            _nodelay(agent.session)
        # warm-up: until the agent has polled pv675 and the interlocks' inputs, and three commands in a row applied
        deadline, ok, i, last = time.monotonic() + 120, 0, 0, None
        while ok < 3:
            if time.monotonic() > deadline:
                raise SystemExit(f"commands benchmark: no command applied during the warm-up; last: {last}")
            last, _ms, _w = await send(values[i % len(values)])
            i += 1
            ok = ok + 1 if last.status == "applied" and last.decisions else 0
            if not ok:
                await asyncio.sleep(1.0)
        handle.ms.clear()
        write.ms.clear()
        rtt: list[float] = []
        before: list[float] = []
        after: list[float] = []
        bad: list[str] = []
        wrong: list[str] = []
        act: Any = agent.control.envelope._actuators[DEV]
        c0 = time.process_time()
        for k in range(n):
            value = values[(i + k) % len(values)]
            out, ms, wall0 = await send(value)
            end = time.time()
            # what the inverter holds, read directly (outside the timing): the result must say the truth
            held = (await act.sunspec.read_points([WMAX]))[WMAX][0]
            if held != value:
                wrong.append(f"asked {value:g}, result {out.status} {out.reason or '-'} readback "
                             f"{out.readback.get(WMAX)}, the inverter holds {held}")  # fmt: skip
            if out.status != "applied" or not out.decisions:
                bad.append(f"{out.status} {out.reason} decisions={list(out.decisions)}")
            rtt.append(ms)
            if out.sent_at is not None and out.result_at is not None:
                before.append((out.sent_at - wall0) * 1000)
                after.append((end - out.result_at) * 1000)
            if gap_s:
                await asyncio.sleep(gap_s)
        cpu_ms = (time.process_time() - c0) / n * 1000
        mqtt = await _mqtt_rtt(port, n_mqtt, len(store.command(out.command.command_id)["message"]), nodelay)
        return {"rtt": rtt, "central_before": before, "central_after": after, "handle": list(handle.ms),
                "write": list(write.ms), "bad": bad, "mqtt": mqtt, "cpu_ms": cpu_ms, "wrong": wrong,
                "agent_counts": {**agent.commands.counts, "refusals": dict(agent.commands.refusals)}}  # fmt: skip
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(agent_task, 30)
        session_task.cancel()
        await asyncio.gather(session_task, return_exceptions=True)
        store.close()


def bench_round_trip(folder: Path, n: int, n_mqtt: int, gap_s: float, values: tuple[float, ...],
                     nodelay: bool) -> Figures:  # fmt: skip
    bench_path = bench_copy(folder)
    bench = load_bench_config(bench_path)
    port = free_port()
    sim = broker = central = None
    sim_log = open(folder / "sim.log", "wb")  # noqa: SIM115 - the child's log for its life
    try:
        sim = subprocess.Popen([sys.executable, "-m", "gridedge", "sim", "run", "--config", str(bench_path)],
                               stdout=sim_log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)  # fmt: skip
        pv = next(d.port for d in bench.devices if d.name == DEV)
        if not wait_port(pv, 120):
            raise SystemExit(f"commands benchmark: the bench did not start\n{(folder / 'sim.log').read_text()[-2000:]}")
        time.sleep(2.0)  # the RS-485 pty comes up with the TCP servers
        broker = _start_mosquitto(folder, port, nodelay)
        keys = make_keys(folder / "agent")
        conf = _central_config(folder / "central", port, keys, folder / "agent" / "keys" / "ops-1.key")
        central = _start_central(folder / "central", conf)
        site = agent_site(bench_path, folder / "agent", f"mqtt://127.0.0.1:{port}")
        r = asyncio.run(_round_trips(site, conf, port, n, n_mqtt, gap_s, values, nodelay))
    finally:
        _stop(central)
        _stop(sim)
        _stop(broker)
        sim_log.close()
    how = ("the broker's set_tcp_nodelay true (config/mosquitto/'s); our sessions set TCP_NODELAY themselves"
           if nodelay else "Mosquitto's default set_tcp_nodelay false; our sessions set TCP_NODELAY themselves")  # fmt: skip
    f = Figures(
        f"round trip on loopback, {how}:\ncentral -> broker -> agent -> {DEV} write + readback -> result at central"
    )
    f.add(f"floor: MQTT QoS 1 round trip (publish, echo, receive), n={len(r['mqtt'])}", r["mqtt"])
    f.add(f"command der.setpoint {DEV}, issuer.send to verified result, n={n}", r["rtt"], None,
          f"floor: MQTT QoS 1 round trip (publish, echo, receive), n={len(r['mqtt'])}")  # fmt: skip
    if r["central_before"]:
        f.add("  central: check, seq, sign, record, publish (PUBACK)", r["central_before"])
    f.add("  agent: CommandService.handle (received -> result stored)", r["handle"])
    f.add(f"    of which: {DEV} write + readback (DerActuator.carry_out)", r["write"])
    if r["central_after"]:
        f.add("  central: result verified -> recorded, in hand", r["central_after"])
    f.note = (
        f"max command round trip {max(r['rtt']):.1f} ms; this process's CPU {r['cpu_ms']:.1f} ms per command "
        f"(agent with its pollers, uplink and MQTT, and the issuer; bench, central ingest and broker are other "
        f"processes); agent counts {r['agent_counts']}; not applied: {len(r['bad'])} {r['bad'][:3]}; "
        f"the inverter holding other than asked after the result: {len(r['wrong'])} {r['wrong'][:3]}"
    )
    return f


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verify", type=int, default=3000, help="calls of Verifier.check and of each floor")
    ap.add_argument("--handle", type=int, default=400, help="messages through CommandService.handle")
    ap.add_argument("--commands", type=int, default=50, help="commands sent round trip (after 3 of warm-up)")
    ap.add_argument("--mqtt", type=int, default=200, help="bare MQTT QoS 1 round trips (the peer)")
    ap.add_argument("--gap-s", type=float, default=0.05, help="pause between two commands [s]")
    ap.add_argument("--alternate", action="store_true", help="p_limit_pct 50/60 alternating instead of 45 values")
    ap.add_argument(
        "--shipped-only",
        action="store_true",
        help="the round trip on Mosquitto's default only (no set_tcp_nodelay run)",
    )
    ap.add_argument("--skip-agent", action="store_true", help="only the round trip")
    ap.add_argument("--skip-round-trip", action="store_true", help="only the agent's part (no broker, no bench)")
    args = ap.parse_args()
    values = ALTERNATE if args.alternate else VALUES
    out: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="gridedge-commands-") as tmp:
        folder = Path(tmp)
        if not args.skip_agent:
            out.append(bench_agent(folder / "agent-only", args.verify, args.handle))
        if not args.skip_round_trip:
            for nodelay in (False,) if args.shipped_only else (False, True):
                sub = folder / ("rt-nodelay" if nodelay else "rt")
                sub.mkdir()
                out.append(bench_round_trip(sub, args.commands, args.mqtt, args.gap_s, values, nodelay))
    for f in out:
        f.print()
        print(f.note)
    print("\nwall: time.perf_counter per call; CPU: time.process_time of this process per call (its threads too)")
    # No target (see the module docstring): every ratio row is reported as a figure.
    for f in out:
        tag = f.title.split(":", 1)[0]
        if "round trip" in tag:
            tag = "round trip, broker nodelay" if "set_tcp_nodelay true" in f.title else "round trip, broker default"
        for what, p50, _p99, _cpu, to in f.rows:
            if to:
                name = f"{tag}: {what.split(', n=', 1)[0].split(' (', 1)[0].strip()}"
                peer = to.split(", n=", 1)[0].split(" (", 1)[0].removeprefix("floor: ")
                emit(name, p50, f.p50[to], p50 / f.p50[to], f"ms p50 (peer: {peer})", NO_TARGET, True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
