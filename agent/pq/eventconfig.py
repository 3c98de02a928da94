"""The thresholds of voltage dips, swells and interruptions (IEC 61000-4-30:2015 5.4), checked.

Apart from the detector (agent/pq/events.py) so that the site file's checks (agent/pq/config.py) build them
without importing numpy, which the agent's own process never loads (agent/pq/worker.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from agent.pq.errors import PqInputError


class EventConfigError(PqInputError):
    """An event-detection setting is out of range: the message names the key, the value and what is allowed."""


@dataclass(frozen=True, slots=True)
class EventConfig:
    """Thresholds of IEC 61000-4-30 5.4, in % of the declared input voltage ``udin_v``.

    Defaults: dip threshold 90 % and hysteresis 2 % (5.4.2.2 gives 85-90 % as typical for dips and 2 % as
    typical hysteresis); swell 110 % (5.4.3.2); interruption 5 % (5.4.4.2).
    """

    udin_v: float
    dip_threshold_pct: float = 90.0
    swell_threshold_pct: float = 110.0
    interruption_threshold_pct: float = 5.0
    hysteresis_pct: float = 2.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise EventConfigError(f"{f.name}={value!r}: allowed a finite number")
        _check("udin_v", self.udin_v, self.udin_v > 0, "> 0 V")
        _check("hysteresis_pct", self.hysteresis_pct, 0 <= self.hysteresis_pct <= 10, "0..10 %")
        _check("interruption_threshold_pct", self.interruption_threshold_pct,
               0 < self.interruption_threshold_pct < self.dip_threshold_pct - self.hysteresis_pct,
               f"> 0 and < dip_threshold_pct - hysteresis_pct ({self.dip_threshold_pct - self.hysteresis_pct:g})")  # fmt: skip
        _check("dip_threshold_pct", self.dip_threshold_pct,
               self.dip_threshold_pct + self.hysteresis_pct <= 100, f"<= {100 - self.hysteresis_pct:g} (100 - hysteresis)")  # fmt: skip
        _check("swell_threshold_pct", self.swell_threshold_pct,
               self.swell_threshold_pct - self.hysteresis_pct >= 100 and self.swell_threshold_pct <= 200,
               f"{100 + self.hysteresis_pct:g}..200 (100 + hysteresis .. 200)")  # fmt: skip

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: str = "pq.events") -> EventConfig:
        """Build from a config section; unknown keys and bad values raise :class:`EventConfigError`."""
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise EventConfigError(f"{path}.{unknown[0]}: unknown key: allowed {', '.join(sorted(allowed))}")
        if "udin_v" not in data:
            raise EventConfigError(f"{path}.udin_v: missing: allowed a number > 0 (declared input voltage, V)")
        try:
            return cls(**data)
        except EventConfigError as err:
            raise EventConfigError(f"{path}.{err}") from err


def _check(key: str, value: float, ok: bool, allowed: str) -> None:
    if not ok:
        raise EventConfigError(f"{key}={value!r}: allowed {allowed}")
