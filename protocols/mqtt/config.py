"""The broker section both the agent (``[uplink]``) and central (``[broker]``) read: one parser, one type.

A broker section names where the broker listens (a URL under ``broker`` or ``url``, whichever the owner
calls it), how to log in (``username``, ``password`` or ``password_file``), the TLS files (``ca_file``,
``cert_file``, ``key_file``), ``client_id`` and ``keepalive_s``. Each owner adds its own keys (the agent's
``max_inflight``, central's ``backoff_max_s``) and reads them itself; :func:`parse_broker` is told which
they are, so an unknown key is still one issue naming every allowed key.

:meth:`BrokerConfig.session_config` is the one mapping to :class:`protocols.mqtt.session.SessionConfig`.
Every problem is recorded on the caller's :class:`~protocols.configcheck.Checker`, naming the key path, the
value and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from protocols.configcheck import Checker, join_key
from protocols.mqtt.session import SessionConfig

MQTT_PORT: Final = 1883
MQTTS_PORT: Final = 8883
BROKER_URL_ALLOWED: Final = "must be a URL mqtt://host[:port] or mqtts://host[:port]"
BROKER_PORT_ALLOWED: Final = "the port must be 1..65535"
#: The keys every broker section has, besides its URL key.
BROKER_KEYS: Final = frozenset(
    {"username", "password", "password_file", "ca_file", "cert_file", "key_file", "client_id", "keepalive_s",
     "mqtt_version"}
)  # fmt: skip
#: ``mqtt_version``: MQTT 5 by default; "3.1.1" for brokers that speak nothing else (NATS's MQTT listener,
#: RabbitMQ before 3.13: docs/scale.md, "The broker tier").
MQTT_VERSIONS: Final = {"5": 5, "3.1.1": 4}
#: A conservative client id: any broker accepts it, and it can be used in topics, logs and file names.
CLIENT_ID_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CLIENT_ID_ALLOWED: Final = "1-64 characters of letters, digits, '_', '.', '-'"

# What each TLS file must hold, for the "create it" hint when it is missing.
_TLS_FILE_HOLDS: Final = {
    "ca_file": "the PEM certificate of the authority (CA) that signed the broker's certificate",
    "cert_file": "this client's PEM certificate, signed by a CA the broker trusts",
    "key_file": "the PEM private key of cert_file, readable only by this service's user",
}


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where an MQTT broker listens: ``mqtt://host[:port]`` (plain) or ``mqtts://host[:port]`` (TLS)."""

    host: str
    port: int
    tls: bool


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """A validated broker section: where the broker is and how this client logs in."""

    host: str
    port: int = MQTT_PORT
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr, a traceback or a log
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_id: str = ""
    keepalive_s: int = 30
    protocol: int = 5  # the protocol level sent in CONNECT: 5 (MQTT 5) or 4 (MQTT 3.1.1), from mqtt_version

    @property
    def url(self) -> str:
        """``mqtt[s]://host:port``, for operators (no credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def with_url(self, url: BrokerUrl) -> BrokerConfig:
        """The same login at another address (``--broker`` on the command line)."""
        return replace(self, host=url.host, port=url.port, tls=url.tls)

    def session_config(
        self,
        *,
        client_id: str | None = None,
        will_topic: str | None = None,
        will_payload: bytes = b"",
        will_retain: bool = True,
        backoff_max_s: float | None = None,
        protocol: int | None = None,
    ) -> SessionConfig:
        """The session to this broker; the keywords are what the owner adds (its will, its backoff, ...)."""
        extra: dict[str, Any] = {}
        if backoff_max_s is not None:
            extra["backoff_max_s"] = backoff_max_s
        return SessionConfig(
            host=self.host,
            port=self.port,
            client_id=self.client_id if client_id is None else client_id,
            username=self.username,
            password=self.password,
            tls=self.tls,
            ca_file=None if self.ca_file is None else str(self.ca_file),
            cert_file=None if self.cert_file is None else str(self.cert_file),
            key_file=None if self.key_file is None else str(self.key_file),
            keepalive_s=self.keepalive_s,
            will_topic=will_topic,
            will_payload=will_payload,
            will_retain=will_retain,
            protocol=self.protocol if protocol is None else protocol,
            **extra,
        )


def broker_url(c: Checker, key: str, value: str | None) -> BrokerUrl | None:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` (default port 1883 or 8883); None if absent or bad."""
    if value is None:
        return None
    url = urlsplit(value)
    if url.username is not None or url.password is not None:
        # Credentials in a URL end up in logs and process lists; they belong in their own keys.
        c.fail(key, f"{url.scheme}://***@{url.hostname}", "must not carry credentials: use username and password")
        return None
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        c.fail(key, value, BROKER_URL_ALLOWED)
        return None
    if url.path not in ("", "/") or url.query or url.fragment or value.endswith(("?", "#")):
        # An MQTT connection has no path: "mqtt://h/site7" would silently connect to h and drop "/site7".
        c.fail(key, value, BROKER_URL_ALLOWED + ", with no path, query or fragment")
        return None
    tls = url.scheme == "mqtts"
    try:
        port = url.port
    except ValueError:  # not a number, or past 65535
        port = -1
    if port is None:
        port = MQTTS_PORT if tls else MQTT_PORT
    if not 1 <= port <= 65535:  # an explicit :0 too: it would not mean "the default port"
        c.fail(key, value, BROKER_PORT_ALLOWED)
        return None
    return BrokerUrl(host=url.hostname, port=port, tls=tls)


