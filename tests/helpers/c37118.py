"""C37.118 test material shared by the codec, property, stream and fragment tests: one table of frame cases (the
IEEE C37.118.2-2011 Annex D station and hand-derived bytes), hypothesis strategies for PMU configurations, and a
stream reader fed whole, byte by byte or half a frame first.

About the Annex D examples: the exact bytes of the annex are not reproduced here because they could not be
checked against the standard's text. ``ANNEX_CFG2`` and ``ANNEX_DATA`` are built from the annex's documented
field values ("Station A", IDCODE 7734 = 0x1E36, SOC 0x44853600, TIME_BASE 1 000 000, 4 phasors, 3 analogs,
1 digital word, 30 frames/s), and the CRC and field layout are checked independently: the CRC by a bit-by-bit
CRC-CCITT written from the definition (not binascii), the layout by offsets counted from Table 8 / Table 5. The
command frame's 18 bytes are derived by hand below.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hypothesis import strategies as st

from protocols.c37118 import (
    NEED_DATA,
    AnalogScale,
    AnalogUnit,
    Command,
    CommandFrame,
    Config3Frame,
    ConfigFrame,
    DataError,
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
    PmuData,
    PmuTimeQuality,
    Stat,
    StreamReader,
    TimeQuality,
    TriggerReason,
    encode_frame,
)

# ---- the table of frame cases -------------------------------------------------------------------------------


def crc_bitwise(data: bytes) -> int:
    """CRC-CCITT from its definition (6.2.1: poly x^16+x^12+x^5+1, init 0xFFFF, no final XOR), bit by bit."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def recrc(frame: bytes | bytearray) -> bytes:
    """``frame`` with CHK recomputed, to build bad-field frames that pass the CRC."""
    body = bytes(frame[:-2])
    return body + struct.pack(">H", crc_bitwise(body))


STATION_A = PmuConfig(
    station="Station A",
    idcode=7734,
    format=DataFormat(freq_float=False, analog_float=True, phasor_float=False, polar=False),
    phasor_names=("VA", "VB", "VC", "I1"),
    analog_names=("ANALOG1", "ANALOG2", "ANALOG3"),
    digital_names=tuple(f"BREAKER {c} STATUS" for c in "123456789ABCDEFG"),
    phasor_units=(PhasorUnit(0, 915527),) * 3 + (PhasorUnit(1, 45776),),
    analog_units=(AnalogUnit(0, 1), AnalogUnit(1, 1), AnalogUnit(2, 1)),
    digital_units=(DigitalUnit(0x0000, 0xFFFF),),
    nominal_hz=60,
    cfgcnt=22,
)
ANNEX_CFG2 = ConfigFrame(
    frame_type=FrameType.CFG2,
    idcode=7734,
    soc=0x44853600,
    fracsec=0,
    time_base=1_000_000,
    pmus=(STATION_A,),
    data_rate=30,
)
ANNEX_DATA = DataFrame.build(
    ANNEX_CFG2,
    [
        PmuData(
            STATION_A,
            Stat(),
            ((14635, 0), (-7318, -12676), (-7318, 12675), (1092, 0)),
            2500,
            0,
            (100.0, 1000.0, 10000.0),
            (0x3C12,),
        )
    ],
    soc=0x44853600,
    fracsec=16817,
)

# The command frame "turn on transmission" for IDCODE 7734 at SOC 0x44853600, derived by hand from 6.6 Table 14:
#   AA 42      SYNC: 0xAA, frame type 4 (command) << 4 | version 2
#   00 12      FRAMESIZE 18
#   1E 36      IDCODE 7734
#   44 85 36 00  SOC
#   00 00 00 00  FRACSEC (time quality 0, fraction 0)
#   00 02      CMD 2 = turn on transmission of data frames
#   56 50      CHK = CRC-CCITT of the 16 bytes above (checked by crc_bitwise in the test)
COMMAND_HEX = "aa42 0012 1e36 44853600 00000000 0002 5650"

