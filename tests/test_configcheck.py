"""The shared configuration checker: each kind, bounds, choices, unknown keys, arrays of tables, paths, broker
URLs, and passwords that never appear in clear in an issue, an error or a log line."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import agent.config
import central.config
import sim_hw.config
from protocols.configcheck import MISSING, Checker, ConfigError, ConfigIssue
from protocols.mqtt.config import BrokerUrl, broker_url, tls_files


def checker(tmp_path: Path | None = None) -> Checker:
    return Checker(tmp_path or Path("/etc/gridedge"))


def only_issue(c: Checker) -> ConfigIssue:
    assert len(c.issues) == 1, c.issues
    return c.issues[0]


# ---- ConfigIssue and ConfigError --------------------------------------------------------------------------


def test_issue_reads_key_value_allowed() -> None:
    assert str(ConfigIssue("store.max_mb", 0, "must be in 1..inf")) == "store.max_mb = 0: must be in 1..inf"
    assert str(ConfigIssue("site_id", MISSING, "is required (string)")) == "site_id = (missing): is required (string)"


@pytest.mark.parametrize("key", ["password", "uplink.password", "broker.password", "devices[0].admin_password"])
def test_password_values_are_masked_in_str_repr_and_error(key: str) -> None:
    issue = ConfigIssue(key, "hunter2-secret", "a password needs a username")
    assert str(issue) == f"{key} = '***': a password needs a username"
    assert "hunter2" not in repr(issue)
    assert issue.value == "***"
    err = ConfigError("site.toml", [issue])
    assert "hunter2" not in str(err) and "hunter2" not in repr(err.issues)


def test_masking_covers_wrong_types_but_not_a_missing_password_or_password_file() -> None:
    assert str(ConfigIssue("broker.password", 12345, "must be a string")) == "broker.password = '***': must be a string"
    assert str(ConfigIssue("broker.password", MISSING, "is required")) == "broker.password = (missing): is required"
    # the path of a password file is not a secret: the operator needs it to find the file
    assert "'/etc/x.pass'" in str(ConfigIssue("uplink.password_file", "/etc/x.pass", "no such file"))


def test_checker_issues_for_a_password_are_masked() -> None:
    c = checker()
    c.get({"password": ""}, "broker", "password", "string")
    c.unknown({"password": "typo-secret"}, "bench", {"speed"})
    assert [str(i) for i in c.issues] == [
        "broker.password = '***': must be a non-empty string",
        "bench.password = '***': unknown key; allowed: speed",
    ]


def test_error_message_counts_and_lists_every_issue() -> None:
    err = ConfigError("site.toml", [ConfigIssue("a", 1, "x"), ConfigIssue("b.c", MISSING, "y")])
    assert str(err) == "site.toml: 2 configuration error(s)\n  a = 1: x\n  b.c = (missing): y"
    assert err.source == "site.toml" and [i.key for i in err.issues] == ["a", "b.c"]


def test_each_service_error_is_a_config_error_and_public_names_stay_importable() -> None:
    assert agent.config.ConfigError is ConfigError and agent.config.ConfigIssue is ConfigIssue
    assert central.config.ConfigIssue is ConfigIssue and sim_hw.config.ConfigIssue is ConfigIssue
    for sub in (central.config.CentralConfigError, sim_hw.config.BenchConfigError):
        err = sub("f.toml", [ConfigIssue("k", 1, "bad")])
        assert isinstance(err, ConfigError) and str(err) == "f.toml: 1 configuration error(s)\n  k = 1: bad"
    with pytest.raises(central.config.CentralConfigError):
        raise central.config.CentralConfigError("f", [])


# ---- get: kinds, defaults, bounds, choices ----------------------------------------------------------------

KIND_CASES: list[tuple[str, Any, bool]] = [
    ("string", "x", True),
    ("string", "", False),
    ("string", 1, False),
    ("integer", 3, True),
    ("integer", 3.0, False),
    ("integer", True, False),  # a TOML boolean is not a count
    ("integer", "3", False),
    ("number", 3, True),
    ("number", 2.5, True),
    ("number", math.inf, True),
    ("number", math.nan, False),  # NaN would pass every range check
    ("number", False, False),
    ("number", "2.5", False),
    ("boolean", True, True),
    ("boolean", 1, False),
    ("boolean", "true", False),
    ("table", {"a": 1}, True),
    ("table", [1], False),
    ("table", "t", False),
]


@pytest.mark.parametrize(("kind", "value", "ok"), KIND_CASES)
def test_each_kind_accepts_its_values_and_refuses_others(kind: str, value: Any, ok: bool) -> None:
    c = checker()
    got = c.get({"k": value}, "t", "k", kind)
    if ok:
        assert got == value and c.issues == []
    else:
        assert got is None
        wanted = {"string": "a non-empty string", "integer": "an integer"}.get(kind, f"a {kind}")
        issue = only_issue(c)
        assert (issue.key, issue.allowed) == ("t.k", f"must be {wanted}")


def test_missing_key_takes_the_default_or_is_required() -> None:
    c = checker()
    assert c.get({}, "store", "path", "string", "gridedge.db") == "gridedge.db"
    assert c.get({}, "uplink", "username", "string", None) is None
    assert c.issues == []
    assert c.get({}, "", "site_id", "string") is None
    assert str(only_issue(c)) == "site_id = (missing): is required (string)"


def test_default_is_not_checked_but_a_given_value_is() -> None:
    c = checker()
    assert c.get({}, "t", "n", "integer", 0, lo=1) == 0
    assert c.get({"n": 0}, "t", "n", "integer", 5, lo=1) is None
    assert str(only_issue(c)) == "t.n = 0: must be in 1..inf"


@pytest.mark.parametrize(
    ("value", "lo", "hi", "message"),
    [
        (0, 1, 247, "must be in 1..247"),
        (248, 1, 247, "must be in 1..247"),
        (-1, 0, None, "must be in 0..inf"),
        (11, None, 10, "must be in -inf..10"),
        (0.001, 0.01, 60, "must be in 0.01..60"),
    ],
)
def test_out_of_range_names_the_range(value: float, lo: float | None, hi: float | None, message: str) -> None:
    c = checker()
    assert c.get({"v": value}, "d", "v", "number", lo=lo, hi=hi) is None
    assert only_issue(c).allowed == message


def test_bounds_are_inclusive() -> None:
    c = checker()
    assert [c.get({"v": v}, "d", "v", "integer", lo=1, hi=247) for v in (1, 247)] == [1, 247]
    assert c.issues == []


def test_choices_list_what_is_allowed() -> None:
    c = checker()
    assert c.get({"parity": "E"}, "b", "parity", "string", choices=("N", "E", "O")) == "E"
    assert c.get({"parity": "Q"}, "b", "parity", "string", choices=("N", "E", "O")) is None
    assert str(only_issue(c)) == "b.parity = 'Q': must be one of 'N', 'E', 'O'"


def test_an_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown kind 'float'"):
        checker().get({"x": 1.0}, "", "x", "float")


def test_a_wrong_type_reads_as_english() -> None:
    c = Checker(Path("/"))
    c.get({"port": "502"}, "devices[0]", "port", "integer")
    assert str(c.issues[0]) == "devices[0].port = '502': must be an integer"


# ---- unknown keys and arrays of tables --------------------------------------------------------------------


def test_unknown_keys_are_each_reported_with_what_is_allowed() -> None:
    c = checker()
    c.unknown({"host": "h", "hostname": "h", "colour": 1}, "devices[0]", {"host", "port"})
    c.unknown({"site": "x"}, "", {"site_id"})
    assert [str(i) for i in c.issues] == [
        "devices[0].colour = 1: unknown key; allowed: host, port",
        "devices[0].hostname = 'h': unknown key; allowed: host, port",
        "site = 'x': unknown key; allowed: site_id",
    ]


def test_tables_keep_each_index_in_the_file() -> None:
    c = checker()
    got = c.tables({"devices": [{"a": 1}, "oops", {"b": 2}]}, "devices")
    assert got == [("devices[0]", {"a": 1}), ("devices[2]", {"b": 2})]
    assert str(only_issue(c)) == "devices[1] = 'oops': must be a table"


def test_tables_absent_is_empty_and_not_an_array_is_an_issue() -> None:
    c = checker()
    assert c.tables({}, "buses") == []
    assert c.issues == []
    assert c.tables({"buses": {"name": "b"}}, "buses") == []
    assert str(only_issue(c)) == "buses = {'name': 'b'}: must be an array of tables ([[buses]])"
    c = checker()
    assert c.tables({"points": [{}]}, "points", "map") == [("map.points[0]", {})]


# ---- paths ------------------------------------------------------------------------------------------------


def test_relative_paths_are_taken_from_the_base_folder_and_normalised(tmp_path: Path) -> None:
    c = checker(tmp_path / "config")
    assert c.path(None) is None
    assert c.path("../run/central.db") == tmp_path / "run" / "central.db"
    assert c.path("/dev/ttyUSB0") == Path("/dev/ttyUSB0")


def test_a_symlink_keeps_its_own_name(tmp_path: Path) -> None:
    """A pty or udev name is a symlink whose target changes; the config must keep the link, not the target."""
    (tmp_path / "pts-7").write_text("")
    (tmp_path / "rtu-bus1").symlink_to(tmp_path / "pts-7")
    assert checker(tmp_path).path("rtu-bus1") == tmp_path / "rtu-bus1"


# ---- broker URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1", BrokerUrl("127.0.0.1", 1883, False)),
        ("mqtts://broker.example", BrokerUrl("broker.example", 8883, True)),
        ("mqtt://127.0.0.1:1884", BrokerUrl("127.0.0.1", 1884, False)),
        ("mqtts://broker.example:9999", BrokerUrl("broker.example", 9999, True)),
        ("mqtt://[::1]:1883", BrokerUrl("::1", 1883, False)),
        ("mqtt://h:65535", BrokerUrl("h", 65535, False)),
    ],
)
def test_broker_url_gives_host_port_and_tls(url: str, expected: BrokerUrl) -> None:
    c = checker()
    assert broker_url(c, "uplink.broker", url) == expected
    assert c.issues == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://x", "must be a URL mqtt://host[:port] or mqtts://host[:port]"),
        ("tcp://nowhere", "must be a URL mqtt://host[:port] or mqtts://host[:port]"),
        ("127.0.0.1:1883", "must be a URL mqtt://host[:port] or mqtts://host[:port]"),
        ("mqtt://", "must be a URL mqtt://host[:port] or mqtts://host[:port]"),
        ("mqtt://x:99999", "the port must be 1..65535"),
        ("mqtt://x:0", "the port must be 1..65535"),
        ("mqtt://x:port", "the port must be 1..65535"),
    ],
)
def test_bad_broker_url_is_one_issue_under_its_key(url: str, allowed: str) -> None:
    c = checker()
    assert broker_url(c, "broker.url", url) is None
    issue = only_issue(c)
    assert (issue.key, issue.value, issue.allowed) == ("broker.url", url, allowed)


@pytest.mark.parametrize("url", ["mqtt://h/topic", "mqtt://h:1883/x", "mqtt://h?tls=1", "mqtts://h#f"])
def test_a_broker_url_with_a_path_query_or_fragment_is_refused(url: str) -> None:
    # MQTT brokers have no path: one given would otherwise be dropped silently, as would a query or fragment
    c = Checker(Path("/"))
    assert broker_url(c, "uplink.broker", url) is None
    assert [(i.key, i.value) for i in c.issues] == [("uplink.broker", url)]
    assert "no path" in c.issues[0].allowed


def test_absent_broker_url_is_left_to_the_required_check() -> None:
    c = checker()
    assert broker_url(c, "uplink.broker", c.get({}, "uplink", "broker", "string")) is None
    assert [i.key for i in c.issues] == ["uplink.broker"]


# ---- through the services' loaders: a password never reaches the operator's screen ------------------------


def test_agent_password_without_username_is_reported_masked(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('site_id = "s1"\n[uplink]\nbroker = "mqtt://127.0.0.1:1883"\npassword = "hunter2-secret"\n')
    with pytest.raises(ConfigError) as info:
        agent.config.load_config(site)
    assert "uplink.password = '***': a password needs a username" in str(info.value)
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(info.value.issues)


def test_central_bad_password_is_reported_masked(tmp_path: Path) -> None:
    raw = {"broker": {"url": "mqtt://x", "password": 31337}, "store": {"db": "c.db"}}
    with pytest.raises(central.config.CentralConfigError) as info:
        central.config.parse_central_config(raw, tmp_path / "central.toml")
    assert "broker.password = '***': must be a non-empty string" in str(info.value)
    assert "31337" not in str(info.value)


def test_bench_unknown_top_level_key_has_no_leading_dot(tmp_path: Path) -> None:
    with pytest.raises(sim_hw.config.BenchConfigError) as info:
        sim_hw.config.parse_bench_config({"colour": 1, "devices": []}, tmp_path / "b.toml")
    assert "colour" in [i.key for i in info.value.issues]


# ---- TLS files ------------------------------------------------------------------------------------------------


def test_tls_files_are_paths_that_exist(tmp_path: Path) -> None:
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text("pem")
    c = checker(tmp_path)
    raw = {"ca_file": "ca.crt", "cert_file": "client.crt", "key_file": "client.key"}
    assert tls_files(c, raw, "uplink") == {
        "ca_file": tmp_path / "ca.crt",
        "cert_file": tmp_path / "client.crt",
        "key_file": tmp_path / "client.key",
    }
    assert tls_files(c, {}, "uplink") == {"ca_file": None, "cert_file": None, "key_file": None}
    assert c.issues == []


def test_tls_files_missing_file_and_cert_without_key(tmp_path: Path) -> None:
    (tmp_path / "client.crt").write_text("pem")
    c = checker(tmp_path)
    tls_files(c, {"ca_file": "nope.crt", "cert_file": "client.crt"}, "broker")
    assert [str(i) for i in c.issues] == [
        f"broker.ca_file = '{tmp_path / 'nope.crt'}': no such file: create it with the PEM certificate of the "
        "authority (CA) that signed the broker's certificate",
        f"broker.cert_file = '{tmp_path / 'client.crt'}': a client certificate needs both cert_file and key_file",
    ]


def test_credentials_in_a_broker_url_are_refused_and_not_echoed() -> None:
    c = checker()
    assert broker_url(c, "uplink.broker", "mqtt://edge:hunter2@broker.example:1883") is None
    issue = only_issue(c)
    assert issue.key == "uplink.broker" and "use username and password" in issue.allowed
    assert "hunter2" not in str(issue)


@pytest.mark.parametrize(
    ("broker", "extra", "key", "fragment"),
    [
        ("mqtt://x", {"password": "pw"}, "broker.password", "a password needs a username"),
        ("mqtt://x", {"ca_file": "ca.pem"}, "broker.url", "ca_file is given: use an mqtts:// broker"),
        ("mqtt://x", {"cert_file": "c.pem", "key_file": "k.pem"}, "broker.url", "a client certificate needs an mqtts"),
    ],
)
def test_central_refuses_settings_that_would_silently_weaken_the_link(
    tmp_path: Path, broker: str, extra: dict[str, str], key: str, fragment: str
) -> None:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    raw = {"broker": {"url": broker, **extra}, "store": {"db": "c.db"}}
    with pytest.raises(central.config.CentralConfigError) as info:
        central.config.parse_central_config(raw, tmp_path / "central.toml")
    found = {i.key: i.allowed for i in info.value.issues}
    assert fragment in found[key]


# ---- one broker section, two owners ---------------------------------------------------------------------------


def test_agent_and_central_build_the_same_session_from_one_broker_section(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("pem")
    (tmp_path / "pw").write_text("s3cret\n")
    common = {"username": "edge", "password_file": "pw", "ca_file": "ca.pem", "cert_file": "c.pem",
              "key_file": "k.pem", "client_id": "edge-1", "keepalive_s": 45}  # fmt: skip
    site = agent.config.parse_config(
        {"site_id": "s1", "uplink": {"broker": "mqtts://broker.example:8884", **common, "max_inflight": 8}},
        tmp_path / "site.toml",
    )
    central_cfg = central.config.parse_central_config(
        {"broker": {"url": "mqtts://broker.example:8884", **common, "backoff_max_s": 2.0}, "store": {"db": "c.db"}},
        tmp_path / "central.toml",
    )
    assert site.uplink.broker == central_cfg.broker
    session = central_cfg.broker.session_config()
    assert (session.host, session.port, session.tls, session.client_id, session.keepalive_s) == (
        "broker.example", 8884, True, "edge-1", 45)  # fmt: skip
    assert (session.username, session.password) == ("edge", "s3cret")
    assert (session.ca_file, session.cert_file, session.key_file) == tuple(
        str(tmp_path / n) for n in ("ca.pem", "c.pem", "k.pem")
    )
    assert site.uplink.max_inflight == 8 and central_cfg.backoff_max_s == 2.0


def test_each_owner_keeps_its_own_keys_and_its_url_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        agent.config.parse_config(
            {"site_id": "s1", "uplink": {"broker": "mqtt://h", "backoff_max_s": 1.0}}, tmp_path / "site.toml"
        )
    (issue,) = info.value.issues
    assert issue.key == "uplink.backoff_max_s" and "max_inflight" in issue.allowed and "url" not in issue.allowed
    with pytest.raises(ConfigError) as info:
        central.config.parse_central_config(
            {"broker": {"url": "mqtt://h", "max_inflight": 1}, "store": {"db": "c.db"}}, tmp_path / "c.toml"
        )
    (issue,) = info.value.issues
    assert issue.key == "broker.max_inflight" and "backoff_max_s" in issue.allowed and "password_file" in issue.allowed


def test_central_holds_its_client_id_to_the_conservative_form(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        central.config.parse_central_config(
            {"broker": {"url": "mqtt://h", "client_id": "central/1"}, "store": {"db": "c.db"}}, tmp_path / "c.toml"
        )
    assert [(i.key, i.value) for i in info.value.issues] == [("broker.client_id", "central/1")]


def test_a_broker_config_never_shows_its_password(tmp_path: Path) -> None:
    cfg = central.config.parse_central_config(
        {"broker": {"url": "mqtt://h", "username": "u", "password": "hunter2-secret"}, "store": {"db": "c.db"}},
        tmp_path / "c.toml",
    )
    assert cfg.broker.password == "hunter2-secret"
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg.broker)
    assert "hunter2" not in repr(cfg.broker.session_config())


def test_mqtt_version_chooses_the_protocol_level_the_agent_connects_with(tmp_path: Path) -> None:
    """MQTT 5 unless the site says "3.1.1" (a broker tier that speaks nothing else: docs/scale.md)."""
    from agent.uplink import session_config_from

    def level(uplink: dict[str, Any]) -> int:
        cfg = agent.config.parse_config({"site_id": "s1", "uplink": uplink}, tmp_path / "site.toml")
        return session_config_from("s1", cfg.uplink).protocol

    assert level({"broker": "mqtt://h"}) == 5
    assert level({"broker": "mqtt://h", "mqtt_version": "5"}) == 5
    assert level({"broker": "mqtt://h", "mqtt_version": 5}) == 5  # a TOML integer reads as the string
    assert level({"broker": "mqtt://h", "mqtt_version": "3.1.1"}) == 4  # the CONNECT's protocol level 4


@pytest.mark.parametrize("value", ["4", "3.1", 4, 3.1, "v5", True])
def test_a_bad_mqtt_version_names_the_key_and_the_two_it_takes(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        agent.config.parse_config({"site_id": "s1", "uplink": {"broker": "mqtt://h", "mqtt_version": value}},
                                  tmp_path / "site.toml")  # fmt: skip
    (issue,) = info.value.issues
    assert issue.key == "uplink.mqtt_version" and issue.value == value and "3.1.1" in issue.allowed


def test_central_ingest_over_mqtt_refuses_mqtt_3_1_1(tmp_path: Path) -> None:
    """Central's workers share the uplink through MQTT 5 shared subscriptions: 3.1.1 cannot carry them."""
    with pytest.raises(ConfigError) as info:
        central.config.parse_central_config(
            {"broker": {"url": "mqtt://h", "mqtt_version": "3.1.1"}, "store": {"db": "c.db"}}, tmp_path / "c.toml"
        )
    (issue,) = info.value.issues
    assert issue.key == "broker.mqtt_version" and issue.value == "3.1.1" and "shared subscriptions" in issue.allowed
