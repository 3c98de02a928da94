"""The bench's TOML file -> typed, validated configuration.

::

    [bench]
    speed = 1.0        # simulated seconds per wall second
    step_s = 1.0       # simulated seconds per step
    seed = 1
    start = "2026-06-01T00:00:00Z"   # optional: the simulated clock's start (default: wall clock at start)

    [[buses]]
    name = "bus1"
    link = "../run/rtu-bus1"   # the agent opens this pty; the simulator serves "<link>-sim"
    baudrate = 19200

    [[devices]]
    name = "sub-meter"
    kind = "meter"
    map = "maps/sim-meter.toml"
    protocol = "modbus-tcp"      # or "modbus-rtu" with bus = "bus1"
    host = "127.0.0.1"
    port = 15020
    unit_id = 1
    load_kw = 3000.0

A bench with physics (config/sim-ieee13.toml) adds the feeder, physics-driven device kinds whose
``options`` table is checked by the device model itself, PMUs and a scenario::

    [feeder]
    dss = "ieee13/IEEE13.dss"   # the OpenDSS model (sim_hw/feeder, docs/feeder.md)
    irradiance = "cloudy"       # "clear" | "cloudy" | "none": the PV sites' day
    load = "default"            # the load profile
    load_model = "exponential"  # "exponential" (voltage-dependent, the default) | "published" (the script's own)
    pv_kva = { pv675 = 3500.0 } # optional: rate PV sites above the script's ratings [kVA]
    head = "Line.650632/1"      # the feeder head's terminal: its P and Q and energy go into the truth log

    [[devices]]
    name = "pv675"
    kind = "inverter"           # meter | feeder-meter | inverter | capbank | regulator | relay
    protocol = "modbus-tcp"
    port = 15030
    options = { site = "pv675" }

    [[pmus]]
    name = "pmu-671"
    bus = "671"                 # the voltages of this bus
    current = "Line.632671/2"   # optional: the currents of this element terminal
    idcode = 671
    port = 14712
    rate = 60                   # 10..120 frames/s
    udp_port = 14713            # optional: data as UDP datagrams to this port of each client (commands on TCP)

    scenario = "scenarios/ieee13-day.toml"   # optional: scripted events (sim_hw/scenarios)

Realistic profiles (sim_hw/feeder/bdew.py, docs/feeder.md "Realistic profiles"): BDEW customer classes per
load, typical-year weather and PV; what ``gridedge sim history`` writes and, with ``source = "bdew"``, what the
running bench follows::

    [profiles]
    source = "daily"            # "daily": [feeder] irradiance and load | "bdew"
    tmy = "723170TYA.CSV"       # a TMY3 file in pvlib's wheel
    classes = { "671" = "G0" }  # load = BDEW class (H0, G0-G6, L0-L2)

Sampled waveforms for power quality (sim_hw/waveforms, docs/devices/sim-waveforms.md), each a live wave
stream; a bench may hold only these (no ``[[devices]]``)::

    [[waveforms]]
    name = "pq-feeder"
    port = 14800
    description = "waveforms/flicker-dip.toml"   # a TOML file whose [waveform] table describes the signal
    speed = 1.0          # optional: signal seconds per wall second (inf: as fast as the client reads); default [bench] speed
    duration_s = 700.0   # optional: the stream ends (END frame) after this much signal; default endless
    block_s = 0.02       # optional: samples per frame, in seconds of signal

Paths are relative to the config file's folder. Every problem is collected and reported with its key
path, the bad value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from protocols.configcheck import MISSING, Checker, ConfigError, ConfigIssue
from protocols.modbus.registermap import RegisterMap, RegisterMapError, parse_register_map

KINDS = ("meter", "feeder-meter", "inverter", "capbank", "regulator", "relay")
PHYSICS_KINDS = frozenset(KINDS) - {"meter"}  # driven by the feeder: need a [feeder]
MAP_OPTIONAL = frozenset({"inverter"})  # SunSpec: the map is built from the SunSpec model definitions
IRRADIANCE_DAYS = ("clear", "cloudy", "none")
LOAD_MODELS = ("exponential", "published")  # sim_hw/feeder/model.py: the time series' loads
PROTOCOLS = ("modbus-tcp", "modbus-rtu")
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
PARITIES = ("N", "E", "O")
SIM_SUFFIX = "-sim"

__all__ = ["BenchConfig", "BenchConfigError", "BenchSettings", "BusConfig", "ConfigIssue", "DeviceSpec",
           "FeederSettings", "PmuSpec", "WaveformSpec", "load_bench_config", "parse_bench_config"]  # fmt: skip


class BenchConfigError(ConfigError):
    """The bench configuration cannot be used; ``issues`` lists every problem found."""


@dataclass(frozen=True, slots=True)
class BenchSettings:
    speed: float = 1.0
    step_s: float = 1.0
    seed: int = 1
    start: float | None = None  # simulated clock at step 0 [s since the epoch, UTC]; None = wall clock


@dataclass(frozen=True, slots=True)
class BusConfig:
    """An RS-485 line: a socat pty pair whose ``link`` end the agent opens."""

    name: str
    link: Path
    baudrate: int = 19200
    parity: str = "N"
    bytesize: int = 8
    stopbits: int = 1

    @property
    def sim_path(self) -> Path:
        """The end the simulator's server opens."""
        return self.link.with_name(self.link.name + SIM_SUFFIX)

    @property
    def framing(self) -> str:
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    name: str
    kind: str
    protocol: str
    unit_id: int
    register_map: RegisterMap | None  # None: the model builds its own (SunSpec inverter)
    map_path: Path | None
    load_kw: float = 0.0
    host: str | None = None  # modbus-tcp
    port: int | None = None  # modbus-tcp
    bus: str | None = None  # modbus-rtu
    options: Mapping[str, Any] = field(default_factory=dict)  # the device model's own settings


