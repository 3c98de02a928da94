"""Bytes <-> frames for IEEE C37.118.2-2011 (and 2005): pure functions, no sockets.

:func:`decode_frame` takes exactly one frame and returns a frame value or raises a typed
:class:`~protocols.c37118.errors.FrameError`; :func:`encode_frame` is its inverse. Data frames can only
be read with their configuration; :class:`DataCodec` precompiles one ``struct.Struct`` per
configuration so that decoding a data frame is one ``unpack`` and one C CRC (the hot path).

CHK (6.2.1, Table 2) is CRC-CCITT: polynomial 0x1021, initial value 0xFFFF, no final XOR, over every
byte of the frame before CHK; ``binascii.crc_hqx(data, 0xFFFF)`` computes exactly that.
"""

from __future__ import annotations

import struct
from binascii import crc_hqx

from protocols.c37118.errors import (
    ConfigMismatchError,
    CrcError,
    FragmentError,
    FrameError,
    MalformedFrameError,
    SizeError,
    SyncError,
    VersionError,
)
from protocols.c37118.frames import (
    CFG3_LAST_FRAGMENT,
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    MIN_FRAME_SIZE,
    VERSION_2011,
    VERSIONS,
    AnalogScale,
    AnalogUnit,
    CommandFrame,
    Config3Fragment,
    Config3Frame,
    ConfigFrame,
    DataFormat,
    DataFrame,
    DigitalUnit,
    Frame,
    FrameType,
    HeaderFrame,
    PhasorScale,
    PhasorUnit,
    PmuConfig,
    PmuConfig3,
    TimeQuality,
    data_frame_size,
)

_HEADER = struct.Struct(">HHHII")  # SYNC, FRAMESIZE, IDCODE, SOC, FRACSEC (6.2.1 Table 2)
_U16 = struct.Struct(">H")
_I16 = struct.Struct(">h")
_U32 = struct.Struct(">I")
_PMU_HEAD = struct.Struct(">HHHHH")  # IDCODE, FORMAT, PHNMR, ANNMR, DGNMR
_PMU_TAIL = struct.Struct(">HH")  # FNOM, CFGCNT
_UNIT = struct.Struct(">I")
_DIGUNIT = struct.Struct(">HH")
_PHSCALE = struct.Struct(">HBBff")
_ANSCALE = struct.Struct(">ff")
_CFG3_PLACE = struct.Struct(">fffciiHH")  # PMU_LAT, PMU_LON, PMU_ELEV, SVC_CLASS, WINDOW, GRP_DLY, FNOM, CFGCNT

#: The smallest FRAMESIZE of each frame type, indexed by :class:`FrameType`: the common words SYNC, FRAMESIZE,
#: IDCODE, SOC and FRACSEC (HEADER_SIZE, 6.2 Table 2), CHK (2), and the fixed words of the type's body.
#: :func:`check_frame` refuses a smaller FRAMESIZE and the stream reader resynchronises on one. A CFG-3 piece
#: may be as short as its CONT_IDX (a whole CFG-3 is then checked field by field).
MIN_FRAME_SIZES: tuple[int, ...] = (
    HEADER_SIZE + 2 + 2,  # DATA: one STAT (6.3 Table 5)
    HEADER_SIZE + 2,  # HEADER: the text may be empty (6.5 Table 13)
    HEADER_SIZE + 2 + 8,  # CFG-1: TIME_BASE 4, NUM_PMU 2 (then the PMU blocks), DATA_RATE 2 (6.4 Table 8)
    HEADER_SIZE + 2 + 8,  # CFG-2: as CFG-1 (6.4 Table 8)
    HEADER_SIZE + 2 + 2,  # COMMAND: CMD (6.6 Table 14)
    HEADER_SIZE + 2 + 2,  # CFG-3: CONT_IDX (6.4 Table 10)
)
assert len(MIN_FRAME_SIZES) == len(FrameType)


def crc_ccitt(data: bytes | bytearray | memoryview) -> int:
    """CHK of 6.2.1: CRC-CCITT (0x1021, init 0xFFFF, no final XOR)."""
    return crc_hqx(data, 0xFFFF)


def sync_plausible(second: int) -> bool:
    """Whether a byte after 0xAA can be the second SYNC byte: bit 7 zero, a defined type, a known version."""
    return second < 0x60 and (second & 0x0F) in VERSIONS


