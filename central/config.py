"""Central's TOML file -> typed, validated configuration.

Validated once, at start; every problem is collected and reported with its key, the bad value and what is
allowed. Relative paths resolve against the configuration file's folder (as the agent's do).

```toml
[broker]
url = "mqtt://127.0.0.1:1883"   # mqtts:// for TLS
client_id = "central"           # each worker appends "-<worker name>"
# username, password (or password_file), ca_file, cert_file, key_file, keepalive_s: protocols/mqtt/config.py
backoff_max_s = 5.0             # cap of the reconnect backoff (full jitter, from 0.2 s)
# kind = "nats"                 # instead of url: a NATS JetStream cluster (central/source_nats.py, docs/scale.md)
# servers = ["nats://10.0.0.11:4222", "nats://10.0.0.12:4222", "nats://10.0.0.13:4222"]
# stream = "GRIDEDGE"; replicas = 3; ack_wait_s = 30; max_age_s = 604800; fetch_batch = 256

[store]
db = "../run/central.db"       # SQLite, the embedded default; or, instead of db:
# url = "postgresql://central@db.example:5432/gridedge"   # PostgreSQL (central/store_pg.py, docs/scale.md)

[ingest]
group = "central"               # MQTT 5 shared subscription group (NATS: the durable consumer): workers share the load
status_file = "../run/central-status.json"
ack_interval_s = 0.05           # acks are batched per site over this interval
max_queue = 20000               # messages waiting to be stored; past it new ones are refused (not acked)

[commands]                      # optional: what `central command` signs with, and the sites' keys (docs/commands.md)
result_timeout_s = 30           # how long `central command` waits for the site's signed result
valid_s = 120                   # a command expires this long after it is issued (not_before = issued_at - 5 s)
[[commands.keys]]               # central's signing keys; the first of a role is that role's default
key_id = "ops-1"
role = "operator"               # operator | dispatch
key_file = "keys/ops-1.key"     # PEM PKCS #8 Ed25519 (`gridedge keys generate`)
[commands.sites.site-a]         # each site's agent public key, to verify the results it signs
agent_key = "base64..."         # or agent_key_file = "keys/site-a-agent.pub"

[metrics]                       # optional: Prometheus metrics at http://<listen>/metrics (docs/metrics.md)
listen = "127.0.0.1:9109"

[settlement]                    # optional: VEE, feeders to reconcile, NMIs (central/settlement/config.py)
[dispatch]                      # optional: schedules from forecasts and the network model (central/dispatch/config.py)
[forecast]                      # optional: feeders' load and PV forecasts (central/forecast/config.py)
```

Keys are held with ``repr=False``: no repr, log line or status shows them (a public key is no secret, but one
rule for all keys is easier to keep).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from central.dispatch.config import DispatchConfig, parse_dispatch
from central.forecast.config import ForecastConfig, parse_forecast
from central.settlement.config import SettlementConfig, parse_settlement
from central.source_nats import KINDS, NatsConfig, parse_nats
from protocols.configcheck import Checker, ConfigError, ConfigIssue
from protocols.metrics import MetricsConfig, parse_metrics
from protocols.mqtt.config import BrokerConfig, parse_broker
from protocols.telemetry.commands import ROLES, KeyFileError, load_private_key, parse_public_key, valid_key_id
from protocols.telemetry.schema import valid_site

_GROUP_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

__all__ = [
    "CentralConfig",
    "CentralConfigError",
    "CommandsConfig",
    "ConfigIssue",
    "SigningKey",
    "load_central_config",
    "parse_central_config",
]
NOT_BEFORE_S = 5.0  # a command's not_before is this long before issued_at: the site's clock may run behind ours


class CentralConfigError(ConfigError):
    """Central's configuration cannot be used; ``issues`` lists every problem found."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One of central's signing keys: its id, its role and the key itself (never shown)."""

    key_id: str
    role: str
    key_file: Path
    key: Ed25519PrivateKey = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class CommandsConfig:
    result_timeout_s: float = 30.0
    valid_s: float = 120.0
    keys: tuple[SigningKey, ...] = ()
    agent_keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict, repr=False, compare=False)

    def key(self, key_id: str | None = None) -> SigningKey | None:
        """The key named ``key_id``; without one, the operator's default (its first key), else the first key."""
        if key_id is not None:
            return next((k for k in self.keys if k.key_id == key_id), None)
        operator = [k for k in self.keys if k.role == "operator"]
        return (operator or list(self.keys) or [None])[0]


