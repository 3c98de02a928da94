"""A schedule's interval as signed commands, and the scheduled energy for settlement (docs/dispatch.md, "Commands
sent").

Each interval of a site's schedule goes out when the interval begins, as commands of existing kinds (docs/commands.md),
signed with central's dispatch key through central's command issuer (recorded in the ``commands`` table, results
verified with the site's agent key):

- ``der.setpoint`` per inverter: ``p_limit_pct``, and ``var_pct`` when the schedule's vars are at least
  ``var_min_pct`` of its kVA (below, none: the inverter keeps its own reactive mode, volt-var; IEEE 1547-2018 5.3);
- ``capbank.close`` / ``capbank.open`` for a bank the schedule switches in that interval (the site refuses to move a
  bank to where it already is);
- ``regulator.band_center`` with the lowered band centre, in the intervals CVR is on (none otherwise: the regulator
  stays with its own control).

Each holds ``until`` the interval's end plus ``expiry_margin_s``: when the next interval's commands do not come (the
link or central is gone), the hold ends and the site's agent hands the device back to its own fallback (a DER to its
group's settings, a bank or regulator to its automatic control). One command per interval and device, never a day
of set points at once, so a lost site falls back within one interval and a margin.

The whole horizon's energy per site meter goes into settlement's ``schedules`` table (source ``dispatch``, a new
version at every solve), so settlement's imbalance shows how well each site followed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from central.commands import CommandIssuer, Outcome
from central.dispatch.config import DispatchConfig, DispatchSendError, dispatch_key
from central.dispatch.plan import Step
from central.settlement.db import SettlementDb
from central.settlement.schedules import ScheduledInterval, store_schedule
from protocols.eventlog import EventLog

log = EventLog("central.dispatch")
SOURCE = "dispatch"


@dataclass(frozen=True, slots=True)
class PlannedCommand:
    site: str
    kind: str
    target: str
    body: dict[str, Any]


def commands_for(step: Step, margin_s: float) -> list[PlannedCommand]:
    """The commands that carry out one interval of one site's schedule."""
    until = float(step.end + margin_s)
    out = [PlannedCommand(step.site, "der.setpoint", dev,
                          {"p_limit_pct": step.p_limit_pct[dev], "until": until}
                          | ({"var_pct": step.var_pct[dev]} if dev in step.var_pct else {}))
           for dev in step.p_limit_pct]  # fmt: skip
    for dev, closed in step.cap_closed.items():  # only a switch: the site refuses to move a bank where it is
        if closed != step.cap_before.get(dev):
            out.append(PlannedCommand(step.site, "capbank.close" if closed else "capbank.open", dev, {"until": until}))
    if step.cvr_on and step.band_center_v is not None:
        reg = step.regulator_device
        out.append(PlannedCommand(step.site, "regulator.band_center", reg, {"volts": step.band_center_v,
                                                                            "until": until}))  # fmt: skip
    return out


async def send_step(issuer: CommandIssuer, steps: Sequence[Step], margin_s: float, key_id: str,
                    timeout_s: float, keep: Callable[[PlannedCommand], bool] | None = None) -> list[Outcome]:  # fmt: skip
    """Sign, record and send every command of ``steps`` (those ``keep`` keeps), one after the other; their results
    are awaited together."""
    planned = [c for s in steps for c in commands_for(s, margin_s) if keep is None or keep(c)]
    for c in planned:  # all checked before the first is numbered or sent
        issuer.check(c.site, c.kind, c.target, c.body, key_id)
    # numbered and published in order (a site refuses a sequence number below one it took), awaited together
    outs = await issuer.send_many([(c.site, c.kind, c.target, c.body) for c in planned], key_id, timeout_s=timeout_s)
    for o in outs:
        if o.status != "applied":
            log.warning("dispatch_command_not_applied", site=o.command.audience, kind=o.command.kind,
                        target=o.command.target, status=o.status, reason=o.reason)  # fmt: skip
    return list(outs)


Outputs = dict[str, tuple[float, bool]]  # inverter -> (scheduled output [kW], limited below 100 %)


def outputs(steps: Sequence[Step]) -> Outputs:
    """Each inverter's scheduled output in ``steps`` (one interval's), and whether its limit binds."""
    return {d: (kw, s.p_limit_pct[d] < 100.0) for s in steps for d, kw in s.p_out_kw.items()}


def ramp_kw(cfg: DispatchConfig, step: Step, before: Outputs) -> dict[str, float]:
    """Per inverter, its output's mean shift over ``step``'s interval [kW] while it ramps from where it was
    (``before``: the interval before) to the new limit: linear over ``p_response_s`` from the interval's start,
    so the interval misses (new - old) x p_response_s / 2 of it. Only where a limit binds on either side (an
    unlimited inverter follows the sun through the boundary, no step)."""
    span = cfg.interval_s
    out = {}
    for dev, kw in step.p_out_kw.items():
        prev = before.get(dev)
        limited = step.p_limit_pct.get(dev, 100.0) < 100.0
        if prev is None or cfg.p_response_s <= 0 or not (limited or prev[1]):
            continue
        out[dev] = -(kw - prev[0]) * min(cfg.p_response_s, span) / (2.0 * span)
    return out


def scheduled_head_kw(step: Step, ramp: dict[str, float]) -> float:
    """The head's scheduled mean import over ``step`` [kW] with the inverters' ramp (:func:`ramp_kw`): less output,
    more import."""
    return step.head_kw - sum(ramp.values())


def scheduled_energy(cfg: DispatchConfig, steps: Sequence[Step], before: Outputs | None = None
                     ) -> list[ScheduledInterval]:  # fmt: skip
    """Each configured meter's energy per interval [kWh]: the head's import (delivered) or export (received), or an
    inverter's output, each with the inverters' ramp into a changed limit (:func:`ramp_kw`). ``before``: the
    outputs of the interval before the first step (the round before's), else none is ramped in the first."""
    out: list[ScheduledInterval] = []
    by_site = {s.site: s for s in cfg.sites}
    prev: Outputs = dict(before or {})
    for start in sorted({s.start for s in steps}):
        now = [s for s in steps if s.start == start]
        for step in now:
            dt_h = (step.end - step.start) / 3600.0
            ramp = ramp_kw(cfg, step, prev)
            head = scheduled_head_kw(step, ramp)
            for m in by_site[step.site].meters:
                if m.measures == "head":
                    kw = max(head, 0.0) if m.channel == "kwh_delivered" else max(-head, 0.0)
                else:
                    kw = step.p_out_kw[m.measures] + ramp.get(m.measures, 0.0)
                out.append(ScheduledInterval(step.site, m.meter, m.channel, step.start, step.end, round(kw * dt_h, 6)))
        prev.update(outputs(now))
    return out


def write_schedules(db: SettlementDb, cfg: DispatchConfig, steps: Sequence[Step], now: float,
                    before: Outputs | None = None) -> int:  # fmt: skip
    rows = scheduled_energy(cfg, steps, before)
    return store_schedule(db, rows, SOURCE, now) if rows else 0


__all__ = ["DispatchSendError", "Outputs", "PlannedCommand", "SOURCE", "commands_for", "dispatch_key", "outputs",
           "ramp_kw", "scheduled_energy", "scheduled_head_kw", "send_step", "write_schedules"]  # fmt: skip
