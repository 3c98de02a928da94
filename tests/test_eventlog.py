"""The one log dialect: ``event=<name> key=value ...`` on ``gridedge.<subsystem>`` loggers, split back losslessly."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.eventlog import EventLog, format_event, format_value, parse_line


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