@dataclass(frozen=True, slots=True)
class CentralConfig:
    broker: BrokerConfig  # its client_id: each worker appends "-<worker name>"
    db_path: Path | None  # the SQLite file; None when store_url names a PostgreSQL database
    backoff_max_s: float = 5.0  # central is one service, not thousands of agents: come back quickly
    group: str = "central"
    status_file: Path | None = None
    ack_interval_s: float = 0.05
    max_queue: int = 20000
    source: Path | None = None
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    settlement: SettlementConfig = field(default_factory=SettlementConfig)  # docs/settlement.md
    metrics: MetricsConfig | None = None  # [metrics] (docs/metrics.md); None: no Prometheus endpoint
    dispatch: DispatchConfig | None = None  # [dispatch] (docs/dispatch.md); None: no dispatch configured
    store_url: str | None = field(default=None, repr=False)  # postgresql://...: may carry a password
    forecast: ForecastConfig = field(default_factory=ForecastConfig)  # [forecast] (docs/forecast.md)
    nats: NatsConfig | None = None  # [broker] kind = "nats": ingest from a NATS JetStream cluster instead of MQTT

    @property
    def store_target(self) -> str | Path:
        """What central.store.open_store opens: the PostgreSQL URL, else the SQLite file."""
        if self.store_url is not None:
            return self.store_url
        assert self.db_path is not None
        return self.db_path

    @property
    def store_name(self) -> str:
        """The store as logs and errors name it (a URL without its password)."""
        return _shown_url(self.store_url) if self.store_url is not None else str(self.db_path)


def parse_central_config(raw: Mapping[str, Any], source: Path) -> CentralConfig:
    """Validate an already-parsed TOML document; relative paths resolve against ``source``'s folder."""
    c = Checker(source.parent)
    c.unknown(raw, "", {"broker", "store", "ingest", "commands", "settlement", "metrics", "dispatch", "forecast"})
    broker_raw, store, ingest = (c.get(raw, "", name, "table", {}) or {} for name in ("broker", "store", "ingest"))
    c.unknown(store, "store", {"db", "url"})
    c.unknown(ingest, "ingest", {"group", "status_file", "ack_interval_s", "max_queue"})

    kind = c.get(broker_raw, "broker", "kind", "string", "mqtt", choices=KINDS)
    nats = None
    if kind == "nats":  # a NATS JetStream cluster (central/source_nats.py, docs/scale.md)
        group_raw = ingest.get("group", "central")
        nats = parse_nats(c, broker_raw, "broker", group_raw if isinstance(group_raw, str) else None)
        broker = _nats_as_broker(nats)
        backoff_max = nats.backoff_max_s if nats is not None else 5.0
    else:
        broker = parse_broker(c, broker_raw, "broker", url_key="url", client_id="central",
                              own_keys={"backoff_max_s", "kind"}, strict_client_id=True)  # fmt: skip
        backoff_max = c.get(broker_raw, "broker", "backoff_max_s", "number", 5.0, lo=0.2, hi=600)
        if broker is not None and broker.protocol != 5:
            c.fail("broker.mqtt_version", broker_raw.get("mqtt_version"),
                   'central\'s ingest needs "5" (MQTT 5 shared subscriptions); for a NATS cluster use kind = "nats"')  # fmt: skip

    db, url = _parse_store(c, store)

    group = c.get(ingest, "ingest", "group", "string", "central")
    if group and not _GROUP_RE.match(group):
        c.fail("ingest.group", group, "1-64 characters of letters, digits, '_', '.', '-' (no '/', '+', '#')")
    status = c.path(c.get(ingest, "ingest", "status_file", "string", None))
    interval = c.get(ingest, "ingest", "ack_interval_s", "number", 0.05, lo=0.001, hi=10)
    max_queue = c.get(ingest, "ingest", "max_queue", "integer", 20000, lo=1, hi=10_000_000)
    commands = _parse_commands(c, c.get(raw, "", "commands", "table", {}) or {})
    settlement = parse_settlement(c, c.get(raw, "", "settlement", "table", {}) or {})
    metrics_raw = c.get(raw, "", "metrics", "table", None)
    metrics = parse_metrics(c, metrics_raw) if metrics_raw is not None else None
    dispatch_raw = c.get(raw, "", "dispatch", "table", None)
    dispatch = parse_dispatch(c, dispatch_raw) if dispatch_raw is not None else None
    forecast = parse_forecast(c, c.get(raw, "", "forecast", "table", {}) or {})
    if c.issues:
        raise CentralConfigError(str(source), c.issues)
    assert (db is not None or url is not None) and broker is not None
    return CentralConfig(broker=broker, backoff_max_s=float(backoff_max), db_path=db, group=group, status_file=status,
                         ack_interval_s=float(interval), max_queue=max_queue, source=source,
                         commands=commands, settlement=settlement, metrics=metrics, store_url=url,
                         dispatch=dispatch, forecast=forecast, nats=nats)  # fmt: skip


