"""PMU streams into the agent: one :class:`PdcClient` per configured PMU feeding :class:`PmuIngest`.

A stream is a PMU or a PDC: every PMU block of its configuration (NUM_PMU, C37.118.2-2011 6.4 Table 8)
is monitored as a PMU of its own (:class:`PmuStream`). With one block it keeps the ``[[pmus]]`` name;
with several, each is ``<name>/<station>`` (see :func:`block_names`).

Per data frame and block: the full-rate ring buffer keeps the block's phasor, FREQ and DFREQ words packed
in place (turned into channels when a window is read), the monitors run, and once per second (the first
frame of each second) the snapshot and the store's write queue get the PMU's values as Readings. The PMUs' sockets are read in
batches (every READ_BATCH_S, one read per PMU: docs/pmu-monitoring.md "Performance").
Triggers wait in :class:`~agent.pmu.monitor.EventWindows` for their after-window, then go to the store
through the agent's event spool (:class:`~agent.events.EventSpool`: in order, retried while the store
fails) from one task (:meth:`PmuMonitoring.run_events`), which also ticks the stale-stream monitors. Frames arrive in PdcClient callbacks (synchronous, on the event loop), so
nothing in the per-frame path awaits or blocks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from agent.events import EventSpool, EventStore
from agent.pmu.config import AnglePairConfig, PmuMonitoringConfig, PmuStreamConfig
from agent.pmu.monitor import (
    STALE,
    AngleDifferenceMonitor,
    EventWindows,
    FrequencyMonitor,
    Hysteresis,
    RocofMonitor,
    StaleMonitor,
    TimeSyncMonitor,
    Trigger,
    VoltageMonitor,
)
from agent.pmu.ringbuffer import RingBuffer
from agent.points import Quality, Reading, Stream
from protocols.c37118 import ConfigFrame, DataError, DataFrame, FrameError, PhasorKind, PmuConfig, PmuConfig3
from protocols.c37118.pdc import PdcClient, PmuEndpoint, ReadBatcher, StaleWatch
from protocols.eventlog import EventLog

log = EventLog("pmu")

TICK_S = 0.1  # event-window releases while a window waits
#: The longest the events task sleeps with no window waiting: it wakes at the first stale deadline, on every trigger
#: and on every change of a stream's blocks, and at least this often (the UTC clock of the deadlines may jump).
IDLE_TICK_S = 1.0
LATE_AFTER_S = 0.5  # a frame arriving this long after its timestamp is counted late
PAIR_KEEP_S = 2.0  # how long one PMU's angle waits for the other's at the same timestamp
#: Events waiting for a failing store. A PMU event carries its full-rate window (up to 48 kB of JSON, about
#: 190 kB in memory), so fewer wait here than the spool's default: at most about 50 MB.
MAX_WAITING_EVENTS = 250

#: How often every PMU's TCP socket is read (protocols.c37118.pdc.ReadBatcher): one read takes the frames of
#: that time (12 at 60 frames/s), which costs about half of what 6 frames a read (0.1 s) cost and a sixth of
#: one read per frame (docs/pmu-monitoring.md "Performance"). Frames reach the monitors up to this much later.
#: The agent's own budget, no standard's: C37.118.2-2011 sets no latency for the receiving side (the
#: "measurement reporting latency" limits of C37.118.1 bind the PMU); a frame counts late only past
#: LATE_AFTER_S, and the monitors time everything by the PMU's timestamps, not by arrival.
READ_BATCH_S = 0.2

Sink = Callable[[list[Reading]], None]

# The once-a-second readings are built as tuple.__new__(Reading, fields): what Reading's own __new__ does, without
# a Python call per reading. Its fields, in order, are pinned here so a change to Reading cannot go unnoticed.
_new_reading = tuple.__new__
_TELEMETRY = Stream.TELEMETRY
if Reading._fields != ("point", "ts", "value", "unit", "quality", "stream"):
    raise ImportError(f"agent.points.Reading fields {Reading._fields}: agent/pmu/ingest.py builds them in order")


def batch_interval_s(pmus: Sequence[PmuStreamConfig]) -> float:
    """READ_BATCH_S, or a quarter of the shortest ``stale_after_s`` when that is shorter (no false stale event)."""
    return min([READ_BATCH_S, *(p.stale_after_s / 4 for p in pmus)])


@dataclass(slots=True)
class IngestStats:
    frames: int = 0
    late: int = 0  # arrived more than LATE_AFTER_S after their timestamp
    max_latency_s: float = 0.0
    out_of_order: int = 0  # older than the newest frame: not buffered or monitored
    bad_data: int = 0  # STAT data error set: not monitored
    readings: int = 0
    configs: int = 0
    frame_errors: int = 0
    triggers: int = 0
    clears: int = 0  # conditions that returned to normal ("cleared" events)


_LABEL_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def block_names(stream: str, config: ConfigFrame) -> tuple[str, ...]:
    """The PMU name of each block of ``config``: ``stream`` alone for one block, else ``stream/<station>``.

    The station (STN, 6.4 Table 8) keeps letters, digits, ``_`` and ``-`` (anything else becomes ``_``,
    so a point id ``<pmu>.<phasor>.mag`` stays unambiguous); an empty or repeated station becomes
    ``<station>#<IDCODE>`` (IDCODEs differ within a stream).
    """
    if len(config.pmus) == 1:
        return (stream,)
    labels = ["".join(c if c in _LABEL_OK else "_" for c in p.station.strip()) for p in config.pmus]
    out = []
    for label, pmu in zip(labels, config.pmus, strict=True):
        if not label or labels.count(label) > 1:
            label = f"{label or 'pmu'}#{pmu.idcode}"
        out.append(f"{stream}/{label}")
    if len(set(out)) != len(out):  # repeated IDCODEs too: the block index decides
        out = [f"{n}@{i}" for i, n in enumerate(out)]
    return tuple(out)


def phasor_kinds(pmu: PmuConfig) -> tuple[int, ...]:
    """Voltage or current for each phasor: PHUNIT byte 1 (CFG-2, 6.4 Table 9) or PHSCALE bit 3 (CFG-3, Table 11)."""
    if isinstance(pmu, PmuConfig3):
        return tuple(PhasorKind.CURRENT if s.type_indicator & 0x08 else PhasorKind.VOLTAGE for s in pmu.phasor_scales)
    return tuple(u.kind for u in pmu.phasor_units)


def phasor_layout(config: ConfigFrame, block: int = 0) -> tuple:
    """Where PMU ``block``'s values sit in :attr:`DataFrame.words` and how to scale them (6.3 Tables 5, 6).

    (STAT index, FREQ index, FREQ/DFREQ float?, nominal Hz, phasor indices, phasor scales to V or A,
    polar?, phasor float?, TIME_BASE): computed once per configuration, read on every frame.
    """
    pmu = config.pmus[block]
    fmt = pmu.format
    if isinstance(pmu, PmuConfig3):  # CFG-3 PHSCALE is a float factor (6.4 Table 12)
        scales = tuple(1.0 if fmt.phasor_float else s.scale for s in pmu.phasor_scales)
    else:  # CFG-2 PHUNIT: 10^-5 V or A per bit (6.4 Table 9)
        scales = tuple(1.0 if fmt.phasor_float else u.scale * 1e-5 for u in pmu.phasor_units)
    stat_i = DataFrame.block_offsets(config)[block]  # 5 for the first: after SYNC, FRAMESIZE, IDCODE, SOC, FRACSEC
    phasors = tuple(stat_i + 1 + 2 * j for j in range(pmu.phnmr))
    freq_i = stat_i + 1 + 2 * pmu.phnmr
    return (stat_i, freq_i, fmt.freq_float, pmu.nominal_hz, phasors, scales, fmt.polar, fmt.phasor_float,
            config.time_base)  # fmt: skip


def _freq_rocof(w: Sequence[float], freq_i: int, freq_float: bool, nominal_hz: float) -> tuple[float, float]:
    """FREQ (Hz) and DFREQ (Hz/s) of a frame's words; 6.3 Table 6: integer FREQ is the deviation from nominal
    in mHz, integer DFREQ is ROCOF x 100."""
    if freq_float:
        return float(w[freq_i]), float(w[freq_i + 1])
    return nominal_hz + w[freq_i] / 1000.0, w[freq_i + 1] / 100.0


def _phasors(w: Sequence[float], ph_i: tuple[int, ...], scales: tuple[float, ...], polar: bool,
             ph_float: bool) -> tuple[list[float], list[float]]:  # fmt: skip
    """Each phasor's magnitude (V or A) and angle (rad, in (-pi, pi]) from a frame's words (6.3 Table 5)."""
    mags: list[float] = []
    angs: list[float] = []
    pi = math.pi
    for i, k in zip(ph_i, scales, strict=True):
        a, b = w[i], w[i + 1]
        if polar:
            m = a * k
            th = b if ph_float else b * 1e-4
            if m < 0:  # what abs() and atan2() of the complex value made of it: m >= 0, angle in (-pi, pi]
                m, th = -m, th + pi
            if not -pi < th <= pi:
                th = math.atan2(math.sin(th), math.cos(th))
        else:
            re, im = a * k, b * k
            m = math.hypot(re, im)
            th = math.atan2(im, re)
        mags.append(m)
        angs.append(th)
    return mags, angs


def stored_words(layout: tuple) -> tuple[int, int, str]:
    """The words of a block the ring buffer keeps: (first index, end index, struct format of them).

    The block's phasors, FREQ and DFREQ, contiguous after its STAT (6.3 Table 5), in their wire types:
    per phasor ``ff`` (float), ``Hh`` (integer polar: unsigned magnitude, angle in 10^-4 rad) or ``hh``
    (integer rectangular); FREQ and DFREQ ``ff`` or ``hh``. The values fit the types they were decoded from,
    so storing them is exact.
    """
    stat_i, freq_i, freq_float, _, ph_i, _, polar, ph_float, _ = layout
    phasor = "ff" if ph_float else "Hh" if polar else "hh"
    return stat_i + 1, freq_i + 2, phasor * len(ph_i) + ("ff" if freq_float else "hh")


#: Relative margin by which the inlined voltage check narrows the band (far above float rounding, far below
#: any meaningful voltage: 1e-9 pu).
_QUIET_MARGIN = 1e-9


def _voltage_quiet_bounds(phasors: tuple[tuple[int, float], ...], nominal_v: float, lo_pu: float, hi_pu: float,
                          polar: bool) -> tuple[tuple[int, float, float], ...] | None:  # fmt: skip
    """Per voltage phasor (word index, low, high): the band of :class:`VoltageMonitor` in the frame's word units.

    Polar: ``low <= |magnitude word| <= high``; rectangular: ``low <= re^2 + im^2 <= high`` (words). The band is
    narrowed by _QUIET_MARGIN, so a word inside it is inside the monitor's band whatever the rounding. None when
    a scale is not positive (the monitor checks every frame then).
    """
    if not nominal_v or any(k <= 0 for _, k in phasors):
        return None
    out = []
    for i, k in phasors:
        lo, hi = lo_pu * nominal_v / k * (1 + _QUIET_MARGIN), hi_pu * nominal_v / k * (1 - _QUIET_MARGIN)
        out.append((i, lo, hi) if polar else (i, lo * lo, hi * hi))
    return tuple(out)


def channel_row(layout: tuple, per_unit: tuple[float, ...]) -> Callable[[Sequence[float]], tuple[float, ...]]:
    """``stored words -> (frequency Hz, ROCOF Hz/s, then per phasor magnitude pu or V/A and angle deg)``: the
    ring buffer's channels, computed when a window is read from the words :func:`stored_words` keeps."""
    _, freq_i, freq_float, nominal_hz, ph_i, scales, polar, ph_float, _ = layout
    first = stored_words(layout)[0]  # the stored row starts at this word of the frame
    freq_i -= first
    ph_i = tuple(i - first for i in ph_i)
    degrees = math.degrees

    def row(w: Sequence[float]) -> tuple[float, ...]:
        out = list(_freq_rocof(w, freq_i, freq_float, nominal_hz))
        mags, angs = _phasors(w, ph_i, scales, polar, ph_float)
        for m, th, pu in zip(mags, angs, per_unit, strict=True):
            out.append(m / pu if pu else m)
            out.append(degrees(th))
        return tuple(out)

    return row


