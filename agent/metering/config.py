"""The ``[metering]`` section of the site file -> typed configuration (docs/metering.md, "Configuration").

agent/config.py hands the section, with its shared Checker and the site's devices (name -> register map, None
for a device without a hand-written map), to :func:`parse_metering`; every problem is recorded there with its
key path, value and what is allowed. :func:`engine` builds the interval engine of one configured register,
:func:`engines` every one, keyed ``<device>.<point>`` and resumed from stored states.

```toml
[metering]
interval_s = 900          # 300, 900, 1800 or 3600
estimate_span_s = 3600    # gaps up to this are interpolated (S, method 17); longer stay null (N)
actual_span_s = 10        # reads at most this far apart around a boundary make it actual (A)
spike_margin = 1.5        # spike bound = rated_kw x interval x spike_margin

[[metering.meters]]
device = "fdr-671-meter"  # a [[devices]] name
rated_kw = 2000           # the meter's rated power (kW; the kvar bound of kvarh registers too)
registers = { energy_delivered_wh = "kwh_delivered", energy_received_wh = "kwh_received" }
identity = ["serial_number", "model"]
```

``registers`` maps a point of the device's map to its channel, or to a table ``{ channel = ..., modulus = ...,
scale = ... }``; absent, every ``kind = "energy"`` point whose name says ``delivered`` or ``received`` and whose
unit is Wh, kWh, MWh, varh, kvarh or Mvarh is taken. The modulus (where the counter wraps, in the point's
engineering unit) comes from the point's type: 2**16, 2**32, 2**64 register counts times the map's scale; a
float point has none unless configured. ``scale`` (engineering unit -> kWh or kvarh) comes from the unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.metering.intervals import RegisterIntervals
from protocols.configcheck import MISSING, Checker
from protocols.modbus.registermap import DataType, PointKind, RegisterMap, RegisterPoint
from protocols.telemetry.intervals import CHANNELS, INTERVAL_LENGTHS_S

METERING_KEYS = frozenset({"interval_s", "estimate_span_s", "actual_span_s", "spike_margin", "meters"})
METER_KEYS = frozenset({"device", "rated_kw", "registers", "identity"})
REGISTER_KEYS = frozenset({"channel", "modulus", "scale"})
DEFAULT_IDENTITY = ("serial_number", "model")
# engineering unit -> factor to kWh (active) or kvarh (reactive)
ACTIVE_UNITS = {"Wh": 0.001, "kWh": 1.0, "MWh": 1000.0}
REACTIVE_UNITS = {"varh": 0.001, "kvarh": 1.0, "Mvarh": 1000.0}
# counts of an integer register before it wraps; signed counters wrap over the same range
WIDTHS = {
    DataType.UINT16: 2**16, DataType.INT16: 2**16, DataType.UINT32: 2**32, DataType.INT32: 2**32,
    DataType.UINT64: 2**64, DataType.INT64: 2**64,
}  # fmt: skip
NUMERIC = frozenset(WIDTHS) | {DataType.FLOAT32, DataType.FLOAT64}


@dataclass(frozen=True, slots=True)
class RegisterConfig:
    """One energy register of a meter: its point, channel, wrap and scale to kWh/kvarh."""

    point: str  # the point name in the device's map (the item's ``register``)
    channel: str  # one of CHANNELS
    modulus: int | float | None  # where the counter wraps [engineering unit]; None: it does not
    to_unit: float  # engineering unit -> kWh or kvarh
    resolution: float  # one count [engineering unit]: the map's scale for an integer register


@dataclass(frozen=True, slots=True)
class MeterConfig:
    """One ``[[metering.meters]]`` entry."""

    device: str
    rated_kw: float
    registers: tuple[RegisterConfig, ...]
    identity: tuple[str, ...] = ()  # points whose values make the meter_id (rule 5)

    def meter_id(self, values: Mapping[str, Any]) -> str | None:
        """The identity string (``"<serial_number>/<model>"``) from the identity points' latest values; None
        when there is no identity point or one of them has no value."""
        if not self.identity:
            return None
        parts = [values.get(p) for p in self.identity]
        if any(v is None or v == "" for v in parts):
            return None
        return "/".join(str(v).strip() for v in parts)


@dataclass(frozen=True, slots=True)
class MeteringConfig:
    """``[metering]``."""

    interval_s: int = 900
    estimate_span_s: float = 3600.0
    actual_span_s: float = 10.0
    spike_margin: float = 1.5
    meters: tuple[MeterConfig, ...] = ()


def engine_params(cfg: MeteringConfig, meter: MeterConfig, register: RegisterConfig) -> dict[str, Any]:
    """The engine's keyword parameters: spike bound = rated_kw x interval x spike_margin, in raw units."""
    max_kwh = meter.rated_kw * cfg.interval_s / 3600 * cfg.spike_margin
    return {
        "interval_s": cfg.interval_s, "modulus": register.modulus, "to_unit": register.to_unit,
        "max_delta": max_kwh / register.to_unit, "estimate_span_s": cfg.estimate_span_s,
        "actual_span_s": cfg.actual_span_s, "resolution": register.resolution,
    }  # fmt: skip


