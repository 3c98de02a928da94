"""The site file's ``[control]`` section -> typed, checked configuration (docs/control.md, "Configuration").

The whole section is one schema, parsed and checked here even for functions whose logic lives elsewhere, so a
site file is judged once, whole, by ``gridedge check-config``: every problem with its key path, its value and
what is allowed. A device named by a function must exist in ``[[devices]]`` and be of a kind that can do what
the function asks (its register map has the points the actuator writes and reads); a point named as an input
must be a point of its device's map.

- ``[control]``: ``mode`` = ``monitor`` | ``advise`` | ``control`` for the whole agent, ``audit_window_s``.
- ``[control.envelope]``: readback deadline, hunting window and reversals, rate limits.
- ``[control.interlocks]``: the head relay and the feeder-head voltages that say the feeder is alive.
- ``[control.capbank]``, ``[control.regulator]``, ``[control.cvr]``, ``[[control.der]]``: the functions, each
  with its own ``mode`` (never above the global one: the lesser of the two applies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.control import ieee1547
from agent.control.curveconfig import curve, explicit_droop, explicit_volt_var, explicit_volt_watt, number
from agent.control.decision import MODES, lesser_mode
from protocols.configcheck import MISSING, Checker
from protocols.modbus.registermap import RegisterMap, Table

# ---- what a device must have to be commanded (the actuators' points, docs/devices/*.md) ------------------

CAPBANK_POINTS = frozenset(
    {"sbo_select", "sbo_token", "sbo_operate", "sbo_operate_token", "mode", "closed", "last_result", "lockout_active"}
)
REGULATOR_POINTS = frozenset({"mode", "band_center_v", "bandwidth_v", "tap_target_a", "tap_target_b", "tap_target_c",
                              "tap_a", "tap_b", "tap_c"})  # fmt: skip
RELAY_POINTS = frozenset({"relay_state", "breaker_closed", "lockout"})
VAR_UNITS = {"var": 1.0, "kvar": 1e3, "Mvar": 1e6}  # a var-flow point's unit -> var
V_BASE = 120.0  # thresholds are volts on the 120 V base (ANSI C84.1's service-voltage base)
RANGE_A_MIN_V = 114.0  # ANSI C84.1-2016 Table 1, Range A service voltage minimum on the 120 V base (0.95 pu)
RANGE_A_MAX_V = 126.0  # ANSI C84.1-2016 Table 1, Range A service voltage maximum on the 120 V base (1.05 pu)
TAP_STEP_V = 0.75  # one regulator step: 0.625 % of 120 V (32 steps over +-10 %, ANSI C57.15)

CONTROL_KEYS = {"mode", "audit_window_s", "envelope", "interlocks", "capbank", "regulator", "cvr", "der"}
ENVELOPE_KEYS = {"readback_timeout_s", "hunting_window_s", "hunting_reversals", "min_command_interval_s",
                 "max_commands_per_hour"}  # fmt: skip
INTERLOCK_KEYS = {"relay", "head_voltage_points", "dead_below_pu", "stale_after_s"}
COMMON_KEYS = {"mode", "device", "cadence_s", "stale_after_s", "settle_s", "heartbeat_point", "heartbeat_s"}
CAPBANK_KEYS = COMMON_KEYS | {"var_point", "q_close_above_var", "q_open_below_var", "bank_var", "voltage_points",
                              "v_close_below_v", "v_open_above_v", "bank_rise_v", "delay_s", "ops_per_day",
                              "min_dwell_s"}  # fmt: skip
REGULATOR_KEYS = COMMON_KEYS | {"operation", "band_center_min_v", "band_center_max_v", "bandwidth_min_v",
                                "bandwidth_max_v", "taps_per_day", "setpoint_changes_per_hour", "max_tap_step",
                                "reverse_power", "head_power_point", "min_dwell_s",
                                "band_center_v", "bandwidth_v", "voltage_points"}  # fmt: skip
CVR_KEYS = {"enabled", "mode", "voltage_points", "margin_v", "step_v", "period_s", "restore", "stale_after_s",
            "pv_points", "pv_margin_v_per_mw", "hunting_reversals"}  # fmt: skip
WATT_UNITS = {"W": 1.0, "kW": 1e3, "MW": 1e6}  # an active-power point's unit -> W
DER_KEYS = {"name", "devices", "mode", "category", "volt_var", "volt_watt", "freq_droop", "constant_pf",
            "constant_var", "p_limit_pct", "reversion_s", "cadence_s", "stale_after_s", "settle_s",
            "setpoint_changes_per_hour"}  # fmt: skip
VOLTAGE_POINT_KEYS = {"point", "nominal_v"}


@dataclass(frozen=True, slots=True)
class VoltagePoint:
    """A measured voltage: ``point`` (``<device>.<point>``) and the value that is 120 V on the 120 V base."""

    point: str
    nominal_v: float

    def on_120v_base(self, value: float) -> float:
        return value / self.nominal_v * V_BASE


@dataclass(frozen=True, slots=True)
class EnvelopeConfig:
    readback_timeout_s: float = 30.0  # the device must show the command within this [s, agent clock]
    hunting_window_s: float = 3600.0  # reversals counted over this window
    hunting_reversals: int = 3  # this many reversals within the window freeze the device for that function
    min_command_interval_s: float = 5.0  # rate limit: at least this long between two commands to one device
    max_commands_per_hour: int = 20  # rate limit: at most this many commands to one device in any hour


@dataclass(frozen=True, slots=True)
class InterlockConfig:
    relay: str | None = None  # the feeder-head relay (tripped or locked out: no command)
    head_voltage_points: tuple[VoltagePoint, ...] = ()  # the feeder is dead when all are below dead_below_pu
    dead_below_pu: float = 0.5
    stale_after_s: float = 30.0  # an interlock input older than this, or not good, refuses every command


@dataclass(frozen=True, slots=True)
class CapBankConfig:
    device: str
    mode: str = "control"
    cadence_s: float = 60.0  # minutes-scale: the function looks this often
    delay_s: float = 120.0  # a condition must hold this long before the bank switches
    var_point: str | None = None  # three-phase var flow at a meter (+ lagging, drawn by the loads)
    var_scale: float = 1.0  # the var point's unit -> var
    q_close_above_var: float | None = None  # close when the flow stays above this
    q_open_below_var: float | None = None  # open when it stays below this (leading)
    bank_var: float | None = None  # the bank's step (the dead band must be wider)
    voltage_points: tuple[VoltagePoint, ...] = ()
    v_close_below_v: float = 118.0  # close when a voltage stays below this (120 V base)
    v_open_above_v: float = 126.0  # open when a voltage stays above this
    bank_rise_v: float = 3.0  # the bank's voltage step where it is measured (120 V base)
    ops_per_day: int = 4  # wear budget: operations in any 24 h
    min_dwell_s: float = 900.0  # at least this long in one position
    stale_after_s: float = 30.0
    settle_s: float = 300.0  # after an operation, slower layers wait this long
    heartbeat_point: str | None = None  # written while the agent holds the bank in remote (None: none)
    heartbeat_s: float = 30.0


@dataclass(frozen=True, slots=True)
class RegulatorConfig:
    device: str
    mode: str = "control"
    operation: str = "supervise"  # supervise: band centre within limits | manual: the agent steps the taps
    cadence_s: float = 30.0  # tens of seconds
    band_center_min_v: float = 118.0
    band_center_max_v: float = 124.0
    bandwidth_min_v: float = 1.5
    bandwidth_max_v: float = 3.0
    taps_per_day: int = 60  # wear budget: tap steps (all phases) in any 24 h
    setpoint_changes_per_hour: int = 6  # wear budget: band-centre writes in any hour
    max_tap_step: int = 1  # taps one command may move a phase
    min_dwell_s: float = 60.0
    reverse_power: str = "hold"  # hold: no agent move while the head exports | allow
    head_power_point: str | None = None  # the head's active power (+ delivered to the load)
    stale_after_s: float = 30.0
    settle_s: float = 120.0
    heartbeat_point: str | None = None
    heartbeat_s: float = 30.0
    # the regulator function's own targets (agent/control/regulator.py)
    band_center_v: float = 122.0  # the normal band centre: CVR gives this back; manual mode's band centre
    bandwidth_v: float = 2.0  # manual mode's band (the agent steps taps to keep v_reg inside it)
    voltage_points: tuple[VoltagePoint, ...] = ()  # monitored voltages supervise keeps in Range A


@dataclass(frozen=True, slots=True)
class CvrConfig:
    enabled: bool = False
    mode: str = "control"
    voltage_points: tuple[VoltagePoint, ...] = ()  # the end-of-line voltages it keeps above the floor
    margin_v: float = 2.0  # above ANSI C84.1 Range A's 114 V: the floor is 114 + margin
    step_v: float = 0.5  # band-centre change per period
    period_s: float = 300.0  # every few minutes
    restore: str = "immediate"  # a voltage out of its band or stale data: the band centre goes back at once
    stale_after_s: float = 30.0
    # The PV output a passing cloud can take away at once: the floor rises pv_margin_v_per_mw volts per MW the
    # feeder's PV makes now (pv_points: (point, its unit in W), summed), so a cloud edge cannot take a lowered
    # far end below Range A before the regulator has given the reduction back.
    pv_points: tuple[tuple[str, float], ...] = ()
    pv_margin_v_per_mw: float = 0.0
    # CVR's moves follow the clouds on a high-PV feeder (lower, give back, lower again): its commands are judged
    # hunting at this many reversals of the regulator within [control.envelope] hunting_window_s, not the
    # envelope's own limit, which is for controls that have no reason to reverse within the hour.
    hunting_reversals: int = 6

    @property
    def floor_v(self) -> float:
        return RANGE_A_MIN_V + self.margin_v


@dataclass(frozen=True, slots=True)
class ConstantPf:
    pf: float
    excitation: str  # "injecting" (over-excited) | "absorbing" (under-excited)


@dataclass(frozen=True, slots=True)
class DerGroupConfig:
    name: str
    devices: tuple[str, ...]
    mode: str = "control"
    category: str = "B"  # IEEE 1547-2018 normal operating performance category
    volt_var: ieee1547.VoltVarCurve | None = None
    volt_watt: ieee1547.VoltWattCurve | None = None
    freq_droop: ieee1547.FreqDroop | None = None
    constant_pf: ConstantPf | None = None
    constant_var_pct: float | None = None  # % of nameplate VA, + injecting
    p_limit_pct: float | None = None  # % of Prated
    reversion_s: float = 300.0  # set points are written with this reversion timer and refreshed while wanted
    cadence_s: float = 10.0  # seconds: the devices act on their curves, the agent configures and verifies
    stale_after_s: float = 30.0
    settle_s: float = 30.0
    setpoint_changes_per_hour: int = 12


@dataclass(frozen=True, slots=True)
class ControlConfig:
    mode: str = "monitor"
    audit_window_s: float = 120.0  # events that start this long after an action carry its id
    envelope: EnvelopeConfig = EnvelopeConfig()
    interlocks: InterlockConfig = InterlockConfig()
    capbank: CapBankConfig | None = None
    regulator: RegulatorConfig | None = None
    cvr: CvrConfig | None = None
    der: tuple[DerGroupConfig, ...] = field(default_factory=tuple)

    def function_mode(self, mode: str) -> str:
        """A function's mode as it applies: never above the global one."""
        return lesser_mode(mode, self.mode)

    def controlled_devices(self) -> tuple[str, ...]:
        """Every device a function may write to, once each, in the order of the section."""
        names: list[str] = []
        if self.capbank is not None:
            names.append(self.capbank.device)
        if self.regulator is not None:
            names.append(self.regulator.device)
        for g in self.der:
            names.extend(g.devices)
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class FunctionPolicy:
    """What the envelope needs to know of a function: its mode, how old its inputs may be, its dwell."""

    name: str
    mode: str
    stale_after_s: float
    min_dwell_s: float = 0.0
    hunting_reversals: int | None = None  # reversals that freeze the device for this function (None: the envelope's)