class PmuIngest:
    """One PMU (block ``block`` of a stream): frames -> ring buffer, monitors, once-a-second Readings. Pure of I/O.

    ``clock`` is s UTC (frame latency, stale detection); ``on_trigger`` receives every trigger with the
    buffer and channel layout that its window is cut from. ``name`` defaults to the stream's.
    """

    def __init__(self, cfg: PmuStreamConfig, mon: PmuMonitoringConfig, sink: Sink,
                 on_trigger: Callable[[Trigger, RingBuffer, tuple[str, ...], tuple[int, ...]], None],
                 clock: Callable[[], float] = time.time, *, block: int = 0, name: str | None = None) -> None:  # fmt: skip
        self.cfg, self.mon, self.sink, self.on_trigger, self.clock = cfg, mon, sink, on_trigger, clock
        self.name = name or cfg.name
        self.block = block
        self.stats = IngestStats()
        self.stale = StaleMonitor(self.name, cfg.stale_after_s, clock)
        self.time_sync = TimeSyncMonitor(self.name, worst_time_quality=mon.time_quality_limit,
                                         hold_off_s=mon.hold_off_s)  # fmt: skip
        self._sync_band = self.time_sync.band
        self._worst_tq = self.time_sync.worst_time_quality
        self._freq_band = self._rocof_band = Hysteresis(None, None)  # the monitors' bands, set with the layout
        self.config: ConfigFrame | None = None
        self.buffer = RingBuffer(1)
        self.channels: tuple[str, ...] = ()
        self.digits: tuple[int, ...] = ()
        self.phasor_names: tuple[str, ...] = ()
        self.frequency: FrequencyMonitor | None = None
        self.rocof: RocofMonitor | None = None
        self.voltage: VoltageMonitor | None = None
        self._voltage_idx: tuple[int, ...] = ()
        self._voltage_phasors: tuple[tuple[int, float], ...] = ()  # (word index, scale) of each voltage phasor
        self._voltage_quiet: tuple[tuple[int, float, float], ...] | None = None  # see _voltage_quiet_bounds
        self._freq_points = (f"{self.name}.frequency", f"{self.name}.rocof")  # reading ids, built once
        self._points: tuple[tuple[str, str], ...] = ()  # (magnitude, angle) reading ids of each phasor
        self._units: tuple[str, ...] = ()
        self._layout: tuple = ()
        self._per_unit: tuple[float, ...] = ()
        self._stored_a = self._stored_b = 0  # the words the ring buffer keeps: w[_stored_a:_stored_b]
        self._last_soc = -1
        self.listeners: list[Callable[[PmuIngest, float, tuple[float, ...]], None]] = []  # (self, ts, angles rad)

    # ---- configuration -------------------------------------------------------------------------------

    def on_config(self, config: ConfigFrame) -> None:
        """A (new) configuration: rebuild channels, buffer and monitors; history of the old layout is dropped."""
        self.config = config
        self.stats.configs += 1
        if self.block >= len(config.pmus):
            raise ValueError(f"PMU {self.name}: block {self.block} of a configuration with {len(config.pmus)}")
        pmu = config.pmus[self.block]
        mon = self.mon
        self.phasor_names = pmu.phasor_names
        kinds = phasor_kinds(pmu)
        nominal_v = self.cfg.nominal_v
        self._units = tuple("V" if k == PhasorKind.VOLTAGE else "A" for k in kinds)
        chans, digits = ["frequency_hz", "rocof_hz_per_s"], [4, 3]
        for name, kind in zip(pmu.phasor_names, kinds, strict=True):
            volt = kind == PhasorKind.VOLTAGE
            chans += [f"{name}_mag_{'pu' if volt and nominal_v else 'v' if volt else 'a'}", f"{name}_ang_deg"]
            digits += [5 if volt and nominal_v else 2, 2]
        self.channels, self.digits = tuple(chans), tuple(digits)
        self._layout = layout = phasor_layout(config, self.block)
        self._per_unit = tuple(nominal_v if nominal_v and u == "V" else 0.0 for u in self._units)  # divisors
        # The buffer keeps the block's phasor, FREQ and DFREQ words packed in their wire types; channel_row (this
        # layout's) turns them into channels when a window is read.
        self._stored_a, self._stored_b, row_format = stored_words(layout)
        self.buffer = RingBuffer.for_rate(config.frames_per_second, mon.buffer_s, channel_row(layout, self._per_unit),
                                          row_format=row_format)  # fmt: skip
        nominal_hz = pmu.nominal_hz
        lo, hi = mon.frequency_lo_hz, mon.frequency_hi_hz
        if nominal_hz != 60 and not mon.frequency_clause.startswith("configured"):
            lo, hi = (x * nominal_hz / 60.0 for x in (lo, hi))  # limits.py: 60 Hz table, scaled for 50 Hz
        self.frequency = FrequencyMonitor(self.name, nominal_hz, lo, hi, mon.frequency_clause,
                                          pickup_s=mon.frequency_pickup_s, hold_off_s=mon.hold_off_s)  # fmt: skip
        self.rocof = RocofMonitor(self.name, mon.rocof_hz_per_s, mon.rocof_clause, pickup_s=mon.rocof_pickup_s,
                                  hold_off_s=mon.hold_off_s)  # fmt: skip
        self._freq_band, self._rocof_band = self.frequency.band, self.rocof.band
        self._voltage_idx = tuple(i for i, k in enumerate(kinds) if k == PhasorKind.VOLTAGE)
        ph_i, scales = layout[4], layout[5]
        self._voltage_phasors = tuple((ph_i[j], scales[j]) for j in self._voltage_idx)
        self._voltage_quiet = _voltage_quiet_bounds(self._voltage_phasors, nominal_v, mon.voltage_lo_pu,
                                                    mon.voltage_hi_pu, layout[6])  # fmt: skip
        n = self.name
        self._points = tuple((f"{n}.{p}.mag", f"{n}.{p}.ang") for p in pmu.phasor_names)  # reading ids
        self.voltage = None
        if nominal_v and self._voltage_idx:
            self.voltage = VoltageMonitor(self.name, [pmu.phasor_names[i] for i in self._voltage_idx], nominal_v,
                                          mon.voltage_lo_pu, mon.voltage_hi_pu, mon.voltage_clause,
                                          pickup_s=mon.voltage_pickup_s, hold_off_s=mon.hold_off_s)  # fmt: skip
        self._last_soc = -1
        log.info("pmu_configured", pmu=self.name, idcode=pmu.idcode, block=self.block,
                 phasors=",".join(pmu.phasor_names), rate=config.data_rate, nominal_hz=nominal_hz)  # fmt: skip

    # ---- frames --------------------------------------------------------------------------------------

    def on_frame(self, frame: DataFrame) -> None:
        """One data frame (see :meth:`on_frames`)."""
        self._run(frame, iter(()))

    def on_frames(self, frames: Iterable[DataFrame]) -> None:
        """The data frames of one read, in order (each one as :meth:`on_frame` would take it).

        ``frames`` is consumed one frame at a time: when a frame raises, the frames after it stay in the
        iterator, and a caller that hands the same iterator again goes on with the next one.
        """
        it = iter(frames)
        frame = next(it, None)
        while frame is not None:
            frame = self._run(frame, it)

    def _run(self, first: DataFrame, rest: Iterator[DataFrame]) -> DataFrame | None:
        """``first``, then ``rest`` while their configuration stays; the first frame of another one is returned."""
        # The hot path (every frame of every PMU): values come straight from the decoded words through
        # indices computed once per configuration (_layout), looked up once per batch of frames. Per frame
        # only what the monitors need is computed (frequency, ROCOF, voltage magnitudes); the buffer keeps
        # the words as they are, and the phasors' magnitudes and angles are computed for the once-a-second
        # readings and angle pairs only. The frames of one read arrive together: one clock reading serves them.
        if first.config is not self.config:
            self.on_config(first.config)
        config = self.config
        st = self.stats
        (stat_i, freq_i, freq_float, nominal_hz, ph_i, scales, polar, ph_float, time_base) = self._layout
        stored_a, stored_b = self._stored_a, self._stored_b
        append = self.buffer.append
        stale = self.stale
        sync_band, freq_band, rocof_band = self._sync_band, self._freq_band, self._rocof_band
        worst_tq = self._worst_tq
        time_sync, frequency, rocof_mon, vm = self.time_sync, self.frequency, self.rocof, self.voltage
        quiet_bounds = self._voltage_quiet if vm is not None else None
        voltage_phasors = self._voltage_phasors
        listeners = self.listeners
        # The monitors' bands change only inside their monitors' calls: whether each is idle (Hysteresis.idle) is
        # read once here and again after each call. freq_lo..freq_hi: the frequency band with open sides infinite.
        sync_idle = not sync_band.active and sync_band._since is None
        freq_idle = not freq_band.active and freq_band._since is None
        rocof_idle = not rocof_band.active and rocof_band._since is None
        freq_lo, freq_hi, rocof_lo, rocof_hi = freq_band._lo, freq_band._hi, rocof_band._lo, rocof_band._hi
        now = self.clock()
        max_latency = st.max_latency_s
        last_soc = self._last_soc
        ts = None
        try:
            for frame in chain((first,), rest):
                if frame.config is not config:
                    return frame
                st.frames += 1
                w = frame.words
                soc = w[3]
                ts = soc + (w[4] & 0xFFFFFF) / time_base
                latency = now - ts
                if latency > max_latency:
                    st.max_latency_s = max_latency = latency
                if latency > LATE_AFTER_S:
                    st.late += 1
                if stale.active:  # this frame ends an outage: StaleMonitor.frame makes the "cleared" trigger
                    self._trigger(stale.frame(ts, now))  # type: ignore[arg-type]  # active: never None
                stat_word = w[stat_i]
                data_error = stat_word >> 14  # STAT bits 15-14 (C37.118.2-2011 6.3 Table 7)
                sync_lost = stat_word & 0x2000  # bit 13
                if freq_float:
                    freq, rocof = float(w[freq_i]), float(w[freq_i + 1])
                else:  # 6.3 Table 6: FREQ deviation from nominal in mHz, DFREQ is ROCOF x 100
                    freq, rocof = nominal_hz + w[freq_i] / 1000.0, w[freq_i + 1] / 100.0
                if soc != last_soc:
                    self._last_soc = last_soc = soc
                    mags, angs = _phasors(w, ph_i, scales, polar, ph_float)
                    self._report(ts, data_error, bool(sync_lost), mags, angs, freq, rocof)
                if not append(ts, w[stored_a:stored_b]):  # not after the newest frame
                    st.out_of_order += 1
                    continue
                # The monitors' idle checks, inlined (almost every frame stops there): a monitor is called only when
                # its band is not idle or the value is outside it, and it repeats the check itself.
                if not sync_idle or stat_word & 0x2030 or (w[4] >> 24) & 0x0F == 15 or (stat_word >> 6) & 7 >= worst_tq:
                    # TimeSyncMonitor.update_words's idle check, widened
                    if trig := time_sync.update_words(ts, stat_word, w[4]):
                        self._trigger(trig)
                    sync_idle = not sync_band.active and sync_band._since is None
                if data_error:  # not DataError.GOOD (0)
                    st.bad_data += 1
                    continue
                if not (freq_idle and freq_lo <= freq <= freq_hi):  # NaN: not inside
                    if trig := frequency.update(ts, freq):  # type: ignore[union-attr]  # set with _layout
                        self._trigger(trig)
                    freq_idle = not freq_band.active and freq_band._since is None
                if not (rocof_idle and rocof_lo <= rocof <= rocof_hi):
                    if trig := rocof_mon.update(ts, rocof):  # type: ignore[union-attr]
                        self._trigger(trig)
                    rocof_idle = not rocof_band.active and rocof_band._since is None
                if vm is not None:
                    # VoltageMonitor.update_words's idle check on the raw words, inlined: each magnitude (polar) or
                    # squared magnitude (rectangular) against the band in word units, narrowed by a margin so that
                    # rounding never skips a value the monitor's own check would catch; near or past a limit the
                    # monitor decides.
                    quiet = vm._idle and quiet_bounds is not None
                    if quiet and polar:
                        for i, lo_w, hi_w in quiet_bounds:  # type: ignore[union-attr]
                            m = w[i]
                            if not lo_w <= (m if m >= 0 else -m) <= hi_w:
                                quiet = False
                                break
                    elif quiet:
                        for i, lo_w, hi_w in quiet_bounds:  # type: ignore[union-attr]
                            re, im = w[i], w[i + 1]
                            if not lo_w <= re * re + im * im <= hi_w:
                                quiet = False
                                break
                    if not quiet:
                        for trig in vm.update_words(ts, w, voltage_phasors, polar):
                            self._trigger(trig)
                if not sync_lost and listeners:
                    angles = tuple(_phasors(w, ph_i, scales, polar, ph_float)[1])
                    for listener in listeners:
                        listener(self, ts, angles)
        finally:
            if ts is not None:  # what StaleMonitor.frame does, once for the frames of this read
                stale.last_arrival, stale.last_frame_ts = now, ts
        return None

    def _trigger(self, trig: Trigger) -> None:
        if trig.cleared:
            self.stats.clears += 1
        else:
            self.stats.triggers += 1
        _log_trigger(trig)
        self.on_trigger(trig, self.buffer, self.channels, self.digits)

    def _report(self, ts: float, data_error: int, sync_lost: bool, mags: list[float], angs: list[float],
                freq: float, rocof: float) -> None:  # fmt: skip
        q = Quality.GOOD if data_error == DataError.GOOD else Quality.INVALID
        qa = Quality.INVALID if sync_lost else q  # an angle is only meaningful against UTC
        freq_id, rocof_id = self._freq_points
        new, tel = _new_reading, _TELEMETRY  # Reading(...) without its Python-level __new__: the same tuples
        out = [new(Reading, (freq_id, ts, round(freq, 6), "Hz", q, tel)),
               new(Reading, (rocof_id, ts, round(rocof, 4), "Hz/s", q, tel))]  # fmt: skip
        degrees = math.degrees
        for (mag_id, ang_id), unit, m, a in zip(self._points, self._units, mags, angs, strict=True):
            out.append(new(Reading, (mag_id, ts, round(m, 4), unit, q, tel)))
            out.append(new(Reading, (ang_id, ts, round(degrees(a), 4), "deg", qa, tel)))
        self.stats.readings += len(out)
        self.sink(out)

    def tick(self) -> None:
        trig = self.stale.tick()
        if trig is None:
            return
        self._trigger(trig)
        ts = self.clock()
        out = [Reading(f"{self.name}.frequency", ts, None, "Hz", Quality.STALE),
               Reading(f"{self.name}.rocof", ts, None, "Hz/s", Quality.STALE)]  # fmt: skip
        for name, unit in zip(self.phasor_names, self._units, strict=True):
            out += [Reading(f"{self.name}.{name}.mag", ts, None, unit, Quality.STALE),
                    Reading(f"{self.name}.{name}.ang", ts, None, "deg", Quality.STALE)]  # fmt: skip
        self.sink(out)