def engine(cfg: MeteringConfig, meter: MeterConfig, register: RegisterConfig) -> RegisterIntervals:
    """A new interval engine of one register."""
    return RegisterIntervals(meter.device, register.point, register.channel, **engine_params(cfg, meter, register))


def engines(cfg: MeteringConfig, states: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, RegisterIntervals]:
    """Every configured register's engine, keyed by its reading's point id ``<device>.<point>`` (the key to store
    its state under); resumed from ``states[key]`` when there is one (the store's last committed states)."""
    out: dict[str, RegisterIntervals] = {}
    for m in cfg.meters:
        for r in m.registers:
            key = f"{m.device}.{r.point}"
            state = (states or {}).get(key)
            if state is None:
                out[key] = engine(cfg, m, r)
            else:
                out[key] = RegisterIntervals.from_state(state, m.device, r.point, r.channel, **engine_params(cfg, m, r))
    return out


def _channel_units(channel: str) -> dict[str, float]:
    return ACTIVE_UNITS if channel.startswith("kwh") else REACTIVE_UNITS


def _register(c: Checker, key: str, point: RegisterPoint | None, raw: Any, map_name: str) -> RegisterConfig | None:
    start = len(c.issues)
    if isinstance(raw, str):
        spec: Mapping[str, Any] = {"channel": raw}
        channel_key = key
    elif isinstance(raw, Mapping):
        spec = raw
        channel_key = f"{key}.channel"
        c.unknown(raw, key, REGISTER_KEYS)
    else:
        c.fail(key, raw, f"must be a channel ({', '.join(CHANNELS)}) or a table of {', '.join(sorted(REGISTER_KEYS))}")
        return None
    channel = spec.get("channel", MISSING)
    if channel not in CHANNELS:
        c.fail(channel_key, channel, f"must be one of {', '.join(CHANNELS)}")
        channel = None
    if point is None:
        c.fail(key, raw, f"names no point of register map {map_name!r}")
        return None
    if point.dtype not in NUMERIC:
        c.fail(key, raw, f"point {point.name!r} is a {point.dtype.value}: an energy register is a number")
        return None
    if point.kind is not PointKind.ENERGY:
        c.fail(key, raw, f"point {point.name!r} must be kind = \"energy\" in map {map_name!r} (settlement-grade: "
               "the store never drops it)")  # fmt: skip
    modulus = None
    if point.dtype in WIDTHS:
        scale_abs = abs(point.scale)
        # kept an int where it is one: a float 2**64 would round the deltas of a uint64 counter
        modulus = WIDTHS[point.dtype] * (int(scale_abs) if float(scale_abs).is_integer() else scale_abs)
    if isinstance(spec, Mapping) and "modulus" in spec:
        modulus = c.get(spec, key, "modulus", "number", lo=1)
    scale = None
    if channel is not None:
        units = _channel_units(channel)
        scale = units.get(point.unit)
        if "scale" in spec:
            scale = c.get(spec, key, "scale", "number", lo=1e-12, hi=1e12)
        elif scale is None:
            c.fail(key, raw, f"point {point.name!r} has unit {point.unit!r}: {channel} needs one of "
                   f"{', '.join(units)}, or give scale (its unit -> {'kWh' if units is ACTIVE_UNITS else 'kvarh'})")  # fmt: skip
    if len(c.issues) > start or channel is None or scale is None:
        return None
    resolution = abs(point.scale) if point.dtype in WIDTHS else 0.0
    return RegisterConfig(point.name, channel, modulus, float(scale), resolution)


def _default_registers(rmap: RegisterMap) -> dict[str, str]:
    """Every energy point whose name says delivered/received and whose unit is an energy unit -> its channel."""
    out: dict[str, str] = {}
    for p in rmap.points:
        if p.kind is not PointKind.ENERGY or p.dtype not in NUMERIC:
            continue
        direction = "delivered" if "delivered" in p.name else "received" if "received" in p.name else None
        kind = "kwh" if p.unit in ACTIVE_UNITS else "kvarh" if p.unit in REACTIVE_UNITS else None
        if direction and kind:
            out[p.name] = f"{kind}_{direction}"
    return out


