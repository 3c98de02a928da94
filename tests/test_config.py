"""Configuration: a good file loads into typed values; each kind of bad value has its own clear error
naming the key path, the value and what is allowed; `gridedge check-config` lists them all."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, override_broker
from protocols.modbus.registermap import DataType, Order, PointKind, Table

MAP = """
name = "test-meter"
[defaults]
table = "holding"
[[points]]
name = "v_a"
address = 0
type = "float32"
unit = "V"
[[points]]
name = "energy_wh"
address = 10
type = "uint32"
word_order = "little"
kind = "energy"
unit = "Wh"
[[points]]
name = "model"
table = "input"
address = 20
type = "string"
length = 4
"""

GOOD = """
site_id = "feeder-7"
[store]
path = "data/agent.db"
max_mb = 64
[uplink]
broker = "mqtt://127.0.0.1:1884"
username = "edge"
password = "secret"
[[devices]]
name = "meter1"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = 5020
unit_id = 1
poll_interval_s = 0.5
map = "maps/meter.toml"
[[devices]]
name = "meter2"
protocol = "modbus-rtu"
serial_port = "/dev/ttyUSB0"
baudrate = 9600
parity = "E"
unit_id = 7
map = "maps/meter.toml"
"""


def write(tmp_path: Path, text: str, map_text: str = MAP) -> Path:
    (tmp_path / "maps").mkdir(exist_ok=True)
    (tmp_path / "maps" / "meter.toml").write_text(map_text)
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def issues_of(tmp_path: Path, text: str, map_text: str = MAP) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text, map_text))
    return {i.key: str(i) for i in info.value.issues}


def test_good_config_loads_typed_values(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.site_id == "feeder-7"
    assert cfg.store.path == tmp_path / "data" / "agent.db"
    assert cfg.store.max_bytes == 64 * 1024 * 1024
    assert (cfg.uplink.broker.host, cfg.uplink.broker.port, cfg.uplink.broker.tls) == ("127.0.0.1", 1884, False)
    assert cfg.uplink.broker.client_id == "gridedge-feeder-7"
    tcp, rtu = cfg.devices
    assert (tcp.host, tcp.port, tcp.unit_id, tcp.poll_interval_s) == ("127.0.0.1", 5020, 1, 0.5)
    assert rtu.serial is not None
    assert (rtu.serial.port, rtu.serial.baudrate, rtu.serial.parity) == ("/dev/ttyUSB0", 9600, "E")
    # one map file serves every meter of the model
    assert tcp.register_map == rtu.register_map
    energy = tcp.register_map.point("energy_wh")
    assert (energy.dtype, energy.word_order, energy.kind, energy.words) == (
        DataType.UINT32,
        Order.LITTLE,
        PointKind.ENERGY,
        2,
    )
    model = tcp.register_map.point("model")
    assert (model.table, model.words) == (Table.INPUT, 4)


@pytest.mark.parametrize(
    ("old", "new", "key", "fragment"),
    [
        ('site_id = "feeder-7"', 'site_id = "feeder 7!"', "site_id", "letters, digits"),
        ('protocol = "modbus-tcp"', 'protocol = "bacnet"', "devices[0].protocol", "'modbus-tcp', 'modbus-rtu'"),
        ("port = 5020", "port = 70000", "devices[0].port", "1..65535"),
        ("port = 5020", 'port = "5020"', "devices[0].port", "must be an integer"),
        ("baudrate = 9600", "baudrate = 9601", "devices[1].baudrate", "9600"),
        ('parity = "E"', 'parity = "X"', "devices[1].parity", "'N', 'E', 'O'"),
        ("unit_id = 7", "unit_id = 0", "devices[1].unit_id", "1..247"),
        ("poll_interval_s = 0.5", "poll_interval_s = -1", "devices[0].poll_interval_s", "0.01.."),
        ('broker = "mqtt://127.0.0.1:1884"', 'broker = "http://x"', "uplink.broker", "mqtt://host"),
        ("max_mb = 64", "max_mb = 0", "store.max_mb", "1.."),
        ('host = "127.0.0.1"', 'hostname = "127.0.0.1"', "devices[0].hostname", "unknown key"),
        ('map = "maps/meter.toml"\n[[devices]]', 'map = "maps/nope.toml"\n[[devices]]', "devices[0].map", "no such"),
    ],
)
def test_each_bad_value_names_its_key_and_what_is_allowed(
    tmp_path: Path, old: str, new: str, key: str, fragment: str
) -> None:
    assert old in GOOD
    found = issues_of(tmp_path, GOOD.replace(old, new, 1))
    assert key in found, found
    assert fragment in found[key]


@pytest.mark.parametrize(
    ("old", "new", "key", "fragment"),
    [
        ('type = "float32"', 'type = "float16"', ".points[0].type", "'float32'"),
        ("address = 0", "address = 70000", ".points[0].address", "0..65535"),
        ("length = 4", "length = 0", ".points[2].length", "1..125"),
        ('kind = "energy"', 'kind = "money"', ".points[1].kind", "'telemetry', 'energy'"),
        ('word_order = "little"', 'word_order = "middle"', ".points[1].word_order", "'big', 'little'"),
        ('table = "input"', 'table = "eeprom"', ".points[2].table", "'holding'"),
    ],
)
def test_register_map_errors_name_the_file_and_point(
    tmp_path: Path, old: str, new: str, key: str, fragment: str
) -> None:
    found = issues_of(tmp_path, GOOD, MAP.replace(old, new, 1))
    # both devices use the map, so both report it, each under its own key path
    assert f"devices[0].map(meter.toml){key}" in found
    assert f"devices[1].map(meter.toml){key}" in found
    assert fragment in found[f"devices[0].map(meter.toml){key}"]


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    bad = (
        GOOD.replace("port = 5020", "port = 0")
        .replace('parity = "E"', 'parity = "Q"')
        .replace("max_mb = 64", "max_mb = -5")
    )
    found = issues_of(tmp_path, bad)
    assert {"devices[0].port", "devices[1].parity", "store.max_mb"} <= set(found)


def test_missing_required_keys_and_duplicate_device_names(tmp_path: Path) -> None:
    text = GOOD.replace('site_id = "feeder-7"\n', "").replace('name = "meter2"', 'name = "meter1"')
    found = issues_of(tmp_path, text)
    assert "(missing)" in found["site_id"]
    assert "unique" in found["devices[1].name"]


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    found = issues_of(tmp_path, "site_id = [unclosed")
    assert "not valid TOML" in found["(file)"]
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_broker_override_from_the_command_line(tmp_path: Path) -> None:
    cfg = override_broker(load_config(write(tmp_path, GOOD)), "mqtts://broker.example:9999")
    assert (cfg.uplink.broker.host, cfg.uplink.broker.port, cfg.uplink.broker.tls) == ("broker.example", 9999, True)
    with pytest.raises(ConfigError, match="--broker"):
        override_broker(cfg, "tcp://nowhere")


@pytest.mark.integration
def test_check_config_command_lists_errors_and_exits_nonzero(tmp_path: Path) -> None:
    bad = write(tmp_path, GOOD.replace("port = 5020", "port = 0").replace('parity = "E"', 'parity = "Q"'))
    proc = subprocess.run([sys.executable, "-m", "gridedge", "check-config", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "devices[0].port = 0: must be in 1..65535" in proc.stderr
    assert "devices[1].parity = 'Q': must be one of 'N', 'E', 'O'" in proc.stderr
    good = write(tmp_path, GOOD)
    proc = subprocess.run([sys.executable, "-m", "gridedge", "check-config", str(good)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "meter2" in proc.stdout and "ok" in proc.stdout


@pytest.mark.integration
def test_check_config_lists_pmu_and_waveform_streams_one_line_each(tmp_path: Path) -> None:
    streams = (
        GOOD
        + """
