"""SunSpec register layouts from pysunspec2's model definitions: model -> RegisterPoints.

pysunspec2 ships the SunSpec Alliance's JSON model definitions (``sunspec2/models/json/model_<id>.json``);
this module lays them out in registers the way a SunSpec device does (SunSpec Information Model
Specification, "Device Modbus map"):

    base+0  "SunS" marker (2 registers: 0x5375 0x6E53)
    base+2  model ID, L (length of the model's points in registers), the points ... (one block per model)
    ...     end model: ID 0xFFFF, L 0

The base is 40000, 0 or 50000 (ibid., "SunSpec base register"). Each point becomes a
:class:`protocols.modbus.registermap.RegisterPoint` named ``<model group name>.<point>``, e.g.
``DERMeasureAC.W``; points of a fixed group carry its name (``DERCtlAC.PFWInj.PF``) and points of a repeating
group its 1-based index (``DERVoltVar.Crv[1].Pt[2].V``). A repeating group's count is given by the device in a
count point of the model (``NCrv``, ``NPt``, ``NCtl``), or, in legacy models whose definition says count 0,
follows from the model's L.

Scale factors: SunSpec stores scaled points as raw integers and their exponent in a ``sunssf`` point
(value = raw x 10^SF). :func:`lay_model` gives raw registers (scale 1) and each point's SF reference; a client
reads the SF with the data and scales with it (:mod:`protocols.sunspec.values`). :func:`build_layout` lays out
a whole device with fixed SFs instead (a simulated device serves engineering values through its map).

pysunspec2 is imported when a definition is first needed: a site without SunSpec devices does not pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from protocols.modbus.registermap import DataType, PointKind, RegisterMap, RegisterPoint, Table

# SunSpec Information Model Specification, "SunSpec base register": the device map starts at one of these,
# tried in this order (the order pysunspec2's client scans them: 40000 is by far the most common).
BASE_ADDRESS = 40000
BASE_ADDRESSES = (40000, 0, 50000)
SUNS_MARKER = "SunS"
SUNS_WORDS = (0x5375, 0x6E53)  # "Su", "nS"
END_MODEL_ID = 0xFFFF
REGISTER_SPACE = 0x10000  # addresses 0..65535
TRAILING_SLACK = 8  # registers a definition may lay out past a device's L before the layout is refused outright

# The keys of pysunspec2's model definitions (sunspec2/mdef.py), spelled here so this module needs no import
# of pysunspec2 until a definition is read.
_GROUP, _GROUPS, _POINTS, _NAME, _TYPE, _SIZE, _SF = "group", "groups", "points", "name", "type", "size", "sf"
_UNITS, _ACCESS, _MANDATORY, _SYMBOLS = "units", "access", "mandatory", "symbols"
_VALUE, _LABEL, _COUNT = "value", "label", "count"


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

# Raw register value meaning "not implemented" per SunSpec type (ibid., "Unimplemented registers"). A float
# reads NaN (0x7FC00000) when not implemented; a string reads all NUL (empty text).
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
SF_NOT_IMPLEMENTED = -0x8000
# Energy totals (accumulators, 701's uint64 TotWh*, the float meters' totals) in these units are metered energy:
# stored as settlement-grade (agent: Stream.ENERGY). A uint16/uint32 in Wh is a rating (802 WHRtg), not a total.
ENERGY_UNITS = frozenset({"Wh", "VAh", "varh", "Varh", "VArh"})
ENERGY_TYPES = frozenset({"acc32", "acc64", "uint64", "float32"})


def to_raw(value: float, sf: int) -> int:
    """Engineering value -> the raw integer a SunSpec register holds with scale factor ``sf``: value / 10^sf."""
    return round(value / 10.0**sf) if sf >= 0 else round(value * 10.0**-sf)


def from_raw(raw: int, sf: int) -> float:
    """Raw register integer and its scale factor -> engineering value: raw x 10^sf."""
    return raw * 10.0**sf if sf >= 0 else raw / 10.0**-sf


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


@dataclass(frozen=True, slots=True)
class SunSpecPoint:
    """One SunSpec point as laid out: its register point and the definition it came from."""

    register: RegisterPoint
    model_id: int
    sunspec_type: str
    sf: str | int | None  # the full name of its sunssf point, a fixed exponent, or None (unscaled)
    units: str
    access: str  # "R" or "RW" as the SunSpec definition says
    mandatory: bool
    symbols: dict[int, str]  # enum/bitfield value -> symbol name
    label: str

    @property
    def name(self) -> str:
        return self.register.name

    @property
    def writable(self) -> bool:
        return self.access == "RW"


@dataclass(frozen=True, slots=True)
class ModelBlock:
    """Where one model sits: ``address`` holds its ID, ``address + 1`` its L, the points follow."""

    model_id: int
    name: str  # the model's group name, e.g. "DERMeasureAC" ("DERMeasureAC[2]" for a second instance)
    address: int
    length: int  # L: registers after the ID and L registers

    @property
    def end(self) -> int:
        """One past the model's last register."""
        return self.address + 2 + self.length


