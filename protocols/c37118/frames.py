"""The frames of IEEE C37.118.2-2011 (and the 2005 edition) as frozen, validated values.

Each class is plain data checked when built, with the clause of the standard beside each check; the
bytes live in :mod:`protocols.c37118.codec`. Field values are kept as they go on the wire (integer
phasors stay integers, integer FREQ stays a deviation in mHz) so that build-then-parse is the identity;
properties turn them into engineering units.

References: IEEE Std C37.118.2-2011, clause 6 (6.2 common words, 6.3 data frame, 6.4 configuration
frames, 6.5 header frame, 6.6 command frame); IEEE Std C37.118-2005, clause 9 (the same frames
without CFG-3).
"""

from __future__ import annotations

import cmath
import struct
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from fractions import Fraction

from protocols.c37118.errors import MalformedFrameError

MAX_FRAME_SIZE = 0xFFFF  # 6.2, Table 2: FRAMESIZE is a 16-bit count of bytes
HEADER_SIZE = 14  # SYNC 2 + FRAMESIZE 2 + IDCODE 2 + SOC 4 + FRACSEC 4
MIN_FRAME_SIZE = HEADER_SIZE + 2  # + CHK: a header frame with no text
VERSION_2005 = 1
VERSION_2011 = 2
VERSIONS = (VERSION_2005, VERSION_2011)
_F32 = struct.Struct(">f")


class FrameType(IntEnum):
    """6.2, Table 2: SYNC bits 6-4."""

    DATA = 0
    HEADER = 1
    CFG1 = 2
    CFG2 = 3
    COMMAND = 4
    CFG3 = 5


class Command(IntEnum):
    """6.6, Table 15: CMD codes (0-255 other than these reserved, 256-4095 user designated)."""

    DATA_OFF = 1
    DATA_ON = 2
    SEND_HEADER = 3
    SEND_CFG1 = 4
    SEND_CFG2 = 5
    SEND_CFG3 = 6  # 2011 only
    EXTENDED = 8


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise MalformedFrameError(message)


def _check_uint(value: int, bits: int, name: str, clause: str) -> None:
    _check(
        isinstance(value, int) and 0 <= value < (1 << bits),
        f"{name} = {value!r}: {clause} makes it an unsigned {bits}-bit integer",
    )


def _check_int(value: int, bits: int, name: str, clause: str) -> None:
    lim = 1 << (bits - 1)
    _check(
        isinstance(value, int) and -lim <= value < lim,
        f"{name} = {value!r}: {clause} makes it a signed {bits}-bit integer",
    )


# ---- time ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeQuality:
    """6.2.2, Table 3: the top byte of FRACSEC (bit 7 is reserved and ignored when read).

    ``code`` is the message time quality, Table 4: 0 = locked to UTC, 1..11 = within 10^(code-10) s
    (1 ns .. 10 s), 15 = clock failure.
    """

    leap_direction_negative: bool = False  # bit 6: 0 = add a second, 1 = delete one
    leap_occurred: bool = False  # bit 5
    leap_pending: bool = False  # bit 4
    code: int = 0  # bits 3-0

    def __post_init__(self) -> None:
        _check_uint(self.code, 4, "time quality code", "6.2.2 Table 3 (FRACSEC bits 27-24)")

    @property
    def byte(self) -> int:
        return (self.leap_direction_negative << 6) | (self.leap_occurred << 5) | (self.leap_pending << 4) | self.code

    @staticmethod
    def from_byte(byte: int) -> TimeQuality:
        return _TIME_QUALITY[byte & 0x7F]


_TIME_QUALITY = tuple(TimeQuality(bool(b & 0x40), bool(b & 0x20), bool(b & 0x10), b & 0x0F) for b in range(128))
LOCKED = _TIME_QUALITY[0]


@dataclass(frozen=True, slots=True)
class Timestamp:
    """An exact time: SOC + FRACSEC / TIME_BASE seconds since 1970-01-01 UTC (6.2.2).

    A float of a 2020s SOC keeps only ~0.2 µs, so the exact triple is the value and the float,
    Fraction and Decimal views are derived from it.
    """

    soc: int
    fracsec: int
    time_base: int

    def as_fraction(self) -> Fraction:
        return self.soc + Fraction(self.fracsec, self.time_base)

    def as_decimal(self) -> Decimal:
        return Decimal(self.soc) + Decimal(self.fracsec) / Decimal(self.time_base)

    def as_float(self) -> float:
        return self.soc + self.fracsec / self.time_base


# ---- data frame: STAT ---------------------------------------------------------------------------------


class DataError(IntEnum):
    """6.3, Table 7: STAT bits 15-14."""

    GOOD = 0
    PMU_ERROR = 1  # PMU error, no information about data
    TEST_MODE = 2  # PMU in test mode (do not use values) or absent data tags inserted
    PMU_ERROR_DO_NOT_USE = 3


