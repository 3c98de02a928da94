"""Outbox -> MQTT, with central's acknowledgements: a message leaves the store only when central has it.

The guarantee, end to end: ``seal()`` has committed an outbox row before it is ever published; the row is
published at QoS 1 (the broker's PUBACK only says the broker has it, and the broker may die before central
does); the row is deleted only when central's ack for its ``msg_id`` arrives on ``gridedge/v1/<site>/ack``,
which central sends after its own commit. Anything else — a publish that raised ConnectionLost, no ack within
``ack_timeout_s``, a reconnect — means the SAME message (same msg_id and seq) is published again; central drops
the duplicate by id and acks it again. So delivery is at-least-once on the wire and exactly-once in central's
store.

Why resend everything waiting on a reconnect instead of waiting out ``ack_timeout_s``: every connection starts
a clean MQTT session, so an ack central sent while we were away is gone for good; waiting would only delay.

Backpressure: at most ``max_inflight`` messages are published and waiting for central; the rest stay in the
outbox (on disk), which is where a backlog belongs.

Store faults do not stop the sending: a seal or an ack that fails (a full disk) is logged, counted and tried
again next round, and what is already sealed is still sent — its acks are what frees room.

Billing-grade order (docs/store.md, "The outbox"): the outbox offers telemetry newest first, so operators see
now while a backlog drains, and every other stream (energy, intervals, events, control, results, audit) oldest
first, so settlement gets its data in order; the two are taken in turn, so both complete.

Bookkeeping is bounded by ``max_inflight``: the uplink remembers a msg_id (in flight, or "published before",
for the ``resent`` count) only while the message is in flight or among those ``pending()`` offers again. A
message removed behind its back (the store's full policy drops the oldest telemetry) is forgotten at the
next step that asks the store. A telemetry message published before and offered again after newer ones may be
forgotten meanwhile: its resend is then not counted in ``resent`` (a statistic; the message itself is sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.config import UplinkConfig
from agent.store import AsyncStore, OutboxMessage, StoreError
from protocols.eventlog import EventLog
from protocols.mqtt.config import BrokerConfig
from protocols.mqtt.session import ConnectionLost, MqttError, MqttSession, SessionConfig
from protocols.telemetry.schema import SchemaError, decode_ack, encode_state, topic

log = EventLog("uplink")


def session_config_for(
    site: str,
    host: str,
    port: int,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    tls: bool = False,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    keepalive_s: int = 30,
    *,
    clock: Callable[[], float] = time.time,
    version: str = "",
) -> SessionConfig:
    """The agent's session to a broker given field by field (tests, benchmarks): as :func:`session_config_from`."""
    broker = BrokerConfig(host=host, port=port, tls=tls, username=username, password=password,
                          ca_file=None if ca_file is None else Path(ca_file),
                          cert_file=None if cert_file is None else Path(cert_file),
                          key_file=None if key_file is None else Path(key_file),
                          client_id=client_id, keepalive_s=keepalive_s)  # fmt: skip
    return _with_will(broker, site, clock, version)


def session_config_from(
    site: str, uplink: UplinkConfig, *, clock: Callable[[], float] = time.time, version: str = ""
) -> SessionConfig:
    """The agent's session for a site's validated ``[uplink]`` section (what ``gridedge run`` uses)."""
    return _with_will(uplink.broker, site, clock, version)


def _with_will(broker: BrokerConfig, site: str, clock: Callable[[], float], version: str) -> SessionConfig:
    """The agent's session: its last will is the retained "offline" state on ``gridedge/v1/<site>/state``.

    The will's ``ts`` is when this is called (the broker stores the will at connect; it cannot be stamped at
    the moment of death) — central records the time it receives it.
    """
    return broker.session_config(
        will_topic=topic(site, "state"), will_payload=encode_state(site, "offline", clock(), version), will_retain=True
    )


@dataclass
class UplinkStats:
    published: int = 0  # publishes the broker acknowledged (resends included)
    acked_messages: int = 0  # outbox rows removed because central acknowledged them
    resent: int = 0  # publishes of a msg_id published before
    ack_timeouts: int = 0  # messages whose central ack did not come within ack_timeout_s
    publish_failures: int = 0  # publishes that raised ConnectionLost (sent again later)
    acks_received: int = 0
    bad_acks: int = 0  # malformed ack messages, or acks for another site: logged and ignored
    store_errors: int = 0  # store calls that raised StoreError (seal and ack failures included)
    seal_errors: int = 0  # seal() failures (a full disk): what was already sealed is sent anyway


