"""Sampled voltage/current waveforms of the bench: synthesis, COMTRADE recordings, a live stream."""

from sim_hw.waveforms.generator import (
    CHANNELS,
    UNITS,
    DescriptionError,
    Event,
    Flicker,
    Harmonic,
    Interharmonic,
    Noise,
    Waveform,
    WaveformDesc,
    chunks,
    comtrade_config,
    generate,
    generate_samples,
    write_comtrade,
)

__all__ = [
    "CHANNELS",
    "UNITS",
    "DescriptionError",
    "Event",
    "Flicker",
    "Harmonic",
    "Interharmonic",
    "Noise",
    "Waveform",
    "WaveformDesc",
    "chunks",
    "comtrade_config",
    "generate",
    "generate_samples",
    "write_comtrade",
]
