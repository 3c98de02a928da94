"""A simulated three-phase revenue meter: values that move like a feeder's, deterministic for a seed.

The physics is deliberately simple (the feeder's power flow comes later with OpenDSS): a smooth daily
load curve plus small seeded "noise" made of slow sinusoids, voltages that sag a little with load,
a frequency wandering around nominal and energy counters integrating the active power. Every value is
a function of the simulated time ``t`` and the seed, except the energy counters, which integrate from
the first time the meter is asked; so a test, the bench and an agent reading over the wire all see
the same numbers for the same seed and clock.

A new device model follows the same shape: a class with ``values(t) -> {point name: value}`` whose
point names are those of its register map.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable

# Point names this model produces: those of config/maps/sim-meter.toml.
POINTS = (
    "v_a", "v_b", "v_c", "i_a", "i_b", "i_c", "p_a", "p_b", "p_c", "p_total", "q_total", "pf",
    "frequency", "model", "serial_number", "energy_delivered_wh", "energy_received_wh", "status_ok",
    "relay_closed",
)  # fmt: skip

MODEL = "SIM3P-120"
ENERGY_MODULUS = 1 << 32  # a uint32 Wh register rolls over like a real meter's
DAY_S = 86400.0
# Longest interval integrated in one piece: a meter asked after a long pause still integrates the
# curve, not one rectangle.
_MAX_INTEGRATION_STEP_S = 10.0


class MeterError(ValueError):
    """A meter asked for something it cannot do (bad parameters, time running backwards)."""


def _wobble(rng: random.Random, n: int, periods_s: tuple[float, float]) -> tuple[tuple[float, float], ...]:
    """``n`` sinusoids (angular frequency, phase) with seeded periods: smooth, repeatable noise."""
    lo, hi = periods_s
    return tuple((2 * math.pi / rng.uniform(lo, hi), rng.uniform(0, 2 * math.pi)) for _ in range(n))


def _noise(terms: tuple[tuple[float, float], ...], t: float) -> float:
    """Sum of the sinusoids normalised to [-1, 1]."""
    return sum(math.sin(w * t + ph) for w, ph in terms) / len(terms)


class ThreePhaseMeter:
    """A meter on a 120 V (phase-neutral), 60 Hz feeder.

    Parameters
    ----------
    name : the device name; the serial number derives from it, so every meter differs.
    load_kw : mean three-phase active power [kW]; negative for a feeder exporting (energy received).
    seed : noise and phase imbalance.
    clock : simulated time [s since the epoch, UTC]; used when ``values`` is called without ``t``.
    nominal_v : phase-neutral voltage [V]. nominal_hz : [Hz]. pf : mean power factor.
    daily_swing : amplitude of the daily load curve, as a fraction of ``load_kw``.
    noise : amplitude of the seeded load noise, as a fraction of ``load_kw``.
    energy_delivered_wh, energy_received_wh : the counters' initial readings [Wh].
    """

    def __init__(
        self,
        name: str,
        *,
        load_kw: float,
        seed: int,
        clock: Callable[[], float] | None = None,
        nominal_v: float = 120.0,
        nominal_hz: float = 60.0,
        pf: float = 0.95,
        daily_swing: float = 0.3,
        noise: float = 0.02,
        energy_delivered_wh: float = 0.0,
        energy_received_wh: float = 0.0,
    ) -> None:
        for key, value, ok, allowed in (
            ("load_kw", load_kw, math.isfinite(load_kw), "a finite number"),
            ("nominal_v", nominal_v, nominal_v > 0, "> 0"),
            ("nominal_hz", nominal_hz, nominal_hz > 0, "> 0"),
            ("pf", pf, 0 < pf <= 1, "in (0, 1]"),
            ("daily_swing", daily_swing, 0 <= daily_swing < 1, "in [0, 1)"),
            ("noise", noise, 0 <= noise < 0.5, "in [0, 0.5)"),
            ("energy_delivered_wh", energy_delivered_wh, energy_delivered_wh >= 0, ">= 0"),
            ("energy_received_wh", energy_received_wh, energy_received_wh >= 0, ">= 0"),
        ):
            if not ok:
                raise MeterError(f"meter {name!r}: {key} = {value!r}: must be {allowed}")
        self.name = name
        self.load_kw = float(load_kw)
        self.seed = seed
        self.clock = clock
        self.nominal_v = nominal_v
        self.nominal_hz = nominal_hz
        self.pf_mean = pf
        self.daily_swing = daily_swing
        self.noise = noise
        rng = random.Random(f"{seed}:{name}")
        self._load_noise = _wobble(rng, 4, (60.0, 900.0))
        self._v_noise = [_wobble(rng, 3, (20.0, 300.0)) for _ in range(3)]
        self._f_noise = _wobble(rng, 3, (5.0, 120.0))
        self._pf_noise = _wobble(rng, 2, (120.0, 1200.0))
        shares = [1 + rng.uniform(-0.04, 0.04) for _ in range(3)]
        self._shares = tuple(s / sum(shares) for s in shares)  # phase imbalance, summing to 1
        self._v_bias = tuple(rng.uniform(-0.005, 0.005) for _ in range(3))
        self.serial_number = 10_000_000 + zlib.crc32(f"{seed}:{name}".encode()) % 90_000_000
        # the largest |P| the curve reaches: where the voltage sag is fullest
        self._p_max_w = abs(self.load_kw) * 1000 * (1 + daily_swing + noise) or 1.0
        self._delivered_wh = float(energy_delivered_wh)
        self._received_wh = float(energy_received_wh)
        self._t_last: float | None = None

    # --- the model -----------------------------------------------------------------------------------
    def p_total_w(self, t: float) -> float:
        """Three-phase active power [W] at ``t``: daily curve peaking at 18:00 UTC, plus noise."""
        hour = (t % DAY_S) / 3600.0
        curve = -math.cos(2 * math.pi * (hour - 6.0) / 24.0)  # -1 at 06:00, +1 at 18:00
        factor = 1 + self.daily_swing * curve + self.noise * _noise(self._load_noise, t)
        return self.load_kw * 1000 * factor

    def _integrate_to(self, t: float) -> None:
        if self._t_last is None:
            self._t_last = t  # the meter starts counting when first asked
            return
        if t < self._t_last:
            raise MeterError(f"meter {self.name!r}: time ran backwards ({t} < {self._t_last})")
        span = t - self._t_last
        pieces = max(1, math.ceil(span / _MAX_INTEGRATION_STEP_S))
        dt = span / pieces
        for k in range(pieces):
            mid = self._t_last + (k + 0.5) * dt
            wh = self.p_total_w(mid) * dt / 3600.0  # midpoint rule, exact for a constant load
            if wh >= 0:
                self._delivered_wh += wh
            else:
                self._received_wh -= wh
        self._t_last = t

    def values(self, t: float | None = None) -> dict[str, float | int | str | bool]:
        """Every point of the meter's register map at simulated time ``t`` [s] (default: the clock).

        Asking for an earlier time than the last one raises MeterError: the energy counters only run
        forward. Asking twice for the same time returns the same values.
        """
        if t is None:
            if self.clock is None:
                raise MeterError(f"meter {self.name!r}: no time given and no clock injected")
            t = self.clock()
        self._integrate_to(t)
        p_total = self.p_total_w(t)
        pf = min(1.0, self.pf_mean + 0.01 * _noise(self._pf_noise, t))
        q_total = abs(p_total) * math.tan(math.acos(pf))  # inductive load: Q > 0 whatever the flow
        sag = 0.03 * abs(p_total) / self._p_max_w  # up to 3 % at the heaviest load
        out: dict[str, float | int | str | bool] = {}
        for k, ph in enumerate("abc"):
            v = self.nominal_v * (1.01 + self._v_bias[k] - sag + 0.002 * _noise(self._v_noise[k], t))
            p = p_total * self._shares[k]
            out[f"v_{ph}"] = v
            out[f"i_{ph}"] = abs(p) / (v * pf)
            out[f"p_{ph}"] = p
        out["p_total"] = p_total
        out["q_total"] = q_total
        out["pf"] = pf
        # the register holds hundredths of a hertz: round here so the served value is the model's
        out["frequency"] = round(self.nominal_hz + 0.02 * _noise(self._f_noise, t), 2)
        out["model"] = MODEL
        out["serial_number"] = self.serial_number
        out["energy_delivered_wh"] = int(self._delivered_wh) % ENERGY_MODULUS
        out["energy_received_wh"] = int(self._received_wh) % ENERGY_MODULUS
        out["status_ok"] = True
        out["relay_closed"] = True
        return out
