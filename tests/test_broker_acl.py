"""The broker templates of config/mosquitto/ hold on a real Mosquitto: a site can only be itself, only central commands.

The broker runs from the template files themselves: :func:`render` copies ``config/mosquitto/mosquitto.conf``
with the Debian paths and ports it names replaced by this test's (and fails if any of them is no longer in the
template, so the two cannot drift apart); ``config/mosquitto/acl`` is used as it is. Its certificates and
passwords are made by ``scripts/site-credentials``, as an operator would make them.

Clients are paho-mqtt at MQTT v5 over TLS. What Mosquitto 2.0.11 does, as observed here: a publish the ACL
denies is answered with PUBACK reason code 0x87 (Not authorized) and dropped; a subscription to a topic the
client may not read is granted (SUBACK 0x01) but nothing it may not read is delivered on it. So a refusal is
proved by what a subscriber never receives, without waiting for a timeout: after the forbidden message the test
sends a fence, a message the same subscriber is allowed to receive, through the same broker after the forbidden
one was handled (its PUBACK came back). The broker delivers to one client in the order it handled the messages,
so once the fence has arrived the forbidden message would have arrived before it.

Why ``user root`` in the rendered config: Mosquitto started as root drops to user ``mosquitto``, which cannot
traverse pytest's 0700 ``tmp_path`` to read the password files, certificates and keys.
"""

from __future__ import annotations

import asyncio
import queue
import re
import shutil
import signal
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from helpers.aio import arun, running_tasks, until
from helpers.commandunit import Keys, service
from helpers.envelope import Rig
from helpers.net import free_port, wait_port
from helpers.wait import wait_for
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from protocols.mqtt.session import MqttSession, PublishRefused, SessionConfig
from protocols.telemetry.schema import DATA_STREAMS, MAX_PAYLOAD_BYTES, topic, valid_site

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "config" / "mosquitto"
CREDENTIALS = REPO / "scripts" / "site-credentials"
A, B = "siteA", "siteB"
WAIT_S = 5.0  # bound on every wait for the broker's answer; a healthy loopback broker answers in milliseconds
NOT_AUTHORIZED = 0x87  # MQTT v5.0, 2.4 Reason Code: "Not authorized"
PACKET_TOO_LARGE = 0x95  # MQTT v5.0, 3.4.2.1 PUBACK Reason Codes: "Packet too large"
CLOSED = -1  # what Client.publish answers when the broker closed the connection instead of a PUBACK
BAD_LOGIN = 0x86  # MQTT v5.0, 3.2.2.2 CONNACK Reason Code: "Bad User Name or Password"


# ---- the broker from the templates -------------------------------------------------------------------------


@dataclass(slots=True)
class Ports:
    """The broker started from the template: its three listeners' ports, and its process."""

    password: int  # sites, user name and password (8883 in the template)
    cert: int  # sites, client certificates (8884)
    central: int  # central (8885)
    proc: subprocess.Popen | None = None

    def reload(self) -> None:
        """SIGHUP, as ``systemctl reload mosquitto`` sends: Mosquitto reads its password and ACL files again."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)


def render(template: str, conf_dir: Path, data_dir: Path, ports: Ports) -> str:
    """The template with its Debian paths and ports replaced by the test's; each must occur in the template."""
    subs = [
        (r"/etc/mosquitto/gridedge/", f"{conf_dir}/"),
        (r"/var/lib/mosquitto/", f"{data_dir}/"),
        (r"/run/mosquitto/mosquitto\.pid", f"{data_dir}/mosquitto.pid"),
        (r"/var/log/mosquitto/mosquitto\.log", f"{data_dir}/mosquitto.log"),
        (r"(?m)^user mosquitto$", "user root"),  # see the module docstring
        (r"(?m)^listener 8883$", f"listener {ports.password} 127.0.0.1"),
        (r"(?m)^listener 8884$", f"listener {ports.cert} 127.0.0.1"),
        (r"(?m)^listener 8885$", f"listener {ports.central} 127.0.0.1"),
        (r"(?m)^#crlfile ", "crlfile "),  # the certificate listener checks the CA's revocation list
    ]
    for pattern, replacement in subs:
        template, n = re.subn(pattern, replacement, template)
        if n == 0:
            raise AssertionError(f"{pattern!r} is no longer in the broker template: update render()")
    return template