# ---- checking ------------------------------------------------------------------------------------------


class _Devices:
    """The site's devices, for the checks of names and points."""

    def __init__(self, maps: Mapping[str, RegisterMap | None], protocols: Mapping[str, str]) -> None:
        self.maps = maps
        self.protocols = protocols

    def names(self) -> str:
        return ", ".join(sorted(self.maps)) or "(none)"

    def device(self, c: Checker, key: str, name: Any, kind: str, needs: frozenset[str]) -> str | None:
        """``name`` if it is a device whose map has every point of ``needs`` (``kind`` names what it must be)."""
        if not isinstance(name, str) or not name:
            c.fail(key, name, f"must be a device name ({self.names()})")
            return None
        if name not in self.maps:
            c.fail(key, name, f"is not a device of [[devices]] ({self.names()})")
            return None
        rmap = self.maps[name]
        have = set() if rmap is None else {p.name for p in rmap.points}
        missing = sorted(needs - have)
        if missing:
            c.fail(key, name, f"must be a {kind}: its register map lacks {', '.join(missing)}")
            return None
        return name

    def is_der(self, name: str) -> bool:
        rmap = self.maps.get(name)
        if self.protocols.get(name) == "sunspec":
            return True
        return rmap is not None and any(p.name.startswith("DERVoltVar.") or p.name == "volt_var_enabled"
                                        for p in rmap.points)  # fmt: skip

    def point(self, c: Checker, key: str, value: Any, units: Mapping[str, float] | None = None) -> str | None:
        """``<device>.<point>``: a point of that device's map (with a unit of ``units`` when given)."""
        if not isinstance(value, str) or "." not in value:
            c.fail(key, value, "must be a point id '<device>.<point>'")
            return None
        dev, _, name = value.partition(".")
        if dev not in self.maps:
            c.fail(key, value, f"{dev!r} is not a device of [[devices]] ({self.names()})")
            return None
        if self.protocols.get(dev) == "sunspec":  # its points are discovered at connect, in the model's units
            return value
        rmap = self.maps[dev]
        pt = None if rmap is None else next((p for p in rmap.points if p.name == name), None)
        if rmap is not None and pt is None:
            c.fail(key, value, f"device {dev!r} has no point {name!r} in its register map")
            return None
        if units is not None and pt is not None and pt.unit not in units:
            c.fail(key, value, f"must be in {' or '.join(units)} (its unit is {pt.unit!r})")
            return None
        return value

    def unit_scale(self, point: str, units: Mapping[str, float]) -> float:
        dev, _, name = point.partition(".")
        rmap = self.maps.get(dev)
        pt = None if rmap is None else next((p for p in rmap.points if p.name == name), None)
        return units.get(pt.unit, 1.0) if pt is not None else 1.0

    def writable(self, c: Checker, key: str, device: str, value: Any) -> str | None:
        """A holding register of ``device``'s map (a heartbeat the agent writes)."""
        if not isinstance(value, str) or not value:
            c.fail(key, value, "must be the name of a holding register of the device's map")
            return None
        rmap = self.maps.get(device)
        pt = None if rmap is None else next((p for p in rmap.points if p.name == value), None)
        if pt is None or pt.table is not Table.HOLDING:
            c.fail(key, value, f"must be a holding register of device {device!r}'s map")
            return None
        return value


