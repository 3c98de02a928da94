"""An MQTT session that keeps itself connected: the agent's uplink and central's ingest both sit on it.

Why not paho's own reconnect: a paho client that failed in some states (TLS handshake cut, CONNACK never
received, its thread dead) can stay unusable until the process restarts. Here every connection attempt gets a
FRESH paho client with its own network thread (paho's ``loop_start``) and ``reconnect_on_failure=False``, so
the thread ends with its connection; the asyncio side owns the retry loop (exponential backoff, full jitter,
injected randomness) and can always throw the old client away.

paho calls back from its thread; every callback is handed to the event loop with ``call_soon_threadsafe`` and
touches only the ``_Link`` (one attempt) it belongs to, so a late callback of an old client cannot confuse
the current one. A QoS 1 publish resolves on its PUBACK (tracked in ``on_publish``; paho's
``wait_for_publish`` is useless for messages queued offline) and raises :class:`ConnectionLost` if the link
drops first — the caller (the uplink's outbox) decides to resend; nothing relies on paho's RAM-only queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from protocols.eventlog import EventLog

log = EventLog("mqtt")

Handler = Callable[[str, bytes], None]


class MqttError(Exception):
    """Base of this layer's errors."""


class ConnectionLost(MqttError):
    """The publish could not be confirmed: not connected, or the link dropped before its PUBACK."""


class PublishRefused(MqttError):
    """The broker answered the publish with a failure reason code (MQTT 5), e.g. not authorized."""


class SessionConfigError(MqttError, ValueError):
    """A SessionConfig value that cannot work; the text names the field, the value and what is allowed."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    host: str
    port: int = 1883
    client_id: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr, a traceback or a log
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    protocol: int = 5  # MQTT 5 by default: central needs shared subscriptions; 4 = MQTT 3.1.1
    will_topic: str | None = None
    will_payload: bytes = b""
    will_retain: bool = True
    backoff_min_s: float = 0.2
    backoff_max_s: float = 30.0
    max_inflight: int = 100
    connect_timeout_s: float = 10.0  # TCP connect + CONNACK; a half-open broker must not stall the loop
    # The backoff starts again from backoff_min_s only after a link that stayed up this long. A link that the
    # broker drops at once (another client with the same client_id taking the session over, an ACL that kicks
    # the client) counts as a failure, else two such clients would reconnect ~10 times a second for ever.
    stable_s: float = 10.0

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> SessionConfigError:
            return SessionConfigError(f"{name} = {getattr(self, name)!r}: {allowed}")

        if not self.host:
            raise bad("host", "must be a non-empty host name or address")
        if not 1 <= self.port <= 65535:
            raise bad("port", "must be 1..65535")
        if self.protocol not in (4, 5):
            raise bad("protocol", "must be 4 (MQTT 3.1.1) or 5 (MQTT 5)")
        if not 1 <= self.keepalive_s <= 65535:
            raise bad("keepalive_s", "must be 1..65535 seconds")
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise bad("backoff_min_s", f"must be > 0 and <= backoff_max_s ({self.backoff_max_s})")
        if not 1 <= self.max_inflight <= 65535:
            raise bad("max_inflight", "must be 1..65535")
        if self.connect_timeout_s <= 0:
            raise bad("connect_timeout_s", "must be > 0")
        if self.stable_s <= 0:
            raise bad("stable_s", "must be > 0")
        if (self.cert_file is None) != (self.key_file is None):
            raise bad("cert_file", "a client certificate needs both cert_file and key_file")


@dataclass(slots=True)
class SessionStats:
    connects: int = 0  # sessions up: CONNACK and the SUBACK of every filter (a message published now reaches us)
    disconnects: int = 0  # links that ended after their CONNACK
    connect_failures: int = 0
    published: int = 0
    puback: int = 0
    lost: int = 0  # publishes that raised ConnectionLost


def _no_delay(_c: mqtt.Client, _u: Any, sock: Any) -> None:
    """TCP_NODELAY on the broker connection: MQTT packets are small, and with Nagle's algorithm a QoS 1 packet sent
    right after another waits for the peer's delayed ACK (about 40 ms a hop; benchmarks/commands.py measured the
    round trip of a QoS 1 echo at 88 ms with it, 1 ms without it at both ends)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _filter_matches(topic_filter: str, topic: str) -> bool:
    if topic_filter.startswith("$share/"):  # $share/<group>/<filter>: messages carry the plain topic
        parts = topic_filter.split("/", 2)
        if len(parts) < 3:
            return False
        topic_filter = parts[2]
    return mqtt.topic_matches_sub(topic_filter, topic)