@dataclass
class Creds:
    """What scripts/site-credentials issued: the CA, the broker's certificate, passwords and client certificates."""

    conf_dir: Path
    passwords: dict[str, str] = field(default_factory=dict)

    def cert(self, name: str) -> tuple[str, str]:
        return str(self.conf_dir / f"{name}.crt"), str(self.conf_dir / f"{name}.key")

    @property
    def ca(self) -> str:
        return str(self.conf_dir / "ca.crt")


def _issue(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CREDENTIALS), *args], capture_output=True, text=True, timeout=30)


def _issue_ok(*args: str) -> str:
    proc = _issue(*args)
    assert proc.returncode == 0, f"site-credentials {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def broker_creds(tmp_path_factory: pytest.TempPathFactory) -> Creds:
    for tool in ("mosquitto", "mosquitto_passwd", "openssl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/install-system-packages.sh --test (make test does)")
    d = tmp_path_factory.mktemp("gridedge-broker")
    c = Creds(d)
    _issue_ok("ca", "--out", str(d), "--host", "127.0.0.1")
    for site in (A, B):
        _issue_ok("password", site, "--passwd-file", str(d / "passwd"), "--out", str(d))
        _issue_ok("cert", site, "--ca-cert", str(d / "ca.crt"), "--ca-key", str(d / "ca.key"), "--out", str(d))
        c.passwords[site] = (d / f"{site}.password").read_text().strip()
    _issue_ok("password", "central", "--central", "--passwd-file", str(d / "central.passwd"), "--out", str(d))
    c.passwords["central"] = (d / "central.password").read_text().strip()
    _issue_ok("cert", "central", "--central", "--ca-cert", str(d / "ca.crt"), "--ca-key", str(d / "ca.key"),
              "--out", str(d))  # fmt: skip
    other = d / "other-ca"  # a CA the broker does not trust, and a certificate CN=siteA it signed
    other.mkdir()
    _issue_ok("ca", "--out", str(other), "--host", "127.0.0.1")
    _issue_ok("cert", A, "--ca-cert", str(other / "ca.crt"), "--ca-key", str(other / "ca.key"), "--out", str(other))
    _issue_ok("cert", "siteD", "--ca-cert", str(d / "ca.crt"), "--ca-key", str(d / "ca.key"), "--out", str(d))
    _issue_ok("crl", "--ca-cert", str(d / "ca.crt"), "--ca-key", str(d / "ca.key"), "--crl", str(d / "ca.crl"))
    for name in ("acl", "central.acl"):
        shutil.copy(TEMPLATES / name, d / name)
    return c


@pytest.fixture(scope="module")
def ports(broker_creds: Creds, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    """A Mosquitto started from the rendered template, for the whole module (its tests share it)."""
    data = tmp_path_factory.mktemp("mosquitto-data")
    p = Ports(free_port(), free_port(), free_port())
    conf = data / "mosquitto.conf"
    conf.write_text(render((TEMPLATES / "mosquitto.conf").read_text(), broker_creds.conf_dir, data, p))
    with open(data / "stderr.log", "ab") as err:
        proc = p.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err)
    try:
        for port in (p.password, p.cert, p.central):
            try:
                wait_port(port, WAIT_S)
            except TimeoutError:
                log = (data / "mosquitto.log").read_text() if (data / "mosquitto.log").exists() else ""
                raise AssertionError(
                    f"mosquitto did not open {port}:\n{(data / 'stderr.log').read_text()}{log}"
                ) from None
        yield p
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ---- clients -------------------------------------------------------------------------------------------------


