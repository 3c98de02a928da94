"""The one log dialect: ``event=<name> key=value ...`` on ``gridedge.<subsystem>`` loggers, split back losslessly."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.eventlog import EventLog, format_event, format_value, parse_line, setup_logging

ROOT = Path(__file__).resolve().parent.parent


def test_a_line_names_its_event_first_then_its_fields_in_order(caplog: pytest.LogCaptureFixture) -> None:
    log = EventLog("store")
    with caplog.at_level(logging.INFO, logger="gridedge.store"):
        log.warning("store_full", size_mb=251.25, limit_mb=256, path="/var/lib/gridedge/agent.db")
    (record,) = caplog.records
    assert record.name == "gridedge.store" and record.levelno == logging.WARNING
    assert record.getMessage() == "event=store_full size_mb=251.25 limit_mb=256 path=/var/lib/gridedge/agent.db"


def test_the_record_points_at_the_caller_not_at_the_helper(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gridedge.x"):
        EventLog("x").info("here")
        EventLog("x").log(logging.INFO, "there")
    assert [r.funcName for r in caplog.records] == ["test_the_record_points_at_the_caller_not_at_the_helper"] * 2


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (None, "none"),
        (3, "3"),
        (8.142107117127715, "8.14211"),  # six significant digits: enough to read, never a 17-digit tail
        (1e-9, "1e-09"),
        (float("nan"), "nan"),
        ("link down", '"link down"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        (ConnectionRefusedError(111, "Connection refused"), '"[Errno 111] Connection refused"'),
        (TimeoutError(), "TimeoutError"),
    ],
)
def test_values_are_short_and_quoted_only_when_they_must_be(value: object, text: str) -> None:
    assert format_value(value) == text


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(lambda k: k != "event"),
                       st.text(max_size=30), max_size=6))  # fmt: skip
def test_any_text_values_split_back_into_the_same_pairs(fields: dict[str, str]) -> None:
    line = format_event("x", fields)
    assert parse_line(line) == {"event": "x", **fields}


@pytest.mark.parametrize("name", ["Store full", "store-full", "1x", "", "x" * 65])
def test_an_event_name_that_would_need_quoting_is_refused_at_the_call(name: str) -> None:
    with pytest.raises(ValueError, match="event name"):
        EventLog("store").info(name)


def test_a_key_named_event_or_not_a_word_is_refused() -> None:
    with pytest.raises(ValueError, match="log key"):
        format_event("x", {"event": 1})
    with pytest.raises(ValueError, match="log key"):
        format_event("x", {"Bad Key": 1})


def test_a_line_below_the_level_is_never_formatted() -> None:
    class Loud:
        def __str__(self) -> str:
            raise AssertionError("formatted although nobody logs at DEBUG")

    log = EventLog("quiet")
    log.logger.setLevel(logging.INFO)
    log.debug("detail", value=Loud())


def test_subsystem_names_are_dotted_lower_case() -> None:
    assert EventLog("pq.worker").logger.name == "gridedge.pq.worker"
    with pytest.raises(ValueError, match="subsystem"):
        EventLog("PQ worker")


def test_a_utc_timestamp_keeps_its_fraction_of_a_second() -> None:
    """Six significant digits would write 1.76723e+09: a time value keeps every digit it has."""
    assert format_value(1_767_225_600.125) == "1767225600.125"
    assert format_value(-2_000_000.5) == "-2000000.5"
    assert format_value(999_999.4) == "999999"  # below a million: six significant digits


def test_exception_logs_the_line_at_error_with_the_traceback(caplog: pytest.LogCaptureFixture) -> None:
    log = EventLog("x")
    with caplog.at_level(logging.INFO, logger="gridedge.x"):
        try:
            {}["missing"]  # noqa: B018
        except KeyError:
            log.exception("bug_found", where="here")
        log.error("fault_seen", error=TimeoutError())
    bug, fault = caplog.records
    assert (bug.levelno, bug.getMessage()) == (logging.ERROR, "event=bug_found where=here")
    assert bug.exc_info is not None and bug.exc_info[0] is KeyError and "Traceback" in caplog.text
    assert fault.exc_info is None  # an expected fault: one line, no traceback


def test_the_logger_name_is_readable_from_the_helper() -> None:
    assert EventLog("central.ingest").name == "gridedge.central.ingest"


def test_setup_logging_refuses_a_level_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="log level 'loud': allowed DEBUG, INFO, WARNING, ERROR, CRITICAL"):
        setup_logging("loud")


@pytest.mark.integration
def test_setup_logging_writes_utc_level_logger_then_the_event_line() -> None:
    """The one format, in a fresh process (basicConfig acts once per process): UTC whatever the local zone."""
    code = (
        "from protocols.eventlog import EventLog, setup_logging\n"
        "setup_logging('info')\n"
        "EventLog('store').warning('store_full', size_mb=251.25, path='/var/lib/x y.db')\n"
        "EventLog('store').debug('store_sealed', messages=1)\n"
    )
    env = {**os.environ, "TZ": "America/St_Johns", "PYTHONPATH": str(ROOT)}  # UTC-3:30 or -2:30
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    (line,) = proc.stderr.splitlines()
    stamp, rest = line.split(" ", 1)
    assert rest == 'WARNING gridedge.store event=store_full size_mb=251.25 path="/var/lib/x y.db"'
    when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((when - datetime.now(UTC)).total_seconds()) < 3600, stamp  # a local clock would be hours off
