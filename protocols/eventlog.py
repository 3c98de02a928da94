"""One log dialect for every GridEdge process: ``event=<name> key=value ...``, on loggers ``gridedge.<subsystem>``.

An operator greps one thing (``event=``) and reads one shape, whichever part of the product wrote the line: the
agent, central, the bench or a protocol client. Every line names its event first, then its facts as
``key=value`` pairs in the order given (logfmt): a value holding a space, a quote, ``=`` or nothing at all is
double-quoted with JSON escapes, so a line always splits back into the same pairs (:func:`parse_line`).
docs/log-events.md lists the events an operator sees; tests/test_log_dialect.py keeps that table and the code
in step and keeps every module on this helper.

    log = EventLog("store")                   # logger "gridedge.store"
    log.warning("store_full", size_mb=251.3, limit_mb=256, dropped=120)
    # ... WARNING gridedge.store event=store_full size_mb=251.3 limit_mb=256 dropped=120

Formatting is lazy: a line below the logger's level costs one level check. An expected fault (a device that
does not answer, a full disk) is one line with ``error=``; only a bug gets a traceback (:meth:`EventLog.exception`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["EVENT_NAME_RE", "LOGGER_PREFIX", "EventLog", "format_event", "format_value", "parse_line", "setup_logging"]

LOGGER_PREFIX = "gridedge"
#: An event name: lower-case words joined by '_' (it is grepped for, so it never needs quoting).
EVENT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_BARE_RE = re.compile(r'[^\s"=\\]+')  # a value that needs no quotes
_PAIR_RE = re.compile(r'([a-z][a-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
           "CRITICAL": logging.CRITICAL}  # fmt: skip


def format_value(value: Any) -> str:
    """One value as written after ``key=``: numbers short and exact enough to read, text quoted when needed."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "none"
    elif isinstance(value, float):
        # six significant digits, but never fewer than a UTC timestamp needs (1.73346e+09 would hide the time)
        text = f"{value:.6g}" if not math.isfinite(value) or abs(value) < 1e6 else repr(value)
    elif isinstance(value, BaseException):
        text = str(value) or type(value).__name__
    else:
        text = str(value)
    return text if _BARE_RE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


def format_event(event: str, fields: Mapping[str, Any]) -> str:
    """``event=<event> k=v ...``; a bad event name or key is a programming error (ValueError)."""
    if not EVENT_NAME_RE.match(event):
        raise ValueError(f"event name {event!r}: must be lower-case letters, digits and '_', starting with a letter")
    parts = [f"event={event}"]
    for key, value in fields.items():
        if not _KEY_RE.match(key) or key == "event":
            raise ValueError(f"log key {key!r}: must be lower-case letters, digits and '_' (and not 'event')")
        parts.append(f"{key}={format_value(value)}")
    return " ".join(parts)


def parse_line(text: str) -> dict[str, str]:
    """The ``key=value`` pairs of a line written by :class:`EventLog` (quoted values unescaped), in order."""
    out: dict[str, str] = {}
    for key, raw in _PAIR_RE.findall(text):
        out[key] = json.loads(raw) if raw.startswith('"') else raw
    return out


class _Event:
    """The message of one log record: formatted only when a handler asks for it."""

    __slots__ = ("event", "fields")

    def __init__(self, event: str, fields: Mapping[str, Any]) -> None:
        self.event = event
        self.fields = fields

    def __str__(self) -> str:
        return format_event(self.event, self.fields)


class EventLog:
    """The logger of one subsystem (``gridedge.<subsystem>``) that writes only ``event=`` lines."""

    __slots__ = ("logger",)

    def __init__(self, subsystem: str) -> None:
        if not re.match(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$", subsystem):
            raise ValueError(f"subsystem {subsystem!r}: dotted lower-case names, e.g. 'store' or 'pq.worker'")
        self.logger = logging.getLogger(f"{LOGGER_PREFIX}.{subsystem}")

    def log(self, level: int, event: str, /, **fields: Any) -> None:
        self._emit(level, event, fields)

    def debug(self, event: str, /, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, /, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, /, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, /, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields)

    def exception(self, event: str, /, **fields: Any) -> None:
        """An ERROR line followed by the traceback of the exception being handled: for a bug, not a fault."""
        self._emit(logging.ERROR, event, fields, exc_info=True)

    def _emit(self, level: int, event: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        if not EVENT_NAME_RE.match(event):  # checked at once, not only when a handler formats the line
            raise ValueError(f"event name {event!r}: lower-case letters, digits and '_', starting with a letter")
        if self.logger.isEnabledFor(level):
            # stacklevel 3: the record names the line that called info()/warning()/..., not this module
            self.logger.log(level, _Event(event, fields), exc_info=exc_info or None, stacklevel=3)

    @property
    def name(self) -> str:
        """The logger's name, ``gridedge.<subsystem>``."""
        return self.logger.name

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 (the logging module's spelling)
        return self.logger.isEnabledFor(level)


def setup_logging(level: int | str = logging.INFO, stream: Any = None) -> None:
    """Every process's log format: UTC time, level, logger, then the ``event=`` line (on stderr by default).

    ``level`` is a level number or name (``"INFO"``, ``"debug"``); an unknown name is a ValueError naming the
    allowed ones.
    """
    import time

    if isinstance(level, str):
        if level.upper() not in _LEVELS:
            raise ValueError(f"log level {level!r}: allowed {', '.join(_LEVELS)}")
        level = _LEVELS[level.upper()]
    logging.basicConfig(
        level=level,
        format="%(asctime)sZ %(levelname)s %(name)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=stream,
    )
    logging.Formatter.converter = time.gmtime  # one clock: UTC