class PmuTimeQuality(IntEnum):
    """6.3, Table 7: STAT bits 8-6, maximum time error (2011 only; 0 in 2005 frames)."""

    NOT_USED = 0
    UNDER_100NS = 1
    UNDER_1US = 2
    UNDER_10US = 3
    UNDER_100US = 4
    UNDER_1MS = 5
    UNDER_10MS = 6
    OVER_10MS_OR_UNKNOWN = 7


class UnlockedTime(IntEnum):
    """6.3, Table 7: STAT bits 5-4, time since the PMU lost sync."""

    LOCKED_OR_UNDER_10S = 0
    UNDER_100S = 1
    UNDER_1000S = 2
    OVER_1000S = 3


class TriggerReason(IntEnum):
    """6.3, Table 7: STAT bits 3-0 (8-15 are user definable)."""

    MANUAL = 0
    MAGNITUDE_LOW = 1
    MAGNITUDE_HIGH = 2
    PHASE_ANGLE_DIFF = 3
    FREQUENCY_HIGH_OR_LOW = 4
    DF_DT_HIGH = 5
    RESERVED = 6
    DIGITAL = 7


@dataclass(frozen=True, slots=True)
class Stat:
    """6.3, Table 7: the 16-bit STAT word of one PMU in a data frame, decoded."""

    data_error: int = DataError.GOOD  # bits 15-14
    sync_lost: bool = False  # bit 13: 1 = PMU not in sync with a UTC source
    sorted_by_arrival: bool = False  # bit 12: 0 = sorted by time stamp
    trigger: bool = False  # bit 11
    config_changed: bool = False  # bit 10: set for one minute before a configuration change
    data_modified: bool = False  # bit 9 (2011)
    time_quality: int = PmuTimeQuality.NOT_USED  # bits 8-6 (2011)
    unlocked_time: int = UnlockedTime.LOCKED_OR_UNDER_10S  # bits 5-4
    trigger_reason: int = TriggerReason.MANUAL  # bits 3-0

    def __post_init__(self) -> None:
        _check_uint(self.data_error, 2, "STAT data error", "6.3 Table 7 (bits 15-14)")
        _check_uint(self.time_quality, 3, "STAT PMU time quality", "6.3 Table 7 (bits 8-6)")
        _check_uint(self.unlocked_time, 2, "STAT unlocked time", "6.3 Table 7 (bits 5-4)")
        _check_uint(self.trigger_reason, 4, "STAT trigger reason", "6.3 Table 7 (bits 3-0)")

    @property
    def word(self) -> int:
        return (
            (self.data_error << 14)
            | (self.sync_lost << 13)
            | (self.sorted_by_arrival << 12)
            | (self.trigger << 11)
            | (self.config_changed << 10)
            | (self.data_modified << 9)
            | (self.time_quality << 6)
            | (self.unlocked_time << 4)
            | self.trigger_reason
        )

    @staticmethod
    def from_word(word: int) -> Stat:
        stat = _STATS.get(word)
        if stat is None:  # STAT words repeat frame after frame: build each once
            stat = _STATS[word] = Stat._from_word(word)
        return stat

    @staticmethod
    def _from_word(word: int) -> Stat:
        return Stat(
            DataError(word >> 14),
            bool(word & 0x2000),
            bool(word & 0x1000),
            bool(word & 0x0800),
            bool(word & 0x0400),
            bool(word & 0x0200),
            PmuTimeQuality((word >> 6) & 7),
            UnlockedTime((word >> 4) & 3),
            (word & 0xF) if (word & 0xF) > 7 else TriggerReason(word & 0xF),
        )


_STATS: dict[int, Stat] = {}  # at most 65536 entries


# ---- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataFormat:
    """6.4, Table 9: FORMAT, how one PMU's data frame values are encoded (bits 15-4 unused)."""

    freq_float: bool = False  # bit 3: FREQ/DFREQ 0 = 16-bit integer, 1 = float
    analog_float: bool = False  # bit 2
    phasor_float: bool = False  # bit 1
    polar: bool = False  # bit 0: 0 = rectangular (real, imaginary), 1 = polar (magnitude, angle)

    @property
    def word(self) -> int:
        return (self.freq_float << 3) | (self.analog_float << 2) | (self.phasor_float << 1) | self.polar

    @staticmethod
    def from_word(word: int) -> DataFormat:
        return DataFormat(bool(word & 8), bool(word & 4), bool(word & 2), bool(word & 1))


class PhasorKind(IntEnum):
    """6.4, Table 9: PHUNIT most significant byte."""

    VOLTAGE = 0
    CURRENT = 1


