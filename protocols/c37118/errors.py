"""Typed errors of the C37.118 codec: every way a frame can be wrong has its own class.

All derive from :class:`FrameError` (itself a ``ValueError``), so a caller that only wants "bad frame"
catches one class, and a caller that wants to count CRC failures apart from garbage can. The stream
reader returns these as *values* (events), it never raises them.
"""

from __future__ import annotations


class FrameError(ValueError):
    """A frame (or a stretch of bytes claiming to be one) that cannot be used."""


class SyncError(FrameError):
    """Bytes that are not the start of a frame: a first byte other than 0xAA, or garbage skipped by the reader.

    ``skipped`` is how many bytes the stream reader discarded (0 when raised by :func:`decode_frame`).
    """

    def __init__(self, message: str, skipped: int = 0) -> None:
        super().__init__(message)
        self.skipped = skipped


class VersionError(FrameError):
    """A SYNC version nibble this codec does not read (1 = C37.118-2005, 2 = C37.118.2-2011)."""

    def __init__(self, message: str, version: int) -> None:
        super().__init__(message)
        self.version = version


class SizeError(FrameError):
    """FRAMESIZE out of bounds, or not equal to the bytes given, or a reader buffer bound reached."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class CrcError(FrameError):
    """CHK does not match the CRC-CCITT of the frame; ``expected`` is computed, ``actual`` is on the wire."""

    def __init__(self, message: str, expected: int, actual: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class ConfigMismatchError(FrameError):
    """A data frame that its configuration cannot decode: no configuration for its IDCODE, or wrong size."""

    def __init__(self, message: str, idcode: int) -> None:
        super().__init__(message)
        self.idcode = idcode


class MalformedFrameError(FrameError):
    """A field-level problem: a value the standard does not allow (NUM_PMU 0, DATA_RATE 0, a name too long...)."""


class FragmentError(FrameError):
    """A fragmented CFG-3 (6.4 Table 10 CONT_IDX) that cannot be put back together.

    A continuation with no first frame, an index out of order (a frame missing or repeated), or a new
    series starting before the last one ended. ``expected`` is the CONT_IDX that was due (None: none
    was, no series under way), ``got`` the one that came; the pieces held for ``idcode`` are dropped.
    """

    def __init__(self, message: str, idcode: int, got: int, expected: int | None) -> None:
        super().__init__(message)
        self.idcode = idcode
        self.got = got
        self.expected = expected
