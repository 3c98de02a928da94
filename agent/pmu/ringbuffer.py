"""A fixed-capacity ring buffer of full-rate PMU samples, so an event can carry the data around it.

Samples arrive in time order (a PMU's frames are on its rate grid); an out-of-order sample (older than
the newest) is refused and counted rather than breaking the binary search. Append is O(1), a window is
O(log n + k).

Storage is two preallocated blocks written in place, wrapping: the timestamps in an ``array('d')`` and
the rows packed one after the other in a ``bytearray`` by one ``struct.Struct`` (``row_format``: the
numbers' binary types, e.g. a PMU block's phasor, FREQ and DFREQ words in their C37.118.2-2011 6.3 Table 5
types). A row costs its packed size (a 6-phasor float PMU: 56 bytes and 8 for its timestamp) and no
Python object lives on per sample: nothing for the garbage collector to walk, no freshly allocated memory
per frame, nothing old to free when a sample is overwritten. Appending packs the row (one ``pack_into``
call); rows become tuples again only when read (:meth:`window`, :meth:`latest`: an event, a test),
through ``convert`` when one is given (the PMU ingest turns stored words into channels there).

Without ``row_format`` the rows are doubles (``"d"``), as many as the first row appended has.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Sequence


class RingBuffer:
    """The last ``capacity`` (timestamp, row) samples; ``row`` is a sequence of numbers (the channels)."""

    __slots__ = ("capacity", "_ts", "_rows", "_struct", "_pack_into", "_size", "_start", "_count", "_next",
                 "_last", "out_of_order", "_convert")  # fmt: skip

    def __init__(self, capacity: int, convert: Callable[[tuple], tuple] | None = None, *,
                 row_format: str | None = None) -> None:  # fmt: skip
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity = {capacity!r}: a positive number of samples")
        self.capacity = capacity
        self._ts = array("d", bytes(8 * capacity))
        self._rows = bytearray()
        self._struct: struct.Struct | None = None
        self._size = 0  # bytes per packed row
        if row_format is not None:
            self._layout(row_format)
        self._start = 0  # physical index of the oldest sample
        self._count = 0
        self._next = 0  # physical index the next sample goes to
        self._last = 0.0  # timestamp of the newest sample (when _count)
        self.out_of_order = 0
        self._convert = convert  # stored row -> channel row, applied when rows are read

    def _layout(self, row_format: str) -> None:
        try:
            st = struct.Struct("=" + row_format)  # standard sizes, no padding, native byte order
        except struct.error as err:
            raise ValueError(f"row_format = {row_format!r}: a struct format of numbers ({err})") from err
        if st.size == 0:
            raise ValueError(f"row_format = {row_format!r}: at least one number per row")
        self._struct, self._pack_into, self._size = st, st.pack_into, st.size
        self._rows = bytearray(st.size * self.capacity)

    @classmethod
    def for_rate(cls, frames_per_second: float, seconds: float, convert: Callable[[tuple], tuple] | None = None,
                 *, row_format: str | None = None) -> RingBuffer:  # fmt: skip
        """A buffer holding ``seconds`` of a stream at ``frames_per_second`` (at least one sample)."""
        return cls(max(1, int(round(frames_per_second * seconds))), convert, row_format=row_format)

    @property
    def row_format(self) -> str | None:
        """The struct format of a stored row (None until the first row when none was given)."""
        return None if self._struct is None else self._struct.format[1:]

    @property
    def nbytes(self) -> int:
        """Bytes the stored samples take (timestamps and rows), whatever how many are filled."""
        return self._ts.itemsize * len(self._ts) + len(self._rows)

    def __len__(self) -> int:
        return self._count

    def append(self, ts: float, row: Sequence[float]) -> bool:
        """Add one sample; False (and counted) when ``ts`` is not after the newest sample.

        ``row`` must fit ``row_format`` (its count and types): a struct.error names what does not.
        """
        count = self._count
        if count and ts <= self._last:
            self.out_of_order += 1
            return False
        if self._struct is None:
            self._layout("d" * len(row))
        i = self._next
        self._pack_into(self._rows, i * self._size, *row)
        self._ts[i] = ts
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

    def _read(self, a: int, b: int) -> tuple[list[float], list[tuple]]:
        """Logical samples a..b-1: (timestamps, rows as stored, or converted)."""
        if a >= b:
            return [], []
        cap, start, tss = self.capacity, self._start, self._ts
        st = self._struct
        assert st is not None  # a stored sample has a layout
        i, j = (start + a) % cap, (start + b) % cap
        if i < j:  # one contiguous run
            ts = tss[i:j].tolist()
            rows = list(st.iter_unpack(memoryview(self._rows)[i * st.size : j * st.size]))
        else:  # across the wrap: the tail of the block, then its head
            ts = tss[i:].tolist() + tss[:j].tolist()
            view = memoryview(self._rows)
            rows = list(st.iter_unpack(view[i * st.size :])) + list(st.iter_unpack(view[: j * st.size]))
        convert = self._convert
        return ts, rows if convert is None else [convert(row) for row in rows]

    def window(self, t0: float, t1: float) -> tuple[list[float], list[tuple]]:
        """Samples with t0 <= ts <= t1, oldest first: (timestamps, rows)."""
        if t1 < t0 or not self._count:
            return [], []
        a = self._bisect(t0)
        b = self._bisect(t1)
        if b < self._count and self._ts[(self._start + b) % self.capacity] == t1:
            b += 1
        return self._read(a, b)

    def latest(self, n: int = 1) -> Sequence[tuple[float, tuple]]:
        """The newest ``n`` samples, oldest first."""
        n = max(0, min(n, self._count))
        ts, rows = self._read(self._count - n, self._count)
        return list(zip(ts, rows, strict=True))
