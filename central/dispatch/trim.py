"""The trim: part-way through an interval, what the head has metered so far against its schedule moves the limits
of the inverters that hold a reserve, for the rest of the interval (docs/dispatch.md, "Trim").

A round plans an interval from forecasts; the loads and the sun then do what they do. An inverter with
``reserve_pct`` runs below what the sun gives, so its limit can move the head both ways. At ``trim_at_s`` into
the interval the head's mean power so far (central's readings, the nowcast's ``point``) gives the energy metered
so far; what the rest of the interval must average to land on the scheduled energy follows, and the difference
from the mean so far (the loads and the sun assumed to stay where they are) is moved onto the reserved inverters:
more output where the head imported more than scheduled, less where it imported less. The move

- starts ``p_response_s`` after the trim (the command's path and the inverter's response), so the time left is
  shorter by that;
- is shared among the inverters by rating, each kept within [its lowest limit, the forecast's available power]
  (above the sun a limit changes nothing);
- is scaled down so that no monitored node leaves [v_min + margin, v_max - margin] by the schedule's voltage
  prediction and the round's dV/dP (the same linear model the schedule was solved with), and the head stays
  within ``reverse_power_kw``;
- is not made when the projected miss is under ``TRIM_MIN_SHARE`` of the schedule (and ``TRIM_MIN_KWH``): no
  command for a change the loads' own noise outweighs.

Nothing is trimmed, and the round says why (``dispatch_trim``), when the head's readings cover under half of the
time since the interval began, or no inverter holds a reserve in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from central.dispatch.config import DispatchConfig
from central.dispatch.nowcast import mean_kw
from central.dispatch.plan import Step, limit_pct
from central.dispatch.send import Outputs, ramp_kw, scheduled_head_kw

TRIM_MIN_SHARE = 0.01  # a projected miss under 1 % of |scheduled| is left alone
TRIM_MIN_KWH = 1.0  # and under this [kWh]


@dataclass(frozen=True, slots=True)
class Trim:
    """One interval's trim: what was measured and what moves."""

    start: int
    at: float
    scheduled_kwh: float  # the head's scheduled net energy (import positive) over the interval
    so_far_kwh: float  # metered from the interval's start to ``at``
    elapsed_kw: float  # the head's mean power so far
    required_kw: float  # the head's mean power the rest of the interval needs
    delta_kw: dict[str, float]  # inverter -> its output's move (+ more)
    scale: float  # the share of the wanted move the voltage limits leave
    step: Step  # the interval's step with the trimmed limits and outputs


def trim(cfg: DispatchConfig, step: Step, scheduled_kwh: float, head_rows: Sequence[tuple[float, Any, str]],
         now: float, avail_kw: Mapping[str, float], dv_dp: np.ndarray, v_pred: np.ndarray,
         devices: Sequence[str]) -> Trim:  # fmt: skip
    """The trim of ``step`` at ``now`` (module docstring). ``avail_kw``: each inverter's forecast available power in
    the interval; ``dv_dp`` [pu/kW] (nodes x ``devices``) and ``v_pred`` [pu] (nodes): the round's linear model.
    ValueError (why) when there is none to make."""
    if not step.start < now < step.end:
        raise ValueError(f"{now:.0f} is not inside the interval [{step.start}, {step.end})")
    elapsed_kw, _ = mean_kw(head_rows, float(step.start), now, "the head")
    so_far = elapsed_kw * (now - step.start) / 3600.0
    left_h = (step.end - now - cfg.p_response_s) / 3600.0
    if left_h <= 0:
        raise ValueError("no time left in the interval after the inverters' response")
    rated = {i.device: i for s in cfg.sites if s.site == step.site for i in s.inverters}
    movable = [d for d, i in rated.items() if i.reserve_pct > 0 and step.p_limit_pct.get(d, 100.0) < 100.0]
    if not movable:
        raise ValueError("no inverter holds a reserve in this interval")
    # the head's mean over the rest: what lands on the schedule, given the response's stretch at the mean so far
    required = (scheduled_kwh - so_far - elapsed_kw * cfg.p_response_s / 3600.0) / left_h
    if cfg.reverse_power_kw is not None:
        required = max(required, -cfg.reverse_power_kw)
    miss_kwh = (elapsed_kw - required) * left_h
    if abs(miss_kwh) < max(TRIM_MIN_SHARE * abs(scheduled_kwh), TRIM_MIN_KWH):
        raise ValueError(f"projected miss {miss_kwh:+.1f} kWh: under the trim's threshold")
    want = elapsed_kw - required  # more output lowers the head's import
    total = sum(rated[d].kw for d in movable)
    delta = {}
    for d in movable:
        inv = rated[d]
        out = step.p_out_kw[d]
        lo, hi = inv.kw * inv.p_limit_min_pct / 100.0, max(avail_kw.get(d, out), out)
        delta[d] = min(max(out + want * inv.kw / total, lo), hi) - out
    scale = _voltage_scale(np.array([delta.get(d, 0.0) for d in devices]), dv_dp, v_pred,
                           cfg.v_min_pu + cfg.margin_pu, cfg.v_max_pu - cfg.margin_pu)  # fmt: skip
    limits, outs = dict(step.p_limit_pct), dict(step.p_out_kw)
    moved = {}
    for d, x in delta.items():
        out = round(step.p_out_kw[d] + x * scale, 3)
        limit = limit_pct(rated[d], out)
        if limit != step.p_limit_pct[d]:  # a limit that does not change is not sent again
            outs[d], limits[d], moved[d] = out, limit, x * scale
    if not moved:
        raise ValueError(f"projected miss {miss_kwh:+.1f} kWh: the reserved inverters are at their bounds")
    delta = moved
    return Trim(step.start, now, scheduled_kwh, so_far, elapsed_kw, required, delta, scale,
                replace(step, p_limit_pct=limits, p_out_kw=outs))  # fmt: skip


def head_scheduled_kwh(cfg: DispatchConfig, step: Step, before: Outputs) -> float:
    """The head's scheduled net energy over ``step`` [kWh, import positive]: what settlement's schedules hold for
    a head meter (central/dispatch/send.py scheduled_energy, the inverters' ramp into a changed limit included)."""
    return scheduled_head_kw(step, ramp_kw(cfg, step, before)) * (step.end - step.start) / 3600.0


def _voltage_scale(delta: np.ndarray, dv_dp: np.ndarray, v_pred: np.ndarray, v_lo: float, v_hi: float) -> float:
    """The largest share in [0, 1] of ``delta`` [kW] that keeps ``v_pred + dv_dp @ (share x delta)`` within
    [v_lo, v_hi] on every node (0 where a node is outside already and the move would push it further)."""
    dv = dv_dp @ delta
    scale = 1.0
    for v, d in zip(v_pred, dv, strict=True):
        if d > 1e-12:
            scale = min(scale, max((v_hi - v) / d, 0.0))
        elif d < -1e-12:
            scale = min(scale, max((v_lo - v) / d, 0.0))
    return scale


__all__ = ["TRIM_MIN_KWH", "TRIM_MIN_SHARE", "Trim", "head_scheduled_kwh", "trim"]
