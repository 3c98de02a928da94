"""IEEE C37.111 (COMTRADE) configuration and data files: writer and reader, revisions 1999 and 2013.

Pure functions over text and bytes (:func:`format_cfg` / :func:`parse_cfg`, :func:`encode_dat` /
:func:`decode_dat`, :func:`format_cff` / :func:`parse_cff`) with thin file helpers on top
(:func:`write`, :func:`read`, :func:`write_cff`, :func:`read_cff`). The bench writes recordings with it,
the agent reads them; it imports nothing from agent/, sim_hw/ or central/.

Clause numbers are those of IEEE Std C37.111-2013 (= IEC 60255-24:2013), "2013" below; C37.111-1999
(= IEC 60255-24:2001, whose files say 1999 or 2001) has the same configuration lines up to ``timemult``.

- .cfg (2013 clause 7.4): station_name,rec_dev_id,rev_year / TT,##A,##D / one line per analog channel
  An,ch_id,ph,ccbm,uu,a,b,skew,min,max,primary,secondary,PS / one per status channel Dn,ch_id,ph,ccbm,y /
  lf / nrates / samp,endsamp (nrates lines; "0" then "0,endsamp" when the timestamps are the time base) /
  start date,time / trigger date,time / ft / timemult / (2013 only) time_code,local_code / tmq_code,leapsec.
- .dat (2013 clause 8): per sample the sample number n (1, 2, ...), the timestamp (in units of 1 us times
  timemult) and the raw analog values; an analog value in engineering units is ``a * raw + b`` (7.4.3).
  ASCII: comma-separated text lines; BINARY: little-endian uint32 n, uint32 timestamp, int16 per analog,
  16-bit words of status bits (bit 0 = first channel); BINARY32: int32 analog; FLOAT32: float32 analog.
- Missing analog data: BINARY 0x8000 (2013 8.5; -32767..32767 is the data range), BINARY32 0x80000000;
  ASCII 2013: an empty field (8.4); ASCII 1999: the value 99999 (1999 range -99999..99998); a missing
  timestamp is 0xFFFFFFFF in binary files (blank in ASCII). FLOAT32 has no marker in the standard: we write
  and read NaN. All missing values read as NaN.

Errors are typed: :class:`CfgError` names the .cfg line number, the field and the value; :class:`DatError`
names the .dat line (ASCII) or record; :class:`DatTooShortError` says how many samples the .cfg promised
and how many the .dat holds. All derive from :class:`ComtradeError` (a ``ValueError``).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

REVISIONS = ("1999", "2013")  # "2001" (IEC 60255-24:2001) is read as 1999
FORMATS = ("ASCII", "BINARY", "BINARY32", "FLOAT32")  # BINARY32 and FLOAT32 since 2013 (7.4.8)
# Raw data ranges per format (the missing marker is outside them): 2013 8.5 / 8.6, 1999 ASCII
_RAW_RANGE = {
    ("BINARY", "1999"): (-32767, 32767),
    ("BINARY", "2013"): (-32767, 32767),
    ("BINARY32", "2013"): (-2147483647, 2147483647),
    ("ASCII", "1999"): (-99999, 99998),
    ("ASCII", "2013"): (-2147483647, 2147483647),  # 2013 allows reals in ASCII; we keep integers
}
_ASCII_1999_MISSING = 99999
_TS_MISSING = 0xFFFFFFFF
_MAX_NAME = 64  # 2013 7.4.1 / 7.4.3: station_name, rec_dev_id, ch_id at most 64 characters


class ComtradeError(ValueError):
    """A COMTRADE file or record that cannot be written or read."""


class CfgError(ComtradeError):
    """A malformed .cfg: ``line`` (1-based), ``field`` and ``value`` say where and what."""

    def __init__(self, line: int, field: str, value: str, allowed: str) -> None:
        super().__init__(f".cfg line {line}, field {field} = {value!r}: expected {allowed}")
        self.line = line
        self.field = field
        self.value = value


class DatError(ComtradeError):
    """A malformed .dat (wrong field count, non-numeric value, sample numbers out of order)."""


class DatTooShortError(DatError):
    """The .dat holds fewer samples than the .cfg's last endsamp."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f".dat holds {actual} samples, the .cfg says {expected}")
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True, slots=True)
class AnalogChannel:
    """One analog channel line (2013 7.4.3). ``min``/``max`` are raw data limits; ``ps`` is P or S."""

    name: str
    unit: str = ""
    phase: str = ""
    ccbm: str = ""
    a: float = 1.0
    b: float = 0.0
    skew_us: float = 0.0
    min: float = -32767
    max: float = 32767
    primary: float = 1.0
    secondary: float = 1.0
    ps: str = "P"


