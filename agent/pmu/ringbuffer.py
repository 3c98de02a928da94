"""A fixed-capacity ring buffer of full-rate PMU samples, so an event can carry the data around it.

Samples arrive in time order (a PMU's frames are on its rate grid); an out-of-order sample (older than
the newest) is refused and counted rather than breaking the binary search. Append is O(1), a window is
O(log n + k). Plain lists, preallocated, no numpy: at 60 frames/s a minute is 3600 rows, and storing a
reference to a tuple that already exists is the cheapest append there is (a numpy row costs ~1 us).

With ``convert`` the buffer stores rows as given (the PMU ingest stores each data frame's decoded words,
no per-frame work) and turns them into channel rows only when they are read (:meth:`window`,
:meth:`latest`: an event, a test), which is rare.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class RingBuffer:
    """The last ``capacity`` (timestamp, row) samples; ``row`` is any tuple of numbers (the channels)."""

    __slots__ = ("capacity", "_ts", "_rows", "_start", "_count", "_next", "_last", "out_of_order", "_convert")

    def __init__(self, capacity: int, convert: Callable[[tuple], tuple] | None = None) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity = {capacity!r}: a positive number of samples")
        self.capacity = capacity
        self._ts: list[float] = [0.0] * capacity
        self._rows: list[tuple] = [()] * capacity
        self._start = 0  # physical index of the oldest sample
        self._count = 0
        self._next = 0  # physical index the next sample goes to
        self._last = 0.0  # timestamp of the newest sample (when _count)
        self.out_of_order = 0
        self._convert = convert  # stored row -> channel row, applied when rows are read

    @classmethod
    def for_rate(
        cls, frames_per_second: float, seconds: float, convert: Callable[[tuple], tuple] | None = None
    ) -> RingBuffer:
        """A buffer holding ``seconds`` of a stream at ``frames_per_second`` (at least one sample)."""
        return cls(max(1, int(round(frames_per_second * seconds))), convert)

    def __len__(self) -> int:
        return self._count

    def append(self, ts: float, row: tuple) -> bool:
        """Add one sample; False (and counted) when ``ts`` is not after the newest sample."""
        count = self._count
        if count and ts <= self._last:
            self.out_of_order += 1
            return False
        i = self._next
        self._ts[i] = ts
        self._rows[i] = row
        self._last = ts
        i += 1
        if i == self.capacity:
            i = 0
        self._next = i
        if count < self.capacity:
            self._count = count + 1
        else:  # full: the oldest sample was just overwritten, the next one is now the oldest
            self._start = i
        return True

    def clear(self) -> None:
        self._start = self._count = self._next = 0

    @property
    def first_ts(self) -> float | None:
        return self._ts[self._start] if self._count else None

    @property
    def last_ts(self) -> float | None:
        return self._last if self._count else None

    def _bisect(self, t: float) -> int:
        """Logical index of the first sample with ts >= t."""
        lo, hi = 0, self._count
        cap, start, tss = self.capacity, self._start, self._ts
        while lo < hi:
            mid = (lo + hi) // 2
            if tss[(start + mid) % cap] < t:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def window(self, t0: float, t1: float) -> tuple[list[float], list[tuple]]:
        """Samples with t0 <= ts <= t1, oldest first: (timestamps, rows)."""
        if t1 < t0 or not self._count:
            return [], []
        a = self._bisect(t0)
        b = self._bisect(t1)
        cap, start = self.capacity, self._start
        if b < self._count and self._ts[(start + b) % cap] == t1:
            b += 1
        idx = [(start + k) % cap for k in range(a, b)]
        rows, convert = self._rows, self._convert
        return [self._ts[i] for i in idx], [rows[i] if convert is None else convert(rows[i]) for i in idx]

    def latest(self, n: int = 1) -> Sequence[tuple[float, tuple]]:
        """The newest ``n`` samples, oldest first."""
        n = min(n, self._count)
        cap, start, convert = self.capacity, self._start, self._convert
        out = [
            (self._ts[(start + k) % cap], self._rows[(start + k) % cap]) for k in range(self._count - n, self._count)
        ]
        return out if convert is None else [(t, convert(row)) for t, row in out]
