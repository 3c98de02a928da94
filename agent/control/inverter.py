"""The DER actuator: a SunSpec inverter behind the safety envelope (agent/control/der.py says what it is asked).

``der.configure`` carries every point a ``[[control.der]]`` group asks the inverter to hold, by the names of
the device's layout, as the active curves hold them (``DERVoltVar.Crv[1].Pt[1].V``...). The actuator writes them
in an order the device accepts at every step, each write read back register for register
(:meth:`agent.acquisition.SunSpecLink.write_points`):

1. what must be off first: 704 set points the group does not ask, volt-var when another reactive power mode is
   asked (IEEE 1547-2018 5.3: one at a time);
2. per curve (705 volt-var, 706 volt-watt, 711 frequency droop): for an explicit curve, the category's default
   into curve 3 first; the editable curve ``Crv[2]`` / ``Ctl[2]`` — its points, then its header — then the adopt
   request and the function's enable in one request, with (explicit curve) ``RvrtCrv``/``RvrtCtl`` = 3 and
   ``RvrtTms`` = ``reversion_s``, the model's own reversion timer, or (hand-back) ``RvrtTms`` = 0;
3. the 704 set points' values and reversion timers (``*RvrtTms`` = ``reversion_s``; what they revert to:
   the function off, neutral values), then their enables, which start the timers.

Then the active curves and set points are read until they show every value asked, within the envelope's
readback deadline. A device that takes a write and holds something else, or refuses part of it, is a readback
failure: the envelope raises the alarm, hands the device back and suspends the function on it. ``der.refresh``
writes a set point again, or a curve model's ``RvrtTms``, restarting its reversion timer.

The hand-back (:meth:`DerActuator.hand_back`) puts the inverter in its autonomous state: the IEEE 1547-2018
default curves of the group's category (volt-var Table 8, volt-watt Table 10, frequency droop Table 24), every
704 set point off with no timer running, the curves' enables as the device had them before the agent first wrote
to it. After an agent crash, the set points the agent wrote revert by the device's own 704 timers within
``reversion_s``, and an explicit curve by the curve model's own timer, which adopts curve 3 (the default). A curve
other than the category's default on a device whose model has no reversion timer (``RvrtTms`` absent from its
layout, or read "not implemented" by the poller) is refused by :meth:`DerActuator.bounds` (``no_reversion_timer``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.acquisition import SunSpecLink
from agent.clock import Clock
from agent.control import ieee1547
from agent.control.actuators import Actuator, Budget, Result
from agent.control.decision import Command
from agent.control.der import (
    ACTIVE,
    ADOPT,
    CTL,
    EDIT,
    ENABLE,
    FALLBACK,
    FALLBACK_INDEX,
    FD,
    RVRT_TO,
    SETPOINTS,
    TIMER,
    VV,
    VW,
    autonomous_state,
    category_defaults,
    differs,
    freq_droop_points,
    volt_var_points,
    volt_watt_points,
)
from agent.control.view import View
from protocols.modbus.errors import ModbusDeviceError
from protocols.sunspec.discovery import DiscoveryError
from protocols.sunspec.write import SunSpecWriteError

CURVES = (VV, VW, FD)
CURVE_ENABLES = tuple(f"{m}.Ena" for m in CURVES)
VV_POINTS, VW_POINTS = 4, 2  # IEEE 1547-2018 Table 8: 4 points; Table 10: 2 points


class WriteFailed(Exception):
    """One step of a write came back otherwise than applied: the Result to hand the envelope."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.status)
        self.result = result


def write_steps(target: Mapping[str, float]) -> list[dict[str, float]]:
    """The writes carrying ``target`` (active-curve names) in the order the module docstring gives."""
    steps: list[dict[str, float]] = []
    off = {k: v for k, v in target.items() if v == 0 and (k in ENABLE.values() or k == f"{VV}.Ena")}
    if off:
        steps.append(off)
    for m in CURVES:
        active = ACTIVE[m]
        mine = {k.removeprefix(active): v for k, v in target.items() if k.startswith(active + ".")}
        fallback = {k.removeprefix(FALLBACK[m]): v for k, v in target.items() if k.startswith(FALLBACK[m] + ".")}
        for slot, points in ((FALLBACK[m], fallback), (EDIT[m], mine)):
            if points:
                pts = {slot + k: v for k, v in points.items() if k.startswith(".Pt[")}
                head = {slot + k: v for k, v in points.items() if not k.startswith(".Pt[")}
                if m == VV:
                    head |= {f"{slot}.ActPt": VV_POINTS, f"{slot}.Pri": 1, f"{slot}.VRefAutoEna": 0}
                elif m == VW:
                    head[f"{slot}.ActPt"] = VW_POINTS
                steps += [s for s in (pts, head) if s]
        adopt: dict[str, float] = {ADOPT[m]: 2} if mine else {}
        adopt |= {k: target[k] for k in (RVRT_TO[m], TIMER[m]) if k in target}  # with the adopt: (re)starts it
        if f"{m}.Ena" in target and f"{m}.Ena" not in off:
            adopt[f"{m}.Ena"] = target[f"{m}.Ena"]
        if adopt:
            steps.append(adopt)
    values = {k: v for k, v in target.items() if k.startswith(f"{CTL}.") and k not in ENABLE.values()}
    if values:
        steps.append(values)
    on = {k: v for k, v in target.items() if k in ENABLE.values() and v != 0}
    if on:
        steps.append(on)
    return steps