@dataclass(frozen=True, slots=True)
class DigitalChannel:
    """One status channel line (2013 7.4.4): ``normal`` is the state y of the input in its normal condition."""

    name: str
    phase: str = ""
    ccbm: str = ""
    normal: int = 0


@dataclass(frozen=True, slots=True)
class SampleRate:
    """A samp,endsamp line (2013 7.4.6): ``rate_hz`` [Hz] up to sample number ``end_sample``."""

    rate_hz: float
    end_sample: int


@dataclass(frozen=True, slots=True)
class Config:
    """The contents of a .cfg. ``rates`` empty means nrates = 0: the .dat timestamps are the time base."""

    station: str
    device: str
    analog: tuple[AnalogChannel, ...]
    rates: tuple[SampleRate, ...]
    start: dt.datetime
    trigger: dt.datetime
    digital: tuple[DigitalChannel, ...] = ()
    rev_year: str = "2013"
    line_freq_hz: float = 50.0
    data_format: str = "BINARY"
    timemult: float = 1.0
    n_samples_no_rate: int = 0  # endsamp of the "0,endsamp" line when rates is empty
    time_code: str = "0"  # 2013 7.4.10: offset of the local time of the recorder from UTC, e.g. -5h30
    local_code: str = "0"  # 2013 7.4.10: offset of the time stamps from UTC, or x when not used
    tmq_code: str = "F"  # 2013 7.4.11: time quality (IEEE C37.118 hex code; F = not reliable / unknown)
    leapsec: int = 0  # 2013 7.4.11: 0 none, 1 added, 2 deleted, 3 clock failure

    @property
    def n_samples(self) -> int:
        return self.rates[-1].end_sample if self.rates else self.n_samples_no_rate

    def validate(self) -> Config:
        """Raise :class:`ComtradeError` for a configuration that cannot be written; return self."""
        if self.rev_year not in REVISIONS:
            raise ComtradeError(f"rev_year = {self.rev_year!r}: expected one of {', '.join(REVISIONS)}")
        if self.data_format not in FORMATS:
            raise ComtradeError(f"data_format = {self.data_format!r}: expected one of {', '.join(FORMATS)}")
        if self.rev_year == "1999" and self.data_format in ("BINARY32", "FLOAT32"):
            raise ComtradeError(f"data_format = {self.data_format}: only ASCII or BINARY in rev 1999")
        for what, text in [("station", self.station), ("device", self.device)] + [
            (f"channel {c.name!r}", c.name) for c in self.analog + self.digital
        ]:
            if "," in text or "\n" in text or len(text) > _MAX_NAME:
                raise ComtradeError(f"{what} = {text!r}: at most {_MAX_NAME} characters, no comma or newline")
        for c in self.analog:
            if c.ps.upper() not in ("P", "S"):
                raise ComtradeError(f"channel {c.name!r}: ps = {c.ps!r}, expected P or S")
            if not (math.isfinite(c.a) and c.a != 0.0 and math.isfinite(c.b)):
                raise ComtradeError(f"channel {c.name!r}: a = {c.a}, b = {c.b}: expected finite numbers, a != 0")
        last = 0
        for r in self.rates:
            if not (r.rate_hz > 0 and r.end_sample > last):
                raise ComtradeError(f"rate {r}: expected rate_hz > 0 and end_sample increasing")
            last = r.end_sample
        if not self.timemult > 0:
            raise ComtradeError(f"timemult = {self.timemult}: expected > 0")
        if self.leapsec not in (0, 1, 2, 3):
            raise ComtradeError(f"leapsec = {self.leapsec}: expected 0, 1, 2 or 3")
        return self