def _idcode(ingest: PmuIngest) -> int | None:
    return ingest.config.pmus[ingest.block].idcode if ingest.config is not None else None


def _log_trigger(trig: Trigger) -> None:
    if trig.cleared:
        log.info("pmu_condition_cleared", kind=trig.kind, pmu=trig.source, text=trig.text)
    else:
        log.warning("pmu_condition", kind=trig.kind, pmu=trig.source, text=trig.text)


class PmuStream:
    """One ``[[pmus]]`` stream (a PMU, or a PDC with NUM_PMU > 1): one :class:`PmuIngest` per PMU block.

    Until the first configuration there is one block named after the stream (so a stream never heard
    from still goes stale). Each configuration sets the blocks (:func:`block_names`); a block whose name
    stays keeps its ingest (and history while the layout stays), ``on_blocks`` hears of any change.
    """

    def __init__(self, cfg: PmuStreamConfig, mon: PmuMonitoringConfig, sink: Sink,
                 on_trigger: Callable[[Trigger, RingBuffer, tuple[str, ...], tuple[int, ...]], None],
                 clock: Callable[[], float] = time.time,
                 on_blocks: Callable[[PmuStream], None] | None = None) -> None:  # fmt: skip
        self.cfg, self.mon, self.sink, self.on_trigger, self.clock = cfg, mon, sink, on_trigger, clock
        self.name = cfg.name
        self.on_blocks = on_blocks
        self.config: ConfigFrame | None = None
        self.blocks: dict[str, PmuIngest] = {cfg.name: PmuIngest(cfg, mon, sink, on_trigger, clock)}
        self._ingests = tuple(self.blocks.values())
        self.started = False

    def on_config(self, config: ConfigFrame) -> None:
        self.config = config
        names = block_names(self.name, config)
        old = self.blocks
        new: dict[str, PmuIngest] = {}
        for i, name in enumerate(names):
            ingest = old.get(name)
            if ingest is None:
                ingest = PmuIngest(self.cfg, self.mon, self.sink, self.on_trigger, self.clock, block=i, name=name)
                if self.started:
                    ingest.stale.start()
            ingest.block = i
            new[name] = ingest
        self.blocks, self._ingests = new, tuple(new.values())
        for ingest in self._ingests:
            ingest.on_config(config)
        if list(new) != list(old):
            log.info("pmu_blocks", stream=self.name, num_pmu=len(names), pmus=",".join(names))
            if self.on_blocks is not None:
                self.on_blocks(self)

    def on_frame(self, frame: DataFrame) -> None:
        if frame.config is not self.config:
            self.on_config(frame.config)
        for ingest in self._ingests:
            ingest.on_frame(frame)

    def on_frames(self, frames: Iterable[DataFrame]) -> None:
        """The data frames of one read, in order; consumed one at a time, as :meth:`PmuIngest.on_frames` does."""
        it = iter(frames)
        frame = next(it, None)
        while frame is not None:
            if frame.config is not self.config:
                self.on_config(frame.config)
            ingests = self._ingests
            if len(ingests) == 1:  # one block: the frames of this configuration in one go
                frame = ingests[0]._run(frame, it)
            else:
                for ingest in ingests:
                    ingest.on_frame(frame)
                frame = next(it, None)

    def on_error(self, err: FrameError) -> None:
        for ingest in self._ingests:
            ingest.stats.frame_errors += 1

    def start(self) -> None:
        """Begin stale watching on every block (and on blocks that appear later)."""
        self.started = True
        for ingest in self._ingests:
            ingest.stale.start()

    def tick(self) -> None:
        for ingest in self._ingests:
            ingest.tick()