@dataclass(frozen=True, slots=True)
class PhasorUnit:
    """6.4, Table 9: PHUNIT; ``scale`` is 10^-5 V or A per bit of an integer phasor (ignored for floats)."""

    kind: int = PhasorKind.VOLTAGE
    scale: int = 1

    def __post_init__(self) -> None:
        _check_uint(self.kind, 8, "PHUNIT type", "6.4 Table 9 (PHUNIT byte 1)")
        _check_uint(self.scale, 24, "PHUNIT scale", "6.4 Table 9 (PHUNIT bytes 2-4)")


class AnalogKind(IntEnum):
    """6.4, Table 9: ANUNIT most significant byte (5-64 reserved, 65-255 user defined)."""

    POINT_ON_WAVE = 0
    RMS = 1
    PEAK = 2


@dataclass(frozen=True, slots=True)
class AnalogUnit:
    """6.4, Table 9: ANUNIT; ``scale`` is a signed 24-bit user-defined scaling."""

    kind: int = AnalogKind.POINT_ON_WAVE
    scale: int = 1

    def __post_init__(self) -> None:
        _check_uint(self.kind, 8, "ANUNIT type", "6.4 Table 9 (ANUNIT byte 1)")
        _check_int(self.scale, 24, "ANUNIT scale", "6.4 Table 9 (ANUNIT bytes 2-4)")


@dataclass(frozen=True, slots=True)
class DigitalUnit:
    """6.4, Table 9: DIGUNIT: the inputs' normal status and which inputs are valid (two bit masks)."""

    normal: int = 0
    valid: int = 0xFFFF

    def __post_init__(self) -> None:
        _check_uint(self.normal, 16, "DIGUNIT normal-status mask", "6.4 Table 9")
        _check_uint(self.valid, 16, "DIGUNIT valid-inputs mask", "6.4 Table 9")


@dataclass(frozen=True, slots=True)
class PhasorScale:
    """6.4, Table 11 (CFG-3 PHSCALE, 12 bytes): modification flags, type, user byte, scale, angle offset."""

    flags: int = 0  # 16-bit data-modification flags
    type_indicator: int = 0  # bits 2-0 phasor component, bit 3: 0 voltage, 1 current
    user: int = 0
    scale: float = 1.0  # magnitude multiplier (float32)
    angle_offset: float = 0.0  # radians added to the angle (float32)

    def __post_init__(self) -> None:
        _check_uint(self.flags, 16, "PHSCALE flags", "6.4 Table 11")
        _check_uint(self.type_indicator, 8, "PHSCALE type indicator", "6.4 Table 11")
        _check_uint(self.user, 8, "PHSCALE user byte", "6.4 Table 11")
        object.__setattr__(self, "scale", _f32(self.scale, "PHSCALE scale"))
        object.__setattr__(self, "angle_offset", _f32(self.angle_offset, "PHSCALE angle offset"))


@dataclass(frozen=True, slots=True)
class AnalogScale:
    """6.4, Table 11 (CFG-3 ANSCALE, 8 bytes): value = scale * x + offset (both float32)."""

    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _f32(self.scale, "ANSCALE scale"))
        object.__setattr__(self, "offset", _f32(self.offset, "ANSCALE offset"))


def _names(names: tuple[str, ...], what: str, cfg3: bool) -> None:
    for name in names:
        _check(isinstance(name, str), f"{what} name {name!r} is not a string")
        if cfg3:
            # 6.4 Table 12: a CFG-3 name is a length byte then 0-255 bytes of UTF-8.
            _check(len(name.encode("utf-8")) <= 255, f"{what} name {name!r}: CFG-3 names are at most 255 bytes")
        else:
            # 6.4 Table 9: CFG-1/2 names are 16 bytes of ASCII; read here as Latin-1, padded with spaces.
            try:
                raw = name.encode("latin-1")
            except UnicodeEncodeError as err:
                raise MalformedFrameError(f"{what} name {name!r}: CFG-1/2 names are 16 ASCII bytes") from err
            _check(len(raw) <= 16, f"{what} name {name!r}: CFG-1/2 names are at most 16 bytes (6.4 Table 9)")
            _check(raw == raw.rstrip(b" \0"), f"{what} name {name!r}: trailing spaces are padding and would be lost")


