"""Central's TOML file -> typed, validated configuration.

Validated once, at start; every problem is collected and reported with its key, the bad value and what is
allowed. Relative paths resolve against the configuration file's folder (as the agent's do).

```toml
[broker]
url = "mqtt://127.0.0.1:1883"   # mqtts:// for TLS
client_id = "central"           # each worker appends "-<worker name>"
# username, password (or password_file), ca_file, cert_file, key_file, keepalive_s: protocols/mqtt/config.py
backoff_max_s = 5.0             # cap of the reconnect backoff (full jitter, from 0.2 s)

[store]
db = "../run/central.db"

[ingest]
group = "central"               # MQTT 5 shared subscription group: workers of one group share the load
status_file = "../run/central-status.json"
ack_interval_s = 0.05           # acks are batched per site over this interval
max_queue = 20000               # messages waiting to be stored; past it new ones are refused (not acked)
```
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.configcheck import Checker, ConfigError, ConfigIssue
from protocols.mqtt.config import BrokerConfig, parse_broker

_GROUP_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

__all__ = ["CentralConfig", "CentralConfigError", "ConfigIssue", "load_central_config", "parse_central_config"]


class CentralConfigError(ConfigError):
    """Central's configuration cannot be used; ``issues`` lists every problem found."""


@dataclass(frozen=True, slots=True)
class CentralConfig:
    broker: BrokerConfig  # its client_id: each worker appends "-<worker name>"
    db_path: Path
    backoff_max_s: float = 5.0  # central is one service, not thousands of agents: come back quickly
    group: str = "central"
    status_file: Path | None = None
    ack_interval_s: float = 0.05
    max_queue: int = 20000
    source: Path | None = None


def parse_central_config(raw: Mapping[str, Any], source: Path) -> CentralConfig:
    """Validate an already-parsed TOML document; relative paths resolve against ``source``'s folder."""
    c = Checker(source.parent)
    c.unknown(raw, "", {"broker", "store", "ingest"})
    broker_raw, store, ingest = (c.get(raw, "", name, "table", {}) or {} for name in ("broker", "store", "ingest"))
    c.unknown(store, "store", {"db"})
    c.unknown(ingest, "ingest", {"group", "status_file", "ack_interval_s", "max_queue"})

    broker = parse_broker(c, broker_raw, "broker", url_key="url", client_id="central", own_keys={"backoff_max_s"},
                          strict_client_id=True)  # fmt: skip
    backoff_max = c.get(broker_raw, "broker", "backoff_max_s", "number", 5.0, lo=0.2, hi=600)

    db = c.path(c.get(store, "store", "db", "string"))

    group = c.get(ingest, "ingest", "group", "string", "central")
    if group and not _GROUP_RE.match(group):
        c.fail("ingest.group", group, "1-64 characters of letters, digits, '_', '.', '-' (no '/', '+', '#')")
    status = c.path(c.get(ingest, "ingest", "status_file", "string", None))
    interval = c.get(ingest, "ingest", "ack_interval_s", "number", 0.05, lo=0.001, hi=10)
    max_queue = c.get(ingest, "ingest", "max_queue", "integer", 20000, lo=1, hi=10_000_000)
    if c.issues:
        raise CentralConfigError(str(source), c.issues)
    assert db is not None and broker is not None
    return CentralConfig(broker=broker, backoff_max_s=float(backoff_max), db_path=db, group=group, status_file=status,
                         ack_interval_s=float(interval), max_queue=max_queue, source=source)  # fmt: skip


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
