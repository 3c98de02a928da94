"""Readings of central's store in engineering units: the unit factors to kW and kvar that the forecaster and
dispatch both read readings through."""

from __future__ import annotations

# a reading's unit -> factor to the quantity's unit (kW for active power, kvar for reactive)
UNIT_FACTORS = {
    "kW": {"W": 1e-3, "kW": 1.0, "MW": 1e3},
    "kvar": {"var": 1e-3, "kvar": 1.0, "Mvar": 1e3},
}

__all__ = ["UNIT_FACTORS"]