def _meter(
    c: Checker, t: Mapping[str, Any], prefix: str, devices: Mapping[str, RegisterMap | None]
) -> MeterConfig | None:
    start = len(c.issues)
    c.unknown(t, prefix, METER_KEYS)
    device = c.get(t, prefix, "device", "string")
    rated = c.get(t, prefix, "rated_kw", "number", lo=0.001, hi=10_000_000)
    rmap = None
    if device is not None:
        if device not in devices:
            c.fail(
                f"{prefix}.device", device, "must name a [[devices]] entry: " + (", ".join(sorted(devices)) or "(none)")
            )
        elif devices[device] is None:
            c.fail(f"{prefix}.device", device, "must be a device with a register map (modbus-tcp or modbus-rtu)")
        else:
            rmap = devices[device]
    regs_raw = t.get("registers", MISSING)
    registers: list[RegisterConfig] = []
    identity: tuple[str, ...] = ()
    if rmap is not None:
        names = {p.name: p for p in rmap.points}
        if regs_raw is MISSING:
            regs_raw = _default_registers(rmap)
            if not regs_raw:
                c.fail(f"{prefix}.registers", MISSING, f"map {rmap.name!r} has no kind = \"energy\" point named "
                       "*delivered* or *received* in Wh/varh: list the registers, e.g. { energy_wh = \"kwh_delivered\" }")  # fmt: skip
        elif not isinstance(regs_raw, Mapping) or not regs_raw:
            c.fail(f"{prefix}.registers", regs_raw, "must be a non-empty table: point name -> channel")
            regs_raw = {}
        if isinstance(regs_raw, Mapping):
            channels: dict[str, str] = {}
            for name, raw in regs_raw.items():
                key = f"{prefix}.registers.{name}"
                reg = _register(c, key, names.get(name), raw, rmap.name)
                if reg is None:
                    continue
                if reg.channel in channels:
                    c.fail(
                        key,
                        raw,
                        f"channel {reg.channel} is {channels[reg.channel]}'s already: one register per channel",
                    )
                    continue
                channels[reg.channel] = name
                registers.append(reg)
        ident = t.get("identity", MISSING)
        if ident is MISSING:
            identity = tuple(p for p in DEFAULT_IDENTITY if p in names)
        elif not isinstance(ident, list) or not all(isinstance(p, str) for p in ident):
            c.fail(f"{prefix}.identity", ident, 'must be an array of point names (e.g. ["serial_number", "model"])')
        else:
            for i, p in enumerate(ident):
                if p not in names:
                    c.fail(f"{prefix}.identity[{i}]", p, f"names no point of register map {rmap.name!r}")
            identity = tuple(ident)
    if len(c.issues) > start:
        return None
    return MeterConfig(device=device, rated_kw=float(rated), registers=tuple(registers), identity=identity)


def parse_metering(
    c: Checker, raw: Mapping[str, Any], devices: Mapping[str, RegisterMap | None]
) -> MeteringConfig | None:
    """``[metering]`` -> MeteringConfig; None when there are errors (each recorded in ``c``).

    ``devices``: the site's devices, name -> register map (None for a device without one, e.g. SunSpec).
    """
    p = "metering"
    start = len(c.issues)
    c.unknown(raw, p, METERING_KEYS)
    interval = c.get(raw, p, "interval_s", "integer", 900, choices=INTERVAL_LENGTHS_S)
    span = c.get(raw, p, "estimate_span_s", "number", 3600.0, lo=1, hi=7 * 86400)
    actual = c.get(raw, p, "actual_span_s", "number", 10.0, lo=0.1, hi=3600)
    margin = c.get(raw, p, "spike_margin", "number", 1.5, lo=1.0, hi=100)
    if span is not None and actual is not None and actual > span:
        c.fail(f"{p}.actual_span_s", actual, f"must be at most estimate_span_s ({span})")
    meters: list[MeterConfig] = []
    seen: dict[str, str] = {}
    for prefix, t in c.tables(raw, "meters", p):
        m = _meter(c, t, prefix, devices)
        if m is None:
            continue
        if m.device in seen:
            c.fail(f"{prefix}.device", m.device, f"{seen[m.device]} meters this device already")
            continue
        seen[m.device] = prefix
        meters.append(m)
    if len(c.issues) > start:
        return None
    return MeteringConfig(interval_s=interval, estimate_span_s=float(span), actual_span_s=float(actual),
                          spike_margin=float(margin), meters=tuple(meters))  # fmt: skip


__all__ = ["MeterConfig", "MeteringConfig", "RegisterConfig", "engine", "engine_params", "engines", "parse_metering"]
