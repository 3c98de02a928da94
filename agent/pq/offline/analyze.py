"""Power quality of a recorded waveform file: the engine of ``gridedge pq analyze``.

:func:`analyse_recording` runs the IEC 61000-4-30 Class A chain (:class:`~agent.pq.classa.ClassAMeter`:
10/12-cycle harmonics and RMS, Urms(1/2) events, 10-s frequency, flagging, 150/180-cycle and 10-min
aggregation) and the IEC 61000-4-15 flickermeter over a :class:`~agent.pq.offline.recording.Recording` in
blocks, and returns an :class:`Analysis` whose :attr:`Analysis.report` is the JSON document described in
docs/pq-report.md.

Choices made here (documented in docs/pq-report.md):

- whole-file values: ``rms_v`` and the harmonic subgroups are aggregated over every 10/12-cycle window of
  the file as IEC 61000-4-30 5.5 aggregates (root of the mean of the squares, flagged windows included,
  as 4.7 asks); ``harmonics_pct`` is the aggregated subgroup of order h over the aggregated fundamental
  subgroup, ``thd_pct`` the root-sum-square of ``harmonics_pct``;
- ``frequency_hz``: the mean of the 10-s values (5.1) whose clock interval lies wholly in the file, else
  (files too short for one) the integral cycles between the first and last zero crossing over their duration;
- ``pst``: one value per consecutive 600 s from the first sample; the first one is classified from the
  Pinst after the first 10 s (590 s: the filters' start transient reads Pst 0.11 on a steady sine), so a
  2-h file gives 12 values; a file shorter than 600 s gets one Pst of the Pinst after its first 10 s,
  marked ``pst_short``; ``plt`` from each 12 consecutive Pst (IEC 61000-4-15 Block 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.pq import flicker
from agent.pq.classa import Aggregate, ClassAMeter, FrequencyMeter, aggregate_rms, flag_windows
from agent.pq.events import Event, EventConfig
from agent.pq.harmonics import FundamentalZeroCrossings, HarmonicAnalyser, harmonics_pct, max_order_for
from agent.pq.offline.recording import Recording, RecordingError, estimate_nominal_hz, estimate_udin_v, load_recording

NOMINAL_ALLOWED = (50, 60)
LAMP_ALLOWED = (230, 120)
MIN_RATE_HZ = flicker.MIN_RATE_HZ  # the flickermeter's floor (800 Hz); harmonics then reach order 7 at 50 Hz
FLICKER_SETTLE_S = 10.0  # Pinst max and a short file's Pst leave out the first 10 s (0.05 Hz high-pass settling)
FREQUENCY_INTERVAL_S = 10.0
BLOCK_S = 1.0  # samples are fed in blocks of about this length
ENVELOPE_BINS = 4000  # time bins of the Urms(1/2) overview the plot draws (about 3 per pixel of its width)


@dataclass(slots=True)
class Analysis:
    """What :func:`analyse_recording` found: ``report`` (the JSON document) plus the series :mod:`plot` draws."""

    recording: Recording
    report: dict[str, Any]
    window_t_s: np.ndarray  # start of each 10/12-cycle window, from the file start [s]
    window_rms_v: np.ndarray  # [channels, windows]
    events: list[dict[str, Any]]
    event_config: EventConfig  # the thresholds the events were detected with (IEC 61000-4-30 5.4)
    urms: UrmsEnvelope  # Urms(1/2) of the whole file, per time bin


class UrmsEnvelope:
    """The lowest and highest Urms(1/2) (IEC 61000-4-30 5.4.1) of each channel in each time bin of a file.

    Bins are :data:`ENVELOPE_BINS` to a file (at least half a nominal cycle wide), so a dip of one cycle shows in
    the overview of a day-long file while memory stays fixed. ``min_v``/``max_v`` are ``[channels, bins]``,
    NaN in a bin without a value; ``t_s`` the bin starts from the file start [s].
    """

    def __init__(self, channels: int, duration_s: float, nominal_hz: float, origin_s: float) -> None:
        self.bin_s = max(0.5 / nominal_hz, duration_s / ENVELOPE_BINS)
        bins = math.ceil(duration_s / self.bin_s) + 1
        self.origin_s = origin_s
        self.t_s = np.arange(bins) * self.bin_s
        self.min_v = np.full((channels, bins), np.nan)
        self.max_v = np.full((channels, bins), np.nan)

    def add(self, times_s: np.ndarray, channels: np.ndarray, urms_v: np.ndarray) -> None:
        """Urms(1/2) values stamped at ``times_s`` (absolute, the end of each one-cycle window) [s]."""
        k = np.clip(((times_s - self.origin_s) / self.bin_s).astype(np.int64), 0, self.t_s.size - 1)
        np.fmin.at(self.min_v, (channels, k), urms_v)
        np.fmax.at(self.max_v, (channels, k), urms_v)


def _num(x: Any, digits: int | None = None) -> float | None:
    v = float(x)
    if not math.isfinite(v):
        return None
    return round(v, digits) if digits is not None else v


def _aggregate_json(agg: Aggregate, names: list[str], origin_s: float, duration_s: float, *, with_rms: bool,
                    digits: int | None) -> dict[str, Any]:  # fmt: skip
    pct = harmonics_pct(agg.values["harmonic_subgroup_v"])
    start, end = agg.start_s - origin_s, agg.end_s - origin_s
    out: dict[str, Any] = {"start_s": start, "end_s": end}
    if agg.kind == "10-min":
        out["complete"] = bool(start >= -1e-6 and end <= duration_s + 1e-6)
    out["flagged"] = agg.flagged
    out["count"] = agg.count
    if with_rms:
        out["rms_v"] = {n: _num(v) for n, v in zip(names, agg.values["rms_v"], strict=True)}
    out["thd_pct"] = {n: _num(math.sqrt(float(np.nansum(p * p))), digits) for n, p in zip(names, pct, strict=True)}
    out["harmonics_pct"] = {n: [_num(v, digits) for v in p] for n, p in zip(names, pct, strict=True)}
    if len(names) == 3:
        out["u2_pct"] = _num(agg.values["u2_pct"])
        out["u0_pct"] = _num(agg.values["u0_pct"])
    return out


def _boundaries(n: int, rate_hz: float) -> np.ndarray:
    """Block edges [samples]: every ``BLOCK_S``, every 600 s (Pst intervals) and at ``FLICKER_SETTLE_S``."""
    step = max(1, round(BLOCK_S * rate_hz))
    edges = set(range(0, n, step))
    interval = round(flicker.PST_INTERVAL_S * rate_hz)
    edges.update(range(interval, n, interval))
    edges.add(min(n, round(FLICKER_SETTLE_S * rate_hz)))
    edges.add(n)
    return np.array(sorted(edges))


def analyse_recording(rec: Recording, *, nominal_hz: float | None = None, udin_v: float | None = None,
                      lamp_v: int | None = None) -> Analysis:  # fmt: skip
    """Run the Class A chain and the flickermeter over ``rec``; options as ``gridedge pq analyze``'s."""
    names = list(rec.voltages)
    x = np.vstack([rec.voltages[n] for n in names])
    if not math.isfinite(rec.rate_hz) or rec.rate_hz < MIN_RATE_HZ:
        raise RecordingError(f"--rate {rec.rate_hz:g}: allowed >= {MIN_RATE_HZ:g} Hz (the flickermeter's minimum)")
    if nominal_hz is not None:
        if nominal_hz not in NOMINAL_ALLOWED:
            raise RecordingError(f"--nominal {nominal_hz:g}: allowed 50 or 60")
        nominal, nominal_source = float(nominal_hz), "option"
    elif rec.nominal_hz is not None and rec.nominal_hz in NOMINAL_ALLOWED:
        nominal, nominal_source = float(rec.nominal_hz), "comtrade"
    else:
        nominal, nominal_source = float(estimate_nominal_hz(x[0], rec.rate_hz)), "estimated"
    if lamp_v is None:
        lamp_v = 230 if nominal == 50 else 120
    if lamp_v not in LAMP_ALLOWED:
        raise RecordingError(f"--lamp {lamp_v}: allowed 230 or 120")
    median_rms = None
    if udin_v is None:
        udin, median_rms = estimate_udin_v(x, rec.rate_hz, nominal)
        udin_source = "estimated"
    else:
        if not (math.isfinite(udin_v) and udin_v > 0):
            raise RecordingError(f"--vnom {udin_v:g}: allowed a voltage > 0 (phase to neutral)")
        udin, udin_source = float(udin_v), "option"
    order = max_order_for(rec.rate_hz, nominal)
    rate, n, nv = rec.rate_hz, rec.n_samples, len(names)
    start = rec.start_utc_s
    try:
        config = EventConfig(udin_v=udin)
        meter = ClassAMeter(config, rate, nominal, nv, start_utc_s=start, max_order=order)
    except ValueError as err:
        raise RecordingError(str(err)) from err
    min_peak = 0.5 * config.interruption_threshold_pct / 100 * udin * math.sqrt(2.0)
    freq_meters = [FrequencyMeter(rate, nominal, start_utc_s=start, min_peak_v=min_peak) for _ in range(1, nv)]
    cur_names = list(rec.currents)
    cur = np.vstack([rec.currents[c] for c in cur_names]) if cur_names else None
    cur_analyser = (
        HarmonicAnalyser(rate, nominal, 1 + len(cur_names), max_order=order, start_utc_s=start, min_peak_v=min_peak)
        if cur_names
        else None
    )
    flickers = [flicker.Flickermeter(rate, int(nominal), lamp_v) for _ in names]
    short = n < round(flicker.PST_INTERVAL_S * rate)
    settle = round(FLICKER_SETTLE_S * rate)
    pinst_max = [-math.inf] * nv
    pinst_first: list[list[np.ndarray]] = [[] for _ in names]
    pinst_count = [0] * nv
    psts: list[list[float]] = [[] for _ in names]
    interval = round(flicker.PST_INTERVAL_S * rate)

    windows = []
    aggregates: list[Aggregate] = []
    events: list[Event] = []
    freqs: list[list[tuple[float, float]]] = [[] for _ in names]
    cur_windows = []
    envelope = UrmsEnvelope(nv, n / rate, nominal, start)
    edges = _boundaries(n, rate)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        block = x[:, lo:hi]
        out = meter.push(block)
        envelope.add(*meter.events.last_urms)
        windows.extend(out.windows)
        aggregates.extend(out.aggregates)
        events.extend(out.events)
        freqs[0].extend((f.start_s, f.freq_hz) for f in out.frequencies)
        for k, fm in enumerate(freq_meters, start=1):
            freqs[k].extend((f.start_s, f.freq_hz) for f in fm.push(block[k]))
        if cur_analyser is not None and cur is not None:
            cur_windows.extend(cur_analyser.push(np.vstack([block[:1], cur[:, lo:hi]])))
        for k, fl in enumerate(flickers):
            pinst = fl.process(block[k])
            first = pinst_count[k]
            pinst_count[k] += pinst.size
            keep = pinst[max(0, round(settle / fl.decimation) - first) :]
            if keep.size:
                pinst_max[k] = max(pinst_max[k], float(keep.max()))
                if short or hi <= interval:
                    pinst_first[k].append(keep)
            if not short and hi % interval == 0:
                if hi == interval:  # the first interval: the Pinst after the settling time only
                    psts[k].append(flicker.pst(np.maximum(np.concatenate(pinst_first[k]), 0.0)))
                    fl.reset_interval()
                    pinst_first[k] = []
                else:
                    psts[k].append(fl.pst_10min())
    origin, duration = start, n / rate
    end_abs = start + duration
    # IEC 61000-4-30 4.7: the events (and one still open at the end) flag the values whose interval they overlap
    open_since = meter.events.open_since_s
    covering = [*events, *([Event("open", "", "", open_since, math.inf)] if open_since is not None else [])]

    def flags(starts_s: np.ndarray, ends_s: np.ndarray) -> list[bool]:
        return flag_windows(starts_s, ends_s, covering, lead_s=1.0 / nominal).tolist()

    channels: dict[str, Any] = {}
    rms = np.array([w.rms_v for w in windows]).T if windows else np.zeros((nv, 0))
    sub = np.array([w.harmonics.harmonic_subgroup_v for w in windows]) if windows else None
    for k, name in enumerate(names):
        ch: dict[str, Any] = {}
        if sub is not None:
            agg_sub = aggregate_rms(sub[:, k, :], axis=0)[None, :]
            pct = harmonics_pct(agg_sub)[0]
            ch["rms_v"] = _num(aggregate_rms(rms[k]))
            ch["rms_min_v"] = _num(rms[k].min())
            ch["rms_max_v"] = _num(rms[k].max())
            ch["thd_pct"] = _num(math.sqrt(float(np.nansum(pct * pct))))
            ch["harmonics_pct"] = {str(h): _num(v) for h, v in enumerate(pct, start=2)}
        else:
            ch.update(rms_v=None, rms_min_v=None, rms_max_v=None, thd_pct=None, harmonics_pct={})
        complete = [f for s, f in freqs[k] if s >= origin - 1e-6 and s + FREQUENCY_INTERVAL_S <= end_abs + 1e-6]
        if complete:
            ch["frequency_hz"] = _num(np.mean(complete))
            ch["frequency_source"] = "10s"
        else:
            ch["frequency_hz"] = _num(_whole_file_frequency(x[k], rate, nominal, min_peak))
            ch["frequency_source"] = "whole_file"
        ch["pinst_max"] = _num(pinst_max[k]) if pinst_max[k] > -math.inf else None
        ch["pinst_max_flagged"] = flags(np.array([origin]), np.array([end_abs]))[0]
        if short:
            tail = np.concatenate(pinst_first[k]) if pinst_first[k] else np.zeros(0)
            ch["pst"] = [flicker.pst(np.maximum(tail, 0.0))] if tail.size else []
            ch["pst_short"] = True
            ch["pst_interval_s"] = tail.size / flickers[k].output_rate_hz
        else:
            ch["pst"] = psts[k]
            ch["pst_short"] = False
            ch["pst_interval_s"] = flicker.PST_INTERVAL_S
        if short:
            ch["pst_flagged"] = flags(np.array([origin]), np.array([end_abs]))[: len(ch["pst"])]
        else:
            pst_start = origin + flicker.PST_INTERVAL_S * np.arange(len(psts[k]))
            ch["pst_flagged"] = flags(pst_start, pst_start + flicker.PST_INTERVAL_S)
        per = flicker.PLT_PST_COUNT  # a Plt of each 12 consecutive Pst (IEC 61000-4-15 Block 5)
        plt_starts = range(0, len(psts[k]) - per + 1, per)
        ch["plt"] = [flicker.plt(psts[k][i : i + per]) for i in plt_starts] if len(psts[k]) >= per else None
        ch["plt_flagged"] = [any(ch["pst_flagged"][i : i + per]) for i in plt_starts] if ch["plt"] is not None else None
        channels[name] = ch

    currents: dict[str, Any] = {}
    if cur_windows:
        crms = np.array([w.rms_v[1:] for w in cur_windows])
        csub = np.array([w.harmonic_subgroup_v[1:] for w in cur_windows])
        for k, name in enumerate(cur_names):
            pct = harmonics_pct(aggregate_rms(csub[:, k, :], axis=0)[None, :])[0]
            currents[name] = {
                "rms_a": _num(aggregate_rms(crms[:, k])),
                "thd_pct": _num(math.sqrt(float(np.nansum(pct * pct)))),
                "harmonics_pct": {str(h): _num(v) for h, v in enumerate(pct, start=2)},
            }

    if nv == 3 and windows:
        u2 = _num(aggregate_rms(np.array([w.u2_pct for w in windows])))
        u0 = _num(aggregate_rms(np.array([w.u0_pct for w in windows])))
    else:
        u2 = u0 = None
    letter = {"abc"[i]: name for i, name in enumerate(names)} if nv <= 3 else {}
    event_rows = [
        {
            "type": e.kind,
            "phase": letter.get(e.phase, e.phase),
            "phases": ",".join(letter.get(c, c) for c in e.phases),
            "start_s": e.start_s - origin,
            "duration_s": e.duration_s,
            **({"residual_pct": e.residual_pct} if e.residual_pct is not None else {"max_pct": e.max_pct}),
        }
        for e in events
    ]
    report: dict[str, Any] = {
        "file": {
            "path": str(rec.path),
            **rec.info,
            "rate_hz": rate,
            "samples": n,
            "duration_s": duration,
            "start_utc_s": start,
        },
        "nominal_hz": nominal,
        "nominal_hz_source": nominal_source,
        "udin_v": udin,
        "udin_source": udin_source,
        "median_rms_v": median_rms,
        "lamp_v": lamp_v,
        "max_order": order,
        "channels": channels,
        "currents": currents,
        "unbalance_u2_pct": u2,
        "unbalance_u0_pct": u0,
        "events": event_rows,
        "event_open_at_end_s": None if open_since is None else open_since - origin,
        "windows": {"count": len(windows), "flagged": sum(w.flagged for w in windows)},
        "frequency_10s": [
            {
                "start_s": s - origin,
                "freq_hz": _num(f),
                "complete": bool(s >= origin - 1e-6 and s + 10 <= end_abs + 1e-6),
            }
            for s, f in freqs[0]
        ],
        "aggregates_10min": [
            _aggregate_json(a, names, origin, duration, with_rms=True, digits=None)
            for a in aggregates
            if a.kind == "10-min"
        ],
        "aggregates_3s": [
            _aggregate_json(a, names, origin, duration, with_rms=False, digits=4)
            for a in aggregates
            if a.kind == "150/180-cycle"
        ],
    }
    t = np.array([w.harmonics.start_s for w in windows]) - origin if windows else np.zeros(0)
    return Analysis(rec, report, t, rms, event_rows, config, envelope)


def _whole_file_frequency(samples_v: np.ndarray, rate_hz: float, nominal_hz: float, min_peak_v: float) -> float:
    """Integral cycles between measured positive zero crossings over their summed duration [Hz]; NaN if none."""
    where, real = FundamentalZeroCrossings(rate_hz, nominal_hz, min_peak_v=min_peak_v).push(samples_v)
    if where.size < 2:
        return math.nan
    pair = real[:-1] & real[1:]
    cycles = int(np.count_nonzero(pair))
    return cycles / float(np.sum(np.diff(where)[pair]) / rate_hz) if cycles else math.nan


def analyse_file(path: str | Path, *, rate_hz: float | None = None, nominal_hz: float | None = None,
                 udin_v: float | None = None, lamp_v: int | None = None) -> Analysis:  # fmt: skip
    """:func:`load_recording` then :func:`analyse_recording`."""
    return analyse_recording(load_recording(path, rate_hz), nominal_hz=nominal_hz, udin_v=udin_v, lamp_v=lamp_v)