def _out_of_range(*settings: tuple[str, float]) -> str | None:
    """The first (range name, value) of ``settings`` outside its IEEE 1547-2018 range of allowable settings
    (:func:`ieee1547.setting_range`), said as the refusal; None when all are inside."""
    for rng, x in settings:
        r = ieee1547.setting_range(rng)
        if x not in r:
            return f"{rng} = {x:g}: must be in {r.lo:g}..{r.hi:g} {r.unit} ({r.source})"
    return None


class DerActuator(Actuator):
    """One SunSpec inverter of a DER group (module docstring)."""

    kind = "der"
    actions = frozenset({"der.configure", "der.refresh"})

    def __init__(self, link: SunSpecLink, clock: Clock, *, category: str, reversion_s: float,
                 setpoint_changes_per_hour: int, **kw: Any) -> None:  # fmt: skip
        budgets = (Budget("setpoint_changes_per_hour", "setpoint_changes", setpoint_changes_per_hour, 3_600.0),)
        super().__init__(link, clock, budgets=budgets, **kw)  # type: ignore[arg-type]
        self.sunspec = link
        self.category = category
        self.reversion_s = reversion_s

    @property
    def device(self) -> str:
        return self.sunspec.device.name

    # -- what the envelope's checks read ------------------------------------------------------------------
    def state_points(self) -> tuple[str, ...]:
        return tuple(self.point(p) for p in ENABLE.values())  # 704: read at every poll

    def bounds(self, command: Command, view: View) -> str | None:
        base = super().bounds(command, view)
        if base is not None:
            return base
        v = dict(command.values)
        for name in v:
            if not name.startswith((f"{CTL}.", f"{VV}.", f"{VW}.", f"{FD}.")):
                return f"{name}: not a point of SunSpec 704, 705, 706 or 711"
        try:
            return self._curve_bounds(v, view) or self._setpoint_bounds(v)
        except (KeyError, ValueError) as err:
            return f"not a curve of IEEE 1547-2018: {err}"

    def _curve_bounds(self, v: Mapping[str, float], view: View) -> str | None:
        vv_d, vw_d, fd_d = category_defaults(self.category)
        cap = ieee1547.default(f"reactive_capability.category-{self.category.lower()}")
        k = ACTIVE[VV]
        if f"{k}.Pt[1].V" in v:
            vs = tuple(v[f"{k}.Pt[{i}].V"] / 100.0 for i in range(1, 5))
            qs = tuple(v[f"{k}.Pt[{i}].Var"] for i in range(1, 5))
            curve = ieee1547.VoltVarCurve(vs, qs, v[f"{k}.VRef"] / 100.0, v[f"{k}.RspTms"])  # type: ignore[arg-type]
            why = _out_of_range(("volt_var.v_ref_pu", curve.v_ref_pu), ("volt_var.response_s", curve.response_s))
            if why:
                return why
            if curve.q_pct[0] > cap.q_inject_pct or -curve.q_pct[3] > cap.q_absorb_pct:
                return (
                    f"volt-var Q = {list(curve.q_pct)}: beyond category {self.category}'s capability "
                    f"({cap.q_inject_pct:g} % injection, {cap.q_absorb_pct:g} % absorption; {cap.source})"
                )
            if volt_var_points(curve) != volt_var_points(vv_d):
                why = self._timer_bounds(v, view, VV)
                if why:
                    return why
        k = ACTIVE[VW]
        if f"{k}.Pt[1].V" in v:
            curve_w = ieee1547.VoltWattCurve((v[f"{k}.Pt[1].V"] / 100.0, v[f"{k}.Pt[2].V"] / 100.0),
                                             (v[f"{k}.Pt[1].W"], v[f"{k}.Pt[2].W"]), v[f"{k}.RspTms"])  # fmt: skip
            why = _out_of_range(("volt_watt.v1_pu", curve_w.v_pu[0]), ("volt_watt.v2_pu", curve_w.v_pu[1]),
                                ("volt_watt.response_s", curve_w.response_s))  # fmt: skip
            if why:
                return why
            if volt_watt_points(curve_w) != volt_watt_points(vw_d):
                why = self._timer_bounds(v, view, VW)
                if why:
                    return why
        k = ACTIVE[FD]
        if f"{k}.DbOf" in v:
            fd = ieee1547.FreqDroop(v[f"{k}.DbOf"], v[f"{k}.DbUf"], v[f"{k}.KOf"], v[f"{k}.KUf"], v[f"{k}.RspTms"])
            why = _out_of_range(("freq_droop.db_hz", fd.db_of_hz), ("freq_droop.db_hz", fd.db_uf_hz),
                                ("freq_droop.k", fd.k_of), ("freq_droop.k", fd.k_uf),
                                ("freq_droop.response_s", fd.response_s))  # fmt: skip
            if why:
                return why
            if freq_droop_points(fd) != freq_droop_points(fd_d):
                why = self._timer_bounds(v, view, FD)
                if why:
                    return why
        return None

    def _setpoint_bounds(self, v: Mapping[str, float]) -> str | None:
        cap = ieee1547.default(f"reactive_capability.category-{self.category.lower()}")
        pf = v.get(f"{CTL}.PFWInj.PF")
        if pf is not None:
            lo = cap.pf_min_inject if v.get(f"{CTL}.PFWInj.Ext", 0) == 0 else cap.pf_min_absorb
            if not round(lo, 3) <= pf <= 1.0:
                return f"PFWInj.PF = {pf:g}: must be in {lo:.3f}..1 ({cap.source}, clause 5.3.2)"
        q = v.get(f"{CTL}.VarSetPct")
        if q is not None and not -cap.q_absorb_pct <= q <= cap.q_inject_pct:
            return f"VarSetPct = {q:g}: must be in {-cap.q_absorb_pct:g}..{cap.q_inject_pct:g} % ({cap.source})"
        p = v.get(f"{CTL}.WMaxLimPct")
        r = ieee1547.setting_range("active_power_limit.pct")
        if p is not None and p not in r:
            return f"WMaxLimPct = {p:g}: must be in {r.lo:g}..{r.hi:g} {r.unit} ({r.source})"
        for s in SETPOINTS:
            tms = v.get(f"{CTL}.{s}RvrtTms")
            if v.get(ENABLE[s]) == 1 and (tms is None or not 1 <= tms <= 86_400):
                return f"{s}RvrtTms = {tms}: a set point goes with its reversion timer, 1..86400 s"
        return None

    def has_timer(self, view: View, model: str) -> bool:
        """Whether the device has the curve model's reversion timer: the poller, which reads the points of the layout
        it discovered, read a number at ``RvrtTms`` (a model without the point gives no reading; a device that does
        not implement it reads "not implemented", INVALID). From the snapshot alone, so ``control explain`` judges
        as the running agent does."""
        i = view.input(f"{self.device}.{TIMER[model]}")
        return i.quality == "good" and isinstance(i.value, int | float)

    def _timer_bounds(self, v: Mapping[str, float], view: View, model: str) -> str | None:
        """A curve other than the category's default goes with the model's own reversion timer, which falls back to
        the default (in slot ``FALLBACK``): else it would outlast an agent crash."""
        if not self.has_timer(view, model):
            return (f"no_reversion_timer: a {model} curve other than category {self.category}'s IEEE 1547-2018 "
                    "default would outlast an agent crash, and this device has no reversion timer for it")  # fmt: skip
        tms, to = v.get(TIMER[model]), v.get(RVRT_TO[model])
        if tms is None or not 1 <= tms <= 86_400 or to != FALLBACK_INDEX:
            return f"{model}: an explicit curve goes with RvrtTms 1..86400 s and RvrtCrv = its default's slot"
        return None

    def cost(self, command: Command, view: View) -> dict[str, int]:
        return {"setpoint_changes": 1} if command.action == "der.configure" else {}

    def direction(self, command: Command, view: View) -> int:
        return 0  # a curve is not up or down: the hunting detector does not count it

    def local_state(self, view: View, held: Mapping[str, Any] | None) -> str | None:
        return None  # SunSpec 704 has no local/remote switch the agent could be overruled by

    async def heartbeat(self) -> bool:
        return False  # set points are refreshed by the function's own decisions (der.refresh), not blindly

    # -- carrying out ---------------------------------------------------------------------------------------------
    async def _write(self, values: dict[str, float], done: list[str]) -> None:
        outcome = await self.sunspec.write_points(values)  # type: ignore[arg-type]
        if outcome.outcome == "applied":
            done.extend(values)
            return
        if outcome.outcome == "refused":
            detail = {"exception": outcome.code, "exception_name": outcome.meaning,  # type: ignore[union-attr]
                      "points": list(outcome.points)}  # type: ignore[union-attr]  # fmt: skip
            if done or outcome.written:  # type: ignore[union-attr]
                raise WriteFailed(Result("readback_failed", {}, {**detail, "partial": True}))
            raise WriteFailed(Result("refused", {}, detail))
        if outcome.outcome == "mismatch":
            bad = {m.name: [m.wanted, m.read] for m in outcome.mismatches}  # type: ignore[union-attr]
            readback = dict(outcome.readback)  # type: ignore[union-attr]
            raise WriteFailed(Result("readback_failed", readback, {"mismatch": bad}))
        raise WriteFailed(Result("failed", {}, {"error": outcome.error, "stage": outcome.stage}))  # type: ignore[union-attr]

    async def _read(self, names: list[str]) -> dict[str, Any]:
        got = await self.sunspec.read_points(names)
        return {k: v for k, (v, _why) in got.items()}

    async def _apply(self, target: Mapping[str, float], deadline_s: float) -> tuple[str, dict[str, Any], dict]:
        """Write ``target`` step by step, then read until the device shows it (or the deadline passes)."""
        done: list[str] = []
        steps = write_steps(target)
        for values in steps:
            await self._write(values, done)
        end = self.clock.monotonic() + deadline_s
        reads = 0
        while True:
            got = await self._read(list(target))
            reads += 1
            bad = {k: [got.get(k), v] for k, v in target.items() if differs(got.get(k), v, k)}
            if not bad:
                return "applied", got, {"writes": len(steps)}
            if reads >= 2 and self.clock.monotonic() >= end:
                return "readback_failed", got, {"writes": len(steps), "mismatch": bad}
            await self.clock.sleep(self.scan_s)

    async def _run(self, target: Mapping[str, float], held: dict[str, Any] | None, deadline_s: float) -> Result:
        try:
            if held is None:
                held = {"enables": {k: v for k, v in (await self._read(list(CURVE_ENABLES))).items() if v is not None}}
            status, got, detail = await self._apply(target, deadline_s)
        except WriteFailed as wf:
            r = wf.result
            return Result(r.status, r.readback, r.detail, held=held)
        except SunSpecWriteError as err:
            return Result("refused", {}, {"error": str(err), "error_type": "SunSpecWriteError"}, held=held)
        except (ModbusDeviceError, DiscoveryError, KeyError) as err:
            return Result("failed", {}, {"error": str(err), "error_type": type(err).__name__}, held=held)
        return Result(status, _plain(got), detail, held=held)

    async def carry_out(self, command: Command, held: Mapping[str, Any] | None, deadline_s: float) -> Result:
        return await self._run(dict(command.values), dict(held) if held is not None else None, deadline_s)

    def autonomous(self, held: Mapping[str, Any] | None, timers: tuple[str, ...] = ()) -> dict[str, float]:
        """What the hand-back writes: the category's defaults, set points off, the enables as they were, and the
        reversion timer of each curve model in ``timers`` (those the device has) stopped."""
        target = autonomous_state(self.category)
        enables = (held or {}).get("enables") or {}
        target |= {k: float(v) for k, v in enables.items() if k in CURVE_ENABLES}
        target |= {TIMER[m]: 0 for m in timers}
        return target

    async def _timers(self) -> tuple[str, ...]:
        """The curve models whose reversion timer the device implements (read now; () if it cannot be read)."""
        try:
            layout = (await self.sunspec.discover()).layout
            names = [TIMER[m] for m in CURVES if TIMER[m] in layout.points]
            got = await self._read(names) if names else {}
        except (ModbusDeviceError, DiscoveryError, KeyError):
            return ()  # the hand-back's own writes will say what is wrong with the device
        return tuple(m for m in CURVES if isinstance(got.get(TIMER[m]), int | float))

    async def hand_back(self, held: Mapping[str, Any] | None, deadline_s: float) -> Result:
        target = self.autonomous(held, await self._timers())
        r = await self._run(target, dict(held) if held is not None else {}, deadline_s)
        ok = r.status == "applied"
        detail = {**r.detail, "autonomous": f"IEEE 1547-2018 category {self.category} defaults, set points off"}
        return Result(r.status, r.readback, detail, held=None if ok else dict(held or {}), released=ok)


def _plain(got: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in got.items()}


__all__ = ["DerActuator", "write_steps"]
