"""A feeder recloser relay (51/50/79) at the feeder head, driven by the feeder's power flow.

The relay watches the phase currents at one terminal of its breaker's element (``"Line.650632"``
terminal 1 by default), times phase overcurrent on an IEEE C37.112-1996 inverse-time curve (51),
trips at once above a multiple of pickup (50), opens its breaker (``feeder.set_switch(element,
False)``) and recloses it on a schedule (79) until the fault is gone or the sequence runs out and the
relay locks out. Every operation is logged in an event ring served over Modbus
(config/maps/sim-relay.toml, docs/devices/sim-relay.md).

Timing uses the SIMULATED time between observes, as a digital relay integrates its samples: the state
solved at one observe holds until the next, so the interval ``[t_prev, t]`` adds
``(t - t_prev) / t_op(M_prev)`` to the 51 accumulator (C37.112-1996 clause 4, the integral form
``integral(dt / t(I)) = 1``), and the relay trips at the instant the sum reaches 1, interpolated inside
the interval (that instant is the event's time stamp; the breaker opens in the physics at the next
bench step). The accumulator resets to 0 as soon as the current is below pickup (instantaneous reset,
as a digital relay set for 1-cycle reset does; C37.112's electromechanical reset is not modelled).

Commands and settings written over Modbus are checked at once (refused with an exception code) and
carried out at the next ``actuate(t)``, the relay's next processing instant, which stamps their events.
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from protocols.eventlog import EventLog
from protocols.modbus.registermap import Table
from sim_hw.devices.modbus_server import ILLEGAL_ADDRESS, ILLEGAL_VALUE, WriteRequest
from sim_hw.feeder.solution import PHASES, Solution

log = EventLog("sim.devices")

MODEL = "SIM-RECL-651R"


@dataclass(frozen=True, slots=True)
class CurveConstants:
    """``t = TD * (A / (M**p - 1) + B)`` [s], M = I / pickup (IEEE C37.112-1996, Eq. 1 and Table 1)."""

    a: float  # [s]
    b: float  # [s]
    p: float
    tr: float  # reset constant [s] (Table 1; unused: this relay resets instantaneously)


class Curve(IntEnum):
    """The curve register's codes."""

    MODERATELY_INVERSE = 1
    VERY_INVERSE = 2
    EXTREMELY_INVERSE = 3


# IEEE C37.112-1996, Table 1 ("Constants for standard inverse-time characteristics").
CURVES: dict[Curve, CurveConstants] = {
    Curve.MODERATELY_INVERSE: CurveConstants(a=0.0515, b=0.1140, p=0.02, tr=4.85),
    Curve.VERY_INVERSE: CurveConstants(a=19.61, b=0.491, p=2.0, tr=21.6),
    Curve.EXTREMELY_INVERSE: CurveConstants(a=28.2, b=0.1217, p=2.0, tr=29.1),
}
CURVE_NAMES = {c.name.lower(): c for c in Curve}  # "very_inverse" -> Curve.VERY_INVERSE (bench TOML)

# Setting ranges of this relay (device limits, documented in docs/devices/sim-relay.md; the time-dial range is
# that of common North American relays' U-curves, C37.112 itself sets none).
TIME_DIAL_RANGE = (0.5, 15.0)
PICKUP_MAX_A = 20_000.0
INST_MULTIPLE_RANGE = (1.0, 40.0)  # or 0: the 50 element is off
MAX_SHOTS = 4
RECLOSE_INTERVAL_RANGE_S = (0.1, 600.0)
RESET_TIME_RANGE_S = (1.0, 600.0)
RING_SIZE = 8
HISTORY = 256  # events kept in memory (the ring serves the last RING_SIZE)


class EventCode(IntEnum):
    """The event ring's codes (docs/devices/sim-relay.md, "Events")."""

    NONE = 0
    TRIP_51 = 1
    TRIP_50 = 2
    RECLOSE = 3
    LOCKOUT = 4
    REMOTE_TRIP = 5
    REMOTE_CLOSE = 6
    LOCKOUT_RESET = 7
    SEQUENCE_RESET = 8
    SETTINGS_CHANGED = 9


