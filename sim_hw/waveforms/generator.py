"""Sampled three-phase voltage and current waveforms for power-quality tests, synthesised with numpy.

A :class:`WaveformDesc` says what the signal is (rate, frequency, amplitudes, harmonics, interharmonics,
flicker, dips/swells/interruptions, noise); :func:`generate` returns a :class:`Waveform`
(``data[6, n]``: va vb vc in V, ia ib ic in A) and :func:`chunks` yields the same samples block by
block for signals too long to hold.

Every sample is a pure function of its index ``k`` (time ``k / rate_hz``): the phase is the closed-form
integral of a piecewise-linear frequency profile, event switching instants are computed once from the
description, and noise comes in fixed blocks of :data:`NOISE_BLOCK` samples each seeded by
``(seed, block index)``. So a chunked signal equals the whole one sample for sample, whatever the chunk
size, and the phase is continuous across chunk boundaries.

Signal model, phase x in (a, b, c) with angle offset ``phi_x`` (default 0, -120, +120 degrees)::

    theta(t)  = 2 pi * integral_0^t f(tau) dtau                      (fundamental angle)
    v_x(t)    = sqrt2 V_x g_x(t) m(t) [ sin(theta + phi_x)
                 + sum_h p_h/100 sin(h (theta + phi_x) + psi_h)      (harmonics follow the frequency)
                 + sum_i p_i/100 sin(2 pi f_i t + phi_x + psi_i) ]   (interharmonics at fixed Hz)
                 + noise
    i_x(t)    = sqrt2 I_x [ sin(theta + phi_x - pf_angle) + sum_h p_h/100 sin(h (theta + phi_x - pf_angle) + psi_h) ]

``g_x`` is the event gain (residual magnitude during a dip, swell or interruption), ``m(t)`` the flicker
modulation ``1 + (dV/V)/2 * s(t)`` with ``s`` a unit sine or square wave: IEC 61000-4-15 (Tables 1 and 2)
gives dV/V as the relative peak-to-peak voltage change, and a rectangular fluctuation of r changes per
minute is a square wave of r/120 Hz (two changes per period). The h-th harmonic rotates h times the
phase offset, so the 3rd is zero sequence and the 5th negative sequence, as on a real network.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protocols import comtrade

CHANNELS = ("va", "vb", "vc", "ia", "ib", "ic")
UNITS = ("V", "V", "V", "A", "A", "A")
PHASES = "abc"
NOISE_BLOCK = 4096  # samples per independently seeded noise block (chunk-size independence)
_SQRT2 = math.sqrt(2.0)


class DescriptionError(ValueError):
    """A waveform description that cannot be built: names the key path, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"{key} = {value!r}: allowed {allowed}")
        self.key = key
        self.value = value
        self.allowed = allowed


