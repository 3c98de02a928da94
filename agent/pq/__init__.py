"""Power quality from sampled voltage waveforms (issue 5)."""