class State(IntEnum):
    """The relay_state register."""

    CLOSED = 0  # breaker closed, sequence reset
    RECLAIM = 1  # closed by a reclose; a trip before reset_time_s continues the sequence
    RECLOSE_WAIT = 2  # open by protection, a reclose is due
    OPEN = 3  # open by a remote trip; no reclose pending, remote close allowed
    LOCKOUT = 4  # open, sequence exhausted (or 79 off): remote close refused until a reset


class RelayError(ValueError):
    """A relay asked for something it cannot do: bad option (named), time running backwards, unknown terminal."""


@dataclass(frozen=True, slots=True)
class Event:
    code: EventCode
    t: float  # [s since the epoch, UTC]
    shot: int  # recloses done in the sequence when it happened (a reclose: its own number)
    i_a: float  # phase currents at the event [A]
    i_b: float
    i_c: float


def trip_time_s(curve: Curve, multiple: float, time_dial: float) -> float:
    """Operating time [s] at a constant current of ``multiple`` x pickup (C37.112-1996 Eq. 1); inf at M <= 1."""
    if multiple <= 1.0:
        return math.inf
    k = CURVES[curve]
    return time_dial * (k.a / (multiple**k.p - 1.0) + k.b)


@dataclass(slots=True)
class Settings:
    pickup_a: float
    curve: Curve
    time_dial: float
    inst_multiple: float
    shots: int
    reclose_s: tuple[float, float, float, float]
    reset_time_s: float
    reclose_enabled: bool


def _check_setting(name: str, value: Any) -> str | None:
    """Why ``value`` is not allowed for setting ``name`` (None: it is)."""
    if name == "reclose_enabled":
        return None if isinstance(value, bool) else "true or false"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "a finite number"
    if name == "pickup_a":
        return None if 0 < value <= PICKUP_MAX_A else f"in (0, {PICKUP_MAX_A:g}] A"
    if name == "curve":
        return None if value in tuple(Curve) else "one of " + ", ".join(f"{c.value} ({c.name.lower()})" for c in Curve)
    if name == "time_dial":
        lo, hi = TIME_DIAL_RANGE
        return None if lo <= value <= hi else f"in {lo:g} .. {hi:g}"
    if name == "inst_multiple":
        lo, hi = INST_MULTIPLE_RANGE
        return None if value == 0 or lo <= value <= hi else f"0 (off) or in {lo:g} .. {hi:g}"
    if name == "shots":
        return None if value == int(value) and 0 <= value <= MAX_SHOTS else f"an integer 0 .. {MAX_SHOTS}"
    if name.startswith("reclose_") and name.endswith("_s"):
        lo, hi = RECLOSE_INTERVAL_RANGE_S
        return None if lo <= value <= hi else f"in {lo:g} .. {hi:g} s"
    if name == "reset_time_s":
        lo, hi = RESET_TIME_RANGE_S
        return None if lo <= value <= hi else f"in {lo:g} .. {hi:g} s"
    raise KeyError(name)


SETTING_POINTS = ("pickup_a", "curve", "time_dial", "inst_multiple", "shots", "reclose_1_s", "reclose_2_s",
                  "reclose_3_s", "reclose_4_s", "reset_time_s")  # fmt: skip
COMMAND_COILS = ("trip", "close", "reset")
READ_ONLY_HOLDING = ("model", "serial_number")
_OPTIONS = ("element", "terminal", "pickup_a", "curve", "time_dial", "inst_multiple", "reclose_intervals_s",
            "reset_time_s", "reclose_enabled")  # fmt: skip