def _num(key: str, value: object, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DescriptionError(key, value, "a finite number" + _range_text(lo, hi, lo_open))
    v = float(value)
    if (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
        raise DescriptionError(key, value, "a number" + _range_text(lo, hi, lo_open))
    return v


def _range_text(lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is None and hi is None:
        return ""
    left = "(" if lo_open else "["
    return f" in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"


# ---- the description ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Harmonic:
    """Harmonic ``order`` (2..100) at ``pct`` % of the fundamental, phase ``phase_deg`` [deg]."""

    order: int
    pct: float
    phase_deg: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.order, bool) or not isinstance(self.order, int) or not 2 <= self.order <= 100:
            raise DescriptionError("harmonic.order", self.order, "an integer in [2, 100]")
        _num("harmonic.pct", self.pct, 0.0, 100.0)
        _num("harmonic.phase_deg", self.phase_deg)


@dataclass(frozen=True, slots=True)
class Interharmonic:
    """A component at a fixed ``freq_hz`` [Hz] of ``pct`` % of the fundamental, phase ``phase_deg`` [deg]."""

    freq_hz: float
    pct: float
    phase_deg: float = 0.0

    def __post_init__(self) -> None:
        _num("interharmonic.freq_hz", self.freq_hz, 0.0, lo_open=True)
        _num("interharmonic.pct", self.pct, 0.0, 100.0)
        _num("interharmonic.phase_deg", self.phase_deg)


FLICKER_SHAPES = ("sine", "rect")


@dataclass(frozen=True, slots=True)
class Flicker:
    """Amplitude modulation of the voltages: relative change ``dv_v_pct`` (peak to peak, % of V).

    Give the modulation as ``freq_hz`` or, IEC 61000-4-15 style, as ``changes_per_min`` (two changes per
    period: f = r / 120 Hz).
    """

    dv_v_pct: float
    shape: str = "sine"
    freq_hz: float | None = None
    changes_per_min: float | None = None

    def __post_init__(self) -> None:
        _num("flicker.dv_v_pct", self.dv_v_pct, 0.0, 100.0)
        if self.shape not in FLICKER_SHAPES:
            raise DescriptionError("flicker.shape", self.shape, " or ".join(FLICKER_SHAPES))
        if (self.freq_hz is None) == (self.changes_per_min is None):
            raise DescriptionError(
                "flicker", {"freq_hz": self.freq_hz, "changes_per_min": self.changes_per_min}, "exactly one of them"
            )
        if self.freq_hz is not None:
            _num("flicker.freq_hz", self.freq_hz, 0.0, lo_open=True)
        else:
            _num("flicker.changes_per_min", self.changes_per_min, 0.0, lo_open=True)

    @property
    def modulation_hz(self) -> float:
        # IEC 61000-4-15: a rectangular fluctuation of r changes/min has r/2 periods per minute
        return self.freq_hz if self.freq_hz is not None else self.changes_per_min / 120.0  # type: ignore[operator]


EVENT_KINDS = ("dip", "swell", "interruption")
# magnitude_pct bounds per kind: a dip is below the 100 % reference, a swell above it; an interruption is
# at most 10 % (IEC 61000-4-30 5.5: the interruption threshold is typically 5 % or 10 % of the declared voltage)
_EVENT_RANGE = {"dip": (0.0, 99.999), "swell": (100.001, 200.0), "interruption": (0.0, 10.0)}


@dataclass(frozen=True, slots=True)
class Event:
    """A dip, swell or interruption on ``phases`` (subset of "abc").

    The voltage amplitude becomes ``magnitude_pct`` % of its normal value (the residual voltage) from the
    first instant at or after ``start_s`` where the phase's fundamental angle is at the point on wave, for
    ``duration_s`` (ending at the next such instant after start + duration). ``point_on_wave_deg`` None
    means "at a zero crossing" (0 or 180 degrees, whichever comes first); a number is an exact angle of
    that phase's own fundamental, so each affected phase switches on its own wave.
    """

    kind: str
    start_s: float
    duration_s: float
    magnitude_pct: float | None = None
    phases: str = "abc"
    point_on_wave_deg: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise DescriptionError("event.kind", self.kind, " or ".join(EVENT_KINDS))
        _num("event.start_s", self.start_s, 0.0)
        _num("event.duration_s", self.duration_s, 0.0, lo_open=True)
        if not self.phases or any(p not in PHASES for p in self.phases) or len(set(self.phases)) != len(self.phases):
            raise DescriptionError("event.phases", self.phases, "a non-empty subset of 'abc' without repeats")
        if self.magnitude_pct is None:
            if self.kind != "interruption":
                raise DescriptionError("event.magnitude_pct", None, f"a number for a {self.kind}")
        else:
            lo, hi = _EVENT_RANGE[self.kind]
            _num("event.magnitude_pct", self.magnitude_pct, lo, hi)
        if self.point_on_wave_deg is not None:
            _num("event.point_on_wave_deg", self.point_on_wave_deg, 0.0, 360.0)

    @property
    def gain(self) -> float:
        return (self.magnitude_pct if self.magnitude_pct is not None else 0.0) / 100.0


@dataclass(frozen=True, slots=True)
class Noise:
    """White Gaussian noise of ``v_pct`` % of the nominal voltage amplitude (and ``i_pct`` of the current)."""

    v_pct: float = 0.0
    i_pct: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _num("noise.v_pct", self.v_pct, 0.0, 100.0)
        _num("noise.i_pct", self.i_pct, 0.0, 100.0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise DescriptionError("noise.seed", self.seed, "a non-negative integer")


NOMINAL_HZ = (50.0, 60.0)


@dataclass(frozen=True, slots=True)
class WaveformDesc:
    """What to synthesise. Give the rate as ``rate_hz`` or ``samples_per_cycle`` (of the nominal frequency).

    ``frequency_hz`` is the actual frequency (default: nominal); ``frequency_profile`` ((t_s, f_hz), ...)
    makes it piecewise linear in time instead (held before the first and after the last point).
    ``v_rms`` / ``i_rms`` are per phase [V] / [A] (unequal values give unbalance), ``angles_deg`` the
    phase offsets, ``pf_angle_deg`` the angle by which the currents lag the voltages.
    """

    nominal_hz: float = 50.0
    rate_hz: float | None = None
    samples_per_cycle: int | None = None
    frequency_hz: float | None = None
    frequency_profile: tuple[tuple[float, float], ...] = ()
    v_rms: tuple[float, float, float] = (230.0, 230.0, 230.0)
    i_rms: tuple[float, float, float] = (10.0, 10.0, 10.0)
    angles_deg: tuple[float, float, float] = (0.0, -120.0, 120.0)
    pf_angle_deg: float = 0.0
    harmonics: tuple[Harmonic, ...] = ()
    current_harmonics: tuple[Harmonic, ...] = ()
    interharmonics: tuple[Interharmonic, ...] = ()
    flicker: Flicker | None = None
    events: tuple[Event, ...] = ()
    noise: Noise | None = None
    t0: float = 0.0  # UTC epoch seconds of sample 0

    def __post_init__(self) -> None:
        if self.nominal_hz not in NOMINAL_HZ:
            raise DescriptionError("nominal_hz", self.nominal_hz, "50 or 60")
        if (self.rate_hz is None) == (self.samples_per_cycle is None):
            raise DescriptionError(
                "rate", {"rate_hz": self.rate_hz, "samples_per_cycle": self.samples_per_cycle}, "exactly one of them"
            )
        if self.samples_per_cycle is not None:
            spc = self.samples_per_cycle
            if isinstance(spc, bool) or not isinstance(spc, int) or not 8 <= spc <= 65536:
                raise DescriptionError("samples_per_cycle", spc, "an integer in [8, 65536]")
        else:
            _num("rate_hz", self.rate_hz, 100.0, 10_000_000.0)
        if self.frequency_hz is not None:
            _num("frequency_hz", self.frequency_hz, 1.0, 1000.0)
            if self.frequency_profile:
                raise DescriptionError("frequency_profile", self.frequency_profile, "empty when frequency_hz is given")
        last_t = -math.inf
        for i, point in enumerate(self.frequency_profile):
            if len(point) != 2:
                raise DescriptionError(f"frequency_profile[{i}]", point, "a pair (t_s, f_hz)")
            t = _num(f"frequency_profile[{i}].t_s", point[0], 0.0)
            _num(f"frequency_profile[{i}].f_hz", point[1], 1.0, 1000.0)
            if t <= last_t:
                raise DescriptionError(f"frequency_profile[{i}].t_s", t, f"greater than the previous point's {last_t}")
            last_t = t
        for name in ("v_rms", "i_rms", "angles_deg"):
            values = getattr(self, name)
            if len(values) != 3:
                raise DescriptionError(name, values, "three numbers (phases a, b, c)")
            for p, v in zip(PHASES, values, strict=True):
                _num(f"{name}.{p}", v, 0.0 if name != "angles_deg" else None)
        _num("pf_angle_deg", self.pf_angle_deg, -180.0, 180.0)
        _num("t0", self.t0)
        nyquist = self.rate / 2.0
        top_f = max(f for _, f in self.frequency_profile) if self.frequency_profile else self.f_hz
        for i, h in enumerate(self.harmonics + self.current_harmonics):
            if h.order * top_f >= nyquist:
                raise DescriptionError(f"harmonics[{i}].order", h.order, f"below the Nyquist frequency {nyquist} Hz")
        for i, ih in enumerate(self.interharmonics):
            if ih.freq_hz >= nyquist:
                raise DescriptionError(f"interharmonics[{i}].freq_hz", ih.freq_hz, f"below {nyquist} Hz (Nyquist)")

    @property
    def rate(self) -> float:
        """Samples per second [Hz]."""
        return float(self.rate_hz) if self.rate_hz is not None else self.samples_per_cycle * self.nominal_hz  # type: ignore[operator]

    @property
    def f_hz(self) -> float:
        """The constant actual frequency [Hz] (the first profile point's when a profile is given)."""
        if self.frequency_profile:
            return float(self.frequency_profile[0][1])
        return float(self.frequency_hz) if self.frequency_hz is not None else self.nominal_hz

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WaveformDesc:
        """Build from plain data (a TOML table): unknown keys and bad values raise :class:`DescriptionError`."""
        if not isinstance(d, Mapping):
            raise DescriptionError("waveform", d, "a table (mapping)")
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise DescriptionError(unknown[0], d[unknown[0]], "one of " + ", ".join(sorted(allowed)))
        kw: dict[str, Any] = {}
        for key, value in d.items():
            if key in ("harmonics", "current_harmonics"):
                kw[key] = tuple(_sub(Harmonic, f"{key}[{i}]", v) for i, v in enumerate(_seq(key, value)))
            elif key == "interharmonics":
                kw[key] = tuple(_sub(Interharmonic, f"{key}[{i}]", v) for i, v in enumerate(_seq(key, value)))
            elif key == "events":
                kw[key] = tuple(_sub(Event, f"{key}[{i}]", v) for i, v in enumerate(_seq(key, value)))
            elif key == "flicker":
                kw[key] = None if value is None else _sub(Flicker, key, value)
            elif key == "noise":
                kw[key] = None if value is None else _sub(Noise, key, value)
            elif key in ("v_rms", "i_rms", "angles_deg"):
                kw[key] = tuple(_seq(key, value))
            elif key == "frequency_profile":
                kw[key] = tuple(tuple(_seq(f"{key}[{i}]", p)) for i, p in enumerate(_seq(key, value)))
            else:
                kw[key] = value
        try:
            return cls(**kw)
        except DescriptionError as err:
            raise DescriptionError(err.key, err.value, err.allowed) from None


def _seq(key: str, value: object) -> Sequence[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise DescriptionError(key, value, "a list")
    return value


def _sub(cls: type, key: str, value: object) -> Any:
    if not isinstance(value, Mapping):
        raise DescriptionError(key, value, "a table (mapping)")
    allowed = set(cls.__dataclass_fields__)
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise DescriptionError(f"{key}.{unknown[0]}", value[unknown[0]], "one of " + ", ".join(sorted(allowed)))
    try:
        return cls(**value)
    except DescriptionError as err:
        # the class knows its field ("harmonic.pct"); the caller knows where it sits ("harmonics[2]")
        field_name = err.key.split(".", 1)[1] if "." in err.key else ""
        raise DescriptionError(f"{key}.{field_name}" if field_name else key, err.value, err.allowed) from None
    except TypeError as err:  # a required field missing
        raise DescriptionError(key, dict(value), f"all required fields of {cls.__name__} ({err})") from None


# ---- the result -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Waveform:
    """``data[c, k]`` is channel ``channels[c]`` at time ``t0 + (first_index + k) / rate_hz`` (UTC epoch s)."""

    t0: float
    rate_hz: float
    channels: tuple[str, ...]
    units: tuple[str, ...]
    data: np.ndarray
    first_index: int = 0

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[1])

    @property
    def time_s(self) -> np.ndarray:
        """Seconds since sample 0 of the signal, one per sample."""
        return (self.first_index + np.arange(self.n_samples)) / self.rate_hz

    def channel(self, name: str) -> np.ndarray:
        try:
            return self.data[self.channels.index(name)]
        except ValueError:
            raise KeyError(f"channel {name!r}: have {', '.join(self.channels)}") from None


# ---- synthesis ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Switch:
    phase: int
    t_on: float
    t_off: float
    gain: float


@dataclass(slots=True)
class _Plan:
    """What the description compiles to: the frequency integral and the event switching instants."""

    desc: WaveformDesc
    bp_t: np.ndarray = field(init=False)
    bp_f: np.ndarray = field(init=False)
    bp_slope: np.ndarray = field(init=False)
    bp_cycles: np.ndarray = field(init=False)
    switches: tuple[_Switch, ...] = field(init=False)

    def __post_init__(self) -> None:
        d = self.desc
        pts = d.frequency_profile or ((0.0, d.f_hz),)
        t = np.array([0.0] + [p[0] for p in pts if p[0] > 0.0], dtype=np.float64)
        f = np.interp(t, [p[0] for p in pts], [p[1] for p in pts])
        slope = np.zeros_like(t)
        slope[:-1] = np.diff(f) / np.diff(t)
        cycles = np.zeros_like(t)
        cycles[1:] = np.cumsum(0.5 * (f[:-1] + f[1:]) * np.diff(t))
        self.bp_t, self.bp_f, self.bp_slope, self.bp_cycles = t, f, slope, cycles
        self.switches = tuple(self._switches())

    def cycles(self, t: np.ndarray) -> np.ndarray:
        """Fundamental cycles elapsed at times ``t`` [s]: the exact integral of the piecewise-linear f(t)."""
        i = np.searchsorted(self.bp_t, t, side="right") - 1
        i = np.clip(i, 0, len(self.bp_t) - 1)
        dt = t - self.bp_t[i]
        return self.bp_cycles[i] + self.bp_f[i] * dt + 0.5 * self.bp_slope[i] * dt * dt

    def _next_angle(self, t_from: float, phase: int, pow_deg: float | None) -> float:
        """First time >= t_from at which phase ``phase``'s fundamental angle is at the point on wave."""
        offset = self.desc.angles_deg[phase] / 360.0
        c0 = float(self.cycles(np.array([t_from]))[0]) + offset
        if pow_deg is None:  # a zero crossing: every half cycle
            target = math.ceil(c0 * 2.0 - 1e-12) / 2.0
        else:
            frac = pow_deg / 360.0
            target = math.ceil(c0 - frac - 1e-12) + frac
        target -= offset
        lo, hi = t_from, t_from + 1.0
        while float(self.cycles(np.array([hi]))[0]) < target:
            hi += 1.0
        for _ in range(80):  # bisection to well below a nanosecond: cycles(t) is increasing
            mid = 0.5 * (lo + hi)
            if float(self.cycles(np.array([mid]))[0]) < target:
                lo = mid
            else:
                hi = mid
        return hi

    def _switches(self) -> Iterator[_Switch]:
        for ev in self.desc.events:
            for p in ev.phases:
                ph = PHASES.index(p)
                t_on = self._next_angle(ev.start_s, ph, ev.point_on_wave_deg)
                t_off = self._next_angle(t_on + ev.duration_s, ph, ev.point_on_wave_deg)
                yield _Switch(ph, t_on, t_off, ev.gain)


def _synthesise(plan: _Plan, first: int, n: int) -> np.ndarray:
    d = plan.desc
    rate = d.rate
    t = (first + np.arange(n, dtype=np.float64)) / rate
    theta = (2.0 * math.pi) * plan.cycles(t)  # [n]
    out = np.empty((6, n), dtype=np.float64)
    mod = None
    if d.flicker is not None and d.flicker.dv_v_pct > 0.0:
        arg = (2.0 * math.pi * d.flicker.modulation_hz) * t
        shape = np.sin(arg) if d.flicker.shape == "sine" else np.where(np.sin(arg) >= 0.0, 1.0, -1.0)
        mod = 1.0 + (d.flicker.dv_v_pct / 200.0) * shape
    for ph in range(3):
        off = math.radians(d.angles_deg[ph])
        ang = theta + off
        v = np.sin(ang)
        for h in d.harmonics:
            v += (h.pct / 100.0) * np.sin(h.order * ang + math.radians(h.phase_deg))
        for ih in d.interharmonics:
            v += (ih.pct / 100.0) * np.sin((2.0 * math.pi * ih.freq_hz) * t + off + math.radians(ih.phase_deg))
        v *= _SQRT2 * d.v_rms[ph]
        if mod is not None:
            v *= mod
        for sw in plan.switches:
            if sw.phase == ph and sw.t_on < t[-1] + 1.0 / rate and sw.t_off > t[0]:
                v[(t >= sw.t_on) & (t < sw.t_off)] *= sw.gain
        out[ph] = v
        iang = ang - math.radians(d.pf_angle_deg)
        i = np.sin(iang)
        for h in d.current_harmonics:
            i += (h.pct / 100.0) * np.sin(h.order * iang + math.radians(h.phase_deg))
        out[3 + ph] = i * (_SQRT2 * d.i_rms[ph])
    if d.noise is not None and (d.noise.v_pct > 0.0 or d.noise.i_pct > 0.0):
        out += _noise(d, first, n)
    return out


def _noise(d: WaveformDesc, first: int, n: int) -> np.ndarray:
    """Noise of samples [first, first + n): drawn per fixed block so that chunking does not change it."""
    assert d.noise is not None
    scale = np.array(
        [d.noise.v_pct / 100.0 * _SQRT2 * v for v in d.v_rms] + [d.noise.i_pct / 100.0 * _SQRT2 * i for i in d.i_rms]
    )[:, None]
    b0, b1 = first // NOISE_BLOCK, (first + n - 1) // NOISE_BLOCK
    blocks = [
        np.random.default_rng(np.random.SeedSequence([d.noise.seed, b])).standard_normal((6, NOISE_BLOCK))
        for b in range(b0, b1 + 1)
    ]
    whole = np.concatenate(blocks, axis=1)
    s = first - b0 * NOISE_BLOCK
    return whole[:, s : s + n] * scale


def n_samples_for(desc: WaveformDesc, duration_s: float) -> int:
    """Samples in ``duration_s`` seconds (rounded to the nearest sample)."""
    _num("duration_s", duration_s, 0.0)
    return round(duration_s * desc.rate)


def generate(desc: WaveformDesc, duration_s: float, *, first_index: int = 0) -> Waveform:
    """The whole signal of ``duration_s`` seconds [s] from sample ``first_index``."""
    n = n_samples_for(desc, duration_s)
    return generate_samples(desc, first_index, n)


def generate_samples(desc: WaveformDesc, first_index: int, n: int, plan: _Plan | None = None) -> Waveform:
    """Samples ``first_index .. first_index + n - 1`` of the signal."""
    if first_index < 0 or n < 0:
        raise DescriptionError("first_index/n", (first_index, n), "non-negative integers")
    plan = plan or _Plan(desc)
    data = _synthesise(plan, first_index, n) if n else np.empty((6, 0))
    return Waveform(desc.t0, desc.rate, CHANNELS, UNITS, data, first_index)


def chunks(
    desc: WaveformDesc, block_s: float, duration_s: float | None = None, *, first_index: int = 0
) -> Iterator[Waveform]:
    """Blocks of ``round(block_s * rate)`` samples from ``first_index``; endless when ``duration_s`` is None.

    The last block is shorter when the duration is not a whole number of blocks.
    """
    _num("block_s", block_s, 0.0, lo_open=True)
    block = max(1, round(block_s * desc.rate))
    end = None if duration_s is None else first_index + n_samples_for(desc, duration_s)
    plan = _Plan(desc)
    k = first_index
    while end is None or k < end:
        n = block if end is None else min(block, end - k)
        yield generate_samples(desc, k, n, plan)
        k += n


# ---- recordings -----------------------------------------------------------------------------------------


def comtrade_config(
    waveform: Waveform,
    *,
    station: str = "GRIDEDGE BENCH",
    device: str = "SIM-WAVEFORMS",
    rev_year: str = "2013",
    data_format: str = "BINARY",
    nominal_hz: float = 50.0,
    trigger_s: float = 0.0,
) -> comtrade.Config:
    """The COMTRADE configuration of ``waveform``: a and b scaled to its data, timestamps from its t0."""
    chans = tuple(
        comtrade.scaled_channel(
            name, waveform.data[i], unit=unit, data_format=data_format, rev_year=rev_year, phase=name[1].upper()
        )
        for i, (name, unit) in enumerate(zip(waveform.channels, waveform.units, strict=True))
    )
    start = waveform.t0 + waveform.first_index / waveform.rate_hz
    return comtrade.Config(
        station=station,
        device=device,
        analog=chans,
        rates=(comtrade.SampleRate(waveform.rate_hz, waveform.n_samples),),
        start=_utc(start),
        trigger=_utc(start + trigger_s),
        rev_year=rev_year,
        line_freq_hz=nominal_hz,
        data_format=data_format,
        time_code="0",
        local_code="0",
    )


def _utc(epoch_s: float) -> dt.datetime:
    """Naive UTC datetime (the .cfg says the offset in time_code / local_code, 2013 7.4.10)."""
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).replace(tzinfo=None)


def write_comtrade(waveform: Waveform, path: str | Path, **kw: Any) -> tuple[Path, Path]:
    """Write ``waveform`` as ``path``.cfg + ``path``.dat (options of :func:`comtrade_config`)."""
    return comtrade.write(path, comtrade_config(waveform, **kw), waveform.data)
