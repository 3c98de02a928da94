"""C37.118 frames <-> bytes: one table of cases drives the writer and the reader, and every bad input has its error.

The table (helpers/c37118.py) says how its IEEE C37.118.2-2011 Annex D frames were built and checked; the
command frame's 18 bytes are derived by hand there.
"""

from __future__ import annotations

import cmath
import struct
from decimal import Decimal

import pytest
from helpers.c37118 import (
    ANNEX_CFG2,
    ANNEX_DATA,
    CASES,
    CFG3,
    CFG3_DATA,
    COMMAND_HEX,
    STATION_A,
    TWO_PMUS,
    TWO_PMUS_DATA,
    Case,
    crc_bitwise,
    frame_bytes,
    recrc,
)

from protocols.c37118 import (
    AnalogUnit,
    Command,
    CommandFrame,
    Config3Fragment,
    Config3Frame,
    ConfigFrame,
    ConfigMismatchError,
    CrcError,
    DataCodec,
    DataError,
    DataFormat,
    DataFrame,
    DigitalUnit,
    FrameType,
    HeaderFrame,
    MalformedFrameError,
    PhasorUnit,
    PmuConfig,
    PmuConfig3,
    PmuData,
    PmuTimeQuality,
    SizeError,
    Stat,
    SyncError,
    TimeQuality,
    TriggerReason,
    UnlockedTime,
    VersionError,
    crc_ccitt,
    decode_frame,
    encode_frame,
)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_writer_emits_the_expected_bytes_with_a_correct_chk(case: Case) -> None:
    data = encode_frame(case.frame)
    if case.hex:
        assert data == frame_bytes(case)
    assert data[0] == 0xAA
    assert struct.unpack(">H", data[2:4])[0] == len(data)
    assert struct.unpack(">H", data[-2:])[0] == crc_bitwise(data[:-2])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_reader_returns_the_frame_and_rebuilds_byte_for_byte(case: Case) -> None:
    data = frame_bytes(case)
    frame = decode_frame(data, case.config)
    assert frame == case.frame
    assert encode_frame(frame) == data
    assert decode_frame(bytearray(data), case.config) == case.frame
    assert decode_frame(memoryview(data), case.config) == case.frame


def test_crc_is_ccitt_false_check_value() -> None:
    # CRC-16/CCITT-FALSE catalogue check value: CRC of ASCII "123456789" is 0x29B1.
    assert crc_ccitt(b"123456789") == 0x29B1 == crc_bitwise(b"123456789")


def test_annex_cfg2_layout_field_by_field() -> None:
    data = encode_frame(ANNEX_CFG2)
    assert data[:2] == b"\xaa\x32"  # CFG-2 (3 << 4), version 2
    assert data[4:6] == b"\x1e\x36" and data[6:10] == b"\x44\x85\x36\x00"
    assert data[14:18] == (1_000_000).to_bytes(4, "big")  # TIME_BASE
    assert data[18:20] == b"\x00\x01"  # NUM_PMU
    assert data[20:36] == b"Station A       "  # STN, 16 bytes space padded
    assert data[36:38] == b"\x1e\x36"
    assert data[38:46] == bytes.fromhex("0004 0004 0003 0001")  # FORMAT, PHNMR, ANNMR, DGNMR
    names_end = 46 + 16 * (4 + 3 + 16)
    assert data[46:62] == b"VA              "
    units = data[names_end:]
    assert units[:4] == bytes.fromhex("000df847")  # PHUNIT voltage, 915527
    assert units[12:16] == bytes.fromhex("0100b2d0")  # PHUNIT current, 45776
    assert units[16:28] == bytes.fromhex("00000001 01000001 02000001")  # ANUNIT
    assert units[28:32] == bytes.fromhex("0000ffff")  # DIGUNIT
    assert units[32:36] == bytes.fromhex("0000 0016")  # FNOM 60 Hz, CFGCNT 22
    assert units[36:38] == bytes.fromhex("001e")  # DATA_RATE 30
    assert len(data) == names_end + 36 + 2 + 2


