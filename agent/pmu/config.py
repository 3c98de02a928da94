"""The ``[[pmus]]`` and ``[pmu_monitoring]`` sections -> typed configuration (docs/pmu-monitoring.md).

agent/config.py reads the site file and hands these sections, with its shared Checker, to
:func:`parse_pmus` and :func:`parse_pmu_monitoring`; every problem is recorded there with its key path,
value and what is allowed. The default limits come from agent/pmu/limits.py, each with its source.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from agent.pmu.limits import FREQUENCY_LIMITS, ROCOF_LIMITS, TIMING_DEFAULTS, VOLTAGE_LIMITS, frequency_limit_hz
from protocols.configcheck import Checker

PMU_KEYS = frozenset({"name", "host", "port", "idcode", "cfg", "udp_port", "stale_after_s", "nominal_v"})
ANGLE_PAIR_KEYS = frozenset({"pmu_a", "pmu_b", "phasor", "limit_deg"})
MONITORING_KEYS = frozenset(
    {"voltage_range", "voltage_lo_pu", "voltage_hi_pu", "frequency_limits", "frequency_lo_hz", "frequency_hi_hz",
     "rocof_category", "rocof_hz_per_s", "time_quality_limit", "buffer_s", "angle_pairs", *TIMING_DEFAULTS}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PmuStreamConfig:
    """One ``[[pmus]]`` entry: a PMU streaming C37.118.2 to the agent (docs/pmu-monitoring.md)."""

    name: str
    host: str
    idcode: int
    port: int = 4712
    cfg: int = 2  # which configuration frame to ask for: CFG-2 or CFG-3
    udp_port: int | None = None  # receive data over UDP on this local port (commands stay on TCP)
    stale_after_s: float = 2.0
    nominal_v: float | None = None  # phase-to-neutral volts for pu; None: voltage limits not checked


@dataclass(frozen=True, slots=True)
class AnglePairConfig:
    """A ``[[pmu_monitoring.angle_pairs]]`` entry: the phase-angle difference of one phasor between two PMUs."""

    pmu_a: str
    pmu_b: str
    phasor: str
    limit_deg: float  # no standard default: configured per pair


@dataclass(frozen=True, slots=True)
class PmuMonitoringConfig:
    """``[pmu_monitoring]``: limits (defaults and their sources in agent/pmu/limits.py) and event timing."""

    # The defaults equal the tables' entries named here (agent/pmu/limits.py gives their sources).
    voltage_lo_pu: float = 0.95  # VOLTAGE_LIMITS["A"]: ANSI C84.1-2016 Range A
    voltage_hi_pu: float = 1.05
    voltage_clause: str = VOLTAGE_LIMITS["A"].source
    frequency_lo_hz: float = -1.5  # deviation from 60 Hz: FREQUENCY_LIMITS["1547-OF1-UF1"], IEEE 1547-2018 UF1/OF1
    frequency_hi_hz: float = 1.2
    frequency_clause: str = FREQUENCY_LIMITS["1547-OF1-UF1"].source
    rocof_hz_per_s: float = 2.0  # ROCOF_LIMITS["II"]: IEEE 1547-2018 ROCOF ride-through, Category II
    rocof_clause: str = ROCOF_LIMITS["II"].source
    time_quality_limit: int = 4
    voltage_pickup_s: float = TIMING_DEFAULTS["voltage_pickup_s"]
    frequency_pickup_s: float = TIMING_DEFAULTS["frequency_pickup_s"]
    rocof_pickup_s: float = TIMING_DEFAULTS["rocof_pickup_s"]
    angle_pickup_s: float = TIMING_DEFAULTS["angle_pickup_s"]
    hold_off_s: float = TIMING_DEFAULTS["hold_off_s"]
    window_before_s: float = TIMING_DEFAULTS["window_before_s"]
    window_after_s: float = TIMING_DEFAULTS["window_after_s"]
    buffer_s: float = 60.0  # full-rate history kept per PMU
    angle_pairs: tuple[AnglePairConfig, ...] = ()


def _pmu(c: Checker, raw: Mapping[str, Any], prefix: str) -> PmuStreamConfig | None:
    start = len(c.issues)
    c.unknown(raw, prefix, PMU_KEYS)
    name = c.get(raw, prefix, "name", "string")
    host = c.get(raw, prefix, "host", "string")
    port = c.get(raw, prefix, "port", "integer", 4712, lo=1, hi=65535)
    idcode = c.get(raw, prefix, "idcode", "integer", lo=0, hi=65535)
    cfg = c.get(raw, prefix, "cfg", "integer", 2, choices=(2, 3))
    udp_port = c.get(raw, prefix, "udp_port", "integer", None, lo=1, hi=65535)
    stale = c.get(raw, prefix, "stale_after_s", "number", 2.0, lo=0.05, hi=3600)
    nominal_v = c.get(raw, prefix, "nominal_v", "number", None, lo=1, hi=1_000_000)
    if len(c.issues) > start:
        return None
    return PmuStreamConfig(name=name, host=host, idcode=idcode, port=port, cfg=cfg, udp_port=udp_port,
                           stale_after_s=float(stale), nominal_v=None if nominal_v is None else float(nominal_v))  # fmt: skip


@dataclass(frozen=True, slots=True)
class PmuEntries:
    """What :func:`parse_pmus` found: the usable entries, and every name an entry gives.

    ``names`` holds also the names of entries with errors of their own, so that a reference to one (an angle
    pair) is not reported as a second, false error: fixing the entry fixes both.
    """

    pmus: dict[str, PmuStreamConfig]
    names: frozenset[str]


def parse_pmus(c: Checker, doc: Mapping[str, Any], taken: Set[str]) -> PmuEntries:
    """The ``[[pmus]]`` array of the site file ``doc``; a name must be unique and not in ``taken`` (devices)."""
    pmus: dict[str, PmuStreamConfig] = {}
    names: set[str] = set()
    for prefix, t in c.tables(doc, "pmus"):
        if isinstance(t.get("name"), str) and t["name"]:
            names.add(t["name"])
        pmu = _pmu(c, t, prefix)
        if pmu is None:
            continue
        if pmu.name in pmus or pmu.name in taken:
            c.fail(f"{prefix}.name", pmu.name, "must be unique among devices and PMUs")
            continue
        pmus[pmu.name] = pmu
    return PmuEntries(pmus, frozenset(names))


def _angle_pairs(c: Checker, raw: Mapping[str, Any], p: str, pmu_names: Set[str]) -> list[AnglePairConfig]:
    pairs = []
    for prefix, t in c.tables(raw, "angle_pairs", p):
        start = len(c.issues)
        c.unknown(t, prefix, ANGLE_PAIR_KEYS)
        a = c.get(t, prefix, "pmu_a", "string")
        b = c.get(t, prefix, "pmu_b", "string")
        phasor = c.get(t, prefix, "phasor", "string")
        limit = c.get(t, prefix, "limit_deg", "number", lo=0.1, hi=180)
        for key, name in (("pmu_a", a), ("pmu_b", b)):
            # a [[pmus]] name, or "<name>/<station>" for one PMU block of a multi-PMU (PDC) stream
            if name is not None and name not in pmu_names and name.partition("/")[0] not in pmu_names:
                c.fail(f"{prefix}.{key}", name, "must name a [[pmus]] entry (or <entry>/<station> of a PDC stream): "
                       + (", ".join(sorted(pmu_names)) or "(none)"))  # fmt: skip
        if a is not None and a == b:
            c.fail(f"{prefix}.pmu_b", b, "must be another PMU than pmu_a")
        if len(c.issues) == start:
            pairs.append(AnglePairConfig(a, b, phasor, float(limit)))
    return pairs


def parse_pmu_monitoring(c: Checker, raw: Mapping[str, Any], pmu_names: Set[str]) -> PmuMonitoringConfig:
    """``[pmu_monitoring]``; angle pairs must name one of ``pmu_names`` (:attr:`PmuEntries.names`)."""
    p = "pmu_monitoring"
    c.unknown(raw, p, MONITORING_KEYS)
    vrange = c.get(raw, p, "voltage_range", "string", "A", choices=tuple(VOLTAGE_LIMITS))
    vlim = VOLTAGE_LIMITS[vrange or "A"]
    vclause = vlim.source
    vlo = c.get(raw, p, "voltage_lo_pu", "number", vlim.lo, lo=0.5, hi=1.0)
    vhi = c.get(raw, p, "voltage_hi_pu", "number", vlim.hi, lo=1.0, hi=1.5)
    if "voltage_lo_pu" in raw or "voltage_hi_pu" in raw:
        vclause = "configured (voltage_lo_pu/voltage_hi_pu)"
    fname = c.get(raw, p, "frequency_limits", "string", "1547-OF1-UF1", choices=tuple(FREQUENCY_LIMITS))
    # Nominal frequency comes from each PMU's configuration frame; the table is for 60 Hz (see limits.py).
    flo, fhi = frequency_limit_hz(fname or "1547-OF1-UF1", 60)
    fclause = FREQUENCY_LIMITS[fname or "1547-OF1-UF1"].source
    flo = c.get(raw, p, "frequency_lo_hz", "number", flo, lo=-10, hi=-0.001)
    fhi = c.get(raw, p, "frequency_hi_hz", "number", fhi, lo=0.001, hi=10)
    if "frequency_lo_hz" in raw or "frequency_hi_hz" in raw:
        fclause = "configured (frequency_lo_hz/frequency_hi_hz)"
    cat = c.get(raw, p, "rocof_category", "string", "II", choices=tuple(ROCOF_LIMITS))
    rlim = ROCOF_LIMITS[cat or "II"]
    rclause = rlim.source
    rocof = c.get(raw, p, "rocof_hz_per_s", "number", rlim.hi, lo=0.01, hi=100)
    if "rocof_hz_per_s" in raw:
        rclause = "configured (rocof_hz_per_s)"
    tq = c.get(raw, p, "time_quality_limit", "integer", 4, lo=1, hi=7)
    times = {k: c.get(raw, p, k, "number", v, lo=0, hi=600) for k, v in TIMING_DEFAULTS.items()}
    buffer_s = c.get(raw, p, "buffer_s", "number", 60.0, lo=1, hi=3600)
    if vlo is not None and vhi is not None and vlo >= vhi:
        c.fail(f"{p}.voltage_lo_pu", vlo, f"must be below voltage_hi_pu ({vhi})")
    wb, wa = times["window_before_s"], times["window_after_s"]
    if buffer_s is not None and wb is not None and wa is not None and wb + wa + 1 > buffer_s:
        c.fail(f"{p}.buffer_s", buffer_s, f"must hold the event window: at least window_before_s + window_after_s + 1 "
               f"({wb + wa + 1:g} s)")  # fmt: skip
    pairs = _angle_pairs(c, raw, p, pmu_names)
    if any(v is None for v in (vlo, vhi, flo, fhi, rocof, tq, buffer_s, *times.values())):
        return PmuMonitoringConfig()  # issues recorded; the caller raises
    return PmuMonitoringConfig(
        voltage_lo_pu=float(vlo), voltage_hi_pu=float(vhi), voltage_clause=vclause,
        frequency_lo_hz=float(flo), frequency_hi_hz=float(fhi), frequency_clause=fclause,
        rocof_hz_per_s=float(rocof), rocof_clause=rclause, time_quality_limit=tq,
        **{k: float(v) for k, v in times.items()}, buffer_s=float(buffer_s), angle_pairs=tuple(pairs),
    )  # fmt: skip