def _nats_as_broker(nats: NatsConfig | None) -> BrokerConfig | None:
    """Central's MQTT clients on the NATS tier (commands, dispatch, forecasts): ``mqtt_url``, a node's MQTT listener,
    with NATS's login and MQTT 3.1.1 (nats-server speaks nothing newer). Without ``mqtt_url``, the first node, which
    logs and status name as central's broker; such a client then cannot connect (docs/scale.md)."""
    if nats is None:
        return None
    if nats.mqtt_url is not None:
        host, port, tls = nats.mqtt_url.host, nats.mqtt_url.port, nats.mqtt_url.tls
    else:
        url = urlsplit(nats.servers[0])
        host, port, tls = url.hostname or "", url.port or 4222, nats.tls
    return BrokerConfig(host=host, port=port, tls=tls, username=nats.username, password=nats.password,
                        ca_file=nats.ca_file, cert_file=nats.cert_file, key_file=nats.key_file,
                        client_id=nats.client_id, protocol=4)  # fmt: skip


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def _shown_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``."""
    return re.sub(r"^(postgres(?:ql)?://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _parse_store(c: Checker, store: Mapping[str, Any]) -> tuple[Path | None, str | None]:
    """``[store]``: ``db`` (a SQLite file, the default) or ``url`` (PostgreSQL), exactly one of them."""
    if "url" not in store:
        return c.path(c.get(store, "store", "db", "string")), None
    if "db" in store:
        c.fail("store", "(both db and url)", "one of db (a SQLite file) or url (postgresql://...), not both")
        return None, None
    url = store["url"]
    if not isinstance(url, str) or not url.startswith(POSTGRES_SCHEMES):
        shown = _shown_url(url) if isinstance(url, str) else url
        c.fail("store.url", shown, "a PostgreSQL URL: postgresql://user@host:port/database (docs/scale.md)")
        return None, None
    from psycopg.conninfo import conninfo_to_dict  # psycopg is loaded only by a central that uses PostgreSQL

    try:
        info = conninfo_to_dict(url)
    except Exception as err:  # psycopg.ProgrammingError: libpq's own words on what is wrong
        c.fail("store.url", _shown_url(url), f"a PostgreSQL URL: postgresql://user@host:port/database ({err})")
        return None, None
    port = info.get("port")
    if port is not None and not all(p.isdigit() and 1 <= int(p) <= 65535 for p in str(port).split(",")):
        c.fail("store.url", _shown_url(url), f"a PostgreSQL URL: port {port!r} must be in 1..65535")
        return None, None
    if not info.get("dbname"):
        c.fail("store.url", _shown_url(url), "must name the database: postgresql://user@host:port/database")
        return None, None
    return None, url


def _parse_commands(c: Checker, raw: Mapping[str, Any]) -> CommandsConfig:
    """``[commands]``: timeouts, ``[[commands.keys]]`` (loaded now, so a bad key file fails at start, by its key
    path) and ``[commands.sites.<site>]`` agent keys."""
    c.unknown(raw, "commands", {"result_timeout_s", "valid_s", "keys", "sites"})
    timeout = c.get(raw, "commands", "result_timeout_s", "number", 30.0, lo=0.1, hi=3600)
    valid = c.get(raw, "commands", "valid_s", "number", 120.0, lo=10, hi=86_400)
    keys: list[SigningKey] = []
    seen: set[str] = set()
    for where, t in c.tables(raw, "keys", "commands"):
        c.unknown(t, where, {"key_id", "role", "key_file"})
        key_id = c.get(t, where, "key_id", "string")
        role = c.get(t, where, "role", "string", choices=ROLES)
        key_file = c.get(t, where, "key_file", "string")
        if key_id is not None and not valid_key_id(key_id):
            c.fail(
                f"{where}.key_id", key_id, "1-64 letters, digits, '_', '.', ':', '-', starting with a letter or digit"
            )
            key_id = None
        elif key_id in seen:
            c.fail(f"{where}.key_id", key_id, "must be unique: another [[commands.keys]] has this key_id")
            key_id = None
        if key_id is not None:
            seen.add(key_id)
        path = c.path(key_file)
        key = None
        if path is not None:
            try:
                key = load_private_key(path)
            except KeyFileError as err:
                c.fail(f"{where}.key_file", key_file, f"an Ed25519 private key in PEM (gridedge keys generate): {err}")
        if key_id is not None and role is not None and path is not None and key is not None:
            keys.append(SigningKey(key_id, role, path, key))
    sites = c.get(raw, "commands", "sites", "table", {}) or {}
    agent_keys: dict[str, Ed25519PublicKey] = {}
    for site, t in sites.items():
        where = f"commands.sites.{site}"
        if not valid_site(site):
            c.fail(where, site, "a site id: 1-64 letters, digits, '_', '.', '-'")
            continue
        if not isinstance(t, Mapping):
            c.fail(where, t, "must be a table with agent_key or agent_key_file")
            continue
        c.unknown(t, where, {"agent_key", "agent_key_file"})
        if ("agent_key" in t) == ("agent_key_file" in t):
            c.fail(where, "(both)" if t else "(neither)", "one of agent_key (base64 text) or agent_key_file")
            continue
        if "agent_key" in t:
            name, text = "agent_key", c.get(t, where, "agent_key", "string")
        else:
            name, text = "agent_key_file", None
            value = c.get(t, where, "agent_key_file", "string")
            path = c.path(value)
            if path is not None:
                try:
                    text = path.read_text()
                except (OSError, UnicodeDecodeError) as err:
                    c.fail(f"{where}.agent_key_file", value, f"a readable public key file: {err}")
        if text is None:
            continue
        try:
            agent_keys[site] = parse_public_key(text)
        except KeyFileError as err:
            shown = t[name] if name == "agent_key_file" else f"{text[:12]}..." if len(text) > 12 else text
            c.fail(f"{where}.{name}", shown, f"an Ed25519 public key, 44 characters of base64 (the .pub file): {err}")
    return CommandsConfig(result_timeout_s=float(timeout or 30.0), valid_s=float(valid or 120.0), keys=tuple(keys),
                          agent_keys=agent_keys)  # fmt: skip


def load_central_config(path: str | Path, broker_url: str | None = None) -> CentralConfig:
    """Read and validate central's TOML file. Raises CentralConfigError naming every bad key.

    ``broker_url`` replaces ``broker.url`` (``central run --broker``) and is validated the same way.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise CentralConfigError(str(path), [ConfigIssue("(file)", str(path), "no such file")]) from None
    except tomllib.TOMLDecodeError as err:
        raise CentralConfigError(str(path), [ConfigIssue("(file)", str(path), f"not valid TOML: {err}")]) from err
    if broker_url is not None:
        broker = raw.get("broker")
        raw["broker"] = {**broker, "url": broker_url} if isinstance(broker, dict) else {"url": broker_url}
    return parse_central_config(raw, path.resolve())