@dataclass(frozen=True, slots=True)
class FeederSettings:
    dss: Path
    irradiance: str = "clear"
    load: str = "default"
    load_model: str = "exponential"
    pv_kva: Mapping[str, float] = field(default_factory=dict)  # PV site -> rating [kVA] overriding the script's
    head: str = "Line.650632/1"  # "<element>/<terminal>" of the feeder head


@dataclass(frozen=True, slots=True)
class PmuSpec:
    """A simulated PMU on a feeder bus (sim_hw/devices/pmu.py over sim_hw/devices/feeder_pmu.py)."""

    name: str
    bus: str
    idcode: int
    host: str
    port: int
    rate: int = 30
    current: str | None = None  # "<element>/<terminal>"
    udp_port: int | None = None
    version: int = 2011


@dataclass(frozen=True, slots=True)
class WaveformSpec:
    """A live wave stream of a synthesised waveform (sim_hw/waveforms/stream.py)."""

    name: str
    host: str
    port: int
    description: Path
    desc: Any  # sim_hw.waveforms.WaveformDesc, validated at load
    speed: float | None = None  # None: the bench's speed
    duration_s: float | None = None
    block_s: float = 0.02
    bus: str | None = None  # the feeder bus whose solved voltages scale the stream's va, vb, vc (needs [feeder])


@dataclass(frozen=True, slots=True)
class BenchConfig:
    bench: BenchSettings
    devices: tuple[DeviceSpec, ...]
    buses: tuple[BusConfig, ...]
    source: Path
    feeder: FeederSettings | None = None
    pmus: tuple[PmuSpec, ...] = ()
    scenario: Path | None = None
    waveforms: tuple[WaveformSpec, ...] = ()
    profiles: Any = None  # sim_hw.feeder.bdew.ProfileSettings when the config has a [profiles] table

    def bus(self, name: str) -> BusConfig:
        for b in self.buses:
            if b.name == name:
                return b
        raise KeyError(name)


def _start(c: Checker, raw: Any) -> float | None:
    if raw is MISSING:
        return None
    if isinstance(raw, datetime):  # a TOML offset date-time
        dt = raw
    elif isinstance(raw, str):
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            dt = None
    else:
        dt = None
    if dt is None or dt.tzinfo is None:
        c.fail("bench.start", raw, "must be a date-time with its UTC offset, e.g. 2026-06-01T00:00:00Z")
        return None
    return dt.timestamp()


def _bench(c: Checker, data: Mapping[str, Any]) -> BenchSettings:
    raw = data.get("bench", {})
    if not isinstance(raw, Mapping):
        c.fail("bench", raw, "must be a table ([bench])")
        return BenchSettings()
    c.unknown(raw, "bench", {"speed", "step_s", "seed", "start"})
    speed = c.get(raw, "bench", "speed", "number", 1.0, lo=0.001, hi=10000)
    step_s = c.get(raw, "bench", "step_s", "number", 1.0, lo=0.01, hi=3600)
    seed = c.get(raw, "bench", "seed", "integer", 1)
    start = _start(c, raw.get("start", MISSING))
    return BenchSettings(
        speed=float(speed or 1.0), step_s=float(step_s or 1.0), seed=seed if seed is not None else 1, start=start
    )