# ---- the common frame checks --------------------------------------------------------------------------


def check_frame(data: bytes | bytearray | memoryview) -> tuple[FrameType, int, int]:
    """Check SYNC, FRAMESIZE and CHK of one whole frame; return (type, version, IDCODE) or raise."""
    n = len(data)
    if n < 4:
        raise SizeError(f"{n} bytes cannot hold a frame (at least {MIN_FRAME_SIZE}, 6.2.1 Table 2)", n)
    if data[0] != 0xAA:
        raise SyncError(f"SYNC byte {data[0]:#04x}, not 0xAA (6.2.1 Table 2)")
    second = data[1]
    version = second & 0x0F
    if version not in VERSIONS:
        raise VersionError(f"SYNC version {version}: this codec reads 1 (2005) and 2 (2011)", version)
    if second & 0x80 or (second >> 4) > FrameType.CFG3:
        raise SyncError(f"SYNC second byte {second:#04x}: frame type {(second >> 4) & 7} is not defined (6.2.1)")
    ftype = FrameType(second >> 4)
    size = (data[2] << 8) | data[3]
    if size < MIN_FRAME_SIZES[ftype]:
        raise SizeError(f"FRAMESIZE {size}: a {ftype.name} frame takes at least {MIN_FRAME_SIZES[ftype]}", size)
    if size != n:
        raise SizeError(f"FRAMESIZE {size} but {n} bytes given", size)
    expected = crc_hqx(data[:-2], 0xFFFF)
    actual = (data[-2] << 8) | data[-1]
    if expected != actual:
        raise CrcError(f"CHK {actual:#06x}, computed {expected:#06x}", expected, actual)
    if ftype is FrameType.CFG3 and version < VERSION_2011:
        raise VersionError("a CFG-3 frame in a version 1 (2005) stream: CFG-3 exists from 2011 on", version)
    return ftype, version, (data[4] << 8) | data[5]


def _finish(head: bytes | bytearray, body: bytes) -> bytes:
    frame = bytearray(head)
    frame += body
    frame += b"\0\0"
    size = len(frame)
    if size > MAX_FRAME_SIZE:
        raise SizeError(f"frame of {size} bytes: FRAMESIZE is 16 bits, at most {MAX_FRAME_SIZE} (6.2.1)", size)
    frame[2:4] = _U16.pack(size)
    frame[-2:] = _U16.pack(crc_hqx(memoryview(frame)[:-2], 0xFFFF))
    return bytes(frame)


def _head(ftype: FrameType, frame: HeaderFrame | CommandFrame | ConfigFrame | Config3Fragment) -> bytes:
    return _HEADER.pack(
        0xAA00 | (ftype << 4) | frame.version,
        0,
        frame.idcode,
        frame.soc,
        (frame.time_quality.byte << 24) | frame.fracsec,
    )


# ---- data frames: one precompiled Struct per configuration --------------------------------------------


def _pmu_format(pmu: PmuConfig) -> str:
    f = pmu.format
    phasor = ("ff" if f.phasor_float else "Hh" if f.polar else "hh") * pmu.phnmr
    freq = "ff" if f.freq_float else "hh"
    analog = ("f" if f.analog_float else "h") * pmu.annmr
    return "H" + phasor + freq + analog + "H" * pmu.dgnmr


_new = object.__new__
_set_config = DataFrame.__dict__["config"].__set__
_set_words = DataFrame.__dict__["words"].__set__