def test_annex_data_layout_and_values() -> None:
    data = encode_frame(ANNEX_DATA)
    assert len(data) == 52 == 14 + 2 + 4 * 4 + 2 + 2 + 3 * 4 + 2 + 2
    assert data[:4] == bytes.fromhex("aa02 0034")
    assert data[10:14] == (16817).to_bytes(4, "big")
    assert data[14:16] == b"\x00\x00"  # STAT
    assert data[16:20] == struct.pack(">hh", 14635, 0)
    assert data[32:36] == struct.pack(">hh", 2500, 0)  # FREQ +2.5 Hz deviation in mHz, DFREQ 0
    frame = decode_frame(data, ANNEX_CFG2)
    pmu = frame.pmus[0]
    assert pmu.frequency_hz == pytest.approx(62.5)
    assert pmu.rocof_hz_per_s == 0.0
    assert pmu.analogs == (100.0, 1000.0, 10000.0)
    assert pmu.digitals == (0x3C12,)
    # VA = 14635 * 915527e-5 V = 133 987 V (real), as in the annex's scaling.
    assert pmu.phasor_values[0] == pytest.approx(complex(14635 * 9.15527, 0))
    assert frame.timestamp.soc == 0x44853600 and frame.timestamp.fracsec == 16817
    assert str(frame.timestamp.as_decimal()) == "1149580800.016817"


def test_timestamp_keeps_sub_microsecond_precision() -> None:
    frame = decode_frame(encode_frame(CFG3_DATA), CFG3)
    ts = frame.timestamp
    assert ts.time_base == 16_777_215
    assert ts.as_fraction() - 1_700_000_001 == pytest.approx(8_388_608 / 16_777_215, abs=0)
    assert ts.as_fraction().denominator == 16_777_215


def test_stat_word_bits() -> None:
    stat = Stat.from_word(0b10_1_0_1_1_0_101_10_0111)
    assert stat.data_error is DataError.TEST_MODE
    assert stat.sync_lost and not stat.sorted_by_arrival and stat.trigger and stat.config_changed
    assert not stat.data_modified
    assert stat.time_quality is PmuTimeQuality.UNDER_1MS
    assert stat.unlocked_time is UnlockedTime.UNDER_1000S
    assert stat.trigger_reason is TriggerReason.DIGITAL
    assert stat.word == 0b10_1_0_1_1_0_101_10_0111
    assert Stat.from_word(0xFFFF).word == 0xFFFF and Stat.from_word(0xFFFF).trigger_reason == 15


def test_two_pmus_values_in_engineering_units() -> None:
    frame = decode_frame(encode_frame(TWO_PMUS_DATA), TWO_PMUS)
    a, b = frame.pmus
    assert a.frequency_hz == pytest.approx(49.98, abs=1e-5)  # float FREQ is the actual frequency (6.3 Table 6)
    assert a.rocof_hz_per_s == -0.125
    assert a.stat.data_error is DataError.TEST_MODE and a.stat.trigger_reason is TriggerReason.DF_DT_HIGH
    assert b.frequency_hz == pytest.approx(60 - 32.767)  # integer FREQ: mHz deviation from 60 Hz
    assert b.rocof_hz_per_s == pytest.approx(327.67)  # integer DFREQ: ROCOF x 100
    assert b.phasor_values[0] == pytest.approx(cmath.rect(65535 * 1000e-5, -3.1416))  # PHUNIT 1000 x 10^-5 V/bit
    assert frame.time_quality == TimeQuality(leap_pending=True, code=5)
    assert TWO_PMUS.frames_per_second == 0.2


# ---- every bad input has its typed error --------------------------------------------------------------

GOOD_CMD = bytes.fromhex(COMMAND_HEX.replace(" ", ""))


def test_bad_sync_byte_is_sync_error() -> None:
    with pytest.raises(SyncError):
        decode_frame(b"\xab" + GOOD_CMD[1:])