def _buses(c: Checker, data: Mapping[str, Any]) -> list[BusConfig]:
    out: list[BusConfig] = []
    names: set[str] = set()
    links: set[Path] = set()
    for prefix, raw in c.tables(data, "buses"):
        start = len(c.issues)
        c.unknown(raw, prefix, {"name", "link", "baudrate", "parity", "bytesize", "stopbits"})
        name = c.get(raw, prefix, "name", "string")
        link = c.get(raw, prefix, "link", "string")
        baud = c.get(raw, prefix, "baudrate", "integer", 19200, choices=BAUDRATES)
        parity = c.get(raw, prefix, "parity", "string", "N", choices=PARITIES)
        bytesize = c.get(raw, prefix, "bytesize", "integer", 8, choices=(7, 8))
        stopbits = c.get(raw, prefix, "stopbits", "integer", 1, choices=(1, 2))
        if name is not None and name in names:
            c.fail(f"{prefix}.name", name, "must be unique among [[buses]]")
        path = c.path(link)
        if path is not None:
            if path in links:
                c.fail(f"{prefix}.link", link, "must be unique among [[buses]]")
            links.add(path)
        if len(c.issues) == start and name is not None and path is not None:
            names.add(name)
            out.append(BusConfig(name, path, baud, parity, bytesize, stopbits))
    return out


def _register_map(c: Checker, raw: Mapping[str, Any], prefix: str) -> tuple[RegisterMap, Path] | None:
    value = c.get(raw, prefix, "map", "string")
    path = c.path(value)
    if path is None:
        return None
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        c.fail(f"{prefix}.map", value, f"no such register map file ({path})")
        return None
    except (OSError, tomllib.TOMLDecodeError) as err:
        c.fail(f"{prefix}.map", value, f"cannot read register map file: {err}")
        return None
    try:
        return parse_register_map(data, f"{prefix}.map({path.name})"), path
    except RegisterMapError as err:
        for issue in err.issues:  # every mistake of the map, not only the first
            c.fail(issue.key, issue.value, issue.allowed)
        return None


def _devices(c: Checker, data: Mapping[str, Any], buses: list[BusConfig]) -> list[DeviceSpec]:
    out: list[DeviceSpec] = []
    bus_names = tuple(b.name for b in buses)
    names: set[str] = set()
    seats: dict[tuple[str, Any], str] = {}  # (server, unit_id) -> device: one unit id per server
    raws = c.tables(data, "devices")
    if not raws and "devices" not in data and "waveforms" not in data:
        c.fail("devices", MISSING, "is required: at least one [[devices]] table")
    for prefix, raw in raws:
        start = len(c.issues)
        common = {"name", "kind", "map", "protocol", "unit_id", "load_kw", "options"}
        protocol = c.get(raw, prefix, "protocol", "string", choices=PROTOCOLS)
        extra = {"host", "port"} if protocol == "modbus-tcp" else {"bus"} if protocol == "modbus-rtu" else set()
        c.unknown(raw, prefix, common | extra)
        name = c.get(raw, prefix, "name", "string")
        kind = c.get(raw, prefix, "kind", "string", "meter", choices=KINDS)
        lo_unit = 1 if protocol == "modbus-rtu" else 0
        unit_id = c.get(raw, prefix, "unit_id", "integer", 1, lo=lo_unit, hi=247)
        load_kw = c.get(raw, prefix, "load_kw", "number", 0.0, lo=-1e6, hi=1e6)
        options = raw.get("options", {})
        if not isinstance(options, Mapping):
            c.fail(f"{prefix}.options", options, "must be a table of the device model's settings")
            options = {}
        mapped: tuple[RegisterMap | None, Path | None] | None
        mapped = (None, None) if kind in MAP_OPTIONAL and "map" not in raw else _register_map(c, raw, prefix)
        host = port = bus = None
        if protocol == "modbus-tcp":
            host = c.get(raw, prefix, "host", "string", "127.0.0.1")
            if host is not None:
                try:
                    ipaddress.ip_address(host)
                except ValueError:
                    c.fail(f"{prefix}.host", host, "must be an IP address (the bench serves on loopback)")
            port = c.get(raw, prefix, "port", "integer", lo=1, hi=65535)
            server: Any = (host, port)
        else:
            bus = c.get(raw, prefix, "bus", "string", choices=bus_names or ("(no [[buses]] defined)",))
            server = bus
        if name is not None:
            if name in names:
                c.fail(f"{prefix}.name", name, "must be unique among [[devices]]")
            names.add(name)
        if unit_id is not None and None not in (server if isinstance(server, tuple) else (server,)):
            other = seats.get((str(server), unit_id))
            if other is not None:
                c.fail(f"{prefix}.unit_id", unit_id, f"already used by device {other!r} on the same port or bus")
            else:
                seats[(str(server), unit_id)] = name
        if len(c.issues) == start and mapped is not None:
            out.append(
                DeviceSpec(
                    name=name,
                    kind=kind,
                    protocol=protocol,
                    unit_id=unit_id,
                    register_map=mapped[0],
                    map_path=mapped[1],
                    load_kw=float(load_kw),
                    host=host,
                    port=port,
                    bus=bus,
                    options=dict(options),
                )
            )
    return out


