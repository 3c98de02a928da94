"""A switched capacitor bank controller on the feeder: remote select-before-operate and local voltage control.

The controller sits beside one of the feeder's shunt capacitors (IEEE 13-node: ``cap675``, 3 x 200 kvar,
or ``cap611``, 100 kvar on phase c). It measures the bus voltage through a PT (secondary on a 120 V base)
and the bank's reactive power, counts its operations, blocks a re-close while the bank discharges, and
switches the bank on command or on voltage.

Remote control is select-before-operate, as utility controllers do it: the client SELECTs an action
(1 close, 2 open) with a nonzero token of its choice, then OPERATEs with the same action and token within
``select_timeout_s`` of simulated time. Anything else is refused with a Modbus exception and the reason is
left in the ``last_result`` register (:class:`Result`):

- exception 3 (illegal data value): operate without a live select, wrong token, expired select, action
  differing from the selected one, a malformed select/operate write, a bank already in that position,
  a setting out of range;
- exception 6 (server device busy): a close during the discharge lockout, a command while an operation
  is in progress, a write before the controller has seen its first step;
- exception 1 (illegal function): a remote command while the controller is in local automatic mode
  (Modbus Application Protocol v1.1b3, clause 7: code 1 may indicate "that the server is in the wrong
  state to process a request of this type").

The bank switches at the next bench step after the operate (the switch's operating time, a few cycles on
a real vacuum switch, is shorter than any step): ``actuate`` then counts the operation and, on an open,
starts the discharge lockout. IEEE Std 18 (shunt power capacitors, "discharge devices" requirement; the
same rule is in NEMA CP 1) requires a unit rated above 600 V to discharge to 50 V or less within 5 min of
disconnection, so the controller refuses to re-close for 300 s after an open (``lockout_s``), a typical
setting of utility controllers that follows from that requirement.

Communication-loss fallback (a "SCADA/communication-loss" timer, as utility capacitor controls call it): while
the controller is in remote mode, no master write for ``revert_timeout_s`` returns it to local automatic, counted
in ``reverted_count`` with its reason in ``last_revert_reason``. Any write counts, a refused one too (the master is
alive); the ``heartbeat`` register is there for a master with nothing else to write. So a master that dies while
it holds the bank in remote never leaves it without its own voltage control for longer than the timeout.

All times are simulated seconds (``t`` of the bench step, or the injected ``clock`` for writes); the
wall clock is never read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any, Protocol

from protocols.eventlog import EventLog
from sim_hw.devices.modbus_server import WriteRequest
from sim_hw.feeder.solution import PHASES, Solution

log = EventLog("sim.devices")

MODEL = "SIM-CBC-1"
COUNTER_MODULUS = 1 << 32  # the operation counter is a uint32 and rolls over like a real one

# Modbus exception codes (Modbus Application Protocol v1.1b3, clause 7).
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, DEVICE_BUSY = 1, 2, 3, 6

# IEEE 13-node test feeder capacitors ("Shunt Capacitor Data"): bus, phases, kvar per phase, rated kV
# phase-neutral (the 3-phase cap675 is rated 4.16 kV line-line = 4.16/sqrt(3) kV phase-neutral; the 1-phase
# cap611 2.4 kV).
KNOWN_CAPACITORS: dict[str, tuple[str, str, float, float]] = {
    "cap675": ("675", "abc", 200.0, 4.16 / math.sqrt(3)),
    "cap611": ("611", "c", 100.0, 2.4),
}

# Register limits (raw ranges of the map's types x scale): measurements saturate there, as an instrument
# saturates at full scale.
_V_FULL_SCALE = 655.35  # uint16 x 0.01 V
_KVAR_FULL_SCALE = 3276.7  # int16 x 0.1 kvar
_UINT16_MAX = 65535


class Action(IntEnum):
    """What a select or an operate asks for (registers ``sbo_select`` and ``sbo_operate``)."""

    CLOSE = 1
    OPEN = 2


class Mode(IntEnum):
    """Register ``mode``."""

    REMOTE = 0  # select-before-operate from the master; no automatic switching
    LOCAL_AUTO = 1  # the controller switches on voltage; remote commands refused (exception 1)


class RevertReason(IntEnum):
    """Register ``last_revert_reason``: why the controller last went back to its own control."""

    NONE = 0  # never reverted since start
    COMMUNICATION_LOSS = 1  # remote mode and no master write for revert_timeout_s


class Result(IntEnum):
    """Register ``last_result``: what became of the last write to the controller."""

    NONE = 0  # nothing written since start
    OPERATED = 1  # operate accepted: the bank switches at the next step
    SELECTED = 2  # select accepted: armed for select_timeout_s
    SETTINGS_CHANGED = 3  # a setting (mode, auto thresholds, delay) accepted
    NO_SELECT = 10  # operate without a select (exception 3)
    WRONG_TOKEN = 11  # operate token differs from the select's (exception 3)
    SELECT_EXPIRED = 12  # operate after select_timeout_s (exception 3)
    ACTION_MISMATCH = 13  # operate action differs from the selected one (exception 3)
    LOCKOUT = 14  # close during the discharge lockout (exception 6)
    NOT_REMOTE = 15  # remote command in local automatic mode (exception 1)
    BAD_REQUEST = 16  # malformed select/operate: action not 1/2, token 0, not the register pair (exception 3)
    ALREADY_IN_POSITION = 17  # close a closed bank / open an open one (exception 3)
    BUSY = 18  # an operation is in progress, or the controller has not started (exception 6)
    BAD_SETTING = 19  # a setting out of range (exception 3)


SELECT_POINTS = frozenset({"sbo_select", "sbo_token"})
OPERATE_POINTS = frozenset({"sbo_operate", "sbo_operate_token"})
SETTING_POINTS = frozenset({"mode", "auto_v_low", "auto_v_high", "auto_delay_s", "revert_timeout_s"})
HEARTBEAT = "heartbeat"
# Auto thresholds on the 120 V base: the range of the setting registers (a 120 V control's span).
V_SETTING_RANGE = (100.0, 140.0)
DELAY_RANGE_S = (1.0, 3600.0)
# Communication-loss timer: 0 turns it off; otherwise 10 s (longer than any master's poll cycle) to 2 h.
REVERT_RANGE_S = (10.0, 7200.0)
REVERT_DEFAULT_S = 300.0


class CapBankError(ValueError):
    """Options a capacitor bank controller cannot use; names the key, the value and what is allowed."""

    def __init__(self, device: str, key: str, value: Any, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"capbank {device!r}: {key} = {value!r}: must be {allowed}")


class CapacitorFeeder(Protocol):
    """The part of sim_hw.feeder.model.Feeder this controller drives."""

    def set_capacitor(self, name: str, closed: bool) -> None: ...


def _number(device: str, key: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        raise CapBankError(device, key, value, f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}]")
    return float(value)


def _revert_timeout(device: str, value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value == 0 or REVERT_RANGE_S[0] <= value <= REVERT_RANGE_S[1]):
        lo, hi = REVERT_RANGE_S
        raise CapBankError(device, "revert_timeout_s", value, f"0 (off) or a number of seconds in [{lo:g}, {hi:g}]")
    return float(value)


def _clamp(value: float, full_scale: float) -> float:
    return max(-full_scale, min(full_scale, value))


class CapBankController:
    """The controller of one switched capacitor bank.

    Parameters
    ----------
    name : the device name (logs, errors).
    options : the bench TOML's device options (all optional):
        ``capacitor`` the feeder's capacitor (default ``"cap675"``); ``bus``, ``phases``, ``kvar_per_phase``
        [kvar], ``rated_kv_ln`` [kV] default from the IEEE 13-node data for cap675/cap611 and are required
        for any other; ``pt_ratio`` (default 20: 2400/120 V); ``closed`` initial position (default true, as
        the IEEE 13-node feeder is published); ``mode`` ``"remote"`` (default) or ``"local_auto"``;
        ``v_low`` / ``v_high`` auto close/open thresholds [V, 120 V base] (118 / 126); ``auto_delay_s``
        (60); ``select_timeout_s`` (10); ``lockout_s`` (300); ``operation_count`` initial counter (0);
        ``revert_timeout_s`` the communication-loss timer (300; 0 off, else 10..7200).
    clock : simulated time [s] used to stamp writes; without it a write is stamped with the time of the
        last step the controller saw.
    """

    def __init__(
        self, name: str, options: Mapping[str, Any] | None = None, *, clock: Callable[[], float] | None = None
    ) -> None:
        opts = dict(options or {})
        known = {
            "capacitor", "bus", "phases", "kvar_per_phase", "rated_kv_ln", "pt_ratio", "closed", "mode", "v_low",
            "v_high", "auto_delay_s", "select_timeout_s", "lockout_s", "operation_count", "revert_timeout_s",
        }  # fmt: skip
        for key in opts:
            if key not in known:
                raise CapBankError(name, key, opts[key], f"a known option ({', '.join(sorted(known))})")
        self.name = name
        self.clock = clock
        capacitor = opts.get("capacitor", "cap675")
        if not isinstance(capacitor, str) or not capacitor:
            raise CapBankError(name, "capacitor", capacitor, "a capacitor name such as 'cap675'")
        self.capacitor = capacitor.lower()
        default = KNOWN_CAPACITORS.get(self.capacitor)
        for key in ("bus", "phases", "kvar_per_phase", "rated_kv_ln"):
            if default is None and key not in opts:
                raise CapBankError(
                    name,
                    key,
                    None,
                    f"given for capacitor {capacitor!r} (defaults only for {', '.join(KNOWN_CAPACITORS)})",
                )
        bus = opts.get("bus", default[0] if default else None)
        if not isinstance(bus, str) or not bus:
            raise CapBankError(name, "bus", bus, "a bus name")
        self.bus = bus.lower()
        phases = opts.get("phases", default[1] if default else None)
        if (
            not isinstance(phases, str)
            or not phases
            or any(p not in PHASES for p in phases)
            or len(set(phases)) != len(phases)
        ):
            raise CapBankError(name, "phases", phases, "a non-empty string of distinct phases from 'abc'")
        self.phases = tuple(p for p in PHASES if p in phases)
        self.kvar_per_phase = _number(
            name, "kvar_per_phase", opts.get("kvar_per_phase", default[2] if default else None), 0, 10_000, lo_open=True
        )
        self.rated_kv_ln = _number(
            name, "rated_kv_ln", opts.get("rated_kv_ln", default[3] if default else None), 0, 1000, lo_open=True
        )
        self.pt_ratio = _number(name, "pt_ratio", opts.get("pt_ratio", 20.0), 0, 10_000, lo_open=True)
        closed = opts.get("closed", True)
        if not isinstance(closed, bool):
            raise CapBankError(name, "closed", closed, "true or false")
        mode = opts.get("mode", "remote")
        modes = {"remote": Mode.REMOTE, "local_auto": Mode.LOCAL_AUTO}
        if mode not in modes:
            raise CapBankError(name, "mode", mode, "'remote' or 'local_auto'")
        self.mode = modes[mode]
        self.v_low = _number(name, "v_low", opts.get("v_low", 118.0), *V_SETTING_RANGE)
        self.v_high = _number(name, "v_high", opts.get("v_high", 126.0), *V_SETTING_RANGE)
        if not self.v_low < self.v_high:
            raise CapBankError(name, "v_low", self.v_low, f"below v_high ({self.v_high:g})")
        self.auto_delay_s = _number(name, "auto_delay_s", opts.get("auto_delay_s", 60.0), *DELAY_RANGE_S)
        self.select_timeout_s = _number(
            name, "select_timeout_s", opts.get("select_timeout_s", 10.0), 0, 600, lo_open=True
        )
        self.lockout_s = _number(name, "lockout_s", opts.get("lockout_s", 300.0), 0, 3600)
        self.revert_timeout_s = _revert_timeout(name, opts.get("revert_timeout_s", REVERT_DEFAULT_S))
        count = opts.get("operation_count", 0)
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count < COUNTER_MODULUS:
            raise CapBankError(name, "operation_count", count, f"an integer in [0, {COUNTER_MODULUS - 1}]")

        self.closed = closed
        self.operation_count = count
        self.last_result = Result.NONE
        self._t: float | None = None  # latest simulated time seen (step or clock)
        self._opened_at: float | None = None  # when the last open completed (lockout start)
        self._select: tuple[Action, int, float] | None = None  # action, token, time
        self._pending: Action | None = None  # accepted, switching at the next actuate
        self._auto_want: Action | None = None
        self._auto_since = 0.0
        self._v_sec: dict[str, float] = {}
        self._kvar: dict[str, float] = {}
        self.reverted_count = 0
        self.last_revert_reason = RevertReason.NONE
        self.heartbeat = 0
        self._master_at: float | None = None  # the last master write (or the first scan): the fallback timer's start

    # --- time -------------------------------------------------------------------------------------------
    def _seen(self, t: float) -> None:
        self._t = t if self._t is None else max(self._t, t)

    def _now(self) -> float | None:
        if self.clock is not None:
            self._seen(self.clock())
        return self._t

    def lockout_remaining_s(self, now: float) -> float:
        """Seconds before a close is allowed again (0 when not locked out)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.lockout_s - now)

    def _select_live(self, now: float) -> bool:
        return self._select is not None and now - self._select[2] <= self.select_timeout_s

    # --- the bench step -----------------------------------------------------------------------------------
    def actuate(self, t: float, feeder: CapacitorFeeder) -> None:
        """Complete an accepted operation (counted; an open starts the lockout), then push the position."""
        self._seen(t)
        if self._pending is not None:
            self.closed = self._pending is Action.CLOSE
            self.operation_count = (self.operation_count + 1) % COUNTER_MODULUS
            if not self.closed:
                self._opened_at = t
            log.info("capbank_operated", device=self.name, capacitor=self.capacitor,
                     operation="close" if self.closed else "open", count=self.operation_count,
                     t=round(t, 1))  # fmt: skip
            self._pending = None
        feeder.set_capacitor(self.capacitor, self.closed)

    def observe(self, t: float, solution: Solution) -> None:
        """Read the bus voltage (PT secondary) and the bank's kvar; run the local voltage control."""
        self._seen(t)
        try:
            bus_v = solution.v(self.bus)
        except KeyError as err:
            raise CapBankError(self.name, "bus", self.bus, f"a bus of the solved feeder ({err.args[0]})") from None
        terminal = None
        for key in solution.terminals:
            if key.lower() == f"capacitor.{self.capacitor}/1":
                terminal = solution.terminals[key]
        rated_v = self.rated_kv_ln * 1000.0
        for p in self.phases:
            v = bus_v.get(p, 0j)
            self._v_sec[p] = abs(v) / self.pt_ratio
            if terminal is not None and p in terminal.v and p in terminal.i:
                # current into the capacitor leads its voltage: Q into the element < 0; report kvar delivered
                self._kvar[p] = -(terminal.v[p] * terminal.i[p].conjugate()).imag / 1000.0
            else:
                # no current measured in the solution: a capacitor's Q goes with V squared
                self._kvar[p] = self.kvar_per_phase * (abs(v) / rated_v) ** 2 if self.closed else 0.0
        self._communication_loss(t)
        if self.mode is Mode.LOCAL_AUTO:
            self._auto_control(t)

    def revert_remaining_s(self, now: float) -> float:
        """Seconds before a controller in remote mode without master writes reverts (0: not armed)."""
        if self.mode is not Mode.REMOTE or not self.revert_timeout_s:
            return 0.0
        since = self._master_at if self._master_at is not None else now
        return max(0.0, since + self.revert_timeout_s - now)

    def _communication_loss(self, t: float) -> None:
        """Remote mode with no master write for revert_timeout_s: back to local automatic (counted, logged)."""
        if self._master_at is None:
            self._master_at = t  # the first scan: a controller powered up in remote mode times from there
        if self.mode is not Mode.REMOTE or not self.revert_timeout_s or self.revert_remaining_s(t) > 0:
            return
        silent_s = t - self._master_at
        self.mode, self._select, self._auto_want = Mode.LOCAL_AUTO, None, None
        self.reverted_count = (self.reverted_count + 1) % (_UINT16_MAX + 1)
        self.last_revert_reason = RevertReason.COMMUNICATION_LOSS
        log.warning("capbank_reverted", device=self.name, reason="communication_loss", silent_s=round(silent_s, 1),
                    mode="local_auto", count=self.reverted_count, t=round(t, 1))  # fmt: skip

    def v_control(self) -> float:
        """The voltage the local control acts on: mean of the bank's phases [V, 120 V base]."""
        return sum(self._v_sec.values()) / len(self._v_sec) if self._v_sec else 0.0

    def _auto_control(self, t: float) -> None:
        if self._pending is not None:
            return
        v = self.v_control()
        if v < 0.5 * V_SETTING_RANGE[0]:  # loss of voltage (below 50 V on the 120 V base): never switch a dead bank
            self._auto_want = None
            return
        want = None
        if self.closed and v > self.v_high:
            want = Action.OPEN
        elif not self.closed and v < self.v_low:
            want = Action.CLOSE
        if want is not self._auto_want:
            self._auto_want, self._auto_since = want, t
        if want is None or t - self._auto_since < self.auto_delay_s:
            return
        if want is Action.CLOSE and self.lockout_remaining_s(t) > 0:
            return  # the condition keeps timing; the close waits for the bank to discharge
        log.info("capbank_auto", device=self.name, operation=want.name.lower(), v_control=round(v, 2), t=round(t, 1))
        self._pending, self._auto_want = want, None

    def values(self, t: float) -> dict[str, float | int | str | bool]:
        """Every point of config/maps/sim-capbank.toml at simulated time ``t`` [s]."""
        self._seen(t)
        out: dict[str, float | int | str | bool] = {}
        for p in PHASES:
            out[f"v_{p}"] = _clamp(self._v_sec.get(p, 0.0), _V_FULL_SCALE)
            out[f"kvar_{p}"] = _clamp(self._kvar.get(p, 0.0), _KVAR_FULL_SCALE)
        out["kvar_total"] = _clamp(sum(self._kvar.values()), _KVAR_FULL_SCALE)
        out["v_control"] = _clamp(self.v_control(), _V_FULL_SCALE)
        out["lockout_remaining_s"] = min(_UINT16_MAX, math.ceil(self.lockout_remaining_s(t)))
        live = self._select_live(t)
        remaining = self._select[2] + self.select_timeout_s - t if live and self._select else 0.0
        out["select_remaining_s"] = min(_UINT16_MAX, math.ceil(remaining))
        out["operation_count"] = self.operation_count
        out["last_result"] = int(self.last_result)
        out["model"] = MODEL
        out["sbo_select"] = int(self._select[0]) if live and self._select else 0
        out["sbo_token"] = 0  # write-only: never reads back
        out["sbo_operate"] = 0
        out["sbo_operate_token"] = 0
        out["mode"] = int(self.mode)
        out["auto_v_low"] = self.v_low
        out["auto_v_high"] = self.v_high
        out["auto_delay_s"] = round(self.auto_delay_s)
        out["revert_timeout_s"] = round(self.revert_timeout_s)
        out["heartbeat"] = self.heartbeat
        out["revert_remaining_s"] = min(_UINT16_MAX, math.ceil(self.revert_remaining_s(t) - 1e-9))
        out["reverted_count"] = self.reverted_count
        out["last_revert_reason"] = int(self.last_revert_reason)
        out["closed"] = self.closed
        out["lockout_active"] = self.lockout_remaining_s(t) > 0
        out["select_armed"] = live
        out["operation_pending"] = self._pending is not None
        return out

    # --- writes -------------------------------------------------------------------------------------------
    def _refuse(self, result: Result, code: int, why: str) -> int:
        self.last_result = result
        log.info("capbank_command_refused", device=self.name, result=result.name, exception=code, reason=why)
        return code

    def on_write(self, req: WriteRequest) -> int | None:
        """A client's write: a select, an operate or settings; None accepts, an int is the exception code."""
        names = set(req.points)
        if not names:
            return ILLEGAL_ADDRESS  # only reserved registers written
        now = self._now()
        if now is None:
            return self._refuse(Result.BUSY, DEVICE_BUSY, "no step seen yet")
        self._master_at = now  # any write, accepted or not: the master is alive
        if names == {HEARTBEAT}:
            self.heartbeat = int(req.points[HEARTBEAT])
            return None  # keeps last_result: a heartbeat must not hide the reason of a refused command
        if names & (SELECT_POINTS | OPERATE_POINTS):
            if names == SELECT_POINTS:
                return self._on_select(now, req.points)
            if names == OPERATE_POINTS:
                return self._on_operate(now, req.points)
            return self._refuse(
                Result.BAD_REQUEST, ILLEGAL_VALUE, "select/operate must write exactly its two registers in one request"
            )
        return self._on_settings(req.points)

    def _check_action(self, now: float, code: Any, token: Any) -> tuple[Action, int] | int:
        """The action and token of a select/operate, or the exception it gets."""
        if code not in (Action.CLOSE, Action.OPEN) or not isinstance(token, int) or token == 0:
            return self._refuse(Result.BAD_REQUEST, ILLEGAL_VALUE, f"action={code} token={token}")
        if self.mode is not Mode.REMOTE:
            return self._refuse(Result.NOT_REMOTE, ILLEGAL_FUNCTION, "controller in local automatic mode")
        if self._pending is not None:
            return self._refuse(Result.BUSY, DEVICE_BUSY, "operation in progress")
        action = Action(code)
        if self.closed == (action is Action.CLOSE):
            return self._refuse(
                Result.ALREADY_IN_POSITION, ILLEGAL_VALUE, f"bank already {'closed' if self.closed else 'open'}"
            )
        if action is Action.CLOSE and self.lockout_remaining_s(now) > 0:
            return self._refuse(
                Result.LOCKOUT, DEVICE_BUSY, f"discharge lockout, {self.lockout_remaining_s(now):.0f} s left"
            )
        return action, token

    def _on_select(self, now: float, points: Mapping[str, Any]) -> int | None:
        checked = self._check_action(now, points["sbo_select"], points["sbo_token"])
        if isinstance(checked, int):
            return checked
        self._select = (checked[0], checked[1], now)
        self.last_result = Result.SELECTED
        log.info("capbank_selected", device=self.name, operation=checked[0].name.lower(), t=round(now, 1))
        return None

    def _on_operate(self, now: float, points: Mapping[str, Any]) -> int | None:
        code, token = points["sbo_operate"], points["sbo_operate_token"]
        selected, self._select = self._select, None  # an operate consumes the select, accepted or not
        if selected is None:
            return self._refuse(Result.NO_SELECT, ILLEGAL_VALUE, "operate without select")
        if now - selected[2] > self.select_timeout_s:
            return self._refuse(Result.SELECT_EXPIRED, ILLEGAL_VALUE, f"select {now - selected[2]:.1f} s old")
        if token != selected[1]:
            return self._refuse(Result.WRONG_TOKEN, ILLEGAL_VALUE, "token differs from the select's")
        if code != selected[0]:
            return self._refuse(
                Result.ACTION_MISMATCH, ILLEGAL_VALUE, f"operate {code} after select {int(selected[0])}"
            )
        checked = self._check_action(now, code, token)  # the state may have changed since the select
        if isinstance(checked, int):
            return checked
        self._pending = checked[0]
        self.last_result = Result.OPERATED
        log.info("capbank_operate", device=self.name, operation=checked[0].name.lower(), t=round(now, 1))
        return None

    def _on_settings(self, points: Mapping[str, Any]) -> int | None:
        mode = points.get("mode", int(self.mode))
        v_low = points.get("auto_v_low", self.v_low)
        v_high = points.get("auto_v_high", self.v_high)
        delay = points.get("auto_delay_s", self.auto_delay_s)
        revert = points.get("revert_timeout_s", self.revert_timeout_s)
        lo, hi = V_SETTING_RANGE
        if mode not in (Mode.REMOTE, Mode.LOCAL_AUTO):
            return self._refuse(Result.BAD_SETTING, ILLEGAL_VALUE, f"mode={mode} (0 remote, 1 local auto)")
        if not (lo <= v_low < v_high <= hi):
            return self._refuse(
                Result.BAD_SETTING,
                ILLEGAL_VALUE,
                f"auto_v_low={v_low} auto_v_high={v_high} (need {lo:g} <= low < high <= {hi:g})",
            )
        if not DELAY_RANGE_S[0] <= delay <= DELAY_RANGE_S[1]:
            return self._refuse(Result.BAD_SETTING, ILLEGAL_VALUE, f"auto_delay_s={delay}")
        if not (revert == 0 or REVERT_RANGE_S[0] <= revert <= REVERT_RANGE_S[1]):
            return self._refuse(Result.BAD_SETTING, ILLEGAL_VALUE, f"revert_timeout_s={revert} (0, or 10..7200)")
        new_mode = Mode(mode)
        if new_mode is not self.mode:
            self._select, self._auto_want = None, None  # a mode change drops an armed select and the auto timer
        self.mode, self.v_low, self.v_high, self.auto_delay_s = new_mode, float(v_low), float(v_high), float(delay)
        self.revert_timeout_s = float(revert)
        if HEARTBEAT in points:
            self.heartbeat = int(points[HEARTBEAT])
        self.last_result = Result.SETTINGS_CHANGED
        log.info("capbank_settings", device=self.name, mode=self.mode.name.lower(), v_low=round(self.v_low, 1),
                 v_high=round(self.v_high, 1), delay_s=round(self.auto_delay_s),
                 revert_timeout_s=round(self.revert_timeout_s))  # fmt: skip
        return None


__all__ = ["Action", "CapBankController", "CapBankError", "Mode", "Result", "RevertReason"]