class AnglePair:
    """Aligns one phasor's angle at two PMUs by timestamp and runs the angle-difference monitor."""

    def __init__(self, pair: AnglePairConfig, mon: PmuMonitoringConfig,
                 on_trigger: Callable[[Trigger, RingBuffer, tuple[str, ...], tuple[int, ...]], None]) -> None:  # fmt: skip
        self.pair = pair
        self.monitor = AngleDifferenceMonitor(pair.pmu_a, pair.pmu_b, pair.phasor, pair.limit_deg,
                                              pickup_s=mon.angle_pickup_s, hold_off_s=mon.hold_off_s)  # fmt: skip
        self.buffer = RingBuffer(max(2, int(120 * mon.buffer_s)), row_format="ddd")  # any rate up to 120 frames/s
        self.on_trigger = on_trigger
        self._waiting: dict[str, dict[int, float]] = {pair.pmu_a: {}, pair.pmu_b: {}}
        self.unknown_phasor: set[str] = set()
        self.channels = (f"{pair.pmu_a}_ang_deg", f"{pair.pmu_b}_ang_deg", "difference_deg")

    def listener(self, ingest: PmuIngest, ts: float, angles: tuple[float, ...]) -> None:
        try:
            i = ingest.phasor_names.index(self.pair.phasor)
        except ValueError:
            if ingest.name not in self.unknown_phasor:
                self.unknown_phasor.add(ingest.name)
                log.error("pmu_pair_no_phasor", pmu=ingest.name, phasor=self.pair.phasor)
            return
        key = round(ts * 10_000)  # 0.1 ms: frames of one instant share it at any standard rate
        mine, other = (
            self._waiting[ingest.name],
            self._waiting[self.pair.pmu_b if ingest.name == self.pair.pmu_a else self.pair.pmu_a],
        )
        theirs = other.pop(key, None)
        if theirs is None:
            mine[key] = angles[i]
            cutoff = key - PAIR_KEEP_S * 10_000
            if len(mine) > 8 and next(iter(mine)) < cutoff:
                for k in [k for k in mine if k < cutoff]:
                    del mine[k]
            return
        a, b = (angles[i], theirs) if ingest.name == self.pair.pmu_a else (theirs, angles[i])
        trig = self.monitor.update(ts, a, b)
        diff = math.degrees(a - b)
        diff = (diff + 180.0) % 360.0 - 180.0
        self.buffer.append(ts, (math.degrees(a), math.degrees(b), diff))
        if trig:
            _log_trigger(trig)
            self.on_trigger(trig, self.buffer, self.channels, (2, 2, 3))