def _feeder(c: Checker, data: Mapping[str, Any]) -> FeederSettings | None:
    raw = data.get("feeder", MISSING)
    if raw is MISSING:
        return None
    if not isinstance(raw, Mapping):
        c.fail("feeder", raw, "must be a table ([feeder])")
        return None
    c.unknown(raw, "feeder", {"dss", "irradiance", "load", "load_model", "pv_kva", "head"})
    dss = c.get(raw, "feeder", "dss", "string")
    irradiance = c.get(raw, "feeder", "irradiance", "string", "clear", choices=IRRADIANCE_DAYS)
    load = c.get(raw, "feeder", "load", "string", "default", choices=("default",))
    load_model = c.get(raw, "feeder", "load_model", "string", "exponential", choices=LOAD_MODELS)
    head = c.get(raw, "feeder", "head", "string", "Line.650632/1")
    if head is not None and (head.count("/") != 1 or not head.partition("/")[2].isdigit()):
        c.fail("feeder.head", head, 'must be "<element>/<terminal>", e.g. "Line.650632/1"')
        head = None
    pv_kva: dict[str, float] = {}
    raw_kva = raw.get("pv_kva", {})
    if not isinstance(raw_kva, Mapping):
        c.fail("feeder.pv_kva", raw_kva, "must be a table of PV site = rating [kVA], e.g. { pv675 = 3500.0 }")
    else:
        for site, kva in raw_kva.items():
            if isinstance(kva, bool) or not isinstance(kva, int | float) or not 0 < kva <= 20_000:
                c.fail(f"feeder.pv_kva.{site}", kva, "must be a rating in kVA, 0 < kva <= 20000")
            else:
                pv_kva[str(site).lower()] = float(kva)
    path = c.path(dss)
    if path is not None and not path.is_file():
        c.fail("feeder.dss", dss, f"no such OpenDSS file ({path})")
        return None
    if path is None or irradiance is None or load is None or load_model is None or head is None:
        return None
    return FeederSettings(path, irradiance, load, load_model, pv_kva, head)


def _pmus(c: Checker, data: Mapping[str, Any], taken: set[tuple[str, int]]) -> list[PmuSpec]:
    out: list[PmuSpec] = []
    names: set[str] = set()
    for prefix, raw in c.tables(data, "pmus"):
        start = len(c.issues)
        c.unknown(raw, prefix, {"name", "bus", "current", "idcode", "host", "port", "rate", "udp_port", "version"})
        name = c.get(raw, prefix, "name", "string")
        bus = c.get(raw, prefix, "bus", "string")
        current = c.get(raw, prefix, "current", "string", None)
        idcode = c.get(raw, prefix, "idcode", "integer", lo=1, hi=65534)
        host = c.get(raw, prefix, "host", "string", "127.0.0.1")
        port = c.get(raw, prefix, "port", "integer", lo=1, hi=65535)
        rate = c.get(raw, prefix, "rate", "integer", 30, lo=10, hi=120)
        udp_port = c.get(raw, prefix, "udp_port", "integer", None, lo=1, hi=65535)
        version = c.get(raw, prefix, "version", "integer", 2011, choices=(2005, 2011))
        if name is not None:
            if name in names:
                c.fail(f"{prefix}.name", name, "must be unique among [[pmus]]")
            names.add(name)
        if current is not None and "/" not in current:
            c.fail(f"{prefix}.current", current, 'must be "<element>/<terminal>", e.g. "Line.632671/2"')
        if host is not None and port is not None:
            if (host, port) in taken:
                c.fail(f"{prefix}.port", port, "is already used by another device or PMU")
            taken.add((host, port))
        if len(c.issues) == start:
            out.append(PmuSpec(name, bus, idcode, host, port, rate, current, udp_port, version))
    return out


