"""The bench: every simulated device of a config served for real, stepped on a simulated clock.

RTU buses are socat pty pairs (the simulator serves ``<link>-sim``, the agent opens ``<link>``);
TCP devices listen on their host:port (devices sharing a port are units of one server, as behind a
gateway). The simulated clock advances ``step_s`` per step and a step happens every
``step_s / speed`` seconds of wall time, so ``--speed 10`` runs ten times faster and the agent,
reading on its own schedule, need not know.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sim_hw.config import BenchConfig, BusConfig, DeviceSpec
from sim_hw.devices.meter import ThreePhaseMeter
from sim_hw.devices.modbus_server import ModbusDeviceServer, units_of

log = logging.getLogger(__name__)

_PTY_TIMEOUT_S = 5.0


class BenchError(Exception):
    """The bench cannot start (socat missing, a port taken, a pty not created...)."""


@dataclass
class _Device:
    spec: DeviceSpec
    model: ThreePhaseMeter
    server: ModbusDeviceServer


class Bench:
    """Start with ``await start()``, step with ``await run()``, always ``await stop()``.

    ``speed`` overrides the config's; ``wall_clock`` gives the simulated clock's start when the
    config has none (injected so tests can pin it).
    """

    def __init__(
        self, config: BenchConfig, *, speed: float | None = None, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.speed = float(speed if speed is not None else config.bench.speed)
        if not self.speed > 0:
            raise BenchError(f"speed = {speed!r}: must be > 0")
        self.step_s = config.bench.step_s
        self.start_time = config.bench.start if config.bench.start is not None else float(wall_clock())
        self.steps = 0  # steps taken; the simulated clock is start_time + steps * step_s
        self._socats: dict[str, subprocess.Popen[bytes]] = {}
        self._servers: list[ModbusDeviceServer] = []
        self._devices: list[_Device] = []
        self._started = False

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
        return {name: proc.pid for name, proc in self._socats.items()}

    def server_of(self, device_name: str) -> ModbusDeviceServer:
        """The server holding a device (for fault injection in tests and scenarios)."""
        for d in self._devices:
            if d.spec.name == device_name:
                return d.server
        raise KeyError(f"no device {device_name!r} on the bench")

    def model_of(self, device_name: str) -> ThreePhaseMeter:
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
            tcp: dict[tuple[str, int], list[DeviceSpec]] = {}
            rtu: dict[str, list[DeviceSpec]] = {}
            for spec in self.config.devices:
                if spec.protocol == "modbus-tcp":
                    tcp.setdefault((str(spec.host), int(spec.port or 0)), []).append(spec)
                else:
                    rtu.setdefault(str(spec.bus), []).append(spec)
            for (host, port), specs in tcp.items():
                server = ModbusDeviceServer.tcp(
                    host, port, units_of((s.unit_id, s.register_map) for s in specs), seed=seed
                )
                await self._add(server, specs)
            for bus_name, specs in rtu.items():
                bus = self.config.bus(bus_name)
                server = ModbusDeviceServer(
                    units_of((s.unit_id, s.register_map) for s in specs),
                    serial_port=str(bus.sim_path),
                    baudrate=bus.baudrate,
                    parity=bus.parity,
                    bytesize=bus.bytesize,
                    stopbits=bus.stopbits,
                    seed=seed,
                )
                await self._add(server, specs)
            await self.step_once(advance=False)
        except BaseException:
            await self.stop()
            raise
        log.info("bench=up devices=%d speed=%g step_s=%g", len(self._devices), self.speed, self.step_s)

    async def _add(self, server: ModbusDeviceServer, specs: list[DeviceSpec]) -> None:
        try:
            await server.start()
        except Exception as err:
            raise BenchError(f"devices {', '.join(s.name for s in specs)}: {err}") from err
        self._servers.append(server)
        for spec in specs:
            model = ThreePhaseMeter(
                spec.name, load_kw=spec.load_kw, seed=self.config.bench.seed, clock=lambda: self.sim_time
            )
            self._devices.append(_Device(spec, model, server))

    async def _open_bus(self, bus: BusConfig) -> subprocess.Popen[bytes]:
        socat = shutil.which("socat")
        if socat is None:
            raise BenchError(f"bus {bus.name!r}: socat is not installed (needed for the RTU pty pair)")
        bus.link.parent.mkdir(parents=True, exist_ok=True)
        for path in (bus.link, bus.sim_path):
            if path.is_symlink():  # left over by a bench that was killed
                path.unlink()
            elif path.exists():
                raise BenchError(f"bus {bus.name!r}: {path} exists and is not a pty link; refusing to replace it")
        proc = subprocess.Popen(
            [socat, f"pty,raw,echo=0,link={bus.sim_path}", f"pty,raw,echo=0,link={bus.link}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + _PTY_TIMEOUT_S
        while not (bus.link.exists() and bus.sim_path.exists()):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise BenchError(f"bus {bus.name!r}: socat exited with {proc.returncode}: {err}")
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise BenchError(f"bus {bus.name!r}: socat did not create {bus.link} within {_PTY_TIMEOUT_S} s")
            await asyncio.sleep(0.01)
        log.info("bus=%s link=%s sim=%s socat_pid=%d", bus.name, bus.link, bus.sim_path, proc.pid)
        return proc

    async def stop(self) -> None:
        """Close every server and kill every socat; safe to call twice or after a failed start."""
        for server in self._servers:
            try:
                await server.stop()
            except Exception as err:  # keep closing the others
                log.warning("modbus_server=stop_failed address=%s error=%r", server.address, err)
        self._servers.clear()
        for name, proc in self._socats.items():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            if proc.stderr:
                proc.stderr.close()
            bus = self.config.bus(name)
            for path in (bus.link, bus.sim_path):
                with contextlib.suppress(FileNotFoundError):
                    if path.is_symlink():
                        path.unlink()
        self._socats.clear()
        self._devices.clear()
        self._started = False
        log.info("bench=down steps=%d sim_time=%.3f", self.steps, self.sim_time)

    # --- stepping -------------------------------------------------------------------------------------------
    async def step_once(self, *, advance: bool = True) -> None:
        """Advance the simulated clock one step (unless ``advance`` is False) and serve the new values."""
        if advance:
            self.steps += 1
        t = self.sim_time
        for d in self._devices:
            await d.server.update(d.spec.unit_id, d.model.values(t))

    async def run(self, seconds: float | None = None, stop: asyncio.Event | None = None) -> None:
        """Step every ``step_s / speed`` wall seconds until ``seconds`` have passed or ``stop`` is set.

        Steps follow a fixed wall schedule (not sleep-after-work), so the simulated clock keeps its
        pace when a step takes time; if the machine falls behind, missed steps are taken at once.
        """
        if not self._started:
            raise BenchError("start the bench before running it")
        interval = self.step_s / self.speed
        t0 = time.monotonic()
        first = self.steps
        end = None if seconds is None else t0 + seconds
        stop = stop or asyncio.Event()
        while not stop.is_set():
            due = t0 + (self.steps - first + 1) * interval
            wake = due if end is None else min(due, end)
            delay = wake - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            if time.monotonic() >= due:
                await self.step_once()
            if end is not None and time.monotonic() >= end:
                break

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
        rows.append((d.name, d.kind, d.protocol, where, str(d.unit_id), _short(d.map_path, config.source)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _short(path: Path, source: Path) -> str:
    try:
        return str(path.relative_to(source.parent))
    except ValueError:
        return str(path)