def _mode(c: Checker, raw: Mapping[str, Any], prefix: str, default: str) -> str:
    return c.get(raw, prefix, "mode", "string", default, choices=MODES) or default


def _voltage_points(
    c: Checker, raw: Mapping[str, Any], prefix: str, devs: _Devices, name: str = "voltage_points"
) -> tuple[VoltagePoint, ...]:
    out: list[VoltagePoint] = []
    for key, entry in c.tables(raw, name, prefix):
        c.unknown(entry, key, VOLTAGE_POINT_KEYS)
        point = devs.point(c, f"{key}.point", entry.get("point", MISSING))
        nominal = c.get(entry, key, "nominal_v", "number", lo=1e-3, hi=1e7)
        if point is not None and nominal is not None:
            out.append(VoltagePoint(point, float(nominal)))
    return tuple(out)


def _heartbeat(c: Checker, raw: Mapping[str, Any], prefix: str, device: str | None, devs: _Devices) -> str | None:
    value = raw.get("heartbeat_point", MISSING)
    if value is MISSING:
        if device is not None:
            c.warn(f"{prefix}.heartbeat_point", MISSING,
                   f"no heartbeat for {device}: after an agent crash the device stays where the agent left it "
                   "until its own communication-loss timer (if it has one) or an operator puts it back")  # fmt: skip
        return None
    return None if device is None else devs.writable(c, f"{prefix}.heartbeat_point", device, value)