class Client:
    """A paho MQTT v5 client over TLS that records what the broker answers, with bounded waits.

    It never reconnects by itself: a client whose session another login took over stays off.
    """

    def __init__(
        self,
        broker_creds: Creds,
        port: int,
        *,
        user: str | None = None,
        password: str | None = None,
        cert: str | None = None,
        client_id: str = "",
        will: str | None = None,
    ) -> None:
        self.name = client_id or user or cert or "anonymous"
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=False
        )
        certfile, keyfile = broker_creds.cert(cert) if cert else (None, None)
        self.c.tls_set(
            ca_certs=broker_creds.ca, certfile=certfile, keyfile=keyfile, tls_version=ssl.PROTOCOL_TLS_CLIENT
        )
        if user is not None:
            self.c.username_pw_set(user, password)
        if will is not None:
            self.c.will_set(will, b"offline", qos=1, retain=True)
        self.connack: queue.Queue[ReasonCode] = queue.Queue()
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.disconnects: list[ReasonCode] = []
        self._acked = threading.Condition()
        self.c.on_connect = lambda _c, _u, _f, rc, _p: self.connack.put(rc)
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))
        self.c.on_disconnect = self._on_disconnect
        self.port = port

    def _on_disconnect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        with self._acked:
            self.disconnects.append(rc)
            self._acked.notify_all()
        self.connack.put(rc)  # wakes connect() when the broker closes the link before any CONNACK

    def _on_publish(self, _c: object, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        with self._acked:
            self.pubacks[mid] = rc
            self._acked.notify_all()

    def _on_subscribe(self, _c: object, _u: object, mid: int, rcs: list[ReasonCode], _p: object) -> None:
        with self._acked:
            self.subacks[mid] = rcs
            self._acked.notify_all()

    def connect(self) -> ReasonCode:
        """Connect and return the CONNACK's reason code, or the DISCONNECT's if the broker closed the link first
        (a TLS 1.3 server refuses a client certificate after the client's side of the handshake is done)."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        self.c.connect("127.0.0.1", self.port, keepalive=30, clean_start=True, properties=props)
        self.c.loop_start()
        rc = self.connack.get(timeout=WAIT_S)
        if rc.is_failure:
            self.close()
        return rc

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()

    def _wait(self, table: dict, mid: int) -> object:
        with self._acked:
            if not self._acked.wait_for(lambda: mid in table or self.disconnects, WAIT_S):
                raise AssertionError(f"{self.name}: no answer from the broker to message {mid} in {WAIT_S} s")
            return table.get(mid, CLOSED)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """QoS 1; the PUBACK's reason code (0 success, 0x87 not authorized), or CLOSED."""
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        rc = self._wait(self.pubacks, info.mid)
        return rc if rc == CLOSED else rc.value

    def subscribe(self, *topics: str) -> list[int]:
        """QoS 1 subscriptions; the SUBACK's reason codes (1 granted QoS 1, 0x87 not authorized)."""
        _, mid = self.c.subscribe([(t, 1) for t in topics])
        rcs = self._wait(self.subacks, mid)
        assert isinstance(rcs, list)
        return [rc.value for rc in rcs]

    def receive_until(self, fence: bytes) -> list[tuple[str, bytes]]:
        """Every message up to and including the one whose payload is ``fence``."""
        got = []
        while True:
            try:
                topic, payload = self.messages.get(timeout=WAIT_S)
            except queue.Empty:
                raise AssertionError(f"{self.name}: fence {fence!r} not received in {WAIT_S} s; got {got}") from None
            got.append((topic, payload))
            if payload == fence:
                return got


def _tag(what: str) -> bytes:
    return f"{what}-{uuid.uuid4().hex[:12]}".encode()


@pytest.fixture
def clients(broker_creds: Creds, ports: Ports) -> Iterator[dict[str, Client]]:
    """Connected: central (a worker subscribed as central's ingest does), site A and site B by password."""
    made: dict[str, Client] = {}
    try:
        password = broker_creds.passwords["central"]
        worker = f"central-w{uuid.uuid4().hex[:6]}"
        central = made["central"] = Client(
            broker_creds, ports.central, user="central", password=password, client_id=worker
        )
        assert central.connect().value == 0
        subs = [f"$share/central/gridedge/v1/+/{s}" for s in DATA_STREAMS] + ["gridedge/v1/+/state"]
        assert central.subscribe(*subs) == [1] * len(subs)
        for site in (A, B):
            made[site] = Client(broker_creds, ports.password, user=site, password=broker_creds.passwords[site])
            assert made[site].connect().value == 0
            assert made[site].subscribe(f"gridedge/v1/{site}/ack", f"gridedge/v1/{site}/cmd") == [1, 1]
        yield made
    finally:
        for c in made.values():
            c.close()


# ---- what a site and central may do ----------------------------------------------------------------------------


def test_site_publishes_each_of_its_streams_and_central_receives_them(clients: dict[str, Client]) -> None:
    """Every data stream of the schema and the retained state: accepted (PUBACK 0) and delivered to central."""
    a, central = clients[A], clients["central"]
    sent = []
    for stream in (*DATA_STREAMS, "state"):
        payload = _tag(stream)
        assert a.publish(f"gridedge/v1/{A}/{stream}", payload, retain=stream == "state") == 0, stream
        sent.append((f"gridedge/v1/{A}/{stream}", payload))
    got = central.receive_until(sent[-1][1])
    payloads = {p for _, p in sent}
    assert sorted(m for m in got if m[1] in payloads) == sorted(sent)  # (got also has retained states)


def test_central_commands_and_acks_a_site_which_receives_them(clients: dict[str, Client]) -> None:
    central, a = clients["central"], clients[A]
    cmd, ack = _tag("cmd"), _tag("ack")
    assert central.publish(f"gridedge/v1/{A}/cmd", cmd) == 0
    assert central.publish(f"gridedge/v1/{A}/ack", ack) == 0
    assert a.receive_until(ack) == [(f"gridedge/v1/{A}/cmd", cmd), (f"gridedge/v1/{A}/ack", ack)]


# ---- what nobody else may do: the matrix -------------------------------------------------------------------------


@dataclass
class Matrix:
    attempts: int = 0
    refused: int = 0
    leaked: list[str] = field(default_factory=list)
    rows: list[tuple[str, str]] = field(default_factory=list)

    def record(self, what: str, refused: bool, leaked: bool) -> None:
        self.attempts += 1
        self.refused += refused
        if leaked:
            self.leaked.append(what)
        self.rows.append((what, ("refused" if refused else "ACCEPTED") + (", LEAKED" if leaked else "")))


def test_acl_matrix_refuses_every_forbidden_publish_and_read(clients: dict[str, Client]) -> None:
    """Each forbidden attempt is refused by the broker and reaches no one.

    A forbidden publish counts as refused when its PUBACK says 0x87 (Not authorized), and as leaked if the
    subscriber that would get it (central for a stream, the site for a command or an ack) received it before the
    fence that follows it. A forbidden read counts as refused when the reader did not receive the message before
    the fence (Mosquitto 2.0.11 grants the subscription itself), and as leaked otherwise.
    """
    central, a, b = clients["central"], clients[A], clients[B]
    m = Matrix()

    def forbidden_publish(what: str, pub: Client, topic: str, watcher: Client, fence_by: Client, fence_topic: str):
        payload, fence = _tag("forbidden"), _tag("fence")
        rc = pub.publish(topic, payload)
        assert fence_by.publish(fence_topic, fence) == 0
        got = watcher.receive_until(fence)
        m.record(what, rc == NOT_AUTHORIZED, any(p == payload for _, p in got))

    # A writes as B: B's streams and B's state (a false "online"/"offline" for B)
    for stream in ("telemetry", "energy", "results", "state"):
        forbidden_publish(f"{A} publishes {B}/{stream}", a, f"gridedge/v1/{B}/{stream}", central, a,
                          f"gridedge/v1/{A}/telemetry")  # fmt: skip
    # A commands B, commands itself, and forges central's acks (which make an agent delete its outbox rows)
    forbidden_publish(f"{A} publishes {B}/cmd", a, f"gridedge/v1/{B}/cmd", b, central, f"gridedge/v1/{B}/cmd")
    forbidden_publish(f"{A} publishes {A}/cmd", a, f"gridedge/v1/{A}/cmd", a, central, f"gridedge/v1/{A}/cmd")
    forbidden_publish(f"{A} publishes {B}/ack", a, f"gridedge/v1/{B}/ack", b, central, f"gridedge/v1/{B}/ack")
    forbidden_publish(f"{A} publishes {A}/ack", a, f"gridedge/v1/{A}/ack", a, central, f"gridedge/v1/{A}/ack")
    # A publishes outside its streams: a sub-topic of its own cmd, an unknown stream of its own
    forbidden_publish(f"{A} publishes {A}/cmd/x", a, f"gridedge/v1/{A}/cmd/x", central, a, f"gridedge/v1/{A}/events")
    forbidden_publish(f"{A} publishes {A}/other", a, f"gridedge/v1/{A}/other", central, a, f"gridedge/v1/{A}/events")
    # central publishes data as if it were a site
    forbidden_publish(f"central publishes {B}/telemetry", central, f"gridedge/v1/{B}/telemetry", central, b,
                      f"gridedge/v1/{B}/telemetry")  # fmt: skip

    # A reads B's commands, acks and retained state, every site's commands, everything. Mosquitto 2.0.11 grants
    # these subscriptions; what must hold is that nothing of B's is ever delivered on them. B's retained state is
    # published first, so the subscriptions would carry it at once (a retained message is checked on delivery).
    retained = _tag("retained")
    assert b.publish(f"gridedge/v1/{B}/state", retained, retain=True) == 0
    reads = [f"gridedge/v1/{B}/cmd", f"gridedge/v1/{B}/ack", "gridedge/v1/+/cmd", "gridedge/v1/+/state", "#"]
    granted = dict(zip(reads, a.subscribe(*reads), strict=True))
    fence = _tag("fence")
    assert central.publish(f"gridedge/v1/{A}/cmd", fence) == 0
    leaked = any(p == retained for _, p in a.receive_until(fence))
    m.record(f"{A} reads {B}/state (retained)", not leaked, leaked)
    for secret_topic in (f"gridedge/v1/{B}/cmd", f"gridedge/v1/{B}/ack", f"gridedge/v1/{B}/telemetry"):
        secret, fence = _tag("secret"), _tag("fence")
        pub = b if secret_topic.endswith("telemetry") else central
        assert pub.publish(secret_topic, secret) == 0
        watcher = central if pub is b else b
        assert (secret_topic, secret) in watcher.receive_until(secret)  # it was really published and delivered
        assert central.publish(f"gridedge/v1/{A}/cmd", fence) == 0
        got = a.receive_until(fence)
        leaked = any(p == secret for _, p in got)
        m.record(f"{A} reads {secret_topic}", not leaked, leaked)
    # what the broker answered to the subscriptions, for the record (not a refusal on 2.0.11: see the docstring)
    print("\nsubscriptions of site A to others' topics, SUBACK:", {t: hex(rc) for t, rc in granted.items()})

    print("\n" + "\n".join(f"  {what:<48} {verdict}" for what, verdict in m.rows))
    print(f"acl matrix: {m.attempts} attempts, {m.refused} refused, {len(m.leaked)} leaked")
    assert m.leaked == []
    assert m.refused == m.attempts


# ---- who may log in where ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listener", "user", "password_of"),
    [
        ("password", A, "wrong"),  # a site's name with a wrong password
        ("password", None, None),  # anonymous
        ("password", "central", "central"),  # central's account exists only on central's listener
        ("central", A, A),  # a site's valid login is no login on central's listener
        ("central", "central", "wrong"),
        ("central", None, None),
    ],
)
def test_broker_refuses_the_login(
    broker_creds: Creds, ports: Ports, listener: str, user: str | None, password_of: str | None
) -> None:
    """CONNACK 0x86 (bad user name or password) or 0x87 (not authorized): no session, nothing to publish on."""
    password = None if password_of is None else broker_creds.passwords.get(password_of, "not-the-password")
    c = Client(broker_creds, getattr(ports, listener), user=user, password=password)
    rc = c.connect()
    assert rc.value in (BAD_LOGIN, NOT_AUTHORIZED), rc


