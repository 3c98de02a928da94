"""Properties: build-then-parse is the identity for any valid frame; any bytes give frames or typed errors."""

from __future__ import annotations

import contextlib

from helpers.c37118 import common, f32, i16, pmu_configs, time_quality, u16
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.c37118 import (
    CommandFrame,
    Config3Frame,
    ConfigFrame,
    DataFrame,
    FrameError,
    FrameType,
    HeaderFrame,
    NeedData,
    PmuConfig,
    PmuData,
    Stat,
    StreamReader,
    crc_ccitt,
    decode_frame,
    encode_frame,
)


@st.composite
def configs(draw) -> ConfigFrame:
    cfg3 = draw(st.booleans())
    pmus = tuple(draw(st.lists(pmu_configs(cfg3), min_size=1, max_size=3)))
    rate = draw(st.integers(-0x8000, 0x7FFF).filter(bool))
    base = draw(st.integers(1, 2**24 - 1))
    head = {k: draw(v) for k, v in common.items()}
    if cfg3:
        return Config3Frame(**head, time_base=base, pmus=pmus, data_rate=rate)
    kind = draw(st.sampled_from([FrameType.CFG1, FrameType.CFG2]))
    version = draw(st.sampled_from([1, 2]))
    return ConfigFrame(**head, frame_type=kind, version=version, time_base=base, pmus=pmus, data_rate=rate)


@st.composite
def pmu_data(draw, pcfg: PmuConfig) -> PmuData:
    fmt = pcfg.format
    if fmt.phasor_float:
        pair = st.tuples(f32, f32)
    elif fmt.polar:
        pair = st.tuples(u16, i16)
    else:
        pair = st.tuples(i16, i16)
    freq = f32 if fmt.freq_float else i16
    analog = f32 if fmt.analog_float else i16
    return PmuData(
        pcfg,
        Stat.from_word(draw(u16)),
        tuple(draw(st.lists(pair, min_size=pcfg.phnmr, max_size=pcfg.phnmr))),
        draw(freq),
        draw(freq),
        tuple(draw(st.lists(analog, min_size=pcfg.annmr, max_size=pcfg.annmr))),
        tuple(draw(st.lists(u16, min_size=pcfg.dgnmr, max_size=pcfg.dgnmr))),
    )


@st.composite
def data_frames(draw) -> tuple[ConfigFrame, DataFrame]:
    config = draw(configs())
    pmus = [draw(pmu_data(p)) for p in config.pmus]
    frame = DataFrame.build(
        config,
        pmus,
        soc=draw(common["soc"]),
        fracsec=draw(common["fracsec"]),
        time_quality=draw(time_quality),
        version=draw(st.sampled_from([1, 2])),
    )
    return config, frame


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_config_build_then_parse_is_identity(config: ConfigFrame) -> None:
    data = encode_frame(config)
    assert decode_frame(data) == config
    assert encode_frame(decode_frame(data)) == data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_frames())
def test_data_build_then_parse_is_identity(pair: tuple[ConfigFrame, DataFrame]) -> None:
    config, frame = pair
    data = encode_frame(frame)
    parsed = decode_frame(data, config)
    assert parsed == frame
    assert parsed.pmus == frame.pmus
    assert encode_frame(parsed) == data


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.builds(CommandFrame, **common, command=u16.filter(lambda c: c != 8), version=st.sampled_from([1, 2])),
        st.builds(
            CommandFrame,
            **common,
            command=st.just(8),
            extended=st.binary(max_size=40).map(lambda b: b[: len(b) // 2 * 2]),
        ),
        st.builds(HeaderFrame, **common, data=st.binary(max_size=200)),
    )
)
def test_header_and_command_build_then_parse_is_identity(frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


def _events(chunks: list[bytes], config: ConfigFrame | None) -> list:
    reader = StreamReader([config] if config else [])
    out = []
    for chunk in chunks:
        reader.feed(chunk)
        while not isinstance(event := reader.next_event(), NeedData):
            assert isinstance(event, FrameError | ConfigFrame | DataFrame | CommandFrame | HeaderFrame)
            out.append((type(event).__name__, str(event)) if isinstance(event, FrameError) else event)
    return out


@st.composite
def noisy_streams(draw) -> tuple[bytes, ConfigFrame]:
    """Real frames with garbage, truncations and bit flips between and inside them."""
    config, frame = draw(data_frames())
    pieces = [encode_frame(config), encode_frame(frame), encode_frame(CommandFrame(idcode=config.idcode))]
    out = b""
    for _ in range(draw(st.integers(1, 6))):
        piece = draw(st.sampled_from(pieces))
        action = draw(st.sampled_from(["keep", "cut", "flip", "garbage"]))
        if action == "cut":
            piece = piece[: draw(st.integers(0, len(piece)))]
        elif action == "flip":
            i = draw(st.integers(0, len(piece) - 1))
            piece = piece[:i] + bytes([piece[i] ^ (1 << draw(st.integers(0, 7)))]) + piece[i + 1 :]
        elif action == "garbage":
            piece = draw(st.binary(max_size=50)) + piece
        out += piece
    return out, config


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=400).map(lambda b: (b, None)), noisy_streams()))
def test_any_bytes_give_frames_or_typed_errors_and_byte_feeding_agrees(pair) -> None:
    data, config = pair
    whole = _events([data], config)
    assert _events([data[i : i + 1] for i in range(len(data))], config) == whole
    half = len(data) // 2
    assert _events([data[:half], data[half:]], config) == whole


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0x01, 0x02, 0x12, 0x21, 0x32, 0x42, 0x52, 0x72]), st.binary(min_size=12, max_size=300))
def test_any_body_behind_a_valid_chk_decodes_or_raises_a_typed_error(second: int, body: bytes) -> None:
    """Past SYNC, FRAMESIZE and CHK every field parser sees hostile bytes: only FrameError may come out."""
    head = bytes([0xAA, second]) + (len(body) + 6).to_bytes(2, "big") + body
    frame = head + crc_ccitt(head).to_bytes(2, "big")
    with contextlib.suppress(FrameError):
        decoded = decode_frame(frame)
        assert decode_frame(encode_frame(decoded)) == decoded  # reserved bits are dropped, values kept