@dataclass(frozen=True, slots=True, kw_only=True)
class PmuConfig:
    """One PMU's block in a CFG-1 or CFG-2 frame (6.4, Table 8, fields 8-19).

    Digital channels come 16 names per 16-bit word, so ``digital_names`` has 16 x DGNMR entries.
    """

    station: str
    idcode: int
    format: DataFormat = DataFormat()
    phasor_names: tuple[str, ...] = ()
    analog_names: tuple[str, ...] = ()
    digital_names: tuple[str, ...] = ()
    phasor_units: tuple[PhasorUnit, ...] = ()
    analog_units: tuple[AnalogUnit, ...] = ()
    digital_units: tuple[DigitalUnit, ...] = ()
    nominal_hz: int = 60  # FNOM bit 0: 1 = 50 Hz, 0 = 60 Hz
    cfgcnt: int = 0

    def __post_init__(self) -> None:
        _names((self.station,), "station", False)
        self._check_common(False)
        _check(
            len(self.phasor_units) == len(self.phasor_names),
            f"PMU {self.idcode}: {len(self.phasor_units)} PHUNIT for {len(self.phasor_names)} phasors (6.4 Table 8)",
        )
        _check(
            len(self.analog_units) == len(self.analog_names),
            f"PMU {self.idcode}: {len(self.analog_units)} ANUNIT for {len(self.analog_names)} analogs (6.4 Table 8)",
        )

    def _check_common(self, cfg3: bool) -> None:
        _check_uint(self.idcode, 16, "IDCODE", "6.4 Table 8")
        _check(isinstance(self.format, DataFormat), f"FORMAT = {self.format!r}: a DataFormat")
        _names(self.phasor_names, "phasor", cfg3)
        _names(self.analog_names, "analog", cfg3)
        _names(self.digital_names, "digital", cfg3)
        _check(
            len(self.digital_names) % 16 == 0,
            f"PMU {self.idcode}: {len(self.digital_names)} digital names; 16 per digital word (6.4 Table 8 CHNAM)",
        )
        _check(
            len(self.digital_units) == len(self.digital_names) // 16,
            f"PMU {self.idcode}: {len(self.digital_units)} DIGUNIT for {len(self.digital_names) // 16} words",
        )
        _check(self.nominal_hz in (50, 60), f"FNOM = {self.nominal_hz!r} Hz: 50 or 60 (6.4 Table 9)")
        _check_uint(self.cfgcnt, 16, "CFGCNT", "6.4 Table 8")
        for count, what in (
            (len(self.phasor_names), "PHNMR"),
            (len(self.analog_names), "ANNMR"),
            (len(self.digital_units), "DGNMR"),
        ):
            _check_uint(count, 16, what, "6.4 Table 8")

    @property
    def phnmr(self) -> int:
        return len(self.phasor_names)

    @property
    def annmr(self) -> int:
        return len(self.analog_names)

    @property
    def dgnmr(self) -> int:
        return len(self.digital_names) // 16


