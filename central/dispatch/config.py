"""``[dispatch]`` of central's file: the network model, the sites and their devices, prices, wear costs, margins
(docs/dispatch.md, "Configuration").

```toml
[dispatch]
network = "ieee13/IEEE13.dss"   # the utility's OpenDSS model of the feeder, relative to this file
feeder = "ieee13"               # the feeder's name in the forecasts table
interval_s = 900                # 300 or 900
horizon_intervals = 96          # 1..576
monitor = ["632", "671", "675"] # buses whose every phase is held within the limits (default: all but the source)
v_min_pu = 0.95                 # ANSI C84.1-2016 Table 1, Range A service voltage: 0.95..1.05 pu
v_max_pu = 1.05
margin_pu = 0.01                # kept inside the limits for the linearisation's error
reverse_power_kw = 0.0          # the head may export at most this [kW]; absent: no limit
import_limit_kw = 5000          # the head may import at most this [kW] (the report's adequacy); absent: unknown
price_file = "prices.csv"       # start,price [currency/kWh]; or price = 0.12 (flat)
loss_cost = 0.0                 # [currency/kWh] on the feeder's losses, past paying for them at the head
tap_wear_cost = 0.5             # [currency] per regulator tap operation
cap_wear_cost = 2.0             # [currency] per capacitor bank operation
cvr_factor = 0.7                # load change [%] per voltage change [%] while CVR is on
expiry_margin_s = 120           # each interval's commands hold until its end plus this
key_id = "dispatch-1"           # the signing key (default: the first [[commands.keys]] of role dispatch)
follow_tolerance_pct = 10       # metered energy further than this from the schedule: not following
refine_passes = 1               # full re-solves of the optimum whose error corrects the linear model, 0..3
var_min_pct = 0.5               # a var set point under this % of kVA is not sent: the inverter keeps volt-var
p_response_s = 0                # a changed PV limit is reached this long after its interval begins (the energy)
nowcast = {site = "sub-07", point = "sub-meter.p_total", window_s = 300, decay = 0.9, max_share = 0.3}
[[dispatch.sites]]
site = "sub-07"
inverters = [{device = "pv675", element = "pv675", kva = 2500, kw = 2500, category = "B"}]
capbanks = [{device = "cap-675", element = "cap675", kvar = 600, max_ops_per_day = 4}]
regulator = {device = "reg-ctl", band_center_v = 122, cvr_drop_v = 3, band_center_min_v = 118}
meters = [{meter = "pv675-meter", channel = "kwh_received", measures = "pv675"}]
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from central.dispatch.nowcast import PV_POINT, ClearSky, NowcastSpec
from protocols.configcheck import MISSING, Checker
from protocols.telemetry.intervals import CHANNELS
from protocols.telemetry.schema import valid_site

if TYPE_CHECKING:  # central.config imports this module
    from central.config import CommandsConfig, SigningKey

# IEEE 1547-2018 clause 5.2, Table 7: the minimum reactive power a DER of each normal operating performance
# category can inject and absorb, as a fraction of its nameplate apparent power (Cat A 44 % / 25 %, Cat B 44 % / 44 %).
REACTIVE_CAPABILITY = {"A": (0.44, 0.25), "B": (0.44, 0.44)}
# ANSI C84.1-2016 Table 1, Range A, service voltage: 114..126 V on 120 V, i.e. 0.95..1.05 pu.
RANGE_A_PU = (0.95, 1.05)
TAP_STEP_V = 0.75  # one step of a 32-step +-10 % regulator on its 120 V base (0.625 % of 120 V)


@dataclass(frozen=True, slots=True)
class InverterSpec:
    device: str  # the agent's device name: the commands' target
    element: str  # the Generator in the network model
    kva: float  # nameplate apparent power [kVA]
    kw: float  # rated active power [kW]: p_limit_pct is of this
    category: str = "B"
    p_limit_min_pct: float = 0.0  # the lowest limit the site's envelope takes
    var_max_pct: float | None = None  # |var| at most this % of kVA (default: the category's capability)
    pf_min: float = 0.0  # |Q| <= P tan(acos(pf_min)) when > 0
    reserve_pct: float = 0.0  # the output kept at least this % of the forecast's available power below it

    @property
    def q_inject_kvar(self) -> float:
        cap = REACTIVE_CAPABILITY[self.category][0] * 100
        return self.kva * min(cap, self.var_max_pct if self.var_max_pct is not None else cap) / 100

    @property
    def q_absorb_kvar(self) -> float:
        cap = REACTIVE_CAPABILITY[self.category][1] * 100
        return self.kva * min(cap, self.var_max_pct if self.var_max_pct is not None else cap) / 100


@dataclass(frozen=True, slots=True)
class CapbankSpec:
    device: str
    element: str  # the Capacitor in the network model
    max_ops_per_day: int = 4
    initial: str = "model"  # the state before the first interval: "open", "closed", or as the model has it


@dataclass(frozen=True, slots=True)
class RegulatorSpec:
    device: str
    band_center_v: float = 122.0  # the normal band centre [V on 120 V]
    cvr_drop_v: float = 3.0  # CVR lowers the band centre by this [V on 120 V]
    band_center_min_v: float = 118.0  # the site envelope's lowest band centre


@dataclass(frozen=True, slots=True)
class MeterSpec:
    meter: str
    channel: str  # kwh_delivered / kwh_received (settlement's channels)
    measures: str  # "head" or an inverter's device name


@dataclass(frozen=True, slots=True)
class SiteSpec:
    site: str
    inverters: tuple[InverterSpec, ...] = ()
    capbanks: tuple[CapbankSpec, ...] = ()
    regulator: RegulatorSpec | None = None
    meters: tuple[MeterSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    network: Path
    feeder: str
    sites: tuple[SiteSpec, ...]
    interval_s: int = 900
    horizon_intervals: int = 96
    monitor: tuple[str, ...] = ()  # empty: every bus but the source's
    v_min_pu: float = RANGE_A_PU[0]
    v_max_pu: float = RANGE_A_PU[1]
    margin_pu: float = 0.01
    reverse_power_kw: float | None = None
    price: float | None = None
    price_file: Path | None = None
    loss_cost: float = 0.0
    tap_wear_cost: float = 0.5
    cap_wear_cost: float = 2.0
    cvr_factor: float = 0.7
    expiry_margin_s: float = 120.0
    key_id: str | None = None
    follow_tolerance_pct: float = 10.0
    refine_passes: int = 1
    import_limit_kw: float | None = None  # the head's import capacity [kW]: central/report/adequacy.py
    var_min_pct: float = 0.5  # |var set point| below this % of kVA: none sent, the inverter's own mode holds
    p_response_s: float = 0.0  # a changed limit reached this long into its interval, linearly (scheduled energy)
    nowcast: NowcastSpec | None = None  # the head's readings correct the load forecast (central/dispatch/nowcast.py)
    trim_at_s: float = 0.0  # this far into an interval the reserved inverters are trimmed (0: never; trim.py)

    @property
    def inverters(self) -> list[tuple[str, InverterSpec]]:
        return [(s.site, i) for s in self.sites for i in s.inverters]

    @property
    def capbanks(self) -> list[tuple[str, CapbankSpec]]:
        return [(s.site, c) for s in self.sites for c in s.capbanks]

    @property
    def regulator(self) -> tuple[str, RegulatorSpec] | None:
        return next(((s.site, s.regulator) for s in self.sites if s.regulator is not None), None)


class DispatchSendError(ValueError):
    """The schedule cannot be sent as configured (no dispatch key, a site without an agent key)."""


def dispatch_key(cfg: DispatchConfig, commands: CommandsConfig) -> SigningKey:
    """The key dispatch signs with: ``[dispatch] key_id``, else the first ``[[commands.keys]]`` of role dispatch."""
    if cfg.key_id is not None:
        key = commands.key(cfg.key_id)
        if key is None:
            known = ", ".join(k.key_id for k in commands.keys) or "none"
            raise DispatchSendError(f"dispatch.key_id = {cfg.key_id!r}: not in [[commands.keys]] (configured: {known})")
        return key
    key = next((k for k in commands.keys if k.role == "dispatch"), None)
    if key is None:
        raise DispatchSendError("dispatch.key_id: no [[commands.keys]] of role 'dispatch' to sign schedules with; "
                                "add one (gridedge keys generate) or name a key")  # fmt: skip
    return key


_TOP = {"network", "feeder", "interval_s", "horizon_intervals", "monitor", "v_min_pu", "v_max_pu", "margin_pu",
        "reverse_power_kw", "price", "price_file", "loss_cost", "tap_wear_cost", "cap_wear_cost", "cvr_factor",
        "expiry_margin_s", "key_id", "follow_tolerance_pct", "refine_passes", "sites"}  # fmt: skip
_TOP = _TOP | {"import_limit_kw", "var_min_pct", "nowcast", "p_response_s", "trim_at_s"}


def _name(c: Checker, t: Mapping[str, Any], where: str, key: str, default: Any = None) -> str | None:
    value = c.get(t, where, key, "string", default)
    if value is not None and (len(value) > 128 or any(ch in value for ch in " /+#\t\n")):
        c.fail(f"{where}.{key}", value, "1-128 characters without spaces, '/', '+', '#'")
        return None
    return value


def _inverter(c: Checker, t: Mapping[str, Any], where: str) -> InverterSpec | None:
    keys = {"device", "element", "kva", "kw", "category", "p_limit_min_pct", "var_max_pct", "pf_min", "reserve_pct"}
    c.unknown(t, where, keys)
    device = _name(c, t, where, "device", MISSING)
    element = _name(c, t, where, "element", device)
    kva = c.get(t, where, "kva", "number", lo=0.001, hi=1e6)
    kw = c.get(t, where, "kw", "number", kva, lo=0.001, hi=1e6)
    category = c.get(t, where, "category", "string", "B", choices=tuple(REACTIVE_CAPABILITY))
    p_min = c.get(t, where, "p_limit_min_pct", "number", 0.0, lo=0, hi=100)
    var_max = c.get(t, where, "var_max_pct", "number", None, lo=0, hi=100)
    pf_min = c.get(t, where, "pf_min", "number", 0.0, lo=0, hi=1)
    reserve = c.get(t, where, "reserve_pct", "number", 0.0, lo=0, hi=50)
    if kva is not None and kw is not None and kw > kva:
        c.fail(f"{where}.kw", kw, f"at most kva ({kva:g}): the rated power fits in the apparent power")
        return None
    if None in (device, element, kva, kw, category, p_min, pf_min, reserve) or ("var_max_pct" in t and var_max is None):
        return None
    return InverterSpec(device, element, float(kva), float(kw), category, float(p_min),
                        None if var_max is None else float(var_max), float(pf_min), float(reserve))  # fmt: skip


def _capbank(c: Checker, t: Mapping[str, Any], where: str) -> CapbankSpec | None:
    c.unknown(t, where, {"device", "element", "max_ops_per_day", "initial"})
    device = _name(c, t, where, "device", MISSING)
    element = _name(c, t, where, "element", device)
    ops = c.get(t, where, "max_ops_per_day", "integer", 4, lo=0, hi=96)
    initial = c.get(t, where, "initial", "string", "model", choices=("open", "closed", "model"))
    if None in (device, element, ops, initial):
        return None
    return CapbankSpec(device, element, ops, initial)


def _regulator(c: Checker, t: Any, where: str) -> RegulatorSpec | None:
    if not isinstance(t, Mapping):
        c.fail(where, t, "must be a table: {device, band_center_v, cvr_drop_v, band_center_min_v}")
        return None
    c.unknown(t, where, {"device", "band_center_v", "cvr_drop_v", "band_center_min_v"})
    device = _name(c, t, where, "device", MISSING)
    center = c.get(t, where, "band_center_v", "number", 122.0, lo=100, hi=140)
    drop = c.get(t, where, "cvr_drop_v", "number", 3.0, lo=0, hi=12)
    low = c.get(t, where, "band_center_min_v", "number", 118.0, lo=100, hi=140)
    if None in (device, center, drop, low):
        return None
    if center - drop < low:
        c.fail(f"{where}.cvr_drop_v", drop, f"at most band_center_v - band_center_min_v ({center - low:g} V): the "
               "lowered band centre stays within the site envelope's range")  # fmt: skip
        return None
    return RegulatorSpec(device, float(center), float(drop), float(low))


def _meter(c: Checker, t: Mapping[str, Any], where: str, devices: set[str]) -> MeterSpec | None:
    c.unknown(t, where, {"meter", "channel", "measures"})
    meter = _name(c, t, where, "meter", MISSING)
    channel = c.get(t, where, "channel", "string", choices=("kwh_delivered", "kwh_received"))
    measures = c.get(t, where, "measures", "string")
    if measures is not None and measures != "head" and measures not in devices:
        allowed = ", ".join(repr(x) for x in ["head", *sorted(devices)])
        c.fail(f"{where}.measures", measures, f"one of {allowed} (the feeder head or one of the site's inverters)")
        return None
    if None in (meter, channel, measures):
        return None
    assert channel in CHANNELS
    return MeterSpec(meter, channel, measures)


def _nowcast(c: Checker, t: Any, where: str, sites: set[str]) -> NowcastSpec | None:
    if not isinstance(t, Mapping):
        c.fail(
            where,
            t,
            "must be a table: {site, point, window_s, decay, max_share, pv_point, clear_sky, smooth_intervals}",
        )
        return None
    c.unknown(
        t, where, {"site", "point", "window_s", "decay", "max_share", "pv_point", "clear_sky", "smooth_intervals"}
    )
    site = c.get(t, where, "site", "string")
    if site is not None and site not in sites:
        c.fail(f"{where}.site", site, f"one of the [[dispatch.sites]]: {', '.join(sorted(sites)) or 'none'}")
        site = None
    point = c.get(t, where, "point", "string")
    if point is not None and (not point or len(point) > 128):
        c.fail(f"{where}.point", point, "the head's active-power point as central's readings name it (1-128 chars)")
        point = None
    window = c.get(t, where, "window_s", "number", 300.0, lo=10, hi=3600)
    decay = c.get(t, where, "decay", "number", 0.9, lo=0, hi=1)
    share = c.get(t, where, "max_share", "number", 0.3, lo=0, hi=1)
    pv_point = c.get(t, where, "pv_point", "string", PV_POINT)
    if pv_point and (pv_point.count("{device}") != 1 or "{" in pv_point.replace("{device}", "")):
        c.fail(f"{where}.pv_point", pv_point, 'a point name with {device} once (each inverter\'s output), or ""')
        pv_point = None
    sky = _clear_sky(c, t["clear_sky"], f"{where}.clear_sky") if "clear_sky" in t else None
    smooth = c.get(t, where, "smooth_intervals", "integer", 1, choices=(1, 3, 5, 7))
    if None in (site, point, window, decay, share, pv_point, smooth) or ("clear_sky" in t and sky is None):
        return None
    return NowcastSpec(site, point, float(window), float(decay), float(share), pv_point, sky, int(smooth))


def _clear_sky(c: Checker, t: Any, where: str) -> ClearSky | None:
    if not isinstance(t, Mapping):
        c.fail(where, t, "must be a table: {latitude, longitude, tilt_deg, azimuth_deg}")
        return None
    c.unknown(t, where, {"latitude", "longitude", "tilt_deg", "azimuth_deg"})
    lat = c.get(t, where, "latitude", "number", lo=-90, hi=90)
    lon = c.get(t, where, "longitude", "number", lo=-180, hi=180)
    tilt = c.get(t, where, "tilt_deg", "number", lo=0, hi=90)
    azimuth = c.get(t, where, "azimuth_deg", "number", 180.0, lo=0, hi=360)
    if None in (lat, lon, tilt, azimuth):
        return None
    try:
        import pvlib  # noqa: F401
    except ImportError:
        c.fail(where, "(set)", "pvlib installed: pip install 'gridedge[dispatch]'")
        return None
    return ClearSky(float(lat), float(lon), float(tilt), float(azimuth))


def parse_dispatch(c: Checker, raw: Mapping[str, Any]) -> DispatchConfig | None:
    """``[dispatch]``: every problem goes to ``c`` with its key path; None when there is one."""
    before = len(c.issues)
    c.unknown(raw, "dispatch", _TOP)
    w = "dispatch"
    network = c.path(c.get(raw, w, "network", "string"))
    if network is not None and not network.is_file():
        c.fail(
            "dispatch.network", raw.get("network"), "an OpenDSS model file (.dss) that exists, relative to this file"
        )
    feeder = _name(c, raw, w, "feeder", MISSING)
    interval = c.get(raw, w, "interval_s", "integer", 900, choices=(300, 900))
    horizon = c.get(raw, w, "horizon_intervals", "integer", 96, lo=1, hi=576)
    monitor = raw.get("monitor", [])
    if not isinstance(monitor, list) or not all(isinstance(b, str) and b for b in monitor):
        c.fail("dispatch.monitor", monitor, "an array of bus names of the network model")
        monitor = []
    v_min = c.get(raw, w, "v_min_pu", "number", RANGE_A_PU[0], lo=0.8, hi=1.0)
    v_max = c.get(raw, w, "v_max_pu", "number", RANGE_A_PU[1], lo=1.0, hi=1.2)
    margin = c.get(raw, w, "margin_pu", "number", 0.01, lo=0, hi=0.05)
    reverse = c.get(raw, w, "reverse_power_kw", "number", None, lo=0, hi=1e7)
    import_limit = c.get(raw, w, "import_limit_kw", "number", None, lo=0.001, hi=1e7)
    price = c.get(raw, w, "price", "number", None, lo=-100, hi=100)
    price_file = c.path(c.get(raw, w, "price_file", "string", None))
    if ("price" in raw) == ("price_file" in raw):
        c.fail("dispatch.price", "(both)" if "price" in raw else "(neither)",
               "one of price (a flat price [currency/kWh]) or price_file (CSV start,price); "
               "--prices FILE replaces either")  # fmt: skip
    if price_file is not None and not price_file.is_file():
        c.fail("dispatch.price_file", raw.get("price_file"), "a CSV file start,price that exists")
    costs = {k: c.get(raw, w, k, "number", d, lo=0, hi=1e6) for k, d in
             (("loss_cost", 0.0), ("tap_wear_cost", 0.5), ("cap_wear_cost", 2.0))}  # fmt: skip
    cvr = c.get(raw, w, "cvr_factor", "number", 0.7, lo=0, hi=3)
    margin_s = c.get(raw, w, "expiry_margin_s", "number", 120.0, lo=0, hi=3600)
    key_id = c.get(raw, w, "key_id", "string", None)
    tol = c.get(raw, w, "follow_tolerance_pct", "number", 10.0, lo=0, hi=1000)
    passes = c.get(raw, w, "refine_passes", "integer", 1, lo=0, hi=3)
    var_min = c.get(raw, w, "var_min_pct", "number", 0.5, lo=0, hi=100)
    response = c.get(raw, w, "p_response_s", "number", 0.0, lo=0, hi=300)
    trim_at = c.get(raw, w, "trim_at_s", "number", 0.0, lo=0, hi=3600)
    if trim_at and interval is not None and response is not None and not 0 < trim_at < interval - response:
        c.fail("dispatch.trim_at_s", trim_at, f"0 (no trim) or inside the interval before its last p_response_s "
                                              f"(under {interval - response:g} s)")  # fmt: skip
    if trim_at and "nowcast" not in raw:
        c.fail("dispatch.trim_at_s", trim_at, "0 without [dispatch.nowcast]: the trim reads the head's point there")
    if v_min is not None and v_max is not None and margin is not None and v_min + 2 * margin >= v_max:
        c.fail("dispatch.margin_pu", margin, f"less than half of v_max_pu - v_min_pu ({(v_max - v_min) / 2:g})")
    sites: list[SiteSpec] = []
    seen_sites: set[str] = set()
    seen_devices: set[str] = set()
    for where, t in c.tables(raw, "sites", w):
        c.unknown(t, where, {"site", "inverters", "capbanks", "regulator", "meters"})
        site = c.get(t, where, "site", "string")
        if site is not None and (not valid_site(site) or site in seen_sites):
            c.fail(f"{where}.site", site, "a site id (1-64 letters, digits, '_', '.', '-'), once in [[dispatch.sites]]")
            site = None
        invs = [_inverter(c, x, k) for k, x in c.tables(t, "inverters", where)]
        caps = [_capbank(c, x, k) for k, x in c.tables(t, "capbanks", where)]
        reg = _regulator(c, t["regulator"], f"{where}.regulator") if "regulator" in t else None
        names = {x.device for x in invs if x is not None}
        meters = [_meter(c, x, k, names) for k, x in c.tables(t, "meters", where)]
        for kind, items in (("inverters", invs), ("capbanks", caps)):
            for i, x in enumerate(items):
                if x is not None and x.device in seen_devices:
                    c.fail(f"{where}.{kind}[{i}].device", x.device, "a device named once in [dispatch]")
                elif x is not None:
                    seen_devices.add(x.device)
        if site is not None:
            seen_sites.add(site)
            sites.append(SiteSpec(site, tuple(x for x in invs if x), tuple(x for x in caps if x), reg,
                                  tuple(x for x in meters if x)))  # fmt: skip
    if not sites and not any(i.key.startswith("dispatch.sites") for i in c.issues[before:]):
        c.fail("dispatch.sites", raw.get("sites", "(none)"), "at least one [[dispatch.sites]] with a site")
    if sum(1 for s in sites if s.regulator is not None) > 1:
        c.fail("dispatch.sites", "(2 regulators)", "at most one site with a regulator (the feeder's head regulator)")
    nowcast = _nowcast(c, raw["nowcast"], "dispatch.nowcast", seen_sites) if "nowcast" in raw else None
    if len(c.issues) > before:
        return None
    assert network is not None and feeder is not None
    return DispatchConfig(network=network, feeder=feeder, sites=tuple(sites), interval_s=interval,
                          horizon_intervals=horizon, monitor=tuple(monitor), v_min_pu=float(v_min),
                          v_max_pu=float(v_max), margin_pu=float(margin),
                          reverse_power_kw=None if reverse is None else float(reverse),
                          price=None if price is None else float(price), price_file=price_file,
                          loss_cost=float(costs["loss_cost"]), tap_wear_cost=float(costs["tap_wear_cost"]),
                          cap_wear_cost=float(costs["cap_wear_cost"]), cvr_factor=float(cvr),
                          expiry_margin_s=float(margin_s), key_id=key_id, follow_tolerance_pct=float(tol),
                          refine_passes=passes,
                          import_limit_kw=None if import_limit is None else float(import_limit),
                          var_min_pct=float(var_min), nowcast=nowcast, p_response_s=float(response),
                          trim_at_s=float(trim_at or 0.0))  # fmt: skip