def test_site_cannot_take_over_another_sites_session_by_its_client_id(
    broker_creds: Creds, ports: Ports, clients: dict[str, Client]
) -> None:
    """On the sites' listeners the client id is the user name: A connecting as client id "siteB" stays A.

    Without ``use_username_as_clientid`` the broker would close B's connection ("already connected") and hand
    A B's session. Here B keeps its connection and still receives its commands; the intruder is just A.
    """
    central, b = clients["central"], clients[B]
    clients[A].close()  # the intruder's login as A would take A's session over, and A's paho would take it back
    intruder = Client(broker_creds, ports.password, user=A, password=broker_creds.passwords[A], client_id=B)
    try:
        assert intruder.connect().value == 0
        fence = _tag("fence")
        assert central.publish(f"gridedge/v1/{B}/cmd", fence) == 0
        assert b.receive_until(fence)[-1] == (f"gridedge/v1/{B}/cmd", fence)
        assert b.disconnects == []
        # and the intruder's rights are A's, not B's
        assert intruder.publish(f"gridedge/v1/{B}/telemetry", b"x") == NOT_AUTHORIZED
    finally:
        intruder.close()


def test_revoked_password_is_refused_and_its_open_session_closed_by_a_reload(
    broker_creds: Creds, ports: Ports, clients: dict[str, Client]
) -> None:
    """``mosquitto_passwd -D`` and a reload (SIGHUP): the site's open session is closed, its next login refused.

    mosquitto.conf(5) of 2.0.11 says a reload does not affect connected clients; what 2.0.11 does is close the
    connection of a client whose user is no longer in the password file. docs/broker.md relies on this.
    """
    d = broker_creds.conf_dir
    site = "siteC"
    _issue_ok("password", site, "--passwd-file", str(d / "passwd"), "--out", str(d), "--force")
    password = (d / f"{site}.password").read_text().strip()
    ports.reload()

    def login() -> int:
        c = Client(broker_creds, ports.password, user=site, password=password)
        rc = c.connect().value
        c.close()
        return rc

    wait_for(lambda: login() == 0, WAIT_S, f"{site}'s login after the reload that added it")
    open_session = Client(broker_creds, ports.password, user=site, password=password)
    try:
        assert open_session.connect().value == 0
        fence = _tag("fence")
        assert open_session.publish(f"gridedge/v1/{site}/telemetry", fence) == 0
        assert clients["central"].receive_until(fence)[-1] == (f"gridedge/v1/{site}/telemetry", fence)
        removed = subprocess.run(["mosquitto_passwd", "-D", str(d / "passwd"), site], capture_output=True, timeout=30)
        assert removed.returncode == 0, removed.stderr
        ports.reload()
        wait_for(lambda: open_session.disconnects, WAIT_S, f"the broker closing {site}'s open session")
        assert login() in (BAD_LOGIN, NOT_AUTHORIZED)
    finally:
        open_session.close()