def _interlocks(c: Checker, raw: Mapping[str, Any], devs: _Devices) -> InterlockConfig:
    p = "control.interlocks"
    c.unknown(raw, p, INTERLOCK_KEYS)
    relay_raw = raw.get("relay", MISSING)
    relay = None if relay_raw is MISSING else devs.device(c, f"{p}.relay", relay_raw, "relay", RELAY_POINTS)
    points = _voltage_points(c, raw, p, devs, "head_voltage_points")
    dead = c.get(raw, p, "dead_below_pu", "number", 0.5, lo=0.05, hi=0.9)
    stale = c.get(raw, p, "stale_after_s", "number", 30.0, lo=0.1, hi=86400)
    return InterlockConfig(relay=relay, head_voltage_points=points, dead_below_pu=float(dead or 0.5),
                           stale_after_s=float(stale or 30.0))  # fmt: skip


def _envelope(c: Checker, raw: Mapping[str, Any]) -> EnvelopeConfig:
    p = "control.envelope"
    c.unknown(raw, p, ENVELOPE_KEYS)
    d = EnvelopeConfig()
    return EnvelopeConfig(
        readback_timeout_s=float(c.get(raw, p, "readback_timeout_s", "number", d.readback_timeout_s, lo=1, hi=600)
                                 or d.readback_timeout_s),
        hunting_window_s=float(c.get(raw, p, "hunting_window_s", "number", d.hunting_window_s, lo=60, hi=7 * 86400)
                               or d.hunting_window_s),
        hunting_reversals=c.get(raw, p, "hunting_reversals", "integer", d.hunting_reversals, lo=2, hi=100)
        or d.hunting_reversals,
        min_command_interval_s=float(c.get(raw, p, "min_command_interval_s", "number", d.min_command_interval_s,
                                           lo=0, hi=3600) or 0.0),
        max_commands_per_hour=c.get(raw, p, "max_commands_per_hour", "integer", d.max_commands_per_hour, lo=1,
                                    hi=3600) or d.max_commands_per_hour,
    )  # fmt: skip