class Uplink:
    def __init__(
        self,
        site: str,
        store: AsyncStore,
        session: MqttSession,
        *,
        max_inflight: int = 32,
        ack_timeout_s: float = 30.0,
        poll_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        version: str = "",
    ) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight = {max_inflight}: must be at least 1")
        if ack_timeout_s <= 0 or poll_s <= 0:
            raise ValueError(f"ack_timeout_s = {ack_timeout_s}, poll_s = {poll_s}: must be > 0")
        self.site = site
        self.store = store
        self.session = session
        self.max_inflight = max_inflight
        self.ack_timeout_s = ack_timeout_s
        self.poll_s = poll_s
        self.stats = UplinkStats()
        self._clock = clock
        self._wall = wall_clock
        self._version = version
        self._ack_topic = topic(site, "ack")
        self._inflight: dict[str, float] = {}  # msg_id -> clock() when last published; awaiting central's ack
        self._publishing: set[str] = set()  # msg_ids whose publish awaits the broker's PUBACK
        self._sent_before: set[str] = set()  # msg_ids published at least once and still in the outbox
        self._acks: list[str] = []  # acked by central, not yet removed from the store
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        session.subscribe(self._ack_topic, 1, self._on_ack)
        session.add_on_connect(self._on_connect)

    def nudge(self) -> None:
        """Seal and send now rather than at the next poll (a command's result was just stored)."""
        self._wake.set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def tracked(self) -> frozenset[str]:
        """Every msg_id the uplink holds state for (in flight, or published before and offered again)."""
        return frozenset(self._inflight) | self._sent_before

    async def run(self) -> None:
        """Seal, send, collect acks, resend; until cancelled. Store faults are logged and retried."""
        try:
            while True:
                try:
                    await self._step()
                except StoreError as err:
                    self.stats.store_errors += 1
                    log.error("uplink_store_error", site=self.site, error=err)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
                self._wake.clear()
        finally:
            for task in list(self._tasks):
                task.cancel()

    # ---- the loop ---------------------------------------------------------------------------------------

    async def _step(self) -> None:
        if self._acks:
            ids, self._acks = self._acks, []
            try:
                removed = await self.store.ack(ids)
            except StoreError as err:
                # Try again next round; the rows are still there, and in flight until then, so they are not
                # offered again meanwhile. Sending goes on: a failed ack must not hold what is sealed.
                self._acks[:0] = ids
                self.stats.store_errors += 1
                log.error("uplink_ack_failed", site=self.site, messages=len(ids), error=err)
            else:
                self.stats.acked_messages += removed
                for msg_id in ids:
                    self._inflight.pop(msg_id, None)
                    self._sent_before.discard(msg_id)
        try:
            await self.store.seal()
        except StoreError as err:
            # A full disk fails the seal (rolled back whole); what was sealed before is still in the outbox
            # and must go out — central's acks are what make room again.
            self.stats.seal_errors += 1
            self.stats.store_errors += 1
            log.error("uplink_seal_failed", site=self.site, error=err)
        now = self._clock()
        for msg_id, sent in list(self._inflight.items()):
            if msg_id not in self._publishing and now - sent >= self.ack_timeout_s:
                del self._inflight[msg_id]  # pending() will offer it again
                self.stats.ack_timeouts += 1
                log.warning("uplink_ack_timeout", site=self.site, msg_id=msg_id, after_s=round(now - sent, 1))
        if not self.session.connected.is_set():
            return
        room = self.max_inflight - len(self._inflight)
        if room <= 0:
            return
        offered = await self.store.pending(room, exclude=list(self._inflight), billing=True)
        # Forget what left the outbox behind our back (the full policy drops the oldest telemetry): keep only
        # what is in flight or offered now (module docstring: oldest first, so nothing still waiting is lost).
        self._sent_before.intersection_update({m.msg_id for m in offered}.union(self._inflight))
        for msg in offered:
            if msg.msg_id in self._inflight:  # acked-and-removed races are harmless; a double send is not useful
                continue
            self._inflight[msg.msg_id] = self._clock()
            self._publishing.add(msg.msg_id)
            task = asyncio.create_task(self._send(msg), name=f"uplink-send-{msg.msg_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, msg: OutboxMessage) -> None:
        if msg.msg_id in self._sent_before:
            self.stats.resent += 1
        self._sent_before.add(msg.msg_id)
        try:
            await self.session.publish(topic(self.site, msg.stream), msg.payload, qos=1)
        except MqttError as err:  # ConnectionLost, or refused by the broker: send it again later
            self.stats.publish_failures += 1
            self._inflight.pop(msg.msg_id, None)
            level = logging.INFO if isinstance(err, ConnectionLost) else logging.ERROR
            log.log(level, "uplink_publish_failed", site=self.site, msg_id=msg.msg_id, seq=msg.seq, error=err)
            return
        finally:
            self._publishing.discard(msg.msg_id)
            self._wake.set()
        self.stats.published += 1

    # ---- from the session ---------------------------------------------------------------------------------

    def _on_ack(self, _topic: str, payload: bytes) -> None:
        try:
            ack = decode_ack(payload)
            if ack.site != self.site:
                raise SchemaError(f"ack for site {ack.site!r} on {self._ack_topic}")
        except SchemaError as err:
            self.stats.bad_acks += 1
            log.warning("uplink_bad_ack", site=self.site, bytes=len(payload), reason=err)
            return
        self.stats.acks_received += 1
        self._acks.extend(ack.msg_ids)
        self._wake.set()

    async def _on_connect(self) -> None:
        # A clean session: acks central sent while we were away will never arrive. Offer those messages again
        # now rather than after ack_timeout_s (central drops the duplicates).
        for msg_id in list(self._inflight):
            if msg_id not in self._publishing:
                del self._inflight[msg_id]
        self._wake.set()
        state = encode_state(self.site, "online", self._wall(), self._version)
        await self.session.publish(topic(self.site, "state"), state, qos=1, retain=True)
        log.info("uplink_online", site=self.site)
