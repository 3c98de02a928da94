"""A simulated PMU: a real IEEE C37.118.2 server (TCP commands, TCP or UDP data) on our own codec.

The simulator answers the standard's commands (6.6 Table 15: data off, data on, send header, CFG-1,
CFG-2, CFG-3), streams data frames on the rate grid (the timestamps of frame k are k / rate seconds:
SOC + FRACSEC / TIME_BASE exactly), and takes its values from a pluggable ``source(t)``. Fault hooks
let scenarios lose time sync, change the configuration, stop sending (a stale stream with the
connection still up) and put garbage on the wire. Documented in docs/devices/sim-pmu.md.

UDP data: commands stay on TCP; a client that sends the extended command (CMD 8) whose data is
``b"UDPP" + port (16 bits)`` gets its data frames as datagrams to that port at its own address
(a convention of this simulator, not of the standard); with ``udp_data=True`` every client gets its
data over UDP to ``udp_port`` (default 4713) unless it named another port.
"""

from __future__ import annotations

import asyncio
import cmath
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from protocols.c37118 import (
    NEED_DATA,
    AnalogScale,
    AnalogUnit,
    Command,
    CommandFrame,
    Config3Frame,
    ConfigFrame,
    DataFormat,
    DataFrame,
    DigitalUnit,
    FrameError,
    FrameType,
    HeaderFrame,
    PhasorKind,
    PhasorScale,
    PhasorUnit,
    PmuConfig,
    PmuConfig3,
    PmuData,
    PmuTimeQuality,
    Stat,
    StreamReader,
    TimeQuality,
    UnlockedTime,
    encode_config3,
    encode_frame,
)
from protocols.c37118.frames import MAX_FRAME_SIZE
from protocols.c37118.pdc import UDP_PORT_COMMAND
from protocols.eventlog import EventLog

log = EventLog("sim.devices")

DEFAULT_PORT = 4712  # IEEE C37.118.2-2011 Annex: TCP 4712, UDP 4713
DEFAULT_UDP_PORT = 4713
DEFAULT_PHASORS: tuple[tuple[str, int], ...] = (
    ("VA", PhasorKind.VOLTAGE),
    ("VB", PhasorKind.VOLTAGE),
    ("VC", PhasorKind.VOLTAGE),
    ("IA", PhasorKind.CURRENT),
    ("IB", PhasorKind.CURRENT),
    ("IC", PhasorKind.CURRENT),
)
# Polar, float phasors and analogs, integer FREQ/DFREQ (mHz deviation, ROCOF x 100): integer FREQ is
# what pyPMU reads correctly (it takes float FREQ for a deviation).
DEFAULT_FORMAT = DataFormat(freq_float=False, analog_float=True, phasor_float=True, polar=True)
_WRITE_BUFFER_LIMIT = 1 << 20  # bytes queued to one slow TCP client before its data frames are dropped


class PmuSimError(ValueError):
    """A simulated PMU asked for something it cannot do (bad rate, phasor list, version...)."""


@dataclass(frozen=True, slots=True)
class PmuMeasurement:
    """What the source gives for one instant: phasors in V/A (complex), frequency [Hz], ROCOF [Hz/s]."""

    phasors: tuple[complex, ...]
    frequency_hz: float
    rocof_hz_per_s: float
    analogs: tuple[float, ...] = ()
    digitals: tuple[int, ...] = ()