def _capbank(c: Checker, raw: Mapping[str, Any], devs: _Devices) -> CapBankConfig | None:
    p = "control.capbank"
    start = len(c.issues)
    c.unknown(raw, p, CAPBANK_KEYS)
    d = CapBankConfig(device="")
    device = devs.device(c, f"{p}.device", raw.get("device", MISSING), "capacitor bank controller", CAPBANK_POINTS)
    mode = _mode(c, raw, p, d.mode)
    cadence = number(c, raw, p, "cadence_s", d.cadence_s, 1, 3600)
    delay = number(c, raw, p, "delay_s", d.delay_s, 0, 3600)
    var_point = raw.get("var_point", MISSING)
    var_point = None if var_point is MISSING else devs.point(c, f"{p}.var_point", var_point, VAR_UNITS)
    q_close = number(c, raw, p, "q_close_above_var", None, -1e9, 1e9)
    q_open = number(c, raw, p, "q_open_below_var", None, -1e9, 1e9)
    bank_var = number(c, raw, p, "bank_var", None, 1, 1e9)
    vpoints = _voltage_points(c, raw, p, devs)
    v_close = number(c, raw, p, "v_close_below_v", d.v_close_below_v, 100, 140)
    v_open = number(c, raw, p, "v_open_above_v", d.v_open_above_v, 100, 140)
    rise = number(c, raw, p, "bank_rise_v", d.bank_rise_v, 0.1, 20)
    ops = c.get(raw, p, "ops_per_day", "integer", d.ops_per_day, lo=1, hi=200)
    dwell = number(c, raw, p, "min_dwell_s", d.min_dwell_s, 0, 86400)
    stale = number(c, raw, p, "stale_after_s", d.stale_after_s, 0.1, 86400)
    settle = number(c, raw, p, "settle_s", d.settle_s, 0, 86400)
    beat = number(c, raw, p, "heartbeat_s", d.heartbeat_s, 0.1, 3600)
    heartbeat = _heartbeat(c, raw, p, device, devs)
    if var_point is None and not vpoints and "var_point" not in raw and "voltage_points" not in raw:
        c.fail(f"{p}.var_point", MISSING, "give var_point (var flow) and/or voltage_points: what the bank acts on")
    if var_point is not None:
        for name, val in (("q_close_above_var", q_close), ("q_open_below_var", q_open), ("bank_var", bank_var)):
            if val is None and name not in raw:
                c.fail(f"{p}.{name}", MISSING, "is required with var_point (var, + lagging)")
        if None not in (q_close, q_open, bank_var) and not q_close - q_open > bank_var:
            # close at q > q_close leaves q - bank_var, which must stay above q_open, or the bank hunts
            c.fail(f"{p}.q_open_below_var", q_open, f"must be below q_close_above_var - bank_var "
                   f"({q_close:g} - {bank_var:g} = {q_close - bank_var:g}): a dead band wider than the bank's step, "
                   "so closing never calls for opening")  # fmt: skip
    if vpoints and None not in (v_close, v_open, rise) and not v_open - v_close > rise:
        c.fail(f"{p}.v_open_above_v", v_open, f"must be above v_close_below_v + bank_rise_v ({v_close:g} + "
               f"{rise:g} = {v_close + rise:g}): a dead band wider than the bank's step")  # fmt: skip
    if isinstance(delay, float) and isinstance(cadence, float) and delay and delay < cadence:
        c.warn(f"{p}.delay_s", delay, f"shorter than cadence_s ({cadence:g}): the delay is measured in cadences")
    if len(c.issues) > start or device is None:
        return None
    return CapBankConfig(device=device, mode=mode, cadence_s=cadence, delay_s=delay, var_point=var_point,
                         var_scale=devs.unit_scale(var_point, VAR_UNITS) if var_point else 1.0,
                         q_close_above_var=q_close, q_open_below_var=q_open, bank_var=bank_var, voltage_points=vpoints,
                         v_close_below_v=v_close, v_open_above_v=v_open, bank_rise_v=rise, ops_per_day=ops,
                         min_dwell_s=dwell, stale_after_s=stale, settle_s=settle, heartbeat_point=heartbeat,
                         heartbeat_s=beat)  # fmt: skip


