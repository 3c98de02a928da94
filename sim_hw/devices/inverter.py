"""A simulated smart PV inverter: SunSpec over Modbus, IEEE 1547-2018 behaviour from EPRI's OpenDER.

The inverter is a bench device model (see sim_hw/devices/meter.py for the shape): each step the bench
calls ``actuate(t, feeder)`` (push P/Q into the physics), solves, ``observe(t, solution)`` (the terminal
voltage, frequency and irradiance drive one or more OpenDER steps) and ``values(t)`` (the SunSpec
registers). Client writes arrive through ``on_write``; an accepted write changes the OpenDER settings.

Register layout (docs/devices/sim-inverter.md): SunSpec from holding register 40000 (or the ``base``
option: 0 or 50000), models 1, 701, 702, 703, 704, 705, 706, 711 and the end model, built from
pysunspec2's definitions by :mod:`protocols.sunspec.layout`. Signs: W > 0 is generation; Var > 0 is
injection (over-excited), Var < 0 absorption (under-excited), for both the measurements and the var
setpoint; PF has the sign of W (SunSpec model 701, "PF").

OpenDER's traps, handled here in :class:`OpenDerAdapter`: ``DER.t_s`` is class-wide,
so the adapter sets it to its own step before every run; ``NP_NORMAL_OP_CAT`` is given first because it
resets the volt-var curve; every input is passed explicitly each step (OpenDER silently defaults missing
ones); the nominal frequency must be 60 Hz (OpenDER hard-codes it in droop and trip settings).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from importlib.metadata import version
from typing import Any, Protocol

from opender import DER, DER_PV

from protocols.eventlog import EventLog
from protocols.modbus.registermap import encode_point
from protocols.sunspec.layout import BASE_ADDRESSES, SunSpecLayout, build_layout
from sim_hw.devices.inverter_settings import (
    CAP,
    CAT_B_Q_PU,
    COMMON,
    CTL,
    ES,
    FD,
    FD_CTLS,
    GROUP_COUNTS,
    ILLEGAL_ADDRESS,
    ILLEGAL_VALUE,
    MEAS,
    VV,
    VV_CURVES,
    VV_POINTS,
    VW,
    VW_CURVES,
    WRITABLE,
    _check_settings,
    _default_settings,
    sf_values_for,
)
from sim_hw.devices.modbus_server import WriteRequest
from sim_hw.devices.sunspec_curves import CURVE_RVRT_POINTS, CurveTimers, ReversionTimers
from sim_hw.feeder.solution import Solution

log = EventLog("sim.devices")

MODEL_IDS = (1, 701, 702, 703, 704, 705, 706, 711)
MAX_CATCHUP_STEPS = 3600  # a long pause between observations runs at most this many OpenDER steps
MANUFACTURER = "GridEdge Sim"


class InverterConfigError(ValueError):
    """Bad inverter parameters (from the bench TOML): names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key} = {value!r}: {allowed}")


class InverterError(RuntimeError):
    """The inverter cannot follow the bench (time running backwards, its bus missing from the solution)."""


class FeederLike(Protocol):
    def set_pv(self, name: str, p_kw: float, q_kvar: float) -> None: ...


# --- OpenDER --------------------------------------------------------------------------------------------


