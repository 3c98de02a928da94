"""SunSpec register layouts built from pysunspec2's model definitions, as a protocols.modbus RegisterMap.

pysunspec2 ships the SunSpec Alliance's JSON model definitions (``sunspec2/models/json/model_<id>.json``);
:func:`build_layout` walks them (through ``sunspec2.device.get_model_def``) and lays the models out one
after the other from a base address, the way a SunSpec device does (SunSpec Information Model
Specification, "Device Modbus map"):

    base+0  "SunS" marker (2 registers)
    base+2  model ID, L (length of the model's points in registers), the points ... (one block per model)
    ...     end model: ID 0xFFFF, L 0

Each point becomes a :class:`protocols.modbus.registermap.RegisterPoint` named
``<model group name>.<point>``, e.g. ``DERMeasureAC.W``; points of a fixed group carry its name
(``DERCtlAC.PFWInj.PF``) and points of a repeating group its 1-based index
(``DERVoltVar.Crv[1].Pt[2].V``). Repeating groups have the fixed counts given to :func:`build_layout`
(the device's ``NCrv``/``NPt``/``NCtl`` points read those counts).

Scale factors: SunSpec stores scaled points as raw integers and their exponent in a ``sunssf`` point
(value = raw x 10^SF). The layout fixes each SF when it is built (``sf_values``), so the register
point's ``scale`` is 10^SF and ``encode_point``/``decode_point`` convert engineering values; the SF
registers hold the exponents (:meth:`SunSpecLayout.fixed_values`). :func:`to_raw` / :func:`from_raw`
do the same conversion by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sunspec2 import device as ss_device
from sunspec2 import mdef

from protocols.modbus.registermap import DataType, RegisterMap, RegisterPoint, Table

BASE_ADDRESS = 40000
SUNS_MARKER = "SunS"  # 0x5375 0x6E53
END_MODEL_ID = 0xFFFF


class SunSpecLayoutError(ValueError):
    """A layout that cannot be built; ``key`` names the model/point, ``value`` the bad input."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key} = {value!r}: {allowed}")


# SunSpec point type -> register type (SunSpec Information Model Specification, "Point types").
TYPE_MAP: dict[str, DataType] = {
    "int16": DataType.INT16,
    "sunssf": DataType.INT16,
    "uint16": DataType.UINT16,
    "enum16": DataType.UINT16,
    "bitfield16": DataType.UINT16,
    "acc16": DataType.UINT16,
    "count": DataType.UINT16,
    "pad": DataType.UINT16,
    "int32": DataType.INT32,
    "uint32": DataType.UINT32,
    "acc32": DataType.UINT32,
    "enum32": DataType.UINT32,
    "bitfield32": DataType.UINT32,
    "ipaddr": DataType.UINT32,
    "int64": DataType.INT64,
    "uint64": DataType.UINT64,
    "acc64": DataType.UINT64,
    "float32": DataType.FLOAT32,
    "float64": DataType.FLOAT64,
    "string": DataType.STRING,
}

# Raw register value meaning "not implemented" per SunSpec type (ibid., "Unimplemented registers").
NOT_IMPLEMENTED_RAW: dict[str, int | str] = {
    "int16": -0x8000,
    "sunssf": -0x8000,
    "uint16": 0xFFFF,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "count": 0,
    "acc16": 0,
    "pad": 0x8000,
    "int32": -0x80000000,
    "uint32": 0xFFFFFFFF,
    "acc32": 0,
    "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
    "ipaddr": 0,
    "int64": -(1 << 63),
    "uint64": (1 << 64) - 1,
    "acc64": 0,
    "string": "",
}


def to_raw(value: float, sf: int) -> int:
    """Engineering value -> the raw integer a SunSpec register holds with scale factor ``sf``: value / 10^sf."""
    return round(value / 10.0**sf) if sf >= 0 else round(value * 10.0**-sf)


def from_raw(raw: int, sf: int) -> float:
    """Raw register integer and its scale factor -> engineering value: raw x 10^sf."""
    return raw * 10.0**sf if sf >= 0 else raw / 10.0**-sf


@dataclass(frozen=True, slots=True)
class SunSpecPoint:
    """One SunSpec point as laid out: its register point and the definition it came from."""

    register: RegisterPoint
    model_id: int
    sunspec_type: str
    sf: str | int | None  # the name of its sunssf point (full name), a fixed exponent, or None
    units: str
    access: str  # "R" or "RW" as the SunSpec definition says
    mandatory: bool
    symbols: dict[int, str]  # enum/bitfield value -> symbol name
    label: str

    @property
    def name(self) -> str:
        return self.register.name


@dataclass(frozen=True, slots=True)
class ModelBlock:
    """Where one model sits: ``address`` holds its ID, ``address + 1`` its L, the points follow."""

    model_id: int
    name: str  # the model's group name, e.g. "DERMeasureAC"
    address: int
    length: int  # L: registers after the ID and L registers