def test_undefined_frame_type_is_sync_error() -> None:
    with pytest.raises(SyncError, match="frame type 6"):
        decode_frame(recrc(b"\xaa\x62" + GOOD_CMD[2:]))


@pytest.mark.parametrize("version", [0, 3, 15])
def test_unknown_version_is_version_error(version: int) -> None:
    with pytest.raises(VersionError) as err:
        decode_frame(recrc(bytes([0xAA, 0x40 | version]) + GOOD_CMD[2:]))
    assert err.value.version == version


def test_cfg3_in_a_2005_frame_is_version_error() -> None:
    data = bytearray(encode_frame(CFG3))
    data[1] = 0x51
    with pytest.raises(VersionError):
        decode_frame(recrc(data))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xaa\x42",
        GOOD_CMD[:-1],  # shorter than FRAMESIZE
        GOOD_CMD + b"\x00",  # longer than FRAMESIZE
        recrc(b"\xaa\x42\x00\x0f" + GOOD_CMD[4:]),  # FRAMESIZE below the 18 a command frame needs
        recrc(b"\xaa\x12\x00\x0f" + GOOD_CMD[4:]),  # FRAMESIZE below the 16-byte minimum
    ],
)
def test_frame_size_out_of_bounds_is_size_error(data: bytes) -> None:
    with pytest.raises(SizeError):
        decode_frame(data)


def test_frame_too_big_to_encode_is_size_error() -> None:
    big = PmuConfig(station="X", idcode=1, phasor_names=("P",) * 4000, phasor_units=(PhasorUnit(),) * 4000)
    with pytest.raises(SizeError) as err:
        encode_frame(ConfigFrame(idcode=1, pmus=(big,)))
    assert err.value.size > 65535


def test_bad_chk_is_crc_error_with_expected_and_actual() -> None:
    data = bytearray(GOOD_CMD)
    data[-1] ^= 0xFF
    with pytest.raises(CrcError) as err:
        decode_frame(bytes(data))
    assert err.value.expected == 0x5650 and err.value.actual == 0x56AF


def test_data_frame_without_configuration_is_config_mismatch() -> None:
    with pytest.raises(ConfigMismatchError) as err:
        decode_frame(encode_frame(ANNEX_DATA))
    assert err.value.idcode == 7734


def test_data_frame_of_another_idcode_is_config_mismatch() -> None:
    with pytest.raises(ConfigMismatchError, match="IDCODE"):
        decode_frame(encode_frame(TWO_PMUS_DATA), ANNEX_CFG2)


def test_data_frame_of_the_wrong_size_for_its_configuration_is_config_mismatch() -> None:
    data = encode_frame(ANNEX_DATA)
    short = bytearray(data[:-4] + data[-2:])  # one analog float missing
    short[2:4] = struct.pack(">H", len(short))
    with pytest.raises(ConfigMismatchError, match="makes 52"):
        decode_frame(recrc(short), ANNEX_CFG2)


def _cfg_with(offset_from_end: int, value: bytes) -> bytes:
    data = bytearray(encode_frame(ANNEX_CFG2))
    end = len(data) - offset_from_end
    data[end - len(value) : end] = value
    return recrc(data)


def test_data_rate_zero_is_malformed() -> None:
    with pytest.raises(MalformedFrameError, match="DATA_RATE"):
        decode_frame(_cfg_with(2, b"\x00\x00"))


def test_num_pmu_zero_is_malformed() -> None:
    data = bytearray(encode_frame(ANNEX_CFG2))
    data[18:20] = b"\x00\x00"
    with pytest.raises(MalformedFrameError, match="NUM_PMU"):
        decode_frame(recrc(data))


def test_num_pmu_larger_than_the_frame_is_malformed() -> None:
    data = bytearray(encode_frame(ANNEX_CFG2))
    data[18:20] = b"\xff\xff"
    with pytest.raises(MalformedFrameError, match="frame ends inside"):
        decode_frame(recrc(data))