@dataclass(frozen=True, slots=True)
class SunSpecLayout:
    """A device's SunSpec map: its models in address order and every point by name.

    ``sf_values`` are the fixed SF exponents of a layout built with :func:`build_layout` (a simulated device);
    a discovered layout has none (its SFs are read from the device with the data).
    """

    register_map: RegisterMap
    models: tuple[ModelBlock, ...]
    points: dict[str, SunSpecPoint] = field(default_factory=dict)
    sf_values: dict[str, int] = field(default_factory=dict)  # full sunssf point name -> exponent
    counts: dict[str, int] = field(default_factory=dict)  # full count point name (e.g. "DERVoltVar.NCrv") -> count
    base: int = BASE_ADDRESS

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

    def model_of(self, name: str) -> ModelBlock:
        """The model instance point ``name`` belongs to."""
        address = self.point(name).register.address
        for m in self.models:
            if m.address <= address < m.end:
                return m
        raise KeyError(f"point {name!r} lies in no model of the layout")

    def sf_of(self, name: str) -> int:
        """The fixed scale factor exponent of point ``name`` (0 for an unscaled point)."""
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


# --- definitions ----------------------------------------------------------------------------------------


def model_definition(model_id: int) -> Mapping[str, Any]:
    """pysunspec2's definition of ``model_id``; SunSpecLayoutError when it ships none."""
    from sunspec2 import device as ss_device  # lazy: about 1 MB, only for sites with SunSpec devices

    try:
        return ss_device.get_model_def(model_id)
    except Exception as err:  # pysunspec2 raises its own ModelDefinitionError, or OSError for a bad file
        raise SunSpecLayoutError(f"model {model_id}", model_id, "not a model pysunspec2 ships") from err


def known_model(model_id: int) -> bool:
    """True if pysunspec2 ships a definition of ``model_id``."""
    try:
        model_definition(model_id)
    except SunSpecLayoutError:
        return False
    return True


def shipped_models() -> tuple[int, ...]:
    """The ids of every model pysunspec2 ships a JSON definition of, ascending."""
    import os

    from sunspec2 import device as ss_device

    folder = os.path.join(ss_device.models_dir, "json")
    ids = []
    for name in os.listdir(folder):
        stem = name.removeprefix("model_").removesuffix(".json")
        if name.startswith("model_") and name.endswith(".json") and stem.isdigit():
            ids.append(int(stem))
    return tuple(sorted(ids))


def ranges_text(ids: tuple[int, ...]) -> str:
    """``1-19, 101-103, 701-715``: ascending ids with runs folded, for messages."""
    parts: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ", ".join(parts)


def model_name(model_id: int) -> str:
    """The model's group name (``DERMeasureAC`` for 701, ``common`` for 1)."""
    return str(model_definition(model_id)[_GROUP][_NAME])


def count_points(model_id: int) -> dict[str, str]:
    """Repeating group path (``"Crv"``, ``"Crv.Pt"``) -> the name of the model point holding its count.

    Groups whose definition gives a constant count are not listed (legacy models: count 0 means "as many as
    the model's L holds").
    """
    out: dict[str, str] = {}

    def walk(group: Mapping[str, Any], path: str) -> None:
        for g in group.get(_GROUPS, []):
            gpath = f"{path}.{g[_NAME]}" if path else str(g[_NAME])
            count = g.get(_COUNT)
            if isinstance(count, str) and not count.isdigit():
                out[gpath] = count
            walk(g, gpath)

    walk(model_definition(model_id)[_GROUP], "")
    return out