def _regulator(c: Checker, raw: Mapping[str, Any], devs: _Devices) -> RegulatorConfig | None:
    p = "control.regulator"
    start = len(c.issues)
    c.unknown(raw, p, REGULATOR_KEYS)
    d = RegulatorConfig(device="")
    device = devs.device(c, f"{p}.device", raw.get("device", MISSING), "regulator control", REGULATOR_POINTS)
    mode = _mode(c, raw, p, d.mode)
    operation = c.get(raw, p, "operation", "string", d.operation, choices=("supervise", "manual"))
    cadence = number(c, raw, p, "cadence_s", d.cadence_s, 1, 3600)
    bc_min = number(c, raw, p, "band_center_min_v", d.band_center_min_v, 100, 135)
    bc_max = number(c, raw, p, "band_center_max_v", d.band_center_max_v, 100, 135)
    bw_min = number(c, raw, p, "bandwidth_min_v", d.bandwidth_min_v, 1, 6)
    bw_max = number(c, raw, p, "bandwidth_max_v", d.bandwidth_max_v, 1, 6)
    taps = c.get(raw, p, "taps_per_day", "integer", d.taps_per_day, lo=1, hi=10_000)
    changes = c.get(raw, p, "setpoint_changes_per_hour", "integer", d.setpoint_changes_per_hour, lo=1, hi=3600)
    step = c.get(raw, p, "max_tap_step", "integer", d.max_tap_step, lo=1, hi=32)
    dwell = number(c, raw, p, "min_dwell_s", d.min_dwell_s, 0, 86400)
    reverse = c.get(raw, p, "reverse_power", "string", d.reverse_power, choices=("hold", "allow"))
    head_p = raw.get("head_power_point", MISSING)
    head_p = None if head_p is MISSING else devs.point(c, f"{p}.head_power_point", head_p)
    if reverse == "hold" and head_p is None and "head_power_point" not in raw:
        c.fail(f"{p}.head_power_point", MISSING, "is required with reverse_power = 'hold' (the head's active power)")
    stale = number(c, raw, p, "stale_after_s", d.stale_after_s, 0.1, 86400)
    settle = number(c, raw, p, "settle_s", d.settle_s, 0, 86400)
    beat = number(c, raw, p, "heartbeat_s", d.heartbeat_s, 0.1, 3600)
    heartbeat = _heartbeat(c, raw, p, device, devs)
    if None not in (bc_min, bc_max) and not bc_min <= bc_max:
        c.fail(f"{p}.band_center_max_v", bc_max, f"must be at least band_center_min_v ({bc_min:g})")
    if None not in (bw_min, bw_max) and not bw_min <= bw_max:
        c.fail(f"{p}.bandwidth_max_v", bw_max, f"must be at least bandwidth_min_v ({bw_min:g})")
    # -- the regulator function's targets (docs/control.md, "The regulator function")
    normal = number(c, raw, p, "band_center_v", d.band_center_v, 100, 135)
    if None not in (normal, bc_min, bc_max) and not bc_min <= normal <= bc_max:
        c.fail(f"{p}.band_center_v", normal, f"must be within band_center_min_v..band_center_max_v "
               f"({bc_min:g}..{bc_max:g})")  # fmt: skip
    bandwidth = number(c, raw, p, "bandwidth_v", d.bandwidth_v, 0.1, 6)
    if operation == "manual" and isinstance(bandwidth, float) and bandwidth < TAP_STEP_V:
        c.warn(f"{p}.bandwidth_v", bandwidth, f"narrower than one tap step ({TAP_STEP_V:g} V): the agent's taps "
               "will hunt, and the envelope's hunting detector will freeze the function")  # fmt: skip
    vpoints = _voltage_points(c, raw, p, devs)
    if len(c.issues) > start or device is None:
        return None
    return RegulatorConfig(device=device, mode=mode, operation=operation, cadence_s=cadence, band_center_min_v=bc_min,
                           band_center_max_v=bc_max, bandwidth_min_v=bw_min, bandwidth_max_v=bw_max,
                           taps_per_day=taps, setpoint_changes_per_hour=changes, max_tap_step=step,
                           min_dwell_s=dwell, reverse_power=reverse, head_power_point=head_p, stale_after_s=stale,
                           settle_s=settle, heartbeat_point=heartbeat, heartbeat_s=beat, band_center_v=normal,
                           bandwidth_v=bandwidth, voltage_points=vpoints)  # fmt: skip