def test_channel_counts_larger_than_the_frame_are_malformed() -> None:
    data = bytearray(encode_frame(ANNEX_CFG2))
    data[40:42] = b"\xff\xff"  # PHNMR 65535
    with pytest.raises(MalformedFrameError, match="frame ends inside"):
        decode_frame(recrc(data))


def test_time_base_zero_is_malformed() -> None:
    data = bytearray(encode_frame(ANNEX_CFG2))
    data[14:18] = b"\xff\x00\x00\x00"  # flags set, 24-bit base 0
    with pytest.raises(MalformedFrameError, match="TIME_BASE"):
        decode_frame(recrc(data))


def test_cfg3_continuation_frame_decodes_to_a_fragment_with_the_bytes_after_cont_idx() -> None:
    # 6.4 Table 10: CONT_IDX != 0 is one piece of a CFG-3 in several frames (tests/test_c37118_fragments.py)
    data = bytearray(encode_frame(CFG3))
    data[14:16] = b"\x00\x01"
    frag = decode_frame(recrc(data))
    assert isinstance(frag, Config3Fragment)
    assert (frag.idcode, frag.soc, frag.cont_idx, frag.data) == (3, 1_700_000_001, 1, bytes(data[16:-2]))


def test_cfg3_name_not_utf8_is_malformed() -> None:
    data = bytearray(encode_frame(CFG3))
    data[23] = 0xFF  # first byte of the station name (after CONT_IDX, TIME_BASE, NUM_PMU, length)
    with pytest.raises(MalformedFrameError, match="UTF-8"):
        decode_frame(recrc(data))


def test_trailing_bytes_after_data_rate_are_malformed() -> None:
    data = bytearray(encode_frame(ANNEX_CFG2))
    data[-2:-2] = b"\x00\x00"
    data[2:4] = struct.pack(">H", len(data))
    with pytest.raises(MalformedFrameError, match="after DATA_RATE"):
        decode_frame(recrc(data))


def test_command_with_odd_extended_data_is_malformed() -> None:
    data = bytearray(encode_frame(CommandFrame(idcode=1, command=8, extended=b"\x00\x01")))
    data[-2:-2] = b"\x07"
    data[2:4] = struct.pack(">H", len(data))
    with pytest.raises(MalformedFrameError, match="16-bit words"):
        decode_frame(recrc(data))


@pytest.mark.parametrize(
    "build",
    [
        lambda: ConfigFrame(idcode=1, pmus=()),  # NUM_PMU 0
        lambda: ConfigFrame(idcode=1, pmus=(STATION_A,), data_rate=0),
        lambda: ConfigFrame(idcode=1, pmus=(STATION_A,), time_base=0),
        lambda: ConfigFrame(idcode=70000, pmus=(STATION_A,)),
        lambda: PmuConfig(station="seventeen chars!!", idcode=1),
        lambda: PmuConfig(station="A", idcode=1, phasor_names=("V",)),  # no PHUNIT
        lambda: PmuConfig(station="A", idcode=1, digital_names=("D",)),  # not 16 per word
        lambda: PmuConfig(station="A", idcode=1, nominal_hz=55),
        lambda: PmuConfig(station="trailing ", idcode=1),
        lambda: PmuConfig3(station="x" * 256, idcode=1),
        lambda: PmuConfig3(station="A", idcode=1, global_id=b"short"),
        lambda: Config3Frame(idcode=1, pmus=(PmuConfig3(station="A", idcode=1),), version=1),
        lambda: ConfigFrame(idcode=1, pmus=(PmuConfig3(station="A", idcode=1),)),
        lambda: CommandFrame(idcode=1, command=2, extended=b"\x00\x00"),
        lambda: CommandFrame(idcode=1, command=70000),
        lambda: TimeQuality(code=16),
        lambda: Stat(trigger_reason=16),
        lambda: PhasorUnit(0, 1 << 24),
        lambda: AnalogUnit(0, -(1 << 23) - 1),
        lambda: DataFrame.build(ANNEX_CFG2, []),
        lambda: DataFrame.build(
            ANNEX_CFG2, [PmuData(STATION_A, Stat(), ((0, 0),) * 4, 1.5, 0, (0.0,) * 3, (0,))]
        ),  # float FREQ in an integer format
        lambda: DataFrame.build(
            ANNEX_CFG2, [PmuData(STATION_A, Stat(), ((40000, 0),) * 4, 0, 0, (0.0,) * 3, (0,))]
        ),  # int16 overflow
        lambda: DataFrame(ANNEX_CFG2, (0,) * 3),
    ],
)
def test_invalid_values_are_refused_when_built(build) -> None:
    with pytest.raises(MalformedFrameError):
        build()