def _legacy_groups(group: Mapping[str, Any]) -> list[str]:
    """Top-level repeating groups whose definition count is 0: their count follows from L."""
    return [str(g[_NAME]) for g in group.get(_GROUPS, []) if str(g.get(_COUNT, "")) == "0"]


# --- laying out -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """One model laid out from its address: the block (ID, L) and its points, ID and L first."""

    block: ModelBlock
    points: tuple[SunSpecPoint, ...]
    counts: dict[str, int]  # full count point name -> count used


def lay_model(
    model_id: int,
    address: int,
    counts: Mapping[str, int] | None = None,
    *,
    length: int | None = None,
    name: str | None = None,
) -> ModelLayout:
    """Lay out one model from ``address`` (its ID register) with raw registers (scale 1).

    ``counts`` gives each repeating group's count by its path (``"Crv"``, ``"Crv.Pt"``, ``"Ctl"``), as the device's
    count points say; a group counted by a point but absent from ``counts`` is an error. A legacy group (definition
    count 0) takes its count from ``length`` (the device's L) when ``counts`` does not give it. ``length``, when
    given, also bounds the layout: counts that would lay the model well past it are an error (a device's counts
    cannot make the layout unbounded); a layout a few registers longer than L comes back as it is, for the caller
    to judge. ``name`` replaces the model's group name as the prefix of every point.
    """
    definition = model_definition(model_id)
    group = definition[_GROUP]
    prefix = name or str(group[_NAME])
    counts = dict(counts or {})
    if length is not None:
        for gname in _legacy_groups(group):
            if gname in counts:
                continue
            fixed = _lay(group, prefix, model_id, address, {**counts, gname: 0}, None)
            one = _lay(group, prefix, model_id, address, {**counts, gname: 1}, None)
            fixed_len, group_len = fixed[1] - address - 2, one[1] - fixed[1]
            if group_len <= 0 or length < fixed_len or (length - fixed_len) % group_len:
                raise SunSpecLayoutError(
                    f"model {model_id}.L", length,
                    f"its repeating group {gname!r} ({group_len} registers) does not fit L after the "
                    f"{fixed_len} registers of fixed points",
                )  # fmt: skip
            counts[gname] = (length - fixed_len) // group_len
    # counts read from a device must not lay out an unbounded model: past its L (and a few trailing pads a device
    # may leave out, see protocols.sunspec.discovery) is an error
    limit = min(address + 2 + length + TRAILING_SLACK, REGISTER_SPACE) if length is not None else REGISTER_SPACE
    points, end, used = _lay(group, prefix, model_id, address, counts, limit)
    if len(points) < 2 or points[0].name != f"{prefix}.ID" or points[1].name != f"{prefix}.L":
        raise SunSpecLayoutError(
            f"model {model_id}", points[0].name if points else None, "a model must start with ID, L"
        )
    return ModelLayout(ModelBlock(model_id, prefix, address, end - address - 2), tuple(points), used)


def _lay(
    group: Mapping[str, Any],
    prefix: str,
    model_id: int,
    address: int,
    counts: Mapping[str, int],
    limit: int | None,
) -> tuple[list[SunSpecPoint], int, dict[str, int]]:
    out: list[SunSpecPoint] = []
    used: dict[str, int] = {}
    top_sf = {str(p[_NAME]) for p in group.get(_POINTS, []) if p[_TYPE] == "sunssf"}
    end = _lay_group(group, prefix, prefix, model_id, address, counts, "", out, used, top_sf, limit)
    return out, end, used


def _sf_ref(sf: Any, group: Mapping[str, Any], prefix: str, model_prefix: str, top_sf: set[str]) -> str | int | None:
    """A point's ``sf``: None, a fixed exponent, or the full name of its sunssf point (the group's own first, then
    the model's top level, where SunSpec puts them; pysunspec2 looks them up in the same order)."""
    if sf is None:
        return None
    if isinstance(sf, int) or (isinstance(sf, str) and sf.lstrip("-").isdigit()):
        return int(sf)
    own = {str(p[_NAME]) for p in group.get(_POINTS, []) if p[_TYPE] == "sunssf"}
    if sf in own:
        return f"{prefix}.{sf}"
    if sf in top_sf:
        return f"{model_prefix}.{sf}"
    raise SunSpecLayoutError(f"{prefix}.sf", sf, "refers to a scale factor the model does not have")


