"""The site's TOML file -> typed, validated configuration.

Validated once, at start. Every problem is collected (not just the first) and reported with its key
path, the bad value and what is allowed, so ``gridedge check-config`` can list them all.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.pmu.limits import FREQUENCY_LIMITS, ROCOF_LIMITS, TIMING_DEFAULTS, VOLTAGE_LIMITS, frequency_limit_hz
from protocols.configcheck import MISSING, Checker, ConfigError, ConfigIssue
from protocols.modbus.registermap import RegisterMap, RegisterMapError, parse_register_map
from protocols.telemetry.schema import valid_site

if TYPE_CHECKING:
    from agent.pq.events import EventConfig

PROTOCOLS = ("modbus-tcp", "modbus-rtu")
PARITIES = ("N", "E", "O")
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
LINE_SETTINGS = ("baudrate", "parity", "bytesize", "stopbits")  # what every device on one serial port shares
# A device name starts point ids (<device>.<point>) and log lines (device=<name>): no spaces, '=' or '/'.
DEVICE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEVICE_NAME_ALLOWED = "1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
UTF8_BOM = b"\xef\xbb\xbf"

# The agent's errors are the shared ones (protocols/configcheck): `except ConfigError` keeps working here.
__all__ = ["AgentConfig", "AnglePairConfig", "ConfigError", "ConfigIssue", "DeviceConfig", "PmuMonitoringConfig",
           "PmuStreamConfig", "SerialSettings", "StoreConfig", "UplinkConfig", "WaveformStreamConfig", "default_compliance", "load_config",
           "override_broker", "parse_config"]  # fmt: skip


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
class PmuStreamConfig:
    """One ``[[pmus]]`` entry: a PMU streaming C37.118.2 to the agent (docs/pmu-monitoring.md)."""

    name: str
    host: str
    idcode: int
    port: int = 4712
    cfg: int = 2  # which configuration frame to ask for: CFG-2 or CFG-3
    udp_port: int | None = None  # receive data over UDP on this local port (commands stay on TCP)
    stale_after_s: float = 2.0
    nominal_v: float | None = None  # phase-to-neutral volts for pu; None: voltage limits not checked


@dataclass(frozen=True, slots=True)
class AnglePairConfig:
    """A ``[[pmu_monitoring.angle_pairs]]`` entry: the phase-angle difference of one phasor between two PMUs."""

    pmu_a: str
    pmu_b: str
    phasor: str
    limit_deg: float  # no standard default: configured per pair


@dataclass(frozen=True, slots=True)
class PmuMonitoringConfig:
    """``[pmu_monitoring]``: limits (defaults cited in agent/pmu/limits.py) and event timing."""

    voltage_lo_pu: float = 0.95  # ANSI C84.1-2016 Range A
    voltage_hi_pu: float = 1.05
    voltage_clause: str = VOLTAGE_LIMITS["A"].source
    frequency_lo_hz: float = (
        -1.5
    )  # deviation from nominal; IEEE 1547-2018 UF1/OF1 defaults (60 Hz; table number from memory)
    frequency_hi_hz: float = 1.2
    frequency_clause: str = FREQUENCY_LIMITS["1547-OF1-UF1"].source
    rocof_hz_per_s: float = 2.0  # IEEE 1547-2018 ROCOF ride-through, Category II (table number from memory)
    rocof_clause: str = ROCOF_LIMITS["II"].source
    time_quality_limit: int = 4
    voltage_pickup_s: float = TIMING_DEFAULTS["voltage_pickup_s"]
    frequency_pickup_s: float = TIMING_DEFAULTS["frequency_pickup_s"]
    rocof_pickup_s: float = TIMING_DEFAULTS["rocof_pickup_s"]
    angle_pickup_s: float = TIMING_DEFAULTS["angle_pickup_s"]
    hold_off_s: float = TIMING_DEFAULTS["hold_off_s"]
    window_before_s: float = TIMING_DEFAULTS["window_before_s"]
    window_after_s: float = TIMING_DEFAULTS["window_after_s"]
    buffer_s: float = 60.0  # full-rate history kept per PMU
    angle_pairs: tuple[AnglePairConfig, ...] = ()


# [[waveforms]]: power quality from a wave stream (docs/pq-service.md)
WAVEFORM_CHANNELS_DEFAULT = ("va", "vb", "vc")
LAMP_FOR_NOMINAL = {50: 230, 60: 120}  # lamp_v default: the 230 V lamp on 50 Hz systems, the 120 V lamp on 60 Hz
EVENT_KEYS = ("dip_threshold_pct", "swell_threshold_pct", "interruption_threshold_pct", "hysteresis_pct")
#: EN 50160:2010 clause 3 definitions (from memory, check your copy): low voltage Un <= 1 kV, medium voltage
#: 1 kV < Un <= 36 kV, Un line to line. Udin (phase to neutral) x sqrt 3 gives Un.
EN50160_LV_MAX_V = 1000.0
EN50160_MV_MAX_V = 36000.0


def default_compliance(nominal_hz: int, udin_v: float) -> tuple[str, ...]:
    """The standards a ``[[waveforms]]`` stream is assessed against when ``compliance`` is not given.

    50 Hz: EN 50160 (the European supply standard) for its voltage level, LV or MV from Udin x sqrt 3; above
    36 kV (EN 50160 clause 6, high voltage, is not assessed) and at 60 Hz: IEEE 519, which applies at any
    bus voltage (its Table 1 row from ``bus_kv``).
    """
    un_v = udin_v * 3**0.5
    if nominal_hz == 50 and un_v <= EN50160_LV_MAX_V:
        return ("en50160-lv",)
    if nominal_hz == 50 and un_v <= EN50160_MV_MAX_V:
        return ("en50160-mv",)
    return ("ieee519",)


@dataclass(frozen=True, slots=True)
class WaveformStreamConfig:
    """One ``[[waveforms]]`` entry: a wave stream (bench or recorder) measured for power quality."""

    name: str
    host: str
    port: int
    nominal_hz: int  # 50 or 60
    lamp_v: int  # flickermeter lamp: 230 or 120
    events: EventConfig  # udin_v (declared phase-neutral voltage) and the dip/swell/interruption thresholds
    channels: tuple[str, ...] = WAVEFORM_CHANNELS_DEFAULT  # phase-neutral voltages, in phase order a, b, c
    report_interval_s: float = 3.0  # the 150/180-cycle and 10-s values: every one (3) or one per interval
    compliance: tuple[str, ...] = ()  # standards assessed continuously (the loader's default: default_compliance)
    bus_kv: float | None = None  # IEEE 519 bus voltage, line to line [kV]; None: Udin x sqrt 3

    @property
    def udin_v(self) -> float:
        return self.events.udin_v


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
        return parse_register_map(raw, where)
    except RegisterMapError as err:
        for issue in err.issues:  # each its own issue, so check-config lists every problem of the map
            c.fail(issue.key, issue.value, issue.allowed)
        return None


def _device(c: Checker, dev: Mapping[str, Any], prefix: str) -> DeviceConfig | None:
    start = len(c.issues)
    common = {"name", "protocol", "unit_id", "poll_interval_s", "timeout_s", "retries", "map", "max_gap", "max_block"}
    tcp_keys = {"host", "port"}
    rtu_keys = {"serial_port", *LINE_SETTINGS}
    name = c.get(dev, prefix, "name", "string")
    if name is not None and not DEVICE_NAME_RE.match(name):
        c.fail(f"{prefix}.name", name, DEVICE_NAME_ALLOWED)
    protocol = c.get(dev, prefix, "protocol", "string", choices=PROTOCOLS)
    # Serial line: 1..247 (0 is broadcast, 248..255 reserved). TCP: 0..255; a device reached by its own IP
    # address is conventionally unit 0xFF (Modbus Messaging on TCP/IP Implementation Guide V1.0b, 4.4.2).
    rtu = protocol == "modbus-rtu"
    unit_id = c.get(dev, prefix, "unit_id", "integer", 1, lo=1 if rtu else 0, hi=247 if rtu else 255)
    poll = c.get(dev, prefix, "poll_interval_s", "number", 1.0, lo=0.01, hi=86400)
    timeout = c.get(dev, prefix, "timeout_s", "number", 1.0, lo=0.01, hi=60)
    retries = c.get(dev, prefix, "retries", "integer", 1, lo=0, hi=10)
    max_gap = c.get(dev, prefix, "max_gap", "integer", 8, lo=0, hi=124)
    max_block = c.get(dev, prefix, "max_block", "integer", 125, lo=1, hi=125)
    host = port = serial = None
    if protocol == "modbus-tcp":
        c.unknown(dev, prefix, common | tcp_keys)
        host = c.get(dev, prefix, "host", "string")
        port = c.get(dev, prefix, "port", "integer", 502, lo=1, hi=65535)
    elif protocol == "modbus-rtu":
        c.unknown(dev, prefix, common | rtu_keys)
        sport = c.get(dev, prefix, "serial_port", "string")
        baud = c.get(dev, prefix, "baudrate", "integer", 19200, choices=BAUDRATES)
        parity = c.get(dev, prefix, "parity", "string", "N", choices=PARITIES)
        bytesize = c.get(dev, prefix, "bytesize", "integer", 8)
        if bytesize is not None and bytesize != 8:
            # Modbus over Serial Line V1.02, 2.5.1 (from memory): RTU sends 8 data bits; 7 is ASCII mode only.
            c.fail(f"{prefix}.bytesize", bytesize, "must be 8: Modbus RTU sends 8 data bits per character "
                   "(7 data bits is Modbus ASCII, which GridEdge does not speak)")  # fmt: skip
            bytesize = None
        stopbits = c.get(dev, prefix, "stopbits", "integer", 1, choices=(1, 2))
        if sport:
            serial = SerialSettings(str(c.path(sport)) if not sport.startswith("/dev/") else sport,
                                    baud or 19200, parity or "N", bytesize or 8, stopbits or 1)  # fmt: skip
    else:  # a bad or absent protocol has its own issue; typos in the other keys are still worth naming
        c.unknown(dev, prefix, common | tcp_keys | rtu_keys)
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


def _pmu(c: Checker, raw: Mapping[str, Any], prefix: str) -> PmuStreamConfig | None:
    start = len(c.issues)
    c.unknown(raw, prefix, {"name", "host", "port", "idcode", "cfg", "udp_port", "stale_after_s", "nominal_v"})
    name = c.get(raw, prefix, "name", "string")
    host = c.get(raw, prefix, "host", "string")
    port = c.get(raw, prefix, "port", "integer", 4712, lo=1, hi=65535)
    idcode = c.get(raw, prefix, "idcode", "integer", lo=0, hi=65535)
    cfg = c.get(raw, prefix, "cfg", "integer", 2, choices=(2, 3))
    udp_port = c.get(raw, prefix, "udp_port", "integer", None, lo=1, hi=65535)
    stale = c.get(raw, prefix, "stale_after_s", "number", 2.0, lo=0.05, hi=3600)
    nominal_v = c.get(raw, prefix, "nominal_v", "number", None, lo=1, hi=1_000_000)
    if len(c.issues) > start:
        return None
    return PmuStreamConfig(name=name, host=host, idcode=idcode, port=port, cfg=cfg, udp_port=udp_port,
                           stale_after_s=float(stale), nominal_v=None if nominal_v is None else float(nominal_v))  # fmt: skip


def _pmu_monitoring(c: Checker, raw: Mapping[str, Any], pmus: Mapping[str, PmuStreamConfig]) -> PmuMonitoringConfig:
    p = "pmu_monitoring"
    timing = set(TIMING_DEFAULTS)
    c.unknown(raw, p, {"voltage_range", "voltage_lo_pu", "voltage_hi_pu", "frequency_limits", "frequency_lo_hz",
                       "frequency_hi_hz", "rocof_category", "rocof_hz_per_s", "time_quality_limit", "buffer_s",
                       "angle_pairs"} | timing)  # fmt: skip
    vrange = c.get(raw, p, "voltage_range", "string", "A", choices=tuple(VOLTAGE_LIMITS))
    vlim = VOLTAGE_LIMITS[vrange or "A"]
    vclause = vlim.source
    vlo = c.get(raw, p, "voltage_lo_pu", "number", vlim.lo, lo=0.5, hi=1.0)
    vhi = c.get(raw, p, "voltage_hi_pu", "number", vlim.hi, lo=1.0, hi=1.5)
    if "voltage_lo_pu" in raw or "voltage_hi_pu" in raw:
        vclause = "configured (voltage_lo_pu/voltage_hi_pu)"
    fname = c.get(raw, p, "frequency_limits", "string", "1547-OF1-UF1", choices=tuple(FREQUENCY_LIMITS))
    # Nominal frequency comes from each PMU's configuration frame; the table is for 60 Hz (see limits.py).
    flo, fhi = frequency_limit_hz(fname or "1547-OF1-UF1", 60)
    fclause = FREQUENCY_LIMITS[fname or "1547-OF1-UF1"].source
    flo = c.get(raw, p, "frequency_lo_hz", "number", flo, lo=-10, hi=-0.001)
    fhi = c.get(raw, p, "frequency_hi_hz", "number", fhi, lo=0.001, hi=10)
    if "frequency_lo_hz" in raw or "frequency_hi_hz" in raw:
        fclause = "configured (frequency_lo_hz/frequency_hi_hz)"
    cat = c.get(raw, p, "rocof_category", "string", "II", choices=tuple(ROCOF_LIMITS))
    rlim = ROCOF_LIMITS[cat or "II"]
    rclause = rlim.source
    rocof = c.get(raw, p, "rocof_hz_per_s", "number", rlim.hi, lo=0.01, hi=100)
    if "rocof_hz_per_s" in raw:
        rclause = "configured (rocof_hz_per_s)"
    tq = c.get(raw, p, "time_quality_limit", "integer", 4, lo=1, hi=7)
    times = {k: c.get(raw, p, k, "number", v, lo=0, hi=600) for k, v in TIMING_DEFAULTS.items()}
    buffer_s = c.get(raw, p, "buffer_s", "number", 60.0, lo=1, hi=3600)
    if vlo is not None and vhi is not None and vlo >= vhi:
        c.fail(f"{p}.voltage_lo_pu", vlo, f"must be below voltage_hi_pu ({vhi})")
    wb, wa = times["window_before_s"], times["window_after_s"]
    if buffer_s is not None and wb is not None and wa is not None and wb + wa + 1 > buffer_s:
        c.fail(f"{p}.buffer_s", buffer_s, f"must hold the event window: at least window_before_s + window_after_s + 1 "
               f"({wb + wa + 1:g} s)")  # fmt: skip
    pairs = []
    for prefix, t in c.tables(raw, "angle_pairs", p):
        start = len(c.issues)
        c.unknown(t, prefix, {"pmu_a", "pmu_b", "phasor", "limit_deg"})
        a = c.get(t, prefix, "pmu_a", "string")
        b = c.get(t, prefix, "pmu_b", "string")
        phasor = c.get(t, prefix, "phasor", "string")
        limit = c.get(t, prefix, "limit_deg", "number", lo=0.1, hi=180)
        for key, name in (("pmu_a", a), ("pmu_b", b)):
            # a [[pmus]] name, or "<name>/<station>" for one PMU block of a multi-PMU (PDC) stream
            if name is not None and name not in pmus and name.partition("/")[0] not in pmus:
                c.fail(f"{prefix}.{key}", name, "must name a [[pmus]] entry (or <entry>/<station> of a PDC stream): "
                       + (", ".join(sorted(pmus)) or "(none)"))  # fmt: skip
        if a is not None and a == b:
            c.fail(f"{prefix}.pmu_b", b, "must be another PMU than pmu_a")
        if len(c.issues) == start:
            pairs.append(AnglePairConfig(a, b, phasor, float(limit)))
    if any(v is None for v in (vlo, vhi, flo, fhi, rocof, tq, buffer_s, *times.values())):
        return PmuMonitoringConfig()  # issues recorded; the caller raises
    return PmuMonitoringConfig(
        voltage_lo_pu=float(vlo), voltage_hi_pu=float(vhi), voltage_clause=vclause,
        frequency_lo_hz=float(flo), frequency_hi_hz=float(fhi), frequency_clause=fclause,
        rocof_hz_per_s=float(rocof), rocof_clause=rclause, time_quality_limit=tq,
        **{k: float(v) for k, v in times.items()}, buffer_s=float(buffer_s), angle_pairs=tuple(pairs),
    )  # fmt: skip


def _waveform(c: Checker, raw: Mapping[str, Any], prefix: str) -> WaveformStreamConfig | None:
    start = len(c.issues)
    c.unknown(raw, prefix, {"name", "host", "port", "nominal_hz", "lamp_v", "udin_v", "channels", "report_interval_s",
                            "compliance", "bus_kv", *EVENT_KEYS})  # fmt: skip
    name = c.get(raw, prefix, "name", "string")
    host = c.get(raw, prefix, "host", "string")
    port = c.get(raw, prefix, "port", "integer", lo=1, hi=65535)
    nominal = c.get(raw, prefix, "nominal_hz", "integer", choices=(50, 60))
    lamp = c.get(raw, prefix, "lamp_v", "integer", LAMP_FOR_NOMINAL.get(nominal, 230), choices=(230, 120))
    udin = c.get(raw, prefix, "udin_v", "number", lo=1, hi=1_000_000)
    interval = c.get(raw, prefix, "report_interval_s", "number", 3.0, lo=3, hi=3600)
    channels = raw.get("channels", list(WAVEFORM_CHANNELS_DEFAULT))
    if (not isinstance(channels, list) or not 1 <= len(channels) <= 3 or len(set(map(str, channels))) != len(channels)
            or not all(isinstance(ch, str) and ch for ch in channels)):  # fmt: skip
        c.fail(f"{prefix}.channels", channels, "must be a list of 1 to 3 distinct channel names of the stream "
               "(phase-neutral voltages in phase order a, b, c; unbalance needs 3), e.g. [\"va\", \"vb\", \"vc\"]")  # fmt: skip
    thresholds = {k: c.get(raw, prefix, k, "number", lo=0, hi=200) for k in EVENT_KEYS if k in raw}
    events = None
    # imported here: the PQ chain pulls in numpy and scipy (~0.6 s), which a site without waveforms never needs
    from agent.pq.compliance import STANDARDS
    from agent.pq.events import EventConfig, EventConfigError

    standards = _waveform_compliance(c, raw, prefix, STANDARDS, nominal, udin)
    bus_kv = c.get(raw, prefix, "bus_kv", "number", None, lo=0.001, hi=1000)
    if bus_kv is not None and standards is not None and "ieee519" not in standards:
        c.fail(f"{prefix}.bus_kv", bus_kv, f"only used by ieee519, which compliance {list(standards)} does not "
               "hold: add \"ieee519\" to compliance or remove bus_kv")  # fmt: skip

    if udin is not None and None not in thresholds.values():
        try:
            events = EventConfig(udin_v=float(udin), **{k: float(v) for k, v in thresholds.items()})
        except EventConfigError as err:  # the cross-checks (thresholds against hysteresis): "key=value: allowed ..."
            key, _, rest = str(err).partition("=")
            value, _, allowed = rest.partition(": allowed ")
            c.fail(f"{prefix}.{key}", raw.get(key, value), allowed or str(err))
    if len(c.issues) > start or events is None:
        return None
    return WaveformStreamConfig(name=name, host=host, port=port, nominal_hz=nominal, lamp_v=lamp, events=events,
                                channels=tuple(channels), report_interval_s=float(interval), compliance=standards,
                                bus_kv=None if bus_kv is None else float(bus_kv))  # fmt: skip


def _waveform_compliance(c: Checker, raw: Mapping[str, Any], prefix: str, allowed: tuple[str, ...],
                         nominal: int | None, udin: float | None) -> tuple[str, ...] | None:  # fmt: skip
    """``compliance``: a list of distinct standards (may be empty: none); absent, :func:`default_compliance`."""
    key = f"{prefix}.compliance"
    value = raw.get("compliance", MISSING)
    if value is MISSING:
        return default_compliance(nominal, udin) if nominal is not None and udin is not None else None
    what = "a list of distinct standards, each one of " + ", ".join(repr(a) for a in allowed) + " (or [] for none)"
    if not isinstance(value, list):
        c.fail(key, value, f"must be {what}")
        return None
    bad = [v for v in value if v not in allowed]
    if bad:
        c.fail(key, value, f"{bad[0]!r} is not a standard: must be {what}")
        return None
    if len(set(value)) != len(value):
        c.fail(key, value, f"names a standard twice: must be {what}")
        return None
    return tuple(value)


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


def parse_config(raw: Mapping[str, Any], source: Path) -> AgentConfig:
    """Validate an already-parsed TOML document; relative paths resolve against ``source``'s folder."""
    c = Checker(source.parent)
    c.unknown(raw, "", {"site_id", "devices", "store", "uplink", "pmus", "pmu_monitoring", "waveforms"})
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
    pmus: dict[str, PmuStreamConfig] = {}
    for prefix, t in c.tables(raw, "pmus"):
        pmu = _pmu(c, t, prefix)
        if pmu is None:
            continue
        if pmu.name in pmus or pmu.name in names:
            c.fail(f"{prefix}.name", pmu.name, "must be unique among devices and PMUs")
            continue
        pmus[pmu.name] = pmu
    waveforms: dict[str, WaveformStreamConfig] = {}
    for prefix, t in c.tables(raw, "waveforms"):
        wf = _waveform(c, t, prefix)
        if wf is None:
            continue
        if wf.name in waveforms or wf.name in pmus or wf.name in names:
            c.fail(f"{prefix}.name", wf.name, "must be unique among devices, PMUs and waveform streams")
            continue
        waveforms[wf.name] = wf
    mon_raw = c.get(raw, "", "pmu_monitoring", "table", {}) or {}
    monitoring = _pmu_monitoring(c, mon_raw, pmus)
    store_raw = c.get(raw, "", "store", "table", {}) or {}
    c.unknown(store_raw, "store", {"path", "max_mb", "batch_size"})
    spath = c.path(c.get(store_raw, "store", "path", "string", "gridedge.db"))
    if spath is not None:
        _store_path(c, spath)
    max_mb = c.get(store_raw, "store", "max_mb", "number", 256, lo=1, hi=1_000_000)
    batch = c.get(store_raw, "store", "batch_size", "integer", 500, lo=1, hi=10_000)
    uplink_raw = c.get(raw, "", "uplink", "table")
    uplink = _uplink(c, uplink_raw, site) if uplink_raw is not None else None
    if c.issues:
        raise ConfigError(str(source), c.issues)
    assert uplink is not None and spath is not None
    return AgentConfig(site_id=site, devices=tuple(devices),
                       store=StoreConfig(path=spath, max_bytes=int(max_mb * 1024 * 1024), batch_size=batch),
                       uplink=uplink, source=source, pmus=tuple(pmus.values()),
                       pmu_monitoring=monitoring, waveforms=tuple(waveforms.values()))  # fmt: skip


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
    url = c.broker_url("--broker", broker)
    if url is None:
        raise ConfigError("command line", c.issues)
    return replace(config, uplink=replace(config.uplink, host=url.host, port=url.port, tls=url.tls))