def test_data_frame_encoded_with_another_configuration_is_refused() -> None:
    from protocols.c37118 import data_codec

    with pytest.raises(ConfigMismatchError):
        data_codec(TWO_PMUS).encode(ANNEX_DATA)


# ---- interop with pyPMU (synchrophasor on PyPI), a test-only peer --------------------------------------


def _pypmu():
    """Import pyPMU's frame module: on Python 3.10+ it needs the old collections aliases first."""
    import collections
    import collections.abc

    for alias in ("Sequence", "Mapping", "Iterable", "MutableMapping", "Callable"):
        if not hasattr(collections, alias):
            setattr(collections, alias, getattr(collections.abc, alias))
    import importlib

    # A hard import, not importorskip: the peer is in the test extra, and a missing peer must fail CI.
    return importlib.import_module("synchrophasor.frame")


INTEROP_NAMES = ["VA", "VB", "VC", "I1", "P", "Q"] + [f"BRK{i}" for i in range(16)]


def _pypmu_cfg2(frame_module):
    # FORMAT 7: polar, float phasors, float analogs, integer FREQ/DFREQ (pyPMU reads float FREQ as a deviation).
    return frame_module.ConfigFrame2(
        7734, 1_000_000, 1, "Station A", 7734, 7, 4, 2, 1, INTEROP_NAMES,
        [(915527, "v")] * 3 + [(45776, "i")], [(1, "pow"), (1, "rms")], [(0x0000, 0xFFFF)],
        50, 22, 30, soc=0x44853600, frasec=16817,
    )  # fmt: skip


def test_pypmu_built_cfg2_data_command_header_read_by_us() -> None:
    fm = _pypmu()
    cfg = decode_frame(_pypmu_cfg2(fm).convert2bytes())
    assert isinstance(cfg, ConfigFrame) and cfg.frame_type is FrameType.CFG2
    assert cfg.version == 1 and cfg.idcode == 7734 and cfg.soc == 0x44853600 and cfg.fracsec == 16817
    assert cfg.time_base == 1_000_000 and cfg.data_rate == 30
    (pmu,) = cfg.pmus
    assert pmu.station == "Station A" and pmu.format == DataFormat(False, True, True, True)
    assert pmu.phasor_names == ("VA", "VB", "VC", "I1") and pmu.analog_names == ("P", "Q")
    assert pmu.digital_names[15] == "BRK15" and pmu.nominal_hz == 50 and pmu.cfgcnt == 22
    assert pmu.phasor_units[3] == PhasorUnit(1, 45776) and pmu.analog_units[1] == AnalogUnit(1, 1)
    assert pmu.digital_units == (DigitalUnit(0, 0xFFFF),)

    phasors = [(230000.5, 0.5), (229999.0, -1.5), (230001.0, 2.5), (1000.25, -0.25)]
    data = fm.DataFrame(7734, 0x2000, phasors, -125, 37, [1.5e6, -2.5e5], [0x3C12], _pypmu_cfg2(fm), 0x44853601, 500000)
    frame = decode_frame(data.convert2bytes(), cfg)
    (values,) = frame.pmus
    assert values.phasors == tuple(phasors)
    assert values.stat.sync_lost and values.freq == -125 and values.dfreq == 37
    assert values.frequency_hz == pytest.approx(49.875) and values.rocof_hz_per_s == pytest.approx(0.37)
    assert values.analogs == (1.5e6, -2.5e5) and values.digitals == (0x3C12,)
    assert frame.timestamp.as_decimal() == Decimal("1149580801.5")

    cmd = decode_frame(fm.CommandFrame(7734, "start", soc=0x44853600, frasec=1).convert2bytes())
    assert cmd == CommandFrame(idcode=7734, soc=0x44853600, fracsec=1, command=Command.DATA_ON, version=1)
    hdr = decode_frame(fm.HeaderFrame(7734, "Hello I'm a PMU", soc=0x44853600, frasec=1).convert2bytes())
    assert isinstance(hdr, HeaderFrame) and hdr.text == "Hello I'm a PMU"


