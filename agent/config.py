"""The site's TOML file -> typed, validated configuration.

Validated once, at start. Every problem is collected (not just the first) and reported with its key
path, the bad value and what is allowed, so ``gridedge check-config`` can list them all.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from protocols.configcheck import MISSING, Checker, ConfigError, ConfigIssue
from protocols.modbus.registermap import RegisterMap, RegisterMapError, parse_register_map
from protocols.telemetry.schema import valid_site

PROTOCOLS = ("modbus-tcp", "modbus-rtu")
PARITIES = ("N", "E", "O")
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)

# The agent's errors are the shared ones (protocols/configcheck): `except ConfigError` keeps working here.
__all__ = ["AgentConfig", "ConfigError", "ConfigIssue", "DeviceConfig", "SerialSettings", "StoreConfig",
           "UplinkConfig", "load_config", "override_broker", "parse_config"]  # fmt: skip


@dataclass(frozen=True, slots=True)
class SerialSettings:
    port: str
    baudrate: int = 19200
    parity: str = "N"
    bytesize: int = 8
    stopbits: int = 1


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    name: str
    protocol: str  # one of PROTOCOLS
    unit_id: int
    register_map: RegisterMap
    poll_interval_s: float = 1.0
    timeout_s: float = 1.0
    retries: int = 1
    host: str | None = None  # modbus-tcp
    port: int | None = None  # modbus-tcp
    serial: SerialSettings | None = None  # modbus-rtu
    max_gap: int = 8  # unused registers a read may bridge to save a request
    max_block: int = 125  # registers per request; some devices accept fewer


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: Path
    max_bytes: int = 256 * 1024 * 1024
    batch_size: int = 500  # readings per uplink message


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    host: str
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_id: str = ""
    keepalive_s: int = 30
    max_inflight: int = 32  # uplink messages published and not yet acknowledged by central
    ack_timeout_s: float = 30.0  # resend a message central has not acknowledged after this long
    drain_on_stop_s: float = 5.0  # on SIGTERM, time the uplink gets to empty the outbox before exit


@dataclass(frozen=True, slots=True)
class AgentConfig:
    site_id: str
    devices: tuple[DeviceConfig, ...]
    store: StoreConfig
    uplink: UplinkConfig
    source: Path


def _load_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def _register_map(c: Checker, dev: Mapping[str, Any], prefix: str) -> RegisterMap | None:
    raw = dev.get("map", MISSING)
    key = f"{prefix}.map"
    if raw is MISSING:
        c.fail(key, MISSING, "is required: a register map file path, or an inline [devices.map] table")
        return None
    if isinstance(raw, str):
        path = c.path(raw)
        assert path is not None
        try:
            raw = _load_toml(path)
        except FileNotFoundError:
            c.fail(key, str(raw), f"no such register map file ({path})")
            return None
        except (OSError, tomllib.TOMLDecodeError) as err:
            c.fail(key, str(raw), f"cannot read register map file: {err}")
            return None
        where = f"{key}({path.name})"
    elif isinstance(raw, Mapping):
        where = key
    else:
        c.fail(key, raw, "must be a file path or a table")
        return None
    try:
        return parse_register_map(raw, where)
    except RegisterMapError as err:
        c.fail(err.key, err.value, err.allowed)
        return None


def _device(c: Checker, dev: Mapping[str, Any], prefix: str) -> DeviceConfig | None:
    start = len(c.issues)
    common = {"name", "protocol", "unit_id", "poll_interval_s", "timeout_s", "retries", "map", "max_gap", "max_block"}
    tcp = {"host", "port"}
    rtu = {"serial_port", "baudrate", "parity", "bytesize", "stopbits"}
    name = c.get(dev, prefix, "name", "string")
    protocol = c.get(dev, prefix, "protocol", "string", choices=PROTOCOLS)
    unit_id = c.get(dev, prefix, "unit_id", "integer", 1, lo=1 if protocol == "modbus-rtu" else 0, hi=247)
    poll = c.get(dev, prefix, "poll_interval_s", "number", 1.0, lo=0.01, hi=86400)
    timeout = c.get(dev, prefix, "timeout_s", "number", 1.0, lo=0.01, hi=60)
    retries = c.get(dev, prefix, "retries", "integer", 1, lo=0, hi=10)
    max_gap = c.get(dev, prefix, "max_gap", "integer", 8, lo=0, hi=124)
    max_block = c.get(dev, prefix, "max_block", "integer", 125, lo=1, hi=125)
    host = port = serial = None
    if protocol == "modbus-tcp":
        c.unknown(dev, prefix, common | tcp)
        host = c.get(dev, prefix, "host", "string")
        port = c.get(dev, prefix, "port", "integer", 502, lo=1, hi=65535)
    elif protocol == "modbus-rtu":
        c.unknown(dev, prefix, common | rtu)
        sport = c.get(dev, prefix, "serial_port", "string")
        baud = c.get(dev, prefix, "baudrate", "integer", 19200, choices=BAUDRATES)
        parity = c.get(dev, prefix, "parity", "string", "N", choices=PARITIES)
        bytesize = c.get(dev, prefix, "bytesize", "integer", 8, choices=(7, 8))
        stopbits = c.get(dev, prefix, "stopbits", "integer", 1, choices=(1, 2))
        if sport:
            serial = SerialSettings(str(c.path(sport)) if not sport.startswith("/dev/") else sport,
                                    baud or 19200, parity or "N", bytesize or 8, stopbits or 1)  # fmt: skip
    if poll is not None and timeout is not None and retries is not None and timeout * (retries + 1) > poll * 10:
        c.fail(f"{prefix}.timeout_s", timeout, f"timeout_s x (retries+1) must be at most 10 x poll_interval_s ({poll})")
    rmap = _register_map(c, dev, prefix)
    if len(c.issues) > start:
        return None
    return DeviceConfig(name=name, protocol=protocol, unit_id=unit_id, register_map=rmap, poll_interval_s=float(poll),
                        timeout_s=float(timeout), retries=retries, host=host, port=port, serial=serial,
                        max_gap=max_gap, max_block=max_block)  # fmt: skip


def _uplink(c: Checker, raw: Mapping[str, Any], site: str | None) -> UplinkConfig | None:
    p = "uplink"
    start = len(c.issues)
    c.unknown(raw, p, {"broker", "username", "password", "password_file", "ca_file", "cert_file", "key_file",
                       "client_id", "keepalive_s", "max_inflight", "ack_timeout_s", "drain_on_stop_s"})  # fmt: skip
    broker = c.get(raw, p, "broker", "string")
    url = c.broker_url(f"{p}.broker", broker)
    host, port, tls = (url.host, url.port, url.tls) if url else ("", 1883, False)
    username = c.get(raw, p, "username", "string", None)
    password = c.get(raw, p, "password", "string", None)
    pwfile = c.path(c.get(raw, p, "password_file", "string", None))
    if pwfile is not None:
        if password is not None:
            c.fail(f"{p}.password_file", str(pwfile), "give password or password_file, not both")
        try:
            password = pwfile.read_text().strip()
        except OSError as err:
            c.fail(f"{p}.password_file", str(pwfile), f"cannot read it: {err.strerror}")
        else:
            if not password:
                c.fail(f"{p}.password_file", str(pwfile), "the file is empty: it must hold the password")
    files = c.tls_files(raw, p)
    c.broker_security(f"{p}.broker", broker, url, p, username, password, files)
    client_id = c.get(raw, p, "client_id", "string", f"gridedge-{site or 'agent'}")
    keepalive = c.get(raw, p, "keepalive_s", "integer", 30, lo=5, hi=3600)
    inflight = c.get(raw, p, "max_inflight", "integer", 32, lo=1, hi=1000)
    ack_timeout = c.get(raw, p, "ack_timeout_s", "number", 30.0, lo=1, hi=3600)
    drain = c.get(raw, p, "drain_on_stop_s", "number", 5.0, lo=0, hi=600)
    if len(c.issues) > start:
        return None
    return UplinkConfig(drain_on_stop_s=float(drain), host=host, port=port, tls=tls, username=username, password=password, client_id=client_id,
                        keepalive_s=keepalive, max_inflight=inflight, ack_timeout_s=float(ack_timeout), **files)  # fmt: skip


def parse_config(raw: Mapping[str, Any], source: Path) -> AgentConfig:
    """Validate an already-parsed TOML document; relative paths resolve against ``source``'s folder."""
    c = Checker(source.parent)
    c.unknown(raw, "", {"site_id", "devices", "store", "uplink"})
    site = c.get(raw, "", "site_id", "string")
    if site and not valid_site(site):
        c.fail("site_id", site, "1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit")
        site = None
    devices: list[DeviceConfig] = []
    names: set[str] = set()
    for prefix, dev in c.tables(raw, "devices"):
        d = _device(c, dev, prefix)
        if d is None:
            continue
        if d.name in names:
            c.fail(f"{prefix}.name", d.name, "must be unique among devices")
        names.add(d.name)
        devices.append(d)
    store_raw = c.get(raw, "", "store", "table", {}) or {}
    c.unknown(store_raw, "store", {"path", "max_mb", "batch_size"})
    spath = c.path(c.get(store_raw, "store", "path", "string", "gridedge.db"))
    max_mb = c.get(store_raw, "store", "max_mb", "number", 256, lo=1, hi=1_000_000)
    batch = c.get(store_raw, "store", "batch_size", "integer", 500, lo=1, hi=10_000)
    uplink_raw = c.get(raw, "", "uplink", "table")
    uplink = _uplink(c, uplink_raw, site) if uplink_raw is not None else None
    if c.issues:
        raise ConfigError(str(source), c.issues)
    assert uplink is not None and spath is not None
    return AgentConfig(site_id=site, devices=tuple(devices),
                       store=StoreConfig(path=spath, max_bytes=int(max_mb * 1024 * 1024), batch_size=batch),
                       uplink=uplink, source=source)  # fmt: skip


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate a site's TOML file. Raises ConfigError naming every bad key."""
    path = Path(path)
    try:
        raw = _load_toml(path)
    except FileNotFoundError:
        raise ConfigError(str(path), [ConfigIssue("(file)", str(path), "no such file")]) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), [ConfigIssue("(file)", str(path), f"not valid TOML: {err}")]) from err
    return parse_config(raw, path.resolve())


def override_broker(config: AgentConfig, broker: str) -> AgentConfig:
    """The same configuration with ``uplink.broker`` replaced (``gridedge run --broker``)."""
    c = Checker(config.source.parent)
    url = c.broker_url("--broker", broker)
    if url is None:
        raise ConfigError("command line", c.issues)
    return replace(config, uplink=replace(config.uplink, host=url.host, port=url.port, tls=url.tls))
