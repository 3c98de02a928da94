"""The bench: config validation, start/run/stop with real sockets and socat ptys, the `sim` CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest
from helpers.aio import async_test
from helpers.net import free_port
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from protocols.modbus.registermap import RegisterPoint, decode_point
from sim_hw.bench import Bench, BenchError
from sim_hw.cli import main
from sim_hw.config import BenchConfigError, load_bench_config, parse_bench_config

ROOT = Path(__file__).resolve().parent.parent
MAP_FILE = ROOT / "config" / "maps" / "sim-meter.toml"
T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 20.0) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(guarded())


def write_config(tmp_path: Path, *, speed: float = 1.0, extra: str = "") -> tuple[Path, int, int]:
    p1, p2 = free_port(), free_port()
    text = f"""
[bench]
speed = {speed}
step_s = 1.0
seed = 4
start = "2026-06-01T12:00:00Z"

[[buses]]
name = "bus1"
link = "run/bus1"

[[devices]]
name = "sub"
map = "{MAP_FILE}"
protocol = "modbus-tcp"
port = {p1}
load_kw = 3000

[[devices]]
name = "feeder"
kind = "meter"
map = "{MAP_FILE}"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {p2}
unit_id = 5
load_kw = 800

[[devices]]
name = "rtu-a"
map = "{MAP_FILE}"
protocol = "modbus-rtu"
bus = "bus1"
unit_id = 1
load_kw = 20

