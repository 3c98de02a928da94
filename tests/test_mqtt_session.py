"""MqttSession against a real Mosquitto: round trips, broker SIGKILL and restart, lost publishes, last will."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from helpers.aio import async_test, running_tasks, until
from helpers.net import free_port
from paho.mqtt.enums import CallbackAPIVersion

from protocols.mqtt import ConnectionLost, MqttSession, SessionConfig
from protocols.mqtt.session import SessionConfigError, _filter_matches

REPO = Path(__file__).resolve().parent.parent


def fast_config(port: int, **kw: object) -> SessionConfig:
    kw.setdefault("backoff_min_s", 0.05)
    kw.setdefault("backoff_max_s", 0.5)
    return SessionConfig(host="127.0.0.1", port=port, **kw)  # type: ignore[arg-type]


@asynccontextmanager
async def running(session: MqttSession, wait: bool = True) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(session.run())
    try:
        if wait:
            await asyncio.wait_for(session.connected.wait(), 10)
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class Watcher:
    """A plain paho subscriber, independent of the code under test."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(topic, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [p for _, p, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("protocol", [4, 5])
@async_test
async def test_publish_subscribe_round_trip(broker, protocol: int) -> None:
    got: list[tuple[str, bytes]] = []
    session = MqttSession(fast_config(broker.port, protocol=protocol))
    session.subscribe("rt/+/data", 1, lambda t, p: got.append((t, p)))
    async with running(session):
        await session.publish("rt/a/data", b"hello", qos=1)
        await session.publish("rt/b/data", b"world", qos=0)
        await until(lambda: len(got) == 2)
    assert sorted(got) == [("rt/a/data", b"hello"), ("rt/b/data", b"world")]
    assert session.stats.puback >= 1 and session.stats.connects == 1 and session.stats.lost == 0


@async_test
async def test_subscribe_while_connected_applies_now(broker) -> None:
    got: list[bytes] = []
    session = MqttSession(fast_config(broker.port))
    async with running(session):
        session.subscribe("late/topic", 1, lambda t, p: got.append(p))
        link = session._link
        assert link is not None and link.subacks  # sent now, its SUBACK awaited
        await until(lambda: not link.subacks)  # SUBACK; the publish below would otherwise race the subscription
        await session.publish("late/topic", b"x")
        await until(lambda: got == [b"x"])


@async_test
async def test_handler_exception_is_not_fatal(broker) -> None:
    got: list[bytes] = []

    def bad(_t: str, p: bytes) -> None:
        if p == b"boom":
            raise RuntimeError("handler bug")
        got.append(p)

    session = MqttSession(fast_config(broker.port))
    session.subscribe("h/t", 1, bad)
    async with running(session) as task:
        await session.publish("h/t", b"boom")
        await session.publish("h/t", b"ok")
        await until(lambda: got == [b"ok"])
        assert not task.done()


@async_test
async def test_reconnects_after_broker_sigkill_and_resubscribes(broker) -> None:
    got: list[bytes] = []
    online: list[int] = []

    async def on_connect() -> None:
        online.append(1)

    session = MqttSession(fast_config(broker.port), on_connect=on_connect)
    session.subscribe("re/sub", 1, lambda t, p: got.append(p))
    async with running(session):
        for round_ in range(2):
            broker.kill()
            await until(lambda: not session.connected.is_set())
            with pytest.raises(ConnectionLost):
                await session.publish("re/sub", b"while down")
            await until(lambda round_=round_: session.stats.connect_failures > round_)  # a refused attempt
            broker.start()
            await asyncio.wait_for(session.connected.wait(), 10)
            await session.publish("re/sub", f"after restart {round_}".encode())
        await until(lambda: len(got) == 2)
    assert got == [b"after restart 0", b"after restart 1"]  # the subscription survived both restarts
    assert session.stats.connects == 3 and session.stats.disconnects == 2 and len(online) == 3
    assert session.stats.connect_failures >= 1


