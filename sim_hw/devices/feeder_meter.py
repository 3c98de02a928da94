"""A three-phase revenue meter at one terminal of a feeder element, driven by the feeder's power flow.

Where ``sim_hw/devices/meter.py`` invents a load curve, this meter reads what its instrument
transformers see in each solved state of the feeder (``observe(t, solution)``): the complex phase
voltages and currents at ``solution.terminal(element, terminal)``. It serves exactly the points of
``config/maps/sim-meter.toml`` (the same map as the synthetic meter, see docs/devices/sim-meter.md,
section "Feeder revenue meter").

Conventions (docs/devices/sim-meter.md):

- values are primary quantities (volts on the 2.4 kV side, amperes in the line) unless the meter is
  built with ``registers="secondary"``, when they are divided by the PT and CT ratios as a meter
  without programmed multipliers would show them;
- per phase ``S = V conj(I)`` with I flowing into the element at the metered terminal (the Solution's
  convention), so P > 0 is power delivered into the element (to the load) and Q > 0 is inductive;
  ``reverse=True`` turns the CT round;
- ``pf`` is the vector power factor ``|P| / |P + jQ|`` (an absolute value, as the synthetic meter
  documents), 1.0 when no power flows;
- the energy counters integrate the total active power over SIMULATED time: the state solved at one
  observe holds until the next (the bench's physics is piecewise constant between steps), so the
  interval ``[t_prev, t]`` adds ``P(t_prev) * (t - t_prev) / 3600`` Wh, to "delivered" when P >= 0
  and to "received" otherwise; the registers are uint32 and roll over at 2**32 like a real meter's.

The rollover arithmetic (``ENERGY_MODULUS``) and the serial-number derivation (10 000 000 + CRC-32 of
the name, modulo 90 000 000) are copied from sim_hw/devices/meter.py so both meters behave alike.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from protocols.eventlog import EventLog
from sim_hw.devices.modbus_server import ILLEGAL_ADDRESS, WriteRequest
from sim_hw.feeder.solution import PHASES, Solution

log = EventLog("sim.devices")

# Point names this model produces: those of config/maps/sim-meter.toml (as sim_hw/devices/meter.py POINTS).
POINTS = (
    "v_a", "v_b", "v_c", "i_a", "i_b", "i_c", "p_a", "p_b", "p_c", "p_total", "q_total", "pf",
    "frequency", "model", "serial_number", "energy_delivered_wh", "energy_received_wh", "status_ok",
    "relay_closed",
)  # fmt: skip

MODEL = "SIM3P-FDR"
ENERGY_MODULUS = 1 << 32  # a uint32 Wh register rolls over like a real meter's (as meter.py)
REGISTERS = ("primary", "secondary")
# Below this fraction of the bus's nominal voltage the meter cannot lock onto the frequency and reads 0 Hz.
_FREQUENCY_MIN_V_PU = 0.1
_OPTIONS = ("element", "terminal", "pt_ratio", "ct_ratio", "registers", "reverse", "energy_delivered_wh",
            "energy_received_wh")  # fmt: skip


class FeederMeterError(ValueError):
    """A feeder meter asked for something it cannot do: bad option (named), time backwards, unknown terminal."""


def _serial(text: str) -> int:
    """An eight-digit serial number derived from ``text`` (as sim_hw/devices/meter.py derives its own)."""
    return 10_000_000 + zlib.crc32(text.encode()) % 90_000_000


def _number(name: str, key: str, value: Any, ok: Callable[[float], bool], allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not ok(value):
        raise FeederMeterError(f"meter {name!r}: {key} = {value!r}: must be {allowed}")
    return float(value)


class FeederMeter:
    """A revenue meter at ``terminal`` of feeder ``element`` (e.g. ``"Line.650632"`` terminal 1).

    Parameters
    ----------
    name : the device name; the serial number derives from it.
    element : OpenDSS full element name whose terminal is metered.
    terminal : 1-based terminal number of ``element``.
    pt_ratio, ct_ratio : instrument transformer ratios (primary / secondary), used only when
        ``registers="secondary"``.
    registers : ``"primary"`` (default: the meter is programmed with the ratios) or ``"secondary"``.
    reverse : True if the CT faces the other way (P and Q change sign).
    energy_delivered_wh, energy_received_wh : initial counter readings [Wh], 0 .. 2**32 - 1.
    """

    def __init__(
        self,
        name: str,
        *,
        element: str = "Line.650632",
        terminal: int = 1,
        pt_ratio: float = 1.0,
        ct_ratio: float = 1.0,
        registers: str = "primary",
        reverse: bool = False,
        energy_delivered_wh: float = 0.0,
        energy_received_wh: float = 0.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise FeederMeterError(f"name = {name!r}: must be a non-empty string")
        if not isinstance(element, str) or "." not in element:
            raise FeederMeterError(f"meter {name!r}: element = {element!r}: must be an OpenDSS name like 'Line.650632'")
        if isinstance(terminal, bool) or not isinstance(terminal, int) or terminal < 1:
            raise FeederMeterError(f"meter {name!r}: terminal = {terminal!r}: must be an integer >= 1")
        if registers not in REGISTERS:
            raise FeederMeterError(f"meter {name!r}: registers = {registers!r}: must be one of {', '.join(REGISTERS)}")
        if not isinstance(reverse, bool):
            raise FeederMeterError(f"meter {name!r}: reverse = {reverse!r}: must be true or false")
        self.name = name
        self.element = element
        self.terminal = terminal
        self.pt_ratio = _number(name, "pt_ratio", pt_ratio, lambda x: x > 0, "a number > 0")
        self.ct_ratio = _number(name, "ct_ratio", ct_ratio, lambda x: x > 0, "a number > 0")
        self.registers = registers
        self.reverse = reverse
        counter = "a number in 0 .. 4294967295"
        self._delivered_wh = _number(
            name, "energy_delivered_wh", energy_delivered_wh, lambda x: 0 <= x < ENERGY_MODULUS, counter
        )
        self._received_wh = _number(
            name, "energy_received_wh", energy_received_wh, lambda x: 0 <= x < ENERGY_MODULUS, counter
        )
        # the energy that really flowed since the bench started [Wh]: neither wrapped nor reset by a meter swap
        # (the truth log's ``meters``, what metering proofs judge intervals by)
        self.true_delivered_wh = 0.0
        self.true_received_wh = 0.0
        self.swaps = 0
        self.serial_number = _serial(name)
        self._t_last: float | None = None
        self._p_last_w = 0.0  # total P [W, register scale] of the last observed state, held until the next
        self._values = self._dead_values()

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> FeederMeter:
        """Build from the bench TOML's device options; an unknown key is a FeederMeterError naming the allowed."""
        for key in options:
            if key not in _OPTIONS:
                raise FeederMeterError(f"meter {name!r}: {key} = {options[key]!r}: unknown option; allowed: "
                                       f"{', '.join(_OPTIONS)}")  # fmt: skip
        return cls(name, **options)

    # --- the step loop ------------------------------------------------------------------------------
    def actuate(self, t: float, feeder: Any) -> None:
        """A meter pushes nothing into the physics."""

    def observe(self, t: float, solution: Solution) -> None:
        """Take what the PTs and CTs see in ``solution`` and integrate energy up to ``t`` [s]."""
        self._advance(t)
        try:
            term = solution.terminal(self.element, self.terminal)
        except KeyError as err:
            raise FeederMeterError(f"meter {self.name!r}: {err.args[0]}") from err
        v_div = self.pt_ratio if self.registers == "secondary" else 1.0
        i_div = self.ct_ratio if self.registers == "secondary" else 1.0
        sign = -1.0 if self.reverse else 1.0
        out: dict[str, float | int | str | bool] = {}
        s_total = 0j
        v_max = 0.0
        for ph in PHASES:
            v = term.v.get(ph, 0j) / v_div
            i = sign * term.i.get(ph, 0j) / i_div
            s = v * i.conjugate()
            s_total += s
            v_max = max(v_max, abs(v))
            out[f"v_{ph}"] = abs(v)
            out[f"i_{ph}"] = abs(i)
            out[f"p_{ph}"] = s.real
        out["p_total"] = s_total.real
        out["q_total"] = s_total.imag
        out["pf"] = abs(s_total.real) / abs(s_total) if abs(s_total) > 0 else 1.0
        base_kv = solution.base_kv_ln.get(term.bus.lower())
        v_min = _FREQUENCY_MIN_V_PU * base_kv * 1000.0 / v_div if base_kv else 0.0
        # the register holds hundredths of a hertz: round here so the served value is the model's
        out["frequency"] = round(solution.frequency_hz, 2) if v_max > v_min else 0.0
        self._values = {**self._values, **out}
        self._p_last_w = s_total.real

    def values(self, t: float | None = None) -> dict[str, float | int | str | bool]:
        """Every point of config/maps/sim-meter.toml as of the last observe (zeros before the first)."""
        out = dict(self._values)
        out["serial_number"] = self.serial_number
        out["energy_delivered_wh"] = int(self._delivered_wh) % ENERGY_MODULUS
        out["energy_received_wh"] = int(self._received_wh) % ENERGY_MODULUS
        return out

    def read_values(self, t: float) -> dict[str, int]:
        """The energy registers at ``t`` [s], between two observes: the held power keeps counting.

        What the bench's server answers a read with, so a reading holds the energy at its instant, not at the
        last step (the meter integrates continuously; the bench steps). ``t`` before the last observe gives
        the registers of that observe: a register never reads backwards.
        """
        delivered, received = self._delivered_wh, self._received_wh
        if self._t_last is not None and t > self._t_last:
            wh = self._p_last_w * (t - self._t_last) / 3600.0
            if wh >= 0:
                delivered += wh
            else:
                received -= wh
        return {
            "energy_delivered_wh": int(delivered) % ENERGY_MODULUS,
            "energy_received_wh": int(received) % ENERGY_MODULUS,
        }

    def on_write(self, req: WriteRequest) -> int | None:
        """Nothing in this meter is writable over Modbus: every write answers exception 2 (illegal data address)."""
        log.info("modbus_write_refused", device=self.name, table=req.table.value, address=req.address,
                 reason="read_only")  # fmt: skip
        return ILLEGAL_ADDRESS

    # --- scenarios ----------------------------------------------------------------------------------
    def swap(self, t: float) -> None:
        """A new meter replaces this one at ``t``: energy registers restart at 0 and the serial number changes.

        The new meter counts from ``t`` on, with the power last observed still flowing.
        """
        self._advance(t)
        self.swaps += 1
        self.serial_number = _serial(f"{self.name}#{self.swaps}")
        self._delivered_wh = 0.0
        self._received_wh = 0.0
        log.info("meter_swap", device=self.name, t=round(t, 3), serial_number=self.serial_number)

    # --- internals ----------------------------------------------------------------------------------
    def _advance(self, t: float) -> None:
        """Integrate the held power from the last instant to ``t``."""
        if self._t_last is not None:
            if t < self._t_last:
                raise FeederMeterError(f"meter {self.name!r}: time ran backwards ({t} < {self._t_last})")
            wh = self._p_last_w * (t - self._t_last) / 3600.0
            if wh >= 0:
                self._delivered_wh = (self._delivered_wh + wh) % ENERGY_MODULUS
                self.true_delivered_wh += wh
            else:
                self._received_wh = (self._received_wh - wh) % ENERGY_MODULUS
                self.true_received_wh -= wh
        self._t_last = t

    def _dead_values(self) -> dict[str, float | int | str | bool]:
        out: dict[str, float | int | str | bool] = {f"{q}_{ph}": 0.0 for q in "vip" for ph in PHASES}
        out |= {"p_total": 0.0, "q_total": 0.0, "pf": 1.0, "frequency": 0.0, "model": MODEL}
        out |= {"status_ok": True, "relay_closed": True}  # powered from station auxiliary; no load relay
        return out