def _cvr(c: Checker, raw: Mapping[str, Any], devs: _Devices, regulator: Any) -> CvrConfig | None:
    p = "control.cvr"
    start = len(c.issues)
    c.unknown(raw, p, CVR_KEYS)
    d = CvrConfig()
    enabled = c.get(raw, p, "enabled", "boolean", d.enabled)
    mode = _mode(c, raw, p, d.mode)
    vpoints = _voltage_points(c, raw, p, devs)
    margin = number(c, raw, p, "margin_v", d.margin_v, 0, 10)
    step = number(c, raw, p, "step_v", d.step_v, 0.1, 3)
    period = number(c, raw, p, "period_s", d.period_s, 10, 86400)
    restore = c.get(raw, p, "restore", "string", d.restore, choices=("immediate",))
    stale = number(c, raw, p, "stale_after_s", d.stale_after_s, 0.1, 86400)
    pv_margin = number(c, raw, p, "pv_margin_v_per_mw", d.pv_margin_v_per_mw, 0, 20)
    hunting = c.get(raw, p, "hunting_reversals", "integer", d.hunting_reversals, lo=2, hi=100)
    pv_raw = raw.get("pv_points", [])
    pv_points: list[tuple[str, float]] = []
    if not isinstance(pv_raw, list):
        c.fail(f"{p}.pv_points", pv_raw, "must be an array of point ids '<device>.<point>' (active power, W/kW/MW)")
    else:
        for i, value in enumerate(pv_raw):
            point = devs.point(c, f"{p}.pv_points[{i}]", value, WATT_UNITS)
            if point is not None:
                pv_points.append((point, devs.unit_scale(point, WATT_UNITS)))
    if pv_margin and not pv_raw:
        c.fail(f"{p}.pv_margin_v_per_mw", pv_margin, "needs pv_points: the PV output the margin is reckoned on")
    if enabled and not vpoints and "voltage_points" not in raw:
        c.fail(f"{p}.voltage_points", MISSING, "is required when enabled: the end-of-line voltages CVR keeps "
               f"above {RANGE_A_MIN_V:g} V + margin_v (ANSI C84.1 Range A)")  # fmt: skip
    if enabled and regulator is None:
        c.fail(f"{p}.enabled", enabled, "needs [control.regulator]: CVR lowers the regulator's band centre")
    if len(c.issues) > start:
        return None
    return CvrConfig(enabled=bool(enabled), mode=mode, voltage_points=vpoints, margin_v=margin, step_v=step,
                     period_s=period, restore=restore, stale_after_s=stale, pv_points=tuple(pv_points),
                     pv_margin_v_per_mw=pv_margin, hunting_reversals=hunting)  # fmt: skip


def _der(c: Checker, raw: Mapping[str, Any], key: str, i: int, devs: _Devices, seen: dict[str, str]) -> Any:
    start = len(c.issues)
    c.unknown(raw, key, DER_KEYS)
    d = DerGroupConfig(name="", devices=())
    name = c.get(raw, key, "name", "string", f"der{i + 1}")
    mode = _mode(c, raw, key, d.mode)
    names = raw.get("devices", MISSING)
    devices: list[str] = []
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        c.fail(f"{key}.devices", names, "must be a non-empty array of inverter device names")
    else:
        for j, dev in enumerate(names):
            dkey = f"{key}.devices[{j}]"
            if dev not in devs.maps:
                c.fail(dkey, dev, f"is not a device of [[devices]] ({devs.names()})")
            elif not devs.is_der(dev):
                c.fail(dkey, dev, "must be a DER (a SunSpec inverter: protocol 'sunspec', or a map with its "
                       "volt-var points)")  # fmt: skip
            elif dev in seen:
                c.fail(dkey, dev, f"is already in {seen[dev]}: one DER group per device")
            else:
                seen[dev] = key
                devices.append(dev)
    category = c.get(raw, key, "category", "string", d.category, choices=("A", "B"))
    vv = curve(c, raw, key, "volt_var", ieee1547.NAMES["volt_var"], explicit_volt_var)
    vw = curve(c, raw, key, "volt_watt", ieee1547.NAMES["volt_watt"], explicit_volt_watt)
    fd = curve(c, raw, key, "freq_droop", ieee1547.NAMES["freq_droop"], explicit_droop)
    cap = ieee1547.default(f"reactive_capability.category-{(category or 'B').lower()}")
    pf = None
    if "constant_pf" in raw:
        pf_raw = c.get(raw, key, "constant_pf", "table")
        if pf_raw is not None:
            pkey = f"{key}.constant_pf"
            c.unknown(pf_raw, pkey, {"pf", "excitation"})
            exc = c.get(pf_raw, pkey, "excitation", "string", choices=("injecting", "absorbing"))
            lo = cap.pf_min_inject if exc == "injecting" else cap.pf_min_absorb
            value = number(c, pf_raw, pkey, "pf", MISSING, round(lo, 3), 1.0)
            if exc is not None and value is not None:
                pf = ConstantPf(value, exc)
    var_pct = None
    if "constant_var" in raw:
        cv = c.get(raw, key, "constant_var", "table")
        if cv is not None:
            c.unknown(cv, f"{key}.constant_var", {"q_pct"})
            var_pct = number(c, cv, f"{key}.constant_var", "q_pct", MISSING, -cap.q_absorb_pct, cap.q_inject_pct)
    plr = ieee1547.setting_range("active_power_limit.pct")
    p_limit = number(c, raw, key, "p_limit_pct", None, plr.lo, plr.hi)
    reactive = [n for n, v in (("volt_var", vv), ("constant_pf", pf), ("constant_var", var_pct)) if v is not None]
    if len(reactive) > 1:
        c.fail(f"{key}.{reactive[1]}", raw.get(reactive[1]),
               f"one reactive power mode at a time (IEEE 1547-2018 5.3): {' and '.join(reactive)} are both set")  # fmt: skip
    reversion = number(c, raw, key, "reversion_s", d.reversion_s, 1, 86400)
    cadence = number(c, raw, key, "cadence_s", d.cadence_s, 0.5, 3600)
    stale = number(c, raw, key, "stale_after_s", d.stale_after_s, 0.1, 86400)
    settle = number(c, raw, key, "settle_s", d.settle_s, 0, 86400)
    changes = c.get(raw, key, "setpoint_changes_per_hour", "integer", d.setpoint_changes_per_hour, lo=1, hi=3600)
    if len(c.issues) > start:
        return None
    return DerGroupConfig(name=name, devices=tuple(devices), mode=mode, category=category, volt_var=vv, volt_watt=vw,
                          freq_droop=fd, constant_pf=pf, constant_var_pct=var_pct, p_limit_pct=p_limit,
                          reversion_s=reversion, cadence_s=cadence, stale_after_s=stale, settle_s=settle,
                          setpoint_changes_per_hour=changes)  # fmt: skip