@dataclass(frozen=True, slots=True)
class Record:
    """A read (or to-be-written) recording: analog values in the file's engineering units (NaN = missing).

    ``analog[i, k]`` is channel ``config.analog[i]`` at sample k; ``digital[j, k]`` is 0/1;
    ``timestamp_s[k]`` is the .dat timestamp in seconds from the first sample time (NaN if missing).
    """

    config: Config
    analog: np.ndarray
    digital: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.uint8))
    sample_number: np.ndarray | None = None
    timestamp_s: np.ndarray | None = None

    @property
    def time_s(self) -> np.ndarray:
        """Seconds after the first sample, from the sample rates (2013 7.4.6) or from the timestamps."""
        n = self.analog.shape[1]
        if not self.config.rates:
            if self.timestamp_s is None:
                raise ComtradeError("nrates = 0 and no timestamps: no time base")
            return self.timestamp_s
        # each sample is 1/samp after the previous one, samp being the rate of the segment it belongs to
        t = np.empty(n)
        start_n, t_prev = 0, 0.0
        for k, r in enumerate(self.config.rates):
            end = min(r.end_sample, n)
            if end <= start_n:
                break
            steps = np.arange(end - start_n) + (0 if k == 0 else 1)
            t[start_n:end] = t_prev + steps / r.rate_hz
            t_prev, start_n = float(t[end - 1]), end
        if start_n < n:  # samples past the last endsamp continue at the last rate
            t[start_n:] = t_prev + np.arange(1, n - start_n + 1) / self.config.rates[-1].rate_hz
        return t

    @property
    def rate_hz(self) -> float:
        """The (first) sample rate [Hz]; 0 when nrates = 0."""
        return self.config.rates[0].rate_hz if self.config.rates else 0.0

    def channel(self, name: str) -> np.ndarray:
        for i, c in enumerate(self.config.analog):
            if c.name == name:
                return self.analog[i]
        raise KeyError(f"analog channel {name!r}: have {', '.join(c.name for c in self.config.analog)}")

    def primary(self) -> np.ndarray:
        """Analog values referred to the primary side: secondary values times primary / secondary (7.4.3)."""
        factor = np.array(
            [c.primary / c.secondary if c.ps.upper() == "S" and c.secondary else 1.0 for c in self.config.analog]
        )
        return self.analog * factor[:, None]


# ---- choosing a and b ------------------------------------------------------------------------------------


def scaled_channel(
    name: str, values: np.ndarray, *, unit: str = "", data_format: str = "BINARY", rev_year: str = "2013", **kw: object
) -> AnalogChannel:
    """An :class:`AnalogChannel` whose a, b map the finite range of ``values`` onto the format's raw range.

    The resolution is then ``a`` (a sample is read back within a/2). FLOAT32 gets a = 1, b = 0.
    """
    if data_format == "FLOAT32":
        return AnalogChannel(name, unit, a=1.0, b=0.0, min=-3.4028235e38, max=3.4028235e38, **kw)  # type: ignore[arg-type]
    lo_raw, hi_raw = _raw_range(data_format, rev_year)
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        lo = hi = 0.0
    else:
        lo, hi = float(finite.min()), float(finite.max())
    half = 0.5 * (hi - lo)
    b = 0.5 * (lo + hi)
    if abs(b) <= 1e-9 * half:  # symmetric data: keep b a clean zero rather than rounding noise
        b = 0.0
    # headroom (1 ppm of the range) so that float rounding of (x - b) / a never lands outside the raw range
    a = half / (0.5 * (hi_raw - lo_raw) * (1.0 - 1e-6)) if half > 0 else 1.0
    return AnalogChannel(name, unit, a=a, b=b, min=lo_raw, max=hi_raw, **kw)  # type: ignore[arg-type]


def _raw_range(data_format: str, rev_year: str) -> tuple[int, int]:
    key = (data_format, "2013" if rev_year == "2013" else "1999")
    if key not in _RAW_RANGE:
        raise ComtradeError(f"data_format = {data_format!r} with rev_year {rev_year}: no integer raw range")
    return _RAW_RANGE[key]


# ---- .cfg ------------------------------------------------------------------------------------------------


