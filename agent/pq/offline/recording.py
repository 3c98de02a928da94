"""Recorded waveform files (COMTRADE or CSV) for ``gridedge pq analyze``: reading, and the options a file implies.

:func:`load_recording` reads a COMTRADE .cfg (+ .dat), a .cff or a CSV file into a :class:`Recording` (phase
voltages ``va``/``vb``/``vc`` and optional currents ``ia``/``ib``/``ic``, in volts and amperes); every
problem raises :class:`RecordingError` naming the file, row, column or option. :func:`estimate_nominal_hz`
and :func:`estimate_udin_v` give the nominal frequency and the declared input voltage when the options do
not (docs/pq-report.md).
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

from protocols import comtrade

VOLTAGE_NAMES = ("va", "vb", "vc")
CURRENT_NAMES = ("ia", "ib", "ic")
ALLOWED_FILES = "allowed .cfg (COMTRADE, with its .dat), .cff, .csv"
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
    if p.is_dir():
        raise RecordingError(f"{p}: is a folder, not a recording: {ALLOWED_FILES}")
    if not p.is_file():
        raise RecordingError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix in (".cfg", ".cff", ".dat"):
        return _load_comtrade(p.with_suffix(".cfg") if suffix == ".dat" else p, rate_hz)
    if suffix in (".csv", ".txt"):
        return _load_csv(p, rate_hz)
    raise RecordingError(f"{p}: unknown file type {p.suffix!r}: {ALLOWED_FILES}")


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
