"""The bench: every simulated device of a config served for real, stepped on a simulated clock.

RTU buses are socat pty pairs (the simulator serves ``<link>-sim``, the agent opens ``<link>``; a bench never
takes over another's links and removes only its own: sim_hw/ptypair.py);
TCP devices listen on their host:port (devices sharing a port are units of one server, as behind a
gateway). The simulated clock advances ``step_s`` per step and a step happens every
``step_s / speed`` seconds of wall time, so ``--speed 10`` runs ten times faster and the agent,
reading on its own schedule, need not know.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocols.eventlog import EventLog
from sim_hw.config import BenchConfig, BusConfig, DeviceSpec, PmuSpec, WaveformSpec
from sim_hw.devices.modbus_server import ModbusDeviceServer, units_of
from sim_hw.devices.registry import BuildContext, DeviceModel, DeviceOptionsError, build_model, model_register_map
from sim_hw.ptypair import PtyPair, PtyPairError
from sim_hw.truthlog import TruthLog

if TYPE_CHECKING:
    from sim_hw.scenarios import ScenarioStep

log = EventLog("sim.bench")

_PTY_TIMEOUT_S = 5.0
_BUS_HISTORY_STEPS = 3600  # solved steps of bus voltages kept for the waveform streams that follow a bus


class BenchError(Exception):
    """The bench cannot start (socat missing, a port taken, a pty not created...)."""


@dataclass
class _Device:
    spec: DeviceSpec
    model: DeviceModel
    server: ModbusDeviceServer


class Bench:
    """Start with ``await start()``, step with ``await run()``, always ``await stop()``.

    ``speed`` overrides the config's; ``wall_clock`` gives the simulated clock's start when the
    config has none (injected so tests can pin it); ``truth_log`` records what the bench does (sim_hw/truthlog.py).
    """

    def __init__(
        self,
        config: BenchConfig,
        *,
        speed: float | None = None,
        wall_clock: Callable[[], float] = time.time,
        truth_log: TruthLog | None = None,
    ) -> None:
        self.config = config
        self.truth_log = truth_log
        self.speed = float(speed if speed is not None else config.bench.speed)
        if not self.speed > 0:
            raise BenchError(f"speed = {speed!r}: must be > 0")
        self.step_s = config.bench.step_s
        self.start_time = config.bench.start if config.bench.start is not None else float(wall_clock())
        self.steps = 0  # steps taken; the simulated clock is start_time + steps * step_s
        self._socats: dict[str, PtyPair] = {}
        self._servers: list[ModbusDeviceServer] = []
        self._devices: list[_Device] = []
        self._started = False
        self._up = False  # start() finished: the truth log has its bench_up record
        self.feeder: Any = None  # sim_hw.feeder.model.Feeder when the config has a [feeder]
        self.solution: Any = None  # the latest sim_hw.feeder.solution.Solution
        self.pmus: dict[str, Any] = {}  # name -> running SimPmu
        self.waveforms: dict[str, Any] = {}  # name -> running WaveformStreamServer
        self.scenario: Any = None  # sim_hw.scenarios.Scenario when the config names one
        self._load_profile: Any = None
        self._irradiance_profile: Any = None
        self._bdew: Any = None  # sim_hw.feeder.bdew.BdewProfiles under [profiles] source = "bdew"
        self._irradiance_factor = 1.0  # scenarios: a cloud passing over every PV site
        self._phase_rad = 0.0  # the angle the grid has drifted from a nominal-frequency rotation
        self._phase_at: float | None = None  # the simulated time _phase_rad refers to
        self._run_anchor: tuple[float, float] | None = None  # (monotonic, sim time) while run() paces
        self._clock_high = float("-inf")  # the latest clock() read: PMU timestamps never go back
        # (time.time(), time.monotonic()) when start() finished, the wall instant of the simulated start: the truth
        # log's bench_up ``wall`` and the first run's pacing, so a process anchored on that wall instant (the agent's
        # [clock] wall_start) and the bench share one clock
        self._up_at: tuple[float, float] | None = None
        self.device_errors: dict[str, int] = {}  # device -> actuate/observe failures (logged, not fatal)
        self.late_steps = 0  # run(): steps taken more than one step interval after they were due
        self.max_lag_s = 0.0  # run(): the worst delay of a step after it was due [wall s]
        self._bus_history: dict[str, list[tuple[float, tuple[float, float, float]]]] = {}  # waveforms' buses

    @property
    def sim_time(self) -> float:
        """The simulated clock [s since the epoch, UTC]."""
        return self.start_time + self.steps * self.step_s

    @property
    def elapsed_sim_s(self) -> float:
        return self.steps * self.step_s

    @property
    def socat_pids(self) -> dict[str, int]:
        """Bus name -> pid of the socat holding its pty pair (while the bench runs)."""
        return {name: pair.pid for name, pair in self._socats.items()}

    def server_of(self, device_name: str) -> ModbusDeviceServer:
        """The server holding a device (for fault injection in tests and scenarios)."""
        for d in self._devices:
            if d.spec.name == device_name:
                return d.server
        raise KeyError(f"no device {device_name!r} on the bench")

    def clock(self) -> float:
        """The simulated clock between steps too (PMU timestamps): paced by wall time while running."""
        now = self.sim_time
        if self._run_anchor is not None:
            mono0, sim0 = self._run_anchor
            now = max(now, sim0 + (time.monotonic() - mono0) * self.speed)
        # a run() that ends between two steps leaves the paced clock ahead of sim_time: never step back to it
        self._clock_high = max(self._clock_high, now)
        return self._clock_high

    def model_of(self, device_name: str) -> DeviceModel:
        for d in self._devices:
            if d.spec.name == device_name:
                return d.model
        raise KeyError(f"no device {device_name!r} on the bench")

    # --- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the pty pairs, start every server and serve the values of step 0."""
        if self._started:
            raise BenchError("the bench is already started")
        self._started = True
        try:
            for bus in self.config.buses:
                if any(d.bus == bus.name for d in self.config.devices):
                    self._socats[bus.name] = await self._open_bus(bus)
            seed = self.config.bench.seed
            if self.config.feeder is not None:
                self._start_feeder()
            models = {spec.name: self._build(spec) for spec in self.config.devices}
            self._check_pv_ratings(models)
            tcp: dict[tuple[str, int], list[DeviceSpec]] = {}
            rtu: dict[str, list[DeviceSpec]] = {}
            for spec in self.config.devices:
                if spec.protocol == "modbus-tcp":
                    tcp.setdefault((str(spec.host), int(spec.port or 0)), []).append(spec)
                else:
                    rtu.setdefault(str(spec.bus), []).append(spec)
            for (host, port), specs in tcp.items():
                units = units_of((s.unit_id, model_register_map(models[s.name], s.register_map)) for s in specs)
                await self._add(ModbusDeviceServer.tcp(host, port, units, seed=seed), specs, models)
            for bus_name, specs in rtu.items():
                bus = self.config.bus(bus_name)
                server = ModbusDeviceServer(
                    units_of((s.unit_id, model_register_map(models[s.name], s.register_map)) for s in specs),
                    serial_port=str(bus.sim_path),
                    baudrate=bus.baudrate,
                    parity=bus.parity,
                    bytesize=bus.bytesize,
                    stopbits=bus.stopbits,
                    seed=seed,
                )
                await self._add(server, specs, models)
            await self.step_once(advance=False, scenario=False)  # the scenario starts with step 1: PMUs exist
            self._check_scenario_buses()
            self._check_head()
            for pmu_spec in self.config.pmus:
                await self._start_pmu(pmu_spec)
            for wave_spec in self.config.waveforms:
                await self._start_waveform(wave_spec)
        except BaseException:
            await self.stop()
            raise
        self._up = True
        self._up_at = (time.time(), time.monotonic())
        log.info("bench_up", devices=len(self._devices), speed=self.speed, step_s=self.step_s)
        if self.truth_log is not None:
            scn = self.scenario
            scenario = None if scn is None else {"source": str(scn.source), "description": scn.description,
                                                 "events": scn.events, "steps": scn.pending}  # fmt: skip
            self.truth_log.write("bench_up", self.sim_time, pid=os.getpid(), speed=self.speed, step_s=self.step_s,
                                 sim_start=self.start_time, wall=self._up_at[0], devices=len(self._devices),
                                 scenario=scenario, feeder=self._truth_feeder())  # fmt: skip
            if self.solution is not None:
                self._truth_step()

    def _truth_step(self) -> None:
        assert self.truth_log is not None and self.config.feeder is not None
        element, _, terminal = self.config.feeder.head.partition("/")
        meters = {d.spec.name: (d.model.true_delivered_wh, d.model.true_received_wh) for d in self._devices
                  if hasattr(d.model, "true_delivered_wh")}  # fmt: skip
        self.truth_log.step(self.solution, self.steps, head=(element, int(terminal)), step_s=self.step_s,
                            meters=meters)  # fmt: skip

    def _truth_feeder(self) -> dict[str, Any] | None:
        """What the truth log's step records measure: buses, bases, the head, the PV sites, the loads' model."""
        if self.feeder is None or self.solution is None or self.config.feeder is None:
            return None
        from sim_hw.feeder.model import CVR_VARS, CVR_WATTS

        sol = self.solution
        model = self.feeder.load_model
        return {
            "buses": {bus: {"phases": "".join(sorted(sol.bus_v[bus])), "base_kv_ln": round(sol.base_kv_ln[bus], 6)}
                      for bus in sorted(sol.bus_v)},
            "substation_buses": list(self.feeder.substation_buses()),
            "head": self.config.feeder.head,
            "pv": {name: site.kva for name, site in sorted(self.feeder.pv_sites().items())},
            "capacitors": sorted(sol.capacitors),
            "load_model": {"model": model} | ({"cvr_watts": CVR_WATTS, "cvr_vars": CVR_VARS}
                                              if model == "exponential" else {}),
        }  # fmt: skip

    def _build(self, spec: DeviceSpec) -> DeviceModel:
        ctx = BuildContext(
            seed=self.config.bench.seed,
            clock=self.clock,
            load_kw=spec.load_kw,
            register_map=spec.register_map,
            step_s=self.step_s,
        )
        try:
            return build_model(spec.kind, spec.name, spec.options, ctx)
        except DeviceOptionsError as err:
            raise BenchError(f"device {spec.name!r} ({spec.kind}): {err}") from err

    async def _add(self, server: ModbusDeviceServer, specs: list[DeviceSpec], models: dict[str, DeviceModel]) -> None:
        try:
            await server.start()
        except Exception as err:
            raise BenchError(f"devices {', '.join(s.name for s in specs)}: {err}") from err
        self._servers.append(server)
        for spec in specs:
            model = models[spec.name]
            on_write = getattr(model, "on_write", None)
            if on_write is not None:
                server.on_write(spec.unit_id, on_write)
            read_values = getattr(model, "read_values", None)
            if read_values is not None:
                server.on_read(spec.unit_id, self._read_provider(read_values))
            self._devices.append(_Device(spec, model, server))

    def _read_provider(self, read_values: Callable[[float], Mapping[str, Any]]) -> Callable[[], Mapping[str, Any]]:
        """A model's registers at the instant of a read: the paced clock, never past the next step's time (the
        step that follows integrates from the same state, so a register never reads backwards)."""

        def provider() -> Mapping[str, Any]:
            return read_values(min(self.clock(), self.sim_time + self.step_s))

        return provider

    # --- physics ----------------------------------------------------------------------------------------------
    def _start_feeder(self) -> None:
        from sim_hw.feeder.model import Feeder, FeederError
        from sim_hw.feeder.profiles import irradiance_profile, load_profile

        settings = self.config.feeder
        assert settings is not None
        try:
            self.feeder = Feeder.from_file(settings.dss)
            for site, kva in settings.pv_kva.items():
                self.feeder.set_pv_rating(site, kva)
            if settings.load_model != "published":
                self.feeder.set_load_model(settings.load_model)
            self._load_profile = load_profile()  # [feeder] load = "default": the only shape so far
            self._irradiance_profile = (
                None if settings.irradiance == "none" else irradiance_profile(settings.irradiance)
            )
            if self.config.profiles is not None and self.config.profiles.source == "bdew":
                from sim_hw.feeder.bdew import BdewProfiles

                self._bdew = BdewProfiles(self.config.profiles, self.feeder.load_ratings())
        except (FeederError, ValueError) as err:
            raise BenchError(f"feeder: {err}") from err
        if self.config.scenario is not None:
            from sim_hw.scenarios import ScenarioError, load_scenario

            try:
                self.scenario = load_scenario(
                    self.config.scenario,
                    start=self.start_time,
                    devices=tuple(d.name for d in self.config.devices),
                    pmus=tuple(p.name for p in self.config.pmus),
                )
            except ScenarioError as err:
                raise BenchError(f"scenario: {err}") from err
            self.scenario.on_step = self._scenario_step

    def _scenario_step(self, t: float, step: ScenarioStep, error: str | None) -> None:
        if self.truth_log is None:
            return
        extra = {} if error is None else {"error": error}
        self.truth_log.write("scenario_step", t, elapsed_s=t - self.start_time, action=step.action, where=step.where,
                             text=step.text, end=step.after is not None, **extra)  # fmt: skip

    def _check_pv_ratings(self, models: dict[str, DeviceModel]) -> None:
        """An inverter may not be rated above the feeder's PV site it drives (the physics would refuse it)."""
        if self.feeder is None:
            return
        sites = self.feeder.pv_sites()
        for name, model in models.items():
            site = getattr(model, "site", None)
            if site is None or not hasattr(model, "kva"):
                continue
            if site not in sites:
                raise BenchError(f"device {name!r}: site = {site!r}: the feeder's PV sites are {', '.join(sites)}")
            if model.kva > sites[site].kva:
                raise BenchError(
                    f"device {name!r}: kva = {model.kva:g}: above the feeder's {site} rating ({sites[site].kva:g} kVA)"
                )

    def silence(self, device_name: str, silent: bool) -> None:
        """Scenarios: a device stops answering (its unit drops every request) or answers again."""
        for d in self._devices:
            if d.spec.name == device_name:
                d.server.set_fault(d.spec.unit_id, "silent" if silent else None)
                return
        raise KeyError(f"no device {device_name!r} on the bench")

    def set_irradiance_factor(self, factor: float) -> None:
        """Scenarios: scale every PV site's irradiance (a cloud: 0.2; clear again: 1.0)."""
        self._irradiance_factor = float(factor)

    def profile_time(self, t: float) -> float:
        """The instant the realistic profiles are read at for the bench's ``t``: ``t`` itself, or with
        ``[profiles] start`` that instant plus the simulated time elapsed (a bench on the wall clock, the demo's,
        replays the same weather and load whatever the date and hour it runs)."""
        at = self.config.profiles.start if self.config.profiles is not None else None
        return t if at is None else at + (t - self.start_time)

    def _solve(self, t: float, *, scenario: bool = True) -> None:
        feeder = self.feeder
        if self._bdew is not None:  # per-load BDEW profiles; the PV output per kWp is the inverters' irradiance
            irr = self._bdew.apply(feeder, self.profile_time(t))
        else:
            feeder.set_load_scale(self._load_profile.value(t))
            irr = self._irradiance_profile.value(t) if self._irradiance_profile is not None else 0.0
        feeder.set_irradiance(irr * self._irradiance_factor)
        if self.scenario is not None and scenario:
            self.scenario.apply_due(t, self)
        for d in self._devices:
            actuate = getattr(d.model, "actuate", None)
            if actuate is not None:
                self._guarded(d, "actuate", actuate, t, feeder)
        self.solution = feeder.solve(t)
        if self._phase_at is not None:  # the grid angle drifts with the frequency's deviation from nominal
            self._phase_rad += 2 * math.pi * (self.solution.frequency_hz - 60.0) * (t - self._phase_at)
        self._phase_at = t
        for d in self._devices:
            observe = getattr(d.model, "observe", None)
            if observe is not None:
                self._guarded(d, "observe", observe, t, self.solution)
        if self._bus_history:
            self._record_bus_voltages()

    def _guarded(self, d: _Device, what: str, fn: Any, *args: Any) -> None:
        """One device's failure (a model bug, a value the physics refuses) is logged and counted; the bench
        and every other device go on, the device keeping its last state, as one broken unit in a substation."""
        try:
            fn(*args)
        except Exception as err:
            self._count_error(d, what, err)

    def _count_error(self, d: _Device, what: str, err: Exception) -> None:
        n = self.device_errors.get(d.spec.name, 0) + 1
        self.device_errors[d.spec.name] = n
        if n == 1 or n % 1000 == 0:
            log.error("device_step_failed", device=d.spec.name, step=what, failures=n, error=repr(err))

    def _check_scenario_buses(self) -> None:
        """A scenario's fault buses must be the feeder's (else the fault would fail when its time comes)."""
        if self.scenario is None or self.solution is None:
            return
        unknown = sorted(self.scenario.fault_buses - set(self.solution.bus_v))
        if unknown:
            raise BenchError(
                f"scenario: fault bus {unknown[0]!r} is not a bus of the feeder "
                f"(buses: {', '.join(sorted(self.solution.bus_v))})"
            )

    def _check_head(self) -> None:
        """The feeder head the truth log meters must be a terminal of the feeder."""
        if self.solution is None or self.config.feeder is None:
            return
        head = self.config.feeder.head
        element, _, terminal = head.partition("/")
        try:
            self.solution.terminal(element, int(terminal))
        except KeyError:
            raise BenchError(f"feeder: head = {head!r}: not a terminal of the feeder (e.g. 'Line.650632/1')") from None

    def grid_phase_rad(self, t: float) -> float:
        """The angle every phasor has turned by at ``t`` relative to a nominal 60 Hz rotation (PMUs)."""
        if self.solution is None or self._phase_at is None:
            return 0.0
        return self._phase_rad + 2 * math.pi * (self.solution.frequency_hz - 60.0) * (t - self._phase_at)

    async def _start_pmu(self, spec: PmuSpec) -> None:
        from sim_hw.devices.feeder_pmu import FeederPmuError, feeder_pmu

        try:
            pmu = feeder_pmu(self, spec)
        except FeederPmuError as err:
            raise BenchError(f"pmu {spec.name!r}: {err}") from err
        try:
            await pmu.start()
        except OSError as err:
            raise BenchError(f"pmu {spec.name!r}: cannot listen on {spec.host}:{spec.port}: {err}") from err
        self.pmus[spec.name] = pmu

    def _record_bus_voltages(self) -> None:
        """Keep each coupled bus's per-phase voltage [pu] per solved step (bounded: the last hour of steps)."""
        sol = self.solution
        for bus, history in self._bus_history.items():
            pu = sol.v_pu(bus)
            history.append((sol.t, tuple(pu.get(p, 0.0) for p in ("a", "b", "c"))))
            if len(history) > _BUS_HISTORY_STEPS:
                del history[: len(history) - _BUS_HISTORY_STEPS]

    def _bus_scale(self, bus: str) -> Callable[[float], tuple[float, float, float]]:
        """scale(t): the bus's per-phase pu of the step in force at signal time t (the latest one after it)."""
        history = self._bus_history[bus]

        def scale(t: float) -> tuple[float, float, float]:
            i = bisect.bisect_right(history, t, key=lambda row: row[0]) - 1
            return history[max(i, 0)][1]

        return scale

    async def _start_waveform(self, spec: WaveformSpec) -> None:
        """A wave stream on the bench's timeline: sample 0 at the simulated clock's start unless the description
        gives its own ``t0``; at the bench's speed unless the entry gives its own."""
        from dataclasses import replace

        from sim_hw.waveforms.stream import WaveformStreamServer

        desc = spec.desc if spec.desc.t0 else replace(spec.desc, t0=self.start_time)
        scale = None
        if spec.bus is not None:
            if (
                self.solution is None
                or spec.bus not in self.solution.bus_v
                or not self.solution.base_kv_ln.get(spec.bus)
            ):
                raise BenchError(f"waveform {spec.name!r}: bus = {spec.bus!r}: not a bus of the feeder")
            self._bus_history.setdefault(spec.bus, [])
            self._record_bus_voltages()
            scale = self._bus_scale(spec.bus)
        server = WaveformStreamServer(desc, host=spec.host, port=spec.port, block_s=spec.block_s,
                                      speed=spec.speed if spec.speed is not None else self.speed,
                                      duration_s=spec.duration_s, stream=spec.name, scale=scale)  # fmt: skip
        try:
            await server.start()
        except OSError as err:
            raise BenchError(f"waveform {spec.name!r}: cannot listen on {spec.host}:{spec.port}: {err}") from err
        self.waveforms[spec.name] = server

    async def _open_bus(self, bus: BusConfig) -> PtyPair:
        try:
            pair = await PtyPair.open(bus.link, bus.sim_path, timeout_s=_PTY_TIMEOUT_S)
        except PtyPairError as err:
            raise BenchError(f"bus {bus.name!r}: {err}") from err
        log.info("rs485_bus_open", bus=bus.name, link=bus.link, sim=bus.sim_path, socat_pid=pair.pid)
        return pair

    async def stop(self) -> None:
        """Close every server and stop every socat, removing only the pty links this bench made; safe to call
        twice or after a failed start."""
        for name, pmu in list(self.pmus.items()):
            try:
                await pmu.stop()
            except Exception as err:  # keep closing the others
                log.warning("pmu_stop_failed", pmu=name, error=repr(err))
        self.pmus.clear()
        for name, wave in list(self.waveforms.items()):
            try:
                await wave.stop()
            except Exception as err:  # keep closing the others
                log.warning("waveform_stop_failed", waveform=name, error=repr(err))
        self.waveforms.clear()
        for server in self._servers:
            try:
                await server.stop()
            except Exception as err:  # keep closing the others
                log.warning("modbus_server_stop_failed", address=server.address, error=repr(err))
        self._servers.clear()
        for pair in self._socats.values():
            pair.close()  # removes only the links that still point at this bench's ptys
        self._socats.clear()
        self._devices.clear()
        self._started = False
        if self.truth_log is not None:
            if self._up:
                self.truth_log.write("bench_down", self.sim_time, steps=self.steps, late_steps=self.late_steps,
                                     max_lag_s=round(self.max_lag_s, 4))  # fmt: skip
            self.truth_log.close()
        self._up = False
        log.info("bench_down", steps=self.steps, sim_time=round(self.sim_time, 3))

    # --- stepping -------------------------------------------------------------------------------------------
    async def step_once(self, *, advance: bool = True, scenario: bool = True) -> None:
        """Advance the simulated clock one step (unless ``advance`` is False) and serve the new values.

        A device whose values cannot be served (a model bug, a value its point cannot hold) is logged and
        counted in ``device_errors`` and keeps its last registers; the other devices are served."""
        if advance:
            self.steps += 1
        t = self.sim_time
        if self.feeder is not None:
            self._solve(t, scenario=scenario)
            if self._up and self.truth_log is not None:
                self._truth_step()
        for d in self._devices:
            try:
                values = d.model.values(t)
                await d.server.update(d.spec.unit_id, values)
            except Exception as err:
                self._count_error(d, "serve", err)

    async def run(
        self, seconds: float | None = None, stop: asyncio.Event | None = None, *, sim_seconds: float | None = None
    ) -> None:
        """Step every ``step_s / speed`` wall seconds until ``seconds`` of wall time or ``sim_seconds`` of simulated
        time (counted from the call) have passed, or ``stop`` is set.

        Steps follow a fixed wall schedule (not sleep-after-work), so the simulated clock keeps its
        pace when a step takes time; if the machine falls behind, missed steps are taken at once (the servers
        still answer between two of them). ``late_steps`` counts the steps taken more than one step interval after
        they were due (0 on a bench that keeps up with its speed), ``max_lag_s`` is the worst delay [wall s].
        """
        if not self._started:
            raise BenchError("start the bench before running it")
        interval = self.step_s / self.speed
        t0 = time.monotonic()
        if self.steps == 0 and self._up_at is not None and t0 - self._up_at[1] < interval:
            # a run that follows start() at once (sim run) paces from the instant the bench came up, bench_up's
            # wall, so a process anchored there shares this clock (the ms between the two, times the speed, would
            # put it ahead of the bench); a later first run paces from its own call
            t0 = self._up_at[1]
        first = self.steps
        self._run_anchor = (t0, self.sim_time)
        end = None if seconds is None else t0 + seconds
        last_step = None if sim_seconds is None else first + math.ceil(sim_seconds / self.step_s - 1e-9)
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set() and (last_step is None or self.steps < last_step):
                due = t0 + (self.steps - first + 1) * interval
                wake = due if end is None else min(due, end)
                delay = wake - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        break
                now = time.monotonic()
                if now >= due:
                    lag = now - due
                    self.max_lag_s = max(self.max_lag_s, lag)
                    if lag > interval:
                        self.late_steps += 1
                    await self.step_once()
                    await asyncio.sleep(0)  # a bench behind its schedule still lets its servers answer
                if end is not None and time.monotonic() >= end:
                    break
        finally:
            self._run_anchor = None

    # --- reporting ------------------------------------------------------------------------------------------
    def table(self) -> str:
        """Every device: name, kind, protocol, where the agent finds it, unit id."""
        return device_table(self.config)