def tls_files(c: Checker, table: Mapping[str, Any], prefix: str) -> dict[str, Path | None]:
    """``ca_file``, ``cert_file`` and ``key_file`` as paths (None when absent), each an existing file.

    A missing file is an issue that says what to put in it: on a new site these files are still to be made.
    A client certificate is only usable with its key: one without the other is an issue under ``cert_file``.
    """
    files: dict[str, Path | None] = {}
    for name in ("ca_file", "cert_file", "key_file"):
        path = c.path(c.get(table, prefix, name, "string", None))
        if path is not None and not path.is_file():
            c.fail(join_key(prefix, name), str(path), f"no such file: create it with {_TLS_FILE_HOLDS[name]}")
        files[name] = path
    if (files["cert_file"] is None) != (files["key_file"] is None):
        cert = str(files["cert_file"])
        c.fail(join_key(prefix, "cert_file"), cert, "a client certificate needs both cert_file and key_file")
    return files


def _password(c: Checker, raw: Mapping[str, Any], prefix: str, username: str | None) -> str | None:
    """``password``, or what ``password_file`` holds, surrounding whitespace stripped (not both)."""
    password = c.get(raw, prefix, "password", "string", None)
    pwfile = c.path(c.get(raw, prefix, "password_file", "string", None))
    if pwfile is None:
        return password
    key = join_key(prefix, "password_file")
    if password is not None:
        c.fail(key, str(pwfile), "give password or password_file, not both")
    try:
        password = pwfile.read_text().strip()
    except FileNotFoundError:
        who = f"user {username!r}" if username else "the username"
        c.fail(key, str(pwfile), f"no such file: create it holding the broker password of {who} on one line, "
               "readable only by this service's user (chmod 600)")  # fmt: skip
    except OSError as err:
        c.fail(key, str(pwfile), f"cannot read it: {err.strerror}")
    else:
        if not password:
            c.fail(key, str(pwfile), "the file is empty: it must hold the password")
    return password


def _security(c: Checker, url_key: str, url: str | None, parsed: BrokerUrl | None, prefix: str,
              username: str | None, password: str | None, files: dict[str, Path | None]) -> None:  # fmt: skip
    """Combinations that would silently weaken the link: a password never sent, TLS files ignored."""
    if password is not None and username is None:
        c.fail(join_key(prefix, "password"), password, "a password needs a username (without one it is never sent)")
    if parsed is None or parsed.tls:  # a bad or absent broker URL has its own issue already
        return
    if files.get("cert_file"):
        c.fail(url_key, url, "a client certificate needs an mqtts:// broker")
    elif files.get("ca_file"):
        c.fail(url_key, url, "ca_file is given: use an mqtts:// broker (with mqtt:// TLS would be off)")


def parse_broker(
    c: Checker,
    raw: Mapping[str, Any],
    prefix: str,
    *,
    url_key: str,
    client_id: str,
    own_keys: Set[str] = frozenset(),
    strict_client_id: bool = False,
) -> BrokerConfig | None:
    """The broker section at ``prefix`` (``uplink``, ``broker``); None after recording its issues on ``c``.

    ``url_key`` is the key holding the broker URL (``broker`` in the agent, ``url`` in central);
    ``client_id`` the default client id; ``own_keys`` the section's other keys, which the owner reads
    (only named here so that an unknown key lists them as allowed). ``strict_client_id`` holds the client id
    to :data:`CLIENT_ID_ALLOWED`.
    """
    start = len(c.issues)
    c.unknown(raw, prefix, {url_key, *BROKER_KEYS, *own_keys})
    url_path = join_key(prefix, url_key)
    url = c.get(raw, prefix, url_key, "string")
    parsed = broker_url(c, url_path, url)
    username = c.get(raw, prefix, "username", "string", None)
    password = _password(c, raw, prefix, username)
    files = tls_files(c, raw, prefix)
    _security(c, url_path, url, parsed, prefix, username, password, files)
    cid = c.get(raw, prefix, "client_id", "string", client_id)
    if strict_client_id and cid is not None and not CLIENT_ID_RE.match(cid):
        c.fail(join_key(prefix, "client_id"), cid, CLIENT_ID_ALLOWED)
    keepalive = c.get(raw, prefix, "keepalive_s", "integer", 30, lo=5, hi=3600)
    version = raw.get("mqtt_version", "5")
    if type(version) is int:  # mqtt_version = 5 reads as well as "5"
        version = str(version)
    if version not in MQTT_VERSIONS:
        c.fail(join_key(prefix, "mqtt_version"), raw.get("mqtt_version"), 'one of "5" (the default) or "3.1.1"')
    if len(c.issues) > start or parsed is None:
        return None
    return BrokerConfig(host=parsed.host, port=parsed.port, tls=parsed.tls, username=username, password=password,
                        client_id=cid, keepalive_s=keepalive, protocol=MQTT_VERSIONS[str(version)], **files)  # fmt: skip