@pytest.mark.parametrize(("will_site", "published"), [(A, True), (B, False)])
def test_last_will_is_published_only_on_the_sites_own_state(
    broker_creds: Creds, ports: Ports, clients: dict[str, Client], will_site: str, published: bool
) -> None:
    """A's will on its own state is published when its session ends; a will on B's state never is.

    Mosquitto 2.0.11 accepts the CONNECT and checks the will's topic against the ACL when it would publish it.
    The session is ended by a second login of A (the client id is the user name, so it takes the session
    over): by the time that login's CONNACK arrives the broker has published the will or dropped it, and the
    fence the second login sends follows it to central.
    """
    central = clients["central"]
    clients[A].close()  # each login of A below takes over A's session
    will_topic = f"gridedge/v1/{will_site}/state"
    first = Client(broker_creds, ports.password, user=A, password=broker_creds.passwords[A], will=will_topic)
    second = Client(broker_creds, ports.password, user=A, password=broker_creds.passwords[A])
    try:
        assert first.connect().value == 0
        assert second.connect().value == 0
        fence = _tag("fence")
        assert second.publish(f"gridedge/v1/{A}/telemetry", fence) == 0
        got = central.receive_until(fence)
        assert ((will_topic, b"offline") in got) is published, got
    finally:
        first.close()
        second.close()


