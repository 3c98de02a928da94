"""The substation voltage regulator's control: three single-phase step regulators, tap changing on voltage.

The IEEE 13-node feeder's regulator (between buses 650 and rg60) is three single-phase 32-step units,
+-16 steps of 0.625 % each (ANSI C57.15 step-voltage regulators, +-10 % in 32 steps). This control reads
each unit's load-side (terminal 2) voltage and current as its PT and CT would, computes the line-drop
compensated voltage and, in automatic mode, moves the taps like a CL-6-class control:

- compensated voltage, on the 120 V base (the IEEE 13-node data gives R and X in volts at rated CT current)::

      V_comp = V_reg / PT  -  (R + jX) * I_load / CT_primary

  (Kersting, "Distribution System Modeling and Analysis", the line-drop compensator: the compensator's
  R' + jX' ohms times the CT secondary current, i.e. R + jX volts at rated current);
- if |V_comp| stays outside ``band_center_v +- bandwidth_v / 2`` for ``time_delay_s``, one step toward the
  band; while it stays outside, one more step every ``inter_tap_delay_s``; back inside the band (the edges
  count as inside), the timer resets and the next excursion waits the full delay again;
- taps stop at -16 and +16.

In manual mode the taps move only on command: a target tap per phase (``tap_target_a/b/c``), reached one
step per ``inter_tap_delay_s``. Tap targets written in automatic mode are refused with exception 1 (the
Modbus Application Protocol v1.1b3, clause 7, allows code 1 to mean "the server is in the wrong state to
process a request of this type"); a setting or target out of range with exception 3.

A tap change decided at a step is made by ``actuate`` at the next step (the tap changer's operating time,
a few seconds on a real unit), which then pushes all three taps into the feeder and counts the operation.

Communication-loss fallback (the SCADA/communication-loss timer of utility regulator controls): while a master
holds the control away from its own settings, in manual mode or with a band centre other than the panel's
(``panel_band_center_v``: set at power-up or by a panel setting), no master write for ``revert_timeout_s``
returns it to automatic with the panel band centre, counted in ``reverted_count`` with the reason in
``last_revert_reason``. Any write counts; ``heartbeat`` is there for a master with nothing else to write.

All times are simulated seconds (``t`` of the bench step, or the injected ``clock`` for writes); the wall clock is
never read.

The IEEE 13-node regulator settings are the defaults: band centre 122 V, bandwidth 2 V, PT ratio 20, CT
primary 700 A, R = 3 V, X = 9 V on each phase; the initial taps are the published solution's (10, 8, 11).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from enum import IntEnum
from typing import Any, Protocol

from protocols.eventlog import EventLog
from sim_hw.devices.modbus_server import WriteRequest
from sim_hw.feeder.solution import PHASES, Solution

log = EventLog("sim.devices")

MODEL = "SIM-REG-1"
TAP_MIN, TAP_MAX = -16, 16  # ANSI C57.15: 32 steps of 5/8 %, +-10 %
COUNTER_MODULUS = 1 << 32
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3  # Modbus Application Protocol v1.1b3, clause 7
_V_FULL_SCALE = 655.35  # uint16 x 0.01 V: a measurement saturates there

# Setting ranges: those of a CL-6-class control as commonly published (typical values): band centre
# 100-135 V, bandwidth 1-6 V, time delay 5-180 s, LDC R and X -24..+24 V.
RANGES: dict[str, tuple[float, float]] = {
    "band_center_v": (100.0, 135.0),
    "bandwidth_v": (1.0, 6.0),
    "time_delay_s": (5.0, 180.0),
    "ldc_r_v": (-24.0, 24.0),
    "ldc_x_v": (-24.0, 24.0),
    "pt_ratio": (1.0, 1000.0),
    "ct_primary_a": (1.0, 5000.0),
    "inter_tap_delay_s": (0.0, 60.0),
}
SETTING_POINTS = ("band_center_v", "bandwidth_v", "time_delay_s", "ldc_r_v", "ldc_x_v", "pt_ratio", "ct_primary_a")
# Communication-loss timer: 0 turns it off; otherwise 10 s (longer than any master's poll cycle) to 2 h.
REVERT_RANGE_S = (10.0, 7200.0)
REVERT_DEFAULT_S = 300.0
_UINT16_MAX = 65535
TARGET_POINTS = {f"tap_target_{p}": k for k, p in enumerate(PHASES)}


class Mode(IntEnum):
    """Register ``mode``."""

    MANUAL = 0
    AUTOMATIC = 1


class RevertReason(IntEnum):
    """Register ``last_revert_reason``: why the control last went back to its own settings."""

    NONE = 0  # never reverted since start
    COMMUNICATION_LOSS_MANUAL = 1  # manual mode and no master write for revert_timeout_s
    COMMUNICATION_LOSS_BAND_CENTER = 2  # automatic with a master's band centre and no master write for the timeout


class RegulatorError(ValueError):
    """Options the regulator control cannot use; names the key, the value and what is allowed."""

    def __init__(self, device: str, key: str, value: Any, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"regulator {device!r}: {key} = {value!r}: must be {allowed}")


class RegulatorFeeder(Protocol):
    """The part of sim_hw.feeder.model.Feeder this control drives."""

    def set_regulator_taps(self, taps: tuple[int, int, int]) -> None: ...


def compensated_voltage(
    v_primary: complex, i_load_a: complex, pt_ratio: float, ct_primary_a: float, r_v: float, x_v: float
) -> complex:
    """Line-drop compensated voltage [V, 120 V base]: V / PT - (R + jX) I / CT_primary.

    Parameters
    ----------
    v_primary : regulated (load-side) phase-neutral voltage [V].
    i_load_a : load current leaving the regulator toward the feeder [A], same phase reference.
    pt_ratio : PT ratio (primary V per secondary V). ct_primary_a : CT primary rating [A].
    r_v, x_v : compensator settings [V on the 120 V base at rated CT current].
    """
    return v_primary / pt_ratio - complex(r_v, x_v) * i_load_a / ct_primary_a


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Channel:
    """The out-of-band timer of one control channel (a phase, or the ganged set)."""

    __slots__ = ("direction", "since", "last_step")

    def __init__(self) -> None:
        self.direction = 0  # +1 raise (below band), -1 lower (above band), 0 in band
        self.since: float | None = None  # when the present excursion began
        self.last_step: float | None = None  # when this excursion's last step was decided

    def reset(self) -> None:
        self.direction, self.since, self.last_step = 0, None, None


class RegulatorController:
    """The control of the substation regulator (three single-phase units, ganged or not).

    Parameters
    ----------
    name : the device name (logs, errors).
    options : the bench TOML's device options (all optional): ``regulators`` the three units' elements for
        phases a, b, c (default ``["Transformer.Reg1", "Transformer.Reg2", "Transformer.Reg3"]``); ``bus`` the
        regulated bus read when a unit's terminal is missing from the solution (``"rg60"``); ``line`` the
        element whose terminal 1 current is then the load current (``"Line.650632"``); ``band_center_v``
        (122), ``bandwidth_v`` (2), ``time_delay_s`` (30), ``inter_tap_delay_s`` (2), ``ldc_r_v`` (3),
        ``ldc_x_v`` (9), ``pt_ratio`` (20), ``ct_primary_a`` (700); ``mode`` ``"automatic"`` (default) or
        ``"manual"``; ``ganged`` (false: each unit regulates its own phase; true: phase ``ganged_phase``,
        default ``"a"``, drives all three); ``taps`` initial positions ([10, 8, 11]); ``operation_counts``
        the counters' initial readings ([0, 0, 0]); ``revert_timeout_s`` the communication-loss timer (300; 0 off,
        else 10..7200). ``band_center_v`` is also the panel band centre the fallback returns to.
    clock : simulated time [s] used to stamp writes; without it a write is stamped with the time of the last step
        the control saw.
    """

    def __init__(
        self, name: str, options: Mapping[str, Any] | None = None, *, clock: Callable[[], float] | None = None
    ) -> None:
        opts = dict(options or {})
        known = {
            "regulators", "bus", "line", "mode", "ganged", "ganged_phase", "taps", "operation_counts",
            "revert_timeout_s", *RANGES,
        }  # fmt: skip
        for key in opts:
            if key not in known:
                raise RegulatorError(name, key, opts[key], f"a known option ({', '.join(sorted(known))})")
        self.name = name
        self.clock = clock
        regs = opts.get("regulators", ["Transformer.Reg1", "Transformer.Reg2", "Transformer.Reg3"])
        if (
            not isinstance(regs, Sequence)
            or isinstance(regs, str)
            or len(regs) != 3
            or not all(isinstance(r, str) and r for r in regs)
        ):
            raise RegulatorError(name, "regulators", regs, "three element names, for phases a, b, c")
        self.regulators = tuple(regs)
        for key, default in (("bus", "rg60"), ("line", "Line.650632")):
            value = opts.get(key, default)
            if not isinstance(value, str) or not value:
                raise RegulatorError(name, key, value, "a non-empty name")
            setattr(self, key, value)
        self.settings: dict[str, float] = {}
        defaults = {
            "band_center_v": 122.0, "bandwidth_v": 2.0, "time_delay_s": 30.0, "inter_tap_delay_s": 2.0,
            "ldc_r_v": 3.0, "ldc_x_v": 9.0, "pt_ratio": 20.0, "ct_primary_a": 700.0,
        }  # fmt: skip
        for key, (lo, hi) in RANGES.items():
            value = opts.get(key, defaults[key])
            if not _is_number(value) or not lo <= value <= hi:
                raise RegulatorError(name, key, value, f"a number in [{lo:g}, {hi:g}]")
            self.settings[key] = float(value)
        modes = {"manual": Mode.MANUAL, "automatic": Mode.AUTOMATIC}
        mode = opts.get("mode", "automatic")
        if mode not in modes:
            raise RegulatorError(name, "mode", mode, "'automatic' or 'manual'")
        self.mode = modes[mode]
        ganged = opts.get("ganged", False)
        if not isinstance(ganged, bool):
            raise RegulatorError(name, "ganged", ganged, "true or false")
        self.ganged = ganged
        gp = opts.get("ganged_phase", "a")
        if gp not in PHASES:
            raise RegulatorError(name, "ganged_phase", gp, "'a', 'b' or 'c'")
        self.ganged_phase = PHASES.index(gp)
        taps = opts.get("taps", [10, 8, 11])
        if (
            not isinstance(taps, Sequence)
            or len(taps) != 3
            or not all(isinstance(x, int) and not isinstance(x, bool) and TAP_MIN <= x <= TAP_MAX for x in taps)
        ):
            raise RegulatorError(name, "taps", taps, f"three integers in [{TAP_MIN}, {TAP_MAX}]")
        counts = opts.get("operation_counts", [0, 0, 0])
        if (
            not isinstance(counts, Sequence)
            or len(counts) != 3
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < COUNTER_MODULUS for x in counts)
        ):
            raise RegulatorError(name, "operation_counts", counts, f"three integers in [0, {COUNTER_MODULUS - 1}]")

        revert = opts.get("revert_timeout_s", REVERT_DEFAULT_S)
        if not _is_number(revert) or not (revert == 0 or REVERT_RANGE_S[0] <= revert <= REVERT_RANGE_S[1]):
            lo, hi = REVERT_RANGE_S
            raise RegulatorError(
                name, "revert_timeout_s", revert, f"0 (off) or a number of seconds in [{lo:g}, {hi:g}]"
            )
        self.revert_timeout_s = float(revert)
        self.panel_band_center_v = self.settings["band_center_v"]
        self.reverted_count = 0
        self.last_revert_reason = RevertReason.NONE
        self.heartbeat = 0
        self._t: float | None = None  # the latest simulated time seen (step or clock)
        self._master_at: float | None = None  # the last master write (or the first scan): the fallback timer's start

        self.taps = list(taps)
        self.targets = list(taps)
        self.operation_counts = list(counts)
        self._last_move: list[float | None] = [None, None, None]
        self._channels = [_Channel() for _ in PHASES]
        self._v: list[complex] = [0j, 0j, 0j]  # regulated voltage, primary [V]
        self._i: list[complex] = [0j, 0j, 0j]  # load current [A]
        self._v_comp = [0.0, 0.0, 0.0]

    # --- the bench step -----------------------------------------------------------------------------------
    def actuate(self, t: float, feeder: RegulatorFeeder) -> None:
        """Move each tap one step toward its target (at most one step per inter-tap delay), push all three."""
        for k in range(3):
            if self.taps[k] == self.targets[k]:
                continue
            last = self._last_move[k]
            if last is not None and t - last < self.settings["inter_tap_delay_s"]:
                continue
            self.taps[k] += 1 if self.targets[k] > self.taps[k] else -1
            self.operation_counts[k] = (self.operation_counts[k] + 1) % COUNTER_MODULUS
            self._last_move[k] = t
            log.info("regulator_tap", device=self.name, phase=PHASES[k], tap=self.taps[k], t=round(t, 1))
        feeder.set_regulator_taps((self.taps[0], self.taps[1], self.taps[2]))

    def _measure(self, solution: Solution, k: int) -> tuple[complex, complex]:
        """Phase ``k``'s regulated voltage [V] and load current [A] from the solution."""
        phase = PHASES[k]
        try:
            term = solution.terminal(self.regulators[k], 2)
        except KeyError:
            term = None
        if term is not None and term.v:
            # a single-phase unit's terminal may name its phase or hold just one
            ph = phase if phase in term.v else next(iter(term.v))
            # the solution's current flows INTO the element: at the load side that is minus the load current
            return term.v[ph], -term.i.get(ph, 0j)
        try:
            v = solution.v(self.bus)[phase]
        except KeyError:
            raise RegulatorError(
                self.name,
                "bus",
                self.bus,
                f"a bus with phase {phase} in the solution (no terminal {self.regulators[k]}/2 either)",
            ) from None
        try:
            i = solution.terminal(self.line, 1).i.get(phase, 0j)  # into the line = toward the load
        except KeyError:
            i = 0j  # no current known: no line-drop compensation
        return v, i

    def observe(self, t: float, solution: Solution) -> None:
        """Measure every phase, fall back to the panel's settings after a communication loss and, in automatic
        mode, run the band/time-delay control."""
        self._seen(t)
        self._communication_loss(t)
        s = self.settings
        for k in range(3):
            self._v[k], self._i[k] = self._measure(solution, k)
            self._v_comp[k] = abs(
                compensated_voltage(
                    self._v[k], self._i[k], s["pt_ratio"], s["ct_primary_a"], s["ldc_r_v"], s["ldc_x_v"]
                )
            )
        if self.mode is not Mode.AUTOMATIC:
            for ch in self._channels:
                ch.reset()
            return
        if self.ganged:
            step = self._run_channel(self._channels[0], self._v_comp[self.ganged_phase], t)
            if step:
                for k in range(3):
                    self.targets[k] = max(TAP_MIN, min(TAP_MAX, self.taps[k] + step))
            return
        for k in range(3):
            step = self._run_channel(self._channels[k], self._v_comp[k], t)
            if step:
                self.targets[k] = max(TAP_MIN, min(TAP_MAX, self.taps[k] + step))

    # --- communication-loss fallback -----------------------------------------------------------------------
    def _seen(self, t: float) -> None:
        self._t = t if self._t is None else max(self._t, t)

    def _now(self) -> float | None:
        if self.clock is not None:
            self._seen(self.clock())
        return self._t

    @property
    def overridden(self) -> bool:
        """A master holds the control away from its own settings: manual mode, or a band centre not the panel's."""
        return self.mode is Mode.MANUAL or self.settings["band_center_v"] != self.panel_band_center_v

    def revert_remaining_s(self, now: float) -> float:
        """Seconds before an overridden control without master writes reverts (0: not armed)."""
        if not self.overridden or not self.revert_timeout_s:
            return 0.0
        since = self._master_at if self._master_at is not None else now
        return max(0.0, since + self.revert_timeout_s - now)

    def _communication_loss(self, t: float) -> None:
        """Overridden and no master write for revert_timeout_s: automatic with the panel band centre."""
        if self._master_at is None:
            self._master_at = t  # the first scan: a control powered up in manual mode times from there
        if not self.overridden or not self.revert_timeout_s or self.revert_remaining_s(t) > 0:
            return
        manual = self.mode is Mode.MANUAL
        silent_s = t - self._master_at
        self.mode = Mode.AUTOMATIC
        self.settings["band_center_v"] = self.panel_band_center_v
        self.targets = list(self.taps)  # a manual movement under way stops
        for ch in self._channels:
            ch.reset()
        self.reverted_count = (self.reverted_count + 1) % (_UINT16_MAX + 1)
        self.last_revert_reason = (
            RevertReason.COMMUNICATION_LOSS_MANUAL if manual else RevertReason.COMMUNICATION_LOSS_BAND_CENTER
        )
        log.warning("regulator_reverted", device=self.name, reason="communication_loss", was="manual" if manual
                    else "band_center", silent_s=round(silent_s, 1), band_center_v=self.panel_band_center_v,
                    count=self.reverted_count, t=round(t, 1))  # fmt: skip

    def band_direction(self, v_comp: float) -> int:
        """+1 when ``v_comp`` is below the band (raise), -1 above it (lower), 0 inside (edges included)."""
        half = self.settings["bandwidth_v"] / 2
        centre = self.settings["band_center_v"]
        if v_comp > centre + half:
            return -1
        if v_comp < centre - half:
            return 1
        return 0

    def _run_channel(self, ch: _Channel, v_comp: float, t: float) -> int:
        """The step (+1, -1) this channel decides at ``t``, or 0."""
        direction = self.band_direction(v_comp)
        if direction == 0:
            ch.reset()
            return 0
        if direction != ch.direction:
            ch.direction, ch.since, ch.last_step = direction, t, None
        assert ch.since is not None
        if ch.last_step is None:
            due = t - ch.since >= self.settings["time_delay_s"]
        else:
            due = t - ch.last_step >= self.settings["inter_tap_delay_s"]
        if not due:
            return 0
        ch.last_step = t
        log.info("regulator_decision", device=self.name, direction="raise" if direction > 0 else "lower",
                 v_comp=round(v_comp, 2), t=round(t, 1))  # fmt: skip
        return direction

    def values(self, t: float) -> dict[str, float | int | str | bool]:
        """Every point of config/maps/sim-regulator.toml at simulated time ``t`` [s]."""
        out: dict[str, float | int | str | bool] = {}
        pt = self.settings["pt_ratio"]
        for k, p in enumerate(PHASES):
            out[f"tap_{p}"] = self.taps[k]
            out[f"v_reg_{p}"] = min(_V_FULL_SCALE, abs(self._v[k]) / pt)
            out[f"v_comp_{p}"] = min(_V_FULL_SCALE, self._v_comp[k])
            out[f"i_load_{p}"] = abs(self._i[k])
            out[f"band_{p}"] = -self.band_direction(self._v_comp[k])  # +1 above the band, -1 below
            out[f"operation_count_{p}"] = self.operation_counts[k]
            out[f"tap_target_{p}"] = self.targets[k]
        out["model"] = MODEL
        out["mode"] = int(self.mode)
        for key in SETTING_POINTS:
            out[key] = self.settings[key]
        out["time_delay_s"] = round(self.settings["time_delay_s"])
        out["ct_primary_a"] = round(self.settings["ct_primary_a"])
        out["panel_band_center_v"] = self.panel_band_center_v
        out["revert_timeout_s"] = round(self.revert_timeout_s)
        out["heartbeat"] = self.heartbeat
        now = self._t if self._t is not None else t
        out["revert_remaining_s"] = min(_UINT16_MAX, math.ceil(self.revert_remaining_s(now) - 1e-9))
        out["reverted_count"] = self.reverted_count
        out["last_revert_reason"] = int(self.last_revert_reason)
        return out

    # --- writes -------------------------------------------------------------------------------------------
    def on_write(self, req: WriteRequest) -> int | None:
        """Settings, mode and manual tap targets; None accepts, an int is the Modbus exception code."""
        points = req.points
        if not points:
            return ILLEGAL_ADDRESS  # only reserved registers written
        now = self._now()
        if now is not None:
            self._master_at = now  # any write, accepted or not: the master is alive
        mode = points.get("mode", int(self.mode))
        if mode not in (Mode.MANUAL, Mode.AUTOMATIC):
            return self._refuse(f"mode={mode} (0 manual, 1 automatic)", ILLEGAL_VALUE)
        new = dict(self.settings)
        for key in SETTING_POINTS:
            if key in points:
                lo, hi = RANGES[key]
                if not lo <= points[key] <= hi:
                    return self._refuse(f"{key}={points[key]} (allowed {lo:g}..{hi:g})", ILLEGAL_VALUE)
                new[key] = float(points[key])
        panel = self.panel_band_center_v
        if "panel_band_center_v" in points:
            lo, hi = RANGES["band_center_v"]
            if not lo <= points["panel_band_center_v"] <= hi:
                return self._refuse(f"panel_band_center_v={points['panel_band_center_v']} (allowed {lo:g}..{hi:g})",
                                    ILLEGAL_VALUE)  # fmt: skip
            panel = float(points["panel_band_center_v"])
            if "band_center_v" not in points:
                new["band_center_v"] = panel  # a panel setting sets the band centre in force too
        revert = points.get("revert_timeout_s", self.revert_timeout_s)
        if not (revert == 0 or REVERT_RANGE_S[0] <= revert <= REVERT_RANGE_S[1]):
            return self._refuse(f"revert_timeout_s={revert} (allowed 0, or 10..7200)", ILLEGAL_VALUE)
        targets = {TARGET_POINTS[n]: v for n, v in points.items() if n in TARGET_POINTS}
        if targets:
            if Mode(mode) is not Mode.MANUAL:
                return self._refuse("tap target in automatic mode", ILLEGAL_FUNCTION)
            for k, v in targets.items():
                if not TAP_MIN <= v <= TAP_MAX:
                    return self._refuse(f"tap_target_{PHASES[k]}={v} (allowed {TAP_MIN}..{TAP_MAX})", ILLEGAL_VALUE)
        if Mode(mode) is not self.mode:
            self.targets = list(self.taps)  # a mode change stops any movement under way
            for ch in self._channels:
                ch.reset()
        self.mode = Mode(mode)
        self.settings = new
        self.panel_band_center_v = panel
        self.revert_timeout_s = float(revert)
        if "heartbeat" in points:
            self.heartbeat = int(points["heartbeat"])
        for k, v in targets.items():
            self.targets[k] = int(v)
        log.info("regulator_write_accepted", device=self.name, points=",".join(sorted(points)))
        return None

    def _refuse(self, why: str, code: int) -> int:
        log.info("regulator_write_refused", device=self.name, exception=code, reason=why)
        return code


__all__ = ["Mode", "RegulatorController", "RegulatorError", "RevertReason", "compensated_voltage"]