class DataCodec:
    """Encodes and decodes the data frames of one configuration (6.3, Table 5), precompiled.

    The whole frame but CHK is one ``struct.Struct``; ``decode`` is one length check, one unpack,
    a SYNC/FRAMESIZE/IDCODE comparison and a C CRC, and anything unexpected goes to the slow path
    (:func:`check_frame`) for a precise typed error.
    """

    __slots__ = ("config", "size", "_struct", "_unpack_from", "_idcode", "_sync1", "_sync2")

    def __init__(self, config: ConfigFrame) -> None:
        self.config = config
        self.size = data_frame_size(config)
        self._struct = struct.Struct(">HHHII" + "".join(_pmu_format(p) for p in config.pmus))
        self._unpack_from = self._struct.unpack_from
        self._idcode = config.idcode
        self._sync1 = 0xAA01
        self._sync2 = 0xAA02

    def decode(self, data: bytes | bytearray | memoryview) -> DataFrame:
        if len(data) == self.size:
            w = self._unpack_from(data)
            if (
                (w[0] == self._sync2 or w[0] == self._sync1)
                and w[1] == self.size
                and w[2] == self._idcode
                and crc_hqx(data[:-2], 0xFFFF) == (data[-2] << 8) | data[-1]
            ):
                frame = _new(DataFrame)
                _set_config(frame, self.config)
                _set_words(frame, w)
                return frame
        return self._slow(data)

    def decode_run(self, buf: bytes | bytearray, pos: int, out: list[DataFrame]) -> int:
        """Decode the frames of this configuration that follow one another in ``buf`` from ``pos`` into ``out``.

        Each one as :meth:`decode` would give it, without a copy of the frame: it stops at the first that is
        not whole, not this configuration's (SYNC, FRAMESIZE, IDCODE) or fails its CHK, and returns where
        that one starts (``pos`` when none was decoded), for the caller to decide about it.
        """
        size, unpack_from, config, idcode = self.size, self._unpack_from, self.config, self._idcode
        sync1, sync2 = self._sync1, self._sync2
        append = out.append
        last = len(buf) - size  # the last position a whole frame can start at
        while pos <= last:
            w = unpack_from(buf, pos)
            chk = pos + size - 2
            if not (
                (w[0] == sync2 or w[0] == sync1)
                and w[1] == size
                and w[2] == idcode
                and crc_hqx(buf[pos:chk], 0xFFFF) == (buf[chk] << 8) | buf[chk + 1]
            ):
                break
            frame = _new(DataFrame)
            _set_config(frame, config)
            _set_words(frame, w)
            append(frame)
            pos += size
        return pos

    def _slow(self, data: bytes | bytearray | memoryview) -> DataFrame:
        ftype, _, idcode = check_frame(data)
        if ftype is not FrameType.DATA:
            raise ConfigMismatchError(f"a {ftype.name} frame given to a data frame decoder", idcode)
        if idcode != self._idcode:
            raise ConfigMismatchError(
                f"data frame IDCODE {idcode}, configuration for IDCODE {self._idcode} (6.3)", idcode
            )
        raise ConfigMismatchError(
            f"data frame of {len(data)} bytes, its configuration makes {self.size} (6.3 Table 5)", idcode
        )

    def encode(self, frame: DataFrame) -> bytes:
        if frame.config != self.config:
            raise ConfigMismatchError("data frame built for another configuration", frame.idcode)
        body = self._struct.pack(*frame.words)
        return body + _U16.pack(crc_hqx(body, 0xFFFF))


_CODECS: dict[int, tuple[ConfigFrame, DataCodec]] = {}


def data_codec(config: ConfigFrame) -> DataCodec:
    """The (cached) :class:`DataCodec` of ``config``; the cache holds the config so its id stays unique."""
    hit = _CODECS.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    if len(_CODECS) >= 256:
        _CODECS.clear()
    codec = DataCodec(config)
    _CODECS[id(config)] = (config, codec)
    return codec


# ---- configuration frames -----------------------------------------------------------------------------


