"""IIR filters in second-order sections that keep their state across blocks ``[channels, n]``.

``scipy.signal.sosfilt`` checks and reshapes its arguments on every call (axis moves, dtype resolution, copies
of the state) before its compiled loop runs; on the blocks of 0.1 s the chain is fed, that costs about as
much as the filtering. :class:`SosFilter` keeps the sections and the state in the layout of that compiled loop
(``scipy.signal._sosfilt._sosfilt``, which filters ``[signals, n]`` in place with the state
``[signals, sections, 2]``) and calls it directly, so a block costs one copy and the loop: the same
arithmetic, so the same output, bit for bit, as ``sosfilt(sos, x, axis=1, zi=zi)``. The loop is private to
scipy: it is checked against ``sosfilt`` once at import, and where it is missing or differs the public
function is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import signal


def _find_kernel() -> Callable[..., Any] | None:
    try:
        from scipy.signal._sosfilt import _sosfilt  # type: ignore[import-not-found]
    except ImportError:
        return None
    sos = signal.butter(2, 0.2, output="sos")
    x = np.array([[1.0, -0.5, 0.25, 2.0, 0.0], [0.0, 1.0, 0.0, -1.0, 3.0]])
    zi = np.full((sos.shape[0], 2, 2), 0.1)
    want, want_zi = signal.sosfilt(sos, x, axis=1, zi=zi)
    try:
        got = x.copy()
        got_zi = np.ascontiguousarray(np.moveaxis(zi, 0, 1))
        _sosfilt(np.ascontiguousarray(sos), got, got_zi)
    except (TypeError, ValueError):
        return None
    if not (np.array_equal(got, want) and np.array_equal(np.moveaxis(got_zi, 1, 0), want_zi)):
        return None
    return _sosfilt  # type: ignore[no-any-return]


_KERNEL = _find_kernel()


class SosFilter:
    """``sos`` (``[sections, 6]``) over blocks ``[channels, n]`` along the samples, the state carried across blocks.

    ``zi`` is the initial state in ``sosfilt``'s layout for ``axis=1``: ``[sections, channels, 2]``.
    """

    def __init__(self, sos: np.ndarray, zi: np.ndarray) -> None:
        self.sos = np.ascontiguousarray(sos, dtype=np.float64)
        self._zi = np.ascontiguousarray(np.moveaxis(np.asarray(zi, dtype=np.float64), 0, 1))  # [channels, sections, 2]
        self._kernel = _KERNEL

    @property
    def zi(self) -> np.ndarray:
        """The state now, ``[sections, channels, 2]``."""
        return np.moveaxis(self._zi, 1, 0).copy()

    def push(self, x: np.ndarray) -> np.ndarray:
        """The filtered block ``[channels, n]`` (a new array)."""
        if self._kernel is None:
            y, zi = signal.sosfilt(self.sos, x, axis=1, zi=np.moveaxis(self._zi, 1, 0))
            self._zi = np.ascontiguousarray(np.moveaxis(zi, 0, 1))
            return np.asarray(y)
        y = np.array(x, dtype=np.float64, order="C")  # a copy: the loop filters in place
        self._kernel(self.sos, y, self._zi)
        return y
