"""Power quality of a recorded waveform file (COMTRADE or CSV): the engine of ``gridedge pq analyze``.

:func:`load_recording` reads the file into a :class:`Recording` (phase voltages ``va``/``vb``/``vc`` and
optional currents ``ia``/``ib``/``ic``, in volts and amperes); :func:`analyse_recording` runs the
IEC 61000-4-30 Class A chain (:class:`~agent.pq.classa.ClassAMeter`: 10/12-cycle harmonics and RMS,
Urms(1/2) events, 10-s frequency, flagging, 150/180-cycle and 10-min aggregation) and the IEC 61000-4-15
flickermeter over it in blocks, and returns an :class:`Analysis` whose :attr:`Analysis.report` is the JSON
document described in docs/pq-report.md.

Choices made here (documented in docs/pq-report.md):

- whole-file values: ``rms_v`` and the harmonic subgroups are aggregated over every 10/12-cycle window of
  the file as IEC 61000-4-30 5.5 aggregates (root of the mean of the squares, flagged windows included,
  as 4.7 asks); ``harmonics_pct`` is the aggregated subgroup of order h over the aggregated fundamental
  subgroup, ``thd_pct`` the root-sum-square of ``harmonics_pct``;
- ``frequency_hz``: the mean of the 10-s values (5.1) whose clock interval lies wholly in the file, else
  (files too short for one) the integral cycles between the first and last zero crossing over their duration;
- ``pst``: one value per consecutive 600 s from the first sample; the first one is classified from the
  Pinst after the first 10 s (590 s: the filters' start transient read Pst 0.11 on a steady sine), so a
  2-h file gives 12 values; a file shorter than 600 s gets one Pst of the Pinst after its first 10 s,
  marked ``pst_short``; ``plt`` from each 12 consecutive Pst (IEC 61000-4-15 Block 5).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.pq import flicker
from agent.pq.classa import Aggregate, ClassAMeter, FrequencyMeter, aggregate_rms
from agent.pq.events import Event, EventConfig
from agent.pq.harmonics import FundamentalZeroCrossings, HarmonicAnalyser, harmonics_pct, max_order_for
from protocols import comtrade

VOLTAGE_NAMES = ("va", "vb", "vc")
CURRENT_NAMES = ("ia", "ib", "ic")
NOMINAL_ALLOWED = (50, 60)
LAMP_ALLOWED = (230, 120)
MIN_RATE_HZ = flicker.MIN_RATE_HZ  # the flickermeter's floor (800 Hz); harmonics then reach order 7 at 50 Hz
FLICKER_SETTLE_S = 10.0  # Pinst max and a short file's Pst leave out the first 10 s (0.05 Hz high-pass settling)
FREQUENCY_INTERVAL_S = 10.0
BLOCK_S = 1.0  # samples are fed in blocks of about this length
# CSV time column: a step may differ from 1/rate by this fraction (printed timestamps are rounded).
TIME_STEP_TOLERANCE = 0.05
# Standard nominal phase-to-neutral voltages [V] the declared input voltage is estimated from (rounded
# to the nearest): LV systems of IEC 60038:2009 Table 1 (230/400, 240/415, 220/380, 120/208, 120/240,
# 277/480, 347/600), secondary VT voltages (100 and 110 V line-to-line / sqrt 3, 120 V), and the phase
# voltages of common MV systems (IEC 60038 Table 3: 6.6, 10, 11, 20, 22, 33 kV; ANSI C84.1 Table 1:
# 4.16, 12.47, 13.2, 13.8, 24.94, 34.5 kV) as line-to-line / sqrt 3.
STANDARD_UDIN_V = tuple(
    sorted(
        {57.7, 63.5, 69.3, 100.0, 110.0, 115.0, 120.0, 127.0, 220.0, 230.0, 240.0, 277.0, 347.0}
        | {round(kv * 1000 / math.sqrt(3)) for kv in (4.16, 6.6, 10, 11, 12.47, 13.2, 13.8, 20, 22, 24.94, 33, 34.5)}
    )
)
UDIN_MATCH_PCT = 10.0  # the median RMS must lie within 10 % of a standard value, else --vnom is needed
_ALIASES = {
    **{n: n for n in VOLTAGE_NAMES + CURRENT_NAMES},
    **{f"u{p}": f"v{p}" for p in "abc"},
    **{f"v{p}n": f"v{p}" for p in "abc"},
    **{f"u{p}n": f"v{p}" for p in "abc"},
}


class RecordingError(ValueError):
    """A recording or an option that cannot be used; the message names the file, row, column or option."""


@dataclass(slots=True)
class Recording:
    """Samples of one file: ``voltages[name]`` [V] and ``currents[name]`` [A], 1-D, all the same length."""

    path: Path
    fmt: str  # "comtrade" | "csv"
    rate_hz: float
    voltages: dict[str, np.ndarray]
    currents: dict[str, np.ndarray] = field(default_factory=dict)
    start_utc_s: float = 0.0  # UTC time of the first sample (COMTRADE start stamp; CSV first t, else 0)
    nominal_hz: float | None = None  # COMTRADE line frequency
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return next(iter(self.voltages.values())).size

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.rate_hz


# ---------------------------------------------------------------------------------------------------- reading


def load_recording(path: str | Path, rate_hz: float | None = None) -> Recording:
    """Read a COMTRADE .cfg (+ .dat), a .cff, or a CSV file; ``rate_hz`` is the ``--rate`` option (CSV)."""
    p = Path(path)
    if not p.is_file():
        raise RecordingError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix in (".cfg", ".cff", ".dat"):
        return _load_comtrade(p.with_suffix(".cfg") if suffix == ".dat" else p, rate_hz)
    if suffix in (".csv", ".txt"):
        return _load_csv(p, rate_hz)
    raise RecordingError(f"{p}: unknown file type {p.suffix!r}: allowed .cfg (COMTRADE, with its .dat), .cff, .csv")


def _canonical(ch: comtrade.AnalogChannel) -> tuple[str | None, float]:
    """(canonical name, unit factor to V or A) of a COMTRADE channel, by its name, else by unit and phase."""
    key = re.sub(r"[^a-z0-9]", "", ch.name.lower())
    unit = ch.unit.strip().lower()
    factor = 1000.0 if unit in ("kv", "ka") else 1e-3 if unit in ("mv", "ma") else 1.0
    if key in _ALIASES:
        return _ALIASES[key], factor
    phase = ch.phase.strip().lower().rstrip("n")
    if phase in ("a", "b", "c") and unit in ("v", "kv", "mv"):
        return f"v{phase}", factor
    if phase in ("a", "b", "c") and unit in ("a", "ka", "ma"):
        return f"i{phase}", factor
    return None, factor


def _load_comtrade(cfg: Path, rate_hz: float | None) -> Recording:
    if cfg.suffix.lower() == ".cfg":
        dat = cfg.with_suffix(".DAT" if cfg.suffix == ".CFG" else ".dat")
        if not dat.is_file():
            raise RecordingError(f"{cfg}: its data file {dat.name} is missing (COMTRADE needs the .cfg and the .dat)")
    try:
        record = comtrade.read(cfg)
    except comtrade.ComtradeError as err:
        raise RecordingError(f"{cfg}: {err}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise RecordingError(f"{cfg}: cannot read: {err}") from err
    config = record.config
    if len(config.rates) > 1:
        raise RecordingError(
            f"{cfg}: {len(config.rates)} sample rates: allowed one (multi-rate files are not analysed)"
        )
    values = record.primary()
    voltages: dict[str, np.ndarray] = {}
    currents: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}  # canonical name -> the file's channel name
    for i, ch in enumerate(config.analog):
        name, factor = _canonical(ch)
        if name is None:
            continue
        if name in source:
            raise RecordingError(f"{cfg}: analog channels {source[name]!r} and {ch.name!r} both read as {name}")
        data = values[i] * factor
        bad = np.flatnonzero(~np.isfinite(data))
        if bad.size:
            raise RecordingError(f"{cfg}: channel {ch.name!r}: sample {int(bad[0]) + 1} is missing (NaN)")
        (voltages if name.startswith("v") else currents)[name] = data
        source[name] = ch.name
    voltages = {k: voltages[k] for k in VOLTAGE_NAMES if k in voltages}
    currents = {k: currents[k] for k in CURRENT_NAMES if k in currents}
    if not voltages:
        have = ", ".join(f"{c.name} ({c.unit or 'no unit'}, phase {c.phase or '-'})" for c in config.analog) or "none"
        raise RecordingError(
            f"{cfg}: no voltage channel: allowed channel names va, vb, vc (or ua.., van..), or unit V/kV with "
            f"phase A/B/C; the file has {have}"
        )
    if config.rates:
        file_rate = config.rates[0].rate_hz
    else:
        ts = record.timestamp_s
        if ts is None or not np.all(np.isfinite(ts)):
            raise RecordingError(f"{cfg}: nrates = 0 and the timestamps are missing: no sample rate")
        file_rate = _rate_from_times(ts, f"{cfg}: timestamps", first_row=1)
    rate = _check_rate_option(file_rate, rate_hz, f"{cfg} ({'samp' if config.rates else 'timestamps'})")
    start = config.start.replace(tzinfo=dt.UTC).timestamp()
    lf = float(config.line_freq_hz)
    info = {
        "format": "comtrade",
        "revision": config.rev_year,
        "data_format": config.data_format,
        "station": config.station,
        "device": config.device,
        "start_utc": config.start.isoformat(),
        "channel_map": {k: source[k] for k in (*voltages, *currents)},
    }
    return Recording(cfg, "comtrade", rate, voltages, currents, start, lf if lf > 0 else None, info)


def _rate_from_times(t: np.ndarray, what: str, first_row: int) -> float:
    if t.size < 2:
        raise RecordingError(f"{what}: fewer than 2 samples: cannot derive the sample rate")
    span = float(t[-1] - t[0])
    if not span > 0:
        raise RecordingError(f"{what}: the time does not increase ({t[0]} .. {t[-1]})")
    steps = np.diff(t) / float(np.median(np.diff(t)))
    bad = np.flatnonzero(np.abs(steps - 1.0) > TIME_STEP_TOLERANCE)
    if bad.size:
        k = int(bad[0])
        raise RecordingError(
            f"{what}: not uniform at row {k + first_row + 1}: step {t[k + 1] - t[k]:.9g} s, expected the median "
            f"{float(np.median(np.diff(t))):.9g} s within {TIME_STEP_TOLERANCE:.0%} (one sample rate per file)"
        )
    rate = (t.size - 1) / span
    if abs(rate - round(rate)) < 1e-6 * rate:  # printed timestamps round the span: 6399.99997 Hz is 6400 Hz
        rate = float(round(rate))
    return rate


def _check_rate_option(file_rate: float, rate_hz: float | None, what: str) -> float:
    if rate_hz is not None and abs(rate_hz / file_rate - 1.0) > 1e-3:
        raise RecordingError(f"--rate {rate_hz:g}: disagrees with {what}: {file_rate:.6g} Hz (leave --rate out)")
    return file_rate


def _load_csv(path: Path, rate_hz: float | None) -> Recording:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise RecordingError(f"{path}: cannot read: {err}") from err
    first, _, body = text.partition("\n")
    header = [h.strip().lower() for h in first.strip().split(",")]
    if not first.strip():
        raise RecordingError(f"{path}: empty: allowed a header row (t, va, vb, vc, ia, ib, ic) and one row per sample")
    allowed = ("t", *VOLTAGE_NAMES, *CURRENT_NAMES)
    for j, name in enumerate(header):
        if name not in allowed or (name == "t" and j != 0):
            raise RecordingError(
                f"{path}: header column {j + 1} {name!r}: allowed t (first column only), va, vb, vc, ia, ib, ic"
            )
        if header.index(name) != j:
            raise RecordingError(f"{path}: header column {j + 1} {name!r}: named twice")
    if not any(n in VOLTAGE_NAMES for n in header):
        raise RecordingError(f"{path}: no voltage channel in the header {','.join(header)}: allowed va, vb, vc")
    cols = len(header)
    rows = [ln for ln in body.split("\n") if ln.strip()]
    if not rows:
        raise RecordingError(f"{path}: no data rows after the header")
    try:  # the fast parser; it cannot say where a bad cell is, _locate_csv_error does
        flat = np.fromstring(",".join(rows), sep=",")
    except ValueError:
        flat = np.zeros(0)
    if flat.size != len(rows) * cols or not np.all(np.isfinite(flat)):
        _locate_csv_error(path, rows, header)
    data = flat.reshape(len(rows), cols).T
    if header[0] == "t":
        file_rate = _rate_from_times(data[0], f"{path}: column t", first_row=1)
        rate = _check_rate_option(file_rate, rate_hz, f"{path} column t")
        start = float(data[0, 0])
    else:
        if rate_hz is None:
            raise RecordingError(f"{path}: no time column t: give --rate HZ (the sample rate)")
        rate, start = rate_hz, 0.0
    chans = {name: data[j] for j, name in enumerate(header) if name != "t"}
    voltages = {k: chans[k] for k in VOLTAGE_NAMES if k in chans}
    currents = {k: chans[k] for k in CURRENT_NAMES if k in chans}
    info = {"format": "csv", "time_column": header[0] == "t"}
    return Recording(path, "csv", rate, voltages, currents, start, None, info)


def _locate_csv_error(path: Path, rows: list[str], header: list[str]) -> None:
    """Find the first bad cell (the fast parser only says that there is one) and raise naming it."""
    for i, row in enumerate(csv.reader(io.StringIO("\n".join(rows)))):
        if len(row) != len(header):
            raise RecordingError(f"{path}: row {i + 1} (line {i + 2}): {len(row)} cells, the header has {len(header)}")
        for j, cell in enumerate(row):
            try:
                value = float(cell)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value):
                raise RecordingError(
                    f"{path}: row {i + 1} (line {i + 2}), column {j + 1} {header[j]!r}: {cell.strip()!r} is not a "
                    "finite number"
                )
    raise RecordingError(f"{path}: cannot parse the data rows")  # pragma: no cover - the loop finds the cell


# ---------------------------------------------------------------------------------------------------- options


def estimate_nominal_hz(samples_v: np.ndarray, rate_hz: float) -> int:
    """50 or 60: the strongest spectral line between 40 and 70 Hz in the first 2 s (Hann window, zero-padded)."""
    x = np.asarray(samples_v[: int(2 * rate_hz)], dtype=np.float64)
    if x.size < rate_hz / 10:
        raise RecordingError("--nominal: the file is shorter than 0.1 s: give --nominal 50 or 60")
    x = (x - x.mean()) * np.hanning(x.size)
    n = max(x.size, int(rate_hz * 10))  # 0.1 Hz bins
    spectrum = np.abs(np.fft.rfft(x, n))
    freqs = np.fft.rfftfreq(n, 1 / rate_hz)
    band = (freqs >= 40) & (freqs <= 70)
    if not np.any(spectrum[band] > 0):
        raise RecordingError("--nominal: no fundamental between 40 and 70 Hz: give --nominal 50 or 60")
    peak = float(freqs[band][np.argmax(spectrum[band])])
    if 45 <= peak <= 55:
        return 50
    if 55 < peak <= 65:
        return 60
    raise RecordingError(f"--nominal: the fundamental is at {peak:.1f} Hz, not near 50 or 60: give --nominal 50 or 60")


def estimate_udin_v(voltages: np.ndarray, rate_hz: float, nominal_hz: float) -> tuple[float, float]:
    """(standard Udin [V], median RMS [V]): the median of one-nominal-cycle RMS values over all channels,
    rounded to the nearest of :data:`STANDARD_UDIN_V` (within :data:`UDIN_MATCH_PCT`)."""
    per = max(1, round(rate_hz / nominal_hz))
    n = voltages.shape[1] // per * per
    if n == 0:
        raise RecordingError("--vnom: the file is shorter than one cycle: give --vnom VOLTS")
    cycles = voltages[:, :n].reshape(voltages.shape[0], -1, per)
    median = float(np.median(np.sqrt(np.mean(cycles * cycles, axis=2))))
    best = min(STANDARD_UDIN_V, key=lambda v: abs(math.log(max(median, 1e-12) / v)))
    if abs(median / best - 1) * 100 > UDIN_MATCH_PCT:
        raise RecordingError(
            f"--vnom: the median RMS {median:.4g} V is not within {UDIN_MATCH_PCT:g} % of a standard nominal voltage "
            f"(nearest {best:g} V): give --vnom VOLTS (the declared input voltage, phase to neutral)"
        )
    return best, median


# ---------------------------------------------------------------------------------------------------- analysis


@dataclass(slots=True)
class Analysis:
    """What :func:`analyse_recording` found: ``report`` (the JSON document) plus the series :mod:`plot` draws."""

    recording: Recording
    report: dict[str, Any]
    window_t_s: np.ndarray  # start of each 10/12-cycle window, from the file start [s]
    window_rms_v: np.ndarray  # [channels, windows]
    events: list[dict[str, Any]]


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
    edges = _boundaries(n, rate)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        block = x[:, lo:hi]
        out = meter.push(block)
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
        if short:
            tail = np.concatenate(pinst_first[k]) if pinst_first[k] else np.zeros(0)
            ch["pst"] = [flicker.pst(np.maximum(tail, 0.0))] if tail.size else []
            ch["pst_short"] = True
            ch["pst_interval_s"] = tail.size / flickers[k].output_rate_hz
        else:
            ch["pst"] = psts[k]
            ch["pst_short"] = False
            ch["pst_interval_s"] = flicker.PST_INTERVAL_S
        ch["plt"] = (
            [flicker.plt(psts[k][i : i + 12]) for i in range(0, len(psts[k]) - 11, 12)] if len(psts[k]) >= 12 else None
        )
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
    open_since = meter.events.open_since_s
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
    return Analysis(rec, report, t, rms, event_rows)


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


# ---------------------------------------------------------------------------------------------------- text


def format_text(report: dict[str, Any]) -> str:
    """The human-readable report of ``gridedge pq analyze``."""
    f = report["file"]
    lines = [
        f"File      {f['path']}  ({f['format']}"
        + (f" {f.get('revision')} {f.get('data_format')}" if f["format"] == "comtrade" else "")
        + f")  {f['rate_hz']:g} Hz x {f['samples']} samples = {f['duration_s']:.3f} s",
        f"Nominal   {report['nominal_hz']:g} Hz ({report['nominal_hz_source']})   Udin {report['udin_v']:g} V "
        f"({report['udin_source']})   lamp {report['lamp_v']} V   harmonics to order {report['max_order']}",
        "",
        f"{'channel':<8}{'rms V':>10}{'min V':>10}{'max V':>10}{'freq Hz':>10}{'THD %':>8}{'Pinst max':>10}  Pst",
    ]
    for name, ch in report["channels"].items():
        pst = ", ".join(f"{p:.3f}" for p in ch["pst"]) or "-"
        if ch["pst_short"] and ch["pst"]:
            pst += f" (short file: {ch['pst_interval_s']:.0f} s)"
        lines.append(
            f"{name:<8}{_fmt(ch['rms_v'], 10, 2)}{_fmt(ch['rms_min_v'], 10, 2)}{_fmt(ch['rms_max_v'], 10, 2)}"
            f"{_fmt(ch['frequency_hz'], 10, 3)}{_fmt(ch['thd_pct'], 8, 2)}{_fmt(ch['pinst_max'], 10, 3)}  {pst}"
        )
        if ch.get("plt"):
            lines.append(f"{'':<8}Plt {', '.join(f'{p:.3f}' for p in ch['plt'])}")
    lines.append("")
    lines.append("Harmonics (% of fundamental), orders above 0.1 % in any channel:")
    names = list(report["channels"])
    orders = [
        h
        for h in range(2, report["max_order"] + 1)
        if any((report["channels"][n]["harmonics_pct"].get(str(h)) or 0) >= 0.1 for n in names)
    ]
    if orders:
        lines.append("  order " + "".join(f"{n:>9}" for n in names))
        for h in orders:
            lines.append(
                f"  {h:>5} " + "".join(_fmt(report["channels"][n]["harmonics_pct"].get(str(h)), 9, 3) for n in names)
            )
    else:
        lines.append("  none")
    for name, ch in report.get("currents", {}).items():
        lines.append(f"Current {name}: rms {ch['rms_a']:.3f} A, THD {_fmt(ch['thd_pct'], 0, 2).strip()} %")
    u2, u0 = report["unbalance_u2_pct"], report["unbalance_u0_pct"]
    lines.append("")
    lines.append(
        f"Unbalance u2 {_fmt(u2, 0, 3).strip()} %  u0 {_fmt(u0, 0, 3).strip()} %"
        if u2 is not None
        else "Unbalance: needs va, vb and vc"
    )
    lines.append(f"Events ({len(report['events'])}):")
    for e in report["events"]:
        level = f"residual {e['residual_pct']:.1f} %" if "residual_pct" in e else f"max {e['max_pct']:.1f} %"
        lines.append(
            f"  {e['type']:<13} phase {e['phase']:<3} at {e['start_s']:9.4f} s for {e['duration_s'] * 1000:8.1f} ms"
            f"  {level}  (phases {e['phases']})"
        )
    if report["event_open_at_end_s"] is not None:
        lines.append(
            f"  an event started at {report['event_open_at_end_s']:.4f} s is still open at the end of the file"
        )
    w = report["windows"]
    lines.append(
        f"Windows: {w['count']} of 10/12 cycles ({w['flagged']} flagged); 10-min values: "
        f"{sum(1 for a in report['aggregates_10min'] if a['complete'])} complete"
    )
    return "\n".join(lines)


def _fmt(v: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"