def _num_text(x: float) -> str:
    """Shortest text that reads back as the same float (repr), integers without '.0'."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


def _stamp(t: dt.datetime) -> str:
    # 2013 7.4.7 / 1999: dd/mm/yyyy,hh:mm:ss.ssssss
    return f"{t.day:02d}/{t.month:02d}/{t.year:04d},{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}"


def format_cfg(config: Config) -> str:
    """The .cfg text of ``config`` (CR LF line ends, 2013 4.4.2)."""
    c = config.validate()
    lines = [f"{c.station},{c.device},{c.rev_year}"]  # 7.4.1
    lines.append(f"{len(c.analog) + len(c.digital)},{len(c.analog)}A,{len(c.digital)}D")  # 7.4.2
    for i, ch in enumerate(c.analog, 1):  # 7.4.3
        lines.append(
            ",".join(
                [str(i), ch.name, ch.phase, ch.ccbm, ch.unit]
                + [_num_text(v) for v in (ch.a, ch.b, ch.skew_us, ch.min, ch.max, ch.primary, ch.secondary)]
                + [ch.ps.upper()]
            )
        )
    for i, ch in enumerate(c.digital, 1):  # 7.4.4
        lines.append(f"{i},{ch.name},{ch.phase},{ch.ccbm},{int(ch.normal)}")
    lines.append(_num_text(c.line_freq_hz))  # 7.4.5
    if c.rates:  # 7.4.6
        lines.append(str(len(c.rates)))
        lines += [f"{_num_text(r.rate_hz)},{r.end_sample}" for r in c.rates]
    else:
        lines += ["0", f"0,{c.n_samples_no_rate}"]
    lines += [_stamp(c.start), _stamp(c.trigger)]  # 7.4.7
    lines.append(c.data_format)  # 7.4.8
    lines.append(_num_text(c.timemult))  # 7.4.9
    if c.rev_year == "2013":
        lines.append(f"{c.time_code},{c.local_code}")  # 7.4.10
        lines.append(f"{c.tmq_code},{c.leapsec}")  # 7.4.11
    return "\r\n".join(lines) + "\r\n"


_DATE = re.compile(r"^\s*(\d{1,2})/(\d{1,2})/(\d{4})\s*$")
_TIME = re.compile(r"^\s*(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s*$")
_TIME_CODE = re.compile(r"^[+-]?\d{1,2}(h\d{2})?$")


class _Lines:
    def __init__(self, text: str) -> None:
        self.lines = [ln.rstrip("\x1a") for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
        while self.lines and not self.lines[-1].strip():
            self.lines.pop()
        self.i = 0

    def next(self, what: str) -> tuple[int, list[str]]:
        if self.i >= len(self.lines):
            raise CfgError(self.i + 1, what, "", "a line (the .cfg ends early)")
        self.i += 1
        return self.i, [f.strip() for f in self.lines[self.i - 1].split(",")]

    def more(self) -> bool:
        return self.i < len(self.lines)


def _fields(ln: int, fields: list[str], names: Sequence[str], at_least: int | None = None) -> None:
    need = len(names) if at_least is None else at_least
    if not need <= len(fields) <= len(names):
        raise CfgError(ln, ",".join(names), ",".join(fields), f"{len(names)} comma-separated fields")


def _int(ln: int, name: str, text: str, lo: int | None = None) -> int:
    try:
        v = int(text)
    except ValueError:
        raise CfgError(ln, name, text, "an integer") from None
    if lo is not None and v < lo:
        raise CfgError(ln, name, text, f"an integer >= {lo}")
    return v


def _float(ln: int, name: str, text: str, default: float | None = None) -> float:
    if text == "" and default is not None:
        return default
    try:
        v = float(text)
    except ValueError:
        raise CfgError(ln, name, text, "a number") from None
    if not math.isfinite(v):
        raise CfgError(ln, name, text, "a finite number")
    return v


def _parse_stamp(ln: int, fields: list[str], name: str) -> dt.datetime:
    _fields(ln, fields, (f"{name} date", f"{name} time"))
    d, t = _DATE.match(fields[0]), _TIME.match(fields[1])
    if not d:
        raise CfgError(ln, f"{name} date", fields[0], "dd/mm/yyyy")
    if not t:
        raise CfgError(ln, f"{name} time", fields[1], "hh:mm:ss.ssssss")
    frac = (t.group(4) or "0").ljust(9, "0")
    try:
        return dt.datetime(
            int(d.group(3)),
            int(d.group(2)),
            int(d.group(1)),
            int(t.group(1)),
            int(t.group(2)),
            int(t.group(3)),
            int(frac[:6]),  # nanoseconds (2013 allows 9 digits) are truncated to the datetime's microseconds
        )
    except ValueError as err:
        raise CfgError(ln, name, ",".join(fields), f"a valid date and time ({err})") from None


def parse_cfg(text: str) -> Config:
    """Parse .cfg text; :class:`CfgError` names the line and field of the first problem."""
    r = _Lines(text)
    ln, f = r.next("station_name,rec_dev_id,rev_year")  # 7.4.1
    _fields(ln, f, ("station_name", "rec_dev_id", "rev_year"))
    rev = f[2] if len(f) == 3 else ""
    if rev == "2001":
        rev = "1999"
    if rev not in REVISIONS:
        raise CfgError(ln, "rev_year", rev, "1999, 2001 or 2013 (1991 files are not read)")
    station, device = f[0], f[1]

    ln, f = r.next("TT,##A,##D")  # 7.4.2
    _fields(ln, f, ("TT", "##A", "##D"))
    total = _int(ln, "TT", f[0], 0)
    if not f[1].upper().endswith("A"):
        raise CfgError(ln, "##A", f[1], "a count followed by A")
    if not f[2].upper().endswith("D"):
        raise CfgError(ln, "##D", f[2], "a count followed by D")
    n_a, n_d = _int(ln, "##A", f[1][:-1], 0), _int(ln, "##D", f[2][:-1], 0)
    if n_a + n_d != total:
        raise CfgError(ln, "TT", f[0], f"##A + ##D = {n_a + n_d}")

    analog = []
    names = ("An", "ch_id", "ph", "ccbm", "uu", "a", "b", "skew", "min", "max", "primary", "secondary", "PS")
    for _ in range(n_a):  # 7.4.3
        ln, f = r.next("analog channel")
        _fields(ln, f, names, at_least=10)  # primary, secondary and PS are 1999 additions some writers omit
        f += [""] * (13 - len(f))
        _int(ln, "An", f[0], 1)
        ps = f[12] or "P"
        if ps.upper() not in ("P", "S"):
            raise CfgError(ln, "PS", ps, "P or S")
        a = _float(ln, "a", f[5])
        analog.append(
            AnalogChannel(
                name=f[1],
                phase=f[2],
                ccbm=f[3],
                unit=f[4],
                a=a,
                b=_float(ln, "b", f[6], 0.0),
                skew_us=_float(ln, "skew", f[7], 0.0),
                min=_float(ln, "min", f[8]),
                max=_float(ln, "max", f[9]),
                primary=_float(ln, "primary", f[10], 1.0),
                secondary=_float(ln, "secondary", f[11], 1.0),
                ps=ps.upper(),
            )
        )
    digital = []
    for _ in range(n_d):  # 7.4.4
        ln, f = r.next("status channel")
        _fields(ln, f, ("Dn", "ch_id", "ph", "ccbm", "y"), at_least=2)
        f += [""] * (5 - len(f))
        _int(ln, "Dn", f[0], 1)
        y = _int(ln, "y", f[4] or "0", 0)
        if y not in (0, 1):
            raise CfgError(ln, "y", f[4], "0 or 1")
        digital.append(DigitalChannel(name=f[1], phase=f[2], ccbm=f[3], normal=y))

    ln, f = r.next("lf")  # 7.4.5
    _fields(ln, f, ("lf",))
    lf = _float(ln, "lf", f[0], 0.0)

    ln, f = r.next("nrates")  # 7.4.6
    _fields(ln, f, ("nrates",))
    nrates = _int(ln, "nrates", f[0], 0)
    rates = []
    n_no_rate = 0
    for _ in range(max(nrates, 1)):
        ln, f = r.next("samp,endsamp")
        _fields(ln, f, ("samp", "endsamp"))
        samp = _float(ln, "samp", f[0])
        end = _int(ln, "endsamp", f[1], 0)
        if nrates == 0:
            n_no_rate = end
            continue
        if samp <= 0:
            raise CfgError(ln, "samp", f[0], "a rate > 0 when nrates > 0")
        if rates and end <= rates[-1].end_sample:
            raise CfgError(ln, "endsamp", f[1], f"greater than the previous endsamp {rates[-1].end_sample}")
        rates.append(SampleRate(samp, end))

    ln, f = r.next("start date,time")  # 7.4.7
    start = _parse_stamp(ln, f, "start")
    ln, f = r.next("trigger date,time")
    trigger = _parse_stamp(ln, f, "trigger")

    ln, f = r.next("ft")  # 7.4.8
    _fields(ln, f, ("ft",))
    ft = f[0].upper()
    allowed = FORMATS if rev == "2013" else FORMATS[:2]
    if ft not in allowed:
        raise CfgError(ln, "ft", f[0], " or ".join(allowed) + f" (rev {rev})")

    timemult = 1.0
    if r.more():  # 7.4.9
        ln, f = r.next("timemult")
        _fields(ln, f, ("timemult",))
        timemult = _float(ln, "timemult", f[0], 1.0)
        if timemult <= 0:
            raise CfgError(ln, "timemult", f[0], "a number > 0")
    extra: dict[str, object] = {}
    if rev == "2013" and r.more():
        ln, f = r.next("time_code,local_code")  # 7.4.10
        _fields(ln, f, ("time_code", "local_code"))
        if not _TIME_CODE.match(f[0]):
            raise CfgError(ln, "time_code", f[0], "an offset from UTC like 0, -5, +10 or -5h30")
        if f[1].lower() != "x" and not _TIME_CODE.match(f[1]):
            raise CfgError(ln, "local_code", f[1], "an offset from UTC like 0, -5h30, or x")
        extra.update(time_code=f[0], local_code=f[1])
        if r.more():
            ln, f = r.next("tmq_code,leapsec")  # 7.4.11
            _fields(ln, f, ("tmq_code", "leapsec"))
            if not re.fullmatch(r"[0-9A-Fa-f]", f[0]):
                raise CfgError(ln, "tmq_code", f[0], "one hexadecimal digit 0..F")
            leap = _int(ln, "leapsec", f[1], 0)
            if leap > 3:
                raise CfgError(ln, "leapsec", f[1], "0, 1, 2 or 3")
            extra.update(tmq_code=f[0].upper(), leapsec=leap)
    return Config(
        station=station,
        device=device,
        analog=tuple(analog),
        digital=tuple(digital),
        rates=tuple(rates),
        start=start,
        trigger=trigger,
        rev_year=rev,
        line_freq_hz=lf,
        data_format=ft,
        timemult=timemult,
        n_samples_no_rate=n_no_rate,
        **extra,  # type: ignore[arg-type]
    )


# ---- .dat ------------------------------------------------------------------------------------------------


def _quantise(config: Config, analog: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw values (float64, rounded) and the missing mask; out-of-range values raise ComtradeError."""
    a = np.array([c.a for c in config.analog])[:, None]
    b = np.array([c.b for c in config.analog])[:, None]
    missing = ~np.isfinite(analog)
    raw = (np.where(missing, 0.0, analog) - b) / a
    if config.data_format == "FLOAT32":
        return raw, missing
    raw = np.rint(raw)
    lo, hi = _raw_range(config.data_format, config.rev_year)
    bad = (raw < lo) | (raw > hi)
    if bad.any():
        i, k = np.argwhere(bad)[0]
        raise ComtradeError(
            f"channel {config.analog[i].name!r} sample {k}: value {analog[i, k]!r} is raw {raw[i, k]:.0f}, outside "
            f"{lo}..{hi} of {config.data_format}: choose a and b (scaled_channel) to cover the data"
        )
    return raw, missing