[[devices]]
name = "rtu-b"
map = "{MAP_FILE}"
protocol = "modbus-rtu"
bus = "bus1"
unit_id = 2
load_kw = -5
{extra}
"""
    path = tmp_path / "bench.toml"
    path.write_text(text)
    return path, p1, p2


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- configuration ---------------------------------------------------------------------------------------


def test_config_loads_with_paths_relative_to_its_folder(tmp_path: Path) -> None:
    path, p1, p2 = write_config(tmp_path)
    cfg = load_bench_config(path)
    assert [d.name for d in cfg.devices] == ["sub", "feeder", "rtu-a", "rtu-b"]
    assert cfg.bench.seed == 4 and cfg.bench.start == 1780315200.0
    bus = cfg.bus("bus1")
    assert bus.link == tmp_path / "run" / "bus1"
    assert bus.sim_path == tmp_path / "run" / "bus1-sim"
    assert (cfg.devices[0].host, cfg.devices[0].port, cfg.devices[0].unit_id) == ("127.0.0.1", p1, 1)
    assert cfg.devices[3].load_kw == -5.0


def test_demo_bench_config_is_the_documented_site(repo_root: Path) -> None:
    cfg = load_bench_config(repo_root / "config" / "sim-site.toml")
    tcp = [d for d in cfg.devices if d.protocol == "modbus-tcp"]
    rtu = [d for d in cfg.devices if d.protocol == "modbus-rtu"]
    assert sorted(d.port for d in tcp) == [15020, 15021, 15022]
    assert all(d.host == "127.0.0.1" for d in tcp)
    assert sorted(d.unit_id for d in rtu) == [1, 2, 3] and {d.bus for d in rtu} == {"bus1"}
    assert cfg.bus("bus1").baudrate == 19200
    assert cfg.bus("bus1").link == repo_root / "run" / "rtu-bus1"  # runtime files: <repository>/run


BAD_CASES = [
    ('protocol = "modbus-tcp"', 'protocol = "bacnet"', "devices[0].protocol = 'bacnet': must be one of 'modbus-tcp'"),
    ('bus = "bus1"\nunit_id = 1', 'bus = "bus9"\nunit_id = 1', "devices[2].bus = 'bus9': must be one of 'bus1'"),
    ("unit_id = 2", "unit_id = 1", "devices[3].unit_id = 1: already used by device 'rtu-a'"),
    ("unit_id = 5", "unit_id = 300", "devices[1].unit_id = 300: must be in 0..247"),
    ("speed = 1.0", "speed = 0", "bench.speed = 0: must be in 0.001..10000"),
    ("seed = 4", "seed = 4\nsped = 2", "bench.sped = 2: unknown key; allowed: seed, speed, start, step_s"),
    ('start = "2026-06-01T12:00:00Z"', 'start = "noon"', "bench.start = 'noon': must be a date-time"),
    ('link = "run/bus1"', 'link = "run/bus1"\nbaudrate = 12345', "buses[0].baudrate = 12345: must be one of 1200"),
    ("load_kw = 800", 'load_kw = "lots"', "devices[1].load_kw = 'lots': must be a number"),
    ('kind = "meter"', 'kind = "toaster"', "devices[1].kind = 'toaster': must be one of 'meter'"),
    ('host = "127.0.0.1"', 'host = "meter.local"', "devices[1].host = 'meter.local': must be an IP address"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD_CASES, ids=[c[2].split(" =")[0] for c in BAD_CASES])
def test_bad_config_names_key_value_and_allowed(tmp_path: Path, old: str, new: str, message: str) -> None:
    path, _, _ = write_config(tmp_path)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(BenchConfigError) as info:
        load_bench_config(path)
    assert message in str(info.value)


def test_missing_port_and_map_file_are_all_reported_at_once(tmp_path: Path) -> None:
    data = {
        "devices": [
            {"name": "a", "protocol": "modbus-tcp", "map": "nope.toml"},
            {"name": "a", "protocol": "modbus-rtu", "bus": "x", "map": str(MAP_FILE)},
        ]
    }
    with pytest.raises(BenchConfigError) as info:
        parse_bench_config(data, tmp_path / "b.toml")
    keys = [i.key for i in info.value.issues]
    assert "devices[0].port" in keys and "devices[0].map" in keys
    assert "devices[1].name" in keys and "devices[1].bus" in keys


def test_missing_config_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(BenchConfigError, match="no such file"):
        load_bench_config(tmp_path / "absent.toml")


# --- the running bench -----------------------------------------------------------------------------------


def test_table_lists_every_device_with_its_address(tmp_path: Path) -> None:
    path, p1, p2 = write_config(tmp_path)
    table = Bench(load_bench_config(path)).table()
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "PROTOCOL", "ADDRESS", "UNIT", "MAP"]
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert set(rows) == {"sub", "feeder", "rtu-a", "rtu-b"}
    assert f"127.0.0.1:{p1}" in rows["sub"] and rows["sub"].split()[-2] == "1"
    assert f"127.0.0.1:{p2}" in rows["feeder"] and rows["feeder"].split()[-2] == "5"
    link = str(tmp_path / "run" / "bus1")
    for name, unit in (("rtu-a", "1"), ("rtu-b", "2")):
        assert f"{link} (bus1, 19200 8N1)" in rows[name] and rows[name].split()[-2] == unit
        assert "modbus-rtu" in rows[name]


@pytest.mark.integration
def test_bench_serves_tcp_and_rtu_meters_and_stop_cleans_up(tmp_path: Path) -> None:
    path, p1, p2 = write_config(tmp_path)
    cfg = load_bench_config(path)
    bus = cfg.bus("bus1")
    p_total = cfg.devices[0].register_map.point("p_total")
    model = cfg.devices[0].register_map.point("model")

    async def scenario() -> dict[str, int]:
        bench = Bench(cfg)
        await bench.start()
        pids = bench.socat_pids
        try:
            assert bus.link.exists() and bus.sim_path.exists()
            assert pid_alive(pids["bus1"])
            tcp = AsyncModbusTcpClient("127.0.0.1", port=p2, timeout=1, retries=0)
            rtu = AsyncModbusSerialClient(str(bus.link), baudrate=19200, timeout=0.5, retries=0)
            try:
                assert await tcp.connect() and await rtu.connect()
                rr = await tcp.read_input_registers(p_total.address, count=2, device_id=5)
                expected = bench.model_of("feeder").values(bench.sim_time)["p_total"]
                assert decode_point(p_total, rr.registers) == pytest.approx(expected, rel=1e-6)
                for name, unit in (("rtu-a", 1), ("rtu-b", 2)):
                    rr = await rtu.read_input_registers(p_total.address, count=2, device_id=unit)
                    expected = bench.model_of(name).values(bench.sim_time)["p_total"]
                    assert decode_point(p_total, rr.registers) == pytest.approx(expected, rel=1e-6)
                rr = await rtu.read_holding_registers(model.address, count=model.words, device_id=2)
                assert decode_point(model, rr.registers) == "SIM3P-120"
                # fault injection reaches the device through the bench
                bench.server_of("rtu-b").set_fault(2, "exception")
                rr = await rtu.read_holding_registers(0, count=2, device_id=2)
                assert rr.exception_code == 4
            finally:
                tcp.close()
                rtu.close()
        finally:
            await bench.stop()
        return pids

    pids = run(scenario())
    assert not pid_alive(pids["bus1"])
    assert not bus.link.exists() and not bus.link.is_symlink() and not bus.sim_path.is_symlink()
    assert port_is_free(p1) and port_is_free(p2)


@pytest.mark.integration
def test_speed_makes_the_simulated_clock_advance_faster(tmp_path: Path) -> None:
    path, p1, _ = write_config(tmp_path)
    cfg = load_bench_config(path)
    p_total = cfg.devices[0].register_map.point("p_total")

    async def scenario(speed: float) -> tuple[float, float, float]:
        bench = Bench(cfg, speed=speed)
        await bench.start()
        try:
            start = bench.sim_time
            await bench.run(seconds=0.5)
            client = AsyncModbusTcpClient("127.0.0.1", port=p1, timeout=1, retries=0)
            try:
                await client.connect()
                rr = await client.read_input_registers(p_total.address, count=2, device_id=1)
            finally:
                client.close()
            served = decode_point(p_total, rr.registers)
            return bench.sim_time - start, served, bench.model_of("sub").values(bench.sim_time)["p_total"]
        finally:
            await bench.stop()

    slow, _, _ = run(scenario(1.0))
    fast, served, expected = run(scenario(40.0))
    # 0.5 wall seconds: no 1-s step is due at speed 1; at speed 40 a step is due every 25 ms (~20 steps)
    assert slow == 0.0
    assert fast >= 5.0
    assert served == pytest.approx(expected, rel=1e-6)  # the server holds the values of the latest step


@pytest.mark.integration
@async_test
async def test_the_clock_does_not_go_back_when_a_run_ends_between_two_steps() -> None:
    text = f"""