@dataclass(frozen=True, slots=True)
class SunSpecLayout:
    register_map: RegisterMap
    models: tuple[ModelBlock, ...]
    points: dict[str, SunSpecPoint] = field(default_factory=dict)
    sf_values: dict[str, int] = field(default_factory=dict)  # full sunssf point name -> exponent
    counts: dict[str, int] = field(default_factory=dict)  # full count point name (e.g. "DERVoltVar.NCrv") -> count

    def point(self, name: str) -> SunSpecPoint:
        try:
            return self.points[name]
        except KeyError:
            raise KeyError(f"SunSpec layout has no point {name!r}") from None

    def model(self, model_id: int) -> ModelBlock:
        for m in self.models:
            if m.model_id == model_id:
                return m
        raise KeyError(f"SunSpec layout has no model {model_id}")

    def sf_of(self, name: str) -> int:
        """The scale factor exponent of point ``name`` (0 for an unscaled point)."""
        sf = self.point(name).sf
        if sf is None:
            return 0
        if isinstance(sf, int):
            return sf
        return self.sf_values[sf]

    def not_implemented(self, name: str) -> float | int | str:
        """The engineering value whose registers read as SunSpec's "not implemented" for point ``name``."""
        p = self.point(name)
        raw = NOT_IMPLEMENTED_RAW[p.sunspec_type]
        if isinstance(raw, str):
            return raw
        return raw * p.register.scale if p.register.scale != 1.0 else raw

    def fixed_values(self) -> dict[str, float | int | str]:
        """Registers that never change: the marker, every model's ID and L, the SF exponents, group counts."""
        out: dict[str, float | int | str] = {"SunS": SUNS_MARKER}
        for m in self.models:
            out[f"{m.name}.ID"] = m.model_id
            out[f"{m.name}.L"] = m.length
        out.update(self.sf_values)
        out.update(self.counts)
        return out


def _count_key(model_id: int, path: str) -> str:
    return f"{model_id}:{path}"


def build_layout(
    model_ids: tuple[int, ...],
    group_counts: Mapping[int, Mapping[str, int]],
    sf_values: Mapping[str, int],
    base: int = BASE_ADDRESS,
) -> SunSpecLayout:
    """Lay out ``model_ids`` from ``base`` with the SunSpec marker first and the end model last.

    ``group_counts[model_id]`` gives the count of each repeating group by its path (``"Crv"``,
    ``"Crv.Pt"``, ``"Ctl"``); a repeating group without a count is an error. ``sf_values`` gives the
    exponent of each sunssf point by full name (``"DERMeasureAC.W_SF"``); a missing one is 0.
    """
    points: list[SunSpecPoint] = []
    models: list[ModelBlock] = []
    counts: dict[str, int] = {}
    used_sf: dict[str, int] = {}
    address = base
    points.append(_plain("SunS", address, DataType.STRING, 2, model_id=0, label="SunSpec marker"))
    address += 2
    for model_id in model_ids:
        try:
            model_def = ss_device.get_model_def(model_id)
        except Exception as err:  # pysunspec2 raises its own mdef errors or OSError for a missing file
            raise SunSpecLayoutError(f"model {model_id}", model_id, "not a model pysunspec2 ships") from err
        group = model_def[mdef.GROUP]
        mname = group[mdef.NAME]
        start = address
        model_points: list[SunSpecPoint] = []
        address = _lay_group(
            group, mname, model_id, address, group_counts.get(model_id, {}), "", model_points, counts, sf_values
        )
        length = address - start - 2
        if model_points[0].name != f"{mname}.ID" or model_points[1].name != f"{mname}.L":
            raise SunSpecLayoutError(f"model {model_id}", model_points[0].name, "a model must start with ID, L")
        points.extend(model_points)
        models.append(ModelBlock(model_id, mname, start, length))
        for p in model_points:
            if p.sunspec_type == "sunssf":
                used_sf[p.name] = int(sf_values.get(p.name, 0))
    unknown = set(sf_values) - set(used_sf)
    if unknown:
        bad = sorted(unknown)[0]
        raise SunSpecLayoutError(f"sf_values[{bad!r}]", sf_values[bad], "not a sunssf point of the layout")
    points.append(_plain("end.ID", address, DataType.UINT16, 0, model_id=END_MODEL_ID, label="End model ID"))
    points.append(_plain("end.L", address + 1, DataType.UINT16, 0, model_id=END_MODEL_ID, label="End model length"))
    models.append(ModelBlock(END_MODEL_ID, "end", address, 0))
    # scale of every scaled point from its SF, now that all SF values are known
    final: list[SunSpecPoint] = []
    for p in points:
        if isinstance(p.sf, str):
            exp = used_sf.get(p.sf)
            if exp is None:
                raise SunSpecLayoutError(p.name, p.sf, "refers to a scale factor the model does not have")
            p = _with_scale(p, exp)
        elif isinstance(p.sf, int):
            p = _with_scale(p, p.sf)
        final.append(p)
    rmap = RegisterMap(name="sunspec", points=tuple(x.register for x in final))
    return SunSpecLayout(
        register_map=rmap,
        models=tuple(models),
        points={p.name: p for p in final},
        sf_values=used_sf,
        counts=counts,
    )