@async_test
async def test_publish_in_flight_when_broker_dies_raises_connection_lost(broker) -> None:
    session = MqttSession(fast_config(broker.port))
    async with running(session):
        broker.proc.send_signal(signal.SIGSTOP)  # frozen: the PUBACK cannot come back
        try:
            pub = asyncio.create_task(session.publish("lost/t", b"x" * 100))
            await asyncio.sleep(0.2)
            assert not pub.done()
        finally:
            broker.kill()
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(pub, 5)
        assert session.stats.lost == 1
        broker.start()
        await asyncio.wait_for(session.connected.wait(), 10)
        await session.publish("lost/t", b"again")  # a fresh client works after the old one died


@async_test
async def test_publish_when_not_connected_raises_immediately() -> None:
    session = MqttSession(fast_config(free_port()))
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(session.publish("t", b"x"), 1)


class RecordingRandom(random.Random):
    def __init__(self) -> None:
        super().__init__(1)
        self.bounds: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append(b)
        return super().uniform(a, b) / 10  # keep the test fast; the bounds are what we check


@async_test
async def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    rng = RecordingRandom()
    session = MqttSession(fast_config(free_port(), backoff_min_s=0.01, backoff_max_s=0.08), rng=rng)
    async with running(session, wait=False):
        await until(lambda: len(rng.bounds) >= 6)
    assert rng.bounds[:6] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.08, 0.08])
    assert session.stats.connect_failures >= 6 and session.stats.connects == 0


# ---- the session's own reconnect loop: one client id shared, failed attempts ------------------------------


class RealJitterRandom(random.Random):
    """Records the upper bound of every backoff draw (the exponential part); the jitter is the real one."""

    def __init__(self) -> None:
        super().__init__(3)
        self.bounds: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append(b)
        return super().uniform(a, b)


def paho_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("paho-mqtt-client-")]


@async_test
async def test_two_sessions_with_one_client_id_back_off_instead_of_storming(broker) -> None:
    """Mosquitto hands the session to the newest client with a client_id: two agents configured with the same
    id kick each other out at every connect. Each link lasts a moment, so the backoff must keep growing rather
    than restart at every CONNACK (both would reconnect ~10 times a second for ever)."""
    rngs = [RealJitterRandom(), RealJitterRandom()]
    cfg = SessionConfig(host="127.0.0.1", port=broker.port, client_id="same-id", backoff_min_s=0.01,
                        backoff_max_s=0.16)  # fmt: skip
    sessions = [MqttSession(cfg, rng=rng) for rng in rngs]
    async with running_tasks(*(s.run() for s in sessions)):
        await until(lambda: all(len(r.bounds) >= 6 for r in rngs), timeout=30)
    assert sum(s.stats.disconnects for s in sessions) >= 6  # they really took each other's session
    for rng in rngs:
        assert rng.bounds[:6] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16, 0.16]), rng.bounds


def test_stable_s_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stable_s"):
        SessionConfig(host="127.0.0.1", stable_s=0)


@async_test
async def test_no_paho_client_thread_outlives_its_connection_attempt() -> None:
    """Our loop owns reconnection: every attempt is a fresh paho client whose thread ends with it (paho's own
    retry is off), so failed attempts never pile up live clients, and none is left after the session ends."""
    before = set(paho_threads())
    rng = RealJitterRandom()
    session = MqttSession(SessionConfig(host="127.0.0.1", port=free_port(), client_id="lonely", backoff_min_s=0.01,
                                        backoff_max_s=0.02), rng=rng)  # fmt: skip
    most = 0

    def failed_enough() -> bool:
        nonlocal most
        most = max(most, len(set(paho_threads()) - before))
        return session.stats.connect_failures >= 8

    async with running_tasks(session.run()):
        await until(failed_enough, interval=0.005)
    assert most <= 1
    assert not set(paho_threads()) - before