[bench]
step_s = 0.1
start = "2026-06-01T00:00:00Z"
[[devices]]
name = "m"
map = "{ROOT / "config" / "maps" / "sim-meter.toml"}"
protocol = "modbus-tcp"
port = {free_port()}
"""
    bench = Bench(parse_bench_config(tomllib.loads(text), ROOT / "bench.toml"))
    await bench.start()
    try:
        readings = []

        async def read_late() -> None:
            await asyncio.sleep(0.14)  # between step 1 (0.1 s) and the run's end (0.15 s): paced past sim_time
            readings.append(bench.clock())

        reader = asyncio.create_task(read_late())
        await bench.run(seconds=0.15)
        await reader
        after = bench.clock()
        assert after >= readings[0]
        await bench.step_once()
        await bench.run(seconds=0.02)
        assert bench.clock() >= after
    finally:
        await bench.stop()


@pytest.mark.integration
def test_a_failed_start_cleans_up_socat(tmp_path: Path) -> None:
    path, p1, _ = write_config(tmp_path)
    cfg = load_bench_config(path)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", p1))
    blocker.listen()
    bench = Bench(cfg)

    async def scenario() -> None:
        with pytest.raises(BenchError, match=f"127.0.0.1:{p1}"):
            await bench.start()

    try:
        run(scenario())
    finally:
        blocker.close()
    assert bench.socat_pids == {}
    assert not cfg.bus("bus1").link.is_symlink()


@pytest.mark.integration
def test_a_stale_pty_link_is_replaced(tmp_path: Path) -> None:
    path, _, _ = write_config(tmp_path)
    cfg = load_bench_config(path)
    link = cfg.bus("bus1").link
    link.parent.mkdir(parents=True)
    link.symlink_to("/dev/pts/does-not-exist")  # left by a bench that was SIGKILLed

    async def scenario() -> None:
        bench = Bench(cfg)
        await bench.start()
        try:
            assert link.exists()  # now a live pty
        finally:
            await bench.stop()

    run(scenario())


# --- the CLI ---------------------------------------------------------------------------------------------


def test_cli_devices_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, p1, _ = write_config(tmp_path)
    assert main(["devices", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"127.0.0.1:{p1}" in out and "rtu-b" in out


@pytest.mark.integration
def test_cli_run_for_some_seconds_at_speed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, p1, _ = write_config(tmp_path)
    assert main(["run", "--config", str(path), "--speed", "50", "--seconds", "0.4"]) == 0
    out = capsys.readouterr().out
    assert f"127.0.0.1:{p1}" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("stopped steps=")
    fields = dict(kv.split("=") for kv in last.split()[1:])
    assert int(fields["steps"]) >= 5 and fields["speed"] == "50"
    assert port_is_free(p1)


def test_cli_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = write_config(tmp_path, extra='\n[[devices]]\nname = "x"\nprotocol = "modbus-tcp"\n')
    assert main(["devices", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "devices[4].port = (missing): is required" in err
    assert "devices[4].map = (missing): is required" in err


def test_cli_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert main(["run", "--config", "x.toml", "--speed", "-1"]) == 2
    assert main(["fly"]) == 2
    assert "--speed" in capsys.readouterr().err


@pytest.mark.integration
def test_sim_run_exits_0_on_sigterm(tmp_path: Path) -> None:
    path, p1, _ = write_config(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from sim_hw.cli import main; sys.exit(main(sys.argv[1:]))",
         "run", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(ROOT),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while port_is_free(p1):  # the bench is up when its first port listens
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the bench did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"stopped steps=" in out
    assert not (tmp_path / "run" / "bus1").is_symlink()
    assert port_is_free(p1)


def test_every_mistake_of_a_device_map_is_reported(tmp_path: Path) -> None:
    bad_map = tmp_path / "bad-map.toml"
    bad_map.write_text(
        'name = "m"\n[default]\nword_order = "little"\n'
        '[[points]]\nname = "v"\naddress = 0\ntype = "float31"\n'
        '[[points]]\nname = "i"\naddress = 2\ntype = "float32"\nscale = inf\n'
    )
    data = {"devices": [{"name": "a", "protocol": "modbus-tcp", "port": 15999, "map": str(bad_map)}]}
    with pytest.raises(BenchConfigError) as info:
        parse_bench_config(data, tmp_path / "b.toml")
    keys = [i.key for i in info.value.issues]
    # the misspelled [defaults], the unknown type and the infinite scale: three issues, not only the first
    assert sum("map(bad-map.toml)" in k for k in keys) == 3, keys
    assert any(k.endswith("default") for k in keys) and any(k.endswith("points[0].type") for k in keys), keys
    assert any(k.endswith("points[1].scale") for k in keys), keys


# --- two benches on one machine: each owns only the pty links it made ------------------------------------


def _start_bench_process(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``gridedge sim run --config CONFIG`` as a user starts it, in its own process group."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gridedge", "sim", "run", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)  # fmt: skip


def _stop_bench_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _socat_child_of(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    socats = [int(c) for c in children if Path(f"/proc/{c}/comm").read_text().strip() == "socat"]
    assert len(socats) == 1, f"bench {pid} children: {children}"
    return socats[0]


def _wait_up(proc: subprocess.Popen[bytes], port: int, links: tuple[Path, ...], log: Path) -> None:
    deadline = time.monotonic() + 60
    while port_is_free(port) or not all(link.exists() for link in links):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"the bench did not start: {log.read_text()}"
        time.sleep(0.05)


async def _read_rtu_unit(link: Path, unit: int, p_total: RegisterPoint) -> float:
    client = AsyncModbusSerialClient(str(link), baudrate=19200, timeout=1, retries=1)
    try:
        assert await client.connect()
        rr = await client.read_input_registers(p_total.address, count=2, device_id=unit)
        assert not rr.isError(), rr
        return decode_point(p_total, rr.registers)
    finally:
        client.close()


@pytest.mark.integration
def test_a_second_bench_on_the_same_rs485_line_refuses_and_leaves_the_running_benchs_links(tmp_path: Path) -> None:
    """A bench whose pty link belongs to a live socat of a running bench fails with a message naming the link and
    its holder, and the running bench keeps its links (the agent reading them keeps its RTU devices)."""
    path, p1, _ = write_config(tmp_path)
    cfg = load_bench_config(path)
    bus, p_total = cfg.bus("bus1"), cfg.devices[0].register_map.point("p_total")
    first = _start_bench_process(path, tmp_path / "first.log")
    try:
        _wait_up(first, p1, (bus.link, bus.sim_path), tmp_path / "first.log")
        before = (os.readlink(bus.link), os.readlink(bus.sim_path))
        socat = _socat_child_of(first.pid)
        second = subprocess.run(
            [sys.executable, "-m", "gridedge", "sim", "run", "--config", str(path), "--seconds", "3"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert second.returncode == 1, second.stderr
        assert "Traceback" not in second.stderr
        assert f"{bus.sim_path}" in second.stderr or f"{bus.link}" in second.stderr
        assert f"socat pid {socat}" in second.stderr and f"pid {first.pid}" in second.stderr
        assert (os.readlink(bus.link), os.readlink(bus.sim_path)) == before
        assert first.poll() is None
        assert run(_read_rtu_unit(bus.link, 1, p_total)) != 0.0  # the running bench still answers on its line
    finally:
        _stop_bench_process(first)


@pytest.mark.integration
def test_a_bench_whose_port_is_taken_removes_only_the_links_it_made(tmp_path: Path) -> None:
    """A bench that fails to start (a TCP port taken by a running bench) removes its own pty links on its way out
    and touches no other bench's."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path_a, p1, p2 = write_config(tmp_path / "a")
    path_b = tmp_path / "b" / "bench.toml"
    path_b.write_text(path_a.read_text())  # the same ports, its own pty link (b/run/bus1)
    bus_a, bus_b = load_bench_config(path_a).bus("bus1"), load_bench_config(path_b).bus("bus1")
    first = _start_bench_process(path_a, tmp_path / "first.log")
    try:
        _wait_up(first, p1, (bus_a.link, bus_a.sim_path), tmp_path / "first.log")
        before = (os.readlink(bus_a.link), os.readlink(bus_a.sim_path))
        second = subprocess.run(
            [sys.executable, "-m", "gridedge", "sim", "run", "--config", str(path_b), "--seconds", "3"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert second.returncode == 1, second.stderr
        assert f"127.0.0.1:{p1}" in second.stderr
        assert not bus_b.link.is_symlink() and not bus_b.sim_path.is_symlink()  # its own, removed
        assert (os.readlink(bus_a.link), os.readlink(bus_a.sim_path)) == before  # the other's, untouched
    finally:
        _stop_bench_process(first)


@pytest.mark.integration
def test_stop_leaves_a_link_that_no_longer_points_at_the_benchs_pty(tmp_path: Path) -> None:
    """stop() removes a pty link only while it still points at the pty this bench's socat made."""
    path, _, _ = write_config(tmp_path)
    cfg = load_bench_config(path)
    link = cfg.bus("bus1").link
    master, slave = os.openpty()  # another program's pty, now behind the link

    async def scenario() -> None:
        bench = Bench(cfg)
        await bench.start()
        try:
            link.unlink()
            link.symlink_to(os.ttyname(slave))
        finally:
            await bench.stop()

    try:
        run(scenario())
        assert link.is_symlink() and os.readlink(link) == os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.integration
def test_a_link_to_a_pty_no_socat_claims_is_replaced(tmp_path: Path) -> None:
    """A link left behind whose pty number was handed to another program since (no socat claims the link) is
    stale: the bench replaces it."""
    path, _, _ = write_config(tmp_path)
    cfg = load_bench_config(path)
    link = cfg.bus("bus1").link
    link.parent.mkdir(parents=True)
    master, slave = os.openpty()
    link.symlink_to(os.ttyname(slave))

    async def scenario() -> None:
        bench = Bench(cfg)
        await bench.start()
        try:
            assert os.readlink(link) != os.ttyname(slave)
        finally:
            await bench.stop()

    try:
        run(scenario())
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.integration
def test_after_a_bench_is_killed_the_next_one_starts_on_its_line(tmp_path: Path) -> None:
    """socat dies with the bench that started it: a bench killed with SIGKILL leaves dangling links, not a socat
    holding them, and the next bench on the same config starts."""
    path, p1, _ = write_config(tmp_path)
    bus = load_bench_config(path).bus("bus1")
    first = _start_bench_process(path, tmp_path / "first.log")
    try:
        _wait_up(first, p1, (bus.link, bus.sim_path), tmp_path / "first.log")
        socat = _socat_child_of(first.pid)
        os.kill(first.pid, signal.SIGKILL)  # the bench alone, not its group: no chance to stop its socat
        first.wait(10)
        deadline = time.monotonic() + 10
        while pid_alive(socat) and Path(f"/proc/{socat}/stat").read_text().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline, "socat outlived its bench"
            time.sleep(0.05)
    finally:
        _stop_bench_process(first)
    second = _start_bench_process(path, tmp_path / "second.log")
    try:
        _wait_up(second, p1, (bus.link, bus.sim_path), tmp_path / "second.log")
    finally:
        _stop_bench_process(second)
    assert not bus.link.is_symlink() and not bus.sim_path.is_symlink()
