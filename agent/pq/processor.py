"""One waveform stream's measurement, pure of I/O: :class:`PqProcessor` and the stream's :class:`ComplianceTracker`.

:class:`PqProcessor` takes the samples of a stream's voltage channels, in order, from one start time on (a new
processor after every gap or reconnection), and runs the IEC 61000-4-30 Class A chain
(:class:`~agent.pq.classa.ClassAMeter`) and one IEC 61000-4-15 flickermeter per channel. What comes out, in a
:class:`PqOutput` (docs/pq-service.md):

- readings: per channel the 150/180-cycle (3 s) ``rms`` and ``thd``, the 3-s ``u2`` unbalance and the 10-s
  ``frequency``; at each 10-min tick of the UTC clock ``rms_10min``, ``thd_10min``, ``u2_10min`` and
  ``pst``; at each 2-h tick ``plt``. A value the standard flags (a dip, swell or interruption overlapped it,
  IEC 61000-4-30 4.7) keeps its number and gets quality ``flagged``;
- events (:class:`Event`): ``pq_dip``, ``pq_swell``, ``pq_interruption`` when one ends, and ``pq_flicker``
  when an unflagged Pst is above 1.0;
- compliance (:class:`ComplianceTracker`): at each 10-min tick, for each standard of the stream's
  ``compliance`` list, ``<stream>.compliance.<standard>`` (1 pass, 0 fail) over the rolling week, and a
  ``pq_compliance`` event when the verdict changes.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.points import Event, Quality, Reading
from agent.pq.classa import TEN_MIN_S, TWO_HOUR_S, Aggregate, ClassAMeter, FrequencyValue
from agent.pq.compliance import (
    WEEK_S,
    ComplianceError,
    ComplianceReport,
    CriterionResult,
    RollingStatistics,
    evaluate_series,
)
from agent.pq.config import WaveformStreamConfig
from agent.pq.events import Event as PqEventValue
from agent.pq.events import default_channel_names
from agent.pq.flicker import PLT_PST_COUNT, FlickerError, FlickermeterBank, plt
from agent.pq.harmonics import PqInputError, harmonics_pct, max_order_for
from protocols.eventlog import EventLog

log = EventLog("pq")

SHORT_S = 3.0  # a 150/180-cycle value spans 3 s at nominal frequency (IEC 61000-4-30 5.5.2)
MIN_RATE_HZ = 800.0  # the flickermeter's minimum rate (agent/pq/flicker.py, docs/pq-flicker.md)
#: Blocks 1-3 of the flickermeter settle before a Pst interval may start: the first second is held back for
#: the Block 1 reference and the 0.05 Hz high-pass has a 3.2 s time constant (docs/pq-flicker.md uses 20 s).
FLICKER_SETTLE_S = 20.0
#: Flicker event limit. IEC 61000-2-2:2002 4.2 (compatibility level for LV networks): Pst = 1.0, Plt = 0.8.
#: EN 50160:2010 4.2.3 (LV) and 5.2.3 (MV) ask Plt <= 1 for 95 % of each week: a weekly statistic for the
#: compliance report, not a per-interval event. A Pst above 1.0 is the per-interval sign of it.
PST_EVENT_LIMIT = 1.0
PST_EVENT_CLAUSE = "IEC 61000-2-2:2002 4.2 (Pst compatibility level 1.0); EN 50160:2010 4.2.3 asks Plt <= 1"

EVENT_KINDS = {"dip": "pq_dip", "swell": "pq_swell", "interruption": "pq_interruption"}
EVENT_SEVERITY = {"dip": "warning", "swell": "warning", "interruption": "error"}
EVENT_CLAUSE = {
    "dip": "IEC 61000-4-30:2015 5.4.2",
    "swell": "IEC 61000-4-30:2015 5.4.3",
    "interruption": "IEC 61000-4-30:2015 5.4.4",
}
FLICKER_KIND = "pq_flicker"
COMPLIANCE_KIND = "pq_compliance"
COMPLIANCE_TEXT_FAILED = 5  # failed criteria named in an event's text (all of them, up to the next, in data)
COMPLIANCE_DATA_FAILED = 60  # failed criteria listed in an event's data (the store takes 64 kB of JSON)


class PqStreamError(Exception):
    """The stream cannot be measured as configured (a channel missing, a rate too low): names what and why."""


@dataclass(slots=True)
class PqOutput:
    readings: list[Reading] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def _q(flagged: bool) -> Quality:
    return Quality.FLAGGED if flagged else Quality.GOOD


def _failed_line(c: CriterionResult) -> str:
    where = f" {c.channel}" if c.channel else ""
    unit = f" {c.unit}" if c.unit else ""
    return f"{c.criterion}{where} {c.measured:.3f}{unit} (limit {c.limit:g}{unit}; {c.statistic})"


class ComplianceTracker:
    """One stream's compliance with its configured standards, assessed at every 10-min tick.

    Owned by the :class:`PqStream`, so a gap or a reconnection (a new :class:`PqProcessor`) keeps the week of
    statistics (:class:`~agent.pq.compliance.RollingStatistics`); they are rebuilt only if the stream's
    highest harmonic order changes (a different rate). :meth:`evaluate` gives one reading per standard,
    ``<stream>.compliance.<standard>`` = 1 (no criterion failed) or 0, quality ``good`` once the kept history
    spans the week (EN 50160's and IEEE 519's assessment period), ``estimated`` while it fills; and a
    ``pq_compliance`` event when a standard's verdict changes (a first verdict is a change only if it fails).
    """

    def __init__(self, cfg: WaveformStreamConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.standards = tuple(cfg.compliance)
        self.statistics: RollingStatistics | None = None
        self.verdicts: dict[str, str] = {}
        self.last: dict[str, dict[str, Any]] = {}  # per standard, for status()
        self.rebuilt = 0
        self.errors = 0

    def statistics_for(self, max_order: int) -> RollingStatistics | None:
        if not self.standards:
            return None
        if self.statistics is None or self.statistics.max_order != max_order:
            if self.statistics is not None:
                self.rebuilt += 1
                log.warning("pq_compliance_restarted", stream=self.name, reason="max_order",
                            old=self.statistics.max_order, new=max_order)  # fmt: skip
            self.statistics = RollingStatistics(
                self.cfg.channels, self.cfg.udin_v, self.cfg.nominal_hz, max_order,
                short="ieee519" in self.standards, frequency=any(s.startswith("en50160") for s in self.standards),
            )  # fmt: skip
        return self.statistics

    def evaluate(self, tick: float, out: PqOutput) -> None:
        """Assess each standard over the week ending at ``tick``; readings and events go to ``out``."""
        if self.statistics is None:
            return
        series = self.statistics.series(tick)
        complete = series.duration_s >= WEEK_S
        for std in self.standards:
            try:
                report = evaluate_series(series, std, self.cfg.bus_kv if std == "ieee519" else None)
            except ComplianceError as err:  # never expected (the statistics are bounded to what the criteria need)
                self.errors += 1
                log.error("pq_compliance_failed", stream=self.name, standard=std, error=err)
                continue
            assessed = [c for c in report.criteria if c.passed is not None]
            if not assessed:
                continue  # nothing measured yet that this standard assesses: no verdict to report
            failed = [c for c in report.criteria if c.passed is False]
            verdict = "fail" if failed else "pass"
            q = Quality.GOOD if complete else Quality.ESTIMATED
            out.readings.append(Reading(f"{self.name}.compliance.{std}", tick, 0 if failed else 1, "", q))
            previous = self.verdicts.get(std)
            self.verdicts[std] = verdict
            # a new dict, swapped in whole: status() reads it from the event loop while this runs in the worker thread
            self.last = {**self.last, std: {"ts": tick, "verdict": verdict, "complete": complete,
                                            "assessed": len(assessed),
                                            "failed": [f"{c.criterion}{' ' + c.channel if c.channel else ''}"
                                                       for c in failed]}}  # fmt: skip
            if verdict != previous and not (previous is None and verdict == "pass"):
                out.events.append(self._event(tick, std, verdict, previous, failed, series.duration_s, report))

    def _event(self, tick: float, std: str, verdict: str, previous: str | None, failed: list[CriterionResult],
               history_s: float, report: ComplianceReport) -> Event:  # fmt: skip
        period = "week complete" if history_s >= WEEK_S else f"{history_s / 86400:.2f} of 7 days kept"
        if failed:
            named = "; ".join(_failed_line(c) for c in failed[:COMPLIANCE_TEXT_FAILED])
            more = f"; and {len(failed) - COMPLIANCE_TEXT_FAILED} more" if len(failed) > COMPLIANCE_TEXT_FAILED else ""
            text = f"{self.name}: {std} FAIL ({period}): {named}{more}"
        else:
            text = f"{self.name}: {std} pass again ({period}): no criterion fails (was {previous})"
        data: dict[str, Any] = {
            "stream": self.name, "standard": std, "verdict": verdict, "previous": previous,
            "period_complete": history_s >= WEEK_S, "history_s": round(history_s, 1),
            "period_start_ts": tick - WEEK_S, "period_end_ts": tick, "failed_count": len(failed),
            "failed": [{"criterion": c.criterion, "clause": c.clause, "channel": c.channel, "order": c.order,
                        "measured": round(float(c.measured), 6), "limit": c.limit, "unit": c.unit,
                        "statistic": c.statistic, "values": c.values}
                       for c in failed[:COMPLIANCE_DATA_FAILED] if c.measured is not None],
        }  # fmt: skip
        if report.bus_kv is not None:
            data.update(bus_kv=round(report.bus_kv, 4), ieee519_row=report.ieee519_row)
        return Event(tick, COMPLIANCE_KIND, "warning" if failed else "info", self.name, text, data)

    def status(self) -> dict[str, Any]:
        st = self.statistics
        return {"standards": list(self.standards), "bytes": st.nbytes if st is not None else 0,
                "since_ts": st.since_s if st is not None else None, "rebuilt": self.rebuilt, "errors": self.errors,
                **self.last}  # fmt: skip


class PqProcessor:
    """One stream's measurement from ``start_utc_s`` on (a new one after every gap or reconnection). Pure of I/O.

    ``push(samples_v)`` takes the next samples ``[channels, n]`` (the configured channels, in order) and
    returns the readings and events they completed.
    """

    def __init__(self, cfg: WaveformStreamConfig, rate_hz: float, start_utc_s: float,
                 compliance: ComplianceTracker | None = None) -> None:  # fmt: skip
        if not (math.isfinite(rate_hz) and rate_hz >= MIN_RATE_HZ):
            raise PqStreamError(f"rate_hz = {rate_hz!r}: at least {MIN_RATE_HZ:g} Hz (the flickermeter's minimum)")
        self.cfg = cfg
        self.name = cfg.name
        self.rate_hz = float(rate_hz)
        self.start_s = float(start_utc_s)
        self.channels = cfg.channels
        n = len(cfg.channels)
        self.max_order = max_order_for(rate_hz, cfg.nominal_hz)
        try:
            self.meter = ClassAMeter(cfg.events, rate_hz, cfg.nominal_hz, n, start_utc_s=start_utc_s,
                                     max_order=self.max_order)  # fmt: skip
            self.flicker_bank = FlickermeterBank(rate_hz, cfg.nominal_hz, cfg.lamp_v, n)
            self.flicker = [self.flicker_bank.channel(k) for k in range(n)]  # each channel's Pst interval
        except (PqInputError, FlickerError) as err:
            raise PqStreamError(str(err)) from err
        self._letters = default_channel_names(n)  # what ClassAMeter's events call the channels
        self._samples = 0  # consumed so far
        self._tick = (math.floor(self.start_s / TEN_MIN_S) + 1) * TEN_MIN_S  # the next 10-min tick
        self._spans: deque[tuple[float, float]] = deque()  # (start, end) of dips/swells/interruptions seen
        self._pst: list[dict[float, tuple[float, bool]]] = [{} for _ in range(n)]  # end tick -> (Pst, flagged)
        self._buckets: dict[str, int] = {}
        self.compliance = compliance
        self.rolling = compliance.statistics_for(self.max_order) if compliance is not None else None

    # ---- helpers ---------------------------------------------------------------------------------------
    def _flagged(self, start_s: float, end_s: float) -> bool:
        """IEC 61000-4-30 4.7: an event (or one still open) overlapped ``[start_s, end_s]``."""
        open_since = self.meter.events.open_since_s
        if open_since is not None and open_since <= end_s:
            return True
        return any(s <= end_s and e >= start_s for s, e in self._spans)

    def _due(self, key: str, end_s: float) -> bool:
        """Short values: every one at the default interval (3 s), else the first to end in each clock interval."""
        interval = self.cfg.report_interval_s
        if interval <= SHORT_S:
            return True
        bucket = math.floor(end_s / interval)
        if self._buckets.get(key) == bucket:
            return False
        self._buckets[key] = bucket
        return True

    def _channel(self, letter: str) -> str:
        return self.channels[self._letters.index(letter)]

    # ---- the stream --------------------------------------------------------------------------------------
    def push(self, samples_v: np.ndarray) -> PqOutput:
        x = np.asarray(samples_v, dtype=np.float64)
        out = PqOutput()
        pos, total = 0, x.shape[1]
        while pos < total:
            # The flickermeters' input is cut at the 10-min tick: the samples stamped before it are the interval's.
            before_tick = math.ceil((self._tick - self.start_s) * self.rate_hz - 1e-6)
            take = min(total - pos, before_tick - self._samples)
            if take > 0:
                self._run(x[:, pos : pos + take], out)
                self._samples += take
                pos += take
            if self._samples >= before_tick:
                self._pst_tick(self._tick, out)
                self._tick += TEN_MIN_S
        return out

    def _run(self, x: np.ndarray, out: PqOutput) -> None:
        self.flicker_bank.process(x)
        res = self.meter.push(x)
        for ev in res.events:
            self._spans.append((ev.start_s - 1.0 / self.cfg.nominal_hz, ev.end_s))
            out.events.append(self._event(ev))
        horizon = self.meter.events.processed_s - TWO_HOUR_S - TEN_MIN_S
        while self._spans and self._spans[0][1] < horizon:
            self._spans.popleft()
        for f in res.frequencies:
            self._frequency(f, out)
        for agg in res.aggregates:
            self._aggregate(agg, out)

    def _frequency(self, f: FrequencyValue, out: PqOutput) -> None:
        end = f.start_s + 10.0
        if self.rolling is not None and math.isfinite(f.freq_hz):
            self.rolling.add_frequency(f.start_s, f.freq_hz, self._flagged(f.start_s, end))
        if math.isfinite(f.freq_hz) and self._due("frequency", end):
            flagged = self._flagged(f.start_s, end)
            out.readings.append(Reading(f"{self.name}.frequency", end, round(f.freq_hz, 4), "Hz", _q(flagged)))

    def _aggregate(self, agg: Aggregate, out: PqOutput) -> None:
        if agg.kind == "150/180-cycle":
            if self.rolling is not None:
                self.rolling.add_short(agg.start_s, harmonics_pct(agg.values["harmonic_subgroup_v"]), agg.flagged)
            if not self._due("short", agg.end_s):
                return
            suffix = ""
        elif agg.kind == "10-min":
            if self.start_s > agg.start_s + 1e-6:  # the measurement began inside the interval: not a 10-min value
                if self.compliance is not None:
                    self.compliance.evaluate(agg.end_s, out)  # on the history kept before the restart
                return
            if self.rolling is not None:
                self.rolling.add_ten_min(agg.start_s, agg.values["rms_v"],
                                         harmonics_pct(agg.values["harmonic_subgroup_v"]),
                                         float(agg.values["u2_pct"]), agg.flagged)  # fmt: skip
            suffix = "_10min"
        else:  # 2-h values of RMS/THD/unbalance are not reported (docs/pq-service.md)
            return
        q = _q(agg.flagged)
        ts = agg.end_s
        rms, thd = agg.values["rms_v"], agg.values["thds_pct"]
        for ch, r, t in zip(self.channels, rms.tolist(), thd.tolist(), strict=True):
            out.readings.append(Reading(f"{self.name}.{ch}.rms{suffix}", ts, round(r, 3), "V", q))
            if math.isfinite(t):
                out.readings.append(Reading(f"{self.name}.{ch}.thd{suffix}", ts, round(t, 3), "%", q))
        u2 = float(agg.values["u2_pct"])
        if len(self.channels) == 3 and math.isfinite(u2):
            out.readings.append(Reading(f"{self.name}.u2{suffix}", ts, round(u2, 3), "%", q))
        if agg.kind == "10-min" and self.compliance is not None:
            self.compliance.evaluate(agg.end_s, out)  # after the interval's aggregates, its Pst and Plt

    def _pst_tick(self, tick: float, out: PqOutput) -> None:
        """The 10-min interval ``[tick - 600, tick)`` is complete: Pst per channel, Plt at 2-h ticks."""
        start = tick - TEN_MIN_S
        settled = self.start_s + FLICKER_SETTLE_S <= start
        flagged = self._flagged(start, tick)
        above: dict[str, float] = {}
        plts = np.full(len(self.channels), np.nan)
        plt_flagged = False
        for i, (ch, fm) in enumerate(zip(self.channels, self.flicker, strict=True)):
            if not settled:
                fm.reset_interval()  # an interval the meter did not see whole, or saw while settling
                continue
            try:
                value = fm.pst_10min()
            except FlickerError as err:  # cannot happen with the cut above; never take the stream down for it
                log.error("pq_pst_failed", stream=self.name, channel=ch, error=err)
                fm.reset_interval()
                continue
            out.readings.append(Reading(f"{self.name}.{ch}.pst", tick, round(value, 4), "", _q(flagged)))
            history = self._pst[i]
            history[tick] = (value, flagged)
            for old in [t for t in history if t <= tick - TWO_HOUR_S]:
                del history[old]
            if not flagged and value > PST_EVENT_LIMIT:
                above[ch] = value
            if tick % TWO_HOUR_S == 0:
                ticks = [tick - k * TEN_MIN_S for k in range(PLT_PST_COUNT - 1, -1, -1)]
                if all(t in history for t in ticks):  # Plt needs the 12 Pst of the 2-h interval
                    values = [history[t][0] for t in ticks]
                    any_flag = any(history[t][1] for t in ticks)
                    plts[i] = plt(values)
                    plt_flagged |= any_flag
                    out.readings.append(Reading(f"{self.name}.{ch}.plt", tick, round(plts[i], 4), "",
                                                _q(any_flag)))  # fmt: skip
        if self.rolling is not None and not np.isnan(plts).all():
            self.rolling.add_plt(tick - TWO_HOUR_S, plts, plt_flagged)
        if above:
            out.events.append(self._flicker_event(start, tick, above))

    # ---- events --------------------------------------------------------------------------------------------
    def _event(self, ev: PqEventValue) -> Event:
        udin = self.cfg.udin_v
        ecfg = self.cfg.events
        phase = self._channel(ev.phase)
        phases = [self._channel(p) for p in ev.phases]
        cycles = ev.duration_s * self.cfg.nominal_hz
        data: dict[str, Any] = {"stream": self.name, "type": ev.kind, "phase": phase, "phases": phases,
                                "start_ts": ev.start_s, "duration_s": round(ev.duration_s, 5),
                                "duration_cycles": round(cycles, 2), "udin_v": udin,
                                "clause": EVENT_CLAUSE[ev.kind]}  # fmt: skip
        if ev.kind == "swell":
            pct = float(ev.max_pct)  # type: ignore[arg-type]
            data.update(max_pct=round(pct, 3), max_v=round(pct / 100 * udin, 3),
                        threshold_pct=ecfg.swell_threshold_pct, hysteresis_pct=ecfg.hysteresis_pct)  # fmt: skip
            what = f"max {pct:.1f} %"
        else:
            pct = float(ev.residual_pct)  # type: ignore[arg-type]
            threshold = ecfg.dip_threshold_pct if ev.kind == "dip" else ecfg.interruption_threshold_pct
            data.update(residual_pct=round(pct, 3), residual_v=round(pct / 100 * udin, 3),
                        threshold_pct=threshold, hysteresis_pct=ecfg.hysteresis_pct)  # fmt: skip
            what = f"residual {pct:.1f} %"
        text = (f"{self.name}: {ev.kind} on {phase} (phases {','.join(phases)}), {what} of {udin:g} V, "
                f"{ev.duration_s:.3f} s ({cycles:.1f} cycles) ({EVENT_CLAUSE[ev.kind]})")  # fmt: skip
        return Event(ev.start_s, EVENT_KINDS[ev.kind], EVENT_SEVERITY[ev.kind], self.name, text, data)

    def _flicker_event(self, start: float, tick: float, above: dict[str, float]) -> Event:
        worst = max(above, key=above.__getitem__)
        text = (f"{self.name}: Pst {above[worst]:.2f} on {worst} above {PST_EVENT_LIMIT:g} "
                f"({', '.join(f'{c} {v:.2f}' for c, v in above.items())}; {self.cfg.lamp_v} V lamp) "
                f"({PST_EVENT_CLAUSE})")  # fmt: skip
        data = {"stream": self.name, "type": "flicker", "phase": worst, "pst": {c: round(v, 4) for c, v in above.items()},
                "limit_pst": PST_EVENT_LIMIT, "interval_start_ts": start, "interval_end_ts": tick,
                "lamp_v": self.cfg.lamp_v, "clause": PST_EVENT_CLAUSE}  # fmt: skip
        return Event(start, FLICKER_KIND, "warning", self.name, text, data)