# ---- client certificates (use_identity_as_username) --------------------------------------------------------------


def test_client_certificate_cn_is_the_site_and_only_that_site(
    broker_creds: Creds, ports: Ports, clients: dict[str, Client]
) -> None:
    """A certificate CN=siteA acts as siteA, whatever user name and password it also sends (here B's).

    It publishes A's telemetry (central receives it) and reads A's commands; B's telemetry is refused, and
    B's commands never reach it.
    """
    central, b = clients["central"], clients[B]
    clients[A].close()  # the certificate's session is A's: it would take the password login's over
    c = Client(broker_creds, ports.cert, cert=A, user=B, password=broker_creds.passwords[B])
    try:
        assert c.connect().value == 0
        assert c.subscribe(f"gridedge/v1/{A}/cmd", f"gridedge/v1/{B}/cmd") == [1, 1]
        own, forged = _tag("own"), _tag("forged")
        assert c.publish(f"gridedge/v1/{A}/telemetry", own) == 0
        assert c.publish(f"gridedge/v1/{B}/telemetry", forged) == NOT_AUTHORIZED
        assert c.publish(f"gridedge/v1/{A}/cmd", forged) == NOT_AUTHORIZED
        fence = _tag("fence")
        assert c.publish(f"gridedge/v1/{A}/events", fence) == 0
        got = central.receive_until(fence)
        assert (f"gridedge/v1/{A}/telemetry", own) in got
        assert all(p != forged for _, p in got)
        secret, cmd = _tag("secret"), _tag("cmd")
        assert central.publish(f"gridedge/v1/{B}/cmd", secret) == 0
        assert b.receive_until(secret)[-1] == (f"gridedge/v1/{B}/cmd", secret)
        assert central.publish(f"gridedge/v1/{A}/cmd", cmd) == 0
        assert c.receive_until(cmd) == [(f"gridedge/v1/{A}/cmd", cmd)]
    finally:
        c.close()


