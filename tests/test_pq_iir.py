"""agent/pq/iir.py: the state-keeping second-order-section filter against scipy.signal.sosfilt."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from agent.pq import iir


@pytest.mark.parametrize("kernel", ["found", "fallback"])
def test_sos_filter_equals_sosfilt_with_state_across_blocks(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kernel == "fallback":
        monkeypatch.setattr(iir, "_KERNEL", None)
    else:
        assert iir._KERNEL is not None  # scipy's compiled loop was found and passed the check at import
    sos = signal.butter(6, 35.0, fs=12800.0, output="sos")
    zi0 = np.repeat(signal.sosfilt_zi(sos)[:, np.newaxis, :], 3, axis=1)
    x = np.random.default_rng(5).normal(size=(3, 5000))
    f = iir.SosFilter(sos, zi0)
    zi = zi0
    for a, b in [(0, 1), (1, 1280), (1280, 4000), (4000, 5000)]:
        want, zi = signal.sosfilt(sos, x[:, a:b], axis=1, zi=zi)
        got = f.push(x[:, a:b])
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(f.zi, zi)
    assert f.push(x[:, :7]) is not x  # a new array: the input is left as it was
