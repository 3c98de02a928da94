"""Reversion timers of the simulated inverter: SunSpec model 704's set point timers and the curve models' (705, 706,
711) curve timers, on the simulated clock. docs/devices/sim-inverter.md, "Reversion timers", says what they do."""

from __future__ import annotations

import math
from collections.abc import Mapping

from sim_hw.devices.inverter_settings import CTL

# --- 704 reversion timers ------------------------------------------------------------------------------


class Reversion:
    """One SunSpec 704 function with a reversion timer: the points that set it, its timer, its reversion values.

    A write covering any of ``setpoints`` while ``tms`` is non-zero (after the write) starts the timer, or restarts
    it; a write of the function's enable 0, or of ``tms`` 0, stops it. When it runs out, each point of
    ``reverts`` takes the value of its reversion point (docs/devices/sim-inverter.md, "Reversion timers").
    """

    __slots__ = ("enable", "name", "rem", "reverts", "setpoints", "tms")

    def __init__(self, name: str, enable: str, setpoints: tuple[str, ...], reverts: dict[str, str]) -> None:
        self.name = name
        self.enable = f"{CTL}.{enable}"
        self.setpoints = frozenset(f"{CTL}.{p}" for p in (enable, *setpoints))
        self.tms = f"{CTL}.{name}RvrtTms"
        self.rem = f"{CTL}.{name}RvrtRem"
        self.reverts = {f"{CTL}.{k}": f"{CTL}.{v}" for k, v in reverts.items()}


# SunSpec model 704 (pysunspec2's model_704.json). Its descriptions call PFWInjEnaRvrt a "reversion timer ...
# enable" but VarSetEnaRvrt and WMaxLimPctEnaRvrt the "reversion ... enable" value; this device reads all three
# alike: the value the function's enable takes when its timer runs out (the timer runs when its Tms is non-zero).
REVERSIONS = (
    Reversion("PFWInj", "PFWInjEna", ("PFWInj.PF", "PFWInj.Ext"),
              {"PFWInjEna": "PFWInjEnaRvrt", "PFWInj.PF": "PFWInjRvrt.PF", "PFWInj.Ext": "PFWInjRvrt.Ext"}),
    Reversion("VarSet", "VarSetEna", ("VarSetMod", "VarSet", "VarSetPct"),
              {"VarSetEna": "VarSetEnaRvrt", "VarSet": "VarSetRvrt", "VarSetPct": "VarSetPctRvrt"}),
    Reversion("WMaxLimPct", "WMaxLimPctEna", ("WMaxLimPct",),
              {"WMaxLimPctEna": "WMaxLimPctEnaRvrt", "WMaxLimPct": "WMaxLimPctRvrt"}),
)  # fmt: skip


class ReversionTimers:
    """The running 704 reversion timers of one inverter, on the simulated clock [s]."""

    def __init__(self) -> None:
        self.due: dict[str, float] = {}  # function name -> when it reverts
        self.pending: set[str] = set()  # started before the inverter saw its first step: timed from that step

    def on_write(
        self, changes: Mapping[str, float | int], settings: Mapping[str, float | int], now: float | None
    ) -> None:
        """Start, restart or stop timers after an accepted write (``settings``: as they are after it)."""
        for rv in REVERSIONS:
            if rv.tms in changes and not settings[rv.tms]:
                self.due.pop(rv.name, None)
                self.pending.discard(rv.name)
            if not rv.setpoints.intersection(changes):
                continue
            if not settings[rv.enable] or not settings[rv.tms]:
                self.due.pop(rv.name, None)  # the function is off, or has no timer: nothing to revert
                self.pending.discard(rv.name)
            elif now is None:
                self.pending.add(rv.name)
            else:
                self.due[rv.name] = now + float(settings[rv.tms])

    def expired(self, t: float, settings: Mapping[str, float | int]) -> list[Reversion]:
        """The functions whose timer has run out at ``t`` (their timers stopped)."""
        for name in self.pending:
            rv = next(r for r in REVERSIONS if r.name == name)
            self.due[name] = t + float(settings[rv.tms])
        self.pending.clear()
        out = [rv for rv in REVERSIONS if rv.name in self.due and t >= self.due[rv.name]]
        for rv in out:
            del self.due[rv.name]
        return out

    def remaining(self, t: float | None) -> dict[str, int]:
        """Every function's ``*RvrtRem`` [s, rounded up]: 0 when its timer does not run."""
        return {rv.rem: _left(self.due.get(rv.name), t) for rv in REVERSIONS}