class PmuMonitoring:
    """Every configured PMU: clients, ingests, angle pairs, event windows, and the events task.

    The clients share one :class:`~protocols.c37118.pdc.ReadBatcher` (``batcher``): each PMU's socket is
    read every ``read_batch_s`` (default :func:`batch_interval_s`), ``0`` reads every segment as it comes; and
    one :class:`~protocols.c37118.pdc.StaleWatch` (``stale_watch``) keeps their stale deadlines on one timer.
    """

    def __init__(self, pmus: tuple[PmuStreamConfig, ...], mon: PmuMonitoringConfig, sink: Sink,
                 store: EventStore, *, clock: Callable[[], float] = time.time,
                 client_factory: Callable[..., PdcClient] = PdcClient,
                 read_batch_s: float | None = None) -> None:  # fmt: skip
        self.mon, self.store, self.clock = mon, store, clock
        self._wake: asyncio.Future[None] | None = None  # the events task's sleep, ended early by _wake_up
        self.windows = EventWindows(mon.window_before_s, mon.window_after_s, clock)
        self.pairs = [AnglePair(pair, mon, self._on_trigger) for pair in mon.angle_pairs]
        self.streams = {p.name: PmuStream(p, mon, sink, self._on_trigger, clock, self._attach_pairs) for p in pmus}
        for stream in self.streams.values():
            self._attach_pairs(stream)
        # None: READ_BATCH_S (or less, see batch_interval_s()); 0: every read handled as it comes (no batcher).
        interval = batch_interval_s(pmus) if read_batch_s is None else read_batch_s
        self.batcher = ReadBatcher(interval) if interval > 0 else None
        self.stale_watch = StaleWatch()  # every client's stale deadline on one timer
        self.clients = {
            p.name: client_factory(
                PmuEndpoint(p.host, p.port, p.idcode, p.cfg, p.udp_port),
                on_frame=self.streams[p.name].on_frame,
                on_frames=self.streams[p.name].on_frames,
                on_config=self.streams[p.name].on_config,
                on_error=self.streams[p.name].on_error,
                batcher=self.batcher,
                stale_watch=self.stale_watch,
            )  # fmt: skip
            for p in pmus
        }
        self.spool = EventSpool(store, name="pmu", source_key="pmu", logger=log, max_waiting=MAX_WAITING_EVENTS)

    @property
    def events_stored(self) -> int:
        return self.spool.stats.events_stored

    @property
    def events_refused(self) -> int:
        return self.spool.stats.events_refused

    @property
    def ingests(self) -> dict[str, PmuIngest]:
        """Every monitored PMU by name: each block of each stream (a stream's name when it has one block)."""
        return {name: ingest for stream in self.streams.values() for name, ingest in stream.blocks.items()}

    def _attach_pairs(self, stream: PmuStream) -> None:
        """Angle pairs listen to the PMUs they name, whenever those appear (a PDC's blocks: after its config)."""
        self._wake_up()  # new blocks: new stale deadlines
        for pair in self.pairs:
            for name in {pair.pair.pmu_a, pair.pair.pmu_b}:
                ingest = stream.blocks.get(name)
                if ingest is not None and pair.listener not in ingest.listeners:
                    ingest.listeners.append(pair.listener)

    def _on_trigger(
        self, trig: Trigger, buffer: RingBuffer, channels: tuple[str, ...], digits: tuple[int, ...]
    ) -> None:
        # A stale stream has no after-window to wait for: its event goes out now, with the data before it.
        self.windows.add(trig, buffer, channels, digits, immediate=trig.kind == STALE and not trig.cleared)
        self._wake_up()

    def _wake_up(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def next_tick_s(self) -> float:
        """How long until :meth:`tick` has something to do: TICK_S while an event window waits, else the time to
        the first stale deadline (a frame only moves a deadline later), at most IDLE_TICK_S."""
        if len(self.windows):
            return TICK_S
        due = math.inf
        for stream in self.streams.values():
            for ingest in stream._ingests:
                st = ingest.stale
                if not st.active and st.last_arrival is not None and st.last_arrival + st.stale_after_s < due:
                    due = st.last_arrival + st.stale_after_s
        return max(0.0, min(IDLE_TICK_S, due - self.clock()))

    async def _sleep(self, delay_s: float) -> None:
        """Sleep ``delay_s``, or until a trigger or a change of blocks wakes the events task."""
        loop = asyncio.get_running_loop()
        self._wake = wake = loop.create_future()
        timer = loop.call_later(delay_s, self._wake_up)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    def tick(self) -> int:
        """Check stale streams and put complete events in the spool (when :meth:`next_tick_s` says); how many were put."""
        now = self.clock()
        for stream in self.streams.values():
            for ingest in stream._ingests:
                st = ingest.stale  # StaleMonitor.tick's own test first: only a block due for it is ticked
                if not st.active and st.last_arrival is not None and now - st.last_arrival >= st.stale_after_s:
                    ingest.tick()
        released = self.windows.poll()
        self.spool.extend(released)
        return len(released)

    async def run_events(self) -> None:
        """Tick, release and store events until cancelled; on cancel, what is pending is stored as it is.

        New events are stored at once; what a failing store left waits for the spool's retry.
        """
        for stream in self.streams.values():
            stream.start()
        try:
            async with self.spool.retrying():
                while True:
                    if self.tick():
                        await self.spool.flush()
                    await self._sleep(self.next_tick_s())
        finally:
            self.spool.extend(self.windows.flush())
            await self.spool.close()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for stream in self.streams.values():
            client = self.clients[stream.name]
            for name, ingest in stream.blocks.items():
                out[name] = {"connected": client.stats.connected, "reconnects": client.stats.reconnects,
                             "stale": ingest.stale.active, "stream": stream.name, "idcode": _idcode(ingest),
                             "last_error": client.stats.last_error, "last_error_ts": client.stats.last_error_ts,
                             **{k: getattr(ingest.stats, k) for k in IngestStats.__slots__}}  # fmt: skip
        return out


__all__ = ["MAX_WAITING_EVENTS", "READ_BATCH_S", "AnglePair", "EventStore", "IngestStats", "PmuIngest", "PmuMonitoring", "PmuStream", "batch_interval_s",
           "block_names", "channel_row", "phasor_kinds", "phasor_layout", "stored_words"]  # fmt: skip