class OpenDerAdapter:
    """One OpenDER ``DER_PV`` with explicit inputs every step and its own time step.

    Settings are OpenDER common-file-format names (``CONST_Q``, ``QV_CURVE_V1``...), applied with
    :meth:`apply`. :meth:`step` takes per-unit voltages, Hz and available DC power [kW] and returns
    (P [kW], Q [kvar]) with Q > 0 injecting.
    """

    def __init__(self, *, kva: float, kw: float, q_max_kvar: float, v_nom_ll_v: float, phases: int, step_s: float):
        self.step_s = step_s
        DER.t_s = step_s  # class-wide: set before the model is built (its filters are sized from it) ...
        self.der = DER_PV(
            NP_NORMAL_OP_CAT="CAT_B",  # first: it resets the volt-var curve and response time
            NP_VA_MAX=kva * 1000.0,
            NP_P_MAX=kw * 1000.0,
            NP_Q_MAX_INJ=q_max_kvar * 1000.0,
            NP_Q_MAX_ABS=q_max_kvar * 1000.0,
            NP_V_DC=v_nom_ll_v * 1.5,  # before NP_AC_V_NOM: above the AC peak, else OpenDER warns
            NP_AC_V_NOM=v_nom_ll_v,
            NP_PHASE="THREE" if phases == 3 else "SINGLE",
        )
        self.three_phase = phases == 3

    def apply(self, settings: Mapping[str, Any]) -> None:
        for key, value in settings.items():
            setattr(self.der.der_file, key, value)

    def step(self, v_pu: list[float], f_hz: float, p_avail_kw: float) -> tuple[float, float]:
        DER.t_s = self.step_s  # ... and before every run, since another inverter may use another step
        if self.three_phase:
            self.der.update_der_input(v_pu=v_pu, f=f_hz, p_dc_kw=p_avail_kw)
        else:
            # theta given: OpenDER would otherwise log "Theta is not defined" on every step (the angle is unused)
            self.der.update_der_input(v_pu=v_pu[0], theta=0.0, f=f_hz, p_dc_kw=p_avail_kw)
        self.der.run()
        return float(self.der.p_out_kw), float(self.der.q_out_kvar)

    @property
    def status(self) -> str:
        return str(self.der.der_status)


# --- the device -----------------------------------------------------------------------------------------

_OPTIONS = {
    "site": "the feeder's PV site name, e.g. 'pv675'",
    "bus": "the feeder bus the inverter sits on, e.g. '675'",
    "kva": "rated apparent power [kVA] > 0",
    "kw": "rated active power (Pmpp) [kW], 0 < kw <= kva",
    "phases": "'abc' (three-phase) or one of 'a', 'b', 'c'",
    "v_nom_ll_v": "nominal line-to-line voltage of the bus [V] > 0 (4160 on the IEEE 13-node feeder)",
    "category": "'B' (IEEE 1547-2018 normal operating performance category)",
    "nominal_hz": "60 (OpenDER hard-codes 60 Hz)",
    "step_s": "bench step [s], 0 < step_s <= 60",
    "settings": "initial SunSpec settings {point name: value}, checked as a client write would be",
    "base": "the SunSpec base address: 40000 (default), 0 or 50000",
    "curve_reversion": "true (default): 705/706/711 serve their reversion timers; false: not implemented",
}