def _lay_group(
    group: Mapping[str, Any],
    prefix: str,
    model_prefix: str,
    model_id: int,
    address: int,
    counts: Mapping[str, int],
    path: str,
    out: list[SunSpecPoint],
    used: dict[str, int],
    top_sf: set[str],
    limit: int | None,
) -> int:
    """Append the group's points (then its sub-groups, as SunSpec orders them) from ``address``; return the end."""
    for pdef in group.get(_POINTS, []):
        pname = pdef[_NAME]
        stype = pdef[_TYPE]
        dtype = TYPE_MAP.get(stype)
        full = f"{prefix}.{pname}"
        if dtype is None:
            raise SunSpecLayoutError(f"{full}.type", stype, f"supported: {', '.join(sorted(TYPE_MAP))}")
        size = int(pdef.get(_SIZE, 1))
        units = str(pdef.get(_UNITS, ""))
        kind = PointKind.ENERGY if stype in ENERGY_TYPES and units in ENERGY_UNITS else PointKind.TELEMETRY
        reg = RegisterPoint(
            name=full,
            table=Table.HOLDING,
            address=address,
            dtype=dtype,
            length=size if dtype is DataType.STRING else 0,
            unit=units,
            kind=kind,
        )
        if reg.words != size:
            raise SunSpecLayoutError(f"{full}.size", size, f"{stype} takes {reg.words} registers")
        symbols = _symbols(pdef)
        out.append(
            SunSpecPoint(
                register=reg,
                model_id=model_id,
                sunspec_type=stype,
                sf=_sf_ref(pdef.get(_SF), group, prefix, model_prefix, top_sf),
                units=units,
                access=str(pdef.get(_ACCESS, "R")),
                mandatory=pdef.get(_MANDATORY) == "M",
                symbols=symbols,
                label=str(pdef.get(_LABEL, pname)),
            )
        )
        address += reg.words
        if limit is not None and address > limit:
            raise SunSpecLayoutError(f"{full}", address - 1, "lies well past the model's end: L is too short")
    for gdef in group.get(_GROUPS, []):
        gname = gdef[_NAME]
        gpath = f"{path}.{gname}" if path else gname
        count_ref = gdef.get(_COUNT)
        if count_ref is None:  # a fixed sub-group: once
            address = _lay_group(gdef, f"{prefix}.{gname}", model_prefix, model_id, address, counts, gpath, out,
                                 used, top_sf, limit)  # fmt: skip
            continue
        n = counts.get(gpath)
        fixed = isinstance(count_ref, int) or (isinstance(count_ref, str) and count_ref.isdigit())
        if fixed and int(count_ref) > 0 and n is None:
            n = int(count_ref)
        if n is None or isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise SunSpecLayoutError(f"{model_prefix} group {gpath}", n, "a repeating group needs its count (>= 0)")
        if isinstance(count_ref, str) and not count_ref.isdigit():
            used[f"{model_prefix}.{count_ref}"] = n
        for i in range(1, n + 1):
            address = _lay_group(gdef, f"{prefix}.{gname}[{i}]", model_prefix, model_id, address, counts, gpath, out,
                                 used, top_sf, limit)  # fmt: skip
    return address


# One symbols table per point definition, shared by every instance of the point (repeating groups, devices):
# id(definition) -> (the definition, kept so the id stays its own; the table). The tables are never changed.
_SYMBOL_TABLES: dict[int, tuple[Mapping[str, Any], dict[int, str]]] = {}
_NO_SYMBOLS: dict[int, str] = {}


def _symbols(pdef: Mapping[str, Any]) -> dict[int, str]:
    if not pdef.get(_SYMBOLS):
        return _NO_SYMBOLS
    cached = _SYMBOL_TABLES.get(id(pdef))
    if cached is None or cached[0] is not pdef:
        cached = (pdef, {int(s[_VALUE]): str(s[_NAME]) for s in pdef[_SYMBOLS]})
        _SYMBOL_TABLES[id(pdef)] = cached
    return cached[1]