class _Cursor:
    """Reads fields from a frame body with bounds: running past the end is a MalformedFrameError."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: memoryview, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > self.end:
            raise MalformedFrameError(f"frame ends inside {what} (needs {n} bytes at offset {self.pos})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        return st.unpack(self.take(st.size, what))


def _name16(raw: memoryview) -> str:
    # 6.4 Table 9: 16 bytes of ASCII; read as Latin-1 so any byte survives, padding (spaces, NULs) dropped.
    return bytes(raw).rstrip(b" \0").decode("latin-1")


def _name3(cur: _Cursor, what: str) -> str:
    # 6.4 Table 12 (CFG-3): one length byte, then that many bytes of UTF-8.
    (n,) = cur.take(1, what + " length")
    raw = bytes(cur.take(n, what))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedFrameError(f"{what} {raw!r} is not UTF-8 (6.4 Table 12)") from err


def _decode_pmu(cur: _Cursor, cfg3: bool) -> PmuConfig:
    if cfg3:
        station = _name3(cur, "STN")
        (idcode,) = cur.unpack(_U16, "IDCODE")
        global_id = bytes(cur.take(16, "G_PMU_ID"))
    else:
        station = _name16(cur.take(16, "STN"))
        (idcode,) = cur.unpack(_U16, "IDCODE")
    fmt, phnmr, annmr, dgnmr = cur.unpack(struct.Struct(">HHHH"), "FORMAT/PHNMR/ANNMR/DGNMR")
    n_names = phnmr + annmr + 16 * dgnmr
    if cfg3:
        names = [_name3(cur, "CHNAM") for _ in range(n_names)]
    else:
        raw = cur.take(16 * n_names, "CHNAM")
        names = [_name16(raw[16 * i : 16 * i + 16]) for i in range(n_names)]
    common = {
        "station": station,
        "idcode": idcode,
        "format": DataFormat.from_word(fmt),
        "phasor_names": tuple(names[:phnmr]),
        "analog_names": tuple(names[phnmr : phnmr + annmr]),
        "digital_names": tuple(names[phnmr + annmr :]),
    }
    if cfg3:
        phs = cur.take(12 * phnmr, "PHSCALE")
        phasor_scales = tuple(PhasorScale(*_PHSCALE.unpack_from(phs, 12 * i)) for i in range(phnmr))
        ans = cur.take(8 * annmr, "ANSCALE")
        analog_scales = tuple(AnalogScale(*_ANSCALE.unpack_from(ans, 8 * i)) for i in range(annmr))
    else:
        phu = cur.take(4 * phnmr, "PHUNIT")
        phasor_units = []
        for i in range(phnmr):
            (word,) = _UNIT.unpack_from(phu, 4 * i)
            phasor_units.append(PhasorUnit(word >> 24, word & 0xFFFFFF))
        anu = cur.take(4 * annmr, "ANUNIT")
        analog_units = []
        for i in range(annmr):
            (word,) = _UNIT.unpack_from(anu, 4 * i)
            scale = word & 0xFFFFFF
            analog_units.append(AnalogUnit(word >> 24, scale - (1 << 24) if scale & 0x800000 else scale))
    dgu = cur.take(4 * dgnmr, "DIGUNIT")
    digital_units = tuple(DigitalUnit(*_DIGUNIT.unpack_from(dgu, 4 * i)) for i in range(dgnmr))
    if cfg3:
        lat, lon, elev, svc, window, delay, fnom, cfgcnt = cur.unpack(_CFG3_PLACE, "PMU_LAT..CFGCNT")
        return PmuConfig3(
            **common,
            global_id=global_id,
            phasor_scales=phasor_scales,
            analog_scales=analog_scales,
            digital_units=digital_units,
            latitude=lat,
            longitude=lon,
            elevation=elev,
            service_class=svc.decode("latin-1"),
            window=window,
            group_delay=delay,
            nominal_hz=50 if fnom & 1 else 60,
            cfgcnt=cfgcnt,
        )
    fnom, cfgcnt = cur.unpack(_PMU_TAIL, "FNOM/CFGCNT")
    return PmuConfig(
        **common,
        phasor_units=tuple(phasor_units),
        analog_units=tuple(analog_units),
        digital_units=digital_units,
        nominal_hz=50 if fnom & 1 else 60,
        cfgcnt=cfgcnt,
    )


def _decode_config(data: memoryview, ftype: FrameType, version: int, idcode: int) -> ConfigFrame | Config3Fragment:
    _, _, _, soc, fracsec = _HEADER.unpack_from(data)
    cur = _Cursor(data, HEADER_SIZE, len(data) - 2)
    cfg3 = ftype is FrameType.CFG3
    cont_idx = cur.unpack(_U16, "CONT_IDX")[0] if cfg3 else 0
    if cont_idx != 0:  # one piece of a CFG-3 sent in several frames (6.4 Table 10): joined by Cfg3Reassembler
        return Config3Fragment(
            idcode=idcode,
            soc=soc,
            fracsec=fracsec & 0xFFFFFF,
            time_quality=TimeQuality.from_byte(fracsec >> 24),
            version=version,
            cont_idx=cont_idx,
            data=bytes(data[cur.pos : cur.end]),
        )
    return _decode_config_body(cur, ftype, version, idcode, soc, fracsec)


def _decode_config_body(
    cur: _Cursor, ftype: FrameType, version: int, idcode: int, soc: int, fracsec: int
) -> ConfigFrame:
    """TIME_BASE .. DATA_RATE at ``cur`` (a frame after its header and CONT_IDX, or reassembled pieces)."""
    cfg3 = ftype is FrameType.CFG3
    (time_base,) = cur.unpack(_U32, "TIME_BASE")
    (num_pmu,) = cur.unpack(_U16, "NUM_PMU")
    if num_pmu == 0:
        raise MalformedFrameError("NUM_PMU = 0: a configuration describes at least one PMU (6.4 Table 8)")
    pmus = tuple(_decode_pmu(cur, cfg3) for _ in range(num_pmu))
    (data_rate,) = cur.unpack(_I16, "DATA_RATE")
    if cur.pos != cur.end:
        raise MalformedFrameError(f"{cur.end - cur.pos} bytes after DATA_RATE: FRAMESIZE disagrees with NUM_PMU")
    common = {
        "idcode": idcode,
        "soc": soc,
        "fracsec": fracsec & 0xFFFFFF,
        "time_quality": TimeQuality.from_byte(fracsec >> 24),
        "version": version,
        "time_base": time_base & 0xFFFFFF,  # bits 31-24 are reserved flags (6.4 Table 8)
        "pmus": pmus,
        "data_rate": data_rate,
    }
    if cfg3:
        return Config3Frame(**common)
    return ConfigFrame(frame_type=ftype, **common)


def _encode_name16(name: str) -> bytes:
    return name.encode("latin-1").ljust(16, b" ")


def _encode_name3(name: str) -> bytes:
    raw = name.encode("utf-8")
    return bytes((len(raw),)) + raw


def _encode_config(frame: ConfigFrame) -> bytes:
    cfg3 = isinstance(frame, Config3Frame)
    return (_U16.pack(frame.cont_idx) if cfg3 else b"") + _encode_config_body(frame)


def _encode_config_body(frame: ConfigFrame) -> bytes:
    """TIME_BASE .. DATA_RATE: what follows CONT_IDX in a CFG-3 (and SOC/FRACSEC in CFG-1/2)."""
    cfg3 = isinstance(frame, Config3Frame)
    parts = [_U32.pack(frame.time_base)]
    parts.append(_U16.pack(len(frame.pmus)))
    for pmu in frame.pmus:
        names = (*pmu.phasor_names, *pmu.analog_names, *pmu.digital_names)
        if cfg3:
            parts.append(_encode_name3(pmu.station))
            parts.append(_U16.pack(pmu.idcode) + pmu.global_id)
        else:
            parts.append(_encode_name16(pmu.station) + _U16.pack(pmu.idcode))
        parts.append(struct.pack(">HHHH", pmu.format.word, pmu.phnmr, pmu.annmr, pmu.dgnmr))
        if cfg3:
            parts.extend(_encode_name3(n) for n in names)
            parts.extend(
                _PHSCALE.pack(s.flags, s.type_indicator, s.user, s.scale, s.angle_offset) for s in pmu.phasor_scales
            )
            parts.extend(_ANSCALE.pack(s.scale, s.offset) for s in pmu.analog_scales)
        else:
            parts.extend(_encode_name16(n) for n in names)
            parts.extend(_UNIT.pack((u.kind << 24) | u.scale) for u in pmu.phasor_units)
            parts.extend(_UNIT.pack((u.kind << 24) | (u.scale & 0xFFFFFF)) for u in pmu.analog_units)
        parts.extend(_DIGUNIT.pack(d.normal, d.valid) for d in pmu.digital_units)
        fnom = 1 if pmu.nominal_hz == 50 else 0
        if cfg3:
            parts.append(
                _CFG3_PLACE.pack(
                    pmu.latitude,
                    pmu.longitude,
                    pmu.elevation,
                    pmu.service_class.encode("latin-1", "replace"),
                    pmu.window,
                    pmu.group_delay,
                    fnom,
                    pmu.cfgcnt,
                )
            )
        else:
            parts.append(_PMU_TAIL.pack(fnom, pmu.cfgcnt))
    parts.append(_I16.pack(frame.data_rate))
    return b"".join(parts)


# ---- public entry points ------------------------------------------------------------------------------


def decode_frame(data: bytes | bytearray | memoryview, config: ConfigFrame | None = None) -> Frame:
    """One whole frame -> its value. A data frame needs ``config`` (the CFG-2/CFG-3 of its stream).

    Raises a :class:`FrameError` subclass: SyncError, VersionError, SizeError, CrcError,
    ConfigMismatchError (data frame without or against its configuration), MalformedFrameError.
    """
    ftype, version, idcode = check_frame(data)
    if ftype is FrameType.DATA:
        if config is None:
            raise ConfigMismatchError(f"data frame from IDCODE {idcode} with no configuration to read it", idcode)
        return data_codec(config).decode(data)
    view = memoryview(data)
    try:
        if ftype in (FrameType.CFG1, FrameType.CFG2, FrameType.CFG3):
            return _decode_config(view, ftype, version, idcode)
        _, _, _, soc, fracsec = _HEADER.unpack_from(view)
        common = {
            "idcode": idcode,
            "soc": soc,
            "fracsec": fracsec & 0xFFFFFF,
            "time_quality": TimeQuality.from_byte(fracsec >> 24),
            "version": version,
        }
        if ftype is FrameType.HEADER:
            return HeaderFrame(data=bytes(view[HEADER_SIZE:-2]), **common)
        (command,) = _U16.unpack_from(view, HEADER_SIZE)
        return CommandFrame(command=command, extended=bytes(view[HEADER_SIZE + 2 : -2]), **common)
    except FrameError:
        raise
    except (struct.error, ValueError) as err:  # a field no constructor check caught: still a typed error
        raise MalformedFrameError(f"{ftype.name} frame: {err}") from err


def encode_frame(frame: Frame) -> bytes:
    """A frame value -> its bytes, FRAMESIZE and CHK filled in (the inverse of :func:`decode_frame`)."""
    if isinstance(frame, DataFrame):
        return data_codec(frame.config).encode(frame)
    if isinstance(frame, ConfigFrame):
        return _finish(_head(frame.frame_type, frame), _encode_config(frame))
    if isinstance(frame, Config3Fragment):
        return _finish(_head(FrameType.CFG3, frame), _U16.pack(frame.cont_idx) + frame.data)
    if isinstance(frame, HeaderFrame):
        return _finish(_head(FrameType.HEADER, frame), frame.data)
    if isinstance(frame, CommandFrame):
        return _finish(_head(FrameType.COMMAND, frame), _U16.pack(frame.command) + frame.extended)
    raise TypeError(f"not a C37.118 frame: {frame!r}")


# ---- CFG-3 in several frames (6.4 Table 10, CONT_IDX) ---------------------------------------------------

_FRAGMENT_OVERHEAD = HEADER_SIZE + 2 + 2  # header, CONT_IDX, CHK
DEFAULT_MAX_CONFIG_SIZE = 1 << 20  # bytes of a reassembled CFG-3 held at most (a hostile peer's bound)


def fragment_config3(
    frame: Config3Frame, max_frame_size: int = MAX_FRAME_SIZE
) -> tuple[Config3Frame | Config3Fragment, ...]:
    """``frame`` as the frames that carry it, none longer than ``max_frame_size`` bytes.

    One frame (``frame`` itself, CONT_IDX 0) when it fits; otherwise pieces CONT_IDX 1, 2, ... and 0xFFFF
    for the last (6.4 Table 10), each with ``frame``'s header words, cut from what follows CONT_IDX. A
    CFG-3 longer than 65535 bytes (long UTF-8 names, many PMUs) can only be sent this way.
    """
    if not MAX_FRAME_SIZE >= max_frame_size > _FRAGMENT_OVERHEAD:
        raise ValueError(f"max_frame_size = {max_frame_size!r}: {_FRAGMENT_OVERHEAD + 1}..{MAX_FRAME_SIZE}")
    body = _encode_config_body(frame)
    if len(body) + _FRAGMENT_OVERHEAD <= max_frame_size:
        return (frame,)
    step = max_frame_size - _FRAGMENT_OVERHEAD
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    if len(chunks) > CFG3_LAST_FRAGMENT - 1:
        raise SizeError(f"CFG-3 of {len(body)} bytes needs {len(chunks)} frames of {max_frame_size}: CONT_IDX "
                        f"counts to 65534 (6.4 Table 10)", len(body))  # fmt: skip
    head = {"idcode": frame.idcode, "soc": frame.soc, "fracsec": frame.fracsec, "time_quality": frame.time_quality,
            "version": frame.version}  # fmt: skip
    last = len(chunks) - 1
    return tuple(
        Config3Fragment(**head, cont_idx=CFG3_LAST_FRAGMENT if i == last else i + 1, data=chunk)
        for i, chunk in enumerate(chunks)
    )


def encode_config3(frame: Config3Frame, max_frame_size: int = MAX_FRAME_SIZE) -> list[bytes]:
    """The bytes of each frame of :func:`fragment_config3` (one when the CFG-3 fits ``max_frame_size``)."""
    return [encode_frame(f) for f in fragment_config3(frame, max_frame_size)]


class Cfg3Reassembler:
    """Joins CFG-3 fragments back into a :class:`Config3Frame`, sans-IO, one series per IDCODE.

    :meth:`add` returns None while pieces are missing, the whole configuration with the last piece
    (CONT_IDX 0xFFFF), or raises: :class:`FragmentError` for a sequence that cannot be right (a
    continuation without CONT_IDX 1, an index skipped or repeated, a new series before the last ended:
    the new series is kept, the old one dropped), :class:`SizeError` past ``max_size`` bytes, and what
    :func:`decode_frame` raises for a configuration that does not parse (a piece lost between 1 and
    the last one is only visible there: the fields do not add up).
    """

    def __init__(self, max_size: int = DEFAULT_MAX_CONFIG_SIZE) -> None:
        self.max_size = max_size
        self._series: dict[int, tuple[Config3Fragment, list[bytes], int]] = {}  # idcode -> (first, parts, size)

    def pending(self, idcode: int) -> int:
        """How many pieces are held for ``idcode`` (0: no series under way)."""
        series = self._series.get(idcode)
        return len(series[1]) if series else 0

    def abandon(self, idcode: int, why: str) -> FragmentError | None:
        """Drop the series of ``idcode`` (a whole CFG-3 replaced it, the connection ended): the error, if any."""
        series = self._series.pop(idcode, None)
        if series is None:
            return None
        n = len(series[1])
        return FragmentError(
            f"CFG-3 of IDCODE {idcode}: pieces 1..{n} dropped, no last piece ({why})", idcode, 0, n + 1
        )

    def add(self, fragment: Config3Fragment) -> Config3Frame | None:
        idcode, idx = fragment.idcode, fragment.cont_idx
        series = self._series.get(idcode)
        if idx == 1:
            self._series[idcode] = (fragment, [fragment.data], len(fragment.data))
            if series is not None:
                n = len(series[1])
                raise FragmentError(
                    f"CFG-3 of IDCODE {idcode}: a new series (CONT_IDX 1) after pieces 1..{n} with no last piece "
                    "(6.4 Table 10): the older one is dropped",
                    idcode, 1, n + 1,
                )  # fmt: skip
            return None
        if series is None:
            raise FragmentError(
                f"CFG-3 of IDCODE {idcode}: CONT_IDX {idx:#06x} with no first piece (CONT_IDX 1) (6.4 Table 10)",
                idcode, idx, None,
            )  # fmt: skip
        first, parts, size = series
        expected = len(parts) + 1
        if idx != CFG3_LAST_FRAGMENT and idx != expected:
            del self._series[idcode]
            raise FragmentError(
                f"CFG-3 of IDCODE {idcode}: CONT_IDX {idx} where {expected} (or 0xFFFF, the last) was due: a piece "
                "is missing or out of order (6.4 Table 10); the pieces held are dropped",
                idcode, idx, expected,
            )  # fmt: skip
        size += len(fragment.data)
        if size > self.max_size:
            del self._series[idcode]
            raise SizeError(f"CFG-3 of IDCODE {idcode}: {size} bytes in pieces, over the bound {self.max_size}", size)
        parts.append(fragment.data)
        if idx != CFG3_LAST_FRAGMENT:
            self._series[idcode] = (first, parts, size)
            return None
        del self._series[idcode]
        body = memoryview(b"".join(parts))
        try:
            frame = _decode_config_body(_Cursor(body, 0, len(body)), FrameType.CFG3, first.version, idcode,
                                        first.soc, (first.time_quality.byte << 24) | first.fracsec)  # fmt: skip
        except FrameError:
            raise
        except (struct.error, ValueError) as err:
            raise MalformedFrameError(f"CFG-3 in {len(parts)} pieces: {err}") from err
        assert isinstance(frame, Config3Frame)
        return frame


__all__ = [
    "MIN_FRAME_SIZES",
    "Cfg3Reassembler",
    "DataCodec",
    "check_frame",
    "encode_config3",
    "fragment_config3",
    "crc_ccitt",
    "data_codec",
    "decode_frame",
    "encode_frame",
    "sync_plausible",
]
