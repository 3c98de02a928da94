"""Review of the PQ service: recorder glitches on a real wave stream (WaveformStreamServer on 127.0.0.1).

Expected values come from the stream's layout (3200 Hz, blocks of 0.02 s = 64 samples), never from the code
under test.
"""

from __future__ import annotations

import math

from helpers.aio import async_test, running_tasks, until
from test_pq_service import TICK, Collected, desc, make_stream, stream_config

from sim_hw.waveforms.stream import WaveformStreamServer

RATE = 3200.0
BLOCK = 64  # samples of a 0.02-s block at 3200 Hz
T0 = TICK - 30
GLITCH_S = 4.0  # the block starting 4.0 s into the stream holds a NaN on vb (block 200)


def nan_on_vb(t: float) -> tuple[float, float, float]:
    """WaveformStreamServer's per-block scale: vb of the block starting at GLITCH_S is NaN, a recorder glitch."""
    return (1.0, math.nan, 1.0) if abs(t - (T0 + GLITCH_S)) < 0.5 * BLOCK / RATE else (1.0, 1.0, 1.0)


@async_test
async def test_nan_samples_drop_their_block_like_a_gap_and_a_replayed_stream_gets_past_them() -> None:
    # speed = inf restarts every connection at sample 0 (a replayed timeline): a stream that refused the NaN block
    # by reconnecting would meet it again on every connection and never measure past 4.0 s.
    out = Collected()
    duration = 10.0
    async with WaveformStreamServer(desc(RATE, t0=T0), speed=math.inf, duration_s=duration, scale=nan_on_vb) as srv:
        pq = make_stream(stream_config(srv.port), out, backoff_min_s=0.01, backoff_max_s=0.01)
        async with running_tasks(pq.run()) as (task,):
            await until(lambda: pq.stats.disconnects >= 2 or pq.stats.config_errors >= 3, 20)
            assert not task.done()
    st = pq.stats
    assert st.config_errors == 0, pq.last_error  # a glitch is not a configuration error
    assert (st.nonfinite_blocks, st.nonfinite_samples) == (1, BLOCK), st
    assert st.samples == round(duration * RATE) - BLOCK, st  # every sample but the glitch's block, once
    # The windows restart after the glitch: 3-s values after it, none spanning it, no NaN value reported.
    ends = sorted(r.ts - T0 for r in out.points("pq1.va.rms"))
    assert any(t > GLITCH_S + 3 for t in ends), ends
    assert not any(t - 3.05 < GLITCH_S < t for t in ends), ends
    assert all(math.isfinite(r.value) for r in out.readings)
    assert not out.events  # a dropped block is not a dip