def _waveforms(c: Checker, data: Mapping[str, Any], taken: set[tuple[str, int]]) -> list[WaveformSpec]:
    out: list[WaveformSpec] = []
    names: set[str] = set()
    for prefix, raw in c.tables(data, "waveforms"):
        from sim_hw.waveforms import DescriptionError, WaveformDesc  # numpy: only for a bench with waveforms

        start = len(c.issues)
        c.unknown(raw, prefix, {"name", "host", "port", "description", "speed", "duration_s", "block_s", "bus"})
        bus = c.get(raw, prefix, "bus", "string", None)
        name = c.get(raw, prefix, "name", "string")
        host = c.get(raw, prefix, "host", "string", "127.0.0.1")
        port = c.get(raw, prefix, "port", "integer", lo=1, hi=65535)
        speed = c.get(raw, prefix, "speed", "number", None, lo=0.001)  # inf allowed: as fast as the client reads
        duration = c.get(raw, prefix, "duration_s", "number", None, lo=0.001, hi=1e9)
        block_s = c.get(raw, prefix, "block_s", "number", 0.02, lo=0.0001, hi=10)
        value = c.get(raw, prefix, "description", "string")
        path = c.path(value)
        desc = None
        if path is not None:
            try:
                with path.open("rb") as fh:
                    table = tomllib.load(fh).get("waveform", MISSING)
                if table is MISSING:
                    c.fail(f"{prefix}.description", value, f"the file ({path}) must hold a [waveform] table")
                else:
                    desc = WaveformDesc.from_dict(table)
            except FileNotFoundError:
                c.fail(f"{prefix}.description", value, f"no such waveform description file ({path})")
            except (OSError, tomllib.TOMLDecodeError) as err:
                c.fail(f"{prefix}.description", value, f"cannot read the waveform description: {err}")
            except DescriptionError as err:
                c.fail(f"{prefix}.description({path.name}).waveform.{err.key}", err.value, f"allowed {err.allowed}")
        if host is not None:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                c.fail(f"{prefix}.host", host, "must be an IP address (the bench serves on loopback)")
        if name is not None:
            if name in names:
                c.fail(f"{prefix}.name", name, "must be unique among [[waveforms]]")
            names.add(name)
        if host is not None and port is not None:
            if (host, port) in taken:
                c.fail(f"{prefix}.port", port, "is already used by another device, PMU or waveform stream")
            taken.add((host, port))
        if len(c.issues) == start and desc is not None and path is not None:
            out.append(WaveformSpec(name, host, port, path, desc, None if speed is None else float(speed),
                                    None if duration is None else float(duration), float(block_s),
                                    None if bus is None else bus.lower()))  # fmt: skip
    return out


def _check_options(c: Checker, devices: list[DeviceSpec], step_s: float) -> None:
    """Each device model checks its own options: build it once now, so a bad value fails the config load."""
    from sim_hw.devices.registry import BuildContext, DeviceOptionsError, build_model, model_register_map

    for i, d in enumerate(devices):
        ctx = BuildContext(seed=0, clock=lambda: 0.0, load_kw=d.load_kw, register_map=d.register_map, step_s=step_s)
        try:
            model_register_map(build_model(d.kind, d.name, d.options, ctx), d.register_map)
        except DeviceOptionsError as err:
            c.fail(
                f"devices[{i}].{err.key}" if err.key != "options" else f"devices[{i}].options",
                dict(d.options),
                str(err),
            )