def _with_scale(p: SunSpecPoint, exp: int) -> SunSpecPoint:
    r = p.register
    reg = RegisterPoint(
        name=r.name, table=r.table, address=r.address, dtype=r.dtype, length=r.length, scale=10.0**exp, unit=r.unit
    )
    return SunSpecPoint(reg, p.model_id, p.sunspec_type, p.sf, p.units, p.access, p.mandatory, p.symbols, p.label)


def _plain(name: str, address: int, dtype: DataType, length: int, *, model_id: int, label: str) -> SunSpecPoint:
    reg = RegisterPoint(name=name, table=Table.HOLDING, address=address, dtype=dtype, length=length)
    stype = "string" if dtype is DataType.STRING else "uint16"
    return SunSpecPoint(reg, model_id, stype, None, "", "R", True, {}, label)


def _lay_group(
    group: Mapping[str, Any],
    prefix: str,
    model_id: int,
    address: int,
    group_counts: Mapping[str, int],
    path: str,
    out: list[SunSpecPoint],
    counts: dict[str, int],
    sf_values: Mapping[str, int],
) -> int:
    """Append the group's points (then its sub-groups, as SunSpec orders them) from ``address``; return the end."""
    model_prefix = prefix.split(".", 1)[0]
    for pdef in group.get(mdef.POINTS, []):
        pname = pdef[mdef.NAME]
        stype = pdef[mdef.TYPE]
        dtype = TYPE_MAP.get(stype)
        if dtype is None:
            raise SunSpecLayoutError(f"{prefix}.{pname}.type", stype, f"supported: {', '.join(sorted(TYPE_MAP))}")
        size = int(pdef.get(mdef.SIZE, 1))
        length = size if dtype is DataType.STRING else 0
        sf = pdef.get(mdef.SF)
        sf_ref: str | int | None
        if sf is None:
            sf_ref = None
        elif isinstance(sf, int) or (isinstance(sf, str) and sf.lstrip("-").isdigit()):
            sf_ref = int(sf)
        else:
            sf_ref = f"{model_prefix}.{sf}"  # SunSpec: SF points live at the model's top level
        full = f"{prefix}.{pname}"
        reg = RegisterPoint(
            name=full,
            table=Table.HOLDING,
            address=address,
            dtype=dtype,
            length=length,
            unit=str(pdef.get(mdef.UNITS, "")),
        )
        if reg.words != size and dtype is not DataType.STRING:
            raise SunSpecLayoutError(f"{full}.size", size, f"{stype} takes {reg.words} registers")
        symbols = {int(s[mdef.VALUE]): str(s[mdef.NAME]) for s in pdef.get(mdef.SYMBOLS, [])}
        out.append(
            SunSpecPoint(
                register=reg,
                model_id=model_id,
                sunspec_type=stype,
                sf=sf_ref,
                units=str(pdef.get(mdef.UNITS, "")),
                access=str(pdef.get(mdef.ACCESS, "R")),
                mandatory=pdef.get(mdef.MANDATORY) == "M",
                symbols=symbols,
                label=str(pdef.get(mdef.LABEL, pname)),
            )
        )
        address += reg.words
    for gdef in group.get(mdef.GROUPS, []):
        gname = gdef[mdef.NAME]
        gpath = f"{path}.{gname}" if path else gname
        count_ref = gdef.get(mdef.COUNT)
        if count_ref is None:
            address = _lay_group(
                gdef, f"{prefix}.{gname}", model_id, address, group_counts, gpath, out, counts, sf_values
            )
            continue
        n = group_counts.get(gpath)
        if n is None or isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 32:
            raise SunSpecLayoutError(f"group_counts[{model_id}][{gpath!r}]", n, "a repeating group needs a count 1..32")
        if isinstance(count_ref, str) and not count_ref.isdigit():
            counts[f"{model_prefix}.{count_ref}"] = n
        for i in range(1, n + 1):
            address = _lay_group(
                gdef, f"{prefix}.{gname}[{i}]", model_id, address, group_counts, gpath, out, counts, sf_values
            )
    return address


def sf_for_range(max_abs: float, dtype: DataType, *, finest: int = -3) -> int:
    """The smallest exponent (finest resolution, not below ``finest``) at which ``max_abs`` fits ``dtype``."""
    limit = {DataType.INT16: 32767, DataType.UINT16: 65535, DataType.INT32: 2**31 - 1, DataType.UINT32: 2**32 - 1}[
        dtype
    ]
    if not math.isfinite(max_abs) or max_abs < 0:
        raise SunSpecLayoutError("max_abs", max_abs, "a finite number >= 0")
    sf = finest
    while max_abs / 10.0**sf > limit:
        sf += 1
    return sf
