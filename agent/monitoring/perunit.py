"""A measured voltage put on the 120 V base of ANSI C84.1, and in per unit of it.

Two ways a reading reaches the base, one per ``[[monitoring.voltages]]`` entry:

- ``pt_ratio``: the reading is the secondary of a voltage transformer whose secondary is 120 V at the
  nominal primary voltage (the usual distribution PT: 2400:120 V, ratio 20). The secondary is then on the
  120 V base as it is read, the way a regulator control or capacitor controller reads its band; the
  primary is ``reading x pt_ratio``.
- ``nominal_v``: the reading is primary volts phase-neutral (a meter programmed with its PT ratio, a PMU's
  magnitude) and ``nominal_v`` is the nominal primary phase-neutral voltage, 120 V on the base (2401.8 V
  on a 4.16 kV feeder: 4160 / sqrt 3). The value on the base is ``reading x 120 / nominal_v``.

References
----------
[1] ANSI C84.1-2016, Table 1: voltage ranges of 120-600 V systems stated on the 120 V base.
"""

from __future__ import annotations

from agent.monitoring.limits import BASE_V


def base_v(reading: float, *, pt_ratio: float | None = None, nominal_v: float | None = None) -> float:
    """``reading`` on the 120 V base [V]: as read through a 120 V-secondary PT, or scaled by ``nominal_v``.

    Parameters
    ----------
    reading : the measured phase-neutral voltage, RMS [V]
    pt_ratio : the reading is that PT's secondary [V/V]; exactly one of ``pt_ratio`` and ``nominal_v``
    nominal_v : the nominal primary phase-neutral voltage, 120 V on the base [V]; the reading is primary
    """
    if (pt_ratio is None) == (nominal_v is None):
        raise ValueError("give exactly one of pt_ratio and nominal_v")
    if pt_ratio is not None:
        if not pt_ratio > 0:
            raise ValueError(f"pt_ratio = {pt_ratio!r}: > 0")
        return float(reading)
    assert nominal_v is not None
    if not nominal_v > 0:
        raise ValueError(f"nominal_v = {nominal_v!r}: > 0")
    return reading * BASE_V / nominal_v


def primary_v(reading: float, *, pt_ratio: float | None = None, nominal_v: float | None = None) -> float:
    """The primary voltage [V]: ``reading x pt_ratio`` through a PT, the reading itself with ``nominal_v``."""
    if pt_ratio is not None:
        return reading * pt_ratio
    return float(reading)


def per_unit(v_base: float) -> float:
    """A voltage on the 120 V base [V] in per unit of 120 V [pu]."""
    return v_base / BASE_V


__all__ = ["base_v", "per_unit", "primary_v"]
