"""Checking TOML configuration: typed values out of nested tables, every problem collected.

agent/, central/ and sim_hw/ each read a TOML file and must never import each other, so the checker they
share lives here. It does not stop at the first problem: each check records a ``ConfigIssue`` naming the key
path, the bad value and what is allowed, so ``check-config`` can list every mistake in one run. The caller
raises its own ``ConfigError`` subclass at the end, when ``Checker.issues`` is not empty.

Warnings (``Checker.warn``) are for what works but is likely a mistake (a register-map point that starts
inside another): they are listed by ``check-config`` and never make a file fail.

Secrets: a value under a key path ending in ``password`` is replaced by ``'***'`` when the issue is built,
so neither ``str()`` nor ``repr()`` of an issue or error can put a password in a log.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

SECRET_SHOWN: Final = "***"


class _Missing:
    """The type of ``MISSING``: a key absent from its table (``None`` cannot say that: a default may be None)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "(missing)"


MISSING: Final = _Missing()


def is_secret(key: str) -> bool:
    """True for a key path whose value must never be shown (``uplink.password``, ``broker.password``)."""
    return key.lower().endswith("password")


def join_key(prefix: str, name: str) -> str:
    """The key path of ``name`` inside the table at ``prefix`` (the top level has no prefix)."""
    return f"{prefix}.{name}" if prefix else name


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem: ``str()`` is ``key = value: allowed``, the line an operator reads."""

    key: str
    value: Any
    allowed: str

    def __post_init__(self) -> None:
        # Masked when built, not when shown: the clear value must not survive in repr(), tracebacks or logs.
        if self.value is not MISSING and is_secret(self.key):
            object.__setattr__(self, "value", SECRET_SHOWN)

    def __str__(self) -> str:
        shown = "(missing)" if self.value is MISSING else repr(self.value)
        return f"{self.key} = {shown}: {self.allowed}"


class ConfigError(Exception):
    """The configuration cannot be used; ``issues`` lists every problem found in ``source``.

    ``warnings`` are those found on the way (what works but is likely a mistake), so that a report of the
    errors can show them too.
    """

    def __init__(self, source: str, issues: Sequence[ConfigIssue], warnings: Sequence[ConfigIssue] = ()) -> None:
        self.source = source
        self.issues = list(issues)
        self.warnings = list(warnings)
        lines = "\n".join(f"  {i}" for i in self.issues)
        super().__init__(f"{source}: {len(self.issues)} configuration error(s)\n{lines}")


def _is_number(v: Any) -> bool:
    # NaN passes every lo/hi comparison (all are False), so it would slip through a range check.
    return isinstance(v, int | float) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


_KINDS: Final[dict[str, Callable[[Any], bool]]] = {
    "string": lambda v: isinstance(v, str) and v != "",
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "table": lambda v: isinstance(v, Mapping),
}
KINDS: Final = tuple(_KINDS)
_A_KIND: Final = {"string": "a non-empty string", "integer": "an integer"}  # "must be ..." in English


class Checker:
    """Reads typed values out of nested tables, recording every problem instead of stopping.

    ``base`` is the folder relative paths are taken from: the configuration file's folder. ``issues`` are
    errors; ``warnings`` are for what works but is likely a mistake (the text says what and why).
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []

    def fail(self, key: str, value: Any, allowed: str) -> None:
        self.issues.append(ConfigIssue(key, value, allowed))

    def warn(self, key: str, value: Any, why: str) -> None:
        self.warnings.append(ConfigIssue(key, value, why))

    def get(self, table: Mapping[str, Any], prefix: str, name: str, kind: str, default: Any = MISSING,
            *, lo: float | None = None, hi: float | None = None, choices: tuple[Any, ...] = ()) -> Any:  # fmt: skip
        """``table[name]`` if it is a ``kind`` (one of ``KINDS``) within lo..hi and among ``choices``.

        Absent: ``default``, or an issue when there is no default. Bad: an issue, and None.
        """
        check = _KINDS.get(kind)
        if check is None:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        key = join_key(prefix, name)
        value = table.get(name, MISSING)
        if value is MISSING:
            if default is MISSING:
                self.fail(key, MISSING, f"is required ({kind})")
                return None
            return default
        if not check(value):
            self.fail(key, value, "must be " + _A_KIND.get(kind, f"a {kind}"))
            return None
        if choices and value not in choices:
            self.fail(key, value, "must be one of " + ", ".join(repr(c) for c in choices))
            return None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.fail(key, value, f"must be in {lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}")
            return None
        return value

    def unknown(self, table: Mapping[str, Any], prefix: str, known: set[str]) -> None:
        """An issue per key of ``table`` not in ``known``: a typo must not silently fall back to a default."""
        for name in sorted(set(table) - known):
            self.fail(join_key(prefix, name), table[name], "unknown key; allowed: " + ", ".join(sorted(known)))

    def path(self, value: str | None) -> Path | None:
        """``value`` relative to ``base`` (an absolute value stays as it is), None for None.

        normpath, not resolve(): a serial port may be a symlink (a pty, a udev name) that must be opened by
        its stable name each time.
        """
        if value is None:
            return None
        return Path(os.path.normpath(self.base / value))

    def tables(self, data: Mapping[str, Any], name: str, prefix: str = "") -> list[tuple[str, Mapping[str, Any]]]:
        """The array of tables ``[[name]]`` as (key path, table) pairs; absent is an empty array.

        Key paths keep each table's index in the file, also when an element before it was not a table.
        """
        key = join_key(prefix, name)
        raw = data.get(name, [])
        if not isinstance(raw, list):
            self.fail(key, raw, f"must be an array of tables ([[{name}]])")
            return []
        out: list[tuple[str, Mapping[str, Any]]] = []
        for i, t in enumerate(raw):
            if isinstance(t, Mapping):
                out.append((f"{key}[{i}]", t))
            else:
                self.fail(f"{key}[{i}]", t, "must be a table")
        return out