def parse_bench_config(data: Mapping[str, Any], source: Path) -> BenchConfig:
    """Validate a parsed TOML document; ``source`` is the file it came from (paths are relative to its folder)."""
    c = Checker(source.parent)
    c.unknown(data, "", {"bench", "buses", "devices", "feeder", "pmus", "profiles", "scenario", "waveforms"})
    bench = _bench(c, data)
    buses = _buses(c, data)
    devices = _devices(c, data, buses)
    feeder = _feeder(c, data)
    pmus = _pmus(c, data, {(str(d.host), int(d.port)) for d in devices if d.port is not None})
    taken = {(str(d.host), int(d.port)) for d in devices if d.port is not None} | {(p.host, p.port) for p in pmus}
    waveforms = _waveforms(c, data, taken)
    profiles = None
    if "profiles" in data:
        from sim_hw.feeder.bdew import parse_profiles  # the realistic profiles: docs/feeder.md, "Profiles"

        profiles = parse_profiles(c, data["profiles"])
        if "feeder" not in data:
            c.fail("profiles", "[profiles]", "drives the feeder's loads and PV: add a [feeder] table")
    scenario = None
    if "scenario" in data:
        raw_scn = c.get(data, "", "scenario", "string")
        scenario = c.path(raw_scn)
        if scenario is not None and not scenario.is_file():
            c.fail("scenario", raw_scn, f"no such scenario file ({scenario})")
    _check_options(c, devices, step_s=bench.step_s)
    if feeder is None and "feeder" not in data:
        for i, d in enumerate(devices):
            if d.kind in PHYSICS_KINDS:
                c.fail(f"devices[{i}].kind", d.kind, "needs the feeder's physics: add a [feeder] table")
        if pmus:
            c.fail("pmus", f"{len(pmus)} PMU(s)", "need the feeder's physics: add a [feeder] table")
        if scenario is not None:
            c.fail("scenario", data.get("scenario"), "needs a [feeder] table (the physics plays the events)")
        for i, w in enumerate(waveforms):
            if w.bus is not None:
                c.fail(f"waveforms[{i}].bus", w.bus, "follows the feeder's physics: add a [feeder] table")
    if c.issues:
        raise BenchConfigError(str(source), c.issues)
    return BenchConfig(
        bench=bench,
        devices=tuple(devices),
        buses=tuple(buses),
        source=source,
        feeder=feeder,
        pmus=tuple(pmus),
        scenario=scenario,
        waveforms=tuple(waveforms),
        profiles=profiles,
    )


def load_bench_config(path: str | Path) -> BenchConfig:
    """Read and validate the bench's TOML file. Raises BenchConfigError (also for a missing or bad file)."""
    path = Path(path).resolve()
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise BenchConfigError(str(path), [ConfigIssue("(file)", str(path), "no such file")]) from None
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise BenchConfigError(str(path), [ConfigIssue("(file)", str(path), f"cannot read: {err}")]) from err
    return parse_bench_config(data, path)


# The keys whose string values the loader takes as paths relative to the file's folder, by the table they sit in
# ("" for the top level; arrays of tables by their name).
PATH_KEYS: Mapping[str, frozenset[str]] = {
    "": frozenset({"scenario"}),
    "feeder": frozenset({"dss"}),
    "buses": frozenset({"link"}),
    "devices": frozenset({"map"}),
    "waveforms": frozenset({"description"}),
}
_TABLE = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?")
_PATH_LINE = re.compile(r"""^(\s*([A-Za-z0-9_-]+)\s*=\s*)("([^"\\]*)"|'([^']*)')""")


def with_absolute_paths(text: str, base: Path) -> str:
    """The TOML text of a bench config with every relative path made absolute against ``base``.

    ``base`` is the folder of the file ``text`` came from: a copy written anywhere else (a benchmark's or a test's
    temporary folder) then loads the same register maps, OpenDSS model, scenario and waveform descriptions.
    Comments and layout stay. A path the rewrite cannot reach (written inside an inline table or a multi-line
    string) raises ValueError naming its key rather than leaving the copy to fail later.
    """
    table = ""
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        header = _TABLE.match(line)
        if header:
            table = header.group(1)
        else:
            m = _PATH_LINE.match(line)
            if m and m.group(2) in PATH_KEYS.get(table, ()):
                value = m.group(4) if m.group(4) is not None else m.group(5)
                path = Path(os.path.normpath(base / value))  # an absolute value stays as it is
                line = f"{m.group(1)}{json.dumps(str(path))}{line[m.end() :]}"
        out.append(line)
    result = "".join(out)
    data = tomllib.loads(result)
    for table_name, keys in PATH_KEYS.items():
        node = data if not table_name else data.get(table_name)
        for item in node if isinstance(node, list) else [node]:
            if not isinstance(item, Mapping):
                continue
            for key in keys:
                value = item.get(key)
                if isinstance(value, str) and not Path(value).is_absolute():
                    where = f"{table_name}.{key}" if table_name else key
                    raise ValueError(f"{where} = {value!r}: a relative path this rewrite does not reach")
    return result
