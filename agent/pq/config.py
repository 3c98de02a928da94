"""The ``[[waveforms]]`` section -> typed configuration (docs/pq-service.md).

agent/config.py reads the site file and hands this section, with its shared Checker, to
:func:`parse_waveforms`; every problem is recorded there with its key path, value and what is allowed.

Checking it never imports the PQ science (numpy, scipy: about 0.6 s and 12 MB of resident memory): the event
thresholds (agent/pq/eventconfig.py) and the standards' names (agent/pq/standards.py) live apart from it, and
the science runs in the PQ worker's own process (agent/pq/worker.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocols.configcheck import MISSING, Checker

if TYPE_CHECKING:
    from agent.pq.eventconfig import EventConfig

WAVEFORM_CHANNELS_DEFAULT = ("va", "vb", "vc")
LAMP_FOR_NOMINAL = {50: 230, 60: 120}  # lamp_v default: the 230 V lamp on 50 Hz systems, the 120 V lamp on 60 Hz
EVENT_KEYS = ("dip_threshold_pct", "swell_threshold_pct", "interruption_threshold_pct", "hysteresis_pct")
WAVEFORM_KEYS = frozenset({"name", "host", "port", "nominal_hz", "lamp_v", "udin_v", "channels", "report_interval_s",
                           "compliance", "bus_kv", *EVENT_KEYS})  # fmt: skip
#: EN 50160:2010 clause 3 definitions: low voltage Un <= 1 kV, medium voltage 1 kV < Un <= 36 kV, Un line to
#: line. Udin (phase to neutral) x sqrt 3 gives Un.
EN50160_LV_MAX_V = 1000.0
EN50160_MV_MAX_V = 36000.0


def default_compliance(nominal_hz: int, udin_v: float) -> tuple[str, ...]:
    """The standards a ``[[waveforms]]`` stream is assessed against when ``compliance`` is not given.

    50 Hz: EN 50160 (the European supply standard) for its voltage level, LV or MV from Udin x sqrt 3; above
    36 kV (EN 50160 clause 6, high voltage, is not assessed) and at 60 Hz: IEEE 519, which applies at any
    bus voltage (its Table 1 row from ``bus_kv``).
    """
    un_v = udin_v * 3**0.5
    if nominal_hz == 50 and un_v <= EN50160_LV_MAX_V:
        return ("en50160-lv",)
    if nominal_hz == 50 and un_v <= EN50160_MV_MAX_V:
        return ("en50160-mv",)
    return ("ieee519",)


@dataclass(frozen=True, slots=True)
class WaveformStreamConfig:
    """One ``[[waveforms]]`` entry: a wave stream (bench or recorder) measured for power quality."""

    name: str
    host: str
    port: int
    nominal_hz: int  # 50 or 60
    lamp_v: int  # flickermeter lamp: 230 or 120
    events: EventConfig  # udin_v (declared phase-neutral voltage) and the dip/swell/interruption thresholds
    channels: tuple[str, ...] = WAVEFORM_CHANNELS_DEFAULT  # phase-neutral voltages, in phase order a, b, c
    report_interval_s: float = 3.0  # the 150/180-cycle and 10-s values: every one (3) or one per interval
    compliance: tuple[str, ...] = ()  # standards assessed continuously (the loader's default: default_compliance)
    bus_kv: float | None = None  # IEEE 519 bus voltage, line to line [kV]; None: Udin x sqrt 3

    @property
    def udin_v(self) -> float:
        return self.events.udin_v


def _waveform(c: Checker, raw: Mapping[str, Any], prefix: str) -> WaveformStreamConfig | None:
    start = len(c.issues)
    c.unknown(raw, prefix, WAVEFORM_KEYS)
    name = c.get(raw, prefix, "name", "string")
    host = c.get(raw, prefix, "host", "string")
    port = c.get(raw, prefix, "port", "integer", lo=1, hi=65535)
    nominal = c.get(raw, prefix, "nominal_hz", "integer", choices=(50, 60))
    lamp = c.get(raw, prefix, "lamp_v", "integer", LAMP_FOR_NOMINAL.get(nominal, 230), choices=(230, 120))
    udin = c.get(raw, prefix, "udin_v", "number", lo=1, hi=1_000_000)
    interval = c.get(raw, prefix, "report_interval_s", "number", 3.0, lo=3, hi=3600)
    channels = raw.get("channels", list(WAVEFORM_CHANNELS_DEFAULT))
    if (not isinstance(channels, list) or not 1 <= len(channels) <= 3 or len(set(map(str, channels))) != len(channels)
            or not all(isinstance(ch, str) and ch for ch in channels)):  # fmt: skip
        c.fail(f"{prefix}.channels", channels, "must be a list of 1 to 3 distinct channel names of the stream "
               "(phase-neutral voltages in phase order a, b, c; unbalance needs 3), e.g. [\"va\", \"vb\", \"vc\"]")  # fmt: skip
    thresholds = {k: c.get(raw, prefix, k, "number", lo=0, hi=200) for k in EVENT_KEYS if k in raw}
    events = None
    # numpy-free (the agent's own process never loads the PQ chain's numpy and scipy: agent/pq/worker.py)
    from agent.pq.eventconfig import EventConfig, EventConfigError
    from agent.pq.standards import STANDARDS

    standards = _waveform_compliance(c, raw, prefix, STANDARDS, nominal, udin)
    bus_kv = c.get(raw, prefix, "bus_kv", "number", None, lo=0.001, hi=1000)
    if bus_kv is not None and standards is not None and "ieee519" not in standards:
        c.fail(f"{prefix}.bus_kv", bus_kv, f"only used by ieee519, which compliance {list(standards)} does not "
               "hold: add \"ieee519\" to compliance or remove bus_kv")  # fmt: skip

    if udin is not None and None not in thresholds.values():
        try:
            events = EventConfig(udin_v=float(udin), **{k: float(v) for k, v in thresholds.items()})
        except EventConfigError as err:  # the cross-checks (thresholds against hysteresis): "key=value: allowed ..."
            key, _, rest = str(err).partition("=")
            value, _, allowed = rest.partition(": allowed ")
            c.fail(f"{prefix}.{key}", raw.get(key, value), allowed or str(err))
    if len(c.issues) > start or events is None:
        return None
    return WaveformStreamConfig(name=name, host=host, port=port, nominal_hz=nominal, lamp_v=lamp, events=events,
                                channels=tuple(channels), report_interval_s=float(interval), compliance=standards,
                                bus_kv=None if bus_kv is None else float(bus_kv))  # fmt: skip


def _waveform_compliance(c: Checker, raw: Mapping[str, Any], prefix: str, allowed: tuple[str, ...],
                         nominal: int | None, udin: float | None) -> tuple[str, ...] | None:  # fmt: skip
    """``compliance``: a list of distinct standards (may be empty: none); absent, :func:`default_compliance`."""
    key = f"{prefix}.compliance"
    value = raw.get("compliance", MISSING)
    if value is MISSING:
        return default_compliance(nominal, udin) if nominal is not None and udin is not None else None
    what = "a list of distinct standards, each one of " + ", ".join(repr(a) for a in allowed) + " (or [] for none)"
    if not isinstance(value, list):
        c.fail(key, value, f"must be {what}")
        return None
    bad = [v for v in value if v not in allowed]
    if bad:
        c.fail(key, value, f"{bad[0]!r} is not a standard: must be {what}")
        return None
    if len(set(value)) != len(value):
        c.fail(key, value, f"names a standard twice: must be {what}")
        return None
    return tuple(value)


def parse_waveforms(c: Checker, doc: Mapping[str, Any], taken: Set[str]) -> dict[str, WaveformStreamConfig]:
    """The ``[[waveforms]]`` array of the site file ``doc``; a name must not be in ``taken`` (devices, PMUs)."""
    waveforms: dict[str, WaveformStreamConfig] = {}
    for prefix, t in c.tables(doc, "waveforms"):
        wf = _waveform(c, t, prefix)
        if wf is None:
            continue
        if wf.name in waveforms or wf.name in taken:
            c.fail(f"{prefix}.name", wf.name, "must be unique among devices, PMUs and waveform streams")
            continue
        waveforms[wf.name] = wf
    return waveforms
