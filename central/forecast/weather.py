"""Weather inputs of the forecaster: the backtest's simulated weather forecast, and weather forecast files.

A backtest must not hand the model the measured weather of the day it forecasts: that is the truth, which no
forecast has. It uses the history's weather with an error (docs/forecast.md, "Weather forecast error model"):

- temperature: measured + e, e an AR(1) process per 15 minutes with coefficient 0.99 (about a day to decorrelate)
  and standard deviation 1.5 degC for day-ahead, 0.7 degC for intraday;
- irradiance: measured x (1 + e), e an AR(1) process with coefficient 0.97 and standard deviation 0.30 for
  day-ahead, 0.15 for intraday, the factor clipped to [0, 2].

The errors are seeded (seed 0 unless told), so a backtest of one file always gives the same figures.
"""

from __future__ import annotations

import numpy as np

from central.forecast.history import History
from central.forecast.models import Weather

# (AR coefficient, standard deviation) per horizon: see the module docstring
TEMPERATURE_ERROR = {"day-ahead": (0.99, 1.5), "intraday": (0.99, 0.7)}  # degC
IRRADIANCE_ERROR = {"day-ahead": (0.97, 0.30), "intraday": (0.97, 0.15)}  # relative


def ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """A stationary AR(1) series of length n with coefficient phi and marginal standard deviation sd."""
    e = rng.normal(0.0, sd * np.sqrt(1 - phi * phi), n)
    e[0] = rng.normal(0.0, sd)
    out = np.empty(n)
    x = 0.0
    for i, ei in enumerate(e.tolist()):  # a plain loop: scipy.signal's import alone costs more than a year of it
        x = phi * x + ei
        out[i] = x
    return out


def simulated_forecast(history: History, seed: int = 0) -> Weather:
    """The history's weather as "history", plus a forecast per horizon made by the documented error model."""
    rng = np.random.default_rng(seed)
    temperature: dict[str, np.ndarray | None] = {"history": history.temperature}
    irradiance: dict[str, np.ndarray | None] = {"history": history.irradiance}
    n = len(history)
    for h in ("day-ahead", "intraday"):
        if history.temperature is not None:
            temperature[h] = history.temperature + ar1(rng, n, *TEMPERATURE_ERROR[h])
        if history.irradiance is not None:
            irradiance[h] = history.irradiance * np.clip(1 + ar1(rng, n, *IRRADIANCE_ERROR[h]), 0, 2)
    return Weather(temperature, irradiance)
