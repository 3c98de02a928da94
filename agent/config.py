"""The site's TOML file -> typed, validated configuration.

Validated once, at start. Every problem is collected (not just the first) and reported with its key
path, the bad value and what is allowed, so ``gridedge check-config`` can list them all.

Each subsystem parses its own section with the one shared Checker: ``[uplink]``'s broker keys in
protocols/mqtt/config.py, ``[[pmus]]`` and ``[pmu_monitoring]`` in agent/pmu/config.py, ``[[waveforms]]``
in agent/pq/config.py, ``[monitoring]`` in agent/monitoring/config.py, register maps in protocols/modbus/registermap.py. This module reads the file, the
devices and the store, and composes the rest.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent.clock import ClockConfig, parse_clock
from agent.commands.config import CommandsConfig, parse_commands
from agent.control.config import ControlConfig, parse_control
from agent.metering.config import MeteringConfig, parse_metering
from agent.monitoring.config import MeasuredDevice, MonitoringConfig, parse_monitoring
from agent.pmu.config import PmuMonitoringConfig, PmuStreamConfig, parse_pmu_monitoring, parse_pmus
from agent.pq.config import WaveformStreamConfig, parse_waveforms
from protocols.configcheck import MISSING, Checker, ConfigError, ConfigIssue
from protocols.metrics import MetricsConfig, parse_metrics
from protocols.modbus.registermap import RegisterMap, RegisterMapError, parse_register_map
from protocols.mqtt.config import BrokerConfig, broker_url, parse_broker
from protocols.telemetry.schema import valid_site

PROTOCOLS = ("modbus-tcp", "modbus-rtu", "sunspec")
# A SunSpec device's models polled when the site file names none: measurements (701) and controls (704) every poll,
# the volt-var, volt-watt and frequency-droop curves (705, 706, 711) on the settings schedule (docs/sunspec.md).
SUNSPEC_DEFAULT_MODELS = (701, 704, 705, 706, 711)
PARITIES = ("N", "E", "O")
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
LINE_SETTINGS = ("baudrate", "parity", "bytesize", "stopbits")  # what every device on one serial port shares
# A device name starts point ids (<device>.<point>) and log lines (device=<name>): no spaces, '=' or '/'.
DEVICE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEVICE_NAME_ALLOWED = "1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
UTF8_BOM = b"\xef\xbb\xbf"

# The agent's errors are the shared ones (protocols/configcheck): `except ConfigError` keeps working here.
__all__ = ["AgentConfig", "ConfigError", "ConfigIssue", "DeviceConfig", "SerialSettings", "StoreConfig", "UplinkConfig",
           "load_config", "override_broker", "parse_config"]  # fmt: skip


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
    # sunspec: no register map (the layout is discovered at connect); the SunSpec models to poll, and how often the
    # settings and curve models among them are read (agent/acquisition/sunspec.py, docs/sunspec.md)
    models: tuple[int, ...] = ()
    settings_poll_interval_s: float = 60.0

    @property
    def transport(self) -> str:
        """How the device is reached: "tcp" or "rtu" (a sunspec device is either)."""
        return "rtu" if self.serial is not None else "tcp"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: Path
    max_bytes: int = 256 * 1024 * 1024
    batch_size: int = 500  # readings per uplink message


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    """``[uplink]``: the broker (protocols/mqtt/config.py parses those keys) and how the uplink uses it."""

    broker: BrokerConfig
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
    pmus: tuple[PmuStreamConfig, ...] = ()
    pmu_monitoring: PmuMonitoringConfig = PmuMonitoringConfig()
    waveforms: tuple[WaveformStreamConfig, ...] = ()
    monitoring: MonitoringConfig = MonitoringConfig()  # [monitoring]: feeder voltages by bus and phase
    warnings: tuple[ConfigIssue, ...] = ()  # what works but is likely a mistake; check-config lists them
    clock: ClockConfig = ClockConfig()  # [clock]: a bench day at speed (docs/control.md, "The clock")
    control: ControlConfig | None = None  # [control] (docs/control.md); None: the agent commands nothing
    commands: CommandsConfig | None = None  # [commands] (docs/commands.md); None: nothing comes down from central
    metering: MeteringConfig | None = None  # [metering] (docs/metering.md); None: no interval energy is made
    metrics: MetricsConfig | None = None  # [metrics] (docs/metrics.md); None: no Prometheus endpoint


def _read_toml(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The parsed document, or None and what is wrong with the file (absent: ``"no such file"``).

    Never raises for a bad file: a folder, an unreadable file, bytes that are not UTF-8 and TOML syntax
    errors each become one sentence that names the place (line, column) where it can.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "no such file"
    except IsADirectoryError:
        return None, "is a folder, not a file"
    except OSError as err:
        return None, f"cannot read it: {err.strerror or err}"
    if data.startswith(UTF8_BOM):
        return None, "starts with a UTF-8 byte-order mark, which TOML does not allow: save it as UTF-8 without BOM"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        return None, (f"not UTF-8 text (TOML files are UTF-8): byte 0x{data[err.start]:02x} at line {line}, "
                      f"column {column}")  # fmt: skip
    try:
        return tomllib.loads(text), ""
    except tomllib.TOMLDecodeError as err:
        return None, f"not valid TOML: {err}"


def _register_map(c: Checker, dev: Mapping[str, Any], prefix: str) -> RegisterMap | None:
    raw = dev.get("map", MISSING)
    key = f"{prefix}.map"
    if raw is MISSING:
        c.fail(key, MISSING, "is required: a register map file path, or an inline [devices.map] table")
        return None
    if isinstance(raw, str):
        path = c.path(raw)
        assert path is not None
        doc, problem = _read_toml(path)
        if doc is None:
            c.fail(key, raw, f"register map file {path}: {problem}")
            return None
        raw = doc
        where = f"{key}({path.name})"
    elif isinstance(raw, Mapping):
        where = key
    else:
        c.fail(key, raw, "must be a file path or a table")
        return None
    try:
        rmap = parse_register_map(raw, where)
    except RegisterMapError as err:
        for issue in err.issues:  # each its own issue, so check-config lists every problem of the map
            c.fail(issue.key, issue.value, issue.allowed)
        return None
    c.warnings.extend(rmap.warnings)
    return rmap


def _sunspec_models(c: Checker, dev: Mapping[str, Any], prefix: str) -> tuple[int, ...] | None:
    """``models``: the SunSpec model ids to poll, each one pysunspec2 defines; absent: SUNSPEC_DEFAULT_MODELS."""
    raw = dev.get("models", MISSING)
    key = f"{prefix}.models"
    if raw is MISSING:
        return SUNSPEC_DEFAULT_MODELS
    if not isinstance(raw, list) or not raw:
        c.fail(key, raw, "must be a non-empty array of SunSpec model ids, e.g. [701, 704, 705]")
        return None
    from protocols.sunspec.layout import ranges_text, shipped_models  # imports pysunspec2: only for SunSpec sites

    shipped = shipped_models()
    out: list[int] = []
    start = len(c.issues)
    for i, m in enumerate(raw):
        if isinstance(m, bool) or not isinstance(m, int) or m not in shipped:
            c.fail(f"{key}[{i}]", m, f"must be a SunSpec model id pysunspec2 defines: {ranges_text(shipped)}")
        elif m in out:
            c.fail(f"{key}[{i}]", m, f"is listed twice (models[{out.index(m)}])")
        else:
            out.append(m)
    return tuple(out) if len(c.issues) == start else None


def _device(c: Checker, dev: Mapping[str, Any], prefix: str) -> DeviceConfig | None:
    start = len(c.issues)
    common = {"name", "protocol", "unit_id", "poll_interval_s", "timeout_s", "retries", "map", "max_gap", "max_block"}
    tcp_keys = {"host", "port"}
    rtu_keys = {"serial_port", *LINE_SETTINGS}
    sunspec_keys = {"models", "settings_poll_interval_s"}
    name = c.get(dev, prefix, "name", "string")
    if name is not None and not DEVICE_NAME_RE.match(name):
        c.fail(f"{prefix}.name", name, DEVICE_NAME_ALLOWED)
    protocol = c.get(dev, prefix, "protocol", "string", choices=PROTOCOLS)
    sunspec = protocol == "sunspec"
    # A SunSpec device is reached like a Modbus one: over TCP (host) or on an RS-485 line (serial_port).
    line = "modbus-rtu" if protocol == "modbus-rtu" or (sunspec and "serial_port" in dev) else "modbus-tcp"
    if sunspec and "serial_port" in dev and "host" in dev:
        c.fail(f"{prefix}.host", dev["host"], "give host (SunSpec over Modbus TCP) or serial_port (over Modbus RTU), "
               "not both")  # fmt: skip
    # Serial line: 1..247 (0 is broadcast, 248..255 reserved). TCP: 0..255; a device reached by its own IP
    # address is conventionally unit 0xFF (Modbus Messaging on TCP/IP Implementation Guide V1.0b, 4.4.2).
    rtu = line == "modbus-rtu"
    unit_id = c.get(dev, prefix, "unit_id", "integer", 1, lo=1 if rtu else 0, hi=247 if rtu else 255)
    poll = c.get(dev, prefix, "poll_interval_s", "number", 1.0, lo=0.01, hi=86400)
    timeout = c.get(dev, prefix, "timeout_s", "number", 1.0, lo=0.01, hi=60)
    retries = c.get(dev, prefix, "retries", "integer", 1, lo=0, hi=10)
    max_gap = c.get(dev, prefix, "max_gap", "integer", 8, lo=0, hi=124)
    max_block = c.get(dev, prefix, "max_block", "integer", 125, lo=1, hi=125)
    host = port = serial = None
    own = sunspec_keys | (common - {"map"}) if sunspec else common
    # a SunSpec device's map (and its host beside a serial port) get an issue of their own below
    others = {k: v for k, v in dev.items() if not (sunspec and k in ("map", "host"))}
    if protocol is None:  # a bad or absent protocol has its own issue; typos in the other keys are still worth naming
        c.unknown(dev, prefix, common | tcp_keys | rtu_keys | sunspec_keys)
    elif line == "modbus-tcp":
        c.unknown(others, prefix, own | tcp_keys)
        if sunspec and "host" not in dev:
            c.fail(f"{prefix}.host", MISSING, "is required: host (SunSpec over Modbus TCP) or serial_port (over Modbus "
                   "RTU)")  # fmt: skip
        else:
            host = c.get(dev, prefix, "host", "string")
        port = c.get(dev, prefix, "port", "integer", 502, lo=1, hi=65535)
    else:
        c.unknown(others, prefix, own | rtu_keys)
        sport = c.get(dev, prefix, "serial_port", "string")
        baud = c.get(dev, prefix, "baudrate", "integer", 19200, choices=BAUDRATES)
        parity = c.get(dev, prefix, "parity", "string", "N", choices=PARITIES)
        bytesize = c.get(dev, prefix, "bytesize", "integer", 8)
        if bytesize is not None and bytesize != 8:
            # Modbus over Serial Line V1.02, 2.5.1: RTU sends 8 data bits; 7 is ASCII mode only.
            c.fail(f"{prefix}.bytesize", bytesize, "must be 8: Modbus RTU sends 8 data bits per character "
                   "(7 data bits is Modbus ASCII, which GridEdge does not speak)")  # fmt: skip
            bytesize = None
        stopbits = c.get(dev, prefix, "stopbits", "integer", 1, choices=(1, 2))
        if sport:
            serial = SerialSettings(str(c.path(sport)) if not sport.startswith("/dev/") else sport,
                                    baud or 19200, parity or "N", bytesize or 8, stopbits or 1)  # fmt: skip
    if poll is not None and timeout is not None and retries is not None and timeout * (retries + 1) > poll * 10:
        c.fail(f"{prefix}.timeout_s", timeout, f"timeout_s x (retries+1) must be at most 10 x poll_interval_s ({poll})")
    models: tuple[int, ...] | None = ()
    settings_poll = 60.0
    if sunspec:
        if "map" in dev:
            c.fail(f"{prefix}.map", dev["map"], "a SunSpec device has no register map: its models are discovered from "
                   "the device at connect (docs/sunspec.md); remove the key")  # fmt: skip
        models = _sunspec_models(c, dev, prefix)
        settings_poll = c.get(dev, prefix, "settings_poll_interval_s", "number", 60.0, lo=0.01, hi=86400)
        if settings_poll is not None and poll is not None and settings_poll < poll:
            c.fail(f"{prefix}.settings_poll_interval_s", settings_poll,
                   f"must be at least poll_interval_s ({poll}): the settings are read at most once a "
                   "poll")  # fmt: skip
        rmap: RegisterMap | None = RegisterMap(name="sunspec")
    else:
        rmap = _register_map(c, dev, prefix)
    if len(c.issues) > start:
        return None
    return DeviceConfig(name=name, protocol=protocol, unit_id=unit_id, register_map=rmap, poll_interval_s=float(poll),
                        timeout_s=float(timeout), retries=retries, host=host, port=port, serial=serial,
                        max_gap=max_gap, max_block=max_block, models=models or (),
                        settings_poll_interval_s=float(settings_poll))  # fmt: skip


UPLINK_KEYS = frozenset({"max_inflight", "ack_timeout_s", "drain_on_stop_s"})  # the rest: protocols/mqtt BROKER_KEYS


def _uplink(c: Checker, raw: Mapping[str, Any], site: str | None) -> UplinkConfig | None:
    p = "uplink"
    start = len(c.issues)
    broker = parse_broker(c, raw, p, url_key="broker", client_id=f"gridedge-{site or 'agent'}", own_keys=UPLINK_KEYS)
    inflight = c.get(raw, p, "max_inflight", "integer", 32, lo=1, hi=1000)
    ack_timeout = c.get(raw, p, "ack_timeout_s", "number", 30.0, lo=1, hi=3600)
    drain = c.get(raw, p, "drain_on_stop_s", "number", 5.0, lo=0, hi=600)
    if len(c.issues) > start or broker is None:
        return None
    return UplinkConfig(broker=broker, max_inflight=inflight, ack_timeout_s=float(ack_timeout),
                        drain_on_stop_s=float(drain))  # fmt: skip


def _device_addresses(c: Checker, placed: list[tuple[str, Mapping[str, Any], DeviceConfig]]) -> None:
    """Across devices: one set of line settings per serial port, and one device per address.

    The acquisition opens one bus per serial port (symlinks resolved, as protocols/modbus/serialbus does)
    with one baud rate and framing; two unit ids that are one address would read one device under two names.
    """
    first_on_port: dict[str, tuple[str, DeviceConfig]] = {}
    at_address: dict[tuple[Any, ...], tuple[str, DeviceConfig]] = {}
    for prefix, raw, d in placed:
        if d.serial is not None:
            port = os.path.realpath(d.serial.port)
            where = f"serial port {d.serial.port}"
            address: tuple[Any, ...] = ("rtu", port, d.unit_id)
            first = first_on_port.setdefault(port, (prefix, d))
            fprefix, fdev = first
            assert fdev.serial is not None
            for setting in LINE_SETTINGS if fdev is not d else ():
                mine, theirs = getattr(d.serial, setting), getattr(fdev.serial, setting)
                if mine != theirs:
                    default = "" if setting in raw else f" ({mine!r} is the default when {setting} is not given)"
                    c.fail(f"{prefix}.{setting}", mine, f"every device on {where} shares one line: {fprefix} "
                           f"({fdev.name}) uses {theirs!r}{default}")  # fmt: skip
        else:
            where = f"{d.host}:{d.port}"
            address = ("tcp", (d.host or "").lower(), d.port, d.unit_id)
        other = at_address.setdefault(address, (prefix, d))
        if other[1] is not d:
            c.fail(f"{prefix}.unit_id", d.unit_id, f"{other[0]} ({other[1].name}) is unit {d.unit_id} at {where} "
                   "already: one [[devices]] entry per device (a second would read it again under another name)")  # fmt: skip


def _store_path(c: Checker, path: Path) -> None:
    """The SQLite file may not exist yet (the agent creates it and its folder), but it cannot be a folder."""
    if os.path.isdir(path):
        c.fail("store.path", str(path), "is a folder: give the path of the SQLite file in it (e.g. agent.db)")
        return
    for parent in path.parents:  # the nearest that exists must be a folder, or the agent cannot create the rest
        if os.path.lexists(parent):
            if not os.path.isdir(parent):
                c.fail("store.path", str(path), f"{parent} is not a folder")
            return


def _monitoring(c: Checker, raw: Mapping[str, Any], devices: list[DeviceConfig], pmu_names: frozenset[str],
                pmus: Mapping[str, PmuStreamConfig]) -> MonitoringConfig:  # fmt: skip
    """``[monitoring]``, its points checked against the devices' register maps and the PMU names."""
    section = c.get(raw, "", "monitoring", "table", {}) or {}
    entries = raw.get("devices")
    # every name given, also of entries with errors of their own: a point of one is not a second, false error
    names = {d["name"] for d in entries if isinstance(d, Mapping) and isinstance(d.get("name"), str)} if isinstance(
        entries, list) else set()  # fmt: skip
    measured = {d.name: MeasuredDevice({p.name: p.unit for p in d.register_map.points}, d.poll_interval_s,
                                       d.register_map.name) for d in devices}  # fmt: skip
    return parse_monitoring(c, section, measured, names, pmu_names, {n: p.nominal_v for n, p in pmus.items()})