def parse_control(
    c: Checker, raw: Mapping[str, Any], maps: Mapping[str, RegisterMap | None], protocols: Mapping[str, str]
) -> ControlConfig:
    """``[control]`` -> ControlConfig; ``maps`` are the site's devices (name -> register map, None when the device
    has no hand-written map), ``protocols`` their protocols. Problems are recorded in ``c``."""
    devs = _Devices(maps, protocols)
    c.unknown(raw, "control", CONTROL_KEYS)
    mode = _mode(c, raw, "control", "monitor")
    window = number(c, raw, "control", "audit_window_s", 120.0, 0, 3600)
    envelope = _envelope(c, c.get(raw, "control", "envelope", "table", {}) or {})
    interlocks = _interlocks(c, c.get(raw, "control", "interlocks", "table", {}) or {}, devs)
    cap_raw = c.get(raw, "control", "capbank", "table", None)
    capbank = None if cap_raw is None else _capbank(c, cap_raw, devs)
    reg_raw = c.get(raw, "control", "regulator", "table", None)
    regulator = None if reg_raw is None else _regulator(c, reg_raw, devs)
    cvr_raw = c.get(raw, "control", "cvr", "table", None)
    cvr = None if cvr_raw is None else _cvr(c, cvr_raw, devs, reg_raw)
    seen: dict[str, str] = {}
    groups = [g for i, (key, t) in enumerate(c.tables(raw, "der", "control"))
              if (g := _der(c, t, key, i, devs, seen)) is not None]  # fmt: skip
    taken = {capbank.device: "control.capbank.device"} if capbank is not None else {}
    if regulator is not None and regulator.device in taken:
        c.fail("control.regulator.device", regulator.device, f"is {taken[regulator.device]} already")
    for dev, key in seen.items():
        if dev in taken or (regulator is not None and dev == regulator.device):
            c.fail(key, dev, "a device is commanded by one function only")
    names = [g.name for g in groups]
    for g in groups:
        if names.count(g.name) > 1:
            c.fail("control.der", g.name, "each [[control.der]] group needs its own name")
            break
    commands = any(x is not None for x in (capbank, regulator, cvr)) or groups
    if commands and interlocks.relay is None and not interlocks.head_voltage_points:
        c.warn("control.interlocks", MISSING, "no relay and no head voltage: commands are not interlocked with "
               "a dead or tripped feeder")  # fmt: skip
    return ControlConfig(mode=mode, audit_window_s=window if isinstance(window, float) else 120.0, envelope=envelope,
                         interlocks=interlocks, capbank=capbank, regulator=regulator, cvr=cvr,
                         der=tuple(groups))  # fmt: skip


__all__ = [
    "CAPBANK_POINTS",
    "RANGE_A_MAX_V",
    "RANGE_A_MIN_V",
    "REGULATOR_POINTS",
    "RELAY_POINTS",
    "V_BASE",
    "CapBankConfig",
    "ConstantPf",
    "ControlConfig",
    "CvrConfig",
    "DerGroupConfig",
    "EnvelopeConfig",
    "FunctionPolicy",
    "InterlockConfig",
    "RegulatorConfig",
    "VoltagePoint",
    "parse_control",
]