def test_frames_we_build_are_read_by_pypmu() -> None:
    fm = _pypmu()
    pmu = PmuConfig(
        station="Station B",
        idcode=99,
        format=DataFormat(False, True, True, True),
        phasor_names=("VA", "IA"),
        analog_names=("P",),
        digital_names=tuple(f"D{i}" for i in range(16)),
        phasor_units=(PhasorUnit(0, 0), PhasorUnit(1, 0)),
        analog_units=(AnalogUnit(1, 1),),
        digital_units=(DigitalUnit(0, 0xFFFF),),
        nominal_hz=60,
        cfgcnt=3,
    )
    cfg = ConfigFrame(idcode=99, soc=1_700_000_000, fracsec=250_000, pmus=(pmu,), data_rate=50)
    theirs = fm.CommonFrame.convert2frame(encode_frame(cfg))
    assert theirs.get_id_code() == 99 and theirs.get_station_name().rstrip() == "Station B"
    assert theirs.get_time_base() == 1_000_000 and theirs.get_data_rate() == 50 and theirs.get_fnom() == 60
    assert theirs.get_phasor_num() == 2 and [n.rstrip() for n in theirs.get_channel_names()[:3]] == ["VA", "IA", "P"]

    frame = DataFrame.build(
        cfg,
        [PmuData(pmu, Stat(trigger=True), ((120.5, 0.25), (5.0, -3.0)), 12, -3, (42.0,), (0x8001,))],
        soc=1_700_000_000,
        fracsec=500_000,
    )
    data = fm.CommonFrame.convert2frame(encode_frame(frame), theirs)
    measurements = data.get_measurements()["measurements"][0]
    assert measurements["phasors"] == [(120.5, 0.25), (5.0, -3.0)]
    assert measurements["frequency"] == pytest.approx(60.012)  # pyPMU adds FNOM to the integer mHz deviation
    assert measurements["rocof"] == -3  # pyPMU leaves integer DFREQ unscaled; the standard says ROCOF x 100
    assert measurements["analog"] == [42.0] and measurements["digital"] == [0x8001]
    assert data.get_soc() == 1_700_000_000

    cmd = fm.CommonFrame.convert2frame(encode_frame(CommandFrame(idcode=99, soc=1, command=Command.SEND_CFG2)))
    assert cmd.get_command() == "cfg2"
    hdr = fm.CommonFrame.convert2frame(encode_frame(HeaderFrame(idcode=99, soc=1, data=b"hello")))
    assert hdr.get_header() == "b'hello'"  # pyPMU returns str() of the raw bytes; the text is there


def test_decode_run_gives_decode_s_frames_and_stops_where_a_frame_is_not_whole_or_not_its_own() -> None:
    codec = DataCodec(ANNEX_CFG2)
    one = encode_frame(ANNEX_DATA)
    bad = bytearray(one)
    bad[20] ^= 0x01  # CHK fails
    other = bytearray(one)
    other[4:6] = b"\x00\x63"  # IDCODE 99
    for tail in (b"", bytes(bad), recrc(other), one[:-1]):
        buf = bytearray(b"xx" + one * 3 + tail)
        out: list = []
        end = codec.decode_run(buf, 2, out)
        assert out == [codec.decode(one)] * 3 and out[0] == ANNEX_DATA
        assert end == 2 + 3 * len(one), tail
    assert codec.decode_run(bytearray(bad), 0, out := []) == 0 and out == []