class FeederRelay:
    """A recloser relay on ``element`` (its breaker), measuring at ``terminal``.

    Parameters
    ----------
    name : the device name; the serial number derives from it.
    element, terminal : where the CTs are and which switch the breaker is (``feeder.set_switch(element, ...)``).
    pickup_a : 51 pickup, primary amperes [A].
    curve : ``"moderately_inverse"``, ``"very_inverse"`` or ``"extremely_inverse"`` (or the Curve code).
    time_dial : TD of C37.112 Eq. 1, 0.5 .. 15.
    inst_multiple : 50 pickup as a multiple of ``pickup_a``, 1 .. 40, or 0 for off.
    reclose_intervals_s : open intervals before each reclose [s]; their count is the number of shots (0..4).
    reset_time_s : after a reclose, the time without a trip that resets the sequence [s].
    reclose_enabled : the 79 element on.
    """

    def __init__(
        self,
        name: str,
        *,
        element: str = "Line.650632",
        terminal: int = 1,
        pickup_a: float = 800.0,
        curve: str | int = "very_inverse",
        time_dial: float = 2.0,
        inst_multiple: float = 8.0,
        reclose_intervals_s: Sequence[float] = (2.0, 15.0, 15.0),
        reset_time_s: float = 30.0,
        reclose_enabled: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise RelayError(f"name = {name!r}: must be a non-empty string")
        self.name = name

        def bad(key: str, value: Any, allowed: str) -> RelayError:
            return RelayError(f"relay {name!r}: {key} = {value!r}: must be {allowed}")

        if not isinstance(element, str) or "." not in element:
            raise bad("element", element, "an OpenDSS name like 'Line.650632'")
        if isinstance(terminal, bool) or not isinstance(terminal, int) or terminal < 1:
            raise bad("terminal", terminal, "an integer >= 1")
        if isinstance(curve, str):
            if curve.lower() not in CURVE_NAMES:
                raise bad("curve", curve, "one of " + ", ".join(CURVE_NAMES))
            curve_code: Any = CURVE_NAMES[curve.lower()]
        else:
            curve_code = curve
        if isinstance(reclose_intervals_s, str | bytes) or not isinstance(reclose_intervals_s, Sequence):
            raise bad("reclose_intervals_s", reclose_intervals_s, f"a list of 0 .. {MAX_SHOTS} intervals [s]")
        if len(reclose_intervals_s) > MAX_SHOTS:
            raise bad("reclose_intervals_s", reclose_intervals_s, f"a list of 0 .. {MAX_SHOTS} intervals [s]")
        checks: list[tuple[str, str, Any]] = [
            ("pickup_a", "pickup_a", pickup_a),
            ("curve", "curve", curve_code),
            ("time_dial", "time_dial", time_dial),
            ("inst_multiple", "inst_multiple", inst_multiple),
            ("reset_time_s", "reset_time_s", reset_time_s),
            ("reclose_enabled", "reclose_enabled", reclose_enabled),
        ]
        checks += [(f"reclose_intervals_s[{k}]", "reclose_1_s", v) for k, v in enumerate(reclose_intervals_s)]
        for key, setting, value in checks:
            why = _check_setting(setting, value)
            if why is not None:
                raise bad(key, value, why)
        intervals = [float(v) for v in reclose_intervals_s]
        # unused interval registers hold the last configured interval (15 s if none), so raising "shots" over
        # Modbus always finds a valid interval
        filler = intervals[-1] if intervals else 15.0
        padded = (intervals + [filler] * MAX_SHOTS)[:MAX_SHOTS]
        self.element = element
        self.terminal = terminal
        self.settings = Settings(
            pickup_a=float(pickup_a),
            curve=Curve(curve_code),
            time_dial=float(time_dial),
            inst_multiple=float(inst_multiple),
            shots=len(intervals),
            reclose_s=(padded[0], padded[1], padded[2], padded[3]),
            reset_time_s=float(reset_time_s),
            reclose_enabled=reclose_enabled,
        )
        self.serial_number = 10_000_000 + zlib.crc32(name.encode()) % 90_000_000
        self.state = State.CLOSED
        self.shot = 0  # recloses done in the current sequence
        self.events: deque[Event] = deque(maxlen=HISTORY)  # the most recent events, oldest first
        self.event_count = 0  # events since start
        self._currents = (0.0, 0.0, 0.0)  # last observed |I| per phase [A]
        self._t_last: float | None = None  # last observe
        self._t_now: float | None = None  # last observe or actuate
        self._accumulator = 0.0  # 51 progress: 1.0 trips
        self._reclose_due: float | None = None
        self._reclaim_until: float | None = None
        self._pushed_closed: bool | None = None  # the breaker state last pushed into the physics
        self._pending: list[tuple[str, Any]] = []  # accepted writes waiting for the next actuate

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> FeederRelay:
        """Build from the bench TOML's device options; an unknown key is a RelayError naming the allowed."""
        for key in options:
            if key not in _OPTIONS:
                raise RelayError(f"relay {name!r}: {key} = {options[key]!r}: unknown option; allowed: "
                                 f"{', '.join(_OPTIONS)}")  # fmt: skip
        return cls(name, **options)

    @property
    def breaker_closed(self) -> bool:
        return self.state in (State.CLOSED, State.RECLAIM)

    @property
    def lockout(self) -> bool:
        return self.state is State.LOCKOUT

    @property
    def picked_up(self) -> bool:
        return self.breaker_closed and max(self._currents) > self.settings.pickup_a

    # --- the step loop ------------------------------------------------------------------------------
    def actuate(self, t: float, feeder: Any) -> None:
        """Carry out accepted commands and settings, run the reclose timers, push the breaker into the physics."""
        self._advance_clock(t)
        for kind, arg in self._pending:
            if kind == "settings":
                for key, value in arg.items():
                    self._apply_setting(key, value)
                self._log(EventCode.SETTINGS_CHANGED, t)
            else:
                self._command(kind, t)
        self._pending.clear()
        # a reclose waits until the open breaker has been through at least one solve
        due = self._reclose_due
        if self.state is State.RECLOSE_WAIT and self._pushed_closed is False and due is not None and t >= due:
            self.shot += 1
            self.state = State.RECLAIM
            self._reclose_due = None
            self._reclaim_until = t + self.settings.reset_time_s
            self._log(EventCode.RECLOSE, t)
        if self.state is State.RECLAIM and self._reclaim_until is not None and t >= self._reclaim_until:
            self.state = State.CLOSED
            self._reclaim_until = None
            self._log(EventCode.SEQUENCE_RESET, t)
            self.shot = 0
        closed = self.breaker_closed
        if closed != self._pushed_closed:
            feeder.set_switch(self.element, closed)
            self._pushed_closed = closed

    def observe(self, t: float, solution: Solution) -> None:
        """Sample the phase currents at ``t`` and run the 51 and 50 elements."""
        if self._t_last is not None and t < self._t_last:
            raise RelayError(f"relay {self.name!r}: time ran backwards ({t} < {self._t_last})")
        self._advance_clock(t)
        try:
            term = solution.terminal(self.element, self.terminal)
        except KeyError as err:
            raise RelayError(f"relay {self.name!r}: {err.args[0]}") from err
        previous, t_prev = self._currents, self._t_last
        self._currents = tuple(abs(term.i.get(ph, 0j)) for ph in PHASES)  # type: ignore[assignment]
        self._t_last = t
        if not self.breaker_closed:
            self._accumulator = 0.0
            return
        s = self.settings
        # 51: the current held since the previous sample, integrated over the interval (C37.112 clause 4)
        if t_prev is not None:
            multiple = max(previous) / s.pickup_a
            if multiple > 1.0:
                t_op = trip_time_s(s.curve, multiple, s.time_dial)
                gained = (t - t_prev) / t_op
                if self._accumulator + gained >= 1.0:
                    t_trip = t_prev + (1.0 - self._accumulator) * t_op
                    self._trip(EventCode.TRIP_51, t_trip, previous)
                    return
                self._accumulator += gained
            else:
                self._accumulator = 0.0
        # 50: on the present sample
        if s.inst_multiple > 0 and max(self._currents) >= s.inst_multiple * s.pickup_a:
            self._trip(EventCode.TRIP_50, t, self._currents)

    def values(self, t: float | None = None) -> dict[str, float | int | str | bool]:
        """Every point of config/maps/sim-relay.toml."""
        s = self.settings
        out: dict[str, float | int | str | bool] = {
            "i_a": self._currents[0],
            "i_b": self._currents[1],
            "i_c": self._currents[2],
            "relay_state": int(self.state),
            "shot": self.shot,
            "event_count": self.event_count % (1 << 32),
            "last_event_code": int(self.events[-1].code) if self.event_count else 0,
            "model": MODEL,
            "serial_number": self.serial_number,
            "pickup_a": s.pickup_a,
            "curve": int(s.curve),
            "time_dial": s.time_dial,
            "inst_multiple": s.inst_multiple,
            "shots": s.shots,
            "reset_time_s": s.reset_time_s,
            "trip": False,  # command coils read 0: a write is a pulse
            "close": False,
            "reset": False,
            "reclose_enabled": s.reclose_enabled,
            "breaker_closed": self.breaker_closed,
            "lockout": self.lockout,
            "picked_up": self.picked_up,
        }
        for k, interval in enumerate(s.reclose_s, start=1):
            out[f"reclose_{k}_s"] = interval
        for slot in range(RING_SIZE):
            out |= _ring_slot(slot, self.events, self.event_count)
        return out

    def on_write(self, req: WriteRequest) -> int | None:
        """Check a client's write: None accepts it (carried out at the next actuate), else the exception code."""
        points = req.points
        if sum(_WORDS.get(p, 0) for p in points) != len(req.values):
            return self._refuse(req, ILLEGAL_ADDRESS, "reserved registers")
        if req.table is Table.HOLDING:
            read_only = [p for p in points if p not in SETTING_POINTS]
            if read_only:
                return self._refuse(req, ILLEGAL_ADDRESS, f"read_only point={read_only[0]}")
            for key, value in points.items():
                why = _check_setting(key, value)
                if why is not None:
                    return self._refuse(req, ILLEGAL_VALUE, f"point={key} value={value!r} allowed={why!r}")
            self._pending.append(("settings", dict(points)))
            return None
        # coils
        if points.get("trip") and points.get("close"):
            return self._refuse(req, ILLEGAL_VALUE, "trip_and_close_together")
        reset_queued = bool(points.get("reset")) or any(k == "reset" for k, _ in self._pending)
        if points.get("close") and self.lockout and not reset_queued:
            return self._refuse(req, ILLEGAL_VALUE, "close_in_lockout")
        if "reclose_enabled" in points:
            self._pending.append(("settings", {"reclose_enabled": bool(points["reclose_enabled"])}))
        for command in ("reset", "trip", "close"):  # reset first, so "reset + close" in one write closes
            if points.get(command):
                self._pending.append((command, None))
        return None

    # --- internals ----------------------------------------------------------------------------------
    def _refuse(self, req: WriteRequest, code: int, reason: str) -> int:
        log.info("modbus_write_refused", device=self.name, table=req.table.value, address=req.address, code=code,
                 reason=reason)  # fmt: skip
        return code

    def _advance_clock(self, t: float) -> None:
        if self._t_now is not None and t < self._t_now:
            raise RelayError(f"relay {self.name!r}: time ran backwards ({t} < {self._t_now})")
        self._t_now = t

    def _apply_setting(self, key: str, value: Any) -> None:
        s = self.settings
        if key == "curve":
            s.curve = Curve(int(value))
        elif key == "shots":
            s.shots = int(value)
        elif key == "reclose_enabled":
            s.reclose_enabled = bool(value)
        elif key.startswith("reclose_") and key.endswith("_s"):
            k = int(key.split("_")[1]) - 1
            r = list(s.reclose_s)
            r[k] = float(value)
            s.reclose_s = (r[0], r[1], r[2], r[3])
        else:
            setattr(s, key, float(value))

    def _command(self, command: str, t: float) -> None:
        if command == "reset":
            if self.state is State.LOCKOUT:
                self.state = State.OPEN
                self._log(EventCode.LOCKOUT_RESET, t)
                self.shot = 0
        elif command == "trip":
            if self.state in (State.CLOSED, State.RECLAIM, State.RECLOSE_WAIT):
                self.state = State.OPEN
                self._reclose_due = self._reclaim_until = None
                self._accumulator = 0.0
                self._log(EventCode.REMOTE_TRIP, t)
                self.shot = 0
        elif command == "close":
            if self.state is State.LOCKOUT:  # refused at the write; only a bench skipping actuate gets here
                log.warning("relay_close_ignored", device=self.name, reason="lockout", t=round(t, 3))
                return
            if self.state in (State.OPEN, State.RECLOSE_WAIT):
                self.state = State.CLOSED
                self.shot = 0
                self._reclose_due = self._reclaim_until = None
                self._log(EventCode.REMOTE_CLOSE, t)

    def _trip(self, code: EventCode, t: float, currents: tuple[float, ...]) -> None:
        self._accumulator = 0.0
        self._reclaim_until = None
        self._log(code, t, currents)
        s = self.settings
        if s.reclose_enabled and self.shot < s.shots:
            self.state = State.RECLOSE_WAIT
            self._reclose_due = t + s.reclose_s[self.shot]
        else:
            self.state = State.LOCKOUT
            self._reclose_due = None
            self._log(EventCode.LOCKOUT, t, currents)

    def _log(self, code: EventCode, t: float, currents: tuple[float, ...] | None = None) -> None:
        i = currents if currents is not None else self._currents
        event = Event(code, t, self.shot, i[0], i[1], i[2])
        self.events.append(event)
        self.event_count += 1
        log.info("relay_event", device=self.name, code=code.name.lower(), t=round(t, 3), shot=self.shot,
                 i_a=round(i[0], 1), i_b=round(i[1], 1), i_c=round(i[2], 1), state=self.state.name.lower())  # fmt: skip


def _ring_slot(slot: int, events: deque[Event], count: int) -> dict[str, float | int]:
    """The ring's slot ``slot``: event number n (1-based, of ``count`` so far) lives in slot (n - 1) % RING_SIZE."""
    number = count - ((count - 1 - slot) % RING_SIZE)  # the newest event number in this slot
    p = f"ev{slot}_"
    if count == 0 or number < 1:
        return {p + "code": 0, p + "shot": 0, p + "time_s": 0, p + "time_ms": 0, p + "i_a": 0.0, p + "i_b": 0.0,
                p + "i_c": 0.0}  # fmt: skip
    e = events[number - count - 1]
    ms_total = round(e.t * 1000.0)
    return {
        p + "code": int(e.code),
        p + "shot": e.shot,
        p + "time_s": (ms_total // 1000) % (1 << 32),
        p + "time_ms": ms_total % 1000,
        p + "i_a": e.i_a,
        p + "i_b": e.i_b,
        p + "i_c": e.i_c,
    }


# Registers (or bits) of each writable point of config/maps/sim-relay.toml, to tell a write that also
# covers reserved registers (refused) from one covering whole points only.
_WORDS: dict[str, int] = {
    "model": 8, "serial_number": 2, "pickup_a": 2, "curve": 1, "time_dial": 2, "inst_multiple": 2, "shots": 1,
    "reclose_1_s": 2, "reclose_2_s": 2, "reclose_3_s": 2, "reclose_4_s": 2, "reset_time_s": 2,
    "trip": 1, "close": 1, "reset": 1, "reclose_enabled": 1,
}  # fmt: skip