def parse_config(raw: Mapping[str, Any], source: Path) -> AgentConfig:
    """Validate an already-parsed TOML document; relative paths resolve against ``source``'s folder."""
    c = Checker(source.parent)
    c.unknown(raw, "", {"site_id", "devices", "store", "uplink", "pmus", "pmu_monitoring", "waveforms", "monitoring",
                        "clock", "control", "commands", "metering", "metrics"})  # fmt: skip
    site = c.get(raw, "", "site_id", "string")
    if site and not valid_site(site):
        c.fail("site_id", site, "1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit")
        site = None
    devices: list[DeviceConfig] = []
    names: set[str] = set()
    placed: list[tuple[str, Mapping[str, Any], DeviceConfig]] = []
    for prefix, dev in c.tables(raw, "devices"):
        d = _device(c, dev, prefix)
        if d is None:
            continue
        if d.name in names:
            c.fail(f"{prefix}.name", d.name, "must be unique among devices")
        names.add(d.name)
        devices.append(d)
        placed.append((prefix, dev, d))
    _device_addresses(c, placed)
    pmu_entries = parse_pmus(c, raw, names)
    pmus = pmu_entries.pmus
    waveforms = parse_waveforms(c, raw, names | set(pmus))
    mon_raw = c.get(raw, "", "pmu_monitoring", "table", {}) or {}
    monitoring = parse_pmu_monitoring(c, mon_raw, pmu_entries.names)
    voltages = _monitoring(c, raw, devices, pmu_entries.names, pmus)
    store_raw = c.get(raw, "", "store", "table", {}) or {}
    c.unknown(store_raw, "store", {"path", "max_mb", "batch_size"})
    spath = c.path(c.get(store_raw, "store", "path", "string", "gridedge.db"))
    if spath is not None:
        _store_path(c, spath)
    max_mb = c.get(store_raw, "store", "max_mb", "number", 256, lo=1, hi=1_000_000)
    batch = c.get(store_raw, "store", "batch_size", "integer", 500, lo=1, hi=10_000)
    clock = parse_clock(c, c.get(raw, "", "clock", "table", {}) or {})
    control_raw = c.get(raw, "", "control", "table", None)
    control = None
    if control_raw is not None:
        control = parse_control(c, control_raw, {d.name: getattr(d, "register_map", None) for d in devices},
                                {d.name: d.protocol for d in devices})  # fmt: skip
    metering_raw = c.get(raw, "", "metering", "table", None)
    metering = None
    if metering_raw is not None:  # SunSpec devices have no register map here: their models say what they hold
        metering = parse_metering(c, metering_raw, {d.name: None if d.protocol == "sunspec" else
                                                    getattr(d, "register_map", None) for d in devices})  # fmt: skip
    commands_raw = c.get(raw, "", "commands", "table", None)
    commands = None
    if commands_raw is not None:
        commands = parse_commands(c, commands_raw, site, control is not None)
    metrics_raw = c.get(raw, "", "metrics", "table", None)  # Prometheus (protocols/metrics.py, docs/metrics.md)
    metrics = parse_metrics(c, metrics_raw) if metrics_raw is not None else None
    uplink_raw = c.get(raw, "", "uplink", "table")
    uplink = _uplink(c, uplink_raw, site) if uplink_raw is not None else None
    if c.issues:
        raise ConfigError(str(source), c.issues, c.warnings)
    assert uplink is not None and spath is not None
    return AgentConfig(site_id=site, devices=tuple(devices),
                       store=StoreConfig(path=spath, max_bytes=int(max_mb * 1024 * 1024), batch_size=batch),
                       uplink=uplink, source=source, pmus=tuple(pmus.values()),
                       pmu_monitoring=monitoring, waveforms=tuple(waveforms.values()), monitoring=voltages,
                       warnings=tuple(c.warnings), clock=clock, control=control, commands=commands,
                       metering=metering, metrics=metrics)  # fmt: skip


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate a site's TOML file. Raises ConfigError naming every bad key."""
    path = Path(path)
    raw, problem = _read_toml(path)
    if raw is None:
        raise ConfigError(str(path), [ConfigIssue("(file)", str(path), problem)])
    return parse_config(raw, path.resolve())


def override_broker(config: AgentConfig, broker: str) -> AgentConfig:
    """The same configuration with ``uplink.broker`` replaced (``gridedge run --broker``)."""
    c = Checker(config.source.parent)
    url = broker_url(c, "--broker", broker)
    if url is None:
        raise ConfigError("command line", c.issues)
    return replace(config, uplink=replace(config.uplink, broker=config.uplink.broker.with_url(url)))