class _Link:
    """One connection attempt: its paho client and everything waiting on it. Touched only in the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, number: int) -> None:
        self.number = number
        self.client: mqtt.Client | None = None
        self.connack: asyncio.Future[ReasonCode] = loop.create_future()
        self.ended: asyncio.Future[str] = loop.create_future()
        self.pending: dict[int, asyncio.Future[None]] = {}
        self.subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}

    @property
    def dead(self) -> bool:
        return self.ended.done()

    def end(self, reason: str) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)
        if not self.connack.done():
            self.connack.set_exception(ConnectionLost(reason))
            self.connack.exception()  # retrieved: nobody may be waiting any more
        self.fail_all(reason)

    def fail_all(self, reason: str) -> None:
        lost = f"connection lost before the broker's acknowledgement ({reason})"
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(lost))
        for sub in self.subacks.values():
            if not sub.done():
                sub.set_exception(ConnectionLost(lost))
                sub.exception()  # a live subscribe() does not wait for its SUBACK: mark it seen
        self.subacks.clear()


class MqttSession:
    """Owns one logical MQTT connection for the life of the process; see the module docstring."""

    def __init__(
        self,
        config: SessionConfig,
        *,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.connected = asyncio.Event()
        self.stats = SessionStats()
        self._on_connect: list[Callable[[], Awaitable[None]]] = [] if on_connect is None else [on_connect]
        self._rng = rng or random.Random()
        self._subs: dict[str, tuple[int, Handler]] = {}
        self._link: _Link | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- public API ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until cancelled."""
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        attempt = 0
        number = 0
        while True:
            number += 1
            link = _Link(self._loop, number)
            graceful = False
            try:
                self._start(link)
                if await self._handshake(link):
                    up_at = self._loop.time()
                    await self._session_up(link)
                    reason = await link.ended
                    self.stats.disconnects += 1
                    lasted = self._loop.time() - up_at
                    if lasted >= cfg.stable_s:
                        attempt = 0  # a link that worked: come back quickly
                    log.warning("mqtt_link_down", host=cfg.host, port=cfg.port, reason=reason,
                                lasted_s=round(lasted, 1))  # fmt: skip
            except asyncio.CancelledError:
                graceful = True
                raise
            finally:
                await self._retire(link, graceful)
            delay = self._rng.uniform(0.0, min(cfg.backoff_max_s, cfg.backoff_min_s * 2 ** min(attempt, 32)))
            attempt += 1
            log.info("mqtt_reconnect", host=cfg.host, port=cfg.port, attempt=attempt, in_s=round(delay, 2))
            await asyncio.sleep(delay)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Resolve when the broker has the message (PUBACK for QoS 1); raise ConnectionLost otherwise."""
        link = self._link
        if link is None or link.client is None or link.dead or not self.connected.is_set():
            self.stats.lost += 1
            raise ConnectionLost("not connected")
        info = link.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.stats.lost += 1
            raise ConnectionLost(f"the client did not take the message: {mqtt.error_string(info.rc)}")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        link.pending[info.mid] = fut  # on_publish arrives through call_soon_threadsafe, so never before this
        self.stats.published += 1
        try:
            await fut
        except ConnectionLost:
            self.stats.lost += 1
            raise
        finally:
            link.pending.pop(info.mid, None)

    def add_on_connect(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Also await ``hook`` after every (re)connect, once the subscriptions are in place.

        For a part built after the session (the uplink announcing the retained "online" state).
        """
        self._on_connect.append(hook)

    def subscribe(self, topic_filter: str, qos: int, handler: Handler) -> None:
        """Remember the subscription; it is applied now if connected and again after every reconnect.

        ``handler(topic, payload)`` runs in the event loop; an exception in it is logged, never fatal.
        """
        self._subs[topic_filter] = (qos, handler)
        link = self._link
        if link is not None and link.client is not None and self.connected.is_set() and not link.dead:
            rc, mid = link.client.subscribe(self._sub_list([topic_filter]))
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                self._expect_suback(link, mid)

    # ---- one connection -----------------------------------------------------------------------------------

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        """From paho's thread into the event loop."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for this any more
            self._loop.call_soon_threadsafe(fn, *args)

    def _start(self, link: _Link) -> None:
        cfg = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5 if cfg.protocol == 5 else mqtt.MQTTv311,
            reconnect_on_failure=False,  # the thread ends with its connection; run() decides what comes next
        )
        client.max_inflight_messages_set(cfg.max_inflight)  # raises once connected: set it first
        client.connect_timeout = cfg.connect_timeout_s
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            try:
                client.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file, keyfile=cfg.key_file)
            except (OSError, ValueError) as err:
                raise SessionConfigError(f"TLS files ca={cfg.ca_file} cert={cfg.cert_file}: {err}") from err
        if cfg.will_topic:
            client.will_set(cfg.will_topic, cfg.will_payload, qos=1, retain=cfg.will_retain)

        def on_connect(c: mqtt.Client, _u: Any, _flags: Any, rc: ReasonCode, _props: Any) -> None:
            if rc.is_failure:
                c.loop_stop()  # from its own thread this only asks the loop to end
            self._post(self._on_connack, link, rc)

        errors: list[str] = []  # paho's error log lines on this link (a TLS alert, a reset socket); its thread only

        def on_log(_c: mqtt.Client, _u: Any, level: int, buf: str) -> None:
            if level == mqtt.MQTT_LOG_ERR:
                errors.append(buf)

        def on_connect_fail(c: mqtt.Client, _u: Any) -> None:
            c.loop_stop()  # paho would otherwise retry by itself, outside our backoff
            # paho calls this inside its `except OSError:` around the TCP/TLS connect and passes no error: take it
            err = sys.exc_info()[1]
            self._post(link.end, f"connect failed: {err}" if err is not None else "connect failed")

        def on_disconnect(_c: mqtt.Client, _u: Any, _flags: Any, rc: ReasonCode, _props: Any) -> None:
            self._post(link.end, f"{rc} ({errors[-1]})" if errors else str(rc))

        def on_publish(_c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _props: Any) -> None:
            self._post(self._on_puback, link, mid, rc)

        def on_subscribe(_c: mqtt.Client, _u: Any, mid: int, rcs: list[ReasonCode], _props: Any) -> None:
            self._post(self._on_suback, link, mid, list(rcs))

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            self._post(self._dispatch, msg.topic, bytes(msg.payload))

        client.on_connect = on_connect
        client.on_log = on_log
        client.on_connect_fail = on_connect_fail
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.on_socket_open = _no_delay
        link.client = client
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        client.loop_start()

    async def _handshake(self, link: _Link) -> bool:
        cfg = self.config
        try:
            rc = await asyncio.wait_for(asyncio.shield(link.connack), cfg.connect_timeout_s + 1.0)
        except TimeoutError:
            reason = "no CONNACK in time"
        except ConnectionLost as err:
            reason = str(err)
        else:
            if not rc.is_failure:
                return True
            reason = f"refused: {rc}"
        self.stats.connect_failures += 1
        log.warning("mqtt_connect_failed", host=cfg.host, port=cfg.port, reason=reason)
        return False

    async def _session_up(self, link: _Link) -> None:
        """Re-subscribe every filter, then announce the session as connected and run on_connect."""
        cfg = self.config
        assert link.client is not None
        self._link = link
        log.info("mqtt_connected", host=cfg.host, port=cfg.port, client_id=cfg.client_id)
        if self._subs:
            rc, mid = link.client.subscribe(self._sub_list(list(self._subs)))
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                link.end(f"subscribe not sent: {mqtt.error_string(rc)}")
                return
            try:
                rcs = await asyncio.wait_for(self._expect_suback(link, mid), cfg.connect_timeout_s)
            except (TimeoutError, ConnectionLost) as err:
                link.end(f"no SUBACK: {err or 'timeout'}")
                return
            if any(getattr(rc, "is_failure", False) for rc in rcs):
                # A session without its subscriptions looks up and never receives (an agent without its acks
                # resends for ever): end the link and try again after the back-off. A broker that refuses it
                # for good (an ACL) shows as mqtt_subscription_refused at every attempt.
                link.end("a subscription was refused")
                return
        self.stats.connects += 1
        self.connected.set()
        for hook in list(self._on_connect):
            try:
                await hook()
            except MqttError as err:
                log.warning("mqtt_on_connect_failed", hook=getattr(hook, "__qualname__", hook), error=err)
            except Exception as err:  # the caller's hook must not end the session's life
                log.error("mqtt_on_connect_raised", hook=getattr(hook, "__qualname__", hook), error=repr(err))

    async def _retire(self, link: _Link, graceful: bool) -> None:
        """Forget the link, fail what waits on it, stop its client without ever blocking the loop for long."""
        self.connected.clear()
        if self._link is link:
            self._link = None
        client = link.client
        link.end("session closed" if graceful else "connection retired")
        if client is None:
            return
        if graceful and link.connack.done() and not link.connack.exception():
            self._say_goodbye(client)
        assert self._loop is not None
        stopped = self._loop.create_future()

        def stop() -> None:
            client.loop_stop()
            if not graceful:
                client.disconnect()  # closes a socket we gave up on; a no-op when the link is already lost
            self._post(lambda: stopped.done() or stopped.set_result(None))

        threading.Thread(target=stop, name=f"mqtt-retire-{link.number}", daemon=True).start()
        # A thread stuck on a half-open socket ends on its own (keepalive); the session does not wait for it.
        await asyncio.wait({stopped}, timeout=2.0)

    def _say_goodbye(self, client: mqtt.Client) -> None:
        """On shutdown, let the broker publish the will (the retained "offline" state) as if we had died."""
        cfg = self.config
        if cfg.will_topic and cfg.protocol == 5:
            client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))  # with will message
            return
        if cfg.will_topic:  # MQTT 3.1.1 has no "disconnect with will": publish it ourselves
            client.publish(cfg.will_topic, cfg.will_payload, qos=1, retain=cfg.will_retain)
        client.disconnect()

    # ---- callbacks, in the event loop ---------------------------------------------------------------------

    def _on_connack(self, link: _Link, rc: ReasonCode) -> None:
        if not link.connack.done():
            link.connack.set_result(rc)

    def _on_puback(self, link: _Link, mid: int, rc: Any) -> None:
        fut = link.pending.get(mid)
        if fut is None or fut.done():
            return
        if getattr(rc, "is_failure", False):
            fut.set_exception(PublishRefused(f"broker refused the publish: {rc}"))
        else:
            self.stats.puback += 1
            fut.set_result(None)

    def _expect_suback(self, link: _Link, mid: int) -> asyncio.Future[list[ReasonCode]]:
        assert self._loop is not None
        fut: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        link.subacks[mid] = fut
        return fut

    def _on_suback(self, link: _Link, mid: int, rcs: list[ReasonCode]) -> None:
        for rc in rcs:
            if getattr(rc, "is_failure", False):
                log.error("mqtt_subscription_refused", host=self.config.host, reason=rc)
        fut = link.subacks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(rcs)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        for topic_filter, (_qos, handler) in list(self._subs.items()):
            if not _filter_matches(topic_filter, topic):
                continue
            try:
                handler(topic, payload)
            except Exception as err:  # one bad message or handler must not end the session
                log.error("mqtt_handler_raised", topic=topic, filter=topic_filter, error=repr(err))

    def _sub_list(self, filters: list[str]) -> list[tuple[str, Any]]:
        if self.config.protocol == 5:
            return [(f, SubscribeOptions(qos=self._subs[f][0])) for f in filters]
        return [(f, self._subs[f][0]) for f in filters]