def device_table(config: BenchConfig) -> str:
    """The devices of a config as an aligned text table (what ``sim devices`` prints)."""
    rows = [("NAME", "KIND", "PROTOCOL", "ADDRESS", "UNIT", "MAP")]
    for d in config.devices:
        if d.protocol == "modbus-tcp":
            where = f"{d.host}:{d.port}"
        else:
            bus = config.bus(str(d.bus))
            where = f"{bus.link} ({bus.name}, {bus.framing})"
        where_map = _short(d.map_path, config.source) if d.map_path is not None else "(SunSpec, built in)"
        rows.append((d.name, d.kind, d.protocol, where, str(d.unit_id), where_map))
    for p in config.pmus:
        udp = f" (+UDP {p.udp_port})" if p.udp_port else ""
        rows.append(
            (p.name, "pmu", f"c37.118-{p.version}", f"{p.host}:{p.port}{udp}", f"id {p.idcode}", f"bus {p.bus}")
        )
    for w in config.waveforms:
        rate = f"{w.desc.rate:g} Hz"
        rows.append(
            (w.name, "waveform", "wavestream", f"{w.host}:{w.port}", rate, _short(w.description, config.source))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _short(path: Path, source: Path) -> str:
    try:
        return str(path.relative_to(source.parent))
    except ValueError:
        return str(path)
