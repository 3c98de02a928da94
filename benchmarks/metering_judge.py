"""The metering proof's judge (benchmarks/metering_day.py, docs/metering.md "The day on the bench"): interval
energy from central (or the agent's store) against the bench's own truth log (docs/truth-log.md). Pure: records
and interval items in, figures out; no processes, no files.

The truth: each ``step`` record's ``meters`` gives every feeder meter's true energy so far ``[delivered_wh,
received_wh]`` at the record's ``ts`` (unwrapped, not reset by a swap). The true energy of an interval [start, end)
is the true cumulative at ``end`` minus at ``start``, each linearly interpolated between the step records around
it (the steps are one simulated second apart; a boundary on a step is that step's value).

The error of an interval is ``|value - truth| / max(|truth|, min_kwh)``: ``min_kwh`` (2 kWh) keeps an interval that
carried almost nothing (a PV meter's delivered register at night) from being judged on a ratio of two roundings:
the registers count whole Wh and each boundary may be 1 Wh low (the meter truncates), so 2 Wh is the resolution of
an interval, and 0.1 % of 2 kWh. An interval flagged ``meter_swap`` books nothing between the old meter's last
read and the new meter's first (docs/metering.md, rule 5): up to one poll's energy short; it is judged apart.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CHANNEL_INDEX = {"kwh_delivered": 0, "kwh_received": 1}  # the index in a step record's meters[name]
ENERGY_MODULUS_WH = 1 << 32  # the bench meters' uint32 Wh registers (sim_hw/devices/feeder_meter.py)
MIN_KWH = 2.0  # the denominator's floor (module docstring)
SUBSTITUTED_METHOD = 17  # NEM12 linear interpolation (protocols/telemetry/intervals.py METHODS)


class JudgeError(ValueError):
    """The truth log or the intervals cannot be judged (no step records with meters, an interval outside the log)."""


# ---- the truth --------------------------------------------------------------------------------------------------


@dataclass
class Truth:
    """What the judge needs of a truth log: the meters' cumulative energies, the feeder's powers per step and the
    scenario's events."""

    ts: list[float] = field(default_factory=list)
    meters: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # name -> per step [Wh]
    step_s: float = 1.0
    head_kw: list[float] = field(default_factory=list)
    load_kw: list[float] = field(default_factory=list)
    loss_kw: list[float] = field(default_factory=list)
    pv_kw: list[float] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # scenario_step records

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> Truth:
        t = cls()
        for rec in records:
            kind = rec.get("record")
            if kind == "bench_up":
                step = rec.get("step_s")
                if isinstance(step, int | float) and step > 0:
                    t.step_s = float(step)
            elif kind == "scenario_step":
                t.events.append(dict(rec))
            elif kind == "step" and isinstance(rec.get("meters"), Mapping):
                n = len(t.ts)
                t.ts.append(float(rec["ts"]))
                for name, (d, r) in rec["meters"].items():
                    col = t.meters.setdefault(name, [])
                    if len(col) != n:  # a meter that appears late: no truth before it
                        raise JudgeError(f"meter {name!r} is missing from step records before ts {rec['ts']}")
                    col.append((float(d), float(r)))
                t.head_kw.append(float(rec.get("head_kw", 0.0)))
                t.load_kw.append(float(rec.get("load_kw", 0.0)))
                t.loss_kw.append(float(rec.get("loss_kw", 0.0)))
                t.pv_kw.append(sum(float(pq[0]) for pq in (rec.get("pv") or {}).values()))
        if len(t.ts) < 2:
            raise JudgeError("the truth log has fewer than two step records with meters")
        return t

    def cumulative_wh(self, meter: str, index: int, ts: float) -> float:
        """The meter's true energy so far at ``ts`` (0 delivered, 1 received), interpolated between the steps."""
        col = self.meters.get(meter)
        if col is None:
            raise JudgeError(f"meter {meter!r} is not in the truth log (it has {', '.join(sorted(self.meters))})")
        if not self.ts[0] <= ts <= self.ts[-1]:
            raise JudgeError(f"ts {ts} is outside the truth log ({self.ts[0]} .. {self.ts[-1]})")
        k = bisect.bisect_left(self.ts, ts)
        if self.ts[k] == ts:
            return col[k][index]
        t0, t1 = self.ts[k - 1], self.ts[k]
        v0, v1 = col[k - 1][index], col[k][index]
        return v0 + (v1 - v0) * (ts - t0) / (t1 - t0)

    def energy_kwh(self, meter: str, index: int, start: float, end: float) -> float:
        return (self.cumulative_wh(meter, index, end) - self.cumulative_wh(meter, index, start)) / 1000.0

    def covers(self, start: float, end: float) -> bool:
        return self.ts[0] <= start and end <= self.ts[-1]

    def power_kwh(self, series: str, start: float, end: float) -> float:
        """A per-step power series (``head_kw``, ``load_kw``, ``loss_kw``, ``pv_kw``) integrated over [start, end):
        each step's power held for ``step_s`` (as the bench's meters integrate it)."""
        values = getattr(self, series)
        lo = bisect.bisect_left(self.ts, start)
        hi = bisect.bisect_left(self.ts, end)
        return sum(values[lo:hi]) * self.step_s / 3600.0

    def windows(self, action: str) -> dict[str, list[tuple[float, float]]]:
        """The scenario's windows of ``action`` by device: [start ts, end ts) (end inf when it never ended)."""
        out: dict[str, list[tuple[float, float]]] = {}
        for ev in self.events:
            if ev.get("action") != action or ev.get("error"):
                continue
            where = str(ev.get("where"))
            spans = out.setdefault(where, [])
            if ev.get("end"):
                if spans and math.isinf(spans[-1][1]):
                    spans[-1] = (spans[-1][0], float(ev["ts"]))
            else:
                spans.append((float(ev["ts"]), math.inf))
        return out

    def instants(self, action: str) -> dict[str, list[float]]:
        """The scenario's one-off events of ``action`` (``meter_swap``) by device: their ts."""
        out: dict[str, list[float]] = {}
        for ev in self.events:
            if ev.get("action") == action and not ev.get("error") and not ev.get("end"):
                out.setdefault(str(ev.get("where")), []).append(float(ev["ts"]))
        return out