TWO_PMUS = ConfigFrame(
    frame_type=FrameType.CFG2,
    idcode=1,
    soc=1_700_000_000,
    time_base=1_000_000,
    data_rate=-5,  # one frame every 5 s
    pmus=(
        PmuConfig(
            station="FLOAT POLAR",
            idcode=11,
            format=DataFormat(True, True, True, True),
            phasor_names=("V1", "I1"),
            analog_names=("P",),
            phasor_units=(PhasorUnit(0, 0), PhasorUnit(1, 0)),
            analog_units=(AnalogUnit(1, -5),),
            nominal_hz=50,
        ),
        PmuConfig(
            station="INT POLAR",
            idcode=12,
            format=DataFormat(False, False, False, True),
            phasor_names=("V1",),
            phasor_units=(PhasorUnit(0, 1000),),
        ),
    ),
)
TWO_PMUS_DATA = DataFrame.build(
    TWO_PMUS,
    [
        PmuData(
            TWO_PMUS.pmus[0],
            Stat(DataError.TEST_MODE, sync_lost=True, trigger=True, trigger_reason=TriggerReason.DF_DT_HIGH),
            ((230000.0, 0.5), (100.0, -2.75)),
            49.98,
            -0.125,
            (1.5e6,),
            (),
        ),
        PmuData(TWO_PMUS.pmus[1], Stat(time_quality=PmuTimeQuality.UNDER_1US), ((65535, -31416),), -32767, 32767),
    ],
    soc=1_700_000_000,
    fracsec=999_999,
    time_quality=TimeQuality(leap_pending=True, code=5),
)
CFG3 = Config3Frame(
    idcode=3,
    soc=1_700_000_001,
    time_base=16_777_215,
    data_rate=60,
    pmus=(
        PmuConfig3(
            station="Ünterwerk Nord",
            idcode=3,
            global_id=bytes(range(16)),
            format=DataFormat(True, True, True, False),
            phasor_names=("VA", "IA"),
            analog_names=("TEMP",),
            digital_names=tuple(f"D{i}" for i in range(16)),
            phasor_scales=(PhasorScale(0x8001, 0x01, 7, 1.5, -0.25), PhasorScale(0, 0x09, 0, 2.0, 0.0)),
            analog_scales=(AnalogScale(0.5, -40.0),),
            digital_units=(DigitalUnit(0x00FF, 0x0F0F),),
            latitude=47.5,
            longitude=8.25,
            elevation=400.0,
            service_class="M",
            window=-20,
            group_delay=1000,
            nominal_hz=50,
            cfgcnt=65535,
        ),
    ),
)
CFG3_DATA = DataFrame.build(
    CFG3,
    [PmuData(CFG3.pmus[0], Stat(), ((1.0, 2.0), (-3.0, 4.5)), 50.0625, 0.0, (21.5,), (0xBEEF,))],
    soc=1_700_000_001,
    fracsec=8_388_608,
)


@dataclass(frozen=True)
class Case:
    name: str
    frame: Frame
    config: ConfigFrame | None = None
    hex: str | None = None  # bytes known independently (hand-derived), else checked by the round trip


CASES = [
    Case("annex_cfg2", ANNEX_CFG2),
    Case("annex_data", ANNEX_DATA, ANNEX_CFG2),
    Case("command_on", CommandFrame(idcode=7734, soc=0x44853600, command=Command.DATA_ON), hex=COMMAND_HEX),
    Case("header", HeaderFrame(idcode=7734, soc=0x44853600, data=b"Station A, PMU model X, 1 cycle filter")),
    Case(
        "cfg1",
        ConfigFrame(frame_type=FrameType.CFG1, idcode=7734, soc=0x44853600, pmus=(STATION_A,), data_rate=30),
    ),
    Case("two_pmus_cfg2", TWO_PMUS),
    Case("two_pmus_data", TWO_PMUS_DATA, TWO_PMUS),
    Case("cfg3", CFG3),
    Case("cfg3_data", CFG3_DATA, CFG3),
    Case(
        "command_extended_2005",
        CommandFrame(
            idcode=65535, soc=2**32 - 1, fracsec=2**24 - 1, command=8, extended=b"\x01\x02\x03\x04", version=1
        ),
    ),
    Case("header_empty", HeaderFrame(idcode=0, time_quality=TimeQuality(True, True, True, 15))),
]


