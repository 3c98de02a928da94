"""The site file as a file: bad encodings, a byte-order mark, TOML syntax errors and a folder in its place are
errors naming line and column; so are register maps that are not UTF-8 or TOML; store paths are checked. Both
commands (`gridedge check-config`, `gridedge run`) refuse a bad file with every error (exit 2, no traceback), and
the shipped examples validate."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.processes import run_gridedge
from helpers.site import edit, issues, site

from agent.config import load_config

# ---- the file itself -----------------------------------------------------------------------------------------


def test_a_file_that_is_not_utf8_is_a_config_error_naming_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(b'site_id = "s1"\n# caf\xe9 in Latin-1\n')
    found = issues(path)
    # the bad byte is the 5th of line 2 (0xe9, after "# caf")
    assert "not UTF-8" in found["(file)"] and "line 2, column 6" in found["(file)"], found


def test_a_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    found = issues(site(tmp_path, edit("port = 502", "port = 5 02")))
    assert found["(file)"].endswith("not valid TOML: Expected newline or end of document after a statement "
                                    "(at line 11, column 10)"), found  # fmt: skip


def test_a_utf8_byte_order_mark_is_named(tmp_path: Path) -> None:
    path = site(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert "byte-order mark" in issues(path)["(file)"]


def test_a_folder_given_as_the_file_is_a_config_error(tmp_path: Path) -> None:
    assert issues(tmp_path)["(file)"].endswith(": is a folder, not a file")


def test_a_register_map_not_utf8_or_not_toml_is_an_error_of_that_device(tmp_path: Path) -> None:
    path = site(tmp_path)
    (tmp_path / "m.toml").write_bytes(b'name = "m\xff"\n')
    found = issues(path)
    assert "not UTF-8" in found["devices[0].map"] and "line 1, column 10" in found["devices[0].map"], found
    (tmp_path / "m.toml").write_text("name = \n")
    found = issues(path)
    assert "not valid TOML" in found["devices[3].map"] and "line 1" in found["devices[3].map"], found


# ---- the store path ------------------------------------------------------------------------------------------


def test_a_store_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "db" / "agent.db").mkdir(parents=True)
    found = issues(site(tmp_path))
    assert found["store.path"].startswith(f"store.path = '{tmp_path}/db/agent.db': ")
    assert "is a folder" in found["store.path"]


def test_a_store_path_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("not a folder")
    assert "is not a folder" in issues(site(tmp_path))["store.path"]


def test_a_store_folder_that_does_not_exist_yet_is_fine(tmp_path: Path) -> None:
    # the agent creates it at start (agent/service.py)
    assert load_config(site(tmp_path)).store.path == tmp_path / "db" / "agent.db"


# ---- the commands --------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("command", [("check-config",), ("run", "--config")])
def test_both_commands_refuse_a_bad_file_with_every_error_and_no_traceback(tmp_path: Path, command: tuple) -> None:
    text = edit("port = 502", "port = 0").replace('parity = "E"', 'parity = "Q"', 1)
    proc = run_gridedge(*command, str(site(tmp_path, text)))
    assert proc.returncode == 2
    assert "2 configuration error(s)" in proc.stderr, proc.stderr
    assert "devices[0].port = 0: must be in 1..65535" in proc.stderr
    assert "devices[2].parity = 'Q': must be one of 'N', 'E', 'O'" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.integration
@pytest.mark.parametrize("command", [("check-config",), ("run", "--config")])
def test_both_commands_refuse_a_non_utf8_file_without_a_traceback(tmp_path: Path, command: tuple) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(b"site_id = '\xff'\n")
    proc = run_gridedge(*command, str(path))
    assert proc.returncode == 2
    assert "not UTF-8" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# ---- the shipped examples ------------------------------------------------------------------------------------


def test_the_demo_agent_config_validates(repo_root: Path) -> None:
    cfg = load_config(repo_root / "config" / "agent-sim.toml")
    assert cfg.site_id == "sim-substation" and cfg.devices


def test_the_site_template_only_lacks_the_real_sites_files(repo_root: Path) -> None:
    # on a development machine the template's secrets and CA are absent; nothing else may be wrong
    found = issues(repo_root / "config" / "site-template.toml")
    assert set(found) == {"uplink.password_file", "uplink.ca_file"}, found


@pytest.mark.integration
def test_the_site_template_validates_where_its_files_exist(tmp_path: Path, repo_root: Path) -> None:
    template = (repo_root / "config" / "site-template.toml").read_text()
    assert "/etc/gridedge/" in template and "/var/lib/gridedge/" in template
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "mqtt-password").write_text("s3cret\n")
    (etc / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    text = template.replace("/etc/gridedge/", f"{etc}/").replace("/var/lib/gridedge/", f"{tmp_path}/var/")
    text = text.replace('map = "maps/', f'map = "{repo_root}/config/maps/')  # its maps are relative to config/
    path = tmp_path / "site.toml"
    path.write_text(text)
    cfg = load_config(path)
    broker = cfg.uplink.broker
    assert broker.password == "s3cret" and broker.tls and broker.ca_file == etc / "ca.pem"
    assert {d.protocol for d in cfg.devices} == {"modbus-tcp", "modbus-rtu"}
    proc = run_gridedge("check-config", str(repo_root / "config" / "site-template.toml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