@dataclass(frozen=True, slots=True, kw_only=True)
class PmuConfig3(PmuConfig):
    """One PMU's block in a CFG-3 frame (C37.118.2-2011, 6.4, Table 10, fields 9-27)."""

    global_id: bytes = bytes(16)  # G_PMU_ID, 16 bytes
    phasor_scales: tuple[PhasorScale, ...] = ()
    analog_scales: tuple[AnalogScale, ...] = ()
    latitude: float = 0.0  # PMU_LAT, degrees WGS84 (float32)
    longitude: float = 0.0  # PMU_LON
    elevation: float = 0.0  # PMU_ELEV, metres
    service_class: str = "P"  # SVC_CLASS: 'P' protection or 'M' measurement
    window: int = 0  # WINDOW, signed 32-bit (microseconds, negative = ms)
    group_delay: int = 0  # GRP_DLY, signed 32-bit

    def __post_init__(self) -> None:
        _names((self.station,), "station", True)
        self._check_common(True)
        _check(
            isinstance(self.global_id, bytes) and len(self.global_id) == 16,
            f"G_PMU_ID = {self.global_id!r}: 16 bytes (6.4 Table 10)",
        )
        _check(
            len(self.phasor_scales) == len(self.phasor_names),
            f"PMU {self.idcode}: {len(self.phasor_scales)} PHSCALE for {len(self.phasor_names)} phasors",
        )
        _check(
            len(self.analog_scales) == len(self.analog_names),
            f"PMU {self.idcode}: {len(self.analog_scales)} ANSCALE for {len(self.analog_names)} analogs",
        )
        _check(
            isinstance(self.service_class, str) and len(self.service_class.encode("latin-1", "replace")) == 1,
            f"SVC_CLASS = {self.service_class!r}: one character, 'P' or 'M' (6.4 Table 10)",
        )
        _check_int(self.window, 32, "WINDOW", "6.4 Table 10")
        _check_int(self.group_delay, 32, "GRP_DLY", "6.4 Table 10")
        for name in ("latitude", "longitude", "elevation"):
            object.__setattr__(self, name, _f32(getattr(self, name), name))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Common:
    """6.2.1, Table 2: the words every frame starts with (SYNC version, IDCODE, SOC, FRACSEC)."""

    idcode: int
    soc: int = 0
    fracsec: int = 0  # FRACSEC bits 23-0: count of TIME_BASE ticks
    time_quality: TimeQuality = LOCKED  # FRACSEC bits 31-24
    version: int = VERSION_2011

    def _check_common(self) -> None:
        _check_uint(self.idcode, 16, "IDCODE", "6.2.1 Table 2")
        _check_uint(self.soc, 32, "SOC", "6.2.1 Table 2")
        _check_uint(self.fracsec, 24, "FRACSEC fraction", "6.2.2 (FRACSEC bits 23-0)")
        _check(isinstance(self.time_quality, TimeQuality), f"time_quality = {self.time_quality!r}: a TimeQuality")
        _check(self.version in VERSIONS, f"version = {self.version!r}: 1 (2005) or 2 (2011) (6.2.1 Table 2 SYNC)")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigFrame(_Common):
    """A CFG-1 or CFG-2 frame (6.4, Table 8). CFG-2 describes the data being sent, CFG-1 what the PMU can send."""

    frame_type: FrameType = FrameType.CFG2
    time_base: int = 1_000_000
    pmus: tuple[PmuConfig, ...] = ()
    data_rate: int = 30

    def __post_init__(self) -> None:
        self._check_common()
        _check(
            self.frame_type in (FrameType.CFG1, FrameType.CFG2),
            f"frame_type = {self.frame_type!r}: CFG1 or CFG2 (use Config3Frame for CFG-3)",
        )
        self._check_body(PmuConfig)

    def _check_body(self, pmu_type: type) -> None:
        # 6.4 Table 8: TIME_BASE is a 24-bit resolution of FRACSEC (bits 31-24 reserved); 0 would divide by zero.
        _check(
            isinstance(self.time_base, int) and 0 < self.time_base < (1 << 24),
            f"TIME_BASE = {self.time_base!r}: 1..16777215 (6.4 Table 8)",
        )
        _check(len(self.pmus) >= 1, "NUM_PMU = 0: a configuration describes at least one PMU (6.4 Table 8)")
        _check_uint(len(self.pmus), 16, "NUM_PMU", "6.4 Table 8")
        for pmu in self.pmus:
            _check(type(pmu) is pmu_type, f"PMU {pmu!r}: a {pmu_type.__name__} in a {self.frame_type.name} frame")
        # 6.4 Table 8: DATA_RATE > 0 frames per second, < 0 seconds per frame; 0 is meaningless.
        _check_int(self.data_rate, 16, "DATA_RATE", "6.4 Table 8")
        _check(self.data_rate != 0, "DATA_RATE = 0: positive is frames/s, negative is s/frame (6.4 Table 8)")

    @property
    def frames_per_second(self) -> float:
        return float(self.data_rate) if self.data_rate > 0 else -1.0 / self.data_rate

    def timestamp(self) -> Timestamp:
        return Timestamp(self.soc, self.fracsec, self.time_base)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config3Frame(ConfigFrame):
    """A whole CFG-3 configuration (C37.118.2-2011, 6.4, Table 10), CONT_IDX 0.

    On the wire it is one frame, or several :class:`Config3Fragment` frames when it does not fit one
    (``codec.encode_config3`` splits it, ``codec.Cfg3Reassembler`` joins the pieces back into this value).
    """

    frame_type: FrameType = FrameType.CFG3
    pmus: tuple[PmuConfig3, ...] = ()
    cont_idx: int = 0

    def __post_init__(self) -> None:
        self._check_common()
        _check(self.frame_type is FrameType.CFG3, f"frame_type = {self.frame_type!r}: CFG3")
        _check(self.version >= VERSION_2011, "CFG-3 exists from C37.118.2-2011 (version 2) on")
        # 6.4 Table 10: CONT_IDX 0 = the only frame; 1.. continuation; 0xFFFF last. A whole configuration is
        # CONT_IDX 0; the pieces of a fragmented one are Config3Fragment values.
        _check(self.cont_idx == 0, f"CONT_IDX = {self.cont_idx!r}: a whole CFG-3 is 0 (pieces are Config3Fragment)")
        self._check_body(PmuConfig3)


CFG3_LAST_FRAGMENT = 0xFFFF  # 6.4 Table 10 CONT_IDX: the last frame of a fragmented CFG-3