# ---- the intervals ------------------------------------------------------------------------------------------------


def latest(intervals: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The latest version of each (meter, register or channel, start), sorted by meter, channel, start."""
    best: dict[tuple[str, str, float], dict[str, Any]] = {}
    for item in intervals:
        key = (str(item["meter"]), str(item["channel"]), float(item["start"]))
        if key not in best or int(item.get("version", 1)) > int(best[key].get("version", 1)):
            best[key] = dict(item)
    return [best[k] for k in sorted(best)]


def p99(values: Sequence[float]) -> float | None:
    """The 99th percentile, nearest rank (the value below which 99 % of them lie, one of the values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def rel_error_pct(value: float, truth: float, min_kwh: float = MIN_KWH) -> float:
    return abs(value - truth) / max(abs(truth), min_kwh) * 100.0


@dataclass
class RegisterVerdict:
    """One register (channel) of one meter judged against the truth."""

    meter: str
    channel: str
    by_quality: Counter[str] = field(default_factory=Counter)
    flags: Counter[str] = field(default_factory=Counter)
    a_errors_pct: list[float] = field(default_factory=list)  # A intervals without meter_swap
    # the same errors against the energy through the meter in the interval (delivered + received, truth)
    a_through_errors_pct: list[float] = field(default_factory=list)
    a_worst: tuple[float, float, float, float] | None = None  # (error %, start, value, truth)
    a_on_floor: int = 0  # A intervals whose truth was below min_kwh (judged against min_kwh)
    swaps: list[tuple[float, str, float | None, float]] = field(default_factory=list)  # start, quality, value, truth
    total_kwh: float = 0.0  # every valued interval
    total_truth_kwh: float = 0.0  # the truth over the same intervals
    null_truth_kwh: float = 0.0  # the truth in the N intervals (central estimates them)
    holes: int = 0  # missing intervals between the first and the last
    wraps: int = 0  # the register's wraps at 2**32 within the valued intervals (given its initial reading)
    first_start: float | None = None
    last_end: float | None = None

    @property
    def a_max_pct(self) -> float | None:
        return max(self.a_errors_pct) if self.a_errors_pct else None

    @property
    def a_p99_pct(self) -> float | None:
        return p99(self.a_errors_pct)

    @property
    def a_through_max_pct(self) -> float | None:
        return max(self.a_through_errors_pct) if self.a_through_errors_pct else None

    @property
    def total_error_pct(self) -> float | None:
        if not self.by_quality or self.total_kwh == 0 and self.total_truth_kwh == 0:
            return None
        return rel_error_pct(self.total_kwh, self.total_truth_kwh)


@dataclass
class Check:
    """One of the proof's claims, judged."""

    text: str
    met: bool | None  # None: could not be judged (no intervals where it applies)
    detail: str


@dataclass
class Verdict:
    registers: dict[tuple[str, str], RegisterVerdict]
    checks: list[Check]
    tolerance_pct: float

    def met(self) -> bool:
        return all(c.met is not False for c in self.checks)


def judge_intervals(truth_records: Iterable[Mapping[str, Any]] | Truth, intervals: Iterable[Mapping[str, Any]], *,
                    tolerance_pct: float = 0.1, min_kwh: float = MIN_KWH,
                    initial_wh: Mapping[str, tuple[float, float]] | None = None) -> Verdict:  # fmt: skip
    """Interval items (the wire's, from central's table or the agent's store; every version: the latest counts)
    against the truth log's records.

    Per meter and kWh register: counts by quality and flag; the error of every actual (``A``) interval, those
    flagged ``meter_swap`` apart; the total of every valued interval against the truth over the same intervals,
    and the truth of the null ones. The checks: every A interval within ``tolerance_pct``; each meter's total
    within it; each scenario ``meter_swap`` in an interval flagged ``meter_swap``; each ``silence`` window's
    intervals (those with a boundary inside it) ``S`` with method 17 or ``N``, and all ``N`` when the silence
    outlasts the run; and, given ``initial_wh`` (each meter's initial register readings), as many ``rollover``
    flags as the truth wrapped the registers within the valued intervals (a wrap while the meter was silent, in
    an N interval, was seen by no read). Each A error is also taken against the energy through the meter in the
    interval (delivered + received): a register that carried little while the flow turned round is judged on a
    small denominator by the first measure.
    """
    truth = truth_records if isinstance(truth_records, Truth) else Truth.from_records(truth_records)
    items = [i for i in latest(intervals) if i["channel"] in CHANNEL_INDEX]
    swaps = truth.instants("meter_swap")
    regs: dict[tuple[str, str], RegisterVerdict] = {}
    for item in items:
        meter, channel = str(item["meter"]), str(item["channel"])
        start, end = float(item["start"]), float(item["end"])
        rv = regs.setdefault((meter, channel), RegisterVerdict(meter, channel))
        if rv.last_end is not None and start > rv.last_end:
            rv.holes += round((start - rv.last_end) / (end - start))
        rv.first_start = start if rv.first_start is None else min(rv.first_start, start)
        rv.last_end = end if rv.last_end is None else max(rv.last_end, end)
        quality = str(item["quality"])
        rv.by_quality[quality] += 1
        flags = set(item.get("flags") or ())
        for f in flags:
            rv.flags[f] += 1
        if not truth.covers(start, end):
            raise JudgeError(f"{meter} {channel} [{start}, {end}): outside the truth log")
        true = truth.energy_kwh(meter, CHANNEL_INDEX[channel], start, end)
        value = item.get("value")
        if value is None:
            rv.null_truth_kwh += true
            continue
        rv.total_kwh += float(value)
        if initial_wh and meter in initial_wh:
            rv.wraps += expected_wraps(truth, meter, CHANNEL_INDEX[channel], initial_wh[meter][CHANNEL_INDEX[channel]],
                                       swaps.get(meter, []), start, end)  # fmt: skip
        rv.total_truth_kwh += true
        if "meter_swap" in flags:
            rv.swaps.append((start, quality, float(value), true))
            continue
        if quality == "A":
            err = rel_error_pct(float(value), true, min_kwh)
            rv.a_errors_pct.append(err)
            through = true + truth.energy_kwh(meter, 1 - CHANNEL_INDEX[channel], start, end)
            rv.a_through_errors_pct.append(rel_error_pct(float(value), true, max(min_kwh, through)))
            if abs(true) < min_kwh:
                rv.a_on_floor += 1
            if rv.a_worst is None or err > rv.a_worst[0]:
                rv.a_worst = (err, start, float(value), true)
    checks = _checks(truth, items, regs, tolerance_pct, initial_wh)
    return Verdict(regs, checks, tolerance_pct)


def _checks(truth: Truth, items: list[dict[str, Any]], regs: Mapping[tuple[str, str], RegisterVerdict],
            tol: float, initial_wh: Mapping[str, tuple[float, float]] | None) -> list[Check]:  # fmt: skip
    out: list[Check] = []
    a_all = [e for rv in regs.values() for e in rv.a_errors_pct]
    over = [
        (rv.meter, rv.channel, rv.a_worst) for rv in regs.values() if rv.a_max_pct is not None and rv.a_max_pct > tol
    ]
    out.append(Check(f"every actual interval within {tol:g} % of the truth (meter_swap intervals apart)",
                     None if not a_all else not over,
                     f"{len(a_all)} A intervals, worst {max(a_all, default=0):.4f} %" + "".join(
                         f"; {m} {c} {w[0]:.3f} % at {w[1]:.0f} ({w[2]:.3f} vs {w[3]:.3f} kWh)"
                         for m, c, w in over if w)))  # fmt: skip
    through = [e for rv in regs.values() for e in rv.a_through_errors_pct]
    over_t = [(rv.meter, rv.channel, rv.a_through_max_pct) for rv in regs.values()
              if rv.a_through_max_pct is not None and rv.a_through_max_pct > tol]  # fmt: skip
    out.append(Check(f"every actual interval within {tol:g} % of the energy through its meter (delivered + received)",
                     None if not through else not over_t,
                     f"worst {max(through, default=0):.4f} %" + "".join(f"; {m} {c} {e:.3f} %" for m, c, e in over_t)))  # fmt: skip
    totals = [(rv, rv.total_error_pct) for rv in regs.values() if rv.total_error_pct is not None]
    bad = [(rv, e) for rv, e in totals if e is not None and e > tol]
    out.append(Check(f"each register's total of valued intervals within {tol:g} % of the truth",
                     None if not totals else not bad,
                     f"{len(totals)} registers, worst {max((e for _, e in totals), default=0):.4f} %" + "".join(
                         f"; {rv.meter} {rv.channel} {e:.3f} %" for rv, e in bad)))  # fmt: skip
    by_meter: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_meter.setdefault(str(item["meter"]), []).append(item)
    for meter, instants in sorted(truth.instants("meter_swap").items()):
        mine = by_meter.get(meter, [])
        for ts in instants:
            holding = [i for i in mine if float(i["start"]) <= ts < float(i["end"])]
            flagged = [i for i in holding if "meter_swap" in (i.get("flags") or ())]
            out.append(Check(f"{meter}'s swap at {ts:.0f} flagged meter_swap", None if not holding else
                             len(flagged) == len(holding),
                             f"{len(flagged)} of {len(holding)} registers' intervals holding it flagged"))  # fmt: skip
    end_of_log = truth.ts[-1]
    for meter, spans in sorted(truth.windows("silence").items()):
        mine = by_meter.get(meter, [])
        for s0, s1 in spans:
            whole = s1 >= end_of_log
            inside = [i for i in mine if s0 < float(i["start"]) < s1 or s0 < float(i["end"]) < s1]
            q = Counter(str(i["quality"]) for i in inside)
            if whole:
                ok = all(i["quality"] == "N" for i in inside)
                text = f"{meter} silent from {s0:.0f} to the end: its intervals N"
            else:
                ok = all(i["quality"] == "N" or (i["quality"] == "S" and i.get("method") == SUBSTITUTED_METHOD)
                         for i in inside)  # fmt: skip
                text = f"{meter} silent {s0:.0f}..{s1:.0f} ({(s1 - s0) / 3600:g} h): its intervals S (method 17) or N"
            detail = (", ".join(f"{k} {v}" for k, v in sorted(q.items())) or "no intervals") + \
                f" among {len(inside)} with a boundary in the silence"  # fmt: skip
            out.append(Check(text, None if not inside else ok, detail))
    if initial_wh:
        for (meter, channel), rv in sorted(regs.items()):
            if meter not in initial_wh or rv.wraps == 0 and rv.flags["rollover"] == 0:
                continue
            out.append(Check(f"{meter} {channel}: every rollover flagged", rv.flags["rollover"] == rv.wraps,
                             f"{rv.flags['rollover']} intervals flagged rollover, {rv.wraps} wraps in the truth "
                             "within the valued intervals"))  # fmt: skip
    return out


def expected_wraps(truth: Truth, meter: str, index: int, initial: float, swaps: Sequence[float], start: float,
                   end: float) -> int:  # fmt: skip
    """How often the register wrapped at 2**32 Wh within [start, end): it starts at ``initial`` + the truth and
    restarts at 0 at each swap."""

    def register(ts: float, base: float, since: float) -> float:  # the unwrapped register at ts
        return base + truth.cumulative_wh(meter, index, ts) - truth.cumulative_wh(meter, index, since)

    total = 0
    base, since = initial, truth.ts[0]
    cuts = [start, *[s for s in swaps if start < s < end], end]
    for s in swaps:  # a swap before the window: the register counts from it
        if s <= start:
            base, since = 0.0, s
    for k, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        if k > 0:  # a swap at a: the new register restarts at 0
            base, since = 0.0, a
        total += int(register(b, base, since) // ENERGY_MODULUS_WH) - int(register(a, base, since) // ENERGY_MODULUS_WH)
    return total


# ---- reconciliation ---------------------------------------------------------------------------------------------


@dataclass
class Reconciled:
    start: float
    head_kwh: float  # the head meter's net energy (delivered - received) from its intervals
    downstream_kwh: float  # the metered downstream flows out of the feeder's middle, from their intervals
    truth_rest_kwh: float  # the truth log's losses and the unmetered net load (load - PV - metered flows)
    error_pct: float
    metered: tuple[str, ...]  # the downstream meters whose intervals entered (the rest came from the truth)


def reconcile(truth_records: Iterable[Mapping[str, Any]] | Truth, intervals: Iterable[Mapping[str, Any]], *,
              head: str, downstream: Mapping[str, float], floor_share: float = 0.1) -> list[Reconciled]:  # fmt: skip
    """The head meter's net energy per interval against the downstream meters' plus the rest from the truth log.

    ``downstream``: meter -> sign, +1 when the meter's delivered energy flows out of the part of the feeder
    between the head and the meters (a meter at the sending end of a lateral), -1 when its delivered energy flows
    into it (a meter at the far end of a line, whose terminal faces the line: delivered is what the bus sends
    back). Per interval where the head has both registers valued::

        reconciled = sum(sign x (delivered - received) of each downstream meter with both registers valued)
                     + truth(load - PV + losses) - sum(sign x truth net of those same meters)

    Only actual (``A``) intervals count: a downstream meter's interval of another quality (a substitute spreads
    a gap's energy linearly over it), or flagged ``meter_swap`` (short by the energy across the swap), leaves that
    meter to the truth for that interval; a head interval not actual is not reconciled. The truth's losses are the whole circuit's (OpenDSS ``Circuit.Losses``), the substation transformer and the
    regulators upstream of the head included: those show as the reconciliation's bias. The error is
    ``|head - reconciled| / max(|head|, floor_share x truth load)``: the head's net crosses zero when the PV
    back-feeds the substation.
    """
    truth = truth_records if isinstance(truth_records, Truth) else Truth.from_records(truth_records)
    net: dict[tuple[str, float], dict[int, float | None]] = {}
    for item in latest(intervals):
        idx = CHANNEL_INDEX.get(str(item["channel"]))
        if idx is None:
            continue
        key = (str(item["meter"]), float(item["start"]))
        v = item.get("value")
        if item.get("quality") != "A" or "meter_swap" in (item.get("flags") or ()):
            # a substitute spreads a gap's energy by interpolation, a swap interval is short by the energy across
            # the swap (rule 5): for one interval the meter counts as unmetered there
            v = None
        net.setdefault(key, {})[idx] = None if v is None else float(v)
        net[key][2] = float(item["end"])  # type: ignore[assignment]

    def both(meter: str, start: float) -> float | None:
        regs = net.get((meter, start))
        if not regs or regs.get(0) is None or regs.get(1) is None:
            return None
        return float(regs[0]) - float(regs[1])  # type: ignore[arg-type]

    out: list[Reconciled] = []
    for (meter, start), regs in sorted(net.items(), key=lambda kv: kv[0][1]):
        if meter != head:
            continue
        h = both(head, start)
        end = regs.get(2)
        if h is None or end is None or not truth.covers(start, end):
            continue
        rest = (truth.power_kwh("load_kw", start, end) - truth.power_kwh("pv_kw", start, end)
                + truth.power_kwh("loss_kw", start, end))  # fmt: skip
        down = 0.0
        metered = []
        for m, sign in downstream.items():
            d = both(m, start)
            true_net = truth.energy_kwh(m, 0, start, end) - truth.energy_kwh(m, 1, start, end)
            if d is None:
                continue
            metered.append(m)
            down += sign * d
            rest -= sign * true_net
        rec = down + rest
        scale = max(abs(h), floor_share * abs(truth.power_kwh("load_kw", start, end)), 1e-9)
        out.append(Reconciled(start, h, down, rest, abs(h - rec) / scale * 100.0, tuple(metered)))
    return out


__all__ = ["Check", "JudgeError", "Reconciled", "RegisterVerdict", "Truth", "Verdict", "expected_wraps",
           "judge_intervals", "latest", "p99", "reconcile", "rel_error_pct"]  # fmt: skip