def _timestamps(config: Config, n: int, timestamp_s: np.ndarray | None) -> np.ndarray:
    if timestamp_s is None:
        timestamp_s = Record(config, np.zeros((0, n))).time_s
    ts = np.rint(np.asarray(timestamp_s, dtype=np.float64) * 1e6 / config.timemult)
    if n and (ts.min() < 0 or ts.max() >= _TS_MISSING):
        raise ComtradeError(
            f"timestamps up to {ts.max():.0f} x timemult us do not fit the 32-bit field: raise timemult "
            f"(now {config.timemult})"
        )
    return ts.astype(np.int64)


def encode_dat(
    config: Config,
    analog: np.ndarray,
    digital: np.ndarray | None = None,
    timestamp_s: np.ndarray | None = None,
) -> bytes:
    """The .dat bytes of ``analog[n_analog, n]`` (engineering units, NaN = missing) and ``digital[n_digital, n]``.

    ``timestamp_s`` defaults to the times of the sample rates; n must equal ``config.n_samples``.
    """
    config.validate()
    analog = np.asarray(analog, dtype=np.float64)
    n = config.n_samples
    if analog.shape != (len(config.analog), n):
        raise ComtradeError(f"analog shape {analog.shape}: expected ({len(config.analog)}, {n}) from the config")
    if digital is None:
        digital = np.zeros((len(config.digital), n), dtype=np.uint8)
    digital = np.asarray(digital)
    if digital.shape != (len(config.digital), n):
        raise ComtradeError(f"digital shape {digital.shape}: expected ({len(config.digital)}, {n}) from the config")
    raw, missing = _quantise(config, analog)
    ts = _timestamps(config, n, timestamp_s)
    if config.data_format == "ASCII":
        return _encode_ascii(config, raw, missing, digital, ts)
    n_words = (len(config.digital) + 15) // 16
    fmt = {"BINARY": "<i2", "BINARY32": "<i4", "FLOAT32": "<f4"}[config.data_format]
    rec = np.dtype(
        [("n", "<u4"), ("ts", "<u4")] + [(f"a{i}", fmt) for i in range(len(config.analog))] + [("d", "<u2", (n_words,))]
    )
    out = np.zeros(n, dtype=rec)
    out["n"] = np.arange(1, n + 1)
    out["ts"] = ts
    marker = {"BINARY": -0x8000, "BINARY32": -0x80000000, "FLOAT32": np.nan}[config.data_format]
    for i in range(len(config.analog)):
        out[f"a{i}"] = np.where(missing[i], marker, raw[i])
    if n_words:
        words = np.zeros((n, n_words), dtype=np.uint16)
        for j in range(len(config.digital)):
            words[:, j // 16] |= (digital[j].astype(np.uint16) & 1) << (j % 16)
        out["d"] = words
    return out.tobytes()


def _encode_ascii(config: Config, raw: np.ndarray, missing: np.ndarray, digital: np.ndarray, ts: np.ndarray) -> bytes:
    n = raw.shape[1]
    cols = [np.arange(1, n + 1).astype(str), ts.astype(str)]
    marker = str(_ASCII_1999_MISSING) if config.rev_year == "1999" else ""
    for i in range(raw.shape[0]):
        col = raw[i].astype(np.int64).astype(str)
        cols.append(np.where(missing[i], marker, col) if missing[i].any() else col)
    cols += [digital[j].astype(np.int64).astype(str) for j in range(digital.shape[0])]
    table = np.stack(cols, axis=1)
    return ("\r\n".join(",".join(row) for row in table.tolist()) + "\r\n").encode("ascii")


def decode_dat(config: Config, data: bytes) -> Record:
    """Decode .dat bytes with ``config``: engineering units, NaN for missing values (see module doc)."""
    n = config.n_samples
    n_a, n_d = len(config.analog), len(config.digital)
    a = np.array([c.a for c in config.analog])[:, None]
    b = np.array([c.b for c in config.analog])[:, None]
    if config.data_format == "ASCII":
        sample_n, ts, raw, missing, digital = _decode_ascii(config, data)
    else:
        n_words = (n_d + 15) // 16
        fmt = {"BINARY": "<i2", "BINARY32": "<i4", "FLOAT32": "<f4"}[config.data_format]
        rec = np.dtype(
            [("n", "<u4"), ("ts", "<u4")] + [(f"a{i}", fmt) for i in range(n_a)] + [("d", "<u2", (n_words,))]
        )
        have = len(data) // rec.itemsize
        if have < n:
            raise DatTooShortError(n, have)
        arr = np.frombuffer(data, dtype=rec, count=n)
        sample_n = arr["n"].astype(np.int64)
        ts_raw = arr["ts"]
        ts = np.where(ts_raw == _TS_MISSING, np.nan, ts_raw.astype(np.float64))
        raw = np.empty((n_a, n))
        missing = np.zeros((n_a, n), dtype=bool)
        marker = {"BINARY": -0x8000, "BINARY32": -0x80000000}.get(config.data_format)
        for i in range(n_a):
            col = arr[f"a{i}"]
            missing[i] = np.isnan(col) if marker is None else col == marker
            raw[i] = col
        digital = np.zeros((n_d, n), dtype=np.uint8)
        for j in range(n_d):
            digital[j] = (arr["d"][:, j // 16] >> (j % 16)) & 1
    values = a * raw + b
    values[missing] = np.nan
    return Record(config, values, digital, sample_n, ts * 1e-6 * config.timemult)


def _decode_ascii(config: Config, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = config.n_samples
    n_a, n_d = len(config.analog), len(config.digital)
    width = 2 + n_a + n_d
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as err:
        raise DatError(f".dat (ASCII) byte {err.start}: not ASCII text") from None
    lines = [ln for ln in text.replace("\x1a", "").splitlines() if ln.strip()]
    if len(lines) < n:
        raise DatTooShortError(n, len(lines))
    lines = lines[:n]
    fields = ",".join(lines).split(",")
    if len(fields) != n * width:
        for k, ln in enumerate(lines, 1):
            if ln.count(",") != width - 1:
                raise DatError(
                    f".dat line {k}: {ln.count(',') + 1} fields, expected {width} (n, timestamp, "
                    f"{n_a} analog, {n_d} status)"
                )
    table = np.array(fields).reshape(n, width) if n else np.empty((0, width), dtype="U1")
    if " " in text or "\t" in text:
        table = np.char.strip(table)
    empty = table == ""

    def numeric(col: np.ndarray, what: str, allow_empty: bool) -> np.ndarray:
        if not allow_empty and empty[:, col].any():
            k = int(np.argwhere(empty[:, col])[0][0]) + 1
            raise DatError(f".dat line {k}: {what} is empty")
        sub = np.where(empty[:, col], "nan", table[:, col])
        try:
            return sub.astype(np.float64)
        except ValueError:
            for k, row in enumerate(sub, 1):
                for v in np.atleast_1d(row):
                    try:
                        float(v)
                    except ValueError:
                        raise DatError(f".dat line {k}: {what} value {str(v)!r} is not a number") from None
            raise

    sample_n = numeric(0, "sample number", False).astype(np.int64)
    ts = numeric(1, "timestamp", True)
    raw = numeric(slice(2, 2 + n_a), "analog", True).T.copy() if n_a else np.empty((0, n))
    missing = np.isnan(raw)
    if config.rev_year == "1999":
        missing |= raw == _ASCII_1999_MISSING
    raw[missing] = 0.0
    digital = numeric(slice(2 + n_a, width), "status", False).T.astype(np.uint8) if n_d else np.zeros((0, n), np.uint8)
    return sample_n, ts, raw, missing, digital


# ---- files -----------------------------------------------------------------------------------------------


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix.lower() in (".cfg", ".dat", ".cff"):
        p = p.with_suffix("")
    return p.with_suffix(".cfg"), p.with_suffix(".dat")


def write(
    path: str | Path,
    config: Config,
    analog: np.ndarray,
    digital: np.ndarray | None = None,
    timestamp_s: np.ndarray | None = None,
) -> tuple[Path, Path]:
    """Write ``path``.cfg and ``path``.dat (``path`` with or without an extension); return both paths."""
    cfg_path, dat_path = _paths(path)
    dat = encode_dat(config, analog, digital, timestamp_s)
    cfg_path.write_bytes(format_cfg(config).encode("latin-1"))
    dat_path.write_bytes(dat)
    return cfg_path, dat_path


def read(cfg_path: str | Path, dat_path: str | Path | None = None) -> Record:
    """Read a .cfg/.dat pair (the .dat beside the .cfg unless given), or a .cff."""
    cfg_path = Path(cfg_path)
    if cfg_path.suffix.lower() == ".cff":
        return read_cff(cfg_path)
    if dat_path is None:
        dat_path = cfg_path.with_suffix(".DAT" if cfg_path.suffix == ".CFG" else ".dat")
    config = parse_cfg(cfg_path.read_bytes().decode("latin-1"))
    return decode_dat(config, Path(dat_path).read_bytes())


# ---- .cff (2013 clause 9: the combined file) -------------------------------------------------------------

_CFF_HEADER = re.compile(
    rb"^--- file type: (CFG|INF|HDR|DAT)(?: (ASCII|BINARY32|BINARY|FLOAT32))?(?: ?: ?(\d+))? ---\r?$"
)


def format_cff(
    config: Config,
    analog: np.ndarray,
    digital: np.ndarray | None = None,
    *,
    hdr: str = "",
    inf: str = "",
    timestamp_s: np.ndarray | None = None,
) -> bytes:
    """A 2013 combined file: the CFG, INF, HDR and DAT sections, each after a ``--- file type: ... ---`` line."""
    if config.rev_year != "2013":
        raise ComtradeError(f"rev_year = {config.rev_year}: the .cff exists only in rev 2013")
    dat = encode_dat(config, analog, digital, timestamp_s)
    parts = [b"--- file type: CFG ---\r\n", format_cfg(config).encode("latin-1")]
    parts += [b"--- file type: INF ---\r\n", _text_section(inf)]
    parts += [b"--- file type: HDR ---\r\n", _text_section(hdr)]
    if config.data_format == "ASCII":
        parts += [b"--- file type: DAT ASCII ---\r\n", dat]
    else:
        parts += [f"--- file type: DAT {config.data_format}: {len(dat)} ---\r\n".encode(), dat]
    return b"".join(parts)


def _text_section(text: str) -> bytes:
    body = text.replace("\r\n", "\n").replace("\n", "\r\n")
    return (body + ("\r\n" if body and not body.endswith("\r\n") else "")).encode("latin-1")


def parse_cff(data: bytes) -> tuple[Record, str, str]:
    """Parse a .cff: the record, the HDR text and the INF text."""
    sections: dict[str, bytes] = {}
    pos = 0
    current: tuple[str, int] | None = None
    dat_format = None
    while pos < len(data):
        end = data.find(b"\n", pos)
        line_end = len(data) if end < 0 else end + 1
        m = _CFF_HEADER.match(data[pos:line_end].rstrip(b"\n") + b"")
        if m:
            if current:
                sections[current[0]] = data[current[1] : pos]
            kind = m.group(1).decode()
            if kind == "DAT":
                dat_format = (m.group(2) or b"").decode()
                if dat_format != "ASCII":
                    if m.group(3) is None:
                        raise ComtradeError(f".cff DAT {dat_format} header without its byte count")
                    size = int(m.group(3))
                    sections["DAT"] = data[line_end : line_end + size]
                    current = None
                    pos = len(data)
                    break
            current = (kind, line_end)
        elif current is None:
            raise ComtradeError(f".cff byte {pos}: expected a '--- file type: ... ---' line")
        pos = line_end
    if current:
        sections[current[0]] = data[current[1] :]
    for need in ("CFG", "DAT"):
        if need not in sections:
            raise ComtradeError(f".cff has no {need} section")
    config = parse_cfg(sections["CFG"].decode("latin-1"))
    if dat_format and dat_format != config.data_format:
        raise ComtradeError(f".cff DAT section is {dat_format}, its CFG says {config.data_format}")
    record = decode_dat(config, sections["DAT"])
    return record, sections.get("HDR", b"").decode("latin-1"), sections.get("INF", b"").decode("latin-1")


def write_cff(
    path: str | Path, config: Config, analog: np.ndarray, digital: np.ndarray | None = None, **kw: str
) -> Path:
    p = Path(path).with_suffix(".cff")
    p.write_bytes(format_cff(config, analog, digital, **kw))  # type: ignore[arg-type]
    return p


def read_cff(path: str | Path) -> Record:
    return parse_cff(Path(path).read_bytes())[0]


def with_rates(config: Config, rate_hz: float, n_samples: int) -> Config:
    """``config`` with one sample rate ``rate_hz`` [Hz] for ``n_samples`` samples."""
    return replace(config, rates=(SampleRate(rate_hz, n_samples),))