@dataclass(frozen=True, slots=True, kw_only=True)
class Config3Fragment(_Common):
    """One frame of a CFG-3 sent in several frames (C37.118.2-2011, 6.4, Table 10, CONT_IDX != 0).

    ``cont_idx`` is 1, 2, ... in order and 0xFFFF on the last frame; ``data`` is this frame's piece of
    the configuration after CONT_IDX (TIME_BASE, NUM_PMU, the PMU blocks, DATA_RATE, concatenated in
    CONT_IDX order). The standard does not say more about how the pieces are cut (Wireshark's dissector
    notes the same and does not reassemble them); we cut at any byte and keep each frame's header.
    """

    cont_idx: int
    data: bytes

    def __post_init__(self) -> None:
        self._check_common()
        _check(self.version >= VERSION_2011, "CFG-3 exists from C37.118.2-2011 (version 2) on")
        _check(
            isinstance(self.cont_idx, int) and 1 <= self.cont_idx <= CFG3_LAST_FRAGMENT,
            f"CONT_IDX = {self.cont_idx!r}: a fragment is 1..65534 or 0xFFFF (last) (6.4 Table 10)",
        )
        _check(isinstance(self.data, bytes) and len(self.data) >= 1, "a CFG-3 fragment carries at least one byte")
        _check(
            len(self.data) <= MAX_FRAME_SIZE - HEADER_SIZE - 4,
            f"CFG-3 fragment of {len(self.data)} bytes: FRAMESIZE is 16 bits (6.2.1)",
        )

    @property
    def last(self) -> bool:
        return self.cont_idx == CFG3_LAST_FRAGMENT


# ---- data frame ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PmuData:
    """One PMU's measurements in a data frame (6.3, Table 5), values as on the wire.

    ``phasors`` are (real, imaginary) or (magnitude, angle) pairs per ``config.format``; integer polar
    angles are 10^-4 rad; integer FREQ is the deviation from nominal in mHz and integer DFREQ is
    ROCOF x 100 in Hz/s; float FREQ is the actual frequency in Hz and float DFREQ is Hz/s (6.3 Table 6).
    """

    config: PmuConfig
    stat: Stat
    phasors: tuple[tuple[float, float], ...]
    freq: float
    dfreq: float
    analogs: tuple[float, ...] = ()
    digitals: tuple[int, ...] = ()

    @property
    def frequency_hz(self) -> float:
        if self.config.format.freq_float:
            return float(self.freq)
        return self.config.nominal_hz + self.freq / 1000.0

    @property
    def rocof_hz_per_s(self) -> float:
        return float(self.dfreq) if self.config.format.freq_float else self.dfreq / 100.0

    @property
    def phasor_values(self) -> tuple[complex, ...]:
        """Phasors in volts or amperes (6.3 Table 6): integers times PHUNIT x 10^-5, angles 10^-4 rad."""
        fmt = self.config.format
        if isinstance(self.config, PmuConfig3):
            scales = [1.0 if fmt.phasor_float else s.scale for s in self.config.phasor_scales]
        else:
            scales = [1.0 if fmt.phasor_float else u.scale * 1e-5 for u in self.config.phasor_units]
        out = []
        for (a, b), k in zip(self.phasors, scales, strict=True):
            if fmt.polar:
                out.append(cmath.rect(a * k, b if fmt.phasor_float else b * 1e-4))
            else:
                out.append(complex(a * k, b * k))
        return tuple(out)


def pmu_value_count(pmu: PmuConfig) -> int:
    """Number of numbers one PMU contributes to a data frame: STAT, 2 per phasor, FREQ, DFREQ, analogs, digitals."""
    return 1 + 2 * pmu.phnmr + 2 + pmu.annmr + pmu.dgnmr


