"""Power quality from sampled voltage waveforms.

The science: ``harmonics`` (IEC 61000-4-7 harmonics, interharmonics, THDS, window synchronisation), ``classa``
(IEC 61000-4-30 Class A: RMS, aggregation, flagging, frequency, unbalance), ``events`` (IEC 61000-4-30 dips,
swells, interruptions from Urms(1/2)), ``flicker`` (IEC 61000-4-15), ``compliance`` (EN 50160 and IEEE 519
limits and their assessment). See docs/pq.md and docs/pq-flicker.md.

The live service: ``processor`` (one stream's measurement, pure of I/O), ``service`` (the agent's wave
streams), ``worker`` (the process that runs them; docs/pq-service.md). The offline tools for recorded files,
``gridedge pq analyze`` and ``gridedge pq report``, are in ``offline`` (docs/pq-report.md).
"""
