"""Interval energy from register reads: one pure engine per meter register (docs/metering.md).

A revenue meter's energy register is a cumulative counter. :class:`RegisterIntervals` takes its reads, one per
poll, and closes clock-aligned UTC intervals [start, end) whose energy is the counter's value at ``end`` minus its
value at ``start``, each validated and given a NEM12 quality (the VEE of the edge). No I/O, no clock, no asyncio:
the caller feeds reads and stores what comes out.

API
---
``RegisterIntervals(meter, register, channel, *, interval_s, modulus, to_unit, max_delta, estimate_span_s,
actual_span_s, resolution)``
    ``add(ts, raw, quality, meter_id) -> list[Interval]``: one read (``quality`` the Reading's, ``"good"`` to be
    used); the intervals it closes, oldest first.
    ``flush(now) -> list[Interval]``: the intervals that are null whatever comes next (no read for longer than
    ``estimate_span_s``): closed now, so central learns of an outage while it lasts (at most ``MAX_FORWARD_S``
    past the last read).
    ``swap(ts, new_meter_id)``: a meter swap or register reset declared by an operator: the first read at or
    after ``ts`` is the new register's base (``new_meter_id`` names it when the reads carry no identity).
    ``state() -> dict`` / ``RegisterIntervals.from_state(state, ...)``: everything the engine holds, JSON-ready.
    Store it in the same SQLite transaction as the intervals that ``add``/``flush`` returned: a restart from it,
    fed again the reads stamped after ``last_ts``, emits every later interval exactly once.
:class:`Interval` (frozen): one closed interval; ``to_item()`` is the ``intervals`` stream's item
(protocols/telemetry/intervals.py); ``correct(interval, ...)`` makes its next version.

The rules (each with its test table in tests/test_metering_intervals.py)
------------------------------------------------------------------------
1. Boundaries. The counter's value at a boundary is interpolated linearly between the accepted reads just
   before and just after it (a read exactly on the boundary is the value). The boundary is *actual* when those
   two reads are at most ``actual_span_s`` apart, *substituted* when at most ``estimate_span_s`` apart, *null*
   beyond. An interval is ``A`` when both its boundaries are actual, ``S`` (method 17, linear interpolation)
   when one is substituted and none null, ``N`` (value null) when one is null. Reads inside an interval do
   not enter its energy (the counter is cumulative): only its two boundaries do.
2. Rollover. A read below the previous accepted one by more than half the modulus wrapped:
   ``delta = raw - prev + modulus``; flag ``rollover``.
3. Backward. A read below the previous accepted one by less than half the modulus (or any smaller read when
   there is no modulus) is dropped: it never books energy and never re-bases the counter; flag ``backward``.
4. Spike. A forward delta above ``max_delta * (dt + JITTER_S) / interval_s + resolution`` (the rated power over
   the time since the previous accepted read, one poll's jitter and one count of resolution) is dropped; flag
   ``spike``. The same bound holds from an anchor read up to about one interval back, so that the jitter
   allowance of many fast reads cannot add up. A dropped read is a missing read: the boundaries around it keep their quality only if other
   reads bracket them closely enough.
5. Meter swap. A read whose ``meter_id`` differs from the previous accepted read's (neither None), or the first
   read at or after a declared :meth:`swap`, is the new register's base: no energy is booked between the old
   meter's last read and the new meter's first (the counter is held flat across), so an interval holding the
   swap is old part + new part. Every interval whose reads come from both meters is flagged ``meter_swap`` and
   has ``meter_id`` null.
6. Gaps. See rule 1: a boundary between reads more than ``actual_span_s`` apart is interpolated (``S``, method
   17) up to ``estimate_span_s``, null beyond; flag ``gap`` on every interval that is not ``A``.
7. Clock steps. A read stamped before the previous accepted read is dropped (flag ``clock_step``): the counter
   is cumulative, so its energy reaches the next accepted read. A read stamped more than ``MAX_FORWARD_S``
   after the previous accepted read is dropped unless ``CONFIRM_READS`` such reads in a row confirm the new
   time; then the engine resumes from there without emitting the intervals in between (flag ``clock_step``).
8. Reads and versions. Each interval carries the accepted reads it came from (``[ts, raw]``: the read at or
   before ``start``, the reads inside thinned to fit ``MAX_READS``, the read at or after ``end``). The engine
   emits each interval once, version 1; :func:`correct` makes version + 1 of an interval and keeps its reads.
9. UTC. Boundaries are multiples of ``interval_s`` in seconds since the epoch; local time and DST never enter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from protocols.telemetry.intervals import CHANNELS, FLAGS, INTERVAL_LENGTHS_S, MAX_READS, METHODS, QUALITIES, UNITS

# NEM12 method of an interval whose boundary was interpolated across a gap: substitution type 17, "linear
# interpolation" (AEMO Metrology Procedure Part B: substitution types 11-19 replace missing historical data of
# interval meters; estimation types 51-59 are for data not yet collected). docs/metering.md gives the reasons.
SUBSTITUTED_METHOD = 17
JITTER_S = 1.0  # a poll's timestamp may be this far from the instant the meter latched the register
MAX_FORWARD_S = 31 * 86400  # a read this far ahead of the previous one is a clock fault until confirmed
CONFIRM_READS = 3  # reads in a row that confirm a far jump of the clock
STATE_VERSION = 1
VALUE_DECIMALS = 9  # an interval's value is rounded to 1e-9 kWh or kvarh
_INSIDE_MAX = MAX_READS - 2  # the read before start and the read after end take two places
_FLAG_ORDER = {f: i for i, f in enumerate(FLAGS)}


@dataclass(frozen=True, slots=True)
class Interval:
    """One closed interval of one register (the fields of the ``intervals`` stream's item)."""

    meter: str
    register: str
    channel: str
    start: int  # [s since epoch, UTC], a multiple of end - start
    end: int
    value: float | None  # [kWh or kvarh]; None for quality N
    quality: str  # NEM12: A, S or N from the engine; E or F only through correct()
    method: int | None  # NEM12 method code for S/E/F, None for A and N
    version: int
    flags: tuple[str, ...]
    reads: tuple[tuple[float, float], ...]
    meter_id: str | None
    read_scale: float | None = None  # kWh (kvarh) per raw unit of ``reads``
    modulus: float | None = None  # where the raw register wraps; None: it does not

    @property
    def unit(self) -> str:
        return UNITS[self.channel]

    def to_item(self) -> dict[str, Any]:
        """The item of the ``intervals`` stream (``check_interval`` accepts it)."""
        return {
            "meter": self.meter, "register": self.register, "channel": self.channel, "start": self.start,
            "end": self.end, "value": self.value, "unit": UNITS[self.channel], "quality": self.quality,
            "method": self.method, "version": self.version, "flags": list(self.flags),
            "reads": [[t, r] for t, r in self.reads], "meter_id": self.meter_id,
            **({} if self.read_scale is None else {"read_scale": self.read_scale, "modulus": self.modulus}),
        }  # fmt: skip


def correct(
    previous: Interval,
    *,
    value: float | None,
    quality: str,
    method: int | None,
    flags: tuple[str, ...] | None = None,
) -> Interval:
    """The next version of ``previous``: a correction is a new item, the old one is never overwritten.

    ``previous`` is the latest version the caller holds (its store); reads and meter_id are kept.
    """
    if quality not in QUALITIES:
        raise ValueError(f"quality {quality!r}: one of {', '.join(QUALITIES)}")
    if (quality == "N") != (value is None):
        raise ValueError("value is None exactly when quality is N")
    if quality in ("A", "N") and method is not None:
        raise ValueError(f"quality {quality} has no method")
    if quality not in ("A", "N") and method not in METHODS:
        raise ValueError(f"method {method!r}: a NEM12 method code ({', '.join(map(str, METHODS))})")
    bad = [f for f in flags or () if f not in FLAGS]
    if bad:
        raise ValueError(f"flag {bad[0]!r}: one of {', '.join(FLAGS)}")
    return replace(
        previous,
        value=value,
        quality=quality,
        method=method,
        version=previous.version + 1,
        flags=previous.flags if flags is None else tuple(flags),
    )


class RegisterIntervals:
    """Intervals of one energy register of one meter (module docstring: API and rules).

    Parameters
    ----------
    meter, register : the device name and the register's point name.
    channel : one of ``CHANNELS``.
    interval_s : interval length [s], 300, 900, 1800 or 3600.
    modulus : the counter's range [raw units]: it wraps to 0 at this value (2**32 for a uint32); None: no wrap.
    to_unit : raw units -> kWh or kvarh (0.001 for Wh).
    max_delta : the most the register can advance in one interval [raw units]: rated power x interval x margin.
    estimate_span_s : the longest gap between reads a boundary is interpolated across [s].
    actual_span_s : the longest gap between reads a boundary is *actual* across [s].
    resolution : one count of the register [raw units], the slack of the spike bound.
    """

    __slots__ = (
        "meter", "register", "channel", "interval_s", "modulus", "to_unit", "max_delta", "estimate_span_s",
        "actual_span_s", "resolution", "_max_rate", "_ts", "_raw", "_acc", "_id", "_seg", "_start", "_sval",
        "_sstat", "_before", "_before_seg", "_inside", "_stride", "_skip", "_next_b", "_flags", "_swap", "_ahead",
        "_anchor_ts", "_anchor_acc",
    )  # fmt: skip

    def __init__(
        self,
        meter: str,
        register: str,
        channel: str,
        *,
        interval_s: int,
        modulus: float | None,
        to_unit: float,
        max_delta: float,
        estimate_span_s: float = 3600.0,
        actual_span_s: float = 10.0,
        resolution: float = 1.0,
    ) -> None:
        if channel not in CHANNELS:
            raise ValueError(f"channel {channel!r}: one of {', '.join(CHANNELS)}")
        if interval_s not in INTERVAL_LENGTHS_S:
            raise ValueError(f"interval_s {interval_s!r}: one of {INTERVAL_LENGTHS_S}")
        if modulus is not None and not modulus > 0:
            raise ValueError(f"modulus {modulus!r}: positive or None")
        if not (to_unit > 0 and max_delta > 0 and resolution >= 0):
            raise ValueError("to_unit and max_delta are positive, resolution is not negative")
        if not 0 < actual_span_s <= estimate_span_s:
            raise ValueError(f"need 0 < actual_span_s ({actual_span_s}) <= estimate_span_s ({estimate_span_s})")
        self.meter, self.register, self.channel = meter, register, channel
        self.interval_s = int(interval_s)
        self.modulus = modulus
        self.to_unit = float(to_unit)
        self.max_delta = float(max_delta)
        self.estimate_span_s = float(estimate_span_s)
        self.actual_span_s = float(actual_span_s)
        self.resolution = float(resolution)
        self._max_rate = self.max_delta / self.interval_s
        # the last accepted read: time, raw value, the counter unwrapped since the first read, meter, segment
        # (a segment is one meter's stretch of reads: +1 at each swap)
        self._ts: float | None = None
        self._raw: float = 0
        self._acc: float = 0
        self._id: str | None = None
        self._seg = 0
        # an accepted read at most about interval_s back (renewed when older): the spike bound holds from it too,
        # so that the per-read jitter allowance cannot add up over many fast reads
        self._anchor_ts: float = 0.0
        self._anchor_acc: float = 0
        # the open interval [_start, _start + interval_s): its start value and status (A, S, N), the read at or
        # before its start and that read's segment, the reads inside (thinned: one kept every _stride)
        self._start: int | None = None
        self._sval: float | None = None
        self._sstat = "N"
        self._before: tuple[float, float] | None = None
        self._before_seg = 0
        self._inside: list[tuple[float, float]] = []
        self._stride = 1
        self._skip = 0
        self._next_b: float = math.inf  # the next boundary a read must reach to close something
        self._flags: dict[int, set[str]] = {}  # interval start -> flags seen in it (dropped reads)
        self._swap: tuple[float, str | None] | None = None
        self._ahead: list[tuple[float, float, str | None]] = []  # reads far ahead, waiting for confirmation

    @property
    def last_ts(self) -> float | None:
        """The time of the last accepted read (None before the first): after a restart from :meth:`state`, feed
        the stored reads stamped after it, in order (an older read would be taken for a clock step, rule 7)."""
        return self._ts

    # --- reads --------------------------------------------------------------------------------------------

    def add(self, ts: float, raw: float | None, quality: str = "good", meter_id: str | None = None) -> list[Interval]:
        """One read of the register; the intervals it closes, oldest first (usually none, one per boundary)."""
        if quality != "good" or isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            return []  # a read that failed is a missing read (rule 6)
        last = self._ts
        if last is None:
            if math.isfinite(ts):
                self._first(ts, raw, meter_id)
            return []
        if not ts > last:  # also a NaN time
            if ts < last:
                self._flag(last, "clock_step")
            return []
        if ts - last > MAX_FORWARD_S:
            return self._far(ts, raw, meter_id)
        if self._ahead:
            self._ahead.clear()
            self._flag(last, "clock_step")
        swap = self._swap
        if (swap is not None and ts >= swap[0]) or (
            meter_id is not None and self._id is not None and meter_id != self._id
        ):
            self._swap = None
            # the identity read from the meter wins over the declared one (else the next read would swap back)
            self._id = meter_id if meter_id is not None or swap is None else swap[1]
            self._anchor_ts, self._anchor_acc = ts, self._acc
            return self._accept(ts, raw, self._acc, self._seg + 1)
        delta = raw - self._raw
        wrapped = False
        if delta < 0:
            m = self.modulus
            if m is not None and -delta > m / 2:
                delta += m
                wrapped = True
            else:
                self._flag(ts, "backward")
                return []
        rate = self._max_rate
        acc = self._acc + delta
        if (
            delta > rate * (ts - last + JITTER_S) + self.resolution
            or acc - self._anchor_acc > rate * (ts - self._anchor_ts + JITTER_S) + self.resolution
        ):
            self._flag(ts, "spike")
            return []
        if wrapped:
            self._flag(ts, "rollover")
        if self._id is None:
            self._id = meter_id
        if ts - self._anchor_ts > self.interval_s:
            self._anchor_ts, self._anchor_acc = self._ts, self._acc
        return self._accept(ts, raw, acc, self._seg)

    def swap(self, ts: float, new_meter_id: str | None = None) -> None:
        """Declare a meter swap (or a register reset): the first read at or after ``ts`` is the new base."""
        self._swap = (float(ts), new_meter_id)

    def flush(self, now: float) -> list[Interval]:
        """Intervals ending by ``now`` that no later read can give a value: no read for over ``estimate_span_s``."""
        if self._ts is None or now - self._ts <= self.estimate_span_s:
            return []
        out: list[Interval] = []
        before = (self._ts, self._raw)
        b = self._first_boundary_after(self._ts)
        # no further than a read could be taken (rule 7): a clock stepped years ahead must not make years of items
        until = min(now, self._ts + MAX_FORWARD_S)
        while b <= until:
            self._boundary(b, None, "N", before, self._seg, None, out)
            b += self.interval_s
        return out

    # --- internals ----------------------------------------------------------------------------------------

    def _first(self, ts: float, raw: float, meter_id: str | None) -> None:
        self._ts, self._raw, self._acc, self._id = ts, raw, 0, meter_id
        self._anchor_ts, self._anchor_acc = ts, 0
        self._swap = None
        if ts % self.interval_s == 0:
            self._open(int(ts), 0, "A", (ts, raw), self._seg)
        self._next_b = self._first_boundary_after(ts)

    def _first_boundary_after(self, ts: float) -> int:
        b = (int(ts // self.interval_s) + 1) * self.interval_s
        if self._start is not None and b <= self._start:
            b = self._start + self.interval_s
        return b

    def _flag(self, ts: float, flag: str) -> None:
        key = int(ts // self.interval_s) * self.interval_s
        if self._start is not None and key < self._start:
            key = self._start
        got = self._flags.get(key)
        if got is None:
            self._flags[key] = {flag}
        else:
            got.add(flag)

    def _far(self, ts: float, raw: float, meter_id: str | None) -> list[Interval]:
        """A read more than MAX_FORWARD_S ahead (rule 7): held until CONFIRM_READS in a row agree."""
        ahead = self._ahead
        if ahead and not (0 < ts - ahead[-1][0] <= self.estimate_span_s):
            ahead.clear()
        ahead.append((ts, raw, meter_id))
        if len(ahead) < CONFIRM_READS:
            return []
        held = list(ahead)
        ahead.clear()
        # Resume at the new time: nothing is emitted for the span the clock skipped, the open interval is dropped
        # (it can never be closed), the counter restarts from the first confirmed read.
        first_ts, first_raw, first_id = held[0]
        self._start = None
        self._flags.clear()
        self._inside.clear()
        self._stride, self._skip = 1, 0
        self._first(first_ts, first_raw, self._id if first_id is None else first_id)
        self._flags[self._start if self._start is not None else int(self._next_b)] = {"clock_step"}
        out: list[Interval] = []
        for t, r, i in held[1:]:
            out += self.add(t, r, "good", i)
        return out

    def _accept(self, ts: float, raw: float, acc: float, seg: int) -> list[Interval]:
        out: list[Interval] = []
        if ts >= self._next_b:
            last, last_acc = self._ts, self._acc
            assert last is not None
            before = (last, self._raw)
            gap = ts - last
            status = "A" if gap <= self.actual_span_s else "S" if gap <= self.estimate_span_s else "N"
            b = self._next_b
            step = self.interval_s
            while b <= ts:
                if b == ts:
                    self._boundary(int(b), acc, "A", (ts, raw), seg, (ts, raw), out, seg)
                elif status == "N":
                    self._boundary(int(b), None, "N", before, self._seg, (ts, raw), out, seg)
                else:
                    val = last_acc + (acc - last_acc) * ((b - last) / gap)
                    self._boundary(int(b), val, status, before, self._seg, (ts, raw), out, seg)
                b += step
            self._next_b = b
        start = self._start
        if start is not None and ts > start:
            self._skip += 1
            if self._skip >= self._stride:
                self._skip = 0
                inside = self._inside
                inside.append((ts, raw))
                if len(inside) >= _INSIDE_MAX:
                    del inside[1::2]
                    self._stride *= 2
        elif start is not None and ts <= start:  # a read late after a flush: the read before the open interval
            self._before, self._before_seg = (ts, raw), seg
        self._ts, self._raw, self._acc, self._seg = ts, raw, acc, seg
        return out

    def _boundary(
        self,
        b: int,
        val: float | None,
        status: str,
        before: tuple[float, float],
        before_seg: int,
        after: tuple[float, float] | None,
        out: list[Interval],
        after_seg: int | None = None,
    ) -> None:
        """Close the open interval at boundary ``b`` (if it ends there) and open the next one."""
        start = self._start
        if start is not None and start + self.interval_s == b:
            out.append(self._close(start, b, val, status, after, self._seg if after_seg is None else after_seg))
        self._open(b, val, status, before, before_seg)
        if b >= self._next_b:
            self._next_b = b + self.interval_s

    def _open(self, b: int, val: float | None, status: str, before: tuple[float, float], before_seg: int) -> None:
        self._start, self._sval, self._sstat = b, val, status
        self._before, self._before_seg = before, before_seg
        self._inside = []
        self._stride, self._skip = 1, 0

    def _close(
        self, start: int, end: int, eval_: float | None, estat: str, after: tuple[float, float] | None, after_seg: int
    ) -> Interval:
        sstat = self._sstat
        flags = self._flags.pop(start, set())
        for k in [k for k in self._flags if k < start]:  # flags of intervals that were never opened
            del self._flags[k]
        if sstat == "N" or estat == "N" or self._sval is None or eval_ is None:
            quality, value, method = "N", None, None
        else:
            # rounded to 1e-9 kWh (a microwatt-hour): 1136 Wh x 0.001 is 1.136, not 1.1360000000000001, on the wire
            value = round((eval_ - self._sval) * self.to_unit, VALUE_DECIMALS)
            if sstat == "A" and estat == "A":
                quality, method = "A", None
            else:
                quality, method = "S", SUBSTITUTED_METHOD
        if quality != "A":
            flags.add("gap")
        one_meter = self._before_seg == after_seg
        if not one_meter:
            flags.add("meter_swap")
        reads = [self._before] if self._before is not None else []
        reads += self._inside
        if after is not None:
            reads.append(after)
        return Interval(
            meter=self.meter,
            register=self.register,
            channel=self.channel,
            start=start,
            end=end,
            value=value,
            quality=quality,
            method=method,
            version=1,
            flags=tuple(sorted(flags, key=_FLAG_ORDER.__getitem__)),
            reads=tuple(reads),
            meter_id=self._id if one_meter else None,
            read_scale=self.to_unit,
            modulus=self.modulus,
        )

    # --- state --------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the engine holds, JSON-ready; :meth:`from_state` resumes from it exactly."""
        return {
            "v": STATE_VERSION, "meter": self.meter, "register": self.register, "interval_s": self.interval_s,
            "ts": self._ts, "raw": self._raw, "acc": self._acc, "id": self._id, "seg": self._seg,
            "start": self._start, "sval": self._sval, "sstat": self._sstat,
            "before": None if self._before is None else list(self._before), "before_seg": self._before_seg,
            "inside": [list(r) for r in self._inside], "stride": self._stride, "skip": self._skip,
            "next_b": None if self._next_b == math.inf else self._next_b,
            "flags": [[k, sorted(v)] for k, v in sorted(self._flags.items())],
            "swap": None if self._swap is None else list(self._swap),
            "ahead": [list(r) for r in self._ahead], "anchor": [self._anchor_ts, self._anchor_acc],
        }  # fmt: skip

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], meter: str, register: str, channel: str, **params: Any
    ) -> RegisterIntervals:
        """An engine built with ``params`` (the constructor's keywords) resuming from ``state``.

        A state of another interval length (the site file changed ``interval_s``) resumes from its last read
        with no open interval: the next interval emitted starts at the first boundary of the new length after it.
        """
        eng = cls(meter, register, channel, **params)
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"metering state version {state.get('v')!r}: this agent reads {STATE_VERSION}")
        if state["meter"] != meter or state["register"] != register:
            raise ValueError(f"metering state of {state['meter']}.{state['register']}, not {meter}.{register}")
        if state["ts"] is None:
            return eng
        eng._ts, eng._raw, eng._acc, eng._id, eng._seg = (
            state["ts"],
            state["raw"],
            state["acc"],
            state["id"],
            state["seg"],
        )
        eng._swap = None if state["swap"] is None else (state["swap"][0], state["swap"][1])
        eng._ahead = [(t, r, i) for t, r, i in state["ahead"]]
        eng._anchor_ts, eng._anchor_acc = state["anchor"]
        if state["interval_s"] != eng.interval_s:
            eng._next_b = eng._first_boundary_after(eng._ts)
            return eng
        eng._start, eng._sval, eng._sstat = state["start"], state["sval"], state["sstat"]
        eng._before = None if state["before"] is None else (state["before"][0], state["before"][1])
        eng._before_seg = state["before_seg"]
        eng._inside = [(t, r) for t, r in state["inside"]]
        eng._stride, eng._skip = state["stride"], state["skip"]
        eng._next_b = math.inf if state["next_b"] is None else state["next_b"]
        eng._flags = {k: set(v) for k, v in state["flags"]}
        return eng


__all__ = [
    "CONFIRM_READS",
    "JITTER_S",
    "MAX_FORWARD_S",
    "SUBSTITUTED_METHOD",
    "Interval",
    "RegisterIntervals",
    "correct",
]