[[pmus]]
name = "pmu-sub1"
host = "10.0.0.9"
port = 4713
idcode = 7
udp_port = 4714
nominal_v = 7200
[[waveforms]]
name = "pq-lv"
host = "127.0.0.1"
port = 14800
nominal_hz = 50
udin_v = 230
[[waveforms]]
name = "pq-us"
host = "10.0.0.10"
port = 14801
nominal_hz = 60
udin_v = 120
lamp_v = 230
compliance = ["ieee519", "en50160-lv"]
bus_kv = 0.48
[[waveforms]]
name = "pq-none"
host = "10.0.0.11"
port = 14802
nominal_hz = 60
udin_v = 7967
channels = ["va"]
compliance = []
"""
    )
    proc = subprocess.run([sys.executable, "-m", "gridedge", "check-config", str(write(tmp_path, streams))],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert "2 device(s)" in proc.stdout and "1 PMU stream(s), 3 waveform stream(s)" in proc.stdout, proc.stdout
    pmu = lines["pmu-sub1"]
    assert "10.0.0.9:4713" in pmu and "idcode 7" in pmu and "CFG-2" in pmu and "UDP port 4714" in pmu, pmu
    assert "nominal 7200 V" in pmu, pmu
    lv = lines["pq-lv"]
    # defaults: the 230 V lamp at 50 Hz; EN 50160 LV for 230 x sqrt 3 = 398 V
    assert "127.0.0.1:14800" in lv and "50 Hz" in lv and "lamp 230 V" in lv and "Udin 230 V" in lv, lv
    assert lv.endswith("compliance en50160-lv"), lv
    us = lines["pq-us"]
    assert "10.0.0.10:14801" in us and "60 Hz" in us and "lamp 230 V" in us, us
    assert us.endswith("compliance ieee519, en50160-lv (bus 0.480 kV)"), us
    # no compliance; Udin 7967 V x sqrt 3 = 13.8 kV would be the IEEE 519 bus
    assert lines["pq-none"].endswith("Udin 7967 V, va, compliance none"), lines["pq-none"]


# ---- each subsystem parses its own section ------------------------------------------------------------------

PMU_AND_PAIR = """
[[pmus]]
name = "sub-pmu"
host = "10.0.0.9"
port = 70000
idcode = 7
[[pmus]]
name = "feeder-pmu"
host = "10.0.0.10"
idcode = 8
[[pmu_monitoring.angle_pairs]]
pmu_a = "sub-pmu"
pmu_b = "feeder-pmu"
phasor = "VA"
limit_deg = 20.0
"""


@pytest.mark.integration
def test_a_pmu_with_errors_of_its_own_does_not_fail_the_angle_pairs_naming_it(tmp_path: Path) -> None:
    site = write(tmp_path, GOOD + PMU_AND_PAIR)
    proc = subprocess.run([sys.executable, "-m", "gridedge", "check-config", str(site)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout
    assert "1 configuration error(s)" in proc.stderr, proc.stderr
    assert "pmus[0].port = 70000: must be in 1..65535" in proc.stderr
    assert "angle_pairs" not in proc.stderr, proc.stderr


def test_an_angle_pair_naming_no_pmu_at_all_is_still_refused(tmp_path: Path) -> None:
    found = issues_of(tmp_path, GOOD + PMU_AND_PAIR.replace('pmu_a = "sub-pmu"', 'pmu_a = "nope"'))
    assert set(found) == {"pmus[0].port", "pmu_monitoring.angle_pairs[0].pmu_a"}, found
    assert "must name a [[pmus]] entry" in found["pmu_monitoring.angle_pairs[0].pmu_a"]


def test_pmu_and_pq_never_import_agent_config() -> None:
    """The arrows point one way: agent/config.py composes the subsystems' config modules, never the reverse."""
    root = Path(__file__).resolve().parent.parent / "agent"
    offenders = []
    for path in sorted([*root.joinpath("pmu").rglob("*.py"), *root.joinpath("pq").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n == "agent.config" or n.startswith("agent.config.") for n in names):
                offenders.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    assert offenders == []


@pytest.mark.integration
def test_a_site_without_waveforms_loads_without_numpy(tmp_path: Path) -> None:
    """The PQ section's parser imports the PQ science (numpy, scipy) only for a [[waveforms]] entry."""
    site = write(tmp_path, GOOD + PMU_AND_PAIR.replace("port = 70000", "port = 4712"))
    code = ("import sys; from agent.config import load_config; cfg = load_config(sys.argv[1]); "
            "assert cfg.pmus and not cfg.waveforms; print(sorted(m for m in ('numpy', 'scipy') if m in sys.modules))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.integration
def test_the_demo_site_with_its_waveform_stream_loads_without_numpy() -> None:
    """The [[waveforms]] checks build the event thresholds and name the standards without the PQ chain: numpy and
    scipy are the PQ worker's (its own process), never the agent's (about 12 MB of its memory, benchmarks/memory.py)."""
    site = Path(__file__).resolve().parent.parent / "config" / "agent-sim.toml"
    code = ("import sys; from agent.config import load_config; cfg = load_config(sys.argv[1]); "
            "assert cfg.waveforms; print(sorted(m for m in ('numpy', 'scipy') if m in sys.modules))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---- the site template ----------------------------------------------------------------------------------------

TEMPLATE = Path(__file__).resolve().parent.parent / "config" / "site-template.toml"


@pytest.mark.integration
def test_the_site_template_fails_only_for_the_files_still_to_be_created() -> None:
    proc = subprocess.run([sys.executable, "-m", "gridedge", "check-config", str(TEMPLATE)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line.strip() for line in proc.stderr.splitlines()[1:]]
    assert [e.split(" = ")[0] for e in errors] == ["uplink.password_file", "uplink.ca_file"], proc.stderr
    assert "create it holding the broker password" in errors[0], errors
    assert "create it with the PEM certificate of the authority (CA)" in errors[1], errors


@pytest.mark.integration
def test_the_site_templates_optional_examples_are_valid_once_uncommented(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "mqtt-password").write_text("s3cret\n")
    (etc / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    maps = TEMPLATE.parent / "maps"
    text = TEMPLATE.read_text().replace("/etc/gridedge/", f"{etc}/").replace("/var/lib/gridedge/", f"{tmp_path}/")
    text = text.replace('map = "maps/', f'map = "{maps}/')
    # "#key" is an example to uncomment; "# text" stays a comment
    uncommented = "\n".join(line[1:] if re.match(r"#[\[a-z]", line) else line for line in text.splitlines())
    site = tmp_path / "site.toml"
    site.write_text(uncommented)
    cfg = load_config(site)
    assert [p.name for p in cfg.pmus] == ["sub_pmu", "feeder_pmu"] and cfg.pmus[0].udp_port is None
    assert [(a.pmu_a, a.pmu_b) for a in cfg.pmu_monitoring.angle_pairs] == [("sub_pmu", "feeder_pmu")]
    assert [(w.name, w.compliance, w.bus_kv) for w in cfg.waveforms] == [("feeder_pq", ("ieee519",), 12.47)]
    proc = subprocess.run([sys.executable, "-m", "gridedge", "check-config", str(site)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "2 PMU stream(s), 1 waveform stream(s)" in proc.stdout and proc.stderr == ""


def test_the_site_template_links_the_register_map_format() -> None:
    assert "docs/registermap.md" in TEMPLATE.read_text()
    assert (TEMPLATE.parent.parent / "docs" / "registermap.md").is_file()
