"""``[metrics]`` in the site file and in central's config: checked like every section (each error names the key,
the value and what is allowed), and the metric tables documented in docs/metrics.md."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from helpers.processes import run_gridedge
from helpers.site import SITE, issues, site

from agent.config import load_config
from agent.metrics import SPECS as AGENT_SPECS
from central.config import CentralConfigError, parse_central_config
from central.metrics import SPECS as CENTRAL_SPECS
from protocols.configcheck import Checker
from protocols.metrics import parse_listen, parse_metrics

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9108", ("127.0.0.1", 9108)),
        ("localhost:1", ("localhost", 1)),
        ("mgmt-01.sub.example:65535", ("mgmt-01.sub.example", 65535)),
        ("[::1]:9108", ("::1", 9108)),
        ("0.0.0.0:9108", ("0.0.0.0", 9108)),
        ("127.0.0.1", None),  # no port
        ("127.0.0.1:0", None),  # a port the operator cannot point Prometheus at
        ("127.0.0.1:65536", None),
        ("127.0.0.1:http", None),
        ("::1:9108", None),  # IPv6 without brackets: where does the address end?
        ("[::g]:9108", None),
        ("[127.0.0.1]:9108", None),
        ("300.1.2.3:9108", None),
        (":9108", None),
        ("host name:9108", None),
        ("http://127.0.0.1:9108", None),
        ("-bad.example:9108", None),
    ],
)
def test_listen_is_host_colon_port(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(text) == expected


def test_the_site_file_s_metrics_section_is_read(tmp_path: Path) -> None:
    cfg = load_config(site(tmp_path, SITE + '[metrics]\nlisten = "[::1]:9108"\n'))
    assert cfg.metrics is not None and (cfg.metrics.host, cfg.metrics.port) == ("::1", 9108)
    assert cfg.metrics.listen == "[::1]:9108"
    assert load_config(site(tmp_path)).metrics is None  # absent: off


@pytest.mark.parametrize(
    ("section", "key", "shown", "allowed"),
    [
        ('listen = "127.0.0.1"', "metrics.listen", "'127.0.0.1'", "must be host:port"),
        ('listen = "127.0.0.1:99999"', "metrics.listen", "'127.0.0.1:99999'", "port 1..65535"),
        ("listen = 9108", "metrics.listen", "9108", "must be host:port"),
        ("", "metrics.listen", "(missing)", "is required when [metrics] is given"),
        ('listen = "127.0.0.1:9108"\nport = 9108', "metrics.port", "9108", "unknown key; allowed: listen"),
    ],
)
def test_a_bad_metrics_section_names_the_key_the_value_and_what_is_allowed(
    tmp_path: Path, section: str, key: str, shown: str, allowed: str
) -> None:
    found = issues(site(tmp_path, SITE + f"[metrics]\n{section}\n"))
    assert list(found) == [key], found
    assert found[key].startswith(f"{key} = {shown}: ") and allowed in found[key], found[key]


def test_metrics_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    found = issues(site(tmp_path, 'metrics = "127.0.0.1:9108"\n' + SITE))
    assert found == {"metrics": "metrics = '127.0.0.1:9108': must be a table"}


def test_listening_on_every_interface_is_a_warning_not_an_error() -> None:
    c = Checker(Path("."))
    cfg = parse_metrics(c, {"listen": "0.0.0.0:9108"})
    assert cfg is not None and c.issues == []
    assert [w.key for w in c.warnings] == ["metrics.listen"] and "without authentication" in c.warnings[0].allowed


@pytest.mark.integration
def test_check_config_lists_every_metrics_error_and_exits_2(tmp_path: Path) -> None:
    path = site(tmp_path, SITE + '[metrics]\nlisten = "localhost"\nlisen = "x"\n')
    proc = run_gridedge("check-config", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "metrics.listen = 'localhost': must be host:port" in proc.stderr
    assert "metrics.lisen = 'x': unknown key; allowed: listen" in proc.stderr


@pytest.mark.integration
def test_check_config_shows_the_every_interface_warning_and_passes(tmp_path: Path) -> None:
    path = site(tmp_path, SITE + '[metrics]\nlisten = "0.0.0.0:9108"\n')
    proc = run_gridedge("check-config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "metrics.listen = '0.0.0.0:9108'" in proc.stdout + proc.stderr


def _central(raw_metrics: object) -> dict:
    return {"broker": {"url": "mqtt://127.0.0.1:1883"}, "store": {"db": "c.db"}, "metrics": raw_metrics}


def test_central_s_metrics_section_is_read_and_checked(tmp_path: Path) -> None:
    cfg = parse_central_config(_central({"listen": "127.0.0.1:9109"}), tmp_path / "central.toml")
    assert cfg.metrics is not None and cfg.metrics.listen == "127.0.0.1:9109"
    with pytest.raises(CentralConfigError) as info:
        parse_central_config(_central({"listen": "127.0.0.1:port"}), tmp_path / "central.toml")
    assert [str(i) for i in info.value.issues] == [
        'metrics.listen = \'127.0.0.1:port\': must be host:port, e.g. "127.0.0.1:9108" (IPv6: "[::1]:9108"), '
        "port 1..65535"
    ]


def test_the_shipped_central_config_example_is_valid_once_uncommented(tmp_path: Path) -> None:
    text = (ROOT / "config" / "central.toml").read_text()
    block = re.search(r"^# \[metrics\]\n# listen = \"([^\"]+)\"", text, re.M)
    assert block is not None, "config/central.toml shows a [metrics] example"
    cfg = parse_central_config(_central({"listen": block.group(1)}), tmp_path / "central.toml")
    assert cfg.metrics is not None


# ---- the documentation and the cost of an agent without metrics ------------------------------------------------


def _documented() -> set[str]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `(gridedge_[a-z0-9_]+)`", text, re.M))


def test_every_metric_is_documented_and_every_documented_one_exists() -> None:
    documented = _documented()
    exposed = set(AGENT_SPECS) | set(CENTRAL_SPECS)
    assert exposed - documented == set(), "add a row to docs/metrics.md for each"
    assert documented - exposed == set(), "docs/metrics.md names metrics no program exposes"


def test_metric_names_follow_prometheus_conventions() -> None:
    for name, spec in {**AGENT_SPECS, **CENTRAL_SPECS}.items():
        assert re.fullmatch(r"gridedge_(agent|central)_[a-z][a-z0-9_]*", name), name
        assert (spec.kind == "counter") == name.endswith("_total"), f"{name}: counters, and only they, end in _total"
        assert not name.endswith(("_ms", "_kb", "_mb", "_pct", "_percent")), f"{name}: base units (seconds, bytes)"


@pytest.mark.parametrize("module", ["protocols/metrics.py", "agent/metrics.py", "agent/service.py", "agent/config.py"])
def test_prometheus_client_is_imported_only_where_metrics_are_served(module: str) -> None:
    # an agent without [metrics] must not pay for the client's import (the agent's memory target on a Pi)
    tree = ast.parse((ROOT / module).read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.startswith("prometheus_client")], names


# ---- the Grafana dashboard -------------------------------------------------------------------------------------

DASHBOARD = ROOT / "config" / "grafana" / "gridedge.json"


def _queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def test_the_dashboard_queries_only_metrics_the_programs_expose() -> None:
    used = {m for q in _queries() for m in re.findall(r"gridedge_[a-z0-9_]+", q)}
    assert used - (set(AGENT_SPECS) | set(CENTRAL_SPECS)) == set()
    main = {"gridedge_agent_readings_taken_total", "gridedge_agent_backlog_items", "gridedge_agent_mqtt_connected",
            "gridedge_agent_device_up", "gridedge_agent_store_used_ratio", "gridedge_agent_pq_signal_seconds_total",
            "gridedge_agent_control_decisions_total", "gridedge_central_messages_stored_total",
            "gridedge_central_site_lag_seconds", "gridedge_central_site_gap_messages",
            "gridedge_central_messages_refused_total"}  # fmt: skip
    assert main - used == set(), "the dashboard shows the main figures"


def test_the_dashboard_is_importable_its_panels_on_the_grid_without_overlap() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and doc["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for p in doc["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for cx in range(g["x"], g["x"] + g["w"]):
            for cy in range(g["y"], g["y"] + g["h"]):
                assert (cx, cy) not in cells, f"{p['title']} overlaps panel {cells[(cx, cy)]}"
                cells[(cx, cy)] = p["id"]
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
