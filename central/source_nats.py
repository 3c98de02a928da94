"""Central's ingest from a NATS JetStream cluster: the broker tier past one machine (docs/scale.md).

The agents stay plain MQTT clients: they connect to any node's MQTT listener and publish on
``gridedge/v1/<site>/<stream>``; NATS turns each MQTT topic into the subject ``gridedge.v1.<site>.<stream>``
(topic levels become subject tokens). A JetStream stream (work-queue retention, replicated on ``replicas``
nodes) captures the data streams' subjects, so a message the broker accepted waits on disk in the cluster until
a worker has stored it.

Workers share the load through ONE durable pull consumer: every worker of the group binds the same consumer and
fetches from it, and JetStream hands each message to one of them. A message is acknowledged to JetStream only
after the store's commit (and after the agent's ack was sent); a worker that dies first leaves it unacknowledged,
and JetStream redelivers it to a live worker after ``ack_wait_s``. The store's msg_id key makes a second sight
harmless: it stores nothing and is acked again (central/store.py).

The ack to the agent is published on the subject that NATS maps to the agent's MQTT ack topic
(``gridedge.v1.<site>.ack``); NATS delivers it to the agent's MQTT subscription. States are read with a plain
subscription by every worker, as on MQTT (small and idempotent); retained states are not replayed at start.

This module is the NATS side of :class:`central.ingest.CentralWorker`'s source seam: :class:`NatsSource` offers
what the worker uses of an MQTT session (``run``, ``connected``, ``stats.connects``, ``publish``) and one thing
more, ``settle``: what to tell JetStream about a message the worker is done with. nats-py is imported only when
a source runs, so a central on MQTT never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from protocols.configcheck import MISSING, Checker, join_key
from protocols.eventlog import EventLog
from protocols.mqtt.config import CLIENT_ID_ALLOWED, CLIENT_ID_RE, BrokerUrl, _password, broker_url, tls_files
from protocols.mqtt.session import ConnectionLost
from protocols.telemetry.schema import DATA_STREAMS, TOPIC_ROOT

log = EventLog("central.ingest")

NATS_PORT: Final = 4222
NATS_URL_ALLOWED: Final = "a list of NATS URLs nats://host[:port] or tls://host[:port], one per node"
#: The keys of ``[broker]`` when ``kind = "nats"``.
NATS_KEYS: Final = frozenset(
    {"kind", "servers", "username", "password", "password_file", "ca_file", "cert_file", "key_file", "client_id",
     "backoff_max_s", "stream", "replicas", "ack_wait_s", "max_age_s", "fetch_batch", "mqtt_url"}
)  # fmt: skip
KINDS: Final = ("mqtt", "nats")
_NAME_ALLOWED: Final = "1-64 characters of letters, digits, '_', '-' (a JetStream name: no '.', '*', '>', spaces)"
# What a JetStream stream or consumer name may hold (nats-server: no '.', '*', '>', whitespace, path separators).
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True, slots=True)
class NatsConfig:
    """``[broker]`` with ``kind = "nats"``: the cluster's nodes, the login, and the stream and consumer."""

    servers: tuple[str, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_id: str = "central"  # each worker's connection is named "<client_id>-<worker>"
    stream: str = "GRIDEDGE"
    consumer: str = "central"  # [ingest] group: the durable consumer every worker of the group binds
    replicas: int = 3  # copies of each message in the cluster (1, 3 or 5 nodes); 3 survives one node lost
    ack_wait_s: float = 30.0  # an unacknowledged message goes to another worker after this long
    max_age_s: float = 7 * 86_400.0  # a message no worker stored in a week is dropped (its agent still has it)
    fetch_batch: int = 256  # messages asked for in one pull
    backoff_max_s: float = 5.0
    # a node's MQTT listener (or the name in front of them): where central's MQTT clients - `central command`,
    # dispatch, the forecasts' publisher - send commands and read results, over MQTT 3.1.1
    mqtt_url: BrokerUrl | None = None

    @property
    def tls(self) -> bool:
        return any(s.startswith("tls://") for s in self.servers) or self.ca_file is not None


def subject_of(topic: str) -> str:
    """MQTT topic -> NATS subject as NATS's MQTT listener maps it: levels become tokens, a '.' inside a level
    becomes '//' (nats-server 2.10 and later; 2.9 refuses a topic with a '.')."""
    return ".".join(level.replace(".", "//") for level in topic.split("/"))


def topic_of(subject: str) -> str:
    """NATS subject -> the MQTT topic it was published on (the inverse of :func:`subject_of`)."""
    return "/".join(token.replace("//", ".") for token in subject.split("."))


def stream_subjects() -> list[str]:
    """The subjects the JetStream stream captures: every data stream of every site (never ack, cmd, state)."""
    return [subject_of(f"{TOPIC_ROOT}/*/{s}") for s in DATA_STREAMS]


STATE_SUBJECT: Final = subject_of(f"{TOPIC_ROOT}/*/state")


def parse_nats(c: Checker, raw: Mapping[str, Any], prefix: str, group: str | None) -> NatsConfig | None:
    """``[broker]`` with ``kind = "nats"``; None after recording its issues on ``c``."""
    start = len(c.issues)
    c.unknown(raw, prefix, set(NATS_KEYS))
    servers = _servers(c, raw, prefix)
    username = c.get(raw, prefix, "username", "string", None)
    password = _password(c, raw, prefix, username)
    if password is not None and username is None:
        c.fail(join_key(prefix, "password"), password, "a password needs a username (without one it is never sent)")
    files = tls_files(c, raw, prefix)
    if files.get("cert_file") and servers and not any(s.startswith("tls://") for s in servers):
        c.fail(join_key(prefix, "servers"), list(servers), "a client certificate needs tls:// servers")
    cid = c.get(raw, prefix, "client_id", "string", "central")
    if cid is not None and not CLIENT_ID_RE.match(cid):
        c.fail(join_key(prefix, "client_id"), cid, CLIENT_ID_ALLOWED)
    stream = c.get(raw, prefix, "stream", "string", "GRIDEDGE")
    if stream is not None and not _valid_name(stream):
        c.fail(join_key(prefix, "stream"), stream, _NAME_ALLOWED)
    if group is not None and not _valid_name(group):
        c.fail("ingest.group", group, f'with kind = "nats" it names the durable consumer: {_NAME_ALLOWED}')
    replicas = c.get(raw, prefix, "replicas", "integer", 3, choices=(1, 3, 5))
    ack_wait = c.get(raw, prefix, "ack_wait_s", "number", 30.0, lo=1, hi=3600)
    max_age = c.get(raw, prefix, "max_age_s", "number", 7 * 86_400.0, lo=60, hi=365 * 86_400)
    fetch = c.get(raw, prefix, "fetch_batch", "integer", 256, lo=1, hi=10_000)
    backoff = c.get(raw, prefix, "backoff_max_s", "number", 5.0, lo=0.2, hi=600)
    mqtt_url = broker_url(c, join_key(prefix, "mqtt_url"), c.get(raw, prefix, "mqtt_url", "string", None))
    if len(c.issues) > start or not servers:
        return None
    return NatsConfig(servers=servers, username=username, password=password, client_id=cid, stream=stream,
                      consumer=group or "central", replicas=replicas, ack_wait_s=float(ack_wait),
                      max_age_s=float(max_age), fetch_batch=fetch, backoff_max_s=float(backoff), mqtt_url=mqtt_url,
                      **files)  # fmt: skip


def _valid_name(name: str) -> bool:
    return 1 <= len(name) <= 64 and set(name) <= _NAME_CHARS


def _servers(c: Checker, raw: Mapping[str, Any], prefix: str) -> tuple[str, ...]:
    key = join_key(prefix, "servers")
    if "servers" not in raw:
        c.fail(key, MISSING, f"is required: {NATS_URL_ALLOWED}")
        return ()
    value = raw["servers"]
    if not isinstance(value, list) or not value:
        c.fail(key, value, NATS_URL_ALLOWED)
        return ()
    out: list[str] = []
    for i, url in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(url, str):
            c.fail(where, url, NATS_URL_ALLOWED)
            continue
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            c.fail(
                where, f"{parts.scheme}://***@{parts.hostname}", "must not carry credentials: use username and password"
            )
            continue
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("nats", "tls") or not parts.hostname or parts.path not in ("", "/") or parts.query:
            c.fail(where, url, NATS_URL_ALLOWED)
        elif port is not None and not 1 <= port <= 65535:
            c.fail(where, url, "the port must be 1..65535")
        else:
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            out.append(f"{parts.scheme}://{host}:{port or NATS_PORT}")
    if len({u.split("://", 1)[0] for u in out}) > 1:
        c.fail(key, list(value), "all nats:// or all tls://: one cluster, one security")
        return ()
    return tuple(out) if len(out) == len(value) else ()


@dataclass(slots=True)
class NatsStats:
    connects: int = 0  # sessions up: connected, stream and consumer bound (a message published now reaches us)
    disconnects: int = 0
    fetch_errors: int = 0  # pulls that failed (a node lost, a leader being elected): retried
    redelivered: int = 0  # messages JetStream delivered again (another worker died, or ack_wait passed)
    js_acked: int = 0
    js_refused: int = 0  # messages terminated: invalid or refused by the store (their agent resends them)
    js_later: int = 0  # messages handed back for later (a full queue, a store failure)


DataHandler = Callable[[str, bytes, Any], None]
StateHandler = Callable[[str, bytes], None]


class NatsSource:
    """One worker's connection to the cluster: pulls from the shared durable consumer, publishes acks."""

    def __init__(self, config: NatsConfig, worker: str, on_data: DataHandler, on_state: StateHandler,
                 room: Callable[[], int], *, rng: random.Random | None = None) -> None:  # fmt: skip
        self.config = config
        self.name = f"{config.client_id}-{worker}"
        self.stats = NatsStats()
        self.connected = asyncio.Event()
        self._on_data = on_data
        self._on_state = on_state
        self._room = room
        self._rng = rng or random.Random()
        self._nc: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- what the worker uses ------------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish on the subject of an MQTT topic (an agent's ack). ``qos`` is for the MQTT seam: NATS delivers
        it to the agent's MQTT subscription as it is; a lost one makes the agent resend, nothing else."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise ConnectionLost(f"not connected to the NATS cluster ({self.name})")
        try:
            await nc.publish(subject_of(topic), payload)
        except Exception as err:  # nats-py raises its own errors for a closed or stale connection
            raise ConnectionLost(f"NATS publish failed: {err!r}") from err

    def settle(self, receipts: Collection[Any], verdict: str) -> None:
        """Tell JetStream what became of messages: ``ack`` (stored, or a duplicate of a stored one), ``refuse``
        (invalid or refused: never again from the stream, its agent resends it) or ``later`` (redeliver)."""
        if receipts:
            task = asyncio.get_running_loop().create_task(self._settle(list(receipts), verdict))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _settle(self, msgs: list[Any], verdict: str) -> None:
        for m in msgs:
            try:
                if verdict == "ack":
                    await m.ack()
                    self.stats.js_acked += 1
                elif verdict == "refuse":
                    await m.term()
                    self.stats.js_refused += 1
                else:
                    await m.nak(delay=1.0)
                    self.stats.js_later += 1
            except Exception as err:  # a lost connection: the message is redelivered after ack_wait_s, stored once
                log.warning("central_nats_settle_failed", worker=self.name, verdict=verdict, error=repr(err))
                return

    # ---- the connection -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect (retrying with backoff), make sure the stream and consumer exist, then pull until cancelled."""
        import nats

        attempt = 0
        while True:
            try:
                nc = await nats.connect(**self._connect_options())
                break
            except (TimeoutError, OSError, nats.errors.Error) as err:
                attempt += 1
                pause = self._rng.uniform(0.2, min(self.config.backoff_max_s, 0.2 * 2**attempt))
                log.warning("central_nats_connect_failed", worker=self.name, servers=",".join(self.config.servers),
                            error=repr(err), retry_in_s=round(pause, 2))  # fmt: skip
                await asyncio.sleep(pause)
        self._nc = nc
        try:
            await self._pull_forever(nc)
        finally:
            self.connected.clear()
            self._nc = None
            with contextlib.suppress(Exception):
                await asyncio.shield(nc.close())

    def _connect_options(self) -> dict[str, Any]:
        cfg = self.config

        async def on_error(err: Exception) -> None:
            log.warning("central_nats_error", worker=self.name, error=repr(err))

        async def on_disconnected() -> None:
            if self.connected.is_set():
                self.stats.disconnects += 1
            log.warning("central_nats_disconnected", worker=self.name)

        async def on_reconnected() -> None:
            url = self._nc.connected_url if self._nc is not None else None
            log.info("central_nats_reconnected", worker=self.name, server=url.netloc if url else "?")

        opts: dict[str, Any] = {
            "servers": list(cfg.servers),
            "name": self.name,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "connect_timeout": 5,
            "error_cb": on_error,
            "disconnected_cb": on_disconnected,
            "reconnected_cb": on_reconnected,
        }
        if cfg.username is not None:
            opts["user"], opts["password"] = cfg.username, cfg.password
        if cfg.tls:
            ctx = ssl.create_default_context(cafile=None if cfg.ca_file is None else str(cfg.ca_file))
            if cfg.cert_file is not None and cfg.key_file is not None:
                ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
            opts["tls"] = ctx
        return opts

    async def _pull_forever(self, nc: Any) -> None:
        import nats
        from nats.js.errors import Error as JsError

        js = nc.jetstream(timeout=5)
        state_sub = await nc.subscribe(STATE_SUBJECT, cb=self._state_msg)
        psub = None
        while psub is None:
            try:
                await self._ensure_stream(js)
                psub = await js.pull_subscribe_bind(durable=self.config.consumer, stream=self.config.stream)
            except (TimeoutError, nats.errors.Error, JsError) as err:  # no JetStream leader yet
                self.stats.fetch_errors += 1
                log.warning("central_nats_fetch_failed", worker=self.name, error=repr(err))
                await asyncio.sleep(0.5)
        self.stats.connects += 1
        self.connected.set()
        log.info("central_nats_bound", worker=self.name, stream=self.config.stream, consumer=self.config.consumer,
                 server=nc.connected_url.netloc if nc.connected_url else "?")  # fmt: skip
        try:
            while True:
                room = self._room()
                if room <= 0:  # the queue to the store is full: leave the messages in the stream
                    await asyncio.sleep(0.05)
                    continue
                try:
                    msgs = await psub.fetch(min(room, self.config.fetch_batch), timeout=1.0)
                except TimeoutError:  # nothing to do (nats.errors.TimeoutError is one too)
                    continue
                except (nats.errors.Error, JsError) as err:  # a node lost, a leader being elected: pull again
                    self.stats.fetch_errors += 1
                    log.warning("central_nats_fetch_failed", worker=self.name, error=repr(err))
                    await asyncio.sleep(0.2)
                    continue
                for m in msgs:
                    if m.metadata.num_delivered > 1:
                        self.stats.redelivered += 1
                    self._on_data(topic_of(m.subject), m.data, m)
        finally:
            with contextlib.suppress(Exception):
                await state_sub.unsubscribe()

    async def _state_msg(self, msg: Any) -> None:
        self._on_state(topic_of(msg.subject), msg.data)

    async def _ensure_stream(self, js: Any) -> None:
        """Create the stream and the durable consumer when they are missing. Creating what exists with the same
        settings is a no-op, so workers starting together do not race; an existing stream is used as it is."""
        from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        cfg = self.config
        try:
            await js.stream_info(cfg.stream)
        except NotFoundError:
            await js.add_stream(StreamConfig(name=cfg.stream, subjects=stream_subjects(),
                                             retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
                                             num_replicas=cfg.replicas, max_age=cfg.max_age_s))  # fmt: skip
            log.info("central_nats_stream_created", worker=self.name, stream=cfg.stream, replicas=cfg.replicas)
        await js.add_consumer(cfg.stream, ConsumerConfig(durable_name=cfg.consumer, ack_policy=AckPolicy.EXPLICIT,
                                                         ack_wait=cfg.ack_wait_s, max_deliver=-1,
                                                         max_ack_pending=20_000))  # fmt: skip
