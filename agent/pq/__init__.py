"""Power quality from sampled voltage waveforms.

``harmonics`` (IEC 61000-4-7 harmonics, interharmonics, THDS, window synchronisation), ``classa``
(IEC 61000-4-30 Class A: RMS, aggregation, flagging, frequency, unbalance), ``events`` (IEC 61000-4-30
dips, swells, interruptions from Urms(1/2)), ``flicker`` (IEC 61000-4-15). See docs/pq.md and
docs/pq-flicker.md.
"""