# --- 705, 706, 711 curve reversion timers -----------------------------------------------------------------


class CurveReversion:
    """One curve model's reversion points (pysunspec2's model_705/706/711.json): ``RvrtTms`` the timer's length
    [s, 0 = no timer], ``RvrtRem`` the time left, ``RvrtCrv`` (711: ``RvrtCtl``) the curve adopted when it runs
    out, and the adopt request a write of which (re)starts the timer."""

    __slots__ = ("adopt", "curve", "model", "rem", "tms")

    def __init__(self, model: str, adopt: str, curve: str) -> None:
        self.model = model
        self.tms, self.rem = f"{model}.RvrtTms", f"{model}.RvrtRem"
        self.curve = f"{model}.{curve}"
        self.adopt = f"{model}.{adopt}"


CURVE_REVERSIONS = (
    CurveReversion("DERVoltVar", "AdptCrvReq", "RvrtCrv"),
    CurveReversion("DERVoltWatt", "AdptCrvReq", "RvrtCrv"),
    CurveReversion("DERFreqDroop", "AdptCtlReq", "RvrtCtl"),
)
CURVE_RVRT_POINTS = frozenset(p for r in CURVE_REVERSIONS for p in (r.tms, r.rem, r.curve))
RVRT_CURVE_DEFAULT = 3  # at power-up curve (control) 3 holds the Category B default and is what a timer adopts


class CurveTimers:
    """The running curve reversion timers of one inverter, on the simulated clock [s].

    A write of ``RvrtTms`` or of the adopt request (a curve adopted) while ``RvrtTms`` (as it is after the write)
    is not 0 starts the timer, or restarts it from the full length; a write of ``RvrtTms`` 0 stops it. When it runs
    out the model adopts curve ``RvrtCrv`` (docs/devices/sim-inverter.md, "Reversion timers").
    """

    def __init__(self) -> None:
        self.due: dict[str, float] = {}  # model -> when it reverts
        self.pending: set[str] = set()  # started before the inverter's first step: timed from that step

    def on_write(
        self, changes: Mapping[str, float | int], settings: Mapping[str, float | int], now: float | None
    ) -> None:
        for rv in CURVE_REVERSIONS:
            if rv.tms not in changes and rv.adopt not in changes:
                continue
            if not settings.get(rv.tms, 0):
                self.due.pop(rv.model, None)
                self.pending.discard(rv.model)
            elif now is None:
                self.pending.add(rv.model)
            else:
                self.due[rv.model] = now + float(settings[rv.tms])

    def expired(self, t: float, settings: Mapping[str, float | int]) -> list[CurveReversion]:
        """The models whose timer has run out at ``t`` (their timers stopped)."""
        for rv in CURVE_REVERSIONS:
            if rv.model in self.pending:
                self.due[rv.model] = t + float(settings[rv.tms])
        self.pending.clear()
        out = [rv for rv in CURVE_REVERSIONS if rv.model in self.due and t >= self.due[rv.model]]
        for rv in out:
            del self.due[rv.model]
        return out

    def remaining(self, t: float | None) -> dict[str, int]:
        """Every model's ``RvrtRem`` [s, rounded up]: 0 when its timer does not run."""
        return {rv.rem: _left(self.due.get(rv.model), t) for rv in CURVE_REVERSIONS}


def _left(due: float | None, t: float | None) -> int:
    left = 0.0 if due is None or t is None else max(0.0, due - t)
    return math.ceil(left - 1e-9) if left > 0 else 0
