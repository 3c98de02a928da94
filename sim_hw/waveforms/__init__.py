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
    generate,
    generate_samples,
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
    "generate",
    "generate_samples",
]