class SunSpecInverter:
    """A PV inverter serving SunSpec models 1, 701-706, 711 and behaving as OpenDER's IEEE 1547-2018 DER.

    Parameters
    ----------
    name : device name (the serial number derives from it).
    site : the feeder's PV site this inverter drives (``feeder.set_pv(site, ...)``).
    bus : the bus whose voltage it measures. phases : ``"abc"`` or a single phase.
    kva : rated apparent power [kVA]. kw : rated active power [kW] (<= kva).
    v_nom_ll_v : nominal line-to-line voltage [V]. category : ``"B"``. nominal_hz : 60 [Hz].
    step_s : the bench step [s]: one OpenDER step per ``step_s`` of simulated time.
    settings : initial SunSpec setting points {name: engineering value}, validated like a write.
    base : the SunSpec base address (40000, 0 or 50000): where the "SunS" marker sits.
    curve_reversion : whether 705, 706 and 711 implement their reversion timers (``RvrtTms``, ``RvrtRem``,
        ``RvrtCrv``/``RvrtCtl``); False serves them "not implemented", as a device without them would.
    """

    def __init__(
        self,
        name: str,
        *,
        site: str,
        bus: str,
        kva: float,
        kw: float,
        phases: str = "abc",
        v_nom_ll_v: float = 4160.0,
        category: str = "B",
        nominal_hz: float = 60.0,
        step_s: float = 1.0,
        settings: Mapping[str, float | int] | None = None,
        base: int = 40000,
        curve_reversion: bool = True,
    ) -> None:
        def num(key: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InverterConfigError(f"{name}.{key}", value, _OPTIONS[key])
            return float(value)

        for key, value in (("site", site), ("bus", bus)):
            if not isinstance(value, str) or not value:
                raise InverterConfigError(f"{name}.{key}", value, _OPTIONS[key])
        kva, kw = num("kva", kva), num("kw", kw)
        v_nom_ll_v, nominal_hz, step_s = (
            num("v_nom_ll_v", v_nom_ll_v),
            num("nominal_hz", nominal_hz),
            num("step_s", step_s),
        )
        checks = (
            ("kva", kva, 0 < kva <= 100_000),
            ("kw", kw, 0 < kw <= kva),
            ("v_nom_ll_v", v_nom_ll_v, 0 < v_nom_ll_v <= 40_000),
            ("nominal_hz", nominal_hz, nominal_hz == 60.0),
            ("step_s", step_s, 0 < step_s <= 60),
            ("phases", phases, phases in ("abc", "a", "b", "c")),
            ("category", category, category == "B"),
            ("base", base, isinstance(base, int) and not isinstance(base, bool) and base in BASE_ADDRESSES),
            ("curve_reversion", curve_reversion, isinstance(curve_reversion, bool)),
        )
        for key, value, ok in checks:
            if not ok:
                raise InverterConfigError(f"{name}.{key}", value, _OPTIONS[key])
        self.name, self.site, self.bus, self.phases = name, site, bus.lower(), phases
        self.kva, self.kw, self.v_nom_ll_v, self.step_s = kva, kw, v_nom_ll_v, step_s
        self.q_max_kvar = CAT_B_Q_PU * kva
        self.layout: SunSpecLayout = build_layout(MODEL_IDS, GROUP_COUNTS, sf_values_for(kva, v_nom_ll_v), base)
        self.register_map = self.layout.register_map
        self.der = OpenDerAdapter(
            kva=kva, kw=kw, q_max_kvar=self.q_max_kvar, v_nom_ll_v=v_nom_ll_v, phases=len(phases), step_s=step_s
        )
        self.serial_number = f"SIM{zlib.crc32(name.encode()):010d}"
        self.settings: dict[str, float | int] = _default_settings()
        self.writable = WRITABLE if curve_reversion else WRITABLE - CURVE_RVRT_POINTS
        if not curve_reversion:
            self.settings = {k: v for k, v in self.settings.items() if k not in CURVE_RVRT_POINTS}
        self.curve_reversion = curve_reversion
        self.state: dict[str, int] = {f"{VV}.AdptCrvRslt": 1, f"{VW}.AdptCrvRslt": 1, f"{FD}.AdptCtlRslt": 1}
        self.der.apply(self._opender_settings(self.settings))
        # measured state (what observe saw and OpenDER answered)
        self.p_kw = 0.0
        self.q_kvar = 0.0
        self.v_ln: dict[str, complex] = {}
        self.f_hz = nominal_hz
        self.wh_inj = self.varh_inj = self.varh_abs = 0.0
        self._t_last: float | None = None
        self.reversion = ReversionTimers()  # 704 reversion timers
        self.curve_timers = CurveTimers()  # 705, 706, 711 reversion timers
        self._base = self._static_values()
        if settings:
            if not isinstance(settings, Mapping):
                raise InverterConfigError(f"{name}.settings", settings, _OPTIONS["settings"])
            for key, value in settings.items():
                if key not in self.writable:
                    raise InverterConfigError(f"{name}.settings.{key}", value, "a writable SunSpec point of the map")
            reason = self._accept(dict(settings))
            if reason is not None:
                bad = reason[0]
                raise InverterConfigError(f"{name}.settings.{bad}", settings.get(bad), reason[1])

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> SunSpecInverter:
        """Build from a bench TOML table; unknown keys and missing required keys are errors naming the key."""
        if not isinstance(options, Mapping):
            raise InverterConfigError(name, options, "must be a table")
        for key in options:
            if key not in _OPTIONS:
                raise InverterConfigError(f"{name}.{key}", options[key], f"unknown key; allowed: {', '.join(_OPTIONS)}")
        for key in ("site", "bus", "kva", "kw"):
            if key not in options:
                raise InverterConfigError(f"{name}.{key}", None, f"is required: {_OPTIONS[key]}")
        return cls(name, **options)

    # --- bench interface ------------------------------------------------------------------------------
    def actuate(self, t: float, feeder: FeederLike) -> None:
        """Push the output computed at the last observation into the physics (q > 0 injects vars)."""
        feeder.set_pv(self.site, self.p_kw, self.q_kvar)

    def observe(self, t: float, solution: Solution) -> None:
        """Measure the terminal voltage, frequency and irradiance and run OpenDER up to ``t``."""
        if self._t_last is not None and t < self._t_last:
            raise InverterError(f"inverter {self.name!r}: time ran backwards ({t} < {self._t_last})")
        self._revert_expired(t)
        try:
            v = solution.v(self.bus)
            base = solution.base_kv_ln[self.bus] * 1000.0
        except KeyError as err:
            raise InverterError(f"inverter {self.name!r}: bus {self.bus!r} is not in the solution") from err
        phases = "abc" if self.phases == "abc" else self.phases
        missing = [p for p in phases if p not in v]
        if missing:
            raise InverterError(f"inverter {self.name!r}: bus {self.bus!r} has no phase {missing[0]!r}")
        bad = next((p for p in phases if not math.isfinite(abs(v[p]))), None)
        if bad is not None:  # OpenDER would raise a bare ValueError naming no device, after v_ln was stored
            raise InverterError(f"inverter {self.name!r}: bus {self.bus!r} phase {bad} voltage {abs(v[bad])}")
        self.v_ln = {p: v[p] for p in phases}
        v_pu = [abs(v[p]) / base for p in phases]
        irr = solution.irradiance_pu
        if irr is None or not math.isfinite(irr) or irr < 0:
            log.info("inverter_irradiance_invalid", device=self.name, irradiance=irr, available_kw=0)
            irr = 0.0
        f = solution.frequency_hz
        if f is None or not math.isfinite(f) or f <= 0:
            log.info("inverter_frequency_invalid", device=self.name, frequency=f, assumed_hz=60)
            f = 60.0
        self.f_hz = f
        if self._t_last is None:
            steps, dt = 1, self.step_s
        else:
            dt = t - self._t_last
            steps = min(MAX_CATCHUP_STEPS, round(dt / self.step_s))
        self._t_last = t
        for _ in range(steps):
            self.p_kw, self.q_kvar = self.der.step(v_pu, f, irr * self.kw)
        if steps:
            hours = dt / 3600.0
            self.wh_inj += max(self.p_kw, 0.0) * 1000.0 * hours
            self.varh_inj += max(self.q_kvar, 0.0) * 1000.0 * hours
            self.varh_abs += max(-self.q_kvar, 0.0) * 1000.0 * hours

    def values(self, t: float | None = None) -> dict[str, float | int | str]:
        """Every point of the SunSpec map: fixed and nameplate points, accepted settings, measurements."""
        out = dict(self._base)
        out.update(self.settings)
        out.update(self.state)
        out.update(self.reversion.remaining(self._t_last if t is None else t))
        if self.curve_reversion:
            out.update(self.curve_timers.remaining(self._t_last if t is None else t))
        out.update(self._measurements())
        return out

    def on_write(self, req: WriteRequest) -> int | None:
        """Accept (None) or refuse a client write: 2 for a point that cannot be changed, 3 for a bad value."""
        current = self.values()
        changes: dict[str, float | int] = {}
        for name, value in req.points.items():
            if name in self.writable:
                changes[name] = value  # type: ignore[assignment]
                continue
            reg = self.layout.point(name).register
            if encode_point(reg, value) != encode_point(reg, current[name]):
                log.info("inverter_write_refused", device=self.name, point=name, value=value, reason="read_only")
                return ILLEGAL_ADDRESS
        if not changes:
            return None
        reason = self._accept(changes)
        if reason is not None:
            log.info("inverter_write_refused", device=self.name, point=reason[0], value=changes.get(reason[0]),
                     reason=reason[1])  # fmt: skip
            return ILLEGAL_VALUE
        log.info("inverter_write_accepted", device=self.name, points=",".join(sorted(changes)))
        self.reversion.on_write(changes, self.settings, self._t_last)
        if self.curve_reversion:
            self.curve_timers.on_write(changes, self.settings, self._t_last)
        return None

    def _revert_expired(self, t: float) -> None:
        """Functions whose 704 reversion timer ran out take their reversion values (through OpenDER's settings).
        A reversion that would break a rule (a second reactive power mode on) disables the function instead."""
        for rv in self.reversion.expired(t, self.settings):
            values = {point: self.settings[source] for point, source in rv.reverts.items()}
            reason = self._accept(values)
            if reason is not None:
                log.warning("inverter_reversion_refused", device=self.name, function=rv.name, point=reason[0],
                            reason=reason[1], instead="disabled")  # fmt: skip
                values = {rv.enable: 0}
                self._accept(values)
            log.warning("inverter_reverted", device=self.name, function=rv.name, t=round(t, 1),
                        values=",".join(f"{k.split('.', 1)[1]}={v:g}" for k, v in values.items()))  # fmt: skip
        for crv in self.curve_timers.expired(t, self.settings):
            n = int(self.settings[crv.curve])
            reason = self._accept({crv.adopt: n})
            if reason is not None:  # not reachable: every stored curve was checked when written
                log.warning("inverter_reversion_refused", device=self.name, function=crv.model, point=reason[0],
                            reason=reason[1], instead="kept")  # fmt: skip
                continue
            log.warning("inverter_curve_reverted", device=self.name, model=crv.model, curve=n, t=round(t, 1))

    # --- settings -------------------------------------------------------------------------------------
    def _accept(self, changes: dict[str, float | int]) -> tuple[str, str] | None:
        """Validate ``changes`` merged into the settings; apply them (and adopt curves) or return (point, why)."""
        pending = dict(self.settings)
        pending.update(changes)
        reason = _check_settings(pending, changes, self.q_max_kvar)
        if reason is not None:
            for req_key, rslt_key in ((f"{VV}.AdptCrvReq", f"{VV}.AdptCrvRslt"), (f"{VW}.AdptCrvReq", f"{VW}.AdptCrvRslt"),
                                      (f"{FD}.AdptCtlReq", f"{FD}.AdptCtlRslt")):  # fmt: skip
                if reason[0] == req_key:
                    self.state[rslt_key] = 2  # FAILED
            return reason
        for req_key, rslt_key, prefix, group in (
            (f"{VV}.AdptCrvReq", f"{VV}.AdptCrvRslt", VV, "Crv"),
            (f"{VW}.AdptCrvReq", f"{VW}.AdptCrvRslt", VW, "Crv"),
            (f"{FD}.AdptCtlReq", f"{FD}.AdptCtlRslt", FD, "Ctl"),
        ):
            n = int(changes.get(req_key, 0))
            if n >= 2:
                src, dst = f"{prefix}.{group}[{n}].", f"{prefix}.{group}[1]."
                for key in [k for k in pending if k.startswith(src)]:
                    pending[dst + key[len(src) :]] = pending[key]
            if req_key in changes:
                self.state[rslt_key] = 1  # COMPLETED
        self.settings = pending
        self.der.apply(self._opender_settings(pending))
        return None

    def _q_pu_of(self, pct: float, dept_ref: int) -> float:
        """A volt-var curve's Var point [% of its DeptRef] -> OpenDER per unit of nameplate VA."""
        if dept_ref == 3:  # VA_MAX_PCT
            return pct / 100.0
        return pct / 100.0 * self.q_max_kvar / self.kva  # VAR_MAX_PCT (VarMaxInj = VarMaxAbs here)

    def _opender_settings(self, s: Mapping[str, float | int]) -> dict[str, Any]:
        vv, vw, fd = f"{VV}.Crv[1]", f"{VW}.Crv[1]", f"{FD}.Ctl[1]"
        mode = int(s[f"{CTL}.VarSetMod"])
        if mode == 4:  # VARS
            q_pu = float(s[f"{CTL}.VarSet"]) / (self.kva * 1000.0)
        else:
            pct = float(s[f"{CTL}.VarSetPct"]) / 100.0
            ref_kvar = {0: self.kw, 1: self.q_max_kvar, 3: self.kva}[mode]
            q_pu = pct * ref_kvar / self.kva
        out: dict[str, Any] = {
            "ES_PERMIT_SERVICE": bool(s[f"{ES}.ES"]),
            "ES_V_HIGH": float(s[f"{ES}.ESVHi"]) / 100.0,
            "ES_V_LOW": float(s[f"{ES}.ESVLo"]) / 100.0,
            "ES_F_HIGH": float(s[f"{ES}.ESHzHi"]),
            "ES_F_LOW": float(s[f"{ES}.ESHzLo"]),
            "ES_DELAY": float(s[f"{ES}.ESDlyTms"]),
            "ES_RAMP_RATE": float(s[f"{ES}.ESRmpTms"]),
            "CONST_PF_MODE_ENABLE": bool(s[f"{CTL}.PFWInjEna"]),
            "CONST_PF": float(s[f"{CTL}.PFWInj.PF"]),
            "CONST_PF_EXCITATION": "INJ" if int(s[f"{CTL}.PFWInj.Ext"]) == 0 else "ABS",
            "AP_LIMIT_ENABLE": bool(s[f"{CTL}.WMaxLimPctEna"]),
            "AP_LIMIT": float(s[f"{CTL}.WMaxLimPct"]) / 100.0,
            "CONST_Q_MODE_ENABLE": bool(s[f"{CTL}.VarSetEna"]),
            "CONST_Q": q_pu,
            "QV_MODE_ENABLE": bool(s[f"{VV}.Ena"]),
            "QV_VREF": float(s[f"{vv}.VRef"]) / 100.0,
            "QV_VREF_AUTO_MODE": bool(s[f"{vv}.VRefAutoEna"]),
            "QV_VREF_TIME": float(s[f"{vv}.VRefAutoTms"]),
            "QV_OLRT": float(s[f"{vv}.RspTms"]),
            "PV_MODE_ENABLE": bool(s[f"{VW}.Ena"]),
            "PV_CURVE_V1": float(s[f"{vw}.Pt[1].V"]) / 100.0,
            "PV_CURVE_P1": float(s[f"{vw}.Pt[1].W"]) / 100.0,
            "PV_CURVE_V2": float(s[f"{vw}.Pt[2].V"]) / 100.0,
            "PV_CURVE_P2": float(s[f"{vw}.Pt[2].W"]) / 100.0,
            "PV_OLRT": float(s[f"{vw}.RspTms"]),
            "PF_MODE_ENABLE": bool(s[f"{FD}.Ena"]),
            "PF_DBOF": float(s[f"{fd}.DbOf"]),
            "PF_DBUF": float(s[f"{fd}.DbUf"]),
            "PF_KOF": float(s[f"{fd}.KOf"]),
            "PF_KUF": float(s[f"{fd}.KUf"]),
            "PF_OLRT": float(s[f"{fd}.RspTms"]),
        }
        dept = int(s[f"{vv}.DeptRef"])
        for i in range(1, VV_POINTS + 1):
            out[f"QV_CURVE_V{i}"] = float(s[f"{vv}.Pt[{i}].V"]) / 100.0
            out[f"QV_CURVE_Q{i}"] = self._q_pu_of(float(s[f"{vv}.Pt[{i}].Var"]), dept)
        return out

    # --- registers ------------------------------------------------------------------------------------
    def _static_values(self) -> dict[str, float | int | str]:
        lay = self.layout
        out: dict[str, float | int | str] = {name: lay.not_implemented(name) for name in lay.points}
        out.update(lay.fixed_values())
        va, w, var = self.kva * 1000.0, self.kw * 1000.0, self.q_max_kvar * 1000.0
        pf_ext = math.sqrt(1.0 - CAT_B_Q_PU**2)  # the PF at full vars and full VA
        n_ph = len(self.phases) if self.phases == "abc" else 1
        v_ph = self.v_nom_ll_v / math.sqrt(3)
        a_max = va / (n_ph * v_ph) if n_ph == 3 else va / v_ph
        out |= {
            f"{COMMON}.Mn": MANUFACTURER,
            f"{COMMON}.Md": f"SIM-PV-{self.kva:g}KVA",
            f"{COMMON}.Vr": f"opender {version('opender')}",
            f"{COMMON}.SN": self.serial_number,
            f"{COMMON}.Opt": "1547-2018 Cat B",
            f"{MEAS}.ACType": 2 if n_ph == 3 else 0,
            f"{MEAS}.DERMode": 1,  # GRID_FOLLOWING
            f"{MEAS}.MnAlrmInfo": "",
            f"{CAP}.WMaxRtg": w, f"{CAP}.WMax": w,
            f"{CAP}.VAMaxRtg": va, f"{CAP}.VAMax": va,
            f"{CAP}.VarMaxInjRtg": var, f"{CAP}.VarMaxInj": var,
            f"{CAP}.VarMaxAbsRtg": var, f"{CAP}.VarMaxAbs": var,
            f"{CAP}.WOvrExtRtg": min(w, va * pf_ext), f"{CAP}.WOvrExtRtgPF": pf_ext,
            f"{CAP}.WUndExtRtg": min(w, va * pf_ext), f"{CAP}.WUndExtRtgPF": pf_ext,
            f"{CAP}.PFOvrExtRtg": pf_ext, f"{CAP}.PFUndExtRtg": pf_ext,
            f"{CAP}.VNomRtg": self.v_nom_ll_v, f"{CAP}.VNom": self.v_nom_ll_v,
            # IEEE 1547-2018 4.10.2 / Table 4 and clause 6.4: continuous operation 0.88..1.10 VNom
            f"{CAP}.VMaxRtg": 1.1 * self.v_nom_ll_v, f"{CAP}.VMax": 1.1 * self.v_nom_ll_v,
            f"{CAP}.VMinRtg": 0.88 * self.v_nom_ll_v, f"{CAP}.VMin": 0.88 * self.v_nom_ll_v,
            f"{CAP}.AMaxRtg": a_max, f"{CAP}.AMax": a_max,
            f"{CAP}.NorOpCatRtg": 1,  # CAT_B
            f"{CAP}.AbnOpCatRtg": 2,  # CAT_3 (OpenDER's default abnormal category)
            # MAX_W, FIXED_VAR, FIXED_PF, VOLT_VAR, FREQ_WATT, VOLT_WATT
            f"{CAP}.CtrlModes": (1 << 0) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 10),
            f"{CAP}.IntIslandCatRtg": 1,  # UNCATEGORIZED
            f"{CAP}.IntIslandCat": 1,
            f"{ES}.ESRndTms": 0,
            f"{CTL}.VarSetPri": 1,  # REACTIVE
        }  # fmt: skip
        for c in range(1, VV_CURVES + 1):
            out[f"{VV}.Crv[{c}].ReadOnly"] = 1 if c == 1 else 0
            out[f"{VV}.Crv[{c}].VRefAuto"] = 100.0
        for c in range(1, VW_CURVES + 1):
            out[f"{VW}.Crv[{c}].ReadOnly"] = 1 if c == 1 else 0
        for c in range(1, FD_CTLS + 1):
            out[f"{FD}.Ctl[{c}].ReadOnly"] = 1 if c == 1 else 0
        return out

    def _measurements(self) -> dict[str, float | int]:
        p_w, q_var = self.p_kw * 1000.0, self.q_kvar * 1000.0
        s_va = math.hypot(p_w, q_var)
        pf = p_w / s_va if s_va > 0 else 1.0  # SunSpec 701: PF has the sign of W
        status = self.der.status
        tripped = status == "Trip"
        out: dict[str, float | int] = {
            f"{MEAS}.W": p_w,
            f"{MEAS}.Var": q_var,
            f"{MEAS}.VA": s_va,
            f"{MEAS}.PF": pf,
            f"{MEAS}.Hz": self.f_hz,
            f"{MEAS}.St": 0 if tripped else 1,
            f"{MEAS}.ConnSt": 0 if tripped else 1,
            f"{MEAS}.InvSt": _inv_state(status, p_w, bool(self.settings[f"{ES}.ES"])),
            f"{MEAS}.Alrm": (1 << 4) if tripped and self.settings[f"{ES}.ES"] else 0,  # GRID_DISCONNECT
            f"{MEAS}.TotWhInj": int(self.wh_inj),
            f"{MEAS}.TotWhAbs": 0,
            f"{MEAS}.TotVarhInj": int(self.varh_inj),
            f"{MEAS}.TotVarhAbs": int(self.varh_abs),
        }
        if not self.v_ln:
            return out
        phases = list(self.v_ln)
        n = len(phases)
        mags = [abs(self.v_ln[p]) for p in phases]
        amps = [(s_va / n) / m if m > 0 else 0.0 for m in mags]
        out[f"{MEAS}.A"] = sum(amps)  # SunSpec 701 A: "Total AC Current", the sum of the phase currents
        out[f"{MEAS}.LNV"] = sum(mags) / n
        if n == 3:
            va, vb, vc = (self.v_ln[p] for p in "abc")
            ll = (abs(va - vb), abs(vb - vc), abs(vc - va))
            out[f"{MEAS}.LLV"] = sum(ll) / 3
            for k, (ph, vll) in enumerate(zip(("L1", "L2", "L3"), ("VL1L2", "VL2L3", "VL3L1"), strict=True)):
                out[f"{MEAS}.W{ph}"] = p_w / 3
                out[f"{MEAS}.Var{ph}"] = q_var / 3
                out[f"{MEAS}.VA{ph}"] = s_va / 3
                out[f"{MEAS}.PF{ph}"] = pf
                out[f"{MEAS}.A{ph}"] = amps[k]
                out[f"{MEAS}.V{ph}"] = mags[k]
                out[f"{MEAS}.{vll}"] = ll[k]
        else:
            out |= {f"{MEAS}.WL1": p_w, f"{MEAS}.VarL1": q_var, f"{MEAS}.VAL1": s_va, f"{MEAS}.PFL1": pf}
            out |= {f"{MEAS}.AL1": amps[0], f"{MEAS}.VL1": mags[0]}
        return out


def _inv_state(status: str, p_w: float, permitted: bool) -> int:
    """OpenDER status -> SunSpec 701 InvSt (OFF 0, SLEEPING 1, STARTING 2, RUNNING 3, STANDBY 7)."""
    if status == "Trip":
        return 0 if permitted else 7
    if status == "Entering Service":
        return 2
    return 3 if p_w > 0 else 1