def balanced_source(
    phasors: Sequence[tuple[str, int]] = DEFAULT_PHASORS,
    *,
    nominal_hz: float = 60.0,
    nominal_v: float = 7200.0,
    current_a: float = 200.0,
    pf: float = 0.95,
    n_analogs: int = 2,
    n_digital_words: int = 1,
) -> Callable[[float], PmuMeasurement]:
    """A balanced three-phase feeder near nominal with a slow drift; a pure function of ``t`` [s UTC].

    Voltages are numbered A, B, C in the order of the voltage phasors (likewise currents); frequency
    wanders 20 mHz around nominal with a 60 s period, so the phase angle (the integral of the
    deviation) swings by 1.2 rad; the magnitude drifts 1 % with a 300 s period. Analog 0 and 1 are
    the three-phase P [W] and Q [var]; digital word 0 is 0x0001 (breaker closed).
    """
    kinds = [k for _, k in phasors]
    lag = math.acos(pf)

    def source(t: float) -> PmuMeasurement:
        w = 2 * math.pi / 60.0
        freq = nominal_hz + 0.02 * math.sin(w * t)
        rocof = 0.02 * w * math.cos(w * t)
        theta = -1.2 * math.cos(w * t)  # 2 pi x integral of 0.02 sin(w t) = -0.02 x 60 cos(w t)
        vmag = nominal_v * (1 + 0.01 * math.sin(2 * math.pi * t / 300.0))
        out = []
        n_v = n_i = 0
        for kind in kinds:
            if kind == PhasorKind.VOLTAGE:
                out.append(cmath.rect(vmag, theta - 2 * math.pi / 3 * (n_v % 3)))
                n_v += 1
            else:
                out.append(cmath.rect(current_a, theta - lag - 2 * math.pi / 3 * (n_i % 3)))
                n_i += 1
        p = 3 * vmag * current_a * pf
        q = 3 * vmag * current_a * math.sin(lag)
        analogs = ((p, q) + (0.0,) * n_analogs)[:n_analogs]
        return PmuMeasurement(tuple(out), freq, rocof, analogs, (0x0001,) + (0,) * (n_digital_words - 1))

    return source


@dataclass(frozen=True, slots=True)
class SimPmuBlock:
    """One more PMU block in the simulator's stream (a PDC's output: NUM_PMU > 1, 6.4 Table 8).

    The block has the main PMU's channels and format, its own IDCODE and station, and values from
    ``source(t)`` (default: :func:`balanced_source` like the main PMU's).
    """

    idcode: int
    station: str
    source: Callable[[float], PmuMeasurement] | None = None


@dataclass
class SimPmuStats:
    """Counters an operator (or a test) reads: what the simulator did."""

    connections: int = 0
    commands: int = 0
    ignored_commands: int = 0  # wrong IDCODE, unknown CMD, or not a command
    frame_errors: int = 0  # bad bytes from clients
    data_frames_sent: int = 0
    data_frames_dropped: int = 0  # a client too slow to keep up (write buffer over the bound)


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    peer: tuple[str, int]
    data_on: bool = False
    udp_port: int | None = None
    reader: StreamReader = field(default_factory=StreamReader)
    task: asyncio.Task[None] | None = None