WILL_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from protocols.mqtt import MqttSession, SessionConfig
    port = int(sys.argv[1])
    cfg = SessionConfig(host="127.0.0.1", port=port, client_id="will-test", keepalive_s=2,
                        will_topic="w/state", will_payload=b"offline", will_retain=True)
    async def main():
        session = None
        async def online():
            await session.publish("w/state", b"online", retain=True)
            print("online", flush=True)
        session = MqttSession(cfg, on_connect=online)
        await session.run()
    asyncio.run(main())
    """
)


@async_test
async def test_retained_will_offline_after_session_process_is_killed(broker) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WILL_SCRIPT, str(broker.port)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 10)
        assert line.strip() == b"online"
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
    await asyncio.sleep(0.5)
    # a subscriber arriving later still learns the agent is gone: the will is retained
    watcher = Watcher(broker.port, "w/state")
    try:
        await until(lambda: watcher.payloads() == [b"offline"])
        assert watcher.messages[0][2] is True  # delivered as a retained message
    finally:
        watcher.close()


@async_test
async def test_cancel_publishes_the_will_on_graceful_shutdown(broker) -> None:
    watcher = Watcher(broker.port, "g/state")
    try:
        session = MqttSession(fast_config(broker.port, will_topic="g/state", will_payload=b"offline"))
        async with running(session):
            await session.publish("g/state", b"online", retain=True)
            await until(lambda: watcher.payloads() == [b"online"])
        await until(lambda: watcher.payloads() == [b"online", b"offline"])
    finally:
        watcher.close()


@async_test
async def test_session_against_nothing_listening_keeps_trying_without_raising() -> None:
    session = MqttSession(fast_config(free_port()))
    async with running(session, wait=False) as task:
        await until(lambda: session.stats.connect_failures >= 3)
        assert not task.done()


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"host": ""}, "host"),
        ({"port": 0}, "port"),
        ({"protocol": 3}, "protocol"),
        ({"keepalive_s": 0}, "keepalive_s"),
        ({"backoff_min_s": 5.0, "backoff_max_s": 1.0}, "backoff_min_s"),
        ({"max_inflight": 0}, "max_inflight"),
        ({"cert_file": "c.pem"}, "cert_file"),
    ],
)
def test_bad_session_config_names_the_field(kw: dict, field: str) -> None:
    kw = {"host": "127.0.0.1", **kw}
    with pytest.raises(SessionConfigError, match=field):
        SessionConfig(**kw)


@async_test
async def test_missing_tls_files_raise_a_config_error() -> None:
    session = MqttSession(SessionConfig(host="127.0.0.1", port=free_port(), tls=True, ca_file="/nonexistent/ca.pem"))
    with pytest.raises(SessionConfigError, match="ca.pem"):
        await asyncio.wait_for(session.run(), 5)


@pytest.mark.parametrize(
    ("flt", "topic", "ok"),
    [
        ("$share/central/gridedge/v1/+/telemetry", "gridedge/v1/s1/telemetry", True),
        ("$share/central/gridedge/v1/+/telemetry", "gridedge/v1/s1/energy", False),
        ("gridedge/v1/+/state", "gridedge/v1/s1/state", True),
        ("a/#", "a/b/c", True),
        ("$share/broken", "broken", False),
    ],
)
def test_filter_matching_strips_the_share_prefix(flt: str, topic: str, ok: bool) -> None:
    assert _filter_matches(flt, topic) is ok


@async_test
async def test_a_refused_subscription_ends_the_link_and_the_next_one_is_subscribed(broker, mocker, caplog) -> None:
    """A session up without its subscriptions never hears its acks: a refused SUBACK ends the link and the
    session tries again after its back-off. Mosquitto grants every filter it can parse (its ACL filters
    deliveries instead), so the refusal (as a NATS node electing a leader answers) is put on the first SUBACK."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    real = MqttSession._on_suback
    refused: list[int] = []

    def first_refused(self: MqttSession, link: object, mid: int, rcs: list[ReasonCode]) -> None:
        if not refused:
            refused.append(mid)
            rcs = [ReasonCode(PacketTypes.SUBACK, identifier=0x87) for _ in rcs]  # Not authorized
        real(self, link, mid, rcs)

    mocker.patch.object(MqttSession, "_on_suback", first_refused)
    got: list[bytes] = []
    session = MqttSession(fast_config(broker.port))
    session.subscribe("acks/x", 1, lambda _t, p: got.append(p))
    async with running(session):
        await session.publish("acks/x", b"heard")
        await until(lambda: got == [b"heard"])
    assert len(refused) == 1  # the first session's SUBACK was refused ...
    assert session.stats.connects == 1 and session.stats.disconnects >= 1  # ... so it ended; the second is up
    assert "event=mqtt_subscription_refused" in caplog.text