def frame_bytes(case: Case) -> bytes:
    return bytes.fromhex(case.hex.replace(" ", "")) if case.hex else encode_frame(case.frame)


# ---- hypothesis strategies ---------------------------------------------------------------------------------

u16 = st.integers(0, 0xFFFF)
i16 = st.integers(-0x8000, 0x7FFF)
f32 = st.floats(width=32, allow_nan=False)
name16 = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=16)
name3 = st.text(max_size=20)
time_quality = st.builds(TimeQuality, st.booleans(), st.booleans(), st.booleans(), st.integers(0, 15))
common = {
    "idcode": u16,
    "soc": st.integers(0, 2**32 - 1),
    "fracsec": st.integers(0, 2**24 - 1),
    "time_quality": time_quality,
}


@st.composite
def pmu_configs(draw, cfg3: bool = False) -> PmuConfig:
    nph, nan, ndg = draw(st.integers(0, 4)), draw(st.integers(0, 3)), draw(st.integers(0, 2))
    name = name3 if cfg3 else name16
    kwargs = {
        "station": draw(name),
        "idcode": draw(u16),
        "format": draw(st.builds(DataFormat, st.booleans(), st.booleans(), st.booleans(), st.booleans())),
        "phasor_names": tuple(draw(st.lists(name, min_size=nph, max_size=nph))),
        "analog_names": tuple(draw(st.lists(name, min_size=nan, max_size=nan))),
        "digital_names": tuple(draw(st.lists(name, min_size=16 * ndg, max_size=16 * ndg))),
        "digital_units": tuple(draw(st.lists(st.builds(DigitalUnit, u16, u16), min_size=ndg, max_size=ndg))),
        "nominal_hz": draw(st.sampled_from([50, 60])),
        "cfgcnt": draw(u16),
    }
    if cfg3:
        return PmuConfig3(
            **kwargs,
            global_id=draw(st.binary(min_size=16, max_size=16)),
            phasor_scales=tuple(
                draw(
                    st.lists(
                        st.builds(PhasorScale, u16, st.integers(0, 255), st.integers(0, 255), f32, f32),
                        min_size=nph,
                        max_size=nph,
                    )
                )
            ),
            analog_scales=tuple(draw(st.lists(st.builds(AnalogScale, f32, f32), min_size=nan, max_size=nan))),
            latitude=draw(f32),
            longitude=draw(f32),
            elevation=draw(f32),
            service_class=draw(st.sampled_from("PM")),
            window=draw(st.integers(-(2**31), 2**31 - 1)),
            group_delay=draw(st.integers(-(2**31), 2**31 - 1)),
        )
    return PmuConfig(
        **kwargs,
        phasor_units=tuple(
            draw(
                st.lists(
                    st.builds(PhasorUnit, st.integers(0, 1), st.integers(0, 2**24 - 1)), min_size=nph, max_size=nph
                )
            )
        ),
        analog_units=tuple(
            draw(
                st.lists(
                    st.builds(AnalogUnit, st.integers(0, 255), st.integers(-(2**23), 2**23 - 1)),
                    min_size=nan,
                    max_size=nan,
                )
            )
        ),
    )


# ---- the stream reader, fed in pieces ------------------------------------------------------------------------


def read_split(data: bytes, split: str = "whole", reader: StreamReader | None = None) -> list:
    """Feed ``data`` to a reader split as asked and return all events (NeedData left out)."""
    reader = reader or StreamReader()
    events: list = []
    if split == "whole":
        chunks = [data]
    elif split == "bytes":
        chunks = [data[i : i + 1] for i in range(len(data))]
    else:  # half a frame first, then the rest
        chunks = [data[: len(data) // 2], data[len(data) // 2 :]]
    for chunk in chunks:
        reader.feed(chunk)
        events.extend(reader.events())
    assert reader.next_event() is NEED_DATA
    return events