def test_client_certificate_cn_central_has_no_central_rights_on_the_sites_listener(
    broker_creds: Creds, ports: Ports, clients: dict[str, Client]
) -> None:
    """Central's grants live in central.acl, which only central's listener reads: CN=central cannot command."""
    b = clients[B]
    c = Client(broker_creds, ports.cert, cert="central", client_id="central-cert")
    try:
        assert c.connect().value == 0
        forged = _tag("forged")
        assert c.publish(f"gridedge/v1/{B}/cmd", forged) == NOT_AUTHORIZED
        fence = _tag("fence")
        assert clients["central"].publish(f"gridedge/v1/{B}/cmd", fence) == 0
        assert b.receive_until(fence) == [(f"gridedge/v1/{B}/cmd", fence)]
    finally:
        c.close()


def test_revoked_certificate_is_refused_after_a_reload_but_an_open_session_stays(
    broker_creds: Creds, ports: Ports, clients: dict[str, Client]
) -> None:
    """``site-credentials crl --revoke`` and a reload: the certificate's next login fails in the TLS handshake.

    A session opened before the reload goes on (Mosquitto checks the list at the handshake only), so
    docs/broker.md revokes a certificate with a restart of the broker, not just a reload.
    """
    d = broker_creds.conf_dir
    site = "siteD"

    def login() -> bool:
        c = Client(broker_creds, ports.cert, cert=site)
        try:
            return c.connect().value == 0
        except (ssl.SSLError, ConnectionError):
            return False
        finally:
            c.close()

    assert login()
    open_session = Client(broker_creds, ports.cert, cert=site)
    try:
        assert open_session.connect().value == 0
        _issue_ok("crl", "--ca-cert", str(d / "ca.crt"), "--ca-key", str(d / "ca.key"), "--crl", str(d / "ca.crl"),
                  "--revoke", str(d / f"{site}.crt"))  # fmt: skip
        ports.reload()
        wait_for(lambda: not login(), WAIT_S, f"{site}'s certificate refused after the reload")
        fence = _tag("fence")
        # A session opened before the reload may go on (Mosquitto 2.0 checks the list at the handshake): what
        # docs/broker.md's restart is for. Seen closed at the reload once on a loaded machine: either way the
        # revoked certificate logs in no more, and a session that goes on still carries its messages.
        rc = open_session.publish(f"gridedge/v1/{site}/telemetry", fence)
        assert rc in (0, CLOSED), rc
        if rc == 0:
            assert clients["central"].receive_until(fence)[-1] == (f"gridedge/v1/{site}/telemetry", fence)
        assert not login()
    finally:
        open_session.close()


@pytest.mark.parametrize("cert", [None, "other-ca/siteA"], ids=["no-certificate", "other-ca"])
def test_certificate_listener_refuses_a_client_without_a_trusted_certificate(
    broker_creds: Creds, ports: Ports, cert: str | None
) -> None:
    """No certificate, or one another CA signed (even with a valid site name and password): no session."""
    c = Client(broker_creds, ports.cert, cert=cert, user=A, password=broker_creds.passwords[A])
    try:
        rc = c.connect()
    except (ssl.SSLError, ConnectionError) as err:  # TLS 1.2: the handshake itself fails
        print(f"\nrefused in the TLS handshake: {err!r}")
    else:
        assert rc.is_failure, rc
        print(f"\nrefused after the TLS handshake: {rc}")
    finally:
        c.close()


# ---- the payload bound -------------------------------------------------------------------------------------------


def test_broker_refuses_a_payload_above_the_schemas_bound(
    broker_creds: Creds, ports: Ports, clients: dict[str, Client]
) -> None:
    """message_size_limit is the schema's MAX_PAYLOAD_BYTES: 4 MiB passes to central, one byte more does not.

    Mosquitto 2.0.11 drops the larger one, sends PUBACK 0x95 (packet too large) and closes the connection
    (the PUBACK may not reach the client first); the fence is sent by A's next login.
    """
    a, central = clients[A], clients["central"]
    largest = b"L" * MAX_PAYLOAD_BYTES
    too_large = b"T" * (MAX_PAYLOAD_BYTES + 1)
    assert a.publish(f"gridedge/v1/{A}/telemetry", largest) == 0
    rc = a.publish(f"gridedge/v1/{A}/telemetry", too_large)
    print(f"\nanswer to a payload of MAX_PAYLOAD_BYTES + 1: {rc:#x}, disconnect: {a.disconnects}")
    assert rc in (PACKET_TOO_LARGE, CLOSED)
    again = Client(broker_creds, ports.password, user=A, password=broker_creds.passwords[A])
    try:
        assert again.connect().value == 0
        fence = _tag("fence")
        assert again.publish(f"gridedge/v1/{A}/telemetry", fence) == 0
        got = central.receive_until(fence)  # with the retained states of earlier tests
        sizes = [len(p) for t, p in got if t == f"gridedge/v1/{A}/telemetry"]
        assert sizes == [MAX_PAYLOAD_BYTES, len(fence)]
    finally:
        again.close()


