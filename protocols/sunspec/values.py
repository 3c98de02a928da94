"""SunSpec values with live scale factors: raw registers -> engineering values and back.

A scaled SunSpec point holds a raw integer; its engineering value is raw x 10^SF, where SF is the value of the
model's ``sunssf`` point named in the definition (SunSpec Information Model Specification, "Scale factors").
The device may change an SF while it runs, so a client decodes each value with the SF read in the same poll,
never a remembered one. A raw value equal to its type's "not implemented" marker (ibid., "Unimplemented
registers") is no number at all; neither is a value whose SF reads "not implemented" (0x8000).

Pure functions over what the Modbus layer decoded with scale 1 (:func:`protocols.modbus.registermap.decode_point`
on a discovered layout's raw points).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from protocols.modbus.registermap import DataType, encode_point
from protocols.sunspec.layout import NOT_IMPLEMENTED_RAW, SF_NOT_IMPLEMENTED, SunSpecPoint, from_raw, to_raw

Raw = float | int | str | bool
# SunSpec scale factors are in -10..10 (SunSpec Information Model Specification, "sunssf": "typical range of
# -10 to 10"); anything else is a device fault, not an exponent to trust.
SF_RANGE = range(-10, 11)


class SunSpecValueError(ValueError):
    """A value that cannot be encoded for its point (wrong kind, out of the type's range with this SF)."""


def is_not_implemented(point: SunSpecPoint, raw: Raw | None) -> bool:
    """True if ``raw`` (decoded with scale 1) is the "not implemented" marker of the point's SunSpec type."""
    if raw is None:
        return False
    if point.register.dtype in (DataType.FLOAT32, DataType.FLOAT64):
        return isinstance(raw, float) and math.isnan(raw)
    marker = NOT_IMPLEMENTED_RAW.get(point.sunspec_type)
    return marker is not None and raw == marker and type(raw) is type(marker)


def sf_problem(sf_raw: Raw | None, sf_name: str) -> str:
    """Why ``sf_raw`` cannot scale a value ("" when it can)."""
    if sf_raw is None:
        return f"scale factor {sf_name} not read"
    if sf_raw == SF_NOT_IMPLEMENTED:
        return f"scale factor {sf_name} not implemented"
    if not isinstance(sf_raw, int) or isinstance(sf_raw, bool) or sf_raw not in SF_RANGE:
        return f"scale factor {sf_name} = {sf_raw!r} outside -10..10"
    return ""


def scaled(point: SunSpecPoint, raw: Raw, sf_raw: Raw | None) -> tuple[Raw | None, str]:
    """The engineering value of ``point`` from its raw value and its SF's raw value read in the same poll.

    Returns ``(value, "")``, or ``(None, why)`` when the value is not a number: the point or its SF reads "not
    implemented", the SF was not read (``sf_raw`` None) or is out of range. ``sf_raw`` is ignored for an
    unscaled point or one with a fixed exponent in its definition.
    """
    if is_not_implemented(point, raw):
        return None, "not implemented"
    sf = point.sf
    if sf is None or isinstance(raw, str | bool):
        return raw, ""
    if isinstance(sf, int):
        return from_raw(raw, sf), ""  # type: ignore[arg-type]
    why = sf_problem(sf_raw, sf)
    if why:
        return None, why
    return from_raw(raw, sf_raw), ""  # type: ignore[arg-type]


def decode_values(
    points: Mapping[str, SunSpecPoint], raw: Mapping[str, Raw | None]
) -> dict[str, tuple[Raw | None, str]]:
    """Every point of ``raw`` (name -> value decoded with scale 1, None if not read) scaled with the SFs in ``raw``.

    SF points themselves come back as their exponent. A point missing from ``points`` is an error (KeyError).
    """
    out: dict[str, tuple[Raw | None, str]] = {}
    for name, value in raw.items():
        p = points[name]
        if value is None:
            out[name] = (None, "not read")
            continue
        sf_raw = raw.get(p.sf) if isinstance(p.sf, str) else None
        out[name] = scaled(p, value, sf_raw)
    return out


def encode_value(point: SunSpecPoint, value: Raw, sf: int | None) -> list[int]:
    """The registers of ``value`` for ``point`` with the SF exponent ``sf`` the device holds now.

    ``sf`` is ignored for an unscaled point. A value that does not fit the type with this SF, or would be written as
    the type's "not implemented" marker, is a SunSpecValueError naming the point, the value and the range.
    """
    reg = point.register
    if reg.scale != 1.0 or reg.offset != 0.0:
        raise SunSpecValueError(f"point {point.name!r}: the layout's registers are scaled; encode needs raw registers")
    if reg.dtype is DataType.STRING:
        if not isinstance(value, str):
            raise SunSpecValueError(f"point {point.name!r} (string): {value!r} is not text")
        try:
            return list(encode_point(reg, value))  # type: ignore[arg-type]
        except ValueError as err:
            raise SunSpecValueError(str(err)) from err
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SunSpecValueError(f"point {point.name!r}: {value!r} is not a finite number")
    exp = point.sf if isinstance(point.sf, int) else sf if isinstance(point.sf, str) else None
    if isinstance(point.sf, str) and sf is None:
        raise SunSpecValueError(f"point {point.name!r}: its scale factor {point.sf} is needed to encode it")
    if exp is None:
        if reg.dtype in (DataType.FLOAT32, DataType.FLOAT64):
            raw: float | int = float(value)
        elif float(value) != int(value):
            raise SunSpecValueError(f"point {point.name!r} ({point.sunspec_type}): {value!r} is not an integer")
        else:
            raw = int(value)
    else:
        raw = to_raw(value, exp)  # the nearest step of 10^SF
    marker = NOT_IMPLEMENTED_RAW.get(point.sunspec_type)
    if isinstance(marker, int) and raw == marker and point.sunspec_type not in ("acc16", "acc32", "acc64", "count"):
        raise SunSpecValueError(
            f"point {point.name!r}: {value!r} would be written as {raw}, SunSpec's 'not implemented' marker"
        )
    try:
        return list(encode_point(reg, raw))  # type: ignore[arg-type]
    except ValueError as err:
        step = f" with SF {exp} (steps of {10.0**exp:g})" if exp is not None else ""
        raise SunSpecValueError(f"point {point.name!r}: {value!r} does not fit {point.sunspec_type}{step}") from err