@dataclass(frozen=True, slots=True)
class DataFrame:
    """A data frame (6.3, Table 5), decoded against ``config``.

    ``words`` is the frame as numbers, in wire order: SYNC, FRAMESIZE, IDCODE, SOC, FRACSEC word, then
    per PMU STAT, phasor pairs, FREQ, DFREQ, analogs, digitals (CHK not included). Keeping that one
    tuple makes decoding a single ``struct.unpack`` (the hot path); :attr:`pmus` builds the per-PMU
    view when asked. Build one from measurements with :meth:`build`.
    """

    config: ConfigFrame
    words: tuple

    def __post_init__(self) -> None:
        _check(isinstance(self.config, ConfigFrame), f"config = {self.config!r}: a ConfigFrame")
        expected = 5 + sum(pmu_value_count(p) for p in self.config.pmus)
        _check(
            len(self.words) == expected,
            f"{len(self.words)} words for a configuration that makes {expected} (6.3 Table 5)",
        )
        sync = self.words[0]
        _check(sync >> 8 == 0xAA and (sync >> 4) & 7 == FrameType.DATA, f"SYNC = {sync:#06x}: not a data frame")
        _check((sync & 0xF) in VERSIONS, f"SYNC = {sync:#06x}: version 1 or 2")
        _check(
            self.words[1] == data_frame_size(self.config),
            f"FRAMESIZE = {self.words[1]!r}: the configuration makes {data_frame_size(self.config)} (6.3 Table 5)",
        )
        _check(
            self.words[2] == self.config.idcode,
            f"IDCODE = {self.words[2]!r}: the configuration is for IDCODE {self.config.idcode} (6.3 Table 5)",
        )
        _check_uint(self.words[3], 32, "SOC", "6.2.1 Table 2")
        _check_uint(self.words[4], 32, "FRACSEC", "6.2.2")
        i = 5
        for pmu in self.config.pmus:
            fmt = pmu.format
            _check_uint(self.words[i], 16, "STAT", "6.3 Table 7")
            i += 1
            for _ in range(pmu.phnmr):
                a, b = self.words[i], self.words[i + 1]
                if fmt.phasor_float:
                    _check(isinstance(a, float) and isinstance(b, float), "float phasors are floats (6.3 Table 6)")
                elif fmt.polar:
                    _check_uint(a, 16, "phasor magnitude", "6.3 Table 6 (16-bit unsigned)")
                    _check_int(b, 16, "phasor angle", "6.3 Table 6 (radians x 10^4)")
                else:
                    _check_int(a, 16, "phasor real", "6.3 Table 6")
                    _check_int(b, 16, "phasor imaginary", "6.3 Table 6")
                i += 2
            for _ in range(2):
                if fmt.freq_float:
                    _check(isinstance(self.words[i], float), "float FREQ/DFREQ are floats (6.3 Table 6)")
                else:
                    _check_int(self.words[i], 16, "FREQ/DFREQ", "6.3 Table 6")
                i += 1
            for _ in range(pmu.annmr):
                if fmt.analog_float:
                    _check(isinstance(self.words[i], float), "float analogs are floats (6.3 Table 6)")
                else:
                    _check_int(self.words[i], 16, "ANALOG", "6.3 Table 6")
                i += 1
            for _ in range(pmu.dgnmr):
                _check_uint(self.words[i], 16, "DIGITAL", "6.3 Table 6")
                i += 1

    @staticmethod
    def build(
        config: ConfigFrame,
        pmus: tuple[PmuData, ...] | list[PmuData],
        *,
        soc: int = 0,
        fracsec: int = 0,
        time_quality: TimeQuality = LOCKED,
        version: int | None = None,
    ) -> DataFrame:
        """A data frame for ``config`` from one :class:`PmuData` per configured PMU, in order."""
        _check(len(pmus) == len(config.pmus), f"{len(pmus)} PMU blocks for a configuration of {len(config.pmus)}")
        _check_uint(fracsec, 24, "FRACSEC fraction", "6.2.2")
        _check(isinstance(time_quality, TimeQuality), f"time_quality = {time_quality!r}: a TimeQuality")
        version = config.version if version is None else version
        words: list = [0xAA00 | version, 0, config.idcode, soc, (time_quality.byte << 24) | fracsec]
        for data, pcfg in zip(pmus, config.pmus, strict=True):
            _check(
                len(data.phasors) == pcfg.phnmr,
                f"PMU {pcfg.idcode}: {len(data.phasors)} phasors, {pcfg.phnmr} configured",
            )
            _check(
                len(data.analogs) == pcfg.annmr,
                f"PMU {pcfg.idcode}: {len(data.analogs)} analogs, {pcfg.annmr} configured",
            )
            _check(
                len(data.digitals) == pcfg.dgnmr,
                f"PMU {pcfg.idcode}: {len(data.digitals)} digitals, {pcfg.dgnmr} configured",
            )
            words.append(data.stat.word)
            for pair in data.phasors:
                words.extend(_num(v, pcfg.format.phasor_float) for v in pair)
            words.append(_num(data.freq, pcfg.format.freq_float))
            words.append(_num(data.dfreq, pcfg.format.freq_float))
            words.extend(_num(v, pcfg.format.analog_float) for v in data.analogs)
            words.extend(data.digitals)
        words[1] = data_frame_size(config)
        return DataFrame(config, tuple(words))

    @staticmethod
    def block_offsets(config: ConfigFrame) -> tuple[int, ...]:
        """Index in :attr:`words` of each PMU block's STAT word for ``config`` (6.3 Table 5 order).

        A block's values follow its STAT: phasor pairs, FREQ, DFREQ, analogs, digitals
        (:func:`pmu_value_count` numbers in all). ``frame.block_offsets(frame.config)`` for a decoded frame.
        """
        out = []
        i = 5  # SYNC, FRAMESIZE, IDCODE, SOC, FRACSEC
        for pmu in config.pmus:
            out.append(i)
            i += pmu_value_count(pmu)
        return tuple(out)

    @property
    def sync(self) -> int:
        return self.words[0]

    @property
    def version(self) -> int:
        return self.words[0] & 0xF

    @property
    def idcode(self) -> int:
        return self.words[2]

    @property
    def soc(self) -> int:
        return self.words[3]

    @property
    def fracsec(self) -> int:
        return self.words[4] & 0xFFFFFF

    @property
    def time_quality(self) -> TimeQuality:
        return _TIME_QUALITY[(self.words[4] >> 24) & 0x7F]

    @property
    def timestamp(self) -> Timestamp:
        return Timestamp(self.words[3], self.words[4] & 0xFFFFFF, self.config.time_base)

    @property
    def pmus(self) -> tuple[PmuData, ...]:
        out = []
        w = self.words
        i = 5
        for pcfg in self.config.pmus:
            stat = Stat.from_word(w[i])
            i += 1
            n = 2 * pcfg.phnmr
            flat = w[i : i + n]
            phasors = tuple(zip(flat[0::2], flat[1::2], strict=True))
            i += n
            freq, dfreq = w[i], w[i + 1]
            i += 2
            analogs = w[i : i + pcfg.annmr]
            i += pcfg.annmr
            digitals = w[i : i + pcfg.dgnmr]
            i += pcfg.dgnmr
            out.append(PmuData(pcfg, stat, phasors, freq, dfreq, analogs, digitals))
        return tuple(out)