# ---- the templates against the wire schema (no broker) -------------------------------------------------------------


def _acl_lines(name: str) -> list[str]:
    return [ln.strip() for ln in (TEMPLATES / name).read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def test_sites_acl_grants_exactly_the_contract_of_docs_telemetry() -> None:
    """Write: each data stream of the schema and state; read: ack and cmd; all under the site's own id."""
    own = "gridedge/v1/%u/"
    expected = {f"pattern write {own}{s}" for s in (*DATA_STREAMS, "state")}
    expected |= {f"pattern read {own}ack", f"pattern read {own}cmd"}
    assert set(_acl_lines("acl")) == expected


def test_central_acl_reads_every_stream_and_writes_only_acks_and_commands() -> None:
    expected = ["user central"]
    expected += [f"topic read gridedge/v1/+/{s}" for s in (*DATA_STREAMS, "state")]
    expected += ["topic write gridedge/v1/+/ack", "topic write gridedge/v1/+/cmd"]
    assert _acl_lines("central.acl") == expected


@pytest.mark.parametrize("name", ["siteA", "a+b", "#", "a/b", "central", "-x", "x" * 65, ""])
def test_a_valid_site_id_cannot_widen_an_acl_pattern(name: str) -> None:
    """The schema's site ids never hold '+', '#' or '/', the characters that would change what %u matches."""
    assert not (valid_site(name) and any(ch in name for ch in "+#/"))


# ---- the agent's command service behind the templates' broker ------------------------------------------------


def test_the_agent_behind_the_templates_takes_commands_from_central_only(
    broker_creds: Creds, ports: Ports, tmp_path: Path
) -> None:
    """The agent's own session (TLS, site A's password) and command service on the templates' broker: a signed
    command central publishes is applied; the same signed message relayed by site B's credentials, or by site A's
    own, is refused by the broker (PUBACK 0x87) and never reaches the agent: a stolen site password cannot replay
    central's commands to any site. The agent's message count is the fence: central's next command arrives."""

    def session(port: int, user: str, client_id: str) -> MqttSession:
        return MqttSession(SessionConfig(host="127.0.0.1", port=port, client_id=client_id, username=user,
                                         password=broker_creds.passwords[user], tls=True, ca_file=broker_creds.ca))  # fmt: skip

    async def body() -> dict[str, int]:
        keys = Keys(tmp_path / "keys", site=A)
        async with Rig(tmp_path / "a.db") as rig:
            agent = session(ports.password, A, A)
            svc = service(rig, keys, agent)
            central, site_b = session(ports.central, "central", "central-cli"), session(ports.password, B, B)
            async with running_tasks(agent.run(), svc.run(), central.run(), site_b.run()):
                for s in (agent, central, site_b):
                    await asyncio.wait_for(s.connected.wait(), WAIT_S)
                _, first = keys.command("control.mode", {"mode": "advise"})
                await central.publish(topic(A, "cmd"), first)
                await until(lambda: svc.counts["applied"] == 1, timeout=WAIT_S)
                _, stolen = keys.command("control.mode", {"mode": "monitor"})  # signed by central, never sent by it
                refused = 0
                for who in (site_b, agent):
                    with pytest.raises(PublishRefused, match="Not authorized"):
                        await who.publish(topic(A, "cmd"), stolen)
                    refused += 1
                _, fence = keys.command("control.mode", {"mode": "control"})
                await central.publish(topic(A, "cmd"), fence)
                await until(lambda: svc.counts["applied"] == 2, timeout=WAIT_S)
                assert rig.envelope.mode == "control", "the stolen 'monitor' never ran"
                return {"attempts": refused, "refused": refused, "received": svc.counts["received"]}

    got = arun(body(), timeout=30)
    assert got == {"attempts": 2, "refused": 2, "received": 2}, got
    print(f"\nrelay through the templates' broker: {got['attempts']} attempts, {got['refused']} refused by the broker, "
          f"the agent received only central's {got['received']}")  # fmt: skip