class SimPmu:
    """One simulated PMU (NUM_PMU 1, or more with ``extra_blocks``) serving any number of PDCs.

    Parameters
    ----------
    idcode : IDCODE of the PMU and of its stream (6.2.1). station : STN, at most 16 ASCII bytes.
    phasors : (name, PhasorKind) pairs. analogs : analog channel names. digital_words : 16-bit words.
    rate : frames per second, 10..120 (DATA_RATE). nominal_hz : 50 or 60. version : 2011 or 2005.
    format : the data FORMAT word. time_base : FRACSEC resolution (TIME_BASE).
    source : ``source(t) -> PmuMeasurement`` for t in s UTC; default :func:`balanced_source`.
    clock : s since the epoch, UTC; default ``time.time``. host, port : where to listen (port 0: any).
    udp_data, udp_port : send data over UDP by default, and to which port.
    time_quality, stat : override the message time quality / the STAT word (scenarios).
    strict_idcode : ignore commands addressed to another IDCODE (as a real PMU does).
    extra_blocks : more PMU blocks after the main one, so the stream is a PDC's (NUM_PMU = 1 + len).
    cfg3_max_frame_size : send CFG-3 in frames of at most this many bytes (CONT_IDX pieces, 6.4 Table 10)
    when it is longer; default 65535, the most one frame holds.
    """

    def __init__(
        self,
        idcode: int,
        station: str,
        *,
        phasors: Sequence[tuple[str, int]] = DEFAULT_PHASORS,
        analogs: Sequence[str] = ("P", "Q"),
        digital_words: int = 1,
        rate: int = 30,
        nominal_hz: int = 60,
        nominal_v: float = 7200.0,
        version: int = 2011,
        format: DataFormat = DEFAULT_FORMAT,
        time_base: int = 1_000_000,
        source: Callable[[float], PmuMeasurement] | None = None,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        udp_data: bool = False,
        udp_port: int = DEFAULT_UDP_PORT,
        time_quality: TimeQuality | None = None,
        stat: Stat | None = None,
        strict_idcode: bool = True,
        extra_blocks: Sequence[SimPmuBlock] = (),
        cfg3_max_frame_size: int = MAX_FRAME_SIZE,
    ) -> None:
        if not 10 <= rate <= 120:
            raise PmuSimError(f"rate = {rate!r}: 10..120 frames per second")
        if version not in (2005, 2011):
            raise PmuSimError(f"version = {version!r}: 2005 or 2011")
        if not phasors:
            raise PmuSimError("phasors = (): a PMU measures at least one phasor")
        self.idcode = idcode
        self.station = station
        self.extra_blocks = tuple(extra_blocks)
        ids = [idcode] + [b.idcode for b in self.extra_blocks]
        if len(set(ids)) != len(ids):
            raise PmuSimError(f"extra_blocks: IDCODEs {ids} must differ from each other and from {idcode}")
        if not MAX_FRAME_SIZE >= cfg3_max_frame_size > 18:
            raise PmuSimError(f"cfg3_max_frame_size = {cfg3_max_frame_size!r}: 19..{MAX_FRAME_SIZE}")
        self.cfg3_max_frame_size = cfg3_max_frame_size
        self.host = host
        self.port = port
        self.udp_data = udp_data
        self.udp_port = udp_port
        self.clock = clock
        self.strict_idcode = strict_idcode
        self.time_quality_override = time_quality
        self.stat_override = stat
        self.stats = SimPmuStats()
        self._version = 2 if version == 2011 else 1
        self._nominal_v = nominal_v
        self._phasor_spec = tuple(phasors)
        self._analog_names = tuple(analogs)
        self._digital_words = digital_words
        self._source_given = source
        self._config = self._build_config(
            self._phasor_spec, rate=rate, nominal_hz=nominal_hz, fmt=format, time_base=time_base, cfgcnt=0
        )
        self.source = source or self._default_source()
        self._block_sources = [b.source or self._default_source() for b in self.extra_blocks]
        self._clients: set[_Client] = set()
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._sending = True
        self._sync_lost_at: float | None = None
        self._config_changed_until = 0.0

    # ---- configuration -------------------------------------------------------------------------------

    def _default_source(self) -> Callable[[float], PmuMeasurement]:
        pmu = self._config.pmus[0]
        return balanced_source(
            self._phasor_spec,
            nominal_hz=pmu.nominal_hz,
            nominal_v=self._nominal_v,
            n_analogs=pmu.annmr,
            n_digital_words=pmu.dgnmr,
        )

    def _build_config(
        self,
        phasors: Sequence[tuple[str, int]],
        *,
        rate: int,
        nominal_hz: int,
        fmt: DataFormat,
        time_base: int,
        cfgcnt: int,
    ) -> ConfigFrame:
        try:
            units = tuple(PhasorUnit(kind, self._phasor_unit_scale(kind, fmt)) for _, kind in phasors)
            blocks = [(self.station, self.idcode)] + [(b.station, b.idcode) for b in self.extra_blocks]
            pmus = tuple(
                PmuConfig(
                    station=station,
                    idcode=idcode,
                    format=fmt,
                    phasor_names=tuple(n for n, _ in phasors),
                    analog_names=self._analog_names,
                    digital_names=tuple(f"DIG{w}_{b}" for w in range(self._digital_words) for b in range(16)),
                    phasor_units=units,
                    analog_units=tuple(AnalogUnit(1, 1) for _ in self._analog_names),
                    digital_units=tuple(DigitalUnit(0, 0xFFFF) for _ in range(self._digital_words)),
                    nominal_hz=nominal_hz,
                    cfgcnt=cfgcnt,
                )
                for station, idcode in blocks
            )
            return ConfigFrame(
                idcode=self.idcode, time_base=time_base, pmus=pmus, data_rate=rate, version=self._version
            )
        except FrameError as err:
            raise PmuSimError(f"PMU {self.idcode}: {err}") from err

    def _phasor_unit_scale(self, kind: int, fmt: DataFormat) -> int:
        """PHUNIT (10^-5 V or A per bit) so that twice nominal fits a signed 16-bit integer (6.3 Table 6)."""
        if fmt.phasor_float:
            return 0
        full = 2 * (self._nominal_v if kind == PhasorKind.VOLTAGE else 1000.0)
        return max(1, math.ceil(full / 32767 / 1e-5))

    @property
    def config(self) -> ConfigFrame:
        """The CFG-2 being sent now (SOC 0: stamped when sent)."""
        return self._config

    def config_frame(self, frame_type: FrameType) -> ConfigFrame:
        """CFG-1, CFG-2 or CFG-3 stamped with the current time (6.4)."""
        soc, fracsec = self._now_stamp()
        cfg = self._config
        if frame_type == FrameType.CFG3:
            return Config3Frame(
                idcode=cfg.idcode,
                soc=soc,
                fracsec=fracsec,
                time_base=cfg.time_base,
                pmus=tuple(self._pmu3(pmu) for pmu in cfg.pmus),
                data_rate=cfg.data_rate,
            )
        return replace(cfg, frame_type=frame_type, soc=soc, fracsec=fracsec)

    @staticmethod
    def _pmu3(pmu: PmuConfig) -> PmuConfig3:
        scales = tuple(
            PhasorScale(type_indicator=(u.kind << 3), scale=1.0 if pmu.format.phasor_float else u.scale * 1e-5)
            for u in pmu.phasor_units
        )
        return PmuConfig3(
            station=pmu.station,
            idcode=pmu.idcode,
            format=pmu.format,
            phasor_names=pmu.phasor_names,
            analog_names=pmu.analog_names,
            digital_names=pmu.digital_names,
            phasor_units=pmu.phasor_units,
            analog_units=pmu.analog_units,
            digital_units=pmu.digital_units,
            nominal_hz=pmu.nominal_hz,
            cfgcnt=pmu.cfgcnt,
            global_id=pmu.idcode.to_bytes(2, "big").rjust(16, b"\0"),
            phasor_scales=scales,
            analog_scales=tuple(AnalogScale() for _ in pmu.analog_names),
            service_class="M",
        )

    # ---- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> SimPmu:
        """Listen on TCP (``self.port`` becomes the bound port) and start the frame ticker."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(self.host, 0))
        self._ticker = asyncio.create_task(self._tick(), name=f"simpmu-{self.idcode}")
        log.info("pmu_listening", idcode=self.idcode, host=self.host, port=self.port, rate=self.rate)
        return self

    async def stop(self) -> None:
        """Close the listener and every client (a PMU switched off)."""
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server:
            self._server.close()
        tasks = [c.task for c in self._clients if c.task is not None]
        self.drop_clients()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server:
            await self._server.wait_closed()
            self._server = None
        if self._udp:
            self._udp.close()
            self._udp = None

    async def __aenter__(self) -> SimPmu:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def rate(self) -> int:
        return self._config.data_rate

    @property
    def clients(self) -> int:
        return len(self._clients)

    # ---- fault hooks ---------------------------------------------------------------------------------

    def lose_sync(self, since_s: float = 0.0) -> None:
        """The GPS is gone (``since_s`` ago): STAT sync bit, unlocked time and time quality follow (6.3 Table 7)."""
        self._sync_lost_at = self.clock() - since_s

    def regain_sync(self) -> None:
        self._sync_lost_at = None

    def change_config(
        self,
        *,
        phasors: Sequence[tuple[str, int]] | None = None,
        rate: int | None = None,
        format: DataFormat | None = None,
        flag_s: float = 2.0,
    ) -> ConfigFrame:
        """Apply a new configuration now: CFGCNT + 1, and STAT bit 10 set for ``flag_s`` seconds.

        The standard sets bit 10 for a minute *before* the change; the simulator applies the change at
        once and raises the bit afterwards, so a PDC that follows the bit sees the new CFGCNT.
        """
        old = self._config.pmus[0]
        if rate is not None and not 10 <= rate <= 120:
            raise PmuSimError(f"rate = {rate!r}: 10..120 frames per second")
        if phasors is not None:
            self._phasor_spec = tuple(phasors)
        self._config = self._build_config(
            self._phasor_spec,
            rate=rate or self._config.data_rate,
            nominal_hz=old.nominal_hz,
            fmt=format or old.format,
            time_base=self._config.time_base,
            cfgcnt=(old.cfgcnt + 1) & 0xFFFF,
        )
        if self._source_given is None:
            self.source = self._default_source()
        self._block_sources = [b.source or self._default_source() for b in self.extra_blocks]
        self._config_changed_until = time.monotonic() + flag_s
        log.info("pmu_config_changed", idcode=self.idcode, cfgcnt=old.cfgcnt + 1)
        return self._config

    def stop_sending(self) -> None:
        """Data frames stop while connections stay up: the stream goes stale."""
        self._sending = False

    def resume_sending(self) -> None:
        self._sending = True

    def inject(self, data: bytes) -> None:
        """Write raw bytes (garbage, a damaged frame) to every TCP client, between frames."""
        for client in list(self._clients):
            client.writer.write(data)

    def drop_clients(self) -> None:
        """Close every client connection (a PMU reboot, a cable pulled at the PMU side)."""
        for client in list(self._clients):
            client.writer.close()
        self._clients.clear()

    # ---- frames --------------------------------------------------------------------------------------

    def _now_stamp(self) -> tuple[int, int]:
        now = self.clock()
        soc = int(now)
        return soc, min(int((now - soc) * self._config.time_base), self._config.time_base - 1)

    def _stat_and_quality(self, t: float) -> tuple[Stat, TimeQuality]:
        if self._sync_lost_at is None:
            tq = TimeQuality()
            pmu_tq = PmuTimeQuality.UNDER_1US if self._version == 2 else PmuTimeQuality.NOT_USED
            stat = Stat(time_quality=pmu_tq)
        else:
            lost_s = max(0.0, t - self._sync_lost_at)
            bucket = 0 if lost_s < 10 else 1 if lost_s < 100 else 2 if lost_s < 1000 else 3
            tq = TimeQuality(code=7 + bucket)  # Table 4: 10^(code-10) s: 1 ms .. 1 s
            pmu_tq = (PmuTimeQuality.UNDER_1MS, PmuTimeQuality.UNDER_10MS) + (PmuTimeQuality.OVER_10MS_OR_UNKNOWN,) * 2
            stat = Stat(
                sync_lost=True,
                time_quality=pmu_tq[bucket] if self._version == 2 else PmuTimeQuality.NOT_USED,
                unlocked_time=UnlockedTime(bucket),
            )
        if self.stat_override is not None:
            stat = self.stat_override
        if time.monotonic() < self._config_changed_until:
            stat = replace(stat, config_changed=True)
        if self.time_quality_override is not None:
            tq = self.time_quality_override
        return stat, tq

    def data_frame(self, k: int) -> DataFrame:
        """The data frame of grid instant ``k`` (time k / rate s since the epoch)."""
        cfg = self._config
        rate = cfg.data_rate
        soc, n = divmod(k, rate)
        fracsec = n * cfg.time_base // rate
        t = soc + n / rate
        stat, tq = self._stat_and_quality(t)
        sources = (self.source, *self._block_sources)
        blocks = [self._pmu_data(pmu, stat, source(t)) for pmu, source in zip(cfg.pmus, sources, strict=True)]
        return DataFrame.build(cfg, blocks, soc=soc, fracsec=fracsec, time_quality=tq)

    @staticmethod
    def _pmu_data(pmu: PmuConfig, stat: Stat, m: PmuMeasurement) -> PmuData:
        fmt = pmu.format
        if len(m.phasors) != pmu.phnmr:
            raise PmuSimError(f"source gave {len(m.phasors)} phasors; PMU {pmu.idcode} has {pmu.phnmr}")
        phasors = []
        for value, unit in zip(m.phasors, pmu.phasor_units, strict=True):
            if fmt.phasor_float:
                phasors.append((abs(value), cmath.phase(value)) if fmt.polar else (value.real, value.imag))
                continue
            k = unit.scale * 1e-5
            if fmt.polar:
                mag = min(65535, round(abs(value) / k))
                phasors.append((mag, round(cmath.phase(value) * 1e4)))
            else:
                phasors.append((_i16(value.real / k), _i16(value.imag / k)))
        if fmt.freq_float:
            freq, dfreq = m.frequency_hz, m.rocof_hz_per_s
        else:  # 6.3 Table 6: deviation from nominal in mHz; ROCOF x 100
            freq, dfreq = _i16((m.frequency_hz - pmu.nominal_hz) * 1000), _i16(m.rocof_hz_per_s * 100)
        analogs = tuple(float(a) if fmt.analog_float else _i16(a) for a in m.analogs)
        return PmuData(pmu, stat, tuple(phasors), freq, dfreq, analogs, tuple(m.digitals))

    async def _tick(self) -> None:
        """One frame per grid instant while anyone has data on; late ticks are skipped, not bunched.

        A frame is never stamped ahead of the clock: when the clock stands still (a bench stepped by hand,
        a simulated clock paused) no frame is sent until it reaches the next instant.
        """
        last_k = None
        while True:
            rate = self._config.data_rate
            now = self.clock()
            k = math.floor(now * rate) + 1
            if last_k is not None and k <= last_k:
                k = last_k + 1
            await asyncio.sleep(max(0.0, min(k / rate - now, 2.0 / rate)))
            if self.clock() < (k - 0.5) / rate:  # not there yet (half a period of slack for sleep jitter)
                continue
            last_k = k
            targets = [c for c in self._clients if c.data_on]
            if not targets or not self._sending:
                continue
            try:
                data = encode_frame(self.data_frame(k))
            except (FrameError, PmuSimError) as err:
                log.error("pmu_frame_failed", idcode=self.idcode, error=err)
                continue
            for client in targets:
                if client.udp_port is not None and self._udp is not None:
                    self._udp.sendto(data, (client.peer[0], client.udp_port))
                elif client.writer.transport.get_write_buffer_size() > _WRITE_BUFFER_LIMIT:
                    self.stats.data_frames_dropped += 1
                    continue
                else:
                    client.writer.write(data)
                self.stats.data_frames_sent += 1

    # ---- one client ----------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A handler cancelled by stop() ends quietly: asyncio's stream callback would log it as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve_client(reader, writer)

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = _Client(writer, (peer[0], peer[1]), udp_port=self.udp_port if self.udp_data else None)
        client.task = asyncio.current_task()
        self._clients.add(client)
        self.stats.connections += 1
        log.info("pdc_connected", idcode=self.idcode, peer=f"{peer[0]}:{peer[1]}")
        try:
            while chunk := await reader.read(4096):
                client.reader.feed(chunk)
                while (event := client.reader.next_event()) is not NEED_DATA:
                    if isinstance(event, CommandFrame):
                        self._command(client, event)
                    elif isinstance(event, FrameError):
                        self.stats.frame_errors += 1
                        log.warning("pdc_bad_frame", idcode=self.idcode, error=event)
                    else:
                        self.stats.ignored_commands += 1
                await writer.drain()
        except (ConnectionError, OSError) as err:
            log.info("pdc_connection_lost", idcode=self.idcode, error=err)
        finally:
            self._clients.discard(client)
            writer.close()
            log.info("pdc_disconnected", idcode=self.idcode, peer=f"{peer[0]}:{peer[1]}")

    def _command(self, client: _Client, cmd: CommandFrame) -> None:
        self.stats.commands += 1
        if self.strict_idcode and cmd.idcode != self.idcode:
            self.stats.ignored_commands += 1
            log.warning("pdc_command_ignored", idcode=self.idcode, to=cmd.idcode)
            return
        c = cmd.command
        if c == Command.DATA_OFF:
            client.data_on = False
        elif c == Command.DATA_ON:
            client.data_on = True
        elif c == Command.SEND_HEADER:
            soc, fracsec = self._now_stamp()
            text = f"GridEdge simulated PMU {self.station} IDCODE {self.idcode}, {self.rate} frames/s".encode()
            client.writer.write(encode_frame(HeaderFrame(idcode=self.idcode, soc=soc, fracsec=fracsec, data=text)))
        elif c in (Command.SEND_CFG1, Command.SEND_CFG2) or (c == Command.SEND_CFG3 and self._version == 2):
            ftype = {Command.SEND_CFG1: FrameType.CFG1, Command.SEND_CFG2: FrameType.CFG2}.get(c, FrameType.CFG3)
            cfg = self.config_frame(ftype)
            if isinstance(cfg, Config3Frame):  # in pieces when longer than cfg3_max_frame_size (6.4 Table 10)
                for data in encode_config3(cfg, self.cfg3_max_frame_size):
                    client.writer.write(data)
            else:
                client.writer.write(encode_frame(cfg))
        elif c == Command.EXTENDED and cmd.extended[:4] == UDP_PORT_COMMAND and len(cmd.extended) == 6:
            client.udp_port = int.from_bytes(cmd.extended[4:6], "big") or DEFAULT_UDP_PORT
        else:
            self.stats.ignored_commands += 1
            log.warning("pdc_command_ignored", idcode=self.idcode, cmd=c)


def _i16(x: float) -> int:
    return max(-32768, min(32767, round(x)))


__all__ = [
    "DEFAULT_FORMAT",
    "DEFAULT_PHASORS",
    "DEFAULT_PORT",
    "DEFAULT_UDP_PORT",
    "UDP_PORT_COMMAND",
    "PmuMeasurement",
    "PmuSimError",
    "SimPmu",
    "SimPmuBlock",
    "SimPmuStats",
    "balanced_source",
]