def _f32(value: float, what: str) -> float:
    """``value`` as the float32 the wire carries (6.3 Table 6: IEEE single precision), so build == parse."""
    _check(isinstance(value, int | float) and not isinstance(value, bool), f"{what} = {value!r}: not a number")
    try:
        return _F32.unpack(_F32.pack(value))[0]
    except OverflowError as err:
        raise MalformedFrameError(f"{what} = {value!r}: out of float32 range") from err


def _num(value: float, is_float: bool) -> float:
    if is_float:
        return _f32(value, "float field")
    _check(isinstance(value, int) and not isinstance(value, bool), f"{value!r}: an integer field (FORMAT says 16-bit)")
    return value


def data_frame_size(config: ConfigFrame) -> int:
    """FRAMESIZE of a data frame for ``config`` (6.3 Table 5)."""
    size = HEADER_SIZE + 2
    for p in config.pmus:
        f = p.format
        size += 2 + p.phnmr * (8 if f.phasor_float else 4) + (8 if f.freq_float else 4)
        size += p.annmr * (4 if f.analog_float else 2) + 2 * p.dgnmr
    return size


# ---- header and command -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderFrame(_Common):
    """A header frame (6.5, Table 13): free ASCII text about the PMU and its algorithms."""

    data: bytes = b""

    def __post_init__(self) -> None:
        self._check_common()
        _check(isinstance(self.data, bytes), f"header data {self.data!r}: bytes")
        _check(len(self.data) <= MAX_FRAME_SIZE - MIN_FRAME_SIZE, f"header of {len(self.data)} bytes: too long")

    @property
    def text(self) -> str:
        return self.data.decode("ascii", "replace")


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandFrame(_Common):
    """A command frame (6.6, Table 14): CMD, and for CMD 8 (extended frame) up to 65518 bytes of 16-bit words."""

    command: int = Command.DATA_ON
    extended: bytes = b""

    def __post_init__(self) -> None:
        self._check_common()
        _check_uint(self.command, 16, "CMD", "6.6 Table 15")
        _check(isinstance(self.extended, bytes), f"extended frame {self.extended!r}: bytes")
        _check(
            not self.extended or self.command == Command.EXTENDED,
            f"CMD = {self.command}: only CMD 8 carries extended frame data (6.6 Table 15)",
        )
        _check(
            len(self.extended) <= 65518 and len(self.extended) % 2 == 0,
            f"extended frame of {len(self.extended)} bytes: 16-bit words, at most 65518 bytes (6.6 Table 14)",
        )


Frame = DataFrame | HeaderFrame | ConfigFrame | Config3Frame | Config3Fragment | CommandFrame

__all__ = [
    "CFG3_LAST_FRAGMENT",
    "MAX_FRAME_SIZE",
    "MIN_FRAME_SIZE",
    "AnalogKind",
    "AnalogScale",
    "AnalogUnit",
    "Command",
    "CommandFrame",
    "Config3Fragment",
    "Config3Frame",
    "ConfigFrame",
    "DataError",
    "DataFormat",
    "DataFrame",
    "DigitalUnit",
    "Frame",
    "FrameType",
    "HeaderFrame",
    "PhasorKind",
    "PhasorScale",
    "PhasorUnit",
    "PmuConfig",
    "PmuConfig3",
    "PmuData",
    "PmuTimeQuality",
    "Stat",
    "TimeQuality",
    "Timestamp",
    "TriggerReason",
    "UnlockedTime",
    "data_frame_size",
]