def _marker() -> SunSpecPoint:
    reg = RegisterPoint(name="SunS", table=Table.HOLDING, address=0, dtype=DataType.STRING, length=2)
    return SunSpecPoint(reg, 0, "string", None, "", "R", True, {}, "SunSpec marker")


def _end(address: int) -> tuple[SunSpecPoint, SunSpecPoint]:
    def plain(name: str, at: int, label: str) -> SunSpecPoint:
        reg = RegisterPoint(name=name, table=Table.HOLDING, address=at, dtype=DataType.UINT16)
        return SunSpecPoint(reg, END_MODEL_ID, "uint16", None, "", "R", True, {}, label)

    return plain("end.ID", address, "End model ID"), plain("end.L", address + 1, "End model length")


def layout_of(models: list[ModelLayout], base: int, *, end_address: int | None = None) -> SunSpecLayout:
    """A device layout from its laid-out models (raw registers), with the marker and the end model."""
    points: list[SunSpecPoint] = [_at(_marker(), base)]
    blocks: list[ModelBlock] = []
    counts: dict[str, int] = {}
    for m in models:
        points.extend(m.points)
        blocks.append(m.block)
        counts.update(m.counts)
    end = end_address if end_address is not None else (blocks[-1].end if blocks else base + 2)
    points.extend(_end(end))
    blocks.append(ModelBlock(END_MODEL_ID, "end", end, 0))
    by_name: dict[str, SunSpecPoint] = {}
    for p in points:
        if p.name in by_name:
            raise SunSpecLayoutError(p.name, p.register.address, "two points of the layout have this name")
        by_name[p.name] = p
    rmap = RegisterMap(name="sunspec", points=tuple(p.register for p in points))
    return SunSpecLayout(register_map=rmap, models=tuple(blocks), points=by_name, counts=counts, base=base)


def _at(p: SunSpecPoint, address: int) -> SunSpecPoint:
    return replace(p, register=replace(p.register, address=address))


def build_layout(
    model_ids: tuple[int, ...],
    group_counts: Mapping[int, Mapping[str, int]],
    sf_values: Mapping[str, int],
    base: int = BASE_ADDRESS,
) -> SunSpecLayout:
    """Lay out ``model_ids`` from ``base`` with fixed scale factors: a device's map, as a simulator serves it.

    ``group_counts[model_id]`` gives the count of each repeating group by its path (``"Crv"``, ``"Crv.Pt"``,
    ``"Ctl"``), 1..32; a repeating group without a count is an error. ``sf_values`` gives the exponent of each
    sunssf point by full name (``"DERMeasureAC.W_SF"``); a missing one is 0. Each scaled point's register then
    carries ``scale`` = 10^SF, so ``encode_point``/``decode_point`` convert engineering values.
    """
    if base not in BASE_ADDRESSES:
        raise SunSpecLayoutError("base", base, f"a SunSpec base address: {', '.join(map(str, BASE_ADDRESSES))}")
    models: list[ModelLayout] = []
    address = base + 2
    for model_id in model_ids:
        counts = group_counts.get(model_id, {})
        for gpath in count_points(model_id):
            n = counts.get(gpath)
            if n is None or isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 32:
                raise SunSpecLayoutError(
                    f"group_counts[{model_id}][{gpath!r}]", n, "a repeating group needs a count 1..32"
                )
        laid = lay_model(model_id, address, counts)
        models.append(laid)
        address = laid.block.end
    layout = layout_of(models, base)
    used_sf = {name: int(sf_values.get(name, 0)) for name, p in layout.points.items() if p.sunspec_type == "sunssf"}
    unknown = set(sf_values) - set(used_sf)
    if unknown:
        bad = sorted(unknown)[0]
        raise SunSpecLayoutError(f"sf_values[{bad!r}]", sf_values[bad], "not a sunssf point of the layout")
    final: dict[str, SunSpecPoint] = {}
    for name, p in layout.points.items():
        exp = used_sf[p.sf] if isinstance(p.sf, str) else p.sf
        if exp is not None:
            p = replace(p, register=replace(p.register, scale=10.0**exp))
        final[name] = p
    rmap = RegisterMap(name="sunspec", points=tuple(p.register for p in final.values()))
    return replace(layout, register_map=rmap, points=final, sf_values=used_sf)
